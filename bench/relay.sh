#!/usr/bin/env bash
# Deliveries per second of the outbound relay into a loopback sink (Postfix's
# smtp-sink, which discards), by number of worker threads.
#
#   bench/relay.sh                      # N=2000 recipients over 10 domains, threads 1 2 4, 3 runs
#   N=5000 THREADS="1 2" RUNS=5 STORE=mariadb bench/relay.sh
#   BINS="base=/tmp/a/outbound new=target/release/outbound" STORE=mariadb bench/relay.sh
#   BATCH=1024 bench/relay.sh           # relay.batch_size (default: the relay's own)
#
# BINS compares builds side by side in one run: each run of each thread count runs
# every build in turn (label=path; default: this tree's release build as "this").
#
# Each run: a fresh queue (SQLite file, or a private MariaDB with STORE=mariadb)
# holding N distinct messages (one recipient each, so no grouping: the relay's worst
# case) to user<i>@d<i%10>.test, every domain routed to the sink with --transport;
# the relay starts, and the run ends when every row is delivered. Reported: the
# rate from the first to the last delivery in the delivery log (what
# `outbound stats` prints), and the wall time including start-up. Bounded: each
# run stops after 300 s whatever happens.
#
# PROFILE=1 adds, per run, what each delivery cost: CPU µs of the relay, of
# mariadbd (STORE=mariadb) and of smtp-sink (from /proc, utime+stime), and with
# STORE=mariadb the server's counters per delivery (SHOW GLOBAL STATUS deltas:
# Questions = statements, Com_commit, Innodb_os_log_fsyncs, Bytes_sent/received).
# The script's own polling (one COUNT(*) per 0.1 s) is in those deltas: a few
# statements per run, < 0.01 per delivery at N=20000.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${N:-2000}
THREADS=${THREADS:-"1 2 4"}
RUNS=${RUNS:-3}
STORE=${STORE:-sqlite}

if ! [ -x /usr/sbin/smtp-sink ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix sqlite3 >/dev/null
fi
if [ -z "${BINS:-}" ]; then
    cargo build --release -p outbound >/dev/null 2>&1
    BINS="this=$PWD/target/release/outbound"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

port=$(free_port)
/usr/sbin/smtp-sink -u nobody 127.0.0.1:"$port" 1024 &
pids+=($!)
sleep 0.5

mysql_url=""
if [ "$STORE" = mariadb ]; then
    mariadb-install-db --no-defaults --datadir="$work/db" --user=root --auth-root-authentication-method=normal --skip-test-db >/dev/null 2>&1
    dbport=$(free_port)
    mariadbd --no-defaults --datadir="$work/db" --socket="$work/db.sock" --port="$dbport" --bind-address=127.0.0.1 \
        --user=root --innodb-buffer-pool-size=512M --innodb-flush-log-at-trx-commit=1 --skip-grant-tables=0 >"$work/db.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do mariadb --no-defaults -S "$work/db.sock" -uroot -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
    mariadb --no-defaults -S "$work/db.sock" -uroot -e "CREATE USER 'b'@'127.0.0.1' IDENTIFIED BY 'b'; GRANT ALL ON *.* TO 'b'@'127.0.0.1';"
fi

transports=()
for d in $(seq 0 9); do transports+=(--transport "d$d.test=127.0.0.1:$port"); done
cat >"$work/relay.toml" <<TOML
[relay]
poll_interval_ms = 50
${BATCH:+batch_size = $BATCH}
[delivery]
helo_name = "bench.test"
TOML

# N distinct messages, recipient i in domain d(i % 10).
insert_mysql="INSERT INTO outbound_queue (sender, recipient, body)
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
SELECT 'bench@sender.test', CONCAT('user', i, '@d', i % 10, '.test'),
       CONCAT('From: bench@sender.test\r\nSubject: message ', i, '\r\n\r\nhello ', i, '\r\n') FROM n"
insert_sqlite="WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
INSERT INTO outbound_queue (sender, recipient, body)
SELECT 'bench@sender.test', 'user' || i || '@d' || (i % 10) || '.test',
       'From: bench@sender.test' || char(13, 10) || 'Subject: message ' || i || char(13, 10, 13, 10)
       || 'hello ' || i || char(13, 10) FROM n"

# CPU seconds (utime + stime) a process has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }
counters="'Questions','Com_commit','Com_select','Com_update','Com_insert','Com_stmt_prepare','Com_stmt_execute','Com_stmt_close','Innodb_os_log_fsyncs','Innodb_data_fsyncs','Bytes_sent','Bytes_received','Innodb_rows_read'"
status() { mariadb --no-defaults -S "$work/db.sock" -uroot -N -e "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN ($counters) ORDER BY 1" | tr '\t' '=' | tr '\n' ' '; }
per_delivery() { # before-status after-status n → "name=x.xx …" per delivery
    python3 - "$1" "$2" "$3" <<'PY'
import sys
b = dict(kv.split("=") for kv in sys.argv[1].split())
a = dict(kv.split("=") for kv in sys.argv[2].split())
n = int(sys.argv[3])
print(" ".join(f"{k.lower()}={(int(a[k]) - int(b[k])) / n:.3f}" for k in sorted(a)))
PY
}
sink_pid=${pids[0]}
db_pid=${pids[1]:-}

printf '%-8s %-8s %-7s %-4s %14s %12s\n' build store threads run "deliveries/s" "wall s"
for t in $THREADS; do
    for r in $(seq "$RUNS"); do
      for b in $BINS; do
        label=${b%%=*}
        BIN=${b#*=}
        if [ "$STORE" = mariadb ]; then
            db="run_${label//[^a-z0-9]/_}_${t}_$r"
            mariadb --no-defaults -S "$work/db.sock" -uroot -e "CREATE DATABASE $db"
            url="mysql://b:b@127.0.0.1:$dbport/$db"
            "$BIN" --store "$url" --migrate stats >/dev/null 2>&1
            mariadb --no-defaults -S "$work/db.sock" -uroot "$db" -e "SET SESSION max_recursive_iterations = 1000000; $insert_mysql"
            count() { mariadb --no-defaults -S "$work/db.sock" -uroot "$db" -N -e "SELECT COUNT(*) FROM outbound_queue WHERE state = 'delivered'"; }
        else
            q="$work/q_${label//[^a-z0-9]/_}_${t}_$r.sqlite"
            url="sqlite:$q"
            "$BIN" --store "$url" stats >/dev/null 2>&1
            sqlite3 "$q" "$insert_sqlite"
            count() { sqlite3 "$q" "SELECT COUNT(*) FROM outbound_queue WHERE state = 'delivered'"; }
        fi
        if [ -n "${PROFILE:-}" ]; then
            sink0=$(cpu_s "$sink_pid"); db0=$( [ -n "$db_pid" ] && cpu_s "$db_pid" || echo 0)
            [ "$STORE" = mariadb ] && st0=$(status)
        fi
        start=$(date +%s.%N)
        "$BIN" --store "$url" -c "$work/relay.toml" --threads "$t" "${transports[@]}" 2>"$work/relay.log" &
        relay=$!
        deadline=$(( $(date +%s) + 300 ))
        while [ "$(count)" -lt "$N" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
        end=$(date +%s.%N)
        if [ -n "${PROFILE:-}" ]; then
            relay_cpu=$(cpu_s "$relay"); sink1=$(cpu_s "$sink_pid"); db1=$( [ -n "$db_pid" ] && cpu_s "$db_pid" || echo 0)
            [ "$STORE" = mariadb ] && st1=$(status)
        fi
        kill "$relay"; wait "$relay" || true
        if [ "$(count)" -lt "$N" ]; then echo "run did not finish: $(count) of $N delivered" >&2; tail -5 "$work/relay.log" >&2; fi
        rate=$("$BIN" --store "$url" stats 2>/dev/null | sed -n 's/^delivery rate, first to last delivery: \([0-9.]*\)\/s.*/\1/p')
        printf '%-8s %-8s %-7s %-4s %14s %12.2f\n' "$label" "$STORE" "$t" "$r" "${rate:-n/a}" "$(echo "$end - $start" | bc)"
        if [ -n "${PROFILE:-}" ]; then
            echo "  cpu µs/delivery: relay $(echo "scale=1; $relay_cpu * 1000000 / $N" | bc)" \
                "mariadbd $(echo "scale=1; ($db1 - $db0) * 1000000 / $N" | bc)" \
                "smtp-sink $(echo "scale=1; ($sink1 - $sink0) * 1000000 / $N" | bc)"
            [ "$STORE" = mariadb ] && echo "  per delivery: $(per_delivery "$st0" "$st1" "$N")"
        fi
      done
    done
done
