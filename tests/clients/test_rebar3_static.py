"""Real rebar3 against a static Hex repository built by tests/support/repo.py.

This validates the repository builder, not the proxy: if rebar3 resolves, fetches,
verifies and compiles `erlang_tree()` served as plain files, the same builder can stand
in for repo.hex.pm behind the proxy in the end-to-end tests. The fake server logs every
request so the tests can pin down what rebar3 really asks for.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

from hexproxy.registry import public_key_pem, verify_names, verify_package, verify_versions
from hexproxy.registry.versions import Version, parse_requirement
from tests.support.keys import other_private_key, test_private_key
from tests.support.rebar3 import Rebar3Project, require_rebar3
from tests.support.repo import build_repo, erlang_tree, erlang_tree_roots, expected_lock

if TYPE_CHECKING:
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from pytest_aiohttp import AiohttpServer

LIMIT = 16 * 1024 * 1024


@functools.cache
def tree_files() -> dict[str, bytes]:
    return build_repo(erlang_tree(), test_private_key())


# ---------------------------------------------------------------------------
# A static Hex repository over HTTP


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    status: int
    if_none_match: str | None
    user_agent: str | None
    headers: tuple[tuple[str, str], ...]


@dataclass
class StaticRepo:
    """Serves ``files`` the way repo.hex.pm does and records every request."""

    files: dict[str, bytes]
    hits: list[Hit] = field(default_factory=list)
    # Knob: leave the ETag off tarball 200s, which rebar3 counts as a failed download.
    tarball_etag: bool = True

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._serve)
        return app

    @staticmethod
    def etag(body: bytes) -> str:
        return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

    async def _serve(self, request: web.Request) -> web.Response:
        response = self._respond(request.match_info["path"], request.headers.get("If-None-Match"))
        self.hits.append(
            Hit(
                method=request.method,
                path=request.path,
                status=response.status,
                if_none_match=request.headers.get("If-None-Match"),
                user_agent=request.headers.get("User-Agent"),
                headers=tuple(request.headers.items()),
            )
        )
        return response

    def _respond(self, path: str, if_none_match: str | None) -> web.Response:
        body = self.files.get(path)
        if body is None:
            return web.Response(status=404, text="not found\n")
        etag = self.etag(body)
        # rebar3 sends `if-none-match: ""` on a cold cache: an empty tag matches nothing.
        if if_none_match and _etag_matches(if_none_match, etag):
            return web.Response(status=304, headers={"ETag": etag})
        headers = {"Cache-Control": "public, max-age=3600"}
        if self.tarball_etag or not path.startswith("tarballs/"):
            headers["ETag"] = etag
        # Registry files are gzip bytes already; no Content-Encoding (Hex would gunzip twice).
        return web.Response(body=body, content_type="application/octet-stream", headers=headers)

    def paths(self, prefix: str = "/") -> list[str]:
        return [h.path for h in self.hits if h.path.startswith(prefix)]


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return "*" in candidates or etag in candidates


async def serve(
    aiohttp_server: AiohttpServer, files: dict[str, bytes], *, tarball_etag: bool = True
) -> tuple[StaticRepo, str]:
    repo = StaticRepo(files, tarball_etag=tarball_etag)
    server = await aiohttp_server(repo.app(), host="127.0.0.1")
    return repo, str(server.make_url("/")).rstrip("/")


def new_project(
    root: Path,
    url: str,
    *,
    key: RSAPrivateKey | None = None,
    deps: list[tuple[str, str]] | None = None,
) -> Rebar3Project:
    return Rebar3Project(
        root,
        cdn_url=url,
        public_key_pem=public_key_pem((key or test_private_key()).public_key()),
        deps=erlang_tree_roots() if deps is None else deps,
    )


# ---------------------------------------------------------------------------
# The builder on its own (fast, no rebar3)


def test_tree_registry_files_verify_and_match_tarballs() -> None:
    files = tree_files()
    key = test_private_key().public_key()
    names = verify_names(files["names"], key, repository="hexpm", max_uncompressed=LIMIT)
    versions = verify_versions(files["versions"], key, repository="hexpm", max_uncompressed=LIMIT)
    assert len(names.packages) >= 12
    for entry in versions.packages:
        package = verify_package(
            files[f"packages/{entry.name}"],
            key,
            repository="hexpm",
            name=entry.name,
            max_uncompressed=LIMIT,
        )
        parsed = [Version.parse(r.version) for r in package.releases]
        assert parsed == sorted(parsed), f"{entry.name} releases are not ascending"
        assert entry.versions == tuple(r.version for r in package.releases)
        retired = tuple(i for i, r in enumerate(package.releases) if r.retired is not None)
        assert entry.retired == retired
        for release in package.releases:
            tarball = files[f"tarballs/{entry.name}-{release.version}.tar"]
            assert release.outer_checksum == hashlib.sha256(tarball).digest()


def test_expected_lock_is_consistent_with_the_requirements() -> None:
    """Each locked version is the best stable match of every requirement on it in the lock."""
    lock = expected_lock()
    specs = {(s.name, s.version): s for s in erlang_tree()}
    available: dict[str, list[Version]] = {}
    for name, version in specs:
        available.setdefault(name, []).append(Version.parse(version))
    wanted = [(name, req) for name, req in erlang_tree_roots()]
    wanted += [(d.name, d.requirement) for n, v in lock.items() for d in specs[n, v].deps]
    for name, req in wanted:
        assert parse_requirement(req).matches(lock[name]), f"{name} {lock[name]} vs {req}"
    # Every root and every direct requirement of a root picks its overall best match.
    for name, req in erlang_tree_roots():
        best = max(v for v in available[name] if parse_requirement(req).matches(v))
        assert str(best) == lock[name]


# ---------------------------------------------------------------------------
# Real rebar3


@pytest.mark.clients
async def test_rebar3_fetches_and_compiles_the_tree(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    require_rebar3()
    repo, url = await serve(aiohttp_server, tree_files())
    project = new_project(tmp_path, url)

    fetched = await project.get_deps()
    assert fetched.ok, fetched
    compiled = await project.compile()
    assert compiled.ok, compiled
    assert project.lock() == expected_lock()

    lock = expected_lock()
    # Strictly what resolution needs: one /packages/NAME per locked package and one
    # tarball per locked release; never /names, /versions or unrelated packages.
    assert sorted(repo.paths("/packages/")) == sorted(f"/packages/{n}" for n in lock)
    tarballs = sorted(f"/tarballs/{n}-{v}.tar" for n, v in lock.items())
    assert sorted(repo.paths("/tarballs/")) == tarballs
    assert len(repo.hits) == 2 * len(lock)
    # The lock's outer checksums are the registry's, which are the served tarballs' sha256.
    for name, checksum in project.lock_checksums().items():
        tarball = tree_files()[f"tarballs/{name}-{lock[name]}.tar"]
        assert checksum == hashlib.sha256(tarball).digest()
    # Cold cache: rebar3 sends the header with an empty value (no stored ETag yet).
    cold_tarball_conditions = {h.if_none_match for h in repo.hits if "/tarballs/" in h.path}
    assert cold_tarball_conditions == {""}


@pytest.mark.clients
async def test_rebar3_revalidates_cached_tarballs_with_their_etag(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    require_rebar3()
    repo, url = await serve(aiohttp_server, tree_files())
    project = new_project(tmp_path, url)
    first = await project.get_deps()
    assert first.ok, first
    repo.hits.clear()

    project.clean_build()
    again = await project.get_deps()
    assert again.ok, again

    # Warm: no registry requests at all (resolution comes from rebar3's local index and
    # the lock), and every tarball is revalidated with the ETag we sent, answered by 304.
    assert repo.paths("/packages/") == []
    tarballs = [h for h in repo.hits if h.path.startswith("/tarballs/")]
    assert len(tarballs) == len(expected_lock())
    for hit in tarballs:
        body = tree_files()[hit.path.removeprefix("/")]
        assert hit.if_none_match == StaticRepo.etag(body), hit
        assert hit.status == 304

    # `rebar3 update` refreshes every package of its local index, unconditionally;
    # `upgrade --all` re-reads the roots. Nothing changed upstream, so the lock stays.
    repo.hits.clear()
    updated = await project.update()
    assert updated.ok, updated
    assert sorted(repo.paths("/packages/")) == sorted(f"/packages/{n}" for n in expected_lock())
    assert {h.if_none_match for h in repo.hits} == {None}
    upgraded = await project.upgrade_all()
    assert upgraded.ok, upgraded
    assert project.lock() == expected_lock()


@pytest.mark.clients
async def test_rebar3_rejects_a_registry_signed_with_another_key(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """Proves the global config's repo_public_key is really what rebar3 verifies with."""
    require_rebar3()
    repo, url = await serve(aiohttp_server, tree_files())
    project = new_project(tmp_path, url, key=other_private_key(), deps=[("acorn", "~> 1.1")])
    result = await project.get_deps()
    assert not result.ok, result
    # rebar3 3.19 words a bad signature as a deprecated "record format" (the
    # `unverified` branch of rebar_packages:update_package), then gives up on the name.
    assert "Package not found in any repo: acorn" in result.stdout, result
    assert repo.paths() == ["/packages/acorn"]


@pytest.mark.clients
async def test_rebar3_needs_an_etag_on_tarball_responses(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    require_rebar3()
    repo, url = await serve(aiohttp_server, tree_files(), tarball_etag=False)
    project = new_project(tmp_path, url, deps=[("ivy", "~> 1.0")])
    result = await project.get_deps()
    assert not result.ok, result
    assert "Failed to fetch and copy dep: ivy-1.0.1" in result.stdout, result
    assert repo.paths() == ["/packages/ivy", "/tarballs/ivy-1.0.1.tar"]
