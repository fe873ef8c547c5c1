#!/bin/sh
# Install Debian's chromium for the status-page browser test (tests/browser).
#
# Idempotent and quiet: when a working `chromium` is already on PATH it exits at
# once; otherwise apt output is shown only if the install fails. The package is
# large (~100 MB with its libraries, a minute or two), which is why it is not in
# the base image and only CI, where CI=true makes that test mandatory, runs this.
#
# Exit status: 0 when `chromium --version` works afterwards, non-zero otherwise.
set -eu

log() { echo "install-chromium: $*" >&2; }

quiet() {
    out=$("$@" 2>&1) || { status=$?; echo "$out" >&2; log "failed ($status): $*"; return "$status"; }
}

if command -v chromium >/dev/null 2>&1 && chromium --version >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
log "installing chromium from Debian"
quiet $SUDO apt-get update -q
quiet $SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
chromium --version >/dev/null 2>&1 || { log "chromium is installed but does not run"; exit 1; }
log "$(chromium --version)"
