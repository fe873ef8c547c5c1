"""The Hex installer files (``mix local.hex`` / ``mix local.rebar``) under ``/installs/``.

Pure: ``catalog`` is the CSV files (lines, verification), ``builds`` which build a
client installs and what a build's path says. Warming them is ``airgap``'s job.
"""

from .builds import (
    TOOLS,
    BuildRef,
    Target,
    build_path,
    csv_name,
    parse_build,
    parse_target,
    select,
    sha512_for,
)
from .catalog import (
    CSV_NAMES,
    ELIXIR_INSTALLS_PUBLIC_KEY_PEM,
    SIGNATURE_REQUIRED,
    CsvLine,
    parse_csv,
    verify_csv,
)

__all__ = [
    "CSV_NAMES",
    "ELIXIR_INSTALLS_PUBLIC_KEY_PEM",
    "SIGNATURE_REQUIRED",
    "TOOLS",
    "BuildRef",
    "CsvLine",
    "Target",
    "build_path",
    "csv_name",
    "parse_build",
    "parse_csv",
    "parse_target",
    "select",
    "sha512_for",
    "verify_csv",
]
