"""The metric families a scrape gets, built at scrape time from the whole server's
totals (metrics.py) and the answering worker's view of what is a state, not a count."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .. import __version__
from ..upstream.breaker import State
from .metrics import LATENCY_BUCKETS, Metrics
from .tally import Totals


class Families(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        totals = self.m.totals()
        yield from _requests(totals)
        yield from _upstream(totals)
        yield from self._states()
        yield from self._cache(totals)
        yield from self._store(totals)
        yield from _workers(totals)
        yield from _process(totals)

    def _states(self) -> Iterator[Metric]:
        # The repository's state keeps its name and labels from before there was a
        # breaker per host; every host, the repository included, is in the second family.
        state = GaugeMetricFamily(
            "hexproxy_upstream_state",
            "1 for the repository upstream's current state (up, down, paused, offline), "
            "as the answering worker sees it.",
            labels=["state"],
        )
        per_host = GaugeMetricFamily(
            "hexproxy_upstream_host_state",
            "1 for each upstream host's current state (its own circuit breaker), "
            "as the answering worker sees it.",
            labels=["host", "state"],
        )
        names = [s.value for s in State] + ["offline"]
        current = self.m.upstream_state()
        for name in names:
            state.add_metric([name], 1 if name == current else 0)
        for host in self.m.cache.upstream.hosts:
            current = self.m.upstream_state(host)
            for name in names:
                per_host.add_metric([host.name, name], 1 if name == current else 0)
        yield from (state, per_host)

    def _cache(self, totals: Totals) -> Iterator[Metric]:
        yield _counter(
            totals,
            "verification_failures",
            "Registry files or tarballs that failed signature, origin or checksum checks.",
        )
        yield _counter(
            totals,
            "stale_served",
            "Registry files served stale because upstream could not revalidate them.",
        )
        yield _counter(totals, "evictions", "Files evicted to stay under max_size.")
        yield _counter(totals, "evicted_bytes", "Bytes evicted to stay under max_size.")
        evictor = self.m.evictor
        usage = evictor.usage
        if usage is not None:
            yield GaugeMetricFamily(
                "hexproxy_cache_size_bytes",
                "Bytes stored in the cache directory (measured each eviction round).",
                value=usage.bytes,
            )
            yield GaugeMetricFamily(
                "hexproxy_cache_entries",
                "Objects stored in the cache directory.",
                value=usage.entries,
            )
        yield GaugeMetricFamily(
            "hexproxy_cache_max_size_bytes",
            "The configured cache.max_size (0 = unlimited).",
            value=evictor.max_size,
        )

    def _store(self, totals: Totals) -> Iterator[Metric]:
        shared = self.m.cache.shared
        if shared is None:
            return
        requests = CounterMetricFamily(
            "hexproxy_store_requests",
            "Requests to the shared object store by operation and result "
            "(ok, missing, error; skipped while its circuit is open).",
            labels=["op", "result"],
        )
        errors = CounterMetricFamily(
            "hexproxy_store_errors",
            "Shared object store requests that failed (unreachable, timed out, refused).",
            labels=["op"],
        )
        for (op, result), n in totals.family("store_requests"):
            requests.add_metric([str(op), str(result)], n)
            if result == "error":
                errors.add_metric([str(op)], n)
        yield requests
        yield errors
        yield _counter(
            totals,
            "store_bad_objects",
            "Objects from the shared store that failed verification (never served).",
        )
        state = GaugeMetricFamily(
            "hexproxy_store_state",
            "1 for the shared store's circuit state (up, down, paused), "
            "as the answering worker sees it.",
            labels=["state"],
        )
        for name in State:
            state.add_metric([name.value], 1 if name.value == shared.state else 0)
        yield state


def _counter(totals: Totals, name: str, documentation: str) -> CounterMetricFamily:
    return CounterMetricFamily(f"hexproxy_{name}", documentation, value=totals.value(name))


def _labelled(
    totals: Totals, name: str, documentation: str, labels: list[str]
) -> CounterMetricFamily:
    family = CounterMetricFamily(f"hexproxy_{name}", documentation, labels=labels)
    for values, n in totals.family(name):
        family.add_metric([str(value) for value in values], n)
    return family


def _requests(totals: Totals) -> Iterator[Metric]:
    yield _labelled(
        totals,
        "requests",
        "Client requests by route, status and cache result (X-Cache).",
        ["route", "status", "cache"],
    )
    yield _labelled(totals, "response_bytes", "Response body bytes served, by route.", ["route"])
    yield _counter(
        totals, "client_disconnects", "Clients that left while a miss was being streamed to them."
    )


def _upstream(totals: Totals) -> Iterator[Metric]:
    yield _labelled(
        totals,
        "upstream_requests",
        "Requests answered by upstream, by object kind and HTTP status.",
        ["kind", "status"],
    )
    yield _labelled(
        totals,
        "upstream_failures",
        "Upstream failures (timeouts, refused connections, 5xx, broken bodies), by error.",
        ["error"],
    )
    latency = HistogramMetricFamily(
        "hexproxy_upstream_response_seconds",
        "Time from sending a request upstream to its response headers.",
        labels=["kind"],
    )
    per_kind: dict[str, list[int]] = {}
    for (kind, bucket), n in totals.family("upstream_seconds"):
        per_kind.setdefault(str(kind), [0] * (len(LATENCY_BUCKETS) + 1))[int(bucket)] += n
    for kind, counts in sorted(per_kind.items()):
        edges = [*(str(float(edge)) for edge in LATENCY_BUCKETS), "+Inf"]
        cumulative = [sum(counts[: i + 1]) for i in range(len(counts))]
        seconds = totals.value("upstream_seconds_sum_us", kind) / 1e6
        latency.add_metric([kind], list(zip(edges, cumulative, strict=True)), seconds)
    yield latency


def _workers(totals: Totals) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "hexproxy_worker_info",
        "1 for each live worker process (worker: its slot, kept by its replacements).",
        labels=["worker", "pid", "version"],
    )
    for slot, pid in sorted(totals.workers.items()):
        info.add_metric([str(slot), str(pid), __version__], 1)
    answered = CounterMetricFamily(
        "hexproxy_worker_requests",
        "Client requests answered by each worker slot (a worker and its replacements).",
        labels=["worker"],
    )
    for slot, n in sorted(totals.requests.items()):
        answered.add_metric([str(slot)], n)
    yield from (info, answered)


def _process(totals: Totals) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "process_cpu_seconds",
        "User and system CPU time of every worker the server has had, in seconds.",
        value=totals.value("process_cpu_us") / 1e6,
    )
    yield GaugeMetricFamily(
        "process_resident_memory_bytes",
        "Resident memory of the live workers, summed (shared pages counted in each).",
        value=totals.value("~process_resident_bytes"),
    )
    yield GaugeMetricFamily(
        "process_open_fds",
        "Open file descriptors of the live workers, summed.",
        value=totals.value("~process_open_fds"),
    )
