"""Build a complete, really signed Hex repository in memory, for fakes and client tests.

`build_repo(specs, key)` returns every file a Hex repository serves, keyed by its path
under the repository URL (``names``, ``versions``, ``packages/NAME``,
``tarballs/NAME-VERSION.tar``). Registry files are signed with the given key and each
tarball is a real Hex tarball, so mix and rebar3 accept the result once told the public
key. Unless a spec brings its own files, each release is a tiny compilable OTP
application whose code includes a header of every required dependency: compiling it
without the right dependencies fails, which is what makes a client run meaningful.

`erlang_tree()` is a ready-made repository shaped like real dependency graphs (see the
comment above it), with `erlang_tree_roots()` and `expected_lock()` for tests that
drive rebar3 against it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hexproxy.registry import (
    Dependency,
    Names,
    Package,
    Release,
    Retirement,
    RetirementReason,
    Versions,
    VersionsEntry,
    build_names,
    build_package,
    build_versions,
    tarball_filename,
)
from hexproxy.registry.tarball import build_tarball
from hexproxy.registry.versions import Version

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = [
    "DepSpec",
    "PackageSpec",
    "build_org_repo",
    "build_repo",
    "erlang_tree",
    "erlang_tree_roots",
    "expected_lock",
    "generate_otp_app",
]


@dataclass(frozen=True)
class DepSpec:
    """A requirement of one release on another package of the same repository."""

    name: str
    requirement: str
    optional: bool = False
    repository: str | None = None  # None: the same repository as the package


@dataclass
class PackageSpec:
    """One release to publish.

    ``retired`` is False, True, or the retirement message; ``retired_reason`` is a
    RetirementReason value. ``files`` (path -> bytes) replaces the generated OTP app.
    """

    name: str
    version: str
    deps: list[DepSpec] = field(default_factory=list)
    retired: bool | str = False
    files: dict[str, bytes] | None = None
    retired_reason: int = RetirementReason.OTHER


def build_repo(
    specs: Iterable[PackageSpec], private_key: RSAPrivateKey, *, repository: str = "hexpm"
) -> dict[str, bytes]:
    """Every file of a repository holding ``specs``, signed with ``private_key``."""
    by_name: dict[str, list[PackageSpec]] = defaultdict(list)
    for spec in specs:
        by_name[spec.name].append(spec)
    files: dict[str, bytes] = {}
    entries: list[VersionsEntry] = []
    for name in sorted(by_name):
        # hexpm lists releases oldest first; clients must not depend on it, but
        # serving the same order keeps byte-for-byte comparisons meaningful.
        releases = sorted(by_name[name], key=lambda s: Version.parse(s.version))
        built = [_release(spec, files) for spec in releases]
        package = Package(name=name, repository=repository, releases=tuple(built))
        files[f"packages/{name}"] = build_package(package, private_key)
        retired = tuple(i for i, r in enumerate(built) if r.retired is not None)
        entries.append(VersionsEntry(name, tuple(r.version for r in built), retired))
    names = Names(repository=repository, packages=tuple(sorted(by_name)))
    files["names"] = build_names(names, private_key)
    files["versions"] = build_versions(Versions(repository, tuple(entries)), private_key)
    return files


def build_org_repo(
    specs: Iterable[PackageSpec], private_key: RSAPrivateKey, org: str
) -> dict[str, bytes]:
    """A hex.pm organization's files, under ``repos/ORG/`` as repo.hex.pm serves them, signed
    with ``private_key`` (hexpm signs every organization with its own key) for ``org``."""
    files = build_repo(specs, private_key, repository=org)
    return {f"repos/{org}/{path}": data for path, data in files.items()}


def _release(spec: PackageSpec, files: dict[str, bytes]) -> Release:
    """Build the tarball of ``spec`` into ``files`` and return its registry Release."""
    deps = tuple(
        Dependency(d.name, d.requirement, optional=d.optional, repository=d.repository)
        for d in spec.deps
    )
    sources = spec.files if spec.files is not None else generate_otp_app(spec)
    tarball, inner = build_tarball(
        spec.name,
        spec.version,
        files=sources,
        requirements=deps,
        app=spec.name,
        build_tools=("rebar3",),
        description=f"hexproxy test package {spec.name}",
    )
    files[f"tarballs/{tarball_filename(spec.name, spec.version)}"] = tarball
    return Release(
        version=spec.version,
        inner_checksum=inner,
        outer_checksum=hashlib.sha256(tarball).digest(),
        dependencies=deps,
        retired=_retirement(spec),
    )


def _retirement(spec: PackageSpec) -> Retirement | None:
    if spec.retired is False:
        return None
    message = spec.retired if isinstance(spec.retired, str) else None
    return Retirement(reason=spec.retired_reason, message=message)


# ---------------------------------------------------------------------------
# Generated OTP applications


def generate_otp_app(spec: PackageSpec) -> dict[str, bytes]:
    """A minimal OTP application for ``spec``, buildable by rebar3 (and mix).

    Every required dependency is pulled in with ``-include_lib`` and its macro is used,
    so a missing dependency is a compile error, not a silent success. Optional
    dependencies are only called at run time when present, as real packages do.
    """
    required = [d for d in spec.deps if not d.optional]
    optional = [d for d in spec.deps if d.optional]
    return {
        f"include/{spec.name}.hrl": _hrl(spec).encode(),
        f"src/{spec.name}.erl": _module(spec, required, optional).encode(),
        f"src/{spec.name}.app.src": _app_src(spec, required).encode(),
        "rebar.config": _rebar_config(required).encode(),
    }


def _macro(name: str) -> str:
    return f"{name.upper()}_VSN"


def _hrl(spec: PackageSpec) -> str:
    return f'-define({_macro(spec.name)}, <<"{spec.version}">>).\n'


def _module(spec: PackageSpec, required: list[DepSpec], optional: list[DepSpec]) -> str:
    includes = "".join(f'-include_lib("{d.name}/include/{d.name}.hrl").\n' for d in required)
    # Each entry: {Dep, VersionCompiledAgainst, VersionLoadedNow}.
    entries = [f"{{{d.name}, ?{_macro(d.name)}, {d.name}:version()}}" for d in required]
    entries += [f"{{{d.name}, optional, optional({d.name})}}" for d in optional]
    deps_body = ",\n     ".join(entries)
    return (
        f"-module({spec.name}).\n"
        f"{includes}"
        "-export([version/0, deps/0]).\n\n"
        f'version() -> <<"{spec.version}">>.\n\n'
        f"deps() ->\n    [{deps_body}].\n"
        + (
            "\noptional(Mod) ->\n"
            "    case code:ensure_loaded(Mod) of\n"
            "        {module, Mod} -> Mod:version();\n"
            "        _ -> missing\n"
            "    end.\n"
            if optional
            else ""
        )
    )


def _app_src(spec: PackageSpec, required: list[DepSpec]) -> str:
    apps = ", ".join(["kernel", "stdlib", *(d.name for d in required)])
    return (
        f"{{application, {spec.name},\n"
        f' [{{description, "hexproxy test package {spec.name}"}},\n'
        f'  {{vsn, "{spec.version}"}},\n'
        f"  {{registered, []}},\n"
        f"  {{applications, [{apps}]}},\n"
        f"  {{env, []}},\n"
        f'  {{licenses, ["Apache-2.0"]}}]}}.\n'
    )


def _rebar_config(required: list[DepSpec]) -> str:
    deps = ", ".join(f'{{{d.name}, "{d.requirement}"}}' for d in required)
    return f"{{erl_opts, [debug_info]}}.\n{{deps, [{deps}]}}.\n"


# ---------------------------------------------------------------------------
# A realistic tree
#
# Roots (what a project asks for): acorn "~> 1.1", birch "~> 2.1", cedar "~> 0.4".
# The releases rebar3 locks, with the requirements each one declares:
#
#   acorn 1.2.0    dogwood ~> 1.2, elm ~> 0.5.0, fir ~> 1.0 (optional)
#   birch 2.1.1    dogwood ~> 1.1, gum ~> 1.0      (dogwood: the diamond)
#   cedar 0.4.1    kapok ~> 1.1, hazel ~> 0.2.0
#   dogwood 1.2.3  hazel ~> 0.2
#   elm 0.5.2      ivy ~> 1.0
#   fir 1.1.0      juniper ~> 3.0
#   kapok 1.2.0    larch ~> 2.0, maple ~> 1.0
#   maple 1.0.1    nutmeg ~> 0.1.0
#   gum 1.1.0, hazel 0.2.1, ivy 1.0.1, juniper 3.1.0, larch 2.1.0, nutmeg 0.1.1: no deps
#   oak: published, required by nobody (a proxy must not fetch it).
#
# Traps for the resolver:
# * acorn 1.3.0-rc.1 and juniper 3.2.0-beta.1 are newer than every stable release and
#   inside the requirement's range: they must not be picked (rebar3 only admits
#   pre-releases when the requirement names one; Hex uses allow_pre: false).
# * gum 2.0.0 (invalid) and hazel 0.1.0 (security) are retired. Both lie outside the
#   ranges, because rebar3 3.19 ignores retirement when resolving while Hex avoids
#   retired releases: a retired release in range would make the two clients disagree.
# * hazel is required twice: "~> 0.2.0" by cedar (level 1) and "~> 0.2" by dogwood 1.2.3
#   (level 2). Alone, "~> 0.2" would pick 0.3.0; rebar3 keeps the shallower requirement
#   and Hex intersects both, so both lock 0.2.1.
# * fir is optional for acorn. rebar3 3.19 still fetches optional dependencies (observed;
#   its rebar_packages:parse_deps never reads the `optional` flag), Hex does not.


def _tree_table() -> list[tuple[str, str, list[DepSpec]]]:
    d = DepSpec
    optional_fir = d("fir", "~> 1.0", optional=True)
    return [
        ("acorn", "1.0.0", [d("dogwood", "~> 1.0")]),
        ("acorn", "1.1.0", [d("dogwood", "~> 1.1"), d("elm", "~> 0.5.0")]),
        ("acorn", "1.2.0", [d("dogwood", "~> 1.2"), d("elm", "~> 0.5.0"), optional_fir]),
        ("acorn", "1.3.0-rc.1", [d("dogwood", "~> 2.0"), d("elm", "~> 0.6")]),
        ("birch", "2.0.0", [d("dogwood", "~> 1.0")]),
        ("birch", "2.1.0", [d("dogwood", "~> 1.1"), d("gum", "~> 1.0")]),
        ("birch", "2.1.1", [d("dogwood", "~> 1.1"), d("gum", "~> 1.0")]),
        ("cedar", "0.3.0", [d("kapok", "~> 1.0")]),
        ("cedar", "0.4.0", [d("kapok", "~> 1.1")]),
        ("cedar", "0.4.1", [d("kapok", "~> 1.1"), d("hazel", "~> 0.2.0")]),
        ("dogwood", "1.0.0", []),
        ("dogwood", "1.1.0", []),
        ("dogwood", "1.2.0", [d("hazel", "~> 0.2")]),
        ("dogwood", "1.2.3", [d("hazel", "~> 0.2")]),
        ("dogwood", "2.0.0", [d("hazel", "~> 0.3")]),
        ("elm", "0.4.0", []),
        ("elm", "0.5.0", [d("ivy", "~> 1.0")]),
        ("elm", "0.5.2", [d("ivy", "~> 1.0")]),
        ("elm", "0.6.0", [d("ivy", "~> 1.0")]),
        ("fir", "1.0.0", []),
        ("fir", "1.1.0", [d("juniper", "~> 3.0")]),
        ("gum", "1.0.0", []),
        ("gum", "1.0.1", []),
        ("gum", "1.1.0", []),
        ("gum", "2.0.0", []),
        ("hazel", "0.1.0", []),
        ("hazel", "0.2.0", []),
        ("hazel", "0.2.1", []),
        ("hazel", "0.3.0", []),
        ("ivy", "1.0.0", []),
        ("ivy", "1.0.1", []),
        ("juniper", "3.0.0", []),
        ("juniper", "3.1.0", []),
        ("juniper", "3.2.0-beta.1", []),
        ("kapok", "1.0.0", [d("larch", "~> 2.0")]),
        ("kapok", "1.1.0", [d("larch", "~> 2.0")]),
        ("kapok", "1.2.0", [d("larch", "~> 2.0"), d("maple", "~> 1.0")]),
        ("larch", "2.0.0", []),
        ("larch", "2.0.1", []),
        ("larch", "2.1.0", []),
        ("maple", "1.0.0", [d("nutmeg", "~> 0.1.0")]),
        ("maple", "1.0.1", [d("nutmeg", "~> 0.1.0")]),
        ("nutmeg", "0.1.0", []),
        ("nutmeg", "0.1.1", []),
        ("oak", "1.0.0", []),
    ]


_RETIRED: dict[tuple[str, str], tuple[int, str]] = {
    ("gum", "2.0.0"): (RetirementReason.INVALID, "published by mistake"),
    ("hazel", "0.1.0"): (RetirementReason.SECURITY, "unsafe default, upgrade"),
}


def erlang_tree() -> list[PackageSpec]:
    """15 packages, 45 releases: the repository drawn in the comment above."""
    specs = []
    for name, version, deps in _tree_table():
        spec = PackageSpec(name, version, deps)
        if (name, version) in _RETIRED:
            spec.retired_reason, message = _RETIRED[name, version]
            spec.retired = message
        specs.append(spec)
    return specs


def erlang_tree_roots() -> list[tuple[str, str]]:
    """(name, requirement) of the top-level dependencies of a project using the tree."""
    return [("acorn", "~> 1.1"), ("birch", "~> 2.1"), ("cedar", "~> 0.4")]


def expected_lock(*, with_optional: bool = True) -> dict[str, str]:
    """Name -> version that resolving `erlang_tree_roots()` must lock (hand-computed).

    ``with_optional`` covers rebar3 3.19, which also fetches acorn's optional fir (and
    with it juniper); pass False for Hex, which leaves optional dependencies out.
    """
    lock = {
        "acorn": "1.2.0",  # ~> 1.1; 1.3.0-rc.1 is a pre-release
        "birch": "2.1.1",  # ~> 2.1
        "cedar": "0.4.1",  # ~> 0.4 means >= 0.4.0 and < 1.0.0
        "dogwood": "1.2.3",  # ~> 1.2 (acorn) and ~> 1.1 (birch); 2.0.0 is out of both
        "elm": "0.5.2",  # ~> 0.5.0 means < 0.6.0
        "gum": "1.1.0",  # ~> 1.0; 2.0.0 is retired and out of range anyway
        "hazel": "0.2.1",  # ~> 0.2.0 (cedar) wins over dogwood's ~> 0.2
        "ivy": "1.0.1",
        "kapok": "1.2.0",
        "larch": "2.1.0",  # ~> 2.0 means < 3.0.0
        "maple": "1.0.1",
        "nutmeg": "0.1.1",
    }
    if with_optional:
        lock["fir"] = "1.1.0"
        lock["juniper"] = "3.1.0"  # 3.2.0-beta.1 is a pre-release
    return lock
