"""The organization authorization rule as a table, the grants it reads, and key hashing."""

from __future__ import annotations

import hashlib
import hmac
import subprocess

import pytest

from hexproxy.config import load_config
from hexproxy.errors import ConfigError
from hexproxy.orgs import Action, Facts, Grants, Keyring, Windows, decide, is_listed, listed_hash

W = Windows(auth_ttl=300, offline_grace=86400)
A = Action


def f(
    cred: bool = True,
    cached: bool = True,
    fresh: bool = True,
    age: float | None = None,
    offline: bool = False,
    listed: bool = False,
    down: bool = False,
) -> Facts:
    return Facts(cred, cached, fresh, age, offline=offline, listed=listed, upstream_down=down)


# (what, facts, action). age: seconds since upstream accepted the credential for the org,
# None if it never did (or refused it since).
TABLE = [
    ("no credential, nothing cached", f(cred=False, cached=False, fresh=False), A.REFUSE),
    ("no credential, cached, fresh", f(cred=False), A.REFUSE),
    ("no credential, offline", f(cred=False, offline=True, listed=True), A.REFUSE),
    ("no credential, upstream down", f(cred=False, age=1, down=True), A.REFUSE),
    ("new credential, cached", f(), A.ASK),
    ("accepted just now, cached", f(age=0), A.SERVE),
    ("accepted within auth_ttl", f(age=299), A.SERVE),
    ("accepted auth_ttl ago", f(age=300), A.ASK),
    ("accepted, cached but stale", f(fresh=False, age=10), A.ASK),
    ("accepted, not cached", f(cached=False, fresh=False, age=10), A.ASK),
    ("down, accepted within grace", f(age=3600, down=True), A.SERVE_STALE),
    ("down, accepted, stale copy", f(fresh=False, age=3600, down=True), A.SERVE_STALE),
    ("down, accepted grace ago", f(age=86400, down=True), A.UNCONFIRMED),
    ("down, never accepted", f(down=True), A.UNCONFIRMED),
    ("down, accepted, not cached", f(cached=False, age=1, down=True), A.UNCONFIRMED),
    ("down, listed but online", f(listed=True, down=True), A.UNCONFIRMED),
    ("offline, listed, cached", f(offline=True, listed=True), A.SERVE),
    ("offline, listed, not cached", f(cached=False, offline=True, listed=True), A.NOT_CACHED),
    ("offline, not listed", f(offline=True), A.NOT_LISTED),
    ("offline, accepted before", f(age=1, offline=True), A.NOT_LISTED),
]


@pytest.mark.parametrize(("what", "facts", "action"), TABLE, ids=[row[0] for row in TABLE])
def test_decision_table(what: str, facts: Facts, action: Action) -> None:
    assert decide(facts, W) is action


def test_zero_windows_never_trust_upstream_s_past_word() -> None:
    zero = Windows(auth_ttl=0, offline_grace=0)
    assert decide(f(age=0), zero) is A.ASK
    assert decide(f(age=0, down=True), zero) is A.UNCONFIRMED


def test_grants_are_per_credential_and_organization() -> None:
    grants = Grants()
    grants.accept(b"a", "acme", 100.0)
    assert grants.age(b"a", "acme", 160.0) == 60.0
    assert grants.age(b"a", "globex", 160.0) is None
    assert grants.age(b"b", "acme", 160.0) is None
    grants.accept(b"a", "acme", 150.0)
    assert grants.age(b"a", "acme", 160.0) == 10.0
    grants.refuse(b"a", "acme")
    assert grants.age(b"a", "acme", 160.0) is None


def test_grants_stay_bounded_dropping_the_oldest() -> None:
    grants = Grants(max_entries=3)
    for i in range(5):
        grants.accept(bytes([i]), "acme", float(i))
    assert len(grants) == 3
    assert grants.age(bytes([0]), "acme", 10.0) is None
    assert grants.age(bytes([4]), "acme", 10.0) == 6.0


def test_keyring_keeps_only_a_keyed_digest() -> None:
    key = "c0ffee0acme0read0key0000000000aa"
    one, two = Keyring({}, secret=b"1" * 32), Keyring({}, secret=b"2" * 32)
    first = one.credential(key)
    assert first is not None
    assert first.digest == hmac.new(b"1" * 32, key.encode(), "sha256").digest()
    assert first == one.credential(key)  # same process: same digest
    assert first != two.credential(key)  # another process's secret: unrelated
    assert key not in repr(first) and key not in str(first)
    assert one.credential(None) is None and one.credential("  ") is None


def test_listed_hash_is_bound_to_the_organization() -> None:
    key = "c0ffee0acme0read0key0000000000aa"
    value = listed_hash("acme", key)
    expected = hmac.new(b"hexproxy org key for acme", key.encode(), hashlib.sha256).hexdigest()
    assert value == "hmac-sha256:" + expected
    assert listed_hash("globex", key) != value
    assert is_listed("acme", key, ["hmac-sha256:" + "0" * 64, value])
    assert not is_listed("globex", key, [value])
    assert not is_listed("acme", key + "x", [value])
    keyring = Keyring({"acme": (value,), "globex": ("hmac-sha256:" + "1" * 64,)})
    credential = keyring.credential(key)
    assert credential is not None and credential.listed_for == {"acme"}


def test_listed_hash_matches_the_documented_openssl_command() -> None:
    key = "c0ffee0acme0read0key0000000000aa"
    try:
        done = subprocess.run(
            ["openssl", "dgst", "-sha256", "-hmac", "hexproxy org key for acme"],
            input=key.encode(),
            capture_output=True,
            check=True,
            timeout=30,
        )
    except FileNotFoundError:
        pytest.skip("openssl is not installed")
    assert done.stdout.decode().split()[-1] == listed_hash("acme", key).removeprefix("hmac-sha256:")


def test_org_keys_from_toml_and_environment() -> None:
    value = "hmac-sha256:" + "a" * 64
    from_env = load_config(None, {"HEXPROXY_ORGS_KEYS": f"acme={value},{value}; globex={value}"})
    assert from_env.orgs.keys == {"acme": (value, value), "globex": (value,)}
    from_toml = load_config(None, {}, {("orgs", "keys"): {"acme": [value]}})
    assert from_toml.orgs.keys == {"acme": (value,)}


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"acme": ["c0ffee0acme0read0key0000000000aa"]}, "hmac-sha256"),  # a key, not a hash
        ({"Not An Org": ["hmac-sha256:" + "a" * 64]}, "not an organization name"),
        ({"hexpm": ["hmac-sha256:" + "a" * 64]}, "not an organization name"),
        ({"acme": "hmac-sha256:" + "a" * 64}, "list of key hashes"),
        ("acme", "ORG=HASH"),
    ],
)
def test_bad_org_keys_name_the_key(keys: object, named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(None, {}, {("orgs", "keys"): keys})
    assert "[orgs] keys" in raised.value.message and named in raised.value.message
    # A value that looked like a key is never echoed whole.
    assert "c0ffee0acme0read0key0000000000aa" not in raised.value.message
