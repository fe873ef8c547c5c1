"""Hosted repositories: packages the company publishes to hexproxy itself.

Beside the mirror of hex.pm, each ``[[hosted.repos]]`` repository is a complete Hex
repository of its own, served under ``/internal/NAME/`` and signed with its own key,
published to through the Hex HTTP API (``mix hex.publish``, ``rebar3 hex publish``) or
``hexproxy hosted publish``. Its data lives in ``hosted.dir``, never in the cache.

Modules: ``etf`` and ``consult`` read and write Erlang terms (the API's body format and
``metadata.config``); ``package`` validates an uploaded tarball; ``repository`` keeps one
repository on disk with atomic registry generations; ``keys`` holds signing keys and API
key digests; ``service`` ties them to the configuration for the API and the CLI.
"""

from .errors import (
    Forbidden,
    HostedError,
    LengthRequired,
    ReleaseNotFound,
    TooBig,
    Unauthorized,
    UnknownRepository,
    ValidationFailed,
)
from .repository import BlobFile, HostedRepository, Problem
from .service import Hosted, PublishResult

__all__ = [
    "BlobFile",
    "Forbidden",
    "Hosted",
    "HostedError",
    "HostedRepository",
    "LengthRequired",
    "Problem",
    "PublishResult",
    "ReleaseNotFound",
    "TooBig",
    "Unauthorized",
    "UnknownRepository",
    "ValidationFailed",
]
