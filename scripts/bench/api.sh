#!/usr/bin/env bash
# API read benchmark: wrk on loopback against an authenticated GET /api/v1/user/<id> and
# GET /api/v1/task?limit=50 with 10,000 tasks stored, and /healthz as the ceiling.
# Usage: scripts/bench/api.sh [connections] [seconds]. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
connections="${1:-64}"
seconds="${2:-10}"
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p hostplane-coordinator --bin hostplane-coordinator --example seed_tasks
binary=target/release/hostplane-coordinator
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

start() {
  "$binary" serve --data-dir "$work/data" --http-listen 127.0.0.1:0 --quic-listen 127.0.0.1:0 >"$work/out" 2>"$work/err" &
  pid=$!
  for _ in $(seq 100); do grep -q '^listening' "$work/out" 2>/dev/null && break; sleep 0.1; done
  url=$(sed -n 's/^listening http=\([^ ]*\).*/\1/p' "$work/out")
  [ -n "$url" ] || { cat "$work/err"; exit 1; }
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }

start
key=$(cat "$work/data/admin.key")
user=$(curl -fsS -H "x-api-key: $key" "$url/api/v1/user?username=admin" | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
stop
target/release/examples/seed_tasks "$work/data" "$user" 10000 >/dev/null
start

run() {
  local name=$1 path=$2
  shift 2
  local output
  output=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency "$@" "$url$path")
  local rps p99
  rps=$(echo "$output" | sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p')
  p99=$(echo "$output" | sed -n 's/^ *99% *\([0-9.]*[a-z]*\)/\1/p')
  if echo "$output" | grep -q "Non-2xx"; then echo "$name: some answers were not 2xx" >&2; echo "$output" >&2; exit 1; fi
  printf '| %s | %s | %s |\n' "$name" "$rps" "$p99"
}

echo "| request ($connections connections, ${seconds}s, wrk -t2) | requests/s | p99 |"
echo "|---|---|---|"
run "GET /healthz (ceiling)" /healthz
run "GET /api/v1/user/<id> (x-api-key)" "/api/v1/user/$user" -H "x-api-key: $key"
run "GET /api/v1/task?limit=50 (10,000 stored)" "/api/v1/task?limit=50" -H "x-api-key: $key"
echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); $(date -u +%Y-%m-%d)"
