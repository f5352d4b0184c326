#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need when it is missing
# (Debian packages, cargo tools), then checks formatting, lints, and runs every test.
# Run as root on a Debian 12 machine. HOSTPLANE_SKIP_LXC=1 skips the LXC end-to-end suite
# explicitly (it then says so); nothing else is ever skipped quietly.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

# Debian packages the tests use: real nginx, MariaDB, PostgreSQL, an ACME server, LXC, tools.
packages=(nginx-light mariadb-server mariadb-client postgresql postgresql-client pebble lxc-templates rsync apt-cacher-ng
          openssl curl ca-certificates lxc debootstrap iproute2 dpkg-dev binutils lintian)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages (${missing[*]}) and not root: run this script as root" >&2
    exit 1
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Services must not start at install time; the tests start private instances themselves.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    remove_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "${remove_policy:-0}" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
# The package tests install from the archive, so the package lists must exist.
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
  apt-get update -qq
fi
# The test package used by the package tests must be absent before they run.
if dpkg-query -W -f='${Status}' hello 2>/dev/null | grep -q "install ok installed"; then
  apt-get remove -y -qq hello >/dev/null || true
fi

# A fresh clone builds everything once: incremental state would only take disk space.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
log "disk before the build: $(df -h --output=avail . | tail -1 | tr -d ' ') free"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "cargo test"
if command -v cargo-nextest >/dev/null 2>&1; then
  # Doc tests first, so the run closes with nextest's summary of every test.
  cargo test --workspace --doc --quiet
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
log "disk after the tests: $(df -h --output=avail . | tail -1 | tr -d ' ') free, target $(du -sh target | cut -f1)"
