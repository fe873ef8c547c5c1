"""``[hosted]`` and ``[[hosted.repos]]``: parsing, validation, and the documented example."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from hexproxy.config import HostedRepoConfig, load_config
from hexproxy.errors import ConfigError
from hexproxy.hosted.keys import digest_of
from tests.support.fixtures import REPO_ROOT

DIGEST = digest_of("some key")


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> object:
    path = tmp_path / "c.toml"
    path.write_text(f'[cache]\ndir = "{tmp_path / "cache"}"\n' + text)
    return load_config(path, {"HOME": str(tmp_path), **(env or {})})


def test_repos_from_the_file(tmp_path: Path) -> None:
    upper = "sha256:" + DIGEST.removeprefix("sha256:").upper()  # hex digits in any case
    config = load(
        tmp_path,
        f'[hosted]\ndir = "{tmp_path / "h"}"\nmax_tarball_size = "1MiB"\n'
        f'[[hosted.repos]]\nname = "acme"\nwrite_keys = ["{upper}"]\n'
        f'[[hosted.repos]]\nname = "tools"\nread_keys = ["{DIGEST}"]\nprivate_key = "/k.pem"\n',
    )
    hosted = config.hosted  # type: ignore[attr-defined]
    assert hosted.max_tarball_size == 1 << 20
    assert hosted.repos == (
        HostedRepoConfig("acme", write_keys=(DIGEST,)),
        HostedRepoConfig("tools", private_key="/k.pem", read_keys=(DIGEST,)),
    )


def test_default_dir_is_data_not_cache(tmp_path: Path) -> None:
    config = load_config(None, {"HOME": "/home/u"})
    assert config.hosted.dir == "/home/u/.local/share/hexproxy/hosted"
    config = load_config(None, {"HOME": "/home/u", "XDG_DATA_HOME": "/data"})
    assert config.hosted.dir == "/data/hexproxy/hosted"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[[hosted.repos]]\nname = "Acme"\n', "name must be lowercase"),
        ('[[hosted.repos]]\nname = "hexpm"\n', "mirrored repository"),
        ('[[hosted.repos]]\nname = "a"\n[[hosted.repos]]\nname = "a"\n', "configured twice"),
        ('[[hosted.repos]]\nname = "a"\nwrite_keys = ["plain-key"]\n', "sha256"),
        ('[[hosted.repos]]\nname = "a"\nwrite_keys = "x"\n', "list"),
        ('[[hosted.repos]]\nname = "a"\ncolour = "x"\n', "unknown key 'colour'"),
        ("[[hosted.repos]]\nprivate_key = 'x'\n", "needs a name"),
        ('[hosted]\nmax_docs_size = "0"\n', "max_docs_size"),
    ],
)
def test_invalid_repos_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    assert fragment in raised.value.message


def test_hosted_dir_may_not_overlap_the_cache(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="inside the cache"):
        load(
            tmp_path,
            f'[hosted]\ndir = "{tmp_path / "cache" / "h"}"\n[[hosted.repos]]\nname = "a"\n',
        )


def test_repos_cannot_come_from_the_environment(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file"):
        load(tmp_path, "", {"HEXPROXY_HOSTED_REPOS": "acme"})


def test_example_documents_every_repo_key() -> None:
    text = (REPO_ROOT / "config.example.toml").read_text()
    block = text[text.index("# [[hosted.repos]]") :].split("\n\n")[0]  # to the blank line
    uncommented = "\n".join(
        line[2:]
        for line in block.splitlines()
        if line.startswith("# ") and not line.startswith("# # ")
    )
    table = tomllib.loads(uncommented)["hosted"]["repos"][0]
    assert set(table) == {f.name for f in dataclasses.fields(HostedRepoConfig)}
    assert re.search(r"hexproxy hosted new-key", block)
