"""The Hex HTTP API for hosted repositories: what ``mix hex.publish``, ``mix hex.retire``
and ``rebar3 hex publish`` call (hosting-protocol.md, A1 and A4).

Every path exists twice: under ``/api/repos/NAME/`` (``HEX_API_URL=.../api/repos/NAME``,
or ``--organization NAME``) and under ``/api/`` (used when only one hosted repository is
configured, or the key may publish to exactly one). Bodies are the Erlang term format
(``application/vnd.hex+erlang``) both ways; errors are the ``{status, message, errors}``
map the clients print. Keys come raw in ``authorization`` and are never logged.

Uploads are refused before their body is read: routes that take one have their own
``Expect: 100-continue`` handler (aiohttp's default sends 100 Continue before any
handler runs), which checks the key and the declared size first.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import HexproxyError, InvalidRequest
from ..hosted import (
    Hosted,
    HostedRepository,
    LengthRequired,
    ReleaseNotFound,
    TooBig,
    Unauthorized,
    UnknownRepository,
    etf,
)
from ..hosted.package import UploadedPackage
from ..registry import Package, Release, check_name, check_version
from .hosted_repo import HOSTED

ETF_TYPE = "application/vnd.hex+erlang"
PUBLISHES = web.AppKey("hosted_publishes", Counter[tuple[str, str]])
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def respond(
    status: int, body: etf.Term = None, headers: dict[str, str] | None = None
) -> web.Response:
    if status == 204:
        return web.Response(status=204, headers=headers)
    return web.Response(
        status=status,
        body=etf.encode(body),
        headers={"Content-Type": ETF_TYPE, "Cache-Control": "no-store", **(headers or {})},
    )


def error_body(exc: HexproxyError) -> etf.Term:
    body: dict[etf.Term, etf.Term] = {"status": exc.http_status, "message": exc.message}
    errors = getattr(exc, "errors", None)
    if errors:
        body["errors"] = dict(errors)
    return body


def api(handler: Handler) -> Handler:
    """Answer errors in the term format, whatever the handler raised."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except HexproxyError as exc:
            return respond(exc.http_status, error_body(exc))

    return wrapped


# ----- request helpers -----


def _hosted(request: web.Request) -> Hosted:
    return request.app[HOSTED]


def _key(request: web.Request) -> str | None:
    return request.headers.get("Authorization") or None


def repo_name(request: web.Request) -> str:
    """The repository a request is for: in the path, else the only one it can mean."""
    hosted = _hosted(request)
    named = request.match_info.get("repo")
    if named is not None:
        hosted.repo(named)
        return named
    if len(hosted.repos) == 1:
        return next(iter(hosted.repos))
    key = _key(request)
    writable = [n for n in hosted.repos if key and _can_write(hosted, n, key)]
    if len(writable) == 1:
        return writable[0]
    raise UnknownRepository(
        "several hosted repositories: use HEX_API_URL=<proxy>/api/repos/NAME "
        "(or --organization NAME)"
    )


def _can_write(hosted: Hosted, name: str, key: str) -> bool:
    try:
        hosted.check_write(name, key)
    except HexproxyError:
        return False
    return True


def _read_repo(request: web.Request) -> HostedRepository:
    name = repo_name(request)
    _hosted(request).check_read(name, _key(request))
    return _hosted(request).repo(name)


def _write_repo(request: web.Request) -> str:
    name = repo_name(request)
    _hosted(request).check_write(name, _key(request))
    return name


def _declared_size(request: web.Request, limit: int) -> None:
    if request.content_length is None:
        raise LengthRequired("an upload needs a Content-Length")
    if request.content_length > limit:
        raise TooBig(
            f"upload of {request.content_length} bytes is over {limit}", {"tar": "too big"}
        )


async def _body(request: web.Request, limit: int) -> bytes:
    """The body, never more than ``limit`` bytes (aiohttp's own cap is 1 MiB)."""
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise TooBig(f"upload is over {limit} bytes", {"tar": "too big"})
        chunks.append(chunk)
    return b"".join(chunks)


def _expect(
    limit: Callable[[Hosted], int],
) -> Callable[[web.Request], Awaitable[web.StreamResponse | None]]:
    """An Expect handler that refuses a bad key or size before the client sends a byte."""

    async def expect(request: web.Request) -> web.StreamResponse | None:
        if request.headers.get("Expect", "").lower() != "100-continue":
            return web.Response(status=417, text="only Expect: 100-continue is understood\n")
        try:
            _write_repo(request)
            _declared_size(request, limit(_hosted(request)))
        except HexproxyError as exc:
            response = respond(exc.http_status, error_body(exc))
            response.force_close()  # the body that may still follow is never read
            return response
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
        return None

    return expect


def _base(request: web.Request) -> str:
    return str(request.url.origin())


def _release_map(request: web.Request, repo: str, name: str, release: Release) -> etf.Term:
    base = _base(request)
    retired: etf.Term = None
    if release.retired is not None:
        retired = {"reason": release.retired.reason, "message": release.retired.message}
    return {
        "version": release.version,
        "checksum": release.outer_checksum.hex() if release.outer_checksum else None,
        "url": f"{base}/api/repos/{repo}/packages/{name}/releases/{release.version}",
        "html_url": f"{base}/internal/{repo}/tarballs/{name}-{release.version}.tar",
        "package_url": f"{base}/api/repos/{repo}/packages/{name}",
        "retirement": retired,
        "requirements": {
            d.package: {
                "app": d.app or d.package,
                "requirement": d.requirement,
                "optional": d.optional,
            }
            for d in release.dependencies
        },
    }


# ----- handlers -----


@api
async def users_me(request: web.Request) -> web.StreamResponse:
    key = _key(request)
    if not key or not _hosted(request).known(key):
        raise Unauthorized("invalid API key")
    # mix hex.publish reads "organizations" (a 200 without it crashes Hex 2.5); an
    # empty list skips the owner prompt meant for hex.pm.
    return respond(200, {"username": "hexproxy", "organizations": [], "url": _base(request)})


@api
async def publish(request: web.Request) -> web.StreamResponse:
    repo = _write_repo(request)
    hosted = _hosted(request)
    _declared_size(request, hosted.config.max_tarball_size)
    name = request.match_info.get("name")
    if name is not None:
        check_name(name)
    replace = request.query.get("replace", "false").lower() in ("true", "1")
    data = await _body(request, hosted.config.max_tarball_size)
    result = await asyncio.to_thread(hosted.publish, repo, data, replace=replace, name=name)
    request.app[PUBLISHES][(repo, "created" if result.created else "replaced")] += 1
    return _published(request, repo, result.package, result.created)


def _published(
    request: web.Request, repo: str, upload: UploadedPackage, created: bool
) -> web.StreamResponse:
    release = Release(upload.version, upload.inner_checksum, upload.outer_checksum)
    body = _release_map(request, repo, upload.name, release)
    assert isinstance(body, dict)
    location = f"{_base(request)}/api/repos/{repo}/packages/{upload.name}/releases/{upload.version}"
    return respond(201 if created else 200, body, {"Location": location})


@api
async def get_package(request: web.Request) -> web.StreamResponse:
    repo = _read_repo(request)
    name = check_name(request.match_info["name"])
    found = await asyncio.to_thread(repo.package, name)
    if found is None:
        raise _not_found(repo.name, name)
    return respond(200, _package_map(request, repo.name, found))


def _package_map(request: web.Request, repo: str, package: Package) -> etf.Term:
    base = _base(request)
    return {
        "name": package.name,
        "repository": repo,
        "url": f"{base}/api/repos/{repo}/packages/{package.name}",
        "html_url": f"{base}/internal/{repo}/packages/{package.name}",
        "releases": [
            {
                "version": r.version,
                "url": f"{base}/api/repos/{repo}/packages/{package.name}/releases/{r.version}",
            }
            for r in reversed(package.releases)
        ],
    }


def _not_found(repo: str, name: str, version: str | None = None) -> HexproxyError:
    what = f"{name} {version}" if version else name
    return ReleaseNotFound(f"{repo} has no {'release' if version else 'package'} {what}")


def _release_args(request: web.Request) -> tuple[str, str]:
    return check_name(request.match_info["name"]), check_version(request.match_info["version"])


@api
async def get_release(request: web.Request) -> web.StreamResponse:
    repo = _read_repo(request)
    name, version = _release_args(request)
    release = await asyncio.to_thread(repo.release, name, version)
    return respond(200, _release_map(request, repo.name, name, release))


@api
async def revert(request: web.Request) -> web.StreamResponse:
    repo = _hosted(request).repo(_write_repo(request))
    await asyncio.to_thread(repo.revert, *_release_args(request))
    request.app[PUBLISHES][(repo.name, "reverted")] += 1
    return respond(204)


@api
async def retire(request: web.Request) -> web.StreamResponse:
    repo = _hosted(request).repo(_write_repo(request))
    name, version = _release_args(request)
    raw = await _body(request, 64 * 1024)
    try:
        fields = etf.decode(raw)
    except etf.EtfError as exc:
        raise InvalidRequest(f"retire body is not an Erlang term map: {exc}") from None
    if not isinstance(fields, dict):
        raise InvalidRequest("retire body is not a map")
    reason, message = fields.get("reason"), fields.get("message")
    await asyncio.to_thread(repo.retire, name, version, str(reason or ""), str(message or ""))
    return respond(204)


@api
async def unretire(request: web.Request) -> web.StreamResponse:
    repo = _hosted(request).repo(_write_repo(request))
    await asyncio.to_thread(repo.unretire, *_release_args(request))
    return respond(204)


@api
async def publish_docs(request: web.Request) -> web.StreamResponse:
    hosted = _hosted(request)
    repo = _write_repo(request)
    name, version = _release_args(request)
    _declared_size(request, hosted.config.max_docs_size)
    data = await _body(request, hosted.config.max_docs_size)
    await asyncio.to_thread(hosted.publish_docs, repo, name, version, data)
    location = f"{_base(request)}/internal/{repo}/docs/{name}-{version}.tar.gz"
    return web.Response(status=201, headers={"Location": location})


@api
async def delete_docs(request: web.Request) -> web.StreamResponse:
    repo = _hosted(request).repo(_write_repo(request))
    name, version = _release_args(request)
    if not await asyncio.to_thread(repo.delete_docs, name, version):
        raise _not_found(repo.name, f"docs for {name}", version)
    return respond(204)


def add_routes(app: web.Application) -> None:
    app[PUBLISHES] = Counter()
    tarball_limit = _expect(lambda h: h.config.max_tarball_size)
    docs_limit = _expect(lambda h: h.config.max_docs_size)
    release = "packages/{name}/releases/{version}"
    for prefix in ("/api", "/api/repos/{repo}"):
        app.router.add_get(f"{prefix}/users/me", users_me)
        app.router.add_route(
            "POST", f"{prefix}/packages/{{name}}/releases", publish, expect_handler=tarball_limit
        )
        app.router.add_route("POST", f"{prefix}/publish", publish, expect_handler=tarball_limit)
        app.router.add_get(f"{prefix}/packages/{{name}}", get_package)
        app.router.add_get(f"{prefix}/{release}", get_release)
        app.router.add_delete(f"{prefix}/{release}", revert)
        app.router.add_post(f"{prefix}/{release}/retire", retire)
        app.router.add_delete(f"{prefix}/{release}/retire", unretire)
        app.router.add_route(
            "POST", f"{prefix}/{release}/docs", publish_docs, expect_handler=docs_limit
        )
        app.router.add_delete(f"{prefix}/{release}/docs", delete_docs)
