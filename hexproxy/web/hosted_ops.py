"""Hosted repositories on the operator side: metrics and the status page section.

Package and release counts are read from each repository's current signed ``versions``
at scrape time (one small file per repository); publishes are counted per process,
like every other hexproxy metric.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from html import escape

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import HexproxyError
from ..hosted import Hosted
from .hosted_api import PUBLISHES
from .hosted_repo import HOSTED


def counts(hosted: Hosted) -> dict[str, tuple[int, int]]:
    """Repository -> (packages, releases), from its current registry."""
    found = {}
    for name, repo in sorted(hosted.repos.items()):
        try:
            entries = repo.versions().packages
        except HexproxyError:
            entries = ()  # verify reports it; the page still renders
        found[name] = (len(entries), sum(len(e.versions) for e in entries))
    return found


class _Collector(Collector):
    def __init__(self, hosted: Hosted, publishes: Counter[tuple[str, str]]) -> None:
        self.hosted = hosted
        self.publishes = publishes

    def collect(self) -> Iterator[Metric]:
        packages = GaugeMetricFamily(
            "hexproxy_hosted_packages", "Packages in each hosted repository.", labels=["repo"]
        )
        releases = GaugeMetricFamily(
            "hexproxy_hosted_releases", "Releases in each hosted repository.", labels=["repo"]
        )
        for name, (n_packages, n_releases) in counts(self.hosted).items():
            packages.add_metric([name], n_packages)
            releases.add_metric([name], n_releases)
        changes = CounterMetricFamily(
            "hexproxy_hosted_publishes",
            "Changes through the API: created, replaced, reverted (this worker).",
            labels=["repo", "result"],
        )
        for (repo, result), n in sorted(self.publishes.items()):
            changes.add_metric([repo, result], n)
        yield from (packages, releases, changes)


def setup(app: web.Application, registry: CollectorRegistry) -> None:
    """Report the hosted repositories in /_hexproxy/metrics (``registry``)."""
    registry.register(_Collector(app[HOSTED], app[PUBLISHES]))


def status_section(app: web.Application) -> str:
    if HOSTED not in app:
        return ""
    hosted, publishes = app[HOSTED], app[PUBLISHES]
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td><code>/internal/{escape(name)}/</code></td>"
        f"<td>{n_packages}</td><td>{n_releases}</td>"
        f"<td>{sum(n for (repo, _), n in publishes.items() if repo == name)}</td>"
        f"<td><code>{escape(hosted.repos[name].fingerprint)}</code></td></tr>"
        for name, (n_packages, n_releases) in counts(hosted).items()
    )
    return (
        "<h2>Hosted repositories</h2><table><tr><th>Repository</th><th>URL</th>"
        "<th>Packages</th><th>Releases</th><th>Changes (this worker)</th><th>Key</th></tr>"
        f"{rows}</table>"
    )
