"""Which clients may be sent an ``x-hex-message`` header, judged from their User-Agent.

Hex 2.1.0 to 2.4.2 crash on *any* ``x-hex-message`` (``Hex.HTTP.handle_hex_message``
hands the binary header to ``:binary.list_to_bin``; fixed in Hex 2.5.0), and the
crash takes ``mix deps.get`` down with it. So the header goes only to clients known
to print it, and everyone else reads the same text in the plain-text body.

What each client sends (../shared/hex-protocol.md, section 0, observed with real
archives; rebar3 observed on this machine):

======================  =====================================================  ========
client                  User-Agent                                              header
======================  =====================================================  ========
Hex 2.0.x               ``Hex/2.0.6 (Elixir/1.14.0) (OTP/25.2.3)``              printed
Hex 2.1.x, 2.2.x        ``hex_core/0.10.0 (httpc) (OTP/25) (erts/13.1.5)``      crash
Hex 2.3.x, 2.4.x        ``hex_core/0.12.0 hex/2.3.2 (elixir/1.14.0) (OTP/25)…`` crash
Hex 2.5.0 and later     ``hex_core/0.18.0 hex/2.5.1 (elixir/1.14.0) (OTP/25)…`` printed
rebar3 3.x              ``hex_core/0.7.1 (rebar3/3.19.0) (httpc) (OTP/25)…``    ignored
======================  =====================================================  ========

Hex 2.1 and 2.2 do not name their own version, and a CI run adds ``(CI)`` after the
Elixir version; so the rule looks for the two forms that do name a fixed Hex and
says no to everything else, unknown clients included.
"""

from __future__ import annotations

import re

# The first Hex that parses x-hex-message without crashing (hex commit 3de1df34).
FIXED_HEX = (2, 5, 0)

_VERSION = re.compile(r"\A(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?\Z")


def accepts_hex_message(user_agent: str | None) -> bool:
    """True only for clients known to print ``x-hex-message``: Hex 2.0.x and Hex >= 2.5.0."""
    for token in (user_agent or "").split():
        product, _, version = token.partition("/")
        if product == "Hex":  # Hex 2.0.x and older name themselves this way
            parsed = _parse(version)
            return parsed is not None and parsed[0][:2] == (2, 0)
        if product == "hex":  # the fragment Hex 2.3+ appends to hex_core's agent
            parsed = _parse(version)
            return parsed is not None and _fixed(*parsed)
    return False


def _parse(text: str) -> tuple[tuple[int, int, int], bool] | None:
    """``(major, minor, patch)`` and whether it is a pre-release; None if not SemVer."""
    m = _VERSION.match(text)
    if m is None:
        return None
    return (int(m[1]), int(m[2]), int(m[3])), m[4] is not None


def _fixed(release: tuple[int, int, int], pre: bool) -> bool:
    # A pre-release of 2.5.0 may predate the fix: only the release itself counts.
    return release > FIXED_HEX or (release == FIXED_HEX and not pre)
