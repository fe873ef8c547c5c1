"""hex.pm organizations through the proxy, without leaking one team's packages to another.

``credentials`` keeps clients' keys as keyed hashes; ``grants`` remembers what
upstream accepted and holds the (pure) authorization decision; ``asking`` makes the
credentialed requests upstream; ``store`` holds the verified files; ``policy`` puts
them together into what each request is served; ``source`` is an organization through
one key, for ``warm``.
"""

from .credentials import Credential, Keyring, is_listed, listed_hash
from .grants import Action, Facts, Grants, Windows, decide
from .policy import OrgRepos, Served, org_repos_beside
from .source import OrgSource

__all__ = [
    "Action",
    "Credential",
    "Facts",
    "Grants",
    "Keyring",
    "OrgRepos",
    "OrgSource",
    "Served",
    "Windows",
    "decide",
    "is_listed",
    "listed_hash",
    "org_repos_beside",
]
