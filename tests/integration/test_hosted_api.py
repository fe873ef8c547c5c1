"""Publishing to a hosted repository through the Hex HTTP API, and reading it back.

Request bodies are real external-term-format maps (tests/unit/test_hosted_terms.py
checks the codec against Erlang itself); every registry file read back is verified with
the repository's public key, as mix and rebar3 would.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hexproxy.registry import (
    Dependency,
    load_public_key,
    verify_names,
    verify_package,
    verify_versions,
)
from hexproxy.web import create_app
from hexproxy.web.server import start
from tests.support.hosted import (
    ETF,
    OTHER_KEY,
    READ_KEY,
    WRITE_KEY,
    decode,
    docs_tarball,
    encode,
    hosted_config,
    package_tarball,
    raw_tarball,
)

Client = TestClient[Any, Any]
API = "/api/repos/acme"
LIMIT = 1 << 20


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Any) -> Client:
    return await aiohttp_client(create_app(hosted_config(tmp_path)))  # type: ignore[no-any-return]


async def publish(
    client: Client,
    tar: bytes,
    *,
    key: str = WRITE_KEY,
    path: str | None = None,
    replace: bool = False,
) -> tuple[int, Any]:
    url = path or f"{API}/packages/{_name_of(tar)}/releases"
    response = await client.post(
        url,
        params={"replace": "true" if replace else "false"},
        data=tar,
        headers={"authorization": key, "content-type": "application/octet-stream", "accept": ETF},
    )
    body = await response.read()
    assert response.headers.get("Content-Type", "").startswith(ETF) or not body
    return response.status, decode(body) if body else None


def _name_of(tar: bytes) -> str:
    # The tests name packages acme_*; read it back from the metadata line.
    marker = b'{<<"name">>,<<"'
    start = tar.index(marker) + len(marker)
    return tar[start : tar.index(b'"', start)].decode()


async def registry_key(client: Client, headers: dict[str, str] | None = None) -> Any:
    response = await client.get("/internal/acme/public_key", headers=headers)
    assert response.status == 200
    return load_public_key(await response.read())


async def package(client: Client, name: str, headers: dict[str, str] | None = None) -> Any:
    response = await client.get(f"/internal/acme/packages/{name}", headers=headers)
    if response.status == 404:
        return None
    assert response.status == 200, await response.text()
    assert "Content-Encoding" not in response.headers
    return verify_package(
        await response.read(),
        await registry_key(client, headers),
        repository="acme",
        name=name,
        max_uncompressed=LIMIT,
    )


async def test_publish_serves_a_signed_registry_and_the_exact_tarball(client: Client) -> None:
    tar = package_tarball("acme_core", "1.0.0", [Dependency("jason", "~> 1.4")])
    status, body = await publish(client, tar)
    assert status == 201, body
    assert body["version"] == "1.0.0"
    assert body["checksum"] == hashlib.sha256(tar).hexdigest()
    got = await package(client, "acme_core")
    release = got.release("1.0.0")
    assert release.outer_checksum == hashlib.sha256(tar).digest()
    # No repository in the metadata, no acme package of that name: hexpm.
    assert release.dependencies == (Dependency("jason", "~> 1.4", repository="hexpm"),)
    response = await client.get("/internal/acme/tarballs/acme_core-1.0.0.tar")
    assert response.status == 200
    assert await response.read() == tar
    etag = response.headers["ETag"]
    assert etag == f'"{hashlib.sha256(tar).hexdigest()}"'
    again = await client.get(
        "/internal/acme/tarballs/acme_core-1.0.0.tar", headers={"If-None-Match": etag}
    )
    assert again.status == 304
    key = await registry_key(client)
    names = await (await client.get("/internal/acme/names")).read()
    versions = await (await client.get("/internal/acme/versions")).read()
    assert verify_names(names, key, repository="acme", max_uncompressed=LIMIT).packages == (
        "acme_core",
    )
    entries = verify_versions(versions, key, repository="acme", max_uncompressed=LIMIT).packages
    assert [(e.name, e.versions) for e in entries] == [("acme_core", ("1.0.0",))]


async def test_a_dependency_on_the_same_repository_is_stored_as_the_parents(
    client: Client,
) -> None:
    assert (await publish(client, package_tarball("acme_core", "1.0.0")))[0] == 201
    app = package_tarball("acme_app", "0.1.0", [Dependency("acme_core", "~> 1.0")])
    assert (await publish(client, app))[0] == 201
    release = (await package(client, "acme_app")).release("0.1.0")
    assert release.dependencies == (Dependency("acme_core", "~> 1.0", repository=None),)


async def test_old_clients_publish_path(client: Client) -> None:
    status, _ = await publish(client, package_tarball("acme_old", "0.1.0"), path=f"{API}/publish")
    assert status == 201
    assert await package(client, "acme_old") is not None


async def test_api_without_repository_in_the_path_needs_an_unambiguous_key(
    client: Client,
) -> None:
    # Two repositories are configured; WRITE_KEY may publish only to acme.
    tar = package_tarball("acme_plain", "1.0.0")
    status, _ = await publish(client, tar, path="/api/packages/acme_plain/releases")
    assert status == 201
    assert await package(client, "acme_plain") is not None


@pytest.mark.parametrize(
    ("key", "status"), [("", 401), ("not-a-key", 401), (OTHER_KEY, 403), (READ_KEY, 401)]
)
async def test_bad_keys_are_refused(client: Client, key: str, status: int) -> None:
    got, body = await publish(client, package_tarball("acme_core", "1.0.0"), key=key)
    assert got == status
    assert isinstance(body["message"], str) and body["message"]
    assert await package(client, "acme_core") is None


async def _raw_upload(client: Client, headers: str) -> bytes:
    """Send only the request head (Expect: 100-continue) and read the answer: the
    server must answer without the body ever being sent."""
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(headers.encode())
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def test_bad_key_is_refused_before_the_body_is_sent(client: Client) -> None:
    answer = await _raw_upload(
        client,
        f"POST {API}/packages/acme_core/releases HTTP/1.1\r\nHost: x\r\n"
        "authorization: wrong\r\ncontent-length: 5000\r\nexpect: 100-continue\r\n\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"100 Continue" not in head
    assert decode(body)["message"] == "invalid API key"


async def test_too_large_declared_size_is_refused_before_the_body_is_sent(
    client: Client,
) -> None:
    answer = await _raw_upload(
        client,
        f"POST {API}/packages/acme_core/releases HTTP/1.1\r\nHost: x\r\n"
        f"authorization: {WRITE_KEY}\r\ncontent-length: {64 << 20}\r\n"
        "expect: 100-continue\r\n\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 422"), answer[:200]
    assert decode(body)["errors"] == {"tar": "too big"}


async def test_good_key_gets_100_continue(client: Client) -> None:
    answer = await _raw_upload(
        client,
        f"POST {API}/packages/acme_core/releases HTTP/1.1\r\nHost: x\r\n"
        f"authorization: {WRITE_KEY}\r\ncontent-length: 10\r\nexpect: 100-continue\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")


META = (
    b'{<<"name">>,<<"acme_bad">>}.\n{<<"version">>,<<"1.0.0">>}.\n'
    b'{<<"app">>,<<"acme_bad">>}.\n{<<"requirements">>,[]}.\n'
)


@pytest.mark.parametrize(
    ("tar", "field", "fragment"),
    [
        (raw_tarball(META, checksum="AB" * 32), "tar", "inner checksum mismatch"),
        (raw_tarball(META, version=b"2"), "tar", "format version"),
        (raw_tarball(META, extra={"evil.sh": b"x"}), "tar", "unexpected file"),
        (b"not a tar at all" * 100, "tar", "not a valid package tarball"),
        (raw_tarball(b'{<<"name">>,<<"acme_bad">>'), "metadata", "does not parse"),
        (raw_tarball(b"[1,2].\n"), "metadata", "key-value"),
        (raw_tarball(META.replace(b"1.0.0", b"1.0")), "version", "not SemVer"),
        (
            raw_tarball(META.replace(b"[]", b'[{<<"x">>,[{<<"requirement">>,<<"~> nope">>}]}]')),
            "requirements",
            "dependency x",
        ),
        (raw_tarball(META, contents=b"not gzip"), "tar", "contents.tar.gz"),
    ],
)
async def test_invalid_tarballs_get_422_with_the_field(
    client: Client, tar: bytes, field: str, fragment: str
) -> None:
    status, body = await publish(client, tar, path=f"{API}/packages/acme_bad/releases")
    assert status == 422, body
    assert fragment in body["errors"][field], body
    assert await package(client, "acme_bad") is None


async def test_name_in_url_must_match_metadata(client: Client) -> None:
    tar = package_tarball("acme_core", "1.0.0")
    status, body = await publish(client, tar, path=f"{API}/packages/acme_other/releases")
    assert status == 422
    assert body["errors"] == {"name": "metadata does not match package name"}


async def test_too_large_body_is_422_without_expect(
    client: Client, aiohttp_client: Any, tmp_path: Any
) -> None:
    small = await aiohttp_client(
        create_app(hosted_config(tmp_path / "small", hosted__max_tarball_size=2048))
    )
    status, body = await publish(small, package_tarball("acme_core", "1.0.0"))
    assert status == 422
    assert body["errors"] == {"tar": "too big"}


async def test_republish_needs_replace(client: Client) -> None:
    first = package_tarball("acme_core", "1.0.0", note="first")
    second = package_tarball("acme_core", "1.0.0", note="second")
    assert (await publish(client, first))[0] == 201
    status, body = await publish(client, second)
    assert status == 422
    assert "--replace" in body["errors"]["inserted_at"]
    assert (await package(client, "acme_core")).release("1.0.0").outer_checksum == hashlib.sha256(
        first
    ).digest()
    status, _ = await publish(client, second, replace=True)
    assert status == 200
    release = (await package(client, "acme_core")).release("1.0.0")
    assert release.outer_checksum == hashlib.sha256(second).digest()
    served = await client.get("/internal/acme/tarballs/acme_core-1.0.0.tar")
    assert await served.read() == second


async def test_revert_removes_the_release_and_the_last_one_the_package(client: Client) -> None:
    for version in ("1.0.0", "1.1.0"):
        assert (await publish(client, package_tarball("acme_core", version)))[0] == 201
    headers = {"authorization": WRITE_KEY}
    response = await client.delete(f"{API}/packages/acme_core/releases/1.1.0", headers=headers)
    assert response.status == 204
    assert [r.version for r in (await package(client, "acme_core")).releases] == ["1.0.0"]
    gone = await client.get("/internal/acme/tarballs/acme_core-1.1.0.tar")
    assert gone.status == 404
    response = await client.delete(f"{API}/packages/acme_core/releases/1.0.0", headers=headers)
    assert response.status == 204
    assert await package(client, "acme_core") is None
    key = await registry_key(client)
    names = await (await client.get("/internal/acme/names")).read()
    assert verify_names(names, key, repository="acme", max_uncompressed=LIMIT).packages == ()
    again = await client.delete(f"{API}/packages/acme_core/releases/1.0.0", headers=headers)
    assert again.status == 404
    assert decode(await again.read())["message"]


async def test_retire_and_unretire_with_term_format_bodies(client: Client) -> None:
    assert (await publish(client, package_tarball("acme_core", "1.0.0")))[0] == 201
    url = f"{API}/packages/acme_core/releases/1.0.0/retire"
    headers = {"authorization": WRITE_KEY, "content-type": ETF}
    body = encode({"reason": "security", "message": "CVE-2026-1, upgrade"})
    response = await client.post(url, data=body, headers=headers)
    assert response.status == 204, await response.read()
    retired = (await package(client, "acme_core")).release("1.0.0").retired
    assert (retired.reason, retired.message) == (2, "CVE-2026-1, upgrade")
    versions = await (await client.get("/internal/acme/versions")).read()
    entries = verify_versions(
        versions, await registry_key(client), repository="acme", max_uncompressed=LIMIT
    ).packages
    assert entries[0].retired == (0,)
    bad = await client.post(url, data=encode({"reason": "bored", "message": "x"}), headers=headers)
    assert bad.status == 422
    assert "reason" in decode(await bad.read())["errors"]
    response = await client.delete(url, headers=headers)
    assert response.status == 204
    assert (await package(client, "acme_core")).release("1.0.0").retired is None


async def test_docs_upload_fetch_and_delete(client: Client) -> None:
    headers = {"authorization": WRITE_KEY, "content-type": "application/octet-stream"}
    docs = docs_tarball({"index.html": b"<h1>acme</h1>"})
    url = f"{API}/packages/acme_core/releases/1.0.0/docs"
    early = await client.post(url, data=docs, headers=headers)
    assert early.status == 404  # no such release yet: mix says "not being published yet"
    assert (await publish(client, package_tarball("acme_core", "1.0.0")))[0] == 201
    response = await client.post(url, data=docs, headers=headers)
    assert response.status == 201
    assert response.headers["Location"].endswith("/internal/acme/docs/acme_core-1.0.0.tar.gz")
    got = await client.get("/internal/acme/docs/acme_core-1.0.0.tar.gz")
    assert got.status == 200
    assert "Content-Encoding" not in got.headers
    assert gzip.decompress(await got.read()) == gzip.decompress(docs)
    bad = await client.post(url, data=b"not gzip", headers=headers)
    assert bad.status == 422
    assert (await client.delete(url, headers=headers)).status == 204
    assert (await client.get("/internal/acme/docs/acme_core-1.0.0.tar.gz")).status == 404
    assert (await client.delete(url, headers=headers)).status == 404


async def test_users_me_answers_organizations(client: Client) -> None:
    response = await client.get("/api/users/me", headers={"authorization": WRITE_KEY})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith(ETF)
    assert decode(await response.read())["organizations"] == []
    assert (await client.get("/api/users/me", headers={"authorization": "nope"})).status == 401


async def test_api_package_lookup(client: Client) -> None:
    assert (await client.get(f"{API}/packages/acme_core")).status == 404
    assert (await publish(client, package_tarball("acme_core", "1.0.0")))[0] == 201
    response = await client.get(f"{API}/packages/acme_core")
    assert response.status == 200
    body = decode(await response.read())
    assert [r["version"] for r in body["releases"]] == ["1.0.0"]


async def test_read_keys_protect_every_path(aiohttp_client: Any, tmp_path: Any) -> None:
    client = await aiohttp_client(create_app(hosted_config(tmp_path, read_protected=True)))
    assert (await publish(client, package_tarball("acme_core", "1.0.0")))[0] == 201
    paths = [
        "/internal/acme/names",
        "/internal/acme/versions",
        "/internal/acme/packages/acme_core",
        "/internal/acme/packages/Not-A-Name",
        "/internal/acme/tarballs/acme_core-1.0.0.tar",
        "/internal/acme/docs/acme_core-1.0.0.tar.gz",
        "/internal/acme/public_key",
        f"{API}/packages/acme_core",
    ]
    for path in paths:
        for headers in ({}, {"authorization": "wrong"}, {"authorization": OTHER_KEY}):
            response = await client.get(path, headers=headers)
            assert response.status == 401, (path, headers)
    for key in (READ_KEY, WRITE_KEY):
        response = await client.get(
            "/internal/acme/packages/acme_core", headers={"authorization": key}
        )
        assert response.status == 200
        assert "private" in response.headers["Cache-Control"]
    assert await package(client, "acme_core", {"authorization": READ_KEY}) is not None
    # The other repository stays open.
    assert (await client.get("/internal/beta/names")).status == 200


async def test_unknown_repository_is_404(client: Client) -> None:
    assert (await client.get("/internal/nope/names")).status == 404
    status, _ = await publish(
        client,
        package_tarball("acme_core", "1.0.0"),
        path="/api/repos/nope/packages/acme_core/releases",
    )
    assert status == 404


async def test_twenty_concurrent_publishes_are_all_listed(client: Client) -> None:
    tars = [package_tarball(f"acme_p{i % 5}", f"1.{i}.0") for i in range(20)]
    results = await asyncio.gather(*(publish(client, tar) for tar in tars))
    assert [status for status, _ in results] == [201] * 20
    key = await registry_key(client)
    versions = await (await client.get("/internal/acme/versions")).read()
    listed = {
        (e.name, v)
        for e in verify_versions(versions, key, repository="acme", max_uncompressed=LIMIT).packages
        for v in e.versions
    }
    assert listed == {(f"acme_p{i % 5}", f"1.{i}.0") for i in range(20)}
    for i in range(5):
        got = await package(client, f"acme_p{i}")
        assert len(got.releases) == 4


async def test_metrics_and_status_page_show_hosted_repositories(client: Client) -> None:
    assert (await publish(client, package_tarball("acme_core", "1.0.0")))[0] == 201
    assert (await publish(client, package_tarball("acme_core", "1.1.0")))[0] == 201
    metrics = await (await client.get("/_hexproxy/metrics")).text()
    assert 'hexproxy_hosted_packages{repo="acme"} 1.0' in metrics
    assert 'hexproxy_hosted_releases{repo="acme"} 2.0' in metrics
    assert 'hexproxy_hosted_releases{repo="beta"} 0.0' in metrics
    assert 'hexproxy_hosted_publishes_total{repo="acme",result="created"} 2.0' in metrics
    assert WRITE_KEY not in metrics
    page = await (await client.get("/_hexproxy/")).text()
    assert "Hosted repositories" in page
    assert "<code>/internal/acme/</code></td><td>1</td><td>2</td><td>2</td>" in page


async def test_expect_flow_through_the_real_server_and_fast_path(tmp_path: Any) -> None:
    """The served process puts a fast path before aiohttp: uploads must still be refused
    from their headers, and accepted after 100 Continue."""
    running = await start(
        hosted_config(tmp_path, server__listen="127.0.0.1:0", server__access_log=False)
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(
            f"POST {API}/packages/acme_core/releases HTTP/1.1\r\nHost: x\r\n"
            "authorization: wrong\r\ncontent-length: 5000\r\nexpect: 100-continue\r\n\r\n".encode()
        )
        answer = await asyncio.wait_for(reader.read(65536), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        tar = package_tarball("acme_core", "1.0.0")
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(
            f"POST {API}/packages/acme_core/releases HTTP/1.1\r\nHost: x\r\n"
            f"authorization: {WRITE_KEY}\r\ncontent-length: {len(tar)}\r\n"
            "expect: 100-continue\r\nconnection: close\r\n\r\n".encode()
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(tar)
        final = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert final.startswith(b"HTTP/1.1 201"), final[:200]
    finally:
        await running.stop()
