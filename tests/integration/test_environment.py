"""The real ``hexproxy serve`` started the way a Kubernetes pod starts it: among service
links and a mistyped variable it runs and says so once; a bad value stops it at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import Upstream
from tests.support.environment import KUBERNETES_LINKS
from tests.support.proxy_process import ProxyProcesses, base_env

LINKS = {name.removeprefix("HEXPROXY_"): value for name, value in KUBERNETES_LINKS.items()}


async def test_serve_among_service_links_warns_only_about_the_typo(
    tmp_path: Path, public_key_file: Path, upstream: Upstream
) -> None:
    proxies = ProxyProcesses(tmp_path / "proxies", public_key_file)
    try:
        proxy = await proxies.start(
            upstream.url, tmp_path / "cache", **LINKS, CACHE_REGISTRY_TTLL="0"
        )
    finally:
        codes = await proxies.stop_all()
    assert codes == [0]
    warnings = [line for line in proxy.log_path.read_text().splitlines() if "HEXPROXY_" in line]
    assert warnings == [
        "hexproxy: warning: HEXPROXY_CACHE_REGISTRY_TTLL is not a hexproxy setting; ignored "
        "(did you mean HEXPROXY_CACHE_REGISTRY_TTL?)"
    ]


def test_serve_with_a_bad_value_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {**base_env(), **KUBERNETES_LINKS, "HEXPROXY_SERVER_WORKERS": "lots"}
    argv = [sys.executable, "-m", "hexproxy", "serve", "--cache-dir", str(tmp_path)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("hexproxy: error: [server] workers: "), done.stderr
