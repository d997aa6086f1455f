#!/usr/bin/env bash
# Same-run A/B of two smtpd builds on SQLite (durable), alternating runs:
#   A=/tmp/smtpd-old B=target/release/smtpd CELLS="1024:10 102400:10" RUNS=3 bench/ab.sh
# Prints, per cell and build, msgs/s and server CPU µs/msg of each run (fresh store).
# PAGE_A / PAGE_B (bytes): create that build's fresh store with this page size first
# (the same binary can then be compared with itself at two page sizes).
# STORE=mysql: both builds on one private MariaDB (started here, durable:
# innodb_flush_log_at_trx_commit=1), the database dropped and migrated per run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/mariadb.sh
. bench/mariadb.sh
A=${A:?path of build A}; B=${B:-target/release/smtpd}
BENCH=${BENCH:-target/release/smtp-bench}
CELLS=${CELLS:-"1024:10 102400:10"}; RUNS=${RUNS:-3}; DURATION=${DURATION:-3}
STORE=${STORE:-sqlite}
work=$(mktemp -d); PID=""; DB_PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; [ -n "$DB_PID" ] && kill "$DB_PID" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=bench/ports.sh
. bench/ports.sh
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
start_bench_mariadb_for_store "$work"
for cell in $CELLS; do
    IFS=: read -r size conns <<<"$cell"
    for run in $(seq "$RUNS"); do
        for which in A B; do
            bin=${!which}; rm -rf "$work/db"; mkdir -p "$work/db"; port=$(free_port)
            page_var=PAGE_$which; page=${!page_var:-}
            if [ -n "$page" ]; then
                python3 -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(f"PRAGMA page_size={int(sys.argv[2])}"); c.execute("PRAGMA journal_mode=WAL"); c.execute("CREATE TABLE ab_page_size(x)"); c.execute("DROP TABLE ab_page_size"); c.close()' "$work/db/s.sqlite" "$page"
            fi
            if [ "$STORE" = mysql ]; then
                mariadb --no-defaults -S "$work/db.sock" -uroot -e "DROP DATABASE IF EXISTS mail; CREATE DATABASE mail;"
                "$bin" --listen "127.0.0.1:$port" --store "mysql://b:b@127.0.0.1:$DB_PORT/mail" --migrate --max-clients 20000 2>/dev/null & PID=$!
            else
                "$bin" --listen "127.0.0.1:$port" --store "sqlite:$work/db/s.sqlite" --max-clients 20000 2>/dev/null & PID=$!
            fi
            wait_port "$port"; t0=$(ticks "$PID")
            out=$("$BENCH" --server "127.0.0.1:$port" --connections "$conns" --messages 300000 --duration "$DURATION" --size "$size" --json)
            t1=$(ticks "$PID"); kill "$PID"; wait "$PID" || true; PID=""
            python3 - "$out" "$t0" "$t1" "$which" "$size" "$conns" "$run" <<'PY'
import json, os, sys
r = json.loads(sys.argv[1]); hz = os.sysconf("SC_CLK_TCK")
cpu = (int(sys.argv[3]) - int(sys.argv[2])) / hz
n = r["messages"] or 1
print(f"size={sys.argv[5]} conns={sys.argv[6]} run={sys.argv[7]} build={sys.argv[4]}{os.environ.get('PAGE_' + sys.argv[4], '') and '/page=' + os.environ['PAGE_' + sys.argv[4]]} msgs_s={r['messages_per_s']:.0f} cpu_us_msg={cpu / n * 1e6:.0f} p99_ms={r['eod_latency_ms']['p99']:.2f}")
PY
        done
    done
done
