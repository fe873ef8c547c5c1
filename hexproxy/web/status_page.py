"""The status page at ``/_hexproxy/``: one server-rendered HTML document, no scripts.

Every value that comes from outside (error messages, package names, paths)
goes through ``html.escape``; the page is built from small section functions
so each stays readable.
"""

from __future__ import annotations

import os
import time
from html import escape

from .. import __version__
from ..store.eviction import Evictor
from ..units import format_size
from ..upstream.client import Host
from .metrics import Metrics, hit_ratio, requests_total
from .tally import Totals

HOST_TITLES = {"repository": "repository", "builds": "builds (/installs)"}

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#1d2430;
 padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
.sub{color:#5b6575;margin:0 0 1.2rem}
.cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{border:1px solid #d5dae1;border-radius:8px;padding:.8rem 1rem;min-width:12rem;flex:1}
.card b{display:block;font-size:1.4rem}.card span{color:#5b6575;font-size:.85rem}
.up{color:#137333}.down,.paused{color:#b3261e}.offline{color:#8a5a00}
table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #e6e9ee}
.bar{background:#e6e9ee;border-radius:4px;height:.6rem;margin-top:.4rem}
.bar i{display:block;height:100%;background:#3b6fd8;border-radius:4px}
.none{color:#5b6575}code{font-size:.85rem}
"""


def render(metrics: Metrics, totals: Totals, evictor: Evictor, extra: str = "") -> str:
    """The whole page: counts are the whole server's (``totals``), states the answering
    worker's view (``extra``: more sections)."""
    body = "\n".join(
        [
            "<h1>hexproxy</h1>",
            f'<p class="sub">version {escape(__version__)} · {_workers(totals)} · '
            f"up {_duration(time.time() - metrics.traffic.started)} · "
            f"{_host_urls(metrics)}</p>",
            _cards(metrics, totals, evictor),
            _top_packages(totals),
            extra,
            _failures(metrics, totals),
        ]
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>hexproxy status</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def _workers(totals: Totals) -> str:
    live = len(totals.workers)
    workers = "1 worker" if live == 1 else f"{live} workers"
    return f"{workers}, this page from pid {os.getpid()}"


def _host_urls(metrics: Metrics) -> str:
    return " · ".join(
        f"{escape(host.name)} <code>{escape(host.shown_url)}</code>"
        for host in metrics.cache.upstream.hosts
    )


def _card(title: str, value: str, detail: str, value_class: str = "") -> str:
    cls = f' class="{value_class}"' if value_class else ""
    return (
        f'<div class="card"><span>{escape(title)}</span>'
        f"<b{cls}>{escape(value)}</b><span>{escape(detail)}</span></div>"
    )


def _host_card(metrics: Metrics, host: Host) -> str:
    """One upstream host and its own circuit breaker."""
    state = metrics.upstream_state(host)
    breaker = host.breaker
    detail = breaker.last_error or "answering normally"
    if state == "paused":
        detail = f"retry in {breaker.seconds_until_retry():.0f}s: {breaker.last_error}"
    elif state == "offline":
        detail = "serving from the cache only"
    return _card(f"Upstream: {HOST_TITLES.get(host.name, host.name)}", state, detail, state)


def _cards(metrics: Metrics, totals: Totals, evictor: Evictor) -> str:
    ratio = hit_ratio(totals)
    sent = sum(n for _, n in totals.family("response_bytes"))
    cards = [
        *(_host_card(metrics, host) for host in metrics.cache.upstream.hosts),
        _card(
            "Hit ratio",
            "n/a" if ratio is None else f"{ratio:.1%}",
            f"{requests_total(totals)} requests, {format_size(sent)} served",
        ),
        _size_card(evictor),
    ]
    return f'<div class="cards">{"".join(cards)}</div>'


def _size_card(evictor: Evictor) -> str:
    usage, limit = evictor.usage, evictor.max_size
    if usage is None:
        return _card("Cache size", "measuring…", "first measurement pending")
    used = format_size(usage.bytes)
    if not limit:
        return _card("Cache size", used, f"{usage.entries} files · no limit (max_size = 0)")
    share = min(usage.bytes / limit, 1.0)
    card = _card(
        "Cache size",
        f"{used} of {format_size(limit)}",
        f"{usage.entries} files · {share:.0%} of max_size · {evictor.evicted} evicted",
    )
    return card.replace(
        "</div>", f'<div class="bar"><i style="width:{share:.0%}"></i></div></div>', 1
    )


def _top_packages(totals: Totals, limit: int = 10) -> str:
    ranked = sorted(totals.family("packages"), key=lambda item: (-item[1], item[0]))
    top = [(str(name), n) for (name,), n in ranked[:limit]]
    if not top:
        return '<h2>Most requested packages</h2><p class="none">No package requests yet.</p>'
    rows = "".join(f"<tr><td>{escape(name)}</td><td>{n}</td></tr>" for name, n in top)
    return (
        "<h2>Most requested packages</h2>"
        f"<table><tr><th>Package</th><th>Requests</th></tr>{rows}</table>"
    )


def _failures(metrics: Metrics, totals: Totals) -> str:
    # The count is the server's; the messages are the answering worker's own.
    recent = list(reversed(metrics.cache.counters.recent_failures or []))
    total = totals.value("verification_failures")
    title = f"<h2>Recent verification failures ({total} in total)</h2>"
    if not recent and total:
        return title + '<p class="none">Seen by other workers: their log lines name them.</p>'
    if not recent:
        return title + '<p class="none">None: everything served has passed its checks.</p>'
    items = "".join(f"<li><code>{escape(line)}</code></li>" for line in recent)
    return f"{title}<ul>{items}</ul>"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"
