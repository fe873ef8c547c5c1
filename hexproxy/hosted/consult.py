"""Read ``metadata.config``: Erlang terms in text, one ``{Key, Value}.`` per line.

The grammar is hex_core's ``safe_erl_term``: atoms (bare or quoted), strings, integers,
lists, tuples, maps, binaries (``<<"text">>``, ``<<"text"/utf8>>``, ``<<1,2>>``), nothing
that could run code. mix and rebar3_hex write it with ``io_lib_pretty`` (maps turned
into lists of pairs); older tools wrote strings instead of binaries. Pure and bounded.

Values: binary -> ``str`` when it is UTF-8 (else ``bytes``), string -> ``str``, atom ->
``Atom`` (``true``/``false`` -> ``bool``, ``nil`` -> ``None``), integer -> ``int``, list ->
``list``, tuple -> ``tuple``, map -> ``dict``.
"""

from __future__ import annotations

import re

from .etf import Atom, Term

__all__ = ["ConsultError", "parse_terms"]

MAX_DEPTH = 32

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|%[^\n]*)
  | (?P<atom>[a-z][A-Za-z0-9_@]*)
  | (?P<qatom>'(?:\\.|[^'\\])*')
  | (?P<string>"(?:\\.|[^"\\])*")
  | (?P<int>[0-9]+)
  | (?P<punct><<|>>|=>|[\#\[\]{},+\-/.])
    """,
    re.VERBOSE | re.DOTALL,
)

_ESCAPES = {
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "b": "\b",
    "f": "\f",
    "e": "\x1b",
    "s": " ",
    "d": "\x7f",
}
_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x\{([0-9A-Fa-f]+)\}|x([0-9A-Fa-f]{2})|\^(.)|(.))", re.S)


class ConsultError(ValueError):
    """metadata.config is not a list of safe Erlang terms."""


def parse_terms(text: str) -> list[Term]:
    """Every ``Term.`` of ``text``, in order."""
    tokens = _tokenize(text)
    parser = _Parser(tokens)
    terms: list[Term] = []
    while not parser.done():
        terms.append(parser.term(0))
        parser.expect(".")
    return terms


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ConsultError(f"unexpected character {text[pos]!r} at offset {pos}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append((kind, m.group()))
    return tokens


def _unescape(body: str) -> str:
    def one(m: re.Match[str]) -> str:
        octal, braced, hex2, ctrl, other = m.groups()
        if octal is not None:
            return chr(int(octal, 8))
        if braced is not None or hex2 is not None:
            return chr(int(braced or hex2, 16))
        if ctrl is not None:
            return chr(ord(ctrl) & 31)
        return _ESCAPES.get(other, other)

    return _ESCAPE.sub(one, body)


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.tokens)

    def peek(self) -> tuple[str, str]:
        if self.done():
            raise ConsultError("unexpected end of metadata")
        return self.tokens[self.pos]

    def next(self) -> tuple[str, str]:
        token = self.peek()
        self.pos += 1
        return token

    def expect(self, punct: str) -> None:
        kind, text = self.next()
        if kind != "punct" or text != punct:
            raise ConsultError(f"expected {punct!r}, got {text!r}")

    def accept(self, punct: str) -> bool:
        if not self.done() and self.tokens[self.pos] == ("punct", punct):
            self.pos += 1
            return True
        return False

    def term(self, depth: int) -> Term:
        if depth > MAX_DEPTH:
            raise ConsultError("terms are nested too deeply")
        kind, text = self.next()
        if kind == "atom":
            return {"true": True, "false": False, "nil": None}.get(text, Atom(text))
        if kind == "qatom":
            return Atom(_unescape(text[1:-1]))
        if kind == "string":
            return self.strings(text)
        if kind == "int":
            return int(text)
        if text in ("-", "+"):
            kind, digits = self.next()
            if kind != "int":
                raise ConsultError(f"expected a number after {text!r}")
            return -int(digits) if text == "-" else int(digits)
        if text == "[":
            return self.sequence("]", depth)
        if text == "{":
            return tuple(self.sequence("}", depth))
        if text == "#":
            return self.map(depth)
        if text == "<<":
            return self.binary()
        raise ConsultError(f"unexpected {text!r}")

    def strings(self, first: str) -> str:
        # Adjacent string literals are one string, as in Erlang; io_lib_pretty splits
        # long ones across lines that way.
        parts = [_unescape(first[1:-1])]
        while not self.done() and self.tokens[self.pos][0] == "string":
            parts.append(_unescape(self.next()[1][1:-1]))
        return "".join(parts)

    def sequence(self, close: str, depth: int) -> list[Term]:
        items: list[Term] = []
        if self.accept(close):
            return items
        while True:
            items.append(self.term(depth + 1))
            if self.accept(close):
                return items
            self.expect(",")

    def map(self, depth: int) -> dict[Term, Term]:
        self.expect("{")
        result: dict[Term, Term] = {}
        if self.accept("}"):
            return result
        while True:
            key = self.term(depth + 1)
            if isinstance(key, list | dict):
                raise ConsultError("map keys must be atoms, numbers or binaries")
            self.expect("=>")
            result[key] = self.term(depth + 1)
            if self.accept("}"):
                return result
            self.expect(",")

    def binary(self) -> Term:
        data = bytearray()
        if not self.accept(">>"):
            while True:
                data += self.segment()
                if self.accept(">>"):
                    break
                self.expect(",")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return bytes(data)

    def segment(self) -> bytes:
        kind, text = self.next()
        if kind == "string":
            chars = self.strings(text)
            if self.accept("/"):
                kind, spec = self.next()
                if spec != "utf8":
                    raise ConsultError(f"unsupported binary segment type {spec!r}")
                return chars.encode("utf-8")
            # Without /utf8 each character is one byte, as in Erlang.
            if any(ord(c) > 255 for c in chars):
                raise ConsultError("binary string has characters above 255 without /utf8")
            return chars.encode("latin-1")
        if kind == "int":
            value = int(text)
            if value > 255:
                raise ConsultError("binary byte out of range")
            return bytes([value])
        raise ConsultError(f"unexpected {text!r} in a binary")
