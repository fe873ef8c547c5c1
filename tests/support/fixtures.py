"""Where the shared real-data fixtures live: `<repo root>/../shared/fixtures`.

The repository and `shared/` are siblings both here and in CI's clean clone, so the path
is derived from this file rather than from the working directory. Anyone else's clone
has no `shared/`: the tests that read it are marked `real_data` and skip there with
one reason, except under `CI=true`, where a missing folder is a broken CI setup and
fails them (as a missing rebar3 does). Every other test must not read it at all;
tests/conftest.py watches for that.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES: Path = REPO_ROOT.parent / "shared" / "fixtures"

MISSING = (
    f"real_data: no real-data fixtures at {FIXTURES} "
    "(the team's shared/fixtures folder beside the checkout)"
)


def require_real_data() -> None:
    """Skip the running test without the fixtures folder (fail under CI=true)."""
    if FIXTURES.is_dir():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {MISSING}", pytrace=False)
    pytest.skip(MISSING)


def is_under_fixtures(path: str) -> bool:
    """Whether ``path`` (absolute, or relative to the working directory) lies in FIXTURES,
    reached directly or through the ``shared`` symlink."""
    absolute = os.path.abspath(path)
    return any(absolute == root or absolute.startswith(root + os.sep) for root in _ROOTS)


_ROOTS = tuple({str(FIXTURES), os.path.realpath(FIXTURES)})
