"""README's configuration table names every key, with its real default."""

from __future__ import annotations

import dataclasses
import re

from hexproxy.config import SECTIONS, Config, load_config
from tests.support.fixtures import REPO_ROOT

# Defaults the table describes in words instead of a value.
DESCRIBED = {("cache", "dir"), ("upstream", "public_key"), ("upstream", "installs_public_key")}


def _table() -> dict[tuple[str, str], str | None]:
    """(section, key) -> the default as written (None when described in words)."""
    text = (REPO_ROOT / "README.md").read_text()
    section_text = text[text.index("## Configuration") : text.index("### What is served")]
    rows: dict[tuple[str, str], str | None] = {}
    for line in section_text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`") or "." not in cells[0]:
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        section = names[0].split(".", 1)[0]
        keys = [names[0].split(".", 1)[1], *names[1:]]
        values = re.findall(r"`([^`]+)`", cells[1])
        for i, key in enumerate(keys):
            rows[(section, key)] = values[i] if len(values) == len(keys) else None
    return rows


def test_every_key_is_in_the_table_with_its_default() -> None:
    table = _table()
    fields = {
        (section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
    }
    assert set(table) == fields
    defaults = Config()
    for (section, key), written in sorted(table.items()):
        if (section, key) in DESCRIBED:
            continue
        assert written is not None, (section, key)
        parsed = load_config(None, {"HOME": "/h"}, {(section, key): written})
        expected = getattr(getattr(defaults, section), key)
        assert getattr(getattr(parsed, section), key) == expected, (section, key, written)
