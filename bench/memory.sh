#!/usr/bin/env bash
# Peak RSS (VmHWM) of smtpd under large-message load, and whether held-back bodies
# lock other clients out (issue 15, item 11; README "Memory in flight").
#
#   bench/memory.sh                       # the release build of this tree
#   SMTPD=/path/to/smtpd bench/memory.sh  # another build (e.g. main's), same load
#
# Three runs, each against a fresh server with its own SQLite file, loopback only,
# every client bounded in time (bench/memory_load.py):
#   1. 200 clients × 5 MB at once, default budget (1 GiB);
#   2. 40 clients × 2 MB at once, max_inflight_bytes = 16 MiB;
#   3. 200 clients × 5 MB holding back the final dot for 14 s while small-message
#      probes run for 8 s.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SMTPD=${SMTPD:-target/release/smtpd}
[ -x "$SMTPD" ] || cargo build --release -p smtpd
LOAD=bench/memory_load.py

# run NAME BUDGET MODE CLIENTS BYTES
run() {
  local name=$1 budget=$2 mode=$3 clients=$4 bytes=$5
  local dir
  dir=$(mktemp -d)
  printf '[server]\nmax_clients = 1000\n[limits]\nmax_inflight_bytes = %s\n' "$budget" > "$dir/smtpd.toml"
  "$SMTPD" --listen 127.0.0.1:0 --store "sqlite:$dir/x.sqlite" --hostname mx.test \
    -c "$dir/smtpd.toml" 2> "$dir/err" &
  local pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$dir/err" && break; sleep 0.1; done
  local port
  port=$(grep -o "listening on [0-9.:]*" "$dir/err" | head -1 | sed 's/.*://')
  echo "== $name"
  if [ "$mode" = hold ]; then
    timeout 120 python3 $LOAD hold "$port" "$clients" "$bytes" 14 > "$dir/hold.out" &
    local holders=$!
    sleep 4
    timeout 60 python3 $LOAD probe "$port" 8
    wait $holders || true
    cat "$dir/hold.out"
  else
    timeout 300 python3 $LOAD send "$port" "$clients" "$bytes"
  fi
  grep VmHWM "/proc/$pid/status"
  kill $pid
  wait $pid 2>/dev/null || true
  rm -rf "$dir"
}

echo "smtpd: $SMTPD ($(git rev-parse --short HEAD 2>/dev/null || echo '?')), $(nproc) cores"
run "200 clients x 5 MB, default budget" 1073741824 send 200 5000000
run "40 clients x 2 MB, max_inflight_bytes 16 MiB" 16777216 send 40 2000000
run "200 clients x 5 MB holding back the final dot; probes meanwhile" 1073741824 hold 200 5000000
