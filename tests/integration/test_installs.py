"""``mix local.hex`` / ``mix local.rebar`` through the proxy: CSVs signed with a test key
standing in for Elixir's, builds checked against the CSV's sha512, warm, then offline."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from hexproxy.airgap.warm_installs import warm_installs
from hexproxy.cli import main
from hexproxy.installs import parse_target
from hexproxy.registry import public_key_pem, sign
from hexproxy.web.state import CACHE
from tests.conftest import ProxyFactory, Upstream
from tests.support.clock import past_backoff
from tests.support.keys import other_private_key, test_private_key

# Builds, as the fake builds host serves them.
HEX_OLD = b"hex 2.0.6 archive for Elixir 1.14"
HEX_OLD_NEXT = b"hex 2.1.1 archive for Elixir 1.15"
REBAR_OLD = b"#!/usr/bin/env escript\nrebar3 3.22.0"
HEX_27 = b"hex 2.3.0 built on OTP 27"
HEX_28 = b"hex 2.3.0 built on OTP 28"
REBAR_27 = b"#!/usr/bin/env escript\nrebar3 3.25.1 otp 27"
REBAR_28 = b"#!/usr/bin/env escript\nrebar3 3.25.1 otp 28"


def sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


def signature(body: bytes, private: Any = None) -> bytes:
    return base64.encodebytes(sign(body, private or other_private_key()))


def publish_csv(upstream: Upstream, name: str, body: bytes, signed: bool = True) -> None:
    upstream.repo.publish(f"installs/{name}", body)
    if signed:
        upstream.repo.publish(f"installs/{name}.signed", signature(body))


def publish_builds_host(upstream: Upstream) -> None:
    """Both generations: 1.x CSVs (signed) for Elixir <= 1.18, OTP-aware ones for 1.19+."""
    hex_csv = f"2.0.6,{sha512(HEX_OLD)},1.14.0\n2.1.1,{sha512(HEX_OLD_NEXT)},1.15.0\n"
    publish_csv(upstream, "hex-1.x.csv", hex_csv.encode())
    publish_csv(upstream, "rebar3-1.x.csv", f"3.22.0,{sha512(REBAR_OLD)},1.13.0\n".encode())
    upstream.repo.publish("installs/1.14.0/hex-2.0.6.ez", HEX_OLD)
    upstream.repo.publish("installs/1.15.0/hex-2.1.1.ez", HEX_OLD_NEXT)
    upstream.repo.publish("installs/1.13.0/rebar3-3.22.0", REBAR_OLD)
    modern_hex = f"2.3.0,{sha512(HEX_27)},1.19.0,27\n2.3.0,{sha512(HEX_28)},1.19.0,28\n"
    publish_csv(upstream, "hex.csv", modern_hex.encode(), signed=False)
    modern_rebar = f"3.25.1,{sha512(REBAR_27)},1.19.0,27\n3.25.1,{sha512(REBAR_28)},1.19.0,28\n"
    publish_csv(upstream, "rebar.csv", modern_rebar.encode(), signed=False)
    for path, body in {
        "1.19.0/hex-2.3.0-otp-27.ez": HEX_27,
        "1.19.0/hex-2.3.0-otp-28.ez": HEX_28,
        "1.19.0/rebar3-3.25.1-otp-27": REBAR_27,
        "1.19.0/rebar3-3.25.1-otp-28": REBAR_28,
    }.items():
        upstream.repo.publish(f"installs/{path}", body)


@pytest.fixture
def installs_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "installs_key.pem"
    path.write_bytes(public_key_pem(other_private_key().public_key()))
    return path


@pytest.fixture
async def builds(
    make_proxy: ProxyFactory, upstream: Upstream, installs_key_file: Path
) -> TestClient[Any, Any]:
    publish_builds_host(upstream)
    return await make_proxy(upstream__installs_public_key=str(installs_key_file))


def stored(client: TestClient[Any, Any]) -> list[str]:
    root = client.app[CACHE].storage.root / "installs"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


async def test_cold_fetch_of_a_legacy_install(
    builds: TestClient[Any, Any], upstream: Upstream
) -> None:
    csv = await builds.get("/installs/hex-1.x.csv")
    assert csv.status == 200
    assert await csv.read() == upstream.repo.files["installs/hex-1.x.csv"]
    signed = await builds.get("/installs/hex-1.x.csv.signed")
    assert await signed.read() == upstream.repo.files["installs/hex-1.x.csv.signed"]
    ez = await builds.get("/installs/1.14.0/hex-2.0.6.ez")
    assert (ez.status, await ez.read()) == (200, HEX_OLD)
    assert "1.14.0/hex-2.0.6.ez" in stored(builds)
    again = await builds.get("/installs/1.14.0/hex-2.0.6.ez")
    assert (again.headers["X-Cache"], await again.read()) == ("HIT", HEX_OLD)
    assert upstream.repo.count("/installs/1.14.0/hex-2.0.6.ez") == 1


async def test_a_tampered_build_is_cut_off_and_never_cached(
    builds: TestClient[Any, Any], upstream: Upstream
) -> None:
    upstream.repo.publish("installs/1.19.0/hex-2.3.0-otp-27.ez", HEX_27 + b" plus a backdoor")
    response = await builds.get("/installs/1.19.0/hex-2.3.0-otp-27.ez")
    assert response.status == 200  # headers left before the last byte could be checked
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert not any("hex-2.3.0-otp-27" in p for p in stored(builds))
    assert builds.app[CACHE].counters.verification_failures == 1
    # The honest file is then stored normally (once the file's backoff is over).
    upstream.repo.publish("installs/1.19.0/hex-2.3.0-otp-27.ez", HEX_27)
    await past_backoff(builds.app[CACHE])
    good = await builds.get("/installs/1.19.0/hex-2.3.0-otp-27.ez")
    assert await good.read() == HEX_27


async def test_a_build_no_csv_lists_is_refused(
    builds: TestClient[Any, Any], upstream: Upstream
) -> None:
    upstream.repo.publish("installs/1.19.0/hex-9.9.9-otp-27.ez", b"unlisted")
    assert (await builds.get("/installs/1.19.0/hex-9.9.9-otp-27.ez")).status == 404
    upstream.repo.publish("installs/hex.ez", b"not a build name")
    assert (await builds.get("/installs/hex.ez")).status == 502
    assert upstream.repo.count("/installs/1.19.0/hex-9.9.9-otp-27.ez") == 0


async def test_a_badly_signed_csv_is_refused_and_the_good_copy_kept(
    make_proxy: ProxyFactory, upstream: Upstream, installs_key_file: Path
) -> None:
    publish_builds_host(upstream)
    proxy = await make_proxy(
        upstream__installs_public_key=str(installs_key_file), cache__registry_ttl=0
    )
    good = await (await proxy.get("/installs/hex-1.x.csv")).read()
    good_signature = upstream.repo.files["installs/hex-1.x.csv.signed"]
    # Upstream now serves a CSV pointing at another archive, signed by someone else.
    forged = f"6.6.6,{sha512(b'evil')},1.14.0\n".encode()
    upstream.repo.publish("installs/hex-1.x.csv", forged)
    upstream.repo.publish(
        "installs/hex-1.x.csv.signed", signature(forged, private=test_private_key())
    )
    response = await proxy.get("/installs/hex-1.x.csv")
    assert (response.status, response.headers["X-Cache"]) == (200, "STALE")
    assert await response.read() == good
    assert proxy.app[CACHE].counters.verification_failures >= 1
    # The forged .signed did not replace the one that pairs with the CSV still served...
    signed = await proxy.get("/installs/hex-1.x.csv.signed")
    assert await signed.read() == good_signature
    # ...nor on disk: after a restart, offline, the good pair is still there.
    restarted = await make_proxy(
        upstream__installs_public_key=str(installs_key_file), upstream__offline=True
    )
    assert await (await restarted.get("/installs/hex-1.x.csv")).read() == good
    assert await (await restarted.get("/installs/hex-1.x.csv.signed")).read() == good_signature
    # And a fresh proxy with nothing cached refuses it outright.
    cold = await make_proxy(
        upstream__installs_public_key=str(installs_key_file),
        cache__dir=str(Path(str(proxy.app[CACHE].storage.root)) / "other"),
    )
    assert (await cold.get("/installs/hex-1.x.csv")).status == 502


async def test_a_legacy_csv_without_signature_is_refused(
    builds: TestClient[Any, Any], upstream: Upstream
) -> None:
    del upstream.repo.files["installs/rebar3-1.x.csv.signed"]
    assert (await builds.get("/installs/rebar3-1.x.csv")).status == 502
    assert "rebar3-1.x.csv" not in stored(builds)


async def test_the_default_key_is_elixirs_not_the_test_key(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    publish_builds_host(upstream)
    proxy = await make_proxy()  # no installs_public_key: Elixir's built-in key
    assert (await proxy.get("/installs/hex-1.x.csv")).status == 502


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("1.14.5", ["1.14.0/hex-2.0.6.ez", "1.13.0/rebar3-3.22.0"]),
        ("1.18.4/27", ["1.15.0/hex-2.1.1.ez", "1.13.0/rebar3-3.22.0"]),
        ("1.19.0/27", ["1.19.0/hex-2.3.0-otp-27.ez", "1.19.0/rebar3-3.25.1-otp-27"]),
        ("1.19.4/28", ["1.19.0/hex-2.3.0-otp-28.ez", "1.19.0/rebar3-3.25.1-otp-28"]),
    ],
)
async def test_warm_picks_the_builds_that_elixir_and_otp_would_install(
    builds: TestClient[Any, Any], target: str, expected: list[str]
) -> None:
    report = await warm_installs(builds.app[CACHE], [parse_target(target)])
    assert report.failures == []
    builds_fetched = [p.removeprefix("/installs/") for p in report.fetched if "/" in p[10:]]
    assert builds_fetched == expected
    assert set(expected) <= set(stored(builds))


async def test_warm_then_offline_serves_local_hex_and_local_rebar(
    builds: TestClient[Any, Any],
    make_proxy: ProxyFactory,
    upstream: Upstream,
    installs_key_file: Path,
) -> None:
    targets = [parse_target("1.18.4"), parse_target("1.19.1/27")]
    report = await warm_installs(builds.app[CACHE], targets)
    assert report.failures == []
    offline = await make_proxy(
        upstream__offline=True, upstream__installs_public_key=str(installs_key_file)
    )
    await upstream.stop()
    # Everything mix local.hex / local.rebar ask for, per Elixir generation.
    for path in [
        "/installs/hex-1.x.csv",
        "/installs/hex-1.x.csv.signed",
        "/installs/1.15.0/hex-2.1.1.ez",
        "/installs/rebar3-1.x.csv",
        "/installs/rebar3-1.x.csv.signed",
        "/installs/1.13.0/rebar3-3.22.0",
        "/installs/hex.csv",
        "/installs/1.19.0/hex-2.3.0-otp-27.ez",
        "/installs/rebar.csv",
        "/installs/1.19.0/rebar3-3.25.1-otp-27",
    ]:
        response = await offline.get(path)
        assert response.status == 200, path
        assert await response.read() == upstream.repo.files[path.lstrip("/")]
    # Not warmed: a clean miss, not an error page from a dead upstream.
    assert (await offline.get("/installs/1.19.0/hex-2.3.0-otp-28.ez")).status == 404


async def test_hexproxy_warm_installs_command(
    upstream: Upstream,
    installs_key_file: Path,
    public_key_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    publish_builds_host(upstream)
    config = tmp_path / "hexproxy.toml"
    config.write_text(
        f'[upstream]\nurl = "{upstream.url}"\nbuilds_url = "{upstream.url}"\n'
        f'public_key = "{public_key_file}"\ninstalls_public_key = "{installs_key_file}"\n'
        f'[cache]\ndir = "{tmp_path / "cache"}"\n'
    )
    argv = ["warm", "--config", str(config), "--installs", "1.18.4", "--installs", "1.19.0/28"]
    assert await asyncio.to_thread(main, argv) == 0
    assert "installs: 10 files cached and verified" in capsys.readouterr().out
    root = tmp_path / "cache" / "installs"
    assert (root / "1.19.0" / "rebar3-3.25.1-otp-28").read_bytes() == REBAR_28
    assert (root / "1.15.0" / "hex-2.1.1.ez").read_bytes() == HEX_OLD_NEXT
    # A target no CSV line serves is a failure, reported and exit 1.
    argv = ["warm", "--config", str(config), "--installs", "1.12.0"]
    assert await asyncio.to_thread(main, argv) == 1
    assert "FAILED hex for Elixir 1.12.0" in capsys.readouterr().err


def test_a_bad_installs_target_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["warm", "--installs", "1.19", "--cache-dir", str(tmp_path)]
    assert main(argv) == 2
    assert "--installs '1.19'" in capsys.readouterr().err


async def test_a_genuine_new_release_replaces_csv_and_signature_together(
    make_proxy: ProxyFactory, upstream: Upstream, installs_key_file: Path
) -> None:
    publish_builds_host(upstream)
    proxy = await make_proxy(
        upstream__installs_public_key=str(installs_key_file), cache__registry_ttl=0
    )
    await (await proxy.get("/installs/hex-1.x.csv")).read()
    newer = upstream.repo.files["installs/hex-1.x.csv"] + f"2.2.0,{sha512(b'n')},1.16.0\n".encode()
    publish_csv(upstream, "hex-1.x.csv", newer)
    response = await proxy.get("/installs/hex-1.x.csv")
    assert (response.headers["X-Cache"], await response.read()) == ("MISS", newer)
    signed = await proxy.get("/installs/hex-1.x.csv.signed")
    assert await signed.read() == upstream.repo.files["installs/hex-1.x.csv.signed"]
