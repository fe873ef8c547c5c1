"""Read ``mix.lock`` and ``rebar.lock`` into the Hex packages they pin.

``hexproxy warm`` uses these to pre-fetch exactly what a project will ask for, with
the checksums the project already trusts. Both files are Elixir/Erlang term syntax,
so each gets a small tokenizer and recursive-descent parser for the subset the tools
write; the text is never evaluated. Non-Hex dependencies (git, path, ...) are listed
in ``skipped`` with a reason instead of failing the whole file.

Pure: this module only takes text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING, NamedTuple, TypeAlias, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "Lock",
    "LockedPackage",
    "LockfileError",
    "MixLock",
    "RebarLock",
    "parse_lockfile",
    "parse_mix_lock",
    "parse_rebar_lock",
]


class LockfileError(ValueError):
    """A lock file does not parse; the message names the file kind and line."""


@dataclass(frozen=True)
class LockedPackage:
    """One Hex package pinned by a lock file; checksums are raw SHA-256 bytes."""

    name: str
    version: str
    repository: str = "hexpm"
    outer_checksum: bytes | None = None
    inner_checksum: bytes | None = None
    app: str | None = None


@dataclass(frozen=True)
class Lock:
    """Hex packages of a lock file, plus ``(app, reason)`` for every other entry."""

    packages: list[LockedPackage] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class MixLock(Lock):
    """The Hex view of a ``mix.lock``."""


@dataclass(frozen=True)
class RebarLock(Lock):
    """The Hex view of a ``rebar.lock``."""


# ---------------------------------------------------------------------------
# Terms shared by both syntaxes. Tuples and maps remember their line so that a
# well-formed term with the wrong shape can still be reported precisely.


@dataclass(frozen=True)
class Atom:
    name: str


@dataclass(frozen=True)
class Tup:
    items: tuple[Term, ...]
    line: int


class MapEntry(NamedTuple):
    key: Term
    value: Term
    line: int


@dataclass(frozen=True)
class Map:
    entries: tuple[MapEntry, ...]
    line: int


Term: TypeAlias = "str | int | bool | Atom | Tup | Map | list[Term] | None"
_T = TypeVar("_T")


class _Token(NamedTuple):
    kind: str  # punct, str, atom, key, int, word, eof
    text: str
    line: int


_STRING = r'"(?:[^"\\]|\\.)*"'
_ELIXIR_TOKENS = re.compile(
    rf"""(?P<ws>\s+|\#[^\n]*)
    |(?P<punct>%\{{|=>|[{{}}\[\],])
    |(?P<key>(?:{_STRING}|[A-Za-z_][A-Za-z0-9_@]*[?!]?):(?=\s))
    |(?P<str>{_STRING})
    |(?P<atom>:(?:{_STRING}|[A-Za-z_][A-Za-z0-9_@]*[?!]?))
    |(?P<int>-?[0-9][0-9_]*)
    |(?P<word>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<bad>.)""",
    re.VERBOSE | re.DOTALL,
)
_ERLANG_TOKENS = re.compile(
    rf"""(?P<ws>\s+|%[^\n]*)
    |(?P<punct><<|>>|[{{}}\[\],.])
    |(?P<str>{_STRING})
    |(?P<atom>'(?:[^'\\]|\\.)*'|[a-z][A-Za-z0-9_@]*)
    |(?P<int>-?[0-9]+)
    |(?P<bad>.)""",
    re.VERBOSE | re.DOTALL,
)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "s": " ", "e": "\x1b", "0": "\0"}
_ESCAPE = re.compile(
    r"\\(x\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|u[0-9a-fA-F]{4}|.)", re.S
)
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


def _unescape(body: str) -> str:
    """Resolve backslash escapes common to Elixir strings and Erlang strings."""

    def one(m: re.Match[str]) -> str:
        esc = m[1]
        if len(esc) > 1:  # \xHH, \x{H..}, \uHHHH, \u{H..}
            return chr(int(esc[1:].strip("{}"), 16))
        return _SIMPLE_ESCAPES.get(esc, esc)

    return _ESCAPE.sub(one, body)


def _tokenize(text: str, pattern: re.Pattern[str], source: str) -> list[_Token]:
    tokens: list[_Token] = []
    line, pos = 1, 0
    while pos < len(text):
        m = pattern.match(text, pos)
        assert m is not None  # the "bad" alternative matches any character
        kind = m.lastgroup or "bad"
        if kind == "bad":
            what = "unterminated string" if m[0] in "\"'" else f"unexpected character {m[0]!r}"
            raise LockfileError(f"{source}: line {line}: {what}")
        if kind != "ws":
            tokens.append(_Token(kind, m[0], line))
        line += m[0].count("\n")
        pos = m.end()
    tokens.append(_Token("eof", "", line))
    return tokens


class _Parser:
    """Recursive-descent helpers shared by the Elixir and Erlang term parsers."""

    def __init__(self, text: str, pattern: re.Pattern[str], source: str) -> None:
        self.source = source
        self.tokens = _tokenize(text, pattern, source)
        self.pos = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def next(self) -> _Token:
        token = self.tokens[self.pos]
        if token.kind != "eof":
            self.pos += 1
        return token

    def error(self, line: int, message: str) -> LockfileError:
        return LockfileError(f"{self.source}: line {line}: {message}")

    def unexpected(self, token: _Token) -> LockfileError:
        if token.kind == "eof":
            return self.error(token.line, "unexpected end of input (truncated file?)")
        return self.error(token.line, f"unexpected {token.text!r}")

    def expect(self, text: str) -> _Token:
        token = self.next()
        if token.kind != "punct" or token.text != text:
            raise self.unexpected(token)
        return token

    def at(self, text: str) -> bool:
        token = self.peek()
        return token.kind == "punct" and token.text == text

    def sequence(self, close: str, item: Callable[[], _T]) -> list[_T]:
        """Comma-separated items up to ``close``; a trailing comma is tolerated."""
        items: list[_T] = []
        while not self.at(close):
            items.append(item())
            if not self.at(close):
                self.expect(",")
        self.expect(close)
        return items


class _ElixirParser(_Parser):
    def document(self) -> Term:
        term = self.term()
        if self.peek().kind != "eof":
            raise self.unexpected(self.peek())
        return term

    def term(self) -> Term:
        token = self.next()
        if token.kind == "punct" and token.text == "%{":
            return Map(tuple(self.sequence("}", self.map_entry)), token.line)
        if token.kind == "punct" and token.text == "{":
            return Tup(tuple(self.sequence("}", self.term)), token.line)
        if token.kind == "punct" and token.text == "[":
            return self.sequence("]", self.list_item)
        if token.kind == "str":
            return _unescape(token.text[1:-1])
        if token.kind == "atom":
            return Atom(_unescape(token.text[2:-1]) if token.text[1] == '"' else token.text[1:])
        if token.kind == "int":
            return int(token.text.replace("_", ""))
        if token.kind == "word" and token.text in ("true", "false", "nil"):
            return {"true": True, "false": False, "nil": None}[token.text]
        raise self.unexpected(token)

    def keyword_key(self) -> Atom | None:
        """Consume ``name:`` or ``"name":`` if next, returning its atom."""
        token = self.peek()
        if token.kind != "key":
            return None
        self.next()
        name = token.text[:-1]
        return Atom(_unescape(name[1:-1]) if name.startswith('"') else name)

    def map_entry(self) -> MapEntry:
        line = self.peek().line
        key = self.keyword_key()
        if key is not None:
            return MapEntry(key, self.term(), line)
        plain_key = self.term()
        self.expect("=>")
        return MapEntry(plain_key, self.term(), line)

    def list_item(self) -> Term:
        # [hex: :x] is sugar for [{:hex, :x}]
        line = self.peek().line
        key = self.keyword_key()
        return self.term() if key is None else Tup((key, self.term()), line)


class _ErlangParser(_Parser):
    def consult(self) -> list[Term]:
        """All ``Term.`` forms in the text, like ``file:consult/1``."""
        terms: list[Term] = []
        while self.peek().kind != "eof":
            terms.append(self.term())
            self.expect(".")
        return terms

    def term(self) -> Term:
        token = self.next()
        if token.kind == "punct" and token.text == "{":
            return Tup(tuple(self.sequence("}", self.term)), token.line)
        if token.kind == "punct" and token.text == "[":
            return self.sequence("]", self.term)
        if token.kind == "punct" and token.text == "<<":
            return self.binary()
        if token.kind == "str":
            return _unescape(token.text[1:-1])
        if token.kind == "atom":
            return Atom(_unescape(token.text[1:-1]) if token.text[0] == "'" else token.text)
        if token.kind == "int":
            return int(token.text)
        raise self.unexpected(token)

    def binary(self) -> str:
        """``<<"text">>`` or ``<<>>``; other segment kinds never appear in locks."""
        text = ""
        if self.peek().kind == "str":
            text = _unescape(self.next().text[1:-1])
        self.expect(">>")
        return text


# ---------------------------------------------------------------------------
# mix.lock


def parse_mix_lock(text: str) -> MixLock:
    """Hex packages of a ``mix.lock`` (an Elixir map of app => SCM tuple)."""
    parser = _ElixirParser(text, _ELIXIR_TOKENS, "mix.lock")
    document = parser.document()
    if not isinstance(document, Map):
        raise parser.error(1, "expected a map %{...} at top level")
    lock = MixLock()
    for key, value, line in document.entries:
        app = key.name if isinstance(key, Atom) else key
        if not isinstance(app, str) or not isinstance(value, Tup) or not value.items:
            raise parser.error(line, 'expected "app": {:scm, ...}')
        match value.items[0]:
            case Atom("hex"):
                lock.packages.append(_mix_hex_entry(parser, app, value))
            case Atom(scm):
                lock.skipped.append((app, _skip_reason(scm, value.items[1:])))
            case _:
                raise parser.error(value.line, f"entry {app!r} does not start with an SCM atom")
    return lock


def _mix_hex_entry(parser: _Parser, app: str, entry: Tup) -> LockedPackage:
    """``{:hex, :name, "vsn", "inner", managers, deps, "repo", "outer"}``.

    Older Hex versions wrote fewer fields (no repo, no outer checksum), so only
    name and version are required.
    """
    items = entry.items
    match items[1:3]:
        case (Atom(name), str(version)):
            pass
        case _:
            raise parser.error(entry.line, f'hex entry {app!r} lacks :name and "version"')
    repository = items[6] if len(items) > 6 else "hexpm"
    if not isinstance(repository, str):
        raise parser.error(entry.line, f"hex entry {app!r} has a non-string repository")
    inner = _checksum(parser, entry, 3, app)
    outer = _checksum(parser, entry, 7, app)
    return LockedPackage(name, version, repository, outer, inner, app)


def _checksum(parser: _Parser, entry: Tup, index: int, app: str) -> bytes | None:
    """Decode the SHA-256 hex string at ``entry.items[index]`` if present."""
    if len(entry.items) <= index:
        return None
    return _sha256(parser, entry.items[index], entry.line, app)


def _sha256(parser: _Parser, value: Term, line: int, app: str) -> bytes:
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise parser.error(line, f"checksum of {app!r} is not 64 hex digits: {value!r}")
    return bytes.fromhex(value)


def _skip_reason(scm: str, rest: tuple[Term, ...]) -> str:
    source = f" {rest[0]}" if rest and isinstance(rest[0], str) else ""
    return f"{scm} dependency{source}, not from Hex"


# ---------------------------------------------------------------------------
# rebar.lock


def parse_rebar_lock(text: str) -> RebarLock:
    """Hex packages of a ``rebar.lock`` in any format rebar3 has written.

    1.1.0+/1.2.0: ``{"1.2.0", [Entries]}.`` then ``[{pkg_hash, ...}, ...].``;
    oldest: a bare ``[Entries].`` with no checksums at all.
    """
    parser = _ErlangParser(text, _ERLANG_TOKENS, "rebar.lock")
    terms = parser.consult()
    hashes: dict[str, dict[str, bytes]] = {}
    match terms:
        case [Tup((str(), list(entries))), *attrs]:
            hashes = _rebar_hashes(parser, attrs[0] if attrs else [])
        case [list(entries)]:
            pass
        case _:
            raise parser.error(1, 'expected {"VSN", [Deps]}. or [Deps].')
    lock = RebarLock()
    for entry in entries:
        _add_rebar_entry(parser, lock, entry, hashes)
    return lock


def _add_rebar_entry(
    parser: _Parser, lock: RebarLock, entry: Term, hashes: dict[str, dict[str, bytes]]
) -> None:
    """Sort one ``{App, Source, Level}`` into packages or skipped."""
    match entry:
        case Tup((str(app), Tup((Atom("pkg"), str(name), str(version), *_)), *_)):
            inner = hashes.get("pkg_hash", {}).get(app)
            outer = hashes.get("pkg_hash_ext", {}).get(app)
            lock.packages.append(LockedPackage(name, version, "hexpm", outer, inner, app))
        case Tup((str(app), Tup((Atom(kind), *rest)), *_)):
            lock.skipped.append((app, _skip_reason(kind, tuple(rest))))
        case Tup(_, line):
            raise parser.error(line, 'expected {<<"app">>, {pkg, Name, Vsn}, Level}')
        case _:
            raise parser.error(1, f"lock entry is not a tuple: {entry!r}")


def _rebar_hashes(parser: _Parser, attrs: Term) -> dict[str, dict[str, bytes]]:
    """``[{pkg_hash, [{App, Hex}]}, {pkg_hash_ext, [...]}]`` as kind -> app -> bytes."""
    if not isinstance(attrs, list):
        raise parser.error(1, "expected [{pkg_hash, [...]}, ...] after the lock entries")
    hashes: dict[str, dict[str, bytes]] = {}
    for attr in attrs:
        match attr:
            case Tup((Atom(kind), list(pairs)), line):
                hashes[kind] = {app: h for app, h in _hash_pairs(parser, pairs, line)}
            case Tup(_, line):
                raise parser.error(line, "expected {pkg_hash, [{App, Hash}]}")
            case _:
                raise parser.error(1, f"expected {{pkg_hash, [...]}}, got {attr!r}")
    return hashes


def _hash_pairs(parser: _Parser, pairs: list[Term], line: int) -> list[tuple[str, bytes]]:
    result: list[tuple[str, bytes]] = []
    for pair in pairs:
        match pair:
            case Tup((str(app), hex_digest), pair_line):
                result.append((app, _sha256(parser, hex_digest, pair_line, app)))
            case _:
                raise parser.error(line, f'expected {{<<"app">>, <<"HASH">>}}, got {pair!r}')
    return result


def parse_lockfile(path_name: str, text: str) -> Lock:
    """Parse by file name (``mix.lock`` / ``rebar.lock``), else sniff: ``%{`` is mix."""
    name = PurePath(path_name).name
    if name == "mix.lock":
        return parse_mix_lock(text)
    if name == "rebar.lock":
        return parse_rebar_lock(text)
    if text.lstrip().startswith("%{"):
        return parse_mix_lock(text)
    return parse_rebar_lock(text)
