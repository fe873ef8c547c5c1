"""Hosted repositories on the operator side: metrics and the status page section.

Package and release counts are read from each repository's current signed ``versions``
at scrape time (one small file per repository); publishes are counted by each worker
and summed over the server's workers, like every other hexproxy counter (metrics.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from html import escape

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import HexproxyError
from ..hosted import Hosted
from .hosted_api import PUBLISHES
from .hosted_repo import HOSTED
from .metrics import Metrics
from .tally import Key, Totals


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
    def __init__(self, hosted: Hosted, metrics: Metrics) -> None:
        self.hosted = hosted
        self.metrics = metrics

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
            "Changes through the API: created, replaced, reverted.",
            labels=["repo", "result"],
        )
        for (repo, result), n in self.metrics.totals().family("hosted_publishes"):
            changes.add_metric([str(repo), str(result)], n)
        yield from (packages, releases, changes)


def setup(app: web.Application, metrics: Metrics) -> None:
    """Report the hosted repositories in /_hexproxy/metrics, their publishes summed over
    the server's workers."""
    publishes = app[PUBLISHES]

    def changes() -> Iterable[tuple[Key, int]]:
        for (repo, result), n in list(publishes.items()):
            yield ("hosted_publishes", repo, result), n

    metrics.mirror(changes)
    metrics.registry.register(_Collector(app[HOSTED], metrics))


def status_section(app: web.Application, totals: Totals) -> str:
    if HOSTED not in app:
        return ""
    hosted = app[HOSTED]
    changed: dict[str, int] = {}
    for (repo, _), n in totals.family("hosted_publishes"):
        changed[str(repo)] = changed.get(str(repo), 0) + n
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td><code>/internal/{escape(name)}/</code></td>"
        f"<td>{n_packages}</td><td>{n_releases}</td>"
        f"<td>{changed.get(name, 0)}</td>"
        f"<td><code>{escape(hosted.repos[name].fingerprint)}</code></td></tr>"
        for name, (n_packages, n_releases) in counts(hosted).items()
    )
    return (
        "<h2>Hosted repositories</h2><table><tr><th>Repository</th><th>URL</th>"
        "<th>Packages</th><th>Releases</th><th>Changes</th><th>Key</th></tr>"
        f"{rows}</table>"
    )
