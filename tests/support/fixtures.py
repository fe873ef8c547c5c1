"""Where the shared real-data fixtures live: `<repo root>/../shared/fixtures`.

The repository and `shared/` are siblings both here and in CI's clean clone, so the path
is derived from this file rather than from the working directory.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES: Path = REPO_ROOT.parent / "shared" / "fixtures"
