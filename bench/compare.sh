#!/usr/bin/env bash
# Side-by-side SMTP server comparison on one machine, in one run, same load:
#   smtpd (SQLite, durable), smtpd (MariaDB, durable, private instance), Postfix's
#   smtp-sink (discards: the practical upper bound), aiosmtpd (Python, Sink handler),
#   Haraka (Node.js, queue/discard).
#
#   bench/compare.sh                    # the full grid, 3 runs a cell
#   RUNS=1 DURATION=2 SIZES=1024 CONNS="10 100" bench/compare.sh    # a quick look
#   EXTRAS=0 ...                        # only the grid and the paced cells
#
# Grid: SIZES (bytes) × CONNS (concurrent sessions) × MODES (many = messages reuse
# the connection, one = a new connection per message); each cell runs RUNS times,
# bounded by DURATION seconds and MAX_MESSAGES. Per run: smtp-bench --json (msgs/s,
# latency percentiles) and the server's CPU time (utime+stime of the server process
# and its children, from /proc) divided by the messages accepted.
# Then: smtp-bench vs Postfix's smtp-source against smtp-sink (load and generator
# CPU), smtpd's RSS with 1,000 / 10,000 idle connections, and smtpd's throughput
# with 10,000 connections held open. bench/summarize.py turns it all into
# $OUT/summary.md and PNG plots. Everything installs itself (apt, npm) and binds
# loopback only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/mariadb.sh
. bench/mariadb.sh

RUNS=${RUNS:-3}
DURATION=${DURATION:-3}
MAX_MESSAGES=${MAX_MESSAGES:-300000}
SIZES=${SIZES:-"1024 10240 102400"}
CONNS=${CONNS:-"1 10 100 1000"}
MODES=${MODES:-"many one"}
SERVERS=${SERVERS:-"smtp-sink smtpd-sqlite smtpd-mysql aiosmtpd haraka"}
OUT=${OUT:-bench/results/$(date -u +%Y%m%d-%H%M%S)}
CACHE=${BENCH_CACHE:-$HOME/.cache/smtpd-bench}
log() { printf 'compare: %s\n' "$*" >&2; }

# ---- dependencies -----------------------------------------------------------------
need=()
[ -x /usr/sbin/smtp-sink ] || need+=(postfix)
[ -x /usr/bin/time ] || need+=(time)
# Only what the chosen SERVERS need.
case " $SERVERS " in *" aiosmtpd "*) /usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || need+=(python3-aiosmtpd) ;; esac
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server mariadb-client)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
case " $SERVERS " in *" haraka "*) command -v npm >/dev/null || need+=(nodejs npm) ;; esac
if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${need[@]}" >/dev/null || { apt-get update >/dev/null; apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
    # The postfix package starts a system MTA on port 25; the comparison wants only
    # its smtp-sink/smtp-source tools.
    systemctl stop postfix 2>/dev/null || postfix stop 2>/dev/null || true
fi
if [[ " $SERVERS " == *" haraka "* ]] && ! [ -x "$CACHE/haraka/node_modules/.bin/haraka" ]; then
    log "installing Haraka from npm into $CACHE/haraka"
    mkdir -p "$CACHE/haraka"
    (cd "$CACHE/haraka" && npm install --no-audit --no-fund Haraka >/dev/null 2>&1)
fi
log "building smtpd and smtp-bench (release)"
cargo build --release -p smtpd -p bench >/dev/null 2>&1
SMTPD=$PWD/target/release/smtpd
BENCH=$PWD/target/release/smtp-bench
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

mkdir -p "$OUT"
work=$(mktemp -d)
SERVER_PID=""
DB_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    [ -n "$DB_PID" ] && kill "$DB_PID" 2>/dev/null || true
    pkill -f "$work" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; log "port $1 never opened"; return 1; }

# CPU seconds (utime+stime) of a process and its descendants.
cpu_seconds() {
    local pids
    pids=$(ps -o pid= --ppid "$1" 2>/dev/null; echo "$1")
    local ticks=0
    for p in $pids; do
        [ -r "/proc/$p/stat" ] || continue
        t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
        ticks=$((ticks + t))
    done
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t / hz }'
}
# a - b, printed as a JSON number.
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }

start_mariadb() {
    [ -n "$DB_PID" ] && return 0
    start_bench_mariadb "$work/db" "$work/db.sock" "$work/db.log"
    mariadb --no-defaults -S "$work/db.sock" -uroot -e "CREATE DATABASE mail;"
}

start_server() {
    PORT=$(free_port)
    case "$1" in
        smtp-sink) /usr/sbin/smtp-sink -u nobody "127.0.0.1:$PORT" 4096 & ;;
        smtpd-sqlite)
            rm -f "$work"/s.sqlite*
            "$SMTPD" --listen "127.0.0.1:$PORT" --store "sqlite:$work/s.sqlite" --max-clients 20000 2>"$work/smtpd.log" & ;;
        smtpd-mysql|smtpd-mysql-c*)
            # smtpd-mysql-cN: store.mysql_committers = N (smtpd-mysql: the default).
            start_mariadb
            mariadb --no-defaults -S "$work/db.sock" -uroot -e "DROP DATABASE IF EXISTS mail; CREATE DATABASE mail;"
            : >"$work/smtpd.toml"
            case "$1" in smtpd-mysql-c*) printf '[store]\nmysql_committers = %s\n' "${1#smtpd-mysql-c}" >"$work/smtpd.toml" ;; esac
            "$SMTPD" -c "$work/smtpd.toml" --listen "127.0.0.1:$PORT" --store "mysql://b:b@127.0.0.1:$DB_PORT/mail" --migrate --max-clients 20000 2>"$work/smtpd.log" & ;;
        aiosmtpd)
            /usr/bin/python3 -m aiosmtpd -n -c aiosmtpd.handlers.Sink -l "127.0.0.1:$PORT" 2>/dev/null & ;;
        haraka)
            rm -rf "$work/haraka" && "$CACHE/haraka/node_modules/.bin/haraka" -i "$work/haraka" >/dev/null 2>&1
            printf 'listen=127.0.0.1:%s\nnodes=cpus\n' "$PORT" >"$work/haraka/config/smtp.ini"
            printf 'rcpt_to.in_host_list\nqueue/discard\n' >"$work/haraka/config/plugins"
            printf 'example.com\n' >"$work/haraka/config/host_list"
            printf '[main]\nlevel=warn\n' >"$work/haraka/config/log.ini"
            YES_REALLY_DO_DISCARD=1 "$CACHE/haraka/node_modules/.bin/haraka" -c "$work/haraka" >"$work/haraka.log" 2>&1 & ;;
    esac
    SERVER_PID=$!
    wait_port "$PORT"
    sleep 0.5
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    pkill -f "$work/haraka" 2>/dev/null || true
    SERVER_PID=""
    sleep 0.3
}

# ---- the grid ---------------------------------------------------------------------
{
    echo "commit: $(git rev-parse --short HEAD) ($(git log -1 --format=%cd --date=short))"
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
    echo "cpu: $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ //')"
    echo "grid: sizes=$SIZES conns=$CONNS modes=$MODES runs=$RUNS duration=${DURATION}s max_messages=$MAX_MESSAGES"
} >"$OUT/meta.txt"
: >"$OUT/grid.jsonl"
for server in $SERVERS; do
    log "server $server"
    start_server "$server"
    for size in $SIZES; do
        for conns in $CONNS; do
            for mode in $MODES; do
                per=0; [ "$mode" = one ] && per=1
                for run in $(seq "$RUNS"); do
                    before=$(cpu_seconds "$SERVER_PID")
                    result=$("$BENCH" --server "127.0.0.1:$PORT" --connections "$conns" --messages "$MAX_MESSAGES" \
                        --duration "$DURATION" --size "$size" --per-connection "$per" --json 2>/dev/null || echo '{}')
                    after=$(cpu_seconds "$SERVER_PID")
                    printf '{"server":"%s","size":%s,"conns":%s,"mode":"%s","run":%s,"server_cpu_s":%s,"bench":%s}\n' \
                        "$server" "$size" "$conns" "$mode" "$run" "$(minus "$after" "$before")" "$result" >>"$OUT/grid.jsonl"
                done
            done
        done
        # A server that cannot keep up with the last cell still has clients queued:
        # give it a moment before the next size.
        sleep 1
    done
    stop_server
done

# ---- latency at half the peak rate (smtpd) -----------------------------------------
# For each smtpd cell of PACED_SIZES × PACED_CONNS (many per connection), the load is
# paced (--rate) at half the median msgs/s the grid measured, for 2×DURATION s.
PACED_SIZES=${PACED_SIZES:-"1024 102400"}
PACED_CONNS=${PACED_CONNS:-"10 100 1000"}
: >"$OUT/paced.jsonl"
for server in $SERVERS; do
    case "$server" in smtpd-*) ;; *) continue ;; esac
    log "paced latency: $server"
    start_server "$server"
    for size in $PACED_SIZES; do
        for conns in $PACED_CONNS; do
            rate=$(python3 - "$OUT/grid.jsonl" "$server" "$size" "$conns" <<'PY'
import json, statistics, sys
path, server, size, conns = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rates = []
for line in open(path):
    r = json.loads(line)
    b = r.get("bench") or {}
    if (r["server"], r["size"], r["conns"], r["mode"]) == (server, size, conns, "many") and b.get("messages_per_s"):
        rates.append(b["messages_per_s"])
print(f"{statistics.median(rates) / 2:.0f}" if rates else 0)
PY
)
            [ "$rate" = 0 ] && continue
            result=$("$BENCH" --server "127.0.0.1:$PORT" --connections "$conns" --messages "$MAX_MESSAGES" \
                --duration $((DURATION * 2)) --size "$size" --rate "$rate" --json 2>/dev/null || echo '{}')
            printf '{"server":"%s","size":%s,"conns":%s,"rate":%s,"bench":%s}\n' \
                "$server" "$size" "$conns" "$rate" "$result" >>"$OUT/paced.jsonl"
        done
    done
    stop_server
done

# EXTRAS=0 skips the load-generator check and the memory section (a partial grid).
if [ "${EXTRAS:-1}" = 0 ]; then
    log "summarising into $OUT"
    python3 bench/summarize.py "$OUT" || true
    log "done: $OUT"
    exit 0
fi

# ---- the load generator itself: smtp-bench vs smtp-source on smtp-sink -----------
log "load generators against smtp-sink"
: >"$OUT/loadgen.txt"
start_server smtp-sink
for run in $(seq "$RUNS"); do
    for size in 1024 102400; do
        n=$(( size > 10000 ? 20000 : 100000 ))
        sink_before=$(cpu_seconds "$SERVER_PID")
        t=$( { /usr/bin/time -f '%e %U %S' /usr/sbin/smtp-source -d -s 10 -l "$size" -m "$n" -t sink@example.com "127.0.0.1:$PORT" >/dev/null; } 2>&1 | tail -1)
        sink_after=$(cpu_seconds "$SERVER_PID")
        echo "smtp-source size=$size messages=$n run=$run wall_user_sys=$t sink_cpu=$(minus "$sink_after" "$sink_before")" >>"$OUT/loadgen.txt"
        sink_before=$(cpu_seconds "$SERVER_PID")
        t=$( { /usr/bin/time -f '%e %U %S' "$BENCH" --server "127.0.0.1:$PORT" --connections 10 --messages "$n" --duration 60 --size "$size" >/dev/null; } 2>&1 | tail -1)
        sink_after=$(cpu_seconds "$SERVER_PID")
        echo "smtp-bench size=$size messages=$n run=$run wall_user_sys=$t sink_cpu=$(minus "$sink_after" "$sink_before")" >>"$OUT/loadgen.txt"
    done
done
stop_server

# ---- smtpd: idle connections and throughput with 10,000 open ------------------------
log "smtpd memory with idle connections"
start_server smtpd-sqlite
rss() { awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status"; }
{
    echo "rss_kib_start $(rss)"
    for n in 1000 10000; do
        "$BENCH" --server "127.0.0.1:$PORT" --idle "$n" --hold $((DURATION + 8)) >/dev/null &
        holder=$!
        sleep 4
        echo "rss_kib_idle_$n $(rss)"
        if [ "$n" = 10000 ]; then
            "$BENCH" --server "127.0.0.1:$PORT" --connections 100 --messages 100000 --duration "$DURATION" --size 1024 --json >"$OUT/with_10k_idle.json" 2>/dev/null || true
        fi
        wait "$holder" || true
        sleep 1
    done
} >"$OUT/idle.txt"
stop_server

log "summarising into $OUT"
python3 bench/summarize.py "$OUT"
log "done: $OUT/summary.md"
