"""The README's configuration table names every key of the config dataclasses, and no other."""

from __future__ import annotations

import dataclasses
import re

from hexproxy.config import SECTIONS, Config, load_config
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


# Defaults the table describes in words instead of a value.
DESCRIBED = {
    "cache.dir",
    "hosted.dir",
    "upstream.public_key",
    "upstream.installs_public_key",
    "orgs.keys",
    "hosted.repos",
    # Empty strings ("empty": AWS S3 itself, the AWS chain's region, no prefix or bucket).
    "store.bucket",
    "store.prefix",
    "store.endpoint_url",
    "store.region",
}


def readme_defaults() -> dict[str, str | None]:
    """Each key's default as the table writes it (None when it is described in words)."""
    text = (REPO_ROOT / "README.md").read_text()
    table = text.split("\n## Configuration\n", 1)[1].split("\n### ", 1)[0]
    found: dict[str, str | None] = {}
    for line in table.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        names = re.findall(r"`([a-z_.]+)`", match.group(1))
        section = names[0].split(".")[0]
        keys = [n if "." in n else f"{section}.{n}" for n in names]
        values = re.findall(r"`([^`]+)`", line[match.end() :].split("|", 1)[0])
        for i, key in enumerate(keys):
            found[key] = values[i] if len(values) == len(keys) else None
    return found


def test_readme_table_gives_each_default() -> None:
    defaults = Config()
    for key, written in sorted(readme_defaults().items()):
        if key in DESCRIBED:
            continue
        assert written is not None, key
        section, name = key.split(".")
        parsed = load_config(None, {"HOME": "/h"}, {(section, name): written})
        expected = getattr(getattr(defaults, section), name)
        assert getattr(getattr(parsed, section), name) == expected, (key, written)
