#!/usr/bin/env bash
# Bounce intake: new_mail rows per second the relay scans (reads past its cursor
# looking for mail to its VERP addresses), on a private MariaDB.
#
#   bench/intake.sh                                   # N=50000 rows of 2 KB, 3 runs
#   BINS="base=/tmp/a/outbound this=target/release/outbound" bench/intake.sh
#
# Each run: a fresh database holding N new_mail rows (2 KB bodies, none addressed
# to the relay: the common case, an inbox busy with other mail) and a relay with
# VERP on (bounces.intake_interval_ms = 10, so the interval does not set the pace;
# bounces.intake_settle_ms = 0: the rows are all committed before the relay starts,
# so the 30 s settle would only delay the start);
# the run ends when outbound_intake.last_mail_id reaches the last row. Reported:
# rows / seconds from the relay's start. Bounded: 120 s per run. BINS compares
# builds side by side in one run (label=path).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${N:-50000}
RUNS=${RUNS:-3}
if [ -z "${BINS:-}" ]; then
    cargo build --release -p outbound >/dev/null 2>&1
    BINS="this=$PWD/target/release/outbound"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

mariadb-install-db --no-defaults --datadir="$work/db" --user=root --auth-root-authentication-method=normal --skip-test-db >/dev/null 2>&1
dbport=$(free_port)
mariadbd --no-defaults --datadir="$work/db" --socket="$work/db.sock" --port="$dbport" --bind-address=127.0.0.1 \
    --user=root --innodb-buffer-pool-size=512M >"$work/db.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do mariadb --no-defaults -S "$work/db.sock" -uroot -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
mariadb --no-defaults -S "$work/db.sock" -uroot -e "CREATE USER 'b'@'127.0.0.1' IDENTIFIED BY 'b'; GRANT ALL ON *.* TO 'b'@'127.0.0.1';"
sql() { mariadb --no-defaults -S "$work/db.sock" -uroot "$1" -N -e "$2"; }

cat >"$work/relay.toml" <<TOML
[relay]
poll_interval_ms = 50
[delivery]
helo_name = "bench.test"
[bounces]
domain = "bounces.bench.test"
key = "0123456789abcdef0123456789abcdef"
intake_interval_ms = 10
intake_settle_ms = 0
TOML

insert="SET SESSION max_recursive_iterations = 10000000;
INSERT INTO new_mail (date, \`from\`, \`to\`, subject, charset, mail, hash, content_type, recipient,
  ip_addr, return_path, message_id, reply_to, sender, helo, size)
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
SELECT NOW(), 's@x.test', CONCAT('u', i, '@inbox.test'), CONCAT('m', i), 'utf-8', REPEAT('x', 2048),
  MD5(i), 'text/plain', CONCAT('u', i, '@inbox.test'), '127.0.0.1', 's@x.test', CONCAT('<', i, '@x>'),
  '', '', 'h', 2048 FROM n"

printf '%-8s %-4s %10s %10s %14s\n' build run rows seconds "rows/s"
for r in $(seq "$RUNS"); do
    for b in $BINS; do
        label=${b%%=*}
        BIN=${b#*=}
        db="i_${label//[^a-z0-9]/_}_$r"
        sql mysql "CREATE DATABASE $db"
        url="mysql://b:b@127.0.0.1:$dbport/$db"
        "$BIN" --store "$url" --migrate stats >/dev/null 2>&1
        sql "$db" "$insert"
        last=$(sql "$db" "SELECT MAX(mail_id) FROM new_mail")
        start=$(date +%s.%N)
        "$BIN" --store "$url" -c "$work/relay.toml" --node-id "bench-$label" 2>"$work/relay.log" &
        relay=$!
        deadline=$(( $(date +%s) + 120 ))
        cursor() { sql "$db" "SELECT COALESCE(MAX(last_mail_id), 0) FROM outbound_intake"; }
        while [ "$(cursor)" -lt "$last" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.05; done
        end=$(date +%s.%N)
        kill "$relay"; wait "$relay" || true
        done_rows=$(cursor)
        secs=$(echo "$end - $start" | bc)
        printf '%-8s %-4s %10s %10.2f %14.0f\n' "$label" "$r" "$done_rows" "$secs" "$(echo "$done_rows / $secs" | bc -l)"
        sql mysql "DROP DATABASE $db"
    done
done
