#!/usr/bin/env bash
# Agent work benchmark, real processes on loopback (release builds):
#  1. a MariaDB database of about SIZE MiB (default 1024) dumped through the whole path
#     (HTTP client <- coordinator <- QUIC <- agent <- mariadb-dump), SHA-256 included, against
#     `mariadb-dump > /dev/null` and `ssh 127.0.0.1 mariadb-dump > file` on the same database in
#     the same run, with the peak resident memory of the coordinator and the agent;
#  2. a package install task (`sl`) through the API against a bare `apt-get install` of it.
# Usage (as root): scripts/bench/agent_work.sh [SIZE_MIB] [ROUNDS]. Prints Markdown tables.
# It runs its own MariaDB on /run/mysqld/mysqld.sock (the agent's default): stop any other first.
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mib="${1:-1024}"
rounds="${2:-3}"
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }

need=()
for package in mariadb-server mariadb-client openssh-server openssh-client curl; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || need+=("$package")
done
if [ "${#need[@]}" -gt 0 ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
if [ -S /run/mysqld/mysqld.sock ]; then
  echo "a MariaDB server already listens on /run/mysqld/mysqld.sock; stop it first" >&2
  exit 1
fi

cargo build --release -q -p hostplane-coordinator -p hostplane-agent
coordinator=$PWD/target/release/hostplane-coordinator
agent=$PWD/target/release/hostplane-agent
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work" /run/mysqld/mysqld.sock
}
trap cleanup EXIT

# --- MariaDB, private, on the agent's default socket -----------------------------------------
mkdir -p /run/mysqld "$work/db"
chown mysql:mysql /run/mysqld "$work/db"
mariadb-install-db --no-defaults --user=mysql --datadir="$work/db" \
  --auth-root-authentication-method=socket --skip-test-db >/dev/null
mariadbd --no-defaults --user=mysql --datadir="$work/db" --socket=/run/mysqld/mysqld.sock \
  --skip-networking --innodb-buffer-pool-size=256M --log-error="$work/db.err" 2>/dev/null &
pids+=($!)
for _ in $(seq 300); do [ -S /run/mysqld/mysqld.sock ] && break; sleep 0.1; done
sql() { mariadb --no-defaults --socket=/run/mysqld/mysqld.sock -u root "$@"; }
# Rows of about 1 KiB of text each.
rows=$(( size_mib * 1024 * 1024 / 1000 ))
sql -e "CREATE DATABASE bench; CREATE TABLE bench.t (id INT PRIMARY KEY, body VARCHAR(1024)) ENGINE=InnoDB;"
batch=100000
for (( start=1; start<=rows; start+=batch )); do
  end=$(( start + batch - 1 )); [ "$end" -gt "$rows" ] && end=$rows
  sql bench -e "INSERT INTO bench.t SELECT seq, REPEAT(MD5(seq), 30) FROM seq_${start}_to_${end};"
done

dump_args=(--socket=/run/mysqld/mysqld.sock --user=root --protocol=socket --single-transaction
           --routines --events --skip-dump-date --default-character-set=utf8mb4 -- bench)

# --- sshd on 127.0.0.1:2222 with a key of its own ----------------------------------------------
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
chmod 600 "$work/authorized_keys"
mkdir -p /run/sshd
cat > "$work/sshd_config" <<EOF
ListenAddress 127.0.0.1:2222
HostKey $work/host_key
AuthorizedKeysFile $work/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
StrictModes no
PidFile $work/sshd.pid
EOF
/usr/sbin/sshd -D -f "$work/sshd_config" &
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/2222) 2>/dev/null && break; sleep 0.1; done

# --- coordinator (--dev: built-in Proxmox simulator) and an enrolled agent ---------------------
"$coordinator" serve --dev --data-dir "$work/coordinator" --http-listen 127.0.0.1:0 \
  --quic-listen 127.0.0.1:0 >"$work/coordinator.out" 2>"$work/coordinator.err" &
coordinator_pid=$!
pids+=($coordinator_pid)
for _ in $(seq 300); do grep -q '^listening' "$work/coordinator.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening http=\([^ ]*\).*/\1/p' "$work/coordinator.out")
[ -n "$url" ] || { cat "$work/coordinator.err" >&2; exit 1; }
key=$(cat "$work/coordinator/admin.key")
api() { curl -fsS -H "x-api-key: $key" -H 'content-type: application/json' "$@"; }
admin=$(api "$url/api/v1/user?username=admin" | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
instance=$(api -X POST "$url/api/v1/instance?wait=60" \
  -d "{\"user\":\"$admin\",\"template\":\"debian-12\",\"hostname\":\"bench\",\"cpu\":1,\"memory\":512,\"disk\":4}" \
  | sed -n 's/.*"instance":\([0-9]*\).*/\1/p')
token=$(api -X POST "$url/api/v1/instance/$instance/enrollment" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
"$agent" --state-dir "$work/agent" enroll --token "$token" >/dev/null
HOSTPLANE_LOG=warn "$agent" --state-dir "$work/agent" run 2>"$work/agent.err" &
agent_pid=$!
pids+=($agent_pid)
for _ in $(seq 300); do
  api "$url/api/v1/instance/$instance/agent" | grep -q '"connected":true' && break
  sleep 0.1
done

best() { sort -n | head -1; }
mib_s() { awk -v bytes="$1" -v seconds="$2" 'BEGIN { printf "%.0f", bytes / 1048576 / seconds }'; }
seconds_of() { local start end; start=$(date +%s.%N); "$@"; end=$(date +%s.%N); awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'; }

raw_bytes=$(mariadb-dump "${dump_args[@]}" | wc -c)
raw=$(for _ in $(seq "$rounds"); do seconds_of sh -c "mariadb-dump ${dump_args[*]} > /dev/null"; done | best)
ssh_command="ssh -q -i $work/client_key -p 2222 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1"
ssh_time=$(for _ in $(seq "$rounds"); do seconds_of sh -c "$ssh_command mariadb-dump ${dump_args[*]} > $work/ssh.sql"; done | best)
api_path="$url/api/v1/instance/$instance/database/bench?action=dump&engine=mariadb"
# CPU seconds (user + system) a process has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / hz }' "/proc/$1/stat"; }
coordinator_cpu=$(cpu "$coordinator_pid")
agent_cpu=$(cpu "$agent_pid")
api_time=$(for _ in $(seq "$rounds"); do
  curl -fsS -H "x-api-key: $key" -o /dev/null -w '%{time_total}\n' "$api_path"
done | best)
coordinator_cpu=$(awk -v a="$coordinator_cpu" -v b="$(cpu "$coordinator_pid")" -v r="$rounds" 'BEGIN { printf "%.2f", (b - a) / r }')
agent_cpu=$(awk -v a="$agent_cpu" -v b="$(cpu "$agent_pid")" -v r="$rounds" 'BEGIN { printf "%.2f", (b - a) / r }')
api_bytes=$(curl -fsS -H "x-api-key: $key" -D "$work/headers" "$api_path" | tee >(sha256sum | cut -d' ' -f1 > "$work/client.sha") | wc -c)
task=$(sed -n 's/^x-task-id: *\([^\r]*\).*/\1/ip' "$work/headers")
task_sha=$(api "$url/api/v1/task/$task" | sed -n 's/.*"sha256":"\([0-9a-f]*\)".*/\1/p')
[ "$task_sha" = "$(cat "$work/client.sha")" ] || { echo "SHA-256 mismatch: task $task_sha, client $(cat "$work/client.sha")" >&2; exit 1; }
zstd_time=$(curl -fsS -H "x-api-key: $key" -H 'accept-encoding: zstd' -o "$work/dump.zst" -w '%{time_total}\n' "$api_path")
zstd_bytes=$(stat -c %s "$work/dump.zst")
peak() { awk '/VmHWM/ { print $2 }' "/proc/$1/status"; }
coordinator_peak=$(peak "$coordinator_pid")
agent_peak=$(peak "$agent_pid")

echo "| dump of $(( raw_bytes / 1048576 )) MiB (best of $rounds) | seconds | MiB/s | vs raw |"
echo "|---|---|---|---|"
echo "| mariadb-dump > /dev/null (raw) | $raw | $(mib_s "$raw_bytes" "$raw") | 1.00x |"
echo "| ssh 127.0.0.1 mariadb-dump > file | $ssh_time | $(mib_s "$raw_bytes" "$ssh_time") | $(awk -v a="$raw" -v b="$ssh_time" 'BEGIN { printf "%.2fx", a / b }') |"
echo "| API → coordinator → QUIC → agent, SHA-256 checked | $api_time | $(mib_s "$api_bytes" "$api_time") | $(awk -v a="$raw" -v b="$api_time" 'BEGIN { printf "%.2fx", a / b }') |"
echo "| the same with Accept-Encoding: zstd ($(( zstd_bytes / 1048576 )) MiB sent) | $zstd_time | $(mib_s "$api_bytes" "$zstd_time") of SQL | $(awk -v a="$raw" -v b="$zstd_time" 'BEGIN { printf "%.2fx", a / b }') |"
echo
echo "Peak resident memory (VmHWM) after all dumps: coordinator $(( coordinator_peak / 1024 )) MiB, agent $(( agent_peak / 1024 )) MiB."
echo "CPU per plain dump through the API: coordinator ${coordinator_cpu} s, agent ${agent_cpu} s (mariadb-dump and mariadbd not counted)."
echo

# --- package install: task through the API against bare apt-get --------------------------------
if dpkg-query -W -f='${Status}' sl 2>/dev/null | grep -q "install ok installed"; then apt-get remove -y -qq sl >/dev/null; fi
apt-get install -y -qq --download-only sl >/dev/null
bare=()
through=()
for _ in $(seq "$rounds"); do
  bare+=("$(seconds_of sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sl >/dev/null')")
  apt-get remove -y -qq sl >/dev/null
  through+=("$(seconds_of sh -c "curl -fsS -H 'x-api-key: $key' -H 'content-type: application/json' -X POST '$url/api/v1/instance/$instance/packages?wait=60' -d '{\"packages\":[\"sl\"]}' | grep -q '\"state\":\"succeeded\"'")")
  apt-get remove -y -qq sl >/dev/null
done
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
bare_median=$(printf '%s\n' "${bare[@]}" | median)
through_median=$(printf '%s\n' "${through[@]}" | median)
echo "| package install of sl (median of $rounds) | seconds |"
echo "|---|---|"
echo "| apt-get install -y sl | $bare_median |"
echo "| POST /instance/<id>/packages?wait=60 (task succeeded) | $through_median |"
echo "| overhead | $(awk -v a="$bare_median" -v b="$through_median" 'BEGIN { printf "%.0f ms", (b - a) * 1000 }') |"
echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); load before: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%Y-%m-%d)"
