#!/usr/bin/env bash
# The cost of smtpd's per-transaction log line (issue 20, "Logs"): one smtpd binary
# under `valgrind --tool=callgrind` (all threads), with the line off
# (SMTPD_LOG=warn) and on (the default, info, text to a file), each once with N1 and
# once with N2 messages; (Ir(N2) − Ir(N1)) / (N2 − N1) cancels start-up and
# shutdown. RUNS repetitions, medians printed.
#
#   BIN=target/release/smtpd BENCH_BIN=target/release/smtp-bench bench/txlog.sh
#
# Binds 127.0.0.1 only; everything lives in a temp dir.
set -euo pipefail
BIN=${BIN:-target/release/smtpd}
BENCH_BIN=${BENCH_BIN:-target/release/smtp-bench}
RUNS=${RUNS:-3}
N1=${N1:-500}
N2=${N2:-1500}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))

ir() { # level messages → instructions
    local dir="$work/$1-$2-$RANDOM"
    mkdir -p "$dir"
    SMTPD_LOG=$1 valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
        "$BIN" --listen "127.0.0.1:$port" --store "sqlite:$dir/s.sqlite" --hostname bench.test \
        --log-file "$dir/log" >/dev/null 2>"$dir/stderr" &
    local pid=$!
    for _ in $(seq 1 600); do
        grep -q "listening on" "$dir/stderr" 2>/dev/null && break
        sleep 0.1
    done
    "$BENCH_BIN" --server "127.0.0.1:$port" --connections 10 --messages "$2" --size 1024 \
        --duration 600 --json >/dev/null
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    grep -h '^summary:' "$dir"/cg.out* | awk '{s+=$2} END {print s}'
}

declare -A per
for run in $(seq 1 "$RUNS"); do
    for level in warn info; do
        a=$(ir "$level" "$N1")
        b=$(ir "$level" "$N2")
        p=$(( (b - a) / (N2 - N1) ))
        per[$level]+="$p "
        echo "run $run $level: $p instructions per message"
    done
done
python3 - "${per[warn]}" "${per[info]}" <<'PY'
import statistics, sys
off = [int(x) for x in sys.argv[1].split()]
on = [int(x) for x in sys.argv[2].split()]
mo, mi = statistics.median(off), statistics.median(on)
print(f"median line off {mo:.0f}, line on {mi:.0f} instructions per message, on/off {mi/mo:.3f}")
PY
