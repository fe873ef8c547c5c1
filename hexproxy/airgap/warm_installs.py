"""Warm the installer files: what ``mix local.hex`` and ``mix local.rebar`` fetch.

For each Elixir (and OTP) target, the CSVs (verified) and the Hex and rebar3
builds a client on it would install, all through the cache's own path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cache.policy import Cache
from ..errors import HexproxyError, NotFound
from ..installs import TOOLS, Target, build_path, csv_name, select
from ..store.cachekey import install_key


@dataclass(slots=True)
class InstallsReport:
    fetched: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


async def warm_installs(cache: Cache, targets: list[Target]) -> InstallsReport:
    """Cache the CSVs (verified) and the Hex and rebar3 builds each target would install."""
    report = InstallsReport()
    done: set[str] = set()
    for target in targets:
        for tool in TOOLS:
            try:
                for path in await _warm_one(cache, tool, target):
                    if path not in done:
                        done.add(path)
                        report.fetched.append(path)
            except HexproxyError as exc:
                report.failures.append((f"{tool} for Elixir {target}", exc.message))
    return report


async def _warm_one(cache: Cache, tool: str, target: Target) -> list[str]:
    name = csv_name(tool, target)
    csv = await cache.get_installs_csv(name)
    paths = [f"/installs/{name}"]
    try:
        await cache.get_metadata(install_key(name + ".signed"))
        paths.append(f"/installs/{name}.signed")
    except NotFound:
        pass  # hex.csv / rebar.csv may be unsigned (Elixir 1.19+ never asks for .signed)
    chosen = select(csv.entry.decoded, target)
    if chosen is None:
        raise NotFound(f"/installs/{name} lists no {tool} build for Elixir {target}")
    line, elixir_dir = chosen
    try:
        relative = build_path(tool, target, line, elixir_dir)
    except ValueError as exc:
        raise NotFound(str(exc)) from None
    await cache.fetch_file(install_key(relative))
    return [*paths, f"/installs/{relative}"]
