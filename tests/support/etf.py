"""Erlang's external term format, the subset hex_core puts on the wire for API calls: a
map of binaries and small integers (``term_to_binary``). Tests build request and
response bodies with it; the proxy itself never decodes them."""

from __future__ import annotations

import struct

VERSION = 131
MAP_EXT = 116
BINARY_EXT = 109
SMALL_INTEGER_EXT = 97
INTEGER_EXT = 98


def encode(term: dict[str, str | int]) -> bytes:
    out = bytearray([VERSION, MAP_EXT]) + struct.pack(">I", len(term))
    for key, value in term.items():
        out += _binary(key)
        if isinstance(value, int):
            out += _integer(value)
        else:
            out += _binary(value)
    return bytes(out)


def _binary(text: str) -> bytes:
    data = text.encode()
    return bytes([BINARY_EXT]) + struct.pack(">I", len(data)) + data


def _integer(value: int) -> bytes:
    if 0 <= value < 256:
        return bytes([SMALL_INTEGER_EXT, value])
    return bytes([INTEGER_EXT]) + struct.pack(">i", value)
