"""CLI glue for the air-gap commands: ``warm``, ``export``, ``import`` and ``orgs``.

The engines (``hexproxy.warm``, ``hexproxy.bundle``) know nothing of argparse or
terminals; these modules turn flags into their inputs and reports into output
and exit codes (0 done, 1 something failed or was refused, 2 bad input).
"""

from __future__ import annotations

from typing import Any

from . import bundle, orgs, warm


def register(sub: Any) -> None:
    """Add every command of this package to the ``hexproxy`` parser."""
    warm.register(sub)
    bundle.register(sub)
    orgs.register(sub)  # hexproxy orgs hash-key
