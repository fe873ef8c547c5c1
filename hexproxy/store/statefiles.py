"""Small state files through which the worker processes sharing a cache directory tell
each other what upstream said: a host's breaker pause, an object upstream does not have
or keeps failing on. Under ``state/`` in the cache directory.

Each file is a few bytes of JSON, written whole (temp file, then rename: a reader sees
the old file or the new one, never half of one) and not fsynced: they are hints, and
one lost in a crash costs one more upstream request, not a wrong answer. Synchronous
and cheap; callers decide where to run them.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATE_DIR = "state"


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / name

    def write(self, name: str, value: dict[str, Any]) -> None:
        final = self.path(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{uuid.uuid4().hex}.part")
        try:
            temp.write_bytes(json.dumps(value).encode())
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise

    def read(self, name: str) -> dict[str, Any] | None:
        """The value, or None if there is none (or it is not ours to read)."""
        try:
            value = json.loads(self.path(name).read_bytes())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()

    def sweep(self, group: str, done: Callable[[dict[str, Any]], bool]) -> int:
        """Remove the files of ``group`` (a subdirectory) whose value is ``done``."""
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root / group):
                if entry.name.startswith("."):
                    continue  # a value being written
                value = self.read(f"{group}/{entry.name}")
                if value is None or done(value):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += 1
        return removed

    def clear(self) -> None:
        """Forget everything (at start-up: a restart is how operators say "try again")."""
        if not self.root.is_dir():
            return
        for directory, _, files in os.walk(self.root, topdown=False):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, name))
