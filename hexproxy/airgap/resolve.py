"""Which releases to warm: package specs and lock entries against verified registry data.

``hexproxy warm`` (and ``export`` of a spec list) must guess what ``mix deps.get`` or
rebar3 will ask for. The guess follows hex-protocol.md section 8: for each
requirement, the newest matching stable release (Elixir's ``allow_pre: false``
rules, from ``versions.py``), then its dependencies, optional ones included, each
in its own repository. Taking optional dependencies too warms a superset, which
costs a few tarballs but never leaves a client stuck offline.

Pure: everything here takes decoded ``Package`` data and returns values, so the
choices can be tested from a table without a server.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Package, Release, is_valid_name
from ..registry.versions import (
    InvalidRequirement,
    Requirement,
    all_matches,
    best_match,
    parse_requirement,
)
from .lockfiles import LockedPackage

__all__ = [
    "ANY",
    "Spec",
    "SpecError",
    "Want",
    "check_locked",
    "dependency_wants",
    "parse_spec",
    "select_versions",
]

# What a bare NAME means: any stable release (">= 0.0.0" admits no pre-release).
ANY = ">= 0.0.0"


class SpecError(ValueError):
    """A package spec on the command line is not NAME, NAME@VERSION or NAME@REQUIREMENT."""


@dataclass(frozen=True, slots=True)
class Want:
    """A requirement to satisfy: ``top`` marks what the user named (``--all-versions``
    widens only those; a dependency always gets its newest match)."""

    name: str
    requirement: str
    repository: str
    top: bool = False


@dataclass(frozen=True, slots=True)
class Spec:
    name: str
    requirement: Requirement

    def want(self, repository: str) -> Want:
        return Want(self.name, str(self.requirement), repository, top=True)


def parse_spec(text: str) -> Spec:
    """``phoenix``, ``phoenix@1.7.2`` or ``phoenix@~> 1.7``; raise SpecError otherwise."""
    name, sep, requirement = text.strip().partition("@")
    if not is_valid_name(name):
        raise SpecError(f"invalid package spec {text!r}: {name!r} is not a package name")
    if sep and not requirement.strip():
        raise SpecError(f"invalid package spec {text!r}: nothing after '@'")
    try:
        return Spec(name, parse_requirement(requirement.strip() if sep else ANY))
    except InvalidRequirement as exc:
        raise SpecError(f"invalid package spec {text!r}: {exc}") from None


def select_versions(package: Package, requirement: str, *, all_versions: bool = False) -> list[str]:
    """The releases of ``package`` to warm for ``requirement``, oldest first.

    One release (what a client would pick) unless ``all_versions``; empty when
    nothing matches. A pre-release is only chosen when the requirement asks
    for one, or when it is the only match (Hex prefers stable releases but
    does not forbid others).
    """
    versions = [release.version for release in package.releases]
    if all_versions:
        return all_matches(requirement, versions)
    best = best_match(requirement, versions)
    return [] if best is None else [best]


def dependency_wants(release: Release, parent_repository: str) -> list[Want]:
    """What ``release`` needs next; a dependency without a repository lives in its parent's."""
    return [
        Want(dep.package, dep.requirement, dep.repository or parent_repository)
        for dep in release.dependencies
    ]


def check_locked(package: Package, locked: LockedPackage) -> tuple[Release | None, str | None]:
    """The signed release a lock entry pins, or why the lock and the registry disagree.

    A lock's checksums are only a second opinion: the signed registry is what
    the tarball is verified against, but a lock that disagrees with it means
    the project and this repository are not talking about the same bytes.
    """
    release = package.release(locked.version)
    if release is None:
        return None, f"the registry has no release {locked.version}"
    if locked.outer_checksum is not None and locked.outer_checksum != release.outer_checksum:
        return None, "the lock's outer checksum differs from the signed registry's"
    if locked.inner_checksum is not None and locked.inner_checksum != release.inner_checksum:
        return None, "the lock's inner checksum differs from the signed registry's"
    return release, None
