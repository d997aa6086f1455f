#!/usr/bin/env bash
# Ingest cost of the optional `new_mail.to` index (schema/*/optional/new_mail_to.sql):
# SQLite, durable (synchronous = full), with and without the index, side by side.
#
#   bench/to_index.sh                       # 20,000 × 1 KB at 10 and 100 sessions, 3 runs each
#   N=50000 SESSIONS="100" RUNS=5 bench/to_index.sh
#
# Each run: a fresh store (the index applied with the sqlite3 shell before the load
# when the variant asks for it), smtpd started, smtp-bench sends N messages, smtpd
# stopped. Variants alternate run by run so drift on the machine hits both. Prints
# one line per run and the median msgs/s and CPU µs per message of each cell.
# Bounded: every smtp-bench run has a 120 s duration cap.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${N:-20000}
SESSIONS=${SESSIONS:-"10 100"}
RUNS=${RUNS:-3}
SIZE=${SIZE:-1024}

cargo build --release -p smtpd -p bench >/dev/null 2>&1
SMTPD=$PWD/target/release/smtpd
BENCH=$PWD/target/release/smtp-bench
INDEX_SQL=$PWD/schema/sqlite/optional/new_mail_to.sql

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

results="$work/results"
: >"$results"
for run in $(seq "$RUNS"); do
    for sessions in $SESSIONS; do
        for variant in none to_index; do
            rm -rf "$work/store"; mkdir -p "$work/store"
            db="$work/store/smtpd.sqlite"
            port=$(free_port)
            "$SMTPD" --listen "127.0.0.1:$port" --store "sqlite:$db" 2>"$work/smtpd.log" &
            pid=$!
            for _ in $(seq 100); do grep -q 'listening on' "$work/smtpd.log" && break; sleep 0.1; done
            if [ "$variant" = to_index ]; then sqlite3 "$db" <"$INDEX_SQL"; fi
            before=$(cpu_ticks "$pid")
            out=$("$BENCH" --server "127.0.0.1:$port" --connections "$sessions" --messages "$N" \
                --size "$SIZE" --duration 120 2>&1 | tr '\n' ' ')
            after=$(cpu_ticks "$pid")
            kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
            rate=$(grep -oE '[0-9.]+ msg/s' <<<"$out" | head -1 | cut -d' ' -f1)
            stored=$(sqlite3 "$db" 'select count(*) from new_mail')
            cpu_us=$(python3 -c "print(round(($after - $before) * 1e6 / $(getconf CLK_TCK) / max($stored, 1), 1))")
            echo "run=$run sessions=$sessions variant=$variant msgs_per_s=$rate cpu_us_per_msg=$cpu_us stored=$stored" | tee -a "$results"
        done
    done
done
python3 - "$results" <<'PY'
import sys, statistics, collections
cells = collections.defaultdict(lambda: ([], []))
for line in open(sys.argv[1]):
    kv = dict(p.split("=") for p in line.split())
    key = (int(kv["sessions"]), kv["variant"])
    cells[key][0].append(float(kv["msgs_per_s"]))
    cells[key][1].append(float(kv["cpu_us_per_msg"]))
print("| sessions | without index msgs/s (µs/msg) | with new_mail_to msgs/s (µs/msg) | ratio |")
print("| --- | --- | --- | --- |")
for s in sorted({k[0] for k in cells}):
    a, b = cells[(s, "none")], cells[(s, "to_index")]
    ra, rb = statistics.median(a[0]), statistics.median(b[0])
    print(f"| {s} | {ra:,.0f} ({statistics.median(a[1])}) | {rb:,.0f} ({statistics.median(b[1])}) | ×{rb/ra:.2f} |")
PY
