#!/usr/bin/env bash
# Builds both .deb packages into target/debian/ (installs cargo-deb first when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deb >/dev/null 2>&1; then
  cargo install cargo-deb --locked
fi
profile="${HOSTPLANE_DEB_PROFILE:-release}"
cargo build --profile "$profile" -p hostplane-coordinator -p hostplane-agent
for package in hostplane-coordinator hostplane-agent; do
  cargo deb --no-build --profile "$profile" -p "$package"
done
ls -1 target/debian/*.deb
