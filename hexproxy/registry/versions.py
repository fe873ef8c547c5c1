"""Elixir ``Version`` semantics as Hex uses them: SemVer versions and requirements.

Cache warming has to guess which versions ``mix deps.get`` or rebar3 will pick, so
requirement matching follows Elixir's ``lib/elixir/lib/version.ex`` rule by rule
(``allow_pre: false`` is what Hex passes). Two places deliberately differ from it:

* ``and`` binds tighter than ``or`` (Hex's solver and the Elixir docs say so; the
  Elixir matchspec builder folds clauses left to right).
* Pre-release identifiers compare by SemVer precedence everywhere; Elixir's ``>`` and
  ``<`` clauses compare the *length* of the pre-release lists first, a quirk no
  published package should depend on.

Pure: this module only takes strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "InvalidRequirement",
    "InvalidVersion",
    "Requirement",
    "Version",
    "all_matches",
    "best_match",
    "parse_requirement",
]

_IDENT = r"[0-9A-Za-z-]+"
_DOTTED = rf"{_IDENT}(?:\.{_IDENT})*"
_NUM = r"(?:0|[1-9][0-9]*)"
# [0-9] rather than \d: \d would accept non-ASCII digits that int() then converts.
_VERSION_RE = re.compile(
    rf"(?P<major>{_NUM})\.(?P<minor>{_NUM})(?:\.(?P<patch>{_NUM}))?"
    rf"(?:-(?P<pre>{_DOTTED}))?(?:\+(?P<build>{_DOTTED}))?"
)

PreIdent = int | str


class InvalidVersion(ValueError):
    """A string is not a SemVer 2.0 version."""


class InvalidRequirement(ValueError):
    """A requirement string does not follow Elixir's requirement grammar."""


@dataclass(frozen=True, eq=False)
class Version:
    """A parsed SemVer version; compares by precedence, so ``+build`` is ignored."""

    major: int
    minor: int
    patch: int
    pre: tuple[PreIdent, ...] = ()
    build: tuple[str, ...] = ()
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse strict ``MAJOR.MINOR.PATCH[-pre][+build]``; raise InvalidVersion."""
        version, has_patch = _parse_loose(text)
        if not has_patch:
            raise InvalidVersion(f"invalid version {text!r}: missing patch number")
        return version

    @property
    def is_prerelease(self) -> bool:
        return bool(self.pre)

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        # A release (flag 1) sorts above its pre-releases (flag 0). Within a
        # pre-release, numeric identifiers sort below alphanumeric ones, and tuple
        # comparison already makes a shorter prefix lower.
        pre = tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in self.pre)
        return (self.major, self.minor, self.patch, 0 if self.pre else 1, pre)

    def __str__(self) -> str:
        # The original text round-trips exactly (registries list versions as text);
        # a hand-built Version without text is rendered canonically.
        if self.text:
            return self.text
        pre = "-" + ".".join(map(str, self.pre)) if self.pre else ""
        build = "+" + ".".join(self.build) if self.build else ""
        return f"{self.major}.{self.minor}.{self.patch}{pre}{build}"

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()

    def __le__(self, other: Version) -> bool:
        return self._key() <= other._key()

    def __gt__(self, other: Version) -> bool:
        return self._key() > other._key()

    def __ge__(self, other: Version) -> bool:
        return self._key() >= other._key()


def _parse_loose(text: str) -> tuple[Version, bool]:
    """Parse a version whose patch may be missing (only ``~>`` allows that).

    Returns the version (patch 0 when absent) and whether the patch was given.
    """
    m = _VERSION_RE.fullmatch(text)
    if m is None:
        raise InvalidVersion(f"invalid version {text!r}: not MAJOR.MINOR.PATCH[-pre][+build]")
    pre = tuple(_pre_ident(text, part) for part in m["pre"].split(".")) if m["pre"] else ()
    build = tuple(m["build"].split(".")) if m["build"] else ()
    patch = m["patch"]
    version = Version(int(m["major"]), int(m["minor"]), int(patch or 0), pre, build, text)
    return version, patch is not None


def _pre_ident(text: str, part: str) -> PreIdent:
    if not part.isdigit():
        return part
    if len(part) > 1 and part[0] == "0":
        raise InvalidVersion(
            f"invalid version {text!r}: numeric identifier {part!r} has a leading zero"
        )
    return int(part)


@dataclass(frozen=True)
class Clause:
    """One ``OP VERSION`` comparison; ``upper`` is the exclusive bound of ``~>``."""

    op: str
    operand: Version
    upper: Version | None = None

    def matches(self, version: Version, allow_pre: bool) -> bool:
        """Elixir's per-clause rule: ``==``/``!=``/``<``/``<=`` never filter
        pre-releases; ``>``/``>=``/``~>`` only admit one when the operand is one."""
        operand = self.operand
        if self.op == "==":
            return version == operand
        if self.op == "!=":
            return version != operand
        if self.op == "<":
            return version < operand
        if self.op == "<=":
            return version <= operand
        if not allow_pre and version.is_prerelease and not operand.is_prerelease:
            return False
        if self.op == ">":
            return version > operand
        if self.op == ">=":
            return version >= operand
        assert self.upper is not None  # only "~>" is left, and it always has one
        return operand <= version < self.upper


@dataclass(frozen=True)
class Requirement:
    """A parsed requirement: ``or`` of ``and``-groups of clauses. ``str()`` is the source."""

    source: str
    alternatives: tuple[tuple[Clause, ...], ...]

    def matches(self, version: Version | str, *, allow_pre: bool = False) -> bool:
        """Whether ``version`` satisfies this requirement.

        ``allow_pre=False`` (Hex's setting) keeps pre-releases out of ``>``, ``>=``
        and ``~>`` clauses unless that clause's operand is a pre-release; with
        ``allow_pre=True`` every clause compares by plain SemVer ordering.
        """
        if isinstance(version, str):
            version = Version.parse(version)
        return any(
            all(clause.matches(version, allow_pre) for clause in group)
            for group in self.alternatives
        )

    def __str__(self) -> str:
        return self.source


_OPERATORS = (">=", "<=", "~>", "==", "!=", ">", "<", "!")
_TOKEN_RE = re.compile(r"\s*(?:(>=|<=|~>|==|!=|>|<|!)|([^\s<>=~!]+))")


def parse_requirement(text: str) -> Requirement:
    """Parse an Elixir requirement such as ``~> 1.2 or >= 2.0.0 and < 3.0.0``.

    Raises InvalidRequirement naming the text and the problem.
    """
    tokens = _tokenize_requirement(text)
    if not tokens:
        raise _invalid(text, "empty")
    groups: list[tuple[Clause, ...]] = []
    group: list[Clause] = []
    pos = 0
    while True:
        clause, pos = _parse_clause(text, tokens, pos)
        group.append(clause)
        if pos == len(tokens):
            break
        joiner = tokens[pos]
        if joiner not in ("and", "or"):
            raise _invalid(text, f"expected 'and' or 'or', got {joiner!r}")
        if joiner == "or":
            groups.append(tuple(group))
            group = []
        pos += 1
    groups.append(tuple(group))
    return Requirement(text, tuple(groups))


def _invalid(text: str, reason: str) -> InvalidRequirement:
    return InvalidRequirement(f"invalid requirement {text!r}: {reason}")


def _tokenize_requirement(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    stripped_end = len(text.rstrip())
    while pos < stripped_end:
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            bad = text[pos:stripped_end].lstrip()[:1]
            raise _invalid(text, f"unexpected {bad!r}")
        # Elixir lexes a lone "!" as the deprecated "!=".
        tokens.append("!=" if m[1] == "!" else m[1] or m[2])
        pos = m.end()
    return tokens


def _parse_clause(text: str, tokens: list[str], pos: int) -> tuple[Clause, int]:
    """Parse ``[OP] VERSION`` at ``tokens[pos]``; return the clause and next index."""
    op = "=="
    if pos < len(tokens) and tokens[pos] in _OPERATORS:
        op = tokens[pos]
        pos += 1
    if pos == len(tokens):
        raise _invalid(text, f"missing version after {tokens[pos - 1]!r}")
    operand = tokens[pos]
    if operand in _OPERATORS or operand in ("and", "or"):
        raise _invalid(text, f"expected a version, got {operand!r}")
    try:
        version, has_patch = _parse_loose(operand)
    except InvalidVersion as exc:
        raise _invalid(text, str(exc)) from None
    if op != "~>":
        if not has_patch:
            raise _invalid(text, f"only '~>' may omit the patch of {operand!r}")
        return Clause(op, version), pos + 1
    return Clause(op, version, _approximate_upper(version, has_patch)), pos + 1


def _approximate_upper(lower: Version, has_patch: bool) -> Version:
    # "-0" is the lowest possible pre-release, so "~>" never admits any
    # pre-release of its upper bound (e.g. "~> 2.1" excludes 3.0.0-rc.1).
    if has_patch:
        return Version.parse(f"{lower.major}.{lower.minor + 1}.0-0")
    return Version.parse(f"{lower.major + 1}.0.0-0")


def _matching(
    requirement: Requirement | str, versions: Iterable[str], allow_pre: bool, exclude: Iterable[str]
) -> list[Version]:
    """Parse and filter ``versions``; unparseable strings are skipped because one
    odd release in a registry must not stop warming the rest."""
    req = parse_requirement(requirement) if isinstance(requirement, str) else requirement
    excluded = set(exclude)
    found: list[Version] = []
    for text in versions:
        if text in excluded:
            continue
        try:
            version = Version.parse(text)
        except InvalidVersion:
            continue
        if req.matches(version, allow_pre=allow_pre):
            found.append(version)
    return found


def best_match(
    requirement: Requirement | str,
    versions: Iterable[str],
    *,
    allow_pre: bool = False,
    exclude: Iterable[str] = (),
) -> str | None:
    """The version a Hex client would pick, or None when nothing matches.

    With ``allow_pre=False`` a stable match is preferred over any pre-release (Hex's
    solver prioritizes stable versions); a pre-release is returned only when no
    stable version matches. ``exclude`` holds exact version strings to ignore.
    """
    found = _matching(requirement, versions, allow_pre, exclude)
    if not allow_pre:
        found = [v for v in found if not v.is_prerelease] or found
    return str(max(found)) if found else None


def all_matches(
    requirement: Requirement | str,
    versions: Iterable[str],
    *,
    allow_pre: bool = False,
    exclude: Iterable[str] = (),
) -> list[str]:
    """Every matching version, ascending by SemVer precedence."""
    return [str(v) for v in sorted(_matching(requirement, versions, allow_pre, exclude))]
