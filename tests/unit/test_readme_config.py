"""The README's configuration table names every key of the config dataclasses, and no other."""

from __future__ import annotations

import dataclasses
import re

from hexproxy.config import SECTIONS
from tests.support.fixtures import REPO_ROOT

# A row's first cell: `section.key`, possibly followed by ` / `other_key`` of the same section.
_ROW = re.compile(r"\A\| (`[a-z_]+\.[a-z_]+`(?: / `[a-z_]+`)*) \|")


def readme_keys() -> set[str]:
    text = (REPO_ROOT / "README.md").read_text()
    table = text.split("\n## Configuration\n", 1)[1].split("\n### ", 1)[0]
    keys = set()
    for line in table.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        names = re.findall(r"`([a-z_.]+)`", match.group(1))
        section = names[0].split(".")[0]
        keys.update(n if "." in n else f"{section}.{n}" for n in names)
    return keys


def test_readme_table_lists_every_config_key() -> None:
    expected = {
        f"{section}.{field.name}"
        for section, cls in SECTIONS.items()
        for field in dataclasses.fields(cls)
    }
    assert readme_keys() == expected
