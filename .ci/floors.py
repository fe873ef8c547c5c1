"""Print pip constraints pinning every dependency of hexproxy to its declared floor.

Reads pyproject.toml: the runtime dependencies and the ``test`` extra. Each must be
written ``name>=X`` with X an exact release, so that ``name==X`` installs the oldest
release we claim to support; anything else is an error (a dependency without a floor
cannot have its floor tested). .ci/run installs the project with these constraints
and runs the tests, ruff and mypy there.

Usage: python3 .ci/floors.py [pyproject.toml] > floors.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

FLOOR = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*(?P<version>[0-9][0-9A-Za-z.]*)")


def floors(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    pins = []
    for requirement in requirements:
        match = FLOOR.fullmatch(requirement.strip())
        if match is None:
            raise SystemExit(f"floors.py: {requirement!r} is not 'name>=version'")
        pins.append(f"{match['name']}=={match['version']}")
    return pins


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("pyproject.toml")
    print("\n".join(floors(path)))
