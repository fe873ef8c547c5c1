"""Human-friendly sizes and durations for config values and CLI flags.

Operators write ``max_size = "20GiB"`` or ``--older-than 30d``; everything
inside hexproxy works in bytes and seconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NUMBER_UNIT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(value: str | int | float) -> int:
    """Bytes from ``1048576``, ``"512MiB"``, ``"20GB"``; ValueError otherwise."""
    return int(_parse(value, _SIZE_UNITS, "size", "512MiB or 20GB"))


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``300``, ``"90s"``, ``"5m"``, ``"12h"``, ``"30d"``; ValueError otherwise."""
    return float(_parse(value, _DURATION_UNITS, "duration", "30s, 5m, 12h or 7d"))


def _parse(
    value: str | int | float, units: Mapping[str, int | float], what: str, examples: str
) -> int | float:
    """A plain number as it is, or NUMBER UNIT scaled by ``units``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a {what}, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{what} must not be negative, got {value!r}")
        return value
    match = _NUMBER_UNIT.fullmatch(value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in units:
        raise ValueError(f"expected a {what} such as {examples}, got {value!r}")
    return float(match.group(1)) * units[unit]


def format_size(size: int) -> str:
    """Short binary-unit size for humans: ``1.5 MiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """Short duration for humans, in the largest whole unit: ``45s``, ``5m``, ``3h``, ``2d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
