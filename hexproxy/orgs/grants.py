"""What upstream said about each credential, and the decision that follows from it.

``Grants`` remembers, per (credential digest, organization), when upstream last
accepted that credential for that organization (a 200 or 304 to a request made
with it). A 401 or 403 forgets it at once. Nothing else ever vouches for a
credential, except the operator's list of key hashes when the proxy is offline.

``decide`` is the whole authorization rule, pure so it can be read in one place
and tested as a table:

================================  ==========================================
facts                              action
================================  ==========================================
no credential                      REFUSE (401, nothing asked, nothing served)
offline, key not listed for org    NOT_LISTED (403)
offline, listed, cached            SERVE
offline, listed, not cached        NOT_CACHED (404)
upstream down, cached, accepted    SERVE_STALE
  less than offline_grace ago
upstream down, otherwise           UNCONFIRMED (the upstream error)
cached, fresh, accepted less       SERVE
  than auth_ttl ago
otherwise                          ASK upstream, with this credential
================================  ==========================================
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass


class Action(enum.Enum):
    REFUSE = "refuse"
    NOT_LISTED = "not_listed"
    NOT_CACHED = "not_cached"
    SERVE = "serve"
    SERVE_STALE = "serve_stale"
    UNCONFIRMED = "unconfirmed"
    ASK = "ask"


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the decision depends on, for one request."""

    has_credential: bool
    cached: bool  # a verified copy is held
    fresh: bool  # ... and needs no revalidation (immutable files always)
    accepted_age: float | None  # seconds since upstream accepted this credential for the org
    offline: bool = False  # the proxy never contacts upstream
    listed: bool = False  # orgs.keys lists this credential for the org
    upstream_down: bool = False  # the org host's breaker is open, or asking just failed


@dataclass(frozen=True, slots=True)
class Windows:
    auth_ttl: float
    offline_grace: float


def decide(facts: Facts, windows: Windows) -> Action:
    if not facts.has_credential:
        return Action.REFUSE
    if facts.offline:
        if not facts.listed:
            return Action.NOT_LISTED
        return Action.SERVE if facts.cached else Action.NOT_CACHED
    age = facts.accepted_age
    if facts.upstream_down:
        if facts.cached and age is not None and age < windows.offline_grace:
            return Action.SERVE_STALE
        return Action.UNCONFIRMED
    if facts.cached and facts.fresh and age is not None and age < windows.auth_ttl:
        return Action.SERVE
    return Action.ASK


class Grants:
    """(credential digest, org) -> when upstream last accepted it; bounded, in memory only."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._accepted: OrderedDict[tuple[bytes, str], float] = OrderedDict()

    def accept(self, digest: bytes, org: str, now: float) -> None:
        key = (digest, org)
        self._accepted.pop(key, None)
        self._accepted[key] = now
        while len(self._accepted) > self.max_entries:
            self._accepted.popitem(last=False)  # the longest unconfirmed goes first

    def refuse(self, digest: bytes, org: str) -> None:
        self._accepted.pop((digest, org), None)

    def age(self, digest: bytes, org: str, now: float) -> float | None:
        """Seconds since upstream last accepted ``digest`` for ``org``; None if never (or refused
        since)."""
        accepted = self._accepted.get((digest, org))
        return None if accepted is None else max(0.0, now - accepted)

    def __len__(self) -> int:
        return len(self._accepted)
