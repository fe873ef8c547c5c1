"""The errors hexproxy raises, each carrying the HTTP status it maps to.

Nothing inspects messages: the HTTP layer answers with ``http_status`` and
sends ``code``, a stable machine-readable name, in the ``X-Hexproxy-Error``
header (the message is the plain-text body), so a script can tell
``not_cached`` from ``not_found`` and a new error kind is one class here.
``client_message`` says whether the text is worth an ``x-hex-message`` header for
the clients that print one (web/clients.py decides which clients those are).

    HexproxyError                    500 internal
    ├── ConfigError                  (CLI exit 2; never reaches HTTP)
    ├── Busy                         503 another worker is fetching it; ask again shortly
    ├── InvalidRequest               400 a path or name that breaks the grammar
    ├── CredentialRequired           401 an organization's repository asked for without a key
    ├── CredentialNotListed          403 offline: the key is not listed for that organization
    ├── UpstreamRefused              401/403/404 upstream's own refusal, passed on as it came
    ├── NotFound                     404 upstream has no such object
    │   └── NotCached                404 offline, and the cache does not hold it
    ├── VerificationError            502 upstream bytes failed a check; nothing is stored
    │   ├── MalformedRegistry        gzip or protobuf that does not decode
    │   ├── BadSignature             RSA-SHA512 signature does not verify
    │   ├── BadOrigin                repository or package name is not the expected one
    │   ├── ChecksumMismatch         tarball sha256 != signed outer_checksum
    │   └── TooLarge                 body (or gunzipped body) over its limit
    ├── UpstreamError                502 upstream could not give an answer
    │   ├── UpstreamUnavailable      connection refused, DNS, offline
    │   │   ├── CircuitOpen          the breaker holds requests back after repeated failures
    │   │   ├── InstallsUnavailable  404 /installs/* with the builds host down; nothing cached
    │   │   └── NotConfirmed         upstream down and the key not confirmed within offline_grace
    │   ├── UpstreamTimeout          504 connect or read timed out
    │   └── UpstreamStatus           upstream answered with an unexpected status
    └── StoreError                   503 the storage backend (an object store) failed
        ├── ObjectMissing            404 the store holds no such object (a kind, not a fault)
        └── StoreUnavailable         503 unreachable, timed out, refused or answered an error

Store errors rarely reach HTTP: the policy falls back to the local tier and upstream
when the shared store fails (cache/shared.py); the CLI reports them as one line.
"""

from __future__ import annotations


class HexproxyError(Exception):
    """Base of every error hexproxy raises on purpose."""

    http_status = 500
    code = "internal"
    client_message = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(HexproxyError):
    """A configuration value is invalid; the message names the key."""

    code = "config"


class Busy(HexproxyError):
    """Someone else (another worker) is fetching the object and has not finished in time."""

    http_status = 503
    code = "busy"


class InvalidRequest(HexproxyError):
    http_status = 400
    code = "invalid_request"


class CredentialRequired(HexproxyError):
    """A request for an organization's repository that carries no ``authorization``."""

    http_status = 401
    code = "credential_required"


class CredentialNotListed(HexproxyError):
    """Offline, a key whose hash ``orgs.keys`` does not list for that organization."""

    http_status = 403
    code = "credential_not_listed"


class UpstreamRefused(HexproxyError):
    """Upstream answered 401, 403 or 404 to a request made with the client's credential.

    The client gets that status with upstream's own ``x-hex-message`` (to the clients
    that take one), ``www-authenticate`` and body, so it sees what hex.pm said.
    """

    code = "upstream_refused"
    client_message = False  # upstream's own x-hex-message is passed on instead

    def __init__(
        self,
        message: str,
        status: int,
        *,
        hex_message: str | None = None,
        www_authenticate: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = status
        self.hex_message = hex_message
        self.www_authenticate = www_authenticate
        self.body = body
        self.content_type = content_type


class NotFound(HexproxyError):
    http_status = 404
    code = "not_found"
    client_message = False  # upstream's own 404 passes through as upstream sent it


class NotCached(NotFound):
    code = "not_cached"
    client_message = True


class VerificationError(HexproxyError):
    http_status = 502
    code = "verification_failed"


class MalformedRegistry(VerificationError):
    code = "malformed_registry"


class BadSignature(VerificationError):
    code = "bad_signature"


class BadOrigin(VerificationError):
    code = "bad_origin"


class ChecksumMismatch(VerificationError):
    code = "checksum_mismatch"


class TooLarge(VerificationError):
    code = "too_large"


class UpstreamError(HexproxyError):
    http_status = 502
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"


class CircuitOpen(UpstreamUnavailable):
    """Not asked at all: the circuit breaker is open. Says nothing about any one object."""

    code = "circuit_open"


class UpstreamTimeout(UpstreamError):
    http_status = 504
    code = "upstream_timeout"


class InstallsUnavailable(UpstreamUnavailable):
    """No ``/installs/*`` answer to give: the builds host cannot be reached (or the
    proxy is offline) and the cache holds no copy.

    A 404, not a 502: every Hex takes any failed update check as "no update
    information" (``Hex.UpdateChecker`` prints "Failed to check for new Hex version"
    and the body, then carries on), and a 404 is also what an offline miss answers.
    No ``x-hex-message``: Hex already says the check failed and prints this body.
    """

    http_status = 404
    code = "installs_unavailable"
    client_message = False


class NotConfirmed(UpstreamUnavailable):
    """Upstream cannot be asked whether a key may read an organization, and it did not
    accept that key within ``orgs.offline_grace``: nothing is served from the cache."""

    code = "not_confirmed"


class UpstreamStatus(UpstreamError):
    code = "upstream_status"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class StoreError(HexproxyError):
    http_status = 503
    code = "store_error"


class ObjectMissing(StoreError):
    """The store has no object under this key: every backend says so with this kind."""

    http_status = 404
    code = "object_missing"


class StoreUnavailable(StoreError):
    code = "store_unavailable"
