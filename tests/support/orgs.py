"""Two hex.pm organizations for the tests, and keys for them.

``acme`` has ``secret`` (which needs the public ``alpha``, as an organization's package
on a public one does: its dependency carries ``repository: "hexpm"``) and ``vault``;
``globex`` has ``widget``. The keys are what clients send as ``authorization``: raw for
rebar3 and for mix with an untrusted exchange, ``Bearer ...`` for mix's OAuth tokens.
"""

from __future__ import annotations

from tests.fakes.hex_repo import FakeHexRepo
from tests.support.keys import test_private_key
from tests.support.repo import DepSpec, PackageSpec, build_org_repo

ACME = "acme"
GLOBEX = "globex"
ACME_KEY = "c0ffee0acme0read0key0000000000aa"  # hex.pm keys are 32 hex digits
ACME_TOKEN = "Bearer acme.oauth.token.for.ci.run.1"
GLOBEX_KEY = "c0ffee0globex0read0key00000000bb"
UNKNOWN_KEY = "c0ffee0nobody0knows0me0000000000"
ALL_SECRETS = (ACME_KEY, ACME_TOKEN, GLOBEX_KEY, UNKNOWN_KEY)


def acme_specs() -> list[PackageSpec]:
    alpha = DepSpec("alpha", "~> 1.0", repository="hexpm")
    return [
        PackageSpec("secret", "1.0.0", [alpha]),
        PackageSpec("secret", "1.1.0", [alpha]),
        PackageSpec("vault", "0.2.0", files={"README.md": b"vault\n" * 3000}),
    ]


def globex_specs() -> list[PackageSpec]:
    return [PackageSpec("widget", "0.1.0")]


def org_files() -> dict[str, bytes]:
    files = build_org_repo(acme_specs(), test_private_key(), ACME)
    files.update(build_org_repo(globex_specs(), test_private_key(), GLOBEX))
    return files


def add_orgs(repo: FakeHexRepo) -> None:
    """Publish both organizations on ``repo`` and give out their keys."""
    repo.files.update(org_files())
    repo.grant(ACME_KEY, ACME)
    repo.grant(ACME_TOKEN, ACME)
    repo.grant(GLOBEX_KEY, GLOBEX)
