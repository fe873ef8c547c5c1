"""The Erlang external term format, for the subset the Hex HTTP API speaks.

Hex clients send and read ``application/vnd.hex+erlang`` bodies: ``term_to_binary`` of
maps with binary keys, binaries, integers, lists and the atoms ``nil``/``true``/``false``
(hex_core decodes answers with ``binary_to_term(Body, [safe])``). This module encodes
exactly that subset and decodes it plus the few other tags a client could plausibly send
(tuples, strings, other atoms), bounded so a hostile body cannot make it recurse or
allocate without limit. Pure: bytes in, Python values out.

Python mapping: binary <-> ``str`` (UTF-8; bytes that are not UTF-8 decode as ``bytes``),
integer <-> ``int``, list <-> ``list``, map <-> ``dict``, tuple <-> ``tuple``,
``nil`` <-> ``None``, ``true``/``false`` <-> ``bool``, any other atom -> ``Atom``.
"""

from __future__ import annotations

import struct
from typing import TypeAlias

__all__ = ["Atom", "EtfError", "Term", "decode", "encode"]

_VERSION = 131
_SMALL_INTEGER = 97
_INTEGER = 98
_SMALL_TUPLE = 104
_LARGE_TUPLE = 105
_NIL = 106
_STRING = 107
_LIST = 108
_BINARY = 109
_SMALL_BIG = 110
_MAP = 116
_ATOM = 100  # latin-1, deprecated but still read
_SMALL_ATOM = 115
_ATOM_UTF8 = 118
_SMALL_ATOM_UTF8 = 119

# A request body is small (a retire reason, an owner); these bound the work a hostile
# one can cause whatever its length fields claim.
MAX_DEPTH = 32
MAX_ITEMS = 100_000


class Atom(str):
    """An Erlang atom other than nil/true/false (kept apart from binaries)."""

    __slots__ = ()


Term: TypeAlias = (
    "bool | int | str | bytes | Atom | list[Term] | tuple[Term, ...] | dict[Term, Term] | None"
)


class EtfError(ValueError):
    """The body is not a term this decoder accepts."""


def encode(term: Term) -> bytes:
    """``term_to_binary`` of ``term`` (maps with sorted-insertion order as given)."""
    out = bytearray([_VERSION])
    _encode(term, out)
    return bytes(out)


def _encode(term: Term, out: bytearray) -> None:
    if term is None or isinstance(term, bool | Atom):
        name = "nil" if term is None else ("true" if term is True else "false")
        text = (term if isinstance(term, Atom) else name).encode("utf-8")
        out += bytes([_SMALL_ATOM_UTF8, len(text)]) + text
    elif isinstance(term, int):
        _encode_int(term, out)
    elif isinstance(term, str | bytes):
        data = term.encode("utf-8") if isinstance(term, str) else term
        out += struct.pack(">BI", _BINARY, len(data)) + data
    elif isinstance(term, list):
        if term:
            out += struct.pack(">BI", _LIST, len(term))
            for item in term:
                _encode(item, out)
        out.append(_NIL)
    elif isinstance(term, tuple):
        if len(term) < 256:
            out += bytes([_SMALL_TUPLE, len(term)])
        else:
            out += struct.pack(">BI", _LARGE_TUPLE, len(term))
        for item in term:
            _encode(item, out)
    elif isinstance(term, dict):
        out += struct.pack(">BI", _MAP, len(term))
        for key, value in term.items():
            _encode(key, out)
            _encode(value, out)
    else:
        raise TypeError(f"cannot encode {type(term).__name__} as an Erlang term")


def _encode_int(value: int, out: bytearray) -> None:
    if 0 <= value < 256:
        out += bytes([_SMALL_INTEGER, value])
    elif -(2**31) <= value < 2**31:
        out += struct.pack(">Bi", _INTEGER, value)
    else:
        magnitude = abs(value)
        digits = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "little")
        if len(digits) > 255:
            raise TypeError("integer too large to encode")
        out += bytes([_SMALL_BIG, len(digits), 1 if value < 0 else 0]) + digits


def decode(data: bytes) -> Term:
    """``binary_to_term(data, [safe])`` for the subset above; EtfError otherwise."""
    if not data or data[0] != _VERSION:
        raise EtfError("not an Erlang term (no version byte 131)")
    reader = _Reader(data)
    term = reader.term(0)
    if reader.pos != len(data):
        raise EtfError("unexpected bytes after the term")
    return term


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 1
        self.items = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise EtfError("term is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def count(self, n: int) -> int:
        # Each element costs at least one byte, so a count larger than what is left
        # is a lie; refusing it early keeps a short body from promising a huge list.
        self.items += n
        if self.items > MAX_ITEMS or n > len(self.data) - self.pos:
            raise EtfError("term has too many elements")
        return n

    def term(self, depth: int) -> Term:
        if depth > MAX_DEPTH:
            raise EtfError("term is nested too deeply")
        tag = self.u8()
        if tag == _SMALL_INTEGER:
            return self.u8()
        if tag == _INTEGER:
            value: int = struct.unpack(">i", self.take(4))[0]
            return value
        if tag == _SMALL_BIG:
            size, sign = self.u8(), self.u8()
            magnitude = int.from_bytes(self.take(size), "little")
            return -magnitude if sign else magnitude
        if tag == _BINARY:
            raw = self.take(self.u32())
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw
        if tag == _STRING:  # a list of small integers, sent compactly
            return list(self.take(struct.unpack(">H", self.take(2))[0]))
        if tag == _NIL:
            return []
        if tag == _LIST:
            items = [self.term(depth + 1) for _ in range(self.count(self.u32()))]
            if self.term(depth + 1) != []:
                raise EtfError("improper lists are not accepted")
            return items
        if tag in (_SMALL_TUPLE, _LARGE_TUPLE):
            size = self.u8() if tag == _SMALL_TUPLE else self.u32()
            return tuple(self.term(depth + 1) for _ in range(self.count(size)))
        if tag == _MAP:
            return self.map(depth)
        if tag in (_ATOM, _SMALL_ATOM, _ATOM_UTF8, _SMALL_ATOM_UTF8):
            return self.atom(tag)
        raise EtfError(f"unsupported term tag {tag}")

    def map(self, depth: int) -> dict[Term, Term]:
        result: dict[Term, Term] = {}
        for _ in range(self.count(self.u32())):
            key = self.term(depth + 1)
            if isinstance(key, list | dict):
                raise EtfError("map keys must be atoms, numbers or binaries")
            result[key] = self.term(depth + 1)
        return result

    def atom(self, tag: int) -> Term:
        short = tag in (_SMALL_ATOM, _SMALL_ATOM_UTF8)
        size = self.u8() if short else struct.unpack(">H", self.take(2))[0]
        encoding = "latin-1" if tag in (_ATOM, _SMALL_ATOM) else "utf-8"
        try:
            name = self.take(size).decode(encoding)
        except UnicodeDecodeError:
            raise EtfError("atom is not valid UTF-8") from None
        return {"nil": None, "true": True, "false": False}.get(name, Atom(name))
