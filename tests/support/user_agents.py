"""The User-Agent strings real clients send (../shared/hex-protocol.md, section 0, observed
with real Hex archives; rebar3 3.19 observed on this machine), for tests that act as them."""

from __future__ import annotations

HEX_2_0 = "Hex/2.0.6 (Elixir/1.14.0) (OTP/25.2.3)"
HEX_2_1 = "hex_core/0.10.0 (httpc) (OTP/25) (erts/13.1.5)"
HEX_2_2 = "hex_core/0.10.1 (httpc) (OTP/25) (erts/13.1.5)"
HEX_2_3 = "hex_core/0.12.0 hex/2.3.2 (elixir/1.14.0) (OTP/25) (erts/13.1.5)"
HEX_2_4 = "hex_core/0.15.0 hex/2.4.2 (elixir/1.14.0) (OTP/25) (erts/13.1.5)"
HEX_2_5 = "hex_core/0.18.0 hex/2.5.1 (elixir/1.14.0) (OTP/25) (erts/13.1.5)"
REBAR3 = "hex_core/0.7.1 (rebar3/3.19.0) (httpc) (OTP/25) (erts/13.1.5)"
MIX_INSTALLER = "Mix/1.14.0"  # Elixir's `mix local.hex` (Mix.Utils.read_path)

# (client, User-Agent, does it print x-hex-message without crashing?)
REAL_CLIENTS = [
    ("Hex 2.0.6", HEX_2_0, True),
    ("Hex 2.1.1", HEX_2_1, False),
    ("Hex 2.2.2", HEX_2_2, False),
    ("Hex 2.3.2", HEX_2_3, False),
    ("Hex 2.4.2", HEX_2_4, False),
    ("Hex 2.5.1", HEX_2_5, True),
    ("rebar3 3.19", REBAR3, False),
]

# Headers that make a test request look like a client that prints x-hex-message.
AS_HEX_2_5 = {"User-Agent": HEX_2_5}
