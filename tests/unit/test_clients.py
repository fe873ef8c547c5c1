"""Which User-Agents may get an ``x-hex-message`` header: real strings, one row each."""

from __future__ import annotations

import pytest

from hexproxy.web.clients import accepts_hex_message
from tests.support.user_agents import HEX_2_4, HEX_2_5, MIX_INSTALLER, REAL_CLIENTS


@pytest.mark.parametrize(
    ("client", "user_agent", "expected"),
    [
        *REAL_CLIENTS,
        # Hex 2.3+ put "(CI)" after the Elixir version when $CI is set.
        ("Hex 2.4.2 in CI", HEX_2_4.replace("(OTP", "(CI) (OTP"), False),
        ("Hex 2.5.1 in CI", HEX_2_5.replace("(OTP", "(CI) (OTP"), True),
        ("Hex 2.1.0", "hex_core/0.10.0 (httpc) (OTP/26) (erts/14.0)", False),
        ("Hex 2.4.0", "hex_core/0.15.0 hex/2.4.0 (elixir/1.18.4) (OTP/27) (erts/15.2)", False),
        ("Hex 2.5.0", "hex_core/0.18.0 hex/2.5.0 (elixir/1.19.0) (OTP/28) (erts/16.0)", True),
        ("Hex 2.5.2-dev", "hex_core/0.18.0 hex/2.5.2-dev (elixir/1.19.0) (OTP/28)", True),
        ("Hex 2.10.0", "hex_core/1.0.0 hex/2.10.0 (elixir/1.20.0) (OTP/29)", True),
        ("Hex 3.0.0", "hex_core/1.0.0 hex/3.0.0 (elixir/1.20.0) (OTP/29)", True),
        # A 2.5.0 release candidate may predate the fix.
        ("Hex 2.5.0-rc.1", "hex_core/0.18.0 hex/2.5.0-rc.1 (elixir/1.19.0) (OTP/28)", False),
        ("Hex 2.0.0", "Hex/2.0.0 (Elixir/1.14.0) (OTP/25.0)", True),
        ("Hex 1.0.1, never checked", "Hex/1.0.1 (Elixir/1.13.4) (OTP/24.3)", False),
        ("Elixir's installer", MIX_INSTALLER, False),
        ("rebar3_hex plugin", "hex_core/0.8.4 (rebar3_hex/7.0.11) (httpc) (OTP/25)", False),
        ("curl", "curl/8.5.0", False),
        ("no User-Agent", None, False),
        ("empty", "", False),
        ("garbage version", "hex_core/0.18.0 hex/two.five (elixir/1.19.0)", False),
        ("Hex with no version", "Hex/ (Elixir/1.14.0)", False),
    ],
)
def test_only_clients_that_print_it_get_x_hex_message(
    client: str, user_agent: str | None, expected: bool
) -> None:
    assert accepts_hex_message(user_agent) is expected, client
