#!/usr/bin/env bash
# Where the CPU of one message goes, per thread, user and kernel apart: smtpd on
# SQLite (durable, the defaults) against Postfix's smtp-sink, same cells, same
# load generator, alternating runs:
#   CELLS="1024:10 1024:100 102400:10" RUNS=3 bench/threads.sh
# Prints per cell and server the msgs/s and, per thread group (smtpd: reactors,
# store-commit, store-checkpoint, the rest; smtp-sink: its one process; the load
# generator), µs of user and of kernel CPU per message, from /proc/PID/task/*/stat
# before and after the load. Medians over the runs.
# STORE=mysql adds smtpd on a private, durable MariaDB (bench/mariadb.sh; the
# database dropped and migrated per run) and counts mariadbd's threads too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/mariadb.sh
. bench/mariadb.sh
SMTPD=${SMTPD:-target/release/smtpd}
BENCH=${BENCH:-target/release/smtp-bench}
CELLS=${CELLS:-"1024:10 1024:100 102400:10"}; RUNS=${RUNS:-3}; DURATION=${DURATION:-3}
[ -x /usr/sbin/smtp-sink ] || { echo "needs Postfix's smtp-sink (apt-get install postfix)" >&2; exit 2; }
STORE=${STORE:-sqlite}
SERVERS="smtp-sink smtpd"; [ "$STORE" = mysql ] && SERVERS="smtp-sink smtpd smtpd-mysql"
work=$(mktemp -d); PID=""; DB_PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; [ -n "$DB_PID" ] && kill "$DB_PID" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=bench/ports.sh
. bench/ports.sh
# "tid name utime stime" per thread of a process (thread names have no spaces).
snapshot() { cat /proc/"$1"/task/*/stat 2>/dev/null | awk '{print $1, $2, $14, $15}' | tr -d '()'; }
: >"$work/rows"
start_bench_mariadb_for_store "$work"
for cell in $CELLS; do
    IFS=: read -r size conns <<<"$cell"
    for run in $(seq "$RUNS"); do
        for server in $SERVERS; do
            rm -rf "$work/db"; mkdir -p "$work/db"; port=$(free_port)
            case $server in
            smtp-sink) /usr/sbin/smtp-sink -u nobody "127.0.0.1:$port" 4096 & PID=$! ;;
            smtpd) "$SMTPD" --listen "127.0.0.1:$port" --store "sqlite:$work/db/s.sqlite" --max-clients 20000 2>/dev/null & PID=$! ;;
            smtpd-mysql)
                mariadb --no-defaults -S "$work/db.sock" -uroot -e "DROP DATABASE IF EXISTS mail; CREATE DATABASE mail;"
                "$SMTPD" --listen "127.0.0.1:$port" --store "mysql://b:b@127.0.0.1:$DB_PORT/mail" --migrate --max-clients 20000 2>/dev/null & PID=$! ;;
            esac
            wait_port "$port"
            snapshot "$PID" >"$work/before"
            : >"$work/db_before"; [ -n "$DB_PID" ] && snapshot "$DB_PID" >"$work/db_before"
            # The generator's CPU from its rusage (it is a child of this Python).
            python3 - "$work/bench_cpu" "$BENCH" --server "127.0.0.1:$port" --connections "$conns" \
                --messages 300000 --duration "$DURATION" --size "$size" --json >"$work/out" <<'PY'
import resource, subprocess, sys
subprocess.run(sys.argv[2:], check=True)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{ru.ru_utime} {ru.ru_stime}\n")
PY
            snapshot "$PID" >"$work/after"
            : >"$work/db_after"; [ "$server" = smtpd-mysql ] && snapshot "$DB_PID" >"$work/db_after"
            kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
            python3 - "$work" "$server" "$size" "$conns" "$run" >>"$work/rows" <<'PY'
import json, os, sys
work, server, size, conns, run = sys.argv[1:]
hz = os.sysconf("SC_CLK_TCK")
def load(name):
    rows = {}
    for line in open(f"{work}/{name}"):
        tid, comm, u, s = line.split()
        rows[tid] = (comm, int(u), int(s))
    return rows
def group(comm):
    if comm.startswith("reactor"): return "reactors"
    if comm.startswith("store-commit"): return "store-commit"
    if comm.startswith("store-checkpoin"): return "store-checkpoint"
    if server == "smtp-sink": return "smtp-sink"
    return "other"
r = json.load(open(f"{work}/out")); n = r["messages"] or 1
out = {"server": server, "size": int(size), "conns": int(conns), "run": int(run),
       "msgs_s": r["messages_per_s"], "groups": {}}
before, after = load("before"), load("after")
for tid, (comm, u, s) in after.items():
    u0, s0 = before.get(tid, (comm, 0, 0))[1:]
    g = out["groups"].setdefault(group(comm), [0.0, 0.0])
    g[0] += (u - u0) / hz / n * 1e6; g[1] += (s - s0) / hz / n * 1e6
for tid, (comm, u, s) in load("db_after").items():
    u0, s0 = load("db_before").get(tid, (comm, 0, 0))[1:]
    g = out["groups"].setdefault("mariadbd", [0.0, 0.0])
    g[0] += (u - u0) / hz / n * 1e6; g[1] += (s - s0) / hz / n * 1e6
u, s = map(float, open(f"{work}/bench_cpu").read().split())
out["groups"]["load generator"] = [u / n * 1e6, s / n * 1e6]
print(json.dumps(out))
PY
            tail -1 "$work/rows"
        done
    done
done >&2
python3 - "$work/rows" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cells = sorted({(r["size"], r["conns"]) for r in rows})
print("| cell | server | msgs/s | µs CPU per message: server in all; per thread group user + kernel |")
print("| --- | --- | --- | --- |")
for size, conns in cells:
    for server in ("smtp-sink", "smtpd", "smtpd-mysql"):
        rs = [r for r in rows if (r["size"], r["conns"], r["server"]) == (size, conns, server)]
        if not rs: continue
        med = lambda xs: statistics.median(xs)
        groups = sorted({g for r in rs for g in r["groups"]})
        parts = []
        total = med([sum(u + k for g, (u, k) in r["groups"].items() if g != "load generator") for r in rs])
        parts.append(f"**server {total:.1f}**")
        for g in groups:
            u = med([r["groups"].get(g, [0, 0])[0] for r in rs])
            s = med([r["groups"].get(g, [0, 0])[1] for r in rs])
            if u + s >= 0.5: parts.append(f"{g} {u:.1f} + {s:.1f}")
        print(f"| {size // 1024} KB × {conns} | {server} | {med([r['msgs_s'] for r in rs]):,.0f} | {'; '.join(parts)} |")
PY
