"""What the proxy did, counted cheaply and exported in the Prometheus text format.

The per-request path only increments plain ``collections.Counter`` entries
(no locks, no label lookups); prometheus-client turns them into metric
families when ``/_hexproxy/metrics`` is scraped, through a custom collector.
Upstream traffic is rarer, so it uses a real prometheus-client histogram.

Each process has its own counters. With ``--workers N`` a scrape reaches
one worker (the kernel picks it), so the numbers are per worker; the
``hexproxy_worker_info`` metric names the pid so series can be told apart.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .. import __version__
from ..cache.policy import Cache
from ..errors import UpstreamError
from ..store.cachekey import CacheKey
from ..store.eviction import Evictor
from ..upstream.breaker import State
from ..upstream.client import Host

# Cache results (the X-Cache header) that mean "answered without going upstream first".
HIT_RESULTS = frozenset({"HIT", "STALE", "REVALIDATED"})


class Traffic:
    """Client requests, bumped by the request middleware."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int, str]] = Counter()  # (route, status, cache)
        self.bytes: Counter[str] = Counter()  # route -> body bytes sent
        self.packages: Counter[str] = Counter()  # package name -> requests
        self.disconnects = 0  # clients that left in the middle of a streamed miss
        self.started = time.time()

    def hit_ratio(self) -> float | None:
        """Share of cacheable answers served from the cache; None before any."""
        hits = misses = 0
        for (_, _, result), n in self.requests.items():
            if result in HIT_RESULTS:
                hits += n
            elif result == "MISS":
                misses += n
        return hits / (hits + misses) if hits + misses else None

    def total(self) -> int:
        return sum(self.requests.values())


class UpstreamMetrics:
    """The upstream client's Observer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.answers: Counter[tuple[str, int]] = Counter()  # (kind, status)
        self.failures: Counter[str] = Counter()  # error code
        self.latency = Histogram(
            "hexproxy_upstream_response_seconds",
            "Time from sending a request upstream to its response headers.",
            ["kind"],
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )

    def answered(self, key: CacheKey, status: int, seconds: float) -> None:
        self.answers[(key.kind.value, status)] += 1
        self.latency.labels(key.kind.value).observe(seconds)

    def failed(self, error: UpstreamError) -> None:
        self.failures[type(error).__name__] += 1


class Metrics:
    """Everything a scrape reports, for one process."""

    def __init__(self, cache: Cache, evictor: Evictor) -> None:
        self.cache = cache
        self.evictor = evictor
        self.registry = CollectorRegistry()
        self.traffic = Traffic()
        self.upstream = UpstreamMetrics(self.registry)
        cache.upstream.observer = self.upstream
        self.registry.register(_Snapshot(self))
        ProcessCollector(registry=self.registry)

    def upstream_state(self, host: Host | None = None) -> str:
        """up / down / paused / offline for ``host`` (default: the repository)."""
        if self.cache.offline:
            return "offline"
        return (host or self.cache.upstream.repository).breaker.state.value


class _Snapshot(Collector):
    """Turns the plain counters into metric families at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._upstream()
        yield from self._cache()
        yield from self._store()
        info = GaugeMetricFamily(
            "hexproxy_worker_info",
            "This process; metrics are per worker.",
            labels=["pid", "version"],
        )
        info.add_metric([str(os.getpid()), __version__], 1)
        yield info

    def _requests(self) -> Iterator[Metric]:
        traffic = self.m.traffic
        requests = CounterMetricFamily(
            "hexproxy_requests",
            "Client requests by route, status and cache result (X-Cache).",
            labels=["route", "status", "cache"],
        )
        for (route, status, result), n in sorted(traffic.requests.items()):
            requests.add_metric([route, str(status), result], n)
        sent = CounterMetricFamily(
            "hexproxy_response_bytes", "Response body bytes served, by route.", labels=["route"]
        )
        for route, n in sorted(traffic.bytes.items()):
            sent.add_metric([route], n)
        yield requests
        yield sent
        yield CounterMetricFamily(
            "hexproxy_client_disconnects",
            "Clients that left while a miss was being streamed to them.",
            value=traffic.disconnects,
        )

    def _upstream(self) -> Iterator[Metric]:
        up = self.m.upstream
        answers = CounterMetricFamily(
            "hexproxy_upstream_requests",
            "Requests answered by upstream, by object kind and HTTP status.",
            labels=["kind", "status"],
        )
        for (kind, status), n in sorted(up.answers.items()):
            answers.add_metric([kind, str(status)], n)
        failures = CounterMetricFamily(
            "hexproxy_upstream_failures",
            "Upstream failures (timeouts, refused connections, 5xx, broken bodies), by error.",
            labels=["error"],
        )
        for error, n in sorted(up.failures.items()):
            failures.add_metric([error], n)
        # The repository's state keeps its name and labels from before there was a
        # breaker per host; every host, the repository included, is in the second family.
        state = GaugeMetricFamily(
            "hexproxy_upstream_state",
            "1 for the repository upstream's current state (up, down, paused, offline).",
            labels=["state"],
        )
        per_host = GaugeMetricFamily(
            "hexproxy_upstream_host_state",
            "1 for each upstream host's current state (its own circuit breaker).",
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
        yield from (answers, failures, state, per_host)

    def _store(self) -> Iterator[Metric]:
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
        for (op, result), n in sorted(shared.requests.items()):
            requests.add_metric([op, result], n)
            if result == "error":
                errors.add_metric([op], n)
        yield requests
        yield errors
        yield CounterMetricFamily(
            "hexproxy_store_bad_objects",
            "Objects from the shared store that failed verification (never served).",
            value=shared.bad_objects,
        )
        state = GaugeMetricFamily(
            "hexproxy_store_state",
            "1 for the shared store's circuit state (up, down, paused).",
            labels=["state"],
        )
        for name in State:
            state.add_metric([name.value], 1 if name.value == shared.state else 0)
        yield state

    def _cache(self) -> Iterator[Metric]:
        counters, evictor = self.m.cache.counters, self.m.evictor
        yield CounterMetricFamily(
            "hexproxy_verification_failures",
            "Registry files or tarballs that failed signature, origin or checksum checks.",
            value=counters.verification_failures,
        )
        yield CounterMetricFamily(
            "hexproxy_stale_served",
            "Registry files served stale because upstream could not revalidate them.",
            value=counters.stale_served,
        )
        yield CounterMetricFamily(
            "hexproxy_evictions", "Files evicted to stay under max_size.", value=evictor.evicted
        )
        yield CounterMetricFamily(
            "hexproxy_evicted_bytes",
            "Bytes evicted to stay under max_size.",
            value=evictor.evicted_bytes,
        )
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
