#!/usr/bin/env bash
# The cost of issue 20's metrics on smtpd's ingest path, side by side in one run:
# the same smtpd built at two commits (BASE: before the metrics, HEAD: with them
# and the telemetry listener on), same load, alternating runs.
#
#   BASE_BIN=/tmp/smtpd-base HEAD_BIN=/tmp/smtpd-head BENCH_BIN=target/release/smtp-bench bench/ops.sh
#
# 1. Throughput: RUNS alternating runs of smtp-bench (CONNS sessions, MESSAGES 1 KB
#    messages, durable SQLite) per binary; medians and the HEAD/BASE ratio.
# 2. Instructions per message: each binary under `valgrind --tool=callgrind` (all
#    threads), once with N1 and once with N2 messages; (Ir(N2) − Ir(N1)) / (N2 − N1)
#    cancels start-up and shutdown. Instruction counts do not depend on how busy
#    the machine is, unlike wall time.
# Binds 127.0.0.1 only; everything lives in a temp dir.
set -euo pipefail
BASE_BIN=${BASE_BIN:?smtpd built at the base commit}
HEAD_BIN=${HEAD_BIN:?smtpd built at the head commit}
BENCH_BIN=${BENCH_BIN:-target/release/smtp-bench}
RUNS=${RUNS:-3}
CONNS=${CONNS:-50}
MESSAGES=${MESSAGES:-20000}
N1=${N1:-1000}
N2=${N2:-3000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))

start() { # binary dir [wrapper...] → pid of the server (or of valgrind)
    local bin=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    "$@" "$bin" --listen "127.0.0.1:$port" --store "sqlite:$dir/s.sqlite" --hostname bench.test \
        >/dev/null 2>"$dir/stderr" &
    local pid=$!
    for _ in $(seq 1 600); do
        grep -q "listening on" "$dir/stderr" 2>/dev/null && break
        sleep 0.1
    done
    echo "$pid"
}

stop() {
    kill -TERM "$1"
    wait "$1" 2>/dev/null || true
}

load() { # messages connections → msgs/s
    "$BENCH_BIN" --server "127.0.0.1:$port" --connections "$2" --messages "$1" --size 1024 --duration 600 --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["messages_per_s"])'
}

if [ "$RUNS" -gt 0 ]; then
echo "## throughput ($CONNS connections, $MESSAGES × 1 KB, SQLite FULL)"
declare -A rates
for run in $(seq 1 "$RUNS"); do
    for which in base head; do
        bin=$BASE_BIN
        [ "$which" = head ] && bin=$HEAD_BIN
        pid=$(start "$bin" "$work/$which-$run")
        r=$(load "$MESSAGES" "$CONNS")
        stop "$pid"
        rates[$which]+="$r "
        echo "run $run $which: $r msgs/s"
    done
done
python3 - "${rates[base]}" "${rates[head]}" <<'PY'
import statistics, sys
base = [float(x) for x in sys.argv[1].split()]
head = [float(x) for x in sys.argv[2].split()]
mb, mh = statistics.median(base), statistics.median(head)
print(f"median base {mb:.0f} msgs/s, head {mh:.0f} msgs/s, head/base {mh/mb:.3f}")
PY
fi

echo "## instructions per message (callgrind, 10 connections)"
for which in base head; do
    bin=$BASE_BIN
    [ "$which" = head ] && bin=$HEAD_BIN
    for n in "$N1" "$N2"; do
        dir="$work/cg-$which-$n"
        pid=$(start "$bin" "$dir" valgrind --tool=callgrind --callgrind-out-file="$work/cg-$which-$n.out")
        load "$n" 10 >/dev/null
        stop "$pid"
        sleep 1
        ir=$(grep -h '^summary:' "$work"/cg-"$which"-"$n".out* | awk '{s+=$2} END {print s}')
        echo "$which $n messages: $ir instructions"
        eval "ir_${which}_$n=$ir"
    done
done
for which in base head; do
    a=$(eval echo "\$ir_${which}_$N1")
    b=$(eval echo "\$ir_${which}_$N2")
    echo "$which: $(( (b - a) / (N2 - N1) )) instructions per message"
done
