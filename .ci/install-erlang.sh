#!/bin/sh
# Install Erlang/OTP and rebar3 from Debian, just enough for the `clients` tests:
# `rebar3 get-deps` and `rebar3 compile` of a project with Hex dependencies over
# plain http on 127.0.0.1.
#
# Idempotent and quiet: when a working rebar3 is already on PATH it exits at once.
#
# Why not `apt-get install rebar3`? Debian's rebar3 package depends on
# erlang-common-test, -debugger, -observer, -reltool and -dialyzer, which drag in
# erlang-wx and with it GTK and WebKit: 105 packages (~50 MB download). rebar3 itself
# is a single self-contained escript; what it needs at run time is the OTP
# applications it starts (crypto, asn1, public_key, ssl, inets) plus the compiler
# in erlang-base. So we install those (10 packages with what inets pulls in: ~15 MB,
# ~10 s including apt-get update) and take the escript out of the Debian rebar3 .deb
# (same bytes as /usr/bin/rebar3, version 3.19.0 on bookworm).
# Set HEXPROXY_FULL_REBAR3=1 to install the complete Debian package instead.
#
# Exit status: 0 when `rebar3` works afterwards, non-zero otherwise.
set -eu

REBAR3_BIN=/usr/local/bin/rebar3
ERLANG_PACKAGES="erlang-base erlang-crypto erlang-asn1 erlang-public-key erlang-ssl erlang-inets"

log() { echo "install-erlang: $*" >&2; }

# Run a command with its output captured; show the output only when it fails.
quiet() {
    out=$("$@" 2>&1) || { status=$?; echo "$out" >&2; log "failed ($status): $*"; return "$status"; }
}

# A real capability probe, not just `command -v`: `rebar3 version` starts the
# applications rebar3 needs for Hex (it aborts with "Rebar dependency X could not
# be loaded" when one is missing), and the erl line checks the compiler is there.
rebar3_works() {
    command -v rebar3 >/dev/null 2>&1 || return 1
    rebar3 version >/dev/null 2>&1 || return 1
    erl -noshell -eval \
        'ok = application:load(compiler), ok = application:load(inets), halt(0).' \
        >/dev/null 2>&1
}

if rebar3_works; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    log "rebar3 is missing and this script needs root to apt-get install it"
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log "installing Erlang/OTP and rebar3 from Debian"
quiet apt-get update -qq

if [ "${HEXPROXY_FULL_REBAR3:-}" = "1" ]; then
    quiet apt-get install -y -qq --no-install-recommends rebar3
else
    # shellcheck disable=SC2086  # the package list is meant to be split
    quiet apt-get install -y -qq --no-install-recommends $ERLANG_PACKAGES
    if ! command -v rebar3 >/dev/null 2>&1; then
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        # apt-get download drops privileges to _apt, which must be able to write here.
        chmod 0755 "$tmp"
        chown _apt "$tmp" 2>/dev/null || true
        (cd "$tmp" && quiet apt-get download -qq rebar3)
        dpkg-deb --fsys-tarfile "$tmp"/rebar3_*.deb | tar -xO ./usr/bin/rebar3 >"$tmp/rebar3"
        install -m 0755 "$tmp/rebar3" "$REBAR3_BIN"
    fi
fi

if ! rebar3_works; then
    log "rebar3 still does not work after the install"
    rebar3 version >&2 || true
    exit 1
fi
log "$(rebar3 version)"
