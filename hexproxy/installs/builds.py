"""Which build ``mix local.hex`` / ``mix local.rebar`` installs, and where it lives.

A client picks a line of its CSV (``catalog``) by its Elixir version and, from
1.19, its OTP release, then downloads the file that line names. The proxy runs
the same choice to warm a cache, and reads a requested build's path back to the
CSV line that must list it. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..registry.versions import InvalidVersion, Version
from .catalog import OTP_RELEASE, CsvLine

TOOLS = ("hex", "rebar3")

_BUILD = re.compile(
    r"\A(?P<elixir>[0-9][0-9A-Za-z.+-]*)/(?P<tool>hex|rebar3|rebar)-"
    r"(?P<version>[0-9][0-9A-Za-z.+-]*?)(?:-otp-(?P<otp>[0-9]{1,3}))?(?P<ez>\.ez)?\Z"
)


@dataclass(frozen=True, slots=True)
class Target:
    """A client to prepare for: an Elixir version and, optionally, its OTP release."""

    elixir: Version
    otp: str | None = None

    @property
    def modern(self) -> bool:
        """Elixir 1.19 and later: unsigned ``hex.csv`` and ``-otp-N`` build names."""
        return (self.elixir.major, self.elixir.minor) >= (1, 19)

    def __str__(self) -> str:
        return f"{self.elixir}/{self.otp}" if self.otp else str(self.elixir)


@dataclass(frozen=True, slots=True)
class BuildRef:
    """What a build file's path says about it: which CSV line must name it."""

    tool: str
    elixir: str
    version: str
    otp: str | None

    @property
    def csv_name(self) -> str:
        if self.tool == "hex":
            return "hex.csv" if self.otp else "hex-1.x.csv"
        if self.tool == "rebar3":
            return "rebar.csv" if self.otp else "rebar3-1.x.csv"
        return "rebar-1.x.csv"


def parse_target(text: str) -> Target:
    """``ELIXIR[/OTP]`` as given to ``hexproxy warm --installs``; ValueError if malformed."""
    elixir, _, otp = text.strip().partition("/")
    try:
        version = Version.parse(elixir.removeprefix("v"))
    except InvalidVersion as exc:
        raise ValueError(f"--installs {text!r}: {exc}") from None
    if otp and not OTP_RELEASE.match(otp):
        raise ValueError(f"--installs {text!r}: OTP release must be a major number like 27")
    return Target(version, otp or None)


def select(lines: list[CsvLine], target: Target) -> tuple[CsvLine, str] | None:
    """The line Mix would install for ``target`` and the Elixir directory it names."""
    for line in reversed(lines):
        if line.otp and target.otp and int(line.otp) > int(target.otp):
            continue
        for elixir in line.elixirs:
            if Version.parse(elixir) <= target.elixir:
                return line, elixir
    return None


def csv_name(tool: str, target: Target) -> str:
    if tool == "hex":
        return "hex.csv" if target.modern else "hex-1.x.csv"
    return "rebar.csv" if target.modern else "rebar3-1.x.csv"


def build_path(tool: str, target: Target, line: CsvLine, elixir_dir: str) -> str:
    """The path (under ``/installs/``) of the build Mix downloads for this line."""
    suffix = ".ez" if tool == "hex" else ""
    if target.modern:
        if line.otp is None:
            raise ValueError(f"{csv_name(tool, target)} line {line.version} has no OTP release")
        return f"{elixir_dir}/{tool}-{line.version}-otp-{line.otp}{suffix}"
    return f"{elixir_dir}/{tool}-{line.version}{suffix}"


def parse_build(relative: str) -> BuildRef | None:
    """``1.18.4/hex-2.2.1.ez`` and friends; None for anything that is not a build file."""
    m = _BUILD.match(relative)
    if m is None or (m["tool"] == "hex") != bool(m["ez"]):
        return None
    return BuildRef(m["tool"], m["elixir"], m["version"], m["otp"])


def sha512_for(lines: list[CsvLine], ref: BuildRef) -> bytes | None:
    """The sha512 the CSV gives for the build ``ref`` names, if a line names it."""
    for line in lines:
        if line.version == ref.version and ref.elixir in line.elixirs and line.otp == ref.otp:
            return line.sha512
    return None
