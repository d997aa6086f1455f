#!/usr/bin/env bash
# Instruction profile of smtpd's ingest path (repeatable whatever the machine's load):
# smtpd on SQLite under `valgrind --tool=callgrind`, a fixed workload from smtp-bench,
# instructions per message from the callgrind totals; then the same workload under
# `strace -c -f` for syscalls (fsync, pwrite, eventfd/epoll wake-ups) per batch.
#
#   bench/profile.sh                       # 2,000 x 1 KB / 10 sessions and 200 x 100 KB / 10
#   OUT=/tmp/prof bench/profile.sh
#
# Output in $OUT: callgrind.<cell>.out (open with callgrind_annotate), strace.<cell>.txt,
# and summary.txt (Ir per message, top inclusive functions, syscalls per batch).
# PAGE=4096 creates each fresh store with that page size first (smtpd keeps the page
# size of an existing file), to profile one build at two page sizes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
CELLS=${CELLS:-"1024:2000:10 102400:200:10"}
# SMTPD=/path/to/smtpd profiles another build (e.g. the one before a change).
if [ -z "${SMTPD:-}" ]; then
    cargo build --release -p smtpd -p bench >/dev/null 2>&1
    SMTPD=$PWD/target/release/smtpd
fi
BENCH=${BENCH:-$PWD/target/release/smtp-bench}
work=$(mktemp -d)
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
: >"$OUT/summary.txt"
for cell in $CELLS; do
    IFS=: read -r size msgs conns <<<"$cell"
    name="${size}B-${msgs}x${conns}"
    for tool in callgrind strace; do
        rm -rf "$work/db"; mkdir -p "$work/db"
        if [ -n "${PAGE:-}" ]; then
            python3 -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(f"PRAGMA page_size={int(sys.argv[2])}"); c.execute("PRAGMA journal_mode=WAL"); c.execute("CREATE TABLE profile_page_size(x)"); c.execute("DROP TABLE profile_page_size"); c.close()' "$work/db/s.sqlite" "$PAGE"
        fi
        port=$(free_port)
        case $tool in
        callgrind) valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$name.out" \
                "$SMTPD" --listen "127.0.0.1:$port" --store "sqlite:$work/db/s.sqlite" 2>"$work/log" & ;;
        strace) "$SMTPD" --listen "127.0.0.1:$port" --store "sqlite:$work/db/s.sqlite" 2>"$work/log" & ;;
        esac
        PID=$!
        wait_port "$port"
        # strace attaches once the server is up, so only the load is counted.
        tracer=""
        if [ "$tool" = strace ]; then
            strace -c -f -o "$OUT/strace.$name.txt" -p "$PID" & tracer=$!
            sleep 1
        fi
        # Totals include start-up (opening the store, migrations): a few Mi Ir.
        "$BENCH" --server "127.0.0.1:$port" --connections "$conns" --messages "$msgs" \
            --size "$size" --duration 300 --json >"$work/bench.json"
        if [ -n "$tracer" ]; then kill -INT "$tracer"; wait "$tracer" || true; fi
        kill -TERM "$PID"; wait "$PID" || true; PID=""
        sent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["messages"])' "$work/bench.json" 2>/dev/null || echo "$msgs")
        if [ "$tool" = callgrind ]; then
            total=$(callgrind_annotate "$OUT/callgrind.$name.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n {gsub(",","",$1); print $1; n=1}' || true)
            echo "== $name: $sent messages, $total Ir in total, $((total / sent)) Ir/msg" >>"$OUT/summary.txt"
            callgrind_annotate --inclusive=yes "$OUT/callgrind.$name.out" 2>/dev/null | sed -n '1,60p' | grep -v '^$' | tail -n +15 | head -45 >>"$OUT/summary.txt" || true
        else
            echo "-- $name syscalls (strace -c -f), $sent messages, $(grep -c 'batch committed' "$work/log" || true) batches logged:" >>"$OUT/summary.txt"
            head -40 "$OUT/strace.$name.txt" >>"$OUT/summary.txt" || true
        fi
    done
done
cat "$OUT/summary.txt"
