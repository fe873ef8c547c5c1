"""Hosted repositories in an air-gap bundle: which files go out, and checking them in.

A bundle carries each hosted repository as ``hosted/NAME/names``, ``hosted/NAME/versions``,
``hosted/NAME/packages/PKG`` (the signed files, byte for byte) and
``hosted/NAME/tarballs/PKG-VERSION.tar``. Docs stay behind: nothing signed vouches for
them, as for the cache's docs.

Import trusts nothing in the bundle. A repository is taken only when it is configured on
this side under the same name, every registry file verifies with *this side's* key for
it (so both sides must sign with the same configured ``private_key``), names, versions
and the package files agree, and every release's tarball hashes to its signed outer
checksum. It then replaces the repository's registry in one generation swap, and only if
it lists every release this side already has: a bundle never takes a release away.
Anything else refuses the whole repository, with the reason.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

from ..errors import InvalidRequest, VerificationError
from ..registry import (
    parse_tarball_filename,
    verify_names,
    verify_package,
    verify_versions,
)
from .repository import MAX_REGISTRY, HostedRepository
from .service import Hosted

__all__ = ["PREFIX", "ImportOutcome", "bundle_files", "import_files"]

PREFIX = "hosted/"


@dataclass
class ImportOutcome:
    added: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


def bundle_files(hosted: Hosted) -> list[tuple[str, bytes]]:
    """Every file of every hosted repository, under ``hosted/NAME/``."""
    files: list[tuple[str, bytes]] = []
    for name, repo in sorted(hosted.repos.items()):
        names, versions, packages = repo.snapshot()
        base = f"{PREFIX}{name}"
        files += [(f"{base}/names", names), (f"{base}/versions", versions)]
        for package_name, body in packages.items():
            files.append((f"{base}/packages/{package_name}", body))
            package = verify_package(
                body,
                repo.public_key,
                repository=name,
                name=package_name,
                max_uncompressed=MAX_REGISTRY,
            )
            for release in package.releases:
                blob = repo.tarball(package_name, release.version)
                if blob is None:
                    raise VerificationError(
                        f"{base}: tarball of {package_name} {release.version} is missing"
                    )
                files.append(
                    (
                        f"{base}/tarballs/{package_name}-{release.version}.tar",
                        blob.path.read_bytes(),
                    )
                )
    return files


def import_files(hosted: Hosted, files: dict[str, bytes]) -> ImportOutcome:
    """Check in the ``hosted/`` members of a bundle (already checked against its manifest)."""
    outcome = ImportOutcome()
    by_repo: dict[str, dict[str, bytes]] = defaultdict(dict)
    for path, data in files.items():
        name, _, rest = path.removeprefix(PREFIX).partition("/")
        by_repo[name][rest] = data
    for name, members in sorted(by_repo.items()):
        paths = [f"{PREFIX}{name}/{rest}" for rest in sorted(members)]
        repo = hosted.repos.get(name)
        if repo is None:
            outcome.refused += [
                (p, f"no hosted repository {name!r} is configured here") for p in paths
            ]
            continue
        try:
            changed = _import_repo(repo, members)
        except (VerificationError, InvalidRequest) as exc:
            outcome.refused += [(p, exc.message) for p in paths]
            continue
        if changed:
            outcome.added += paths
        else:
            outcome.skipped += [(p, "already in the hosted repository") for p in paths]
    return outcome


def _import_repo(repo: HostedRepository, members: dict[str, bytes]) -> bool:
    key, name = repo.public_key, repo.name
    if "names" not in members or "versions" not in members:
        raise VerificationError("the bundle lacks names or versions")
    names = verify_names(members["names"], key, repository=name, max_uncompressed=MAX_REGISTRY)
    versions = verify_versions(
        members["versions"], key, repository=name, max_uncompressed=MAX_REGISTRY
    )
    packages = {
        rest.removeprefix("packages/"): body
        for rest, body in members.items()
        if rest.startswith("packages/")
    }
    tarballs = {
        rest.removeprefix("tarballs/"): body
        for rest, body in members.items()
        if rest.startswith("tarballs/")
    }
    unknown = (
        set(members)
        - {"names", "versions"}
        - {f"packages/{p}" for p in packages}
        - {f"tarballs/{t}" for t in tarballs}
    )
    if unknown:
        raise VerificationError(f"unexpected file {sorted(unknown)[0]!r}")
    if set(names.packages) != set(packages):
        raise VerificationError("names does not list exactly the bundle's package files")
    listed = {e.name: set(e.versions) for e in versions.packages}
    blobs: dict[str, bytes] = {}
    releases: set[tuple[str, str]] = set()
    for package_name, body in packages.items():
        package = verify_package(
            body, key, repository=name, name=package_name, max_uncompressed=MAX_REGISTRY
        )
        if listed.get(package_name) != {r.version for r in package.releases}:
            raise VerificationError(f"versions disagrees with packages/{package_name}")
        for release in package.releases:
            filename = f"{package_name}-{release.version}.tar"
            data = tarballs.get(filename)
            expected = release.outer_checksum.hex() if release.outer_checksum else None
            if data is None or hashlib.sha256(data).hexdigest() != expected:
                raise VerificationError(f"tarballs/{filename} is missing or not the signed one")
            blobs[expected] = data
            releases.add((package_name, release.version))
    for filename in tarballs:
        parse_tarball_filename(filename)
    current = {(e.name, v) for e in repo.versions().packages for v in e.versions}
    if not current <= releases:
        missing = sorted(current - releases)[0]
        raise VerificationError(f"this side has {missing[0]} {missing[1]}, which the bundle lacks")
    if repo.snapshot() == (members["names"], members["versions"], packages):
        return False
    repo.adopt(members["names"], members["versions"], packages, blobs)
    return True
