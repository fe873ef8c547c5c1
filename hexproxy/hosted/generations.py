"""A hosted repository's registry as generations swapped by one rename.

``root/current`` is a symlink to ``gens/NNNNNNNN``, a directory holding ``names``,
``versions`` and ``packages/NAME``. A change writes a complete new generation under a
dot-name (unchanged package files are hard links to the current ones), fsyncs it,
renames it into place, then replaces ``current`` with a new symlink in one
``rename(2)``: the only step readers observe. A crash before that leaves the old
generation current (and a dot-directory that the next change removes); after it, the
new one. Readers open files through ``current``; the generations just before it are
kept a while, so a reader that resolved one a moment ago still finds its files.

The caller holds the repository's lock around every change. Plain files, nothing
Hex-specific: the bytes are signed by the caller.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

__all__ = ["KEEP_GENERATIONS", "Generations", "fsync_dir", "sha256_file", "write_synced"]

KEEP_GENERATIONS = 3
CURRENT = "current"


class Generations:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.gens = root / "gens"

    def path(self, resource: str) -> Path:
        """``names``, ``versions`` or ``packages/NAME`` through ``current``."""
        return self.root / CURRENT / resource

    def read(self, resource: str) -> bytes | None:
        try:
            return self.path(resource).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def exists(self) -> bool:
        return (self.root / CURRENT).exists()

    def current_id(self) -> int:
        try:
            return int(os.readlink(self.root / CURRENT).rpartition("/")[2])
        except (FileNotFoundError, ValueError):
            return 0

    def snapshot(self) -> tuple[bytes, bytes, dict[str, bytes]]:
        """names, versions and every package file of the current generation."""
        current = self.root / CURRENT
        packages = {p.name: p.read_bytes() for p in sorted((current / "packages").iterdir())}
        return (current / "names").read_bytes(), (current / "versions").read_bytes(), packages

    def write(
        self,
        names: bytes,
        versions: bytes,
        packages: Mapping[str, bytes | None],
        *,
        keep_others: bool,
    ) -> None:
        """A new current generation: these files (None removes a package), plus, with
        ``keep_others``, every other package file of the current one."""
        new_id = self.current_id() + 1
        staging = self.gens / f".{new_id:08d}.{uuid.uuid4().hex}"
        (staging / "packages").mkdir(parents=True)
        try:
            previous = self.root / CURRENT / "packages"
            if keep_others and previous.is_dir():
                for path in previous.iterdir():
                    if path.name not in packages:
                        os.link(path, staging / "packages" / path.name)
            for name, body in packages.items():
                if body is not None:
                    write_synced(staging / "packages" / name, body)
            write_synced(staging / "names", names)
            write_synced(staging / "versions", versions)
            fsync_dir(staging / "packages")
            fsync_dir(staging)
            os.rename(staging, self.gens / f"{new_id:08d}")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(self.gens)
        link = self.root / f".{CURRENT}.{uuid.uuid4().hex}"
        os.symlink(f"gens/{new_id:08d}", link)
        os.replace(link, self.root / CURRENT)  # the one atomic step readers observe
        fsync_dir(self.root)
        self._collect(new_id)

    def _collect(self, current: int) -> None:
        """Remove generations readers can no longer be using, and crashed leftovers."""
        for path in self.gens.iterdir():
            old = path.name.isdigit() and int(path.name) <= current - KEEP_GENERATIONS
            if old or path.name.startswith("."):
                shutil.rmtree(path, ignore_errors=True)
        for path in self.root.glob(f".{CURRENT}.*"):
            path.unlink(missing_ok=True)


def write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(directory: Path) -> None:
    # A rename is only durable once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
