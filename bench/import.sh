#!/usr/bin/env bash
# Import speed and memory: `outbound list import` of a generated CSV into a fresh
# SQLite file and into a private MariaDB, side by side.
#
#   bench/import.sh                         # 1,000,000 rows, 3 runs per store
#   ROWS=200000 RUNS=1 STORES=sqlite bench/import.sh
#
# The CSV (email,name,city,plan; ~50 MB for 1M rows) is generated once into
# $CACHE (default target/bench-import). Each run: a fresh store (SQLite: a new
# file; MariaDB: the database dropped and re-created, schema by `--migrate`), an
# account and a list made with the CLI, then the import under /usr/bin/time -v.
# Each run then imports the same file again (REIMPORT=0 skips it): every row an
# unchanged update. Prints one line per import and the median rows/s and peak RSS
# per store. The
# MariaDB server (mariadb-install-db + mariadbd on a temp datadir, its own socket,
# a loopback port) is stopped at the end. Bounded: every import has a 600 s cap.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROWS=${ROWS:-1000000}
RUNS=${RUNS:-3}
STORES=${STORES:-"sqlite mariadb"}
CACHE=${CACHE:-$PWD/target/bench-import}

[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install -y time)" >&2; exit 1; }
cargo build --release -p outbound >/dev/null 2>&1
OUTBOUND=$PWD/target/release/outbound

mkdir -p "$CACHE"
csv="$CACHE/people-$ROWS.csv"
if [ ! -s "$csv" ]; then
    python3 bench/import_csv.py "$ROWS" >"$csv.tmp"
    mv "$csv.tmp" "$csv"
fi
echo "csv: $csv ($(stat -c %s "$csv") bytes, $ROWS rows)"

work=$(mktemp -d)
mariadb_pid=""
cleanup() {
    if [ -n "$mariadb_pid" ]; then
        kill "$mariadb_pid" 2>/dev/null || true
        wait "$mariadb_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_mariadb() {
    local data="$work/mariadb"
    mkdir -p "$data/tmp"
    mariadb-install-db --no-defaults --datadir="$data/data" --user=root \
        --auth-root-authentication-method=normal --skip-test-db --tmpdir="$data/tmp" >/dev/null 2>&1
    port=$(free_port)
    socket="$data/mysqld.sock"
    # Durable like production (innodb_flush_log_at_trx_commit = 1, the default);
    # a buffer pool that holds the 1M-row tables and their indexes.
    mariadbd --no-defaults --datadir="$data/data" --socket="$socket" --port="$port" \
        --pid-file="$data/mariadb.pid" --tmpdir="$data/tmp" --bind-address=127.0.0.1 \
        --user=root --skip-name-resolve --innodb-buffer-pool-size=512M \
        --innodb-log-file-size=256M --max-connections=50 2>"$data/mariadb.log" &
    mariadb_pid=$!
    for _ in $(seq 300); do
        [ -S "$socket" ] && mariadb --socket="$socket" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
        sleep 0.1
    done
    mariadb --socket="$socket" -uroot -e "
        CREATE USER 'bench'@'127.0.0.1' IDENTIFIED BY 'pw';
        GRANT ALL ON *.* TO 'bench'@'127.0.0.1';"
    MYSQL_URL="mysql://bench:pw@127.0.0.1:$port/mail"
}

fresh_store() { # $1 = sqlite|mariadb → prints the store URL
    case "$1" in
        sqlite)
            rm -f "$work"/bench.sqlite*
            echo "sqlite:$work/bench.sqlite"
            ;;
        mariadb)
            mariadb --socket="$socket" -uroot -e 'DROP DATABASE IF EXISTS mail; CREATE DATABASE mail;'
            "$OUTBOUND" --store "$MYSQL_URL" --migrate stats >/dev/null
            echo "$MYSQL_URL"
            ;;
    esac
}

results="$work/results"
: >"$results"
measure() { # $1 = label, $2 = store URL, $3 = list id, $4 = run
    local start end rss_kb summary rate
    start=$(date +%s.%N)
    timeout 600 /usr/bin/time -v "$OUTBOUND" --store "$2" list import "$3" "$csv" \
        >"$work/summary" 2>"$work/time"
    end=$(date +%s.%N)
    rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time")
    summary=$(head -1 "$work/summary")
    rate=$(python3 -c "print(round($ROWS / ($end - $start)))")
    echo "store=$1 run=$4 rows_per_s=$rate seconds=$(python3 -c "print(round($end - $start, 2))") peak_rss_mib=$(python3 -c "print(round($rss_kb / 1024, 1))") [$summary]" | tee -a "$results"
}
for store in $STORES; do
    [ "$store" = mariadb ] && [ -z "$mariadb_pid" ] && start_mariadb
    for run in $(seq "$RUNS"); do
        url=$(fresh_store "$store")
        "$OUTBOUND" --store "$url" account add bench >/dev/null
        list=$("$OUTBOUND" --store "$url" list create --account bench news)
        measure "$store" "$url" "$list" "$run"
        # The same file again into the same list: every row exists and is
        # unchanged, so this is the lookup path alone (all `updated`, no writes).
        if [ "${REIMPORT:-1}" = 1 ]; then measure "$store-again" "$url" "$list" "$run"; fi
    done
done
python3 - "$results" <<'PY'
import collections, re, statistics, sys
cells = collections.defaultdict(lambda: ([], []))
for line in open(sys.argv[1]):
    f = dict(re.findall(r"(\w+)=(\S+)", line))
    cells[f["store"]][0].append(float(f["rows_per_s"]))
    cells[f["store"]][1].append(float(f["peak_rss_mib"]))
targets = {"sqlite": 100_000, "mariadb": 30_000, "sqlite-again": 100_000, "mariadb-again": 30_000}
print("\nstore         median rows/s  vs target        vs listmonk (~10,000/s)  peak RSS MiB (max)")
for store, (rates, rss) in cells.items():
    m = statistics.median(rates)
    t = targets.get(store, 1)
    print(f"{store:<13} {m:>13,.0f}  x{m / t:.2f} of {t:,}  x{m / 10_000:.1f}{'':<18} {max(rss):.1f}")
PY
