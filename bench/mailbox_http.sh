#!/usr/bin/env bash
# `smtpd --http` never slows the SMTP side: ingest msgs/s with 100 event-stream
# subscribers and a reader polling at 100 requests/s, against the same server with
# nobody reading; plus the arrival-to-event latency (250 → event), side by side.
#
#   bench/mailbox_http.sh                          # 20,000 × 1 KB, 100 sessions, 3 runs
#   N=50000 SESSIONS=50 RUNS=5 bench/mailbox_http.sh
#
# Each run: a fresh SQLite store (synchronous = full), smtpd with [http] public,
# smtp-bench sending N messages to user0@example.com (its default recipient).
# Variants, alternated run by run so drift on the machine hits all of them:
# - `none`: nobody reads but the probe (below);
# - `readers`: bench/mailbox_http_load.py during the load: 100 streams (one on
#   user0, which gets every message, 99 on mailboxes of their own, as temp-mail
#   readers are), the poller at 100 requests/s on user0's list;
# - `hot`: the same, but all 100 streams on user0: every message is an event for
#   each (the worst case of fan-out: 100 events per message; the Python client
#   reading them shares the 2 cores with the server).
# In every variant a probe message goes every 50 ms to a second address whose
# stream times 250 → event. Prints one line per run, then medians and ratios.
# Bounded: smtp-bench has a 120 s cap, the load script 300 s.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${N:-20000}
SESSIONS=${SESSIONS:-100}
RUNS=${RUNS:-3}
SIZE=${SIZE:-1024}
SUBSCRIBERS=${SUBSCRIBERS:-100}
POLL_RATE=${POLL_RATE:-100}

cargo build --release -p smtpd -p bench >/dev/null 2>&1
SMTPD=$PWD/target/release/smtpd
BENCH=$PWD/target/release/smtp-bench
LOAD=$PWD/bench/mailbox_http_load.py

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

work=$(mktemp -d)
pid=""
load_pid=""
cleanup() {
    [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

results="$work/results"
: >"$results"
for run in $(seq "$RUNS"); do
    for variant in none readers hot; do
        rm -rf "$work/store"; mkdir -p "$work/store"
        db="$work/store/smtpd.sqlite"
        port=$(free_port)
        hport=$(free_port)
        cat >"$work/smtpd.toml" <<TOML
[server]
accept_domains = ["example.com"]
[http]
listen = "127.0.0.1:$hport"
public = true
rate_per_ip = 0
max_streams_per_ip = 1000
TOML
        "$SMTPD" -c "$work/smtpd.toml" --listen "127.0.0.1:$port" --store "sqlite:$db" 2>"$work/smtpd.log" &
        pid=$!
        for _ in $(seq 100); do grep -q 'smtpd: listening on' "$work/smtpd.log" && break; sleep 0.1; done
        rm -f "$work/stop" "$work/load.out"
        case $variant in
            none) subs=0; hot=0; rate=0 ;;
            readers) subs=$SUBSCRIBERS; hot=1; rate=$POLL_RATE ;;
            hot) subs=$SUBSCRIBERS; hot=$SUBSCRIBERS; rate=$POLL_RATE ;;
        esac
        /usr/bin/python3 "$LOAD" "127.0.0.1:$hport" "127.0.0.1:$port" "$work/stop" \
            --subscribers "$subs" --hot "$hot" --poll-rate "$rate" >"$work/load.out" 2>"$work/load.err" &
        load_pid=$!
        for _ in $(seq 300); do grep -qs '^ready' "$work/load.out" && break; sleep 0.1; done
        grep -q '^ready' "$work/load.out" || { cat "$work/load.err" >&2; exit 1; }
        before=$(cpu_ticks "$pid")
        out=$("$BENCH" --server "127.0.0.1:$port" --connections "$SESSIONS" --messages "$N" \
            --size "$SIZE" --duration 120 --json 2>/dev/null)
        after=$(cpu_ticks "$pid")
        touch "$work/stop"
        wait "$load_pid" || true; load_pid=""
        readers=$(tail -1 "$work/load.out")
        kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
        python3 - "$run" "$variant" "$out" "$readers" "$before" "$after" "$(getconf CLK_TCK)" <<'PY' | tee -a "$results"
import json, sys
run, variant, bench, readers, before, after, tck = sys.argv[1:8]
b, r = json.loads(bench), json.loads(readers)
cpu = (int(after) - int(before)) * 1e6 / int(tck) / max(b["messages"], 1)
print(json.dumps({"run": int(run), "variant": variant, "msgs_per_s": round(b["messages_per_s"]),
                  "messages": b["messages"], "eod_p99_ms": b["eod_latency_ms"].get("p99"),
                  "server_cpu_us_per_msg": round(cpu, 1), **r}))
PY
    done
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(variant, key):
    vals = [r[key] for r in rows if r["variant"] == variant and r.get(key) is not None]
    return statistics.median(vals) if vals else None
a, b, c = med("none", "msgs_per_s"), med("readers", "msgs_per_s"), med("hot", "msgs_per_s")
print("| variant | msgs/s (median) | server CPU µs/msg | 250→event p50 / p99 ms | events per stream (min) | resyncs | polls done |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for v in ("none", "readers", "hot"):
    print(f"| {v} | {med(v, 'msgs_per_s'):,.0f} | {med(v, 'server_cpu_us_per_msg')} | "
          f"{med(v, 'probe_ms_p50')} / {med(v, 'probe_ms_p99')} | {med(v, 'events_min')} | "
          f"{med(v, 'resyncs')} | {med(v, 'polls')} |")
print(f"\nratio readers/none (msgs/s medians): ×{b / a:.3f}; hot/none: ×{c / a:.3f}")
PY
