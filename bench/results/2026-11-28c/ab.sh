#!/bin/bash
# Run from the repository root: bench/results/2026-11-28c/ab.sh PATH/TO/smtpd LABEL (one smtpd, its SQLite store growing across the cells as in compare.sh; 2 runs a cell, 3 s each).
# usage: ab.sh BIN LABEL  -> prints per-cell msgs/s and cpu us/msg; DB grows across cells like the grid
BIN=$1; LABEL=$2
D=${TMPDIR:-/tmp}/ab-$LABEL; rm -rf $D; mkdir -p $D
$BIN --listen 127.0.0.1:2711 --store sqlite:$D/s.sqlite --max-clients 20000 2>$D/log &
PID=$!; sleep 0.7
for size in 1024 10240 102400; do for conns in 1 10 100 1000; do for run in 1 2; do
  c0=$(awk '{print $14+$15}' /proc/$PID/stat)
  out=$(target/release/smtp-bench --server 127.0.0.1:2711 --connections $conns --messages 300000 --duration 3 --size $size --json)
  c1=$(awk '{print $14+$15}' /proc/$PID/stat)
  python3 -c "import json,sys; r=json.loads(sys.argv[1]); n=r['messages']; print('$LABEL', $size, $conns, $run, round(r['messages_per_s']), round(($c1-$c0)/100/n*1e6), r['eod_latency_ms']['p99'])" "$out"
done; done; done
kill $PID; wait $PID 2>/dev/null
ls -la $D | grep sqlite
