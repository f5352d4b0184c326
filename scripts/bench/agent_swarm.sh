#!/usr/bin/env bash
# Agent channel benchmark: simulated agents (own certificate and QUIC connection each) against a
# real `hostplane-coordinator serve` process on loopback, each count first against a bare quinn +
# rustls mutual-TLS server for comparison, then the real `hostplane-agent run` in the release and
# release-small builds. Usage: scripts/bench/agent_swarm.sh [agent_swarm arguments], e.g.
# `--agents 1000,10000` (the default). Prints Markdown tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p hostplane-coordinator --bin hostplane-coordinator --example agent_swarm
cargo build --release -q -p hostplane-agent --bin hostplane-agent
cargo build --profile release-small -q -p hostplane-agent --bin hostplane-agent
exec target/release/examples/agent_swarm --bare \
  --agent-binary release=target/release/hostplane-agent \
  --agent-binary release-small=target/release-small/hostplane-agent \
  "$@"
