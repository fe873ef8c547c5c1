"""Errors of hosted repositories, each with the HTTP status the Hex API answers with.

The API renders them as the term-format map Hex clients print (``message``, and for
validation failures ``errors``: field -> text, as hexpm does); the CLI prints the
message and exits 2.

    HexproxyError
    └── HostedError                  500
        ├── Unauthorized             401 no key, or a key this server does not know
        ├── Forbidden                403 a known key without the right for this repository
        ├── UnknownRepository        404 no hosted repository of that name
        ├── ReleaseNotFound          404 no such package or release
        ├── LengthRequired           411 an upload without Content-Length
        └── ValidationFailed         422 the upload (or request) breaks a rule; per-field errors
            └── TooBig               422 over a size limit (hexpm answers {tar: "too big"})
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import HexproxyError

__all__ = [
    "Forbidden",
    "HostedError",
    "LengthRequired",
    "ReleaseNotFound",
    "TooBig",
    "Unauthorized",
    "UnknownRepository",
    "ValidationFailed",
]


class HostedError(HexproxyError):
    code = "hosted"
    client_message = False  # the API answers in the term format, never with x-hex-message


class Unauthorized(HostedError):
    http_status = 401
    code = "unauthorized"


class Forbidden(HostedError):
    http_status = 403
    code = "forbidden"


class UnknownRepository(HostedError):
    http_status = 404
    code = "unknown_repository"


class ReleaseNotFound(HostedError):
    http_status = 404
    code = "not_found"


class LengthRequired(HostedError):
    http_status = 411
    code = "length_required"


class ValidationFailed(HostedError):
    """The request is understood but refused; ``errors`` names each field's problem."""

    http_status = 422
    code = "validation_failed"

    def __init__(self, message: str, errors: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.errors = dict(errors or {})

    @classmethod
    def field(cls, name: str, problem: str) -> ValidationFailed:
        return cls(f"{name}: {problem}", {name: problem})


class TooBig(ValidationFailed):
    code = "too_big"
