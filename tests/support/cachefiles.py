"""What a cache directory holds, as a test means it: stored objects and their sidecars,
not the server's bookkeeping (lock files, the workers' state files, the entry index)."""

from __future__ import annotations

from pathlib import Path


def object_files(root: Path) -> list[Path]:
    """Every file under ``root`` but ``locks/``, ``state/`` and ``index.sqlite3*``."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not {"locks", "state"} & set(p.relative_to(root).parts)
        and not (p.parent == root and p.name.startswith("index.sqlite3"))
    )
