#!/usr/bin/env bash
# Campaigns on SQLite: (1) how fast the runner expands a list into the queue,
# (2) how fast the relay delivers a campaign, tags filled per recipient, into a
# loopback sink (Postfix's smtp-sink, which discards), as bench/relay.sh does.
#
#   bench/campaign.sh                              # both, 3 runs each
#   EXPAND_N=1000000 SEND_N=200000 RUNS=3 THREADS=2 bench/campaign.sh
#   PHASES=expand bench/campaign.sh                # one of them
#   PERF=/tmp/relay.perf PHASES=send RUNS=1 bench/campaign.sh   # profile the relay
#
# Each run uses a fresh SQLite file: one account, one single opt-in list of N
# subscribers (made with one INSERT ... SELECT over a recursive CTE; each with a
# name and a `code` attribute) spread over 10 domains d0..d9.test, all routed to
# the sink with --transport. The campaign is created as a draft with SQL (its
# template, its list) and started with `outbound campaign start` (the real
# transition); a relay started before runs the runner.
#
# (1) expand: messages_per_second = 1, so the rows are due one a second and the
#     relay delivers next to nothing while it expands; campaigns.backlog above N,
#     expand_batch 100,000, interval 10 ms. Reported: recipients queued per second
#     from campaigns.started_at to the commit that set expand_done (its
#     updated_at), i.e. the runner's own time, all windows included.
# (2) send: no rate, backlog 100,000, expand_batch 20,000: expansion and delivery
#     overlap as in production. Reported: deliveries per second from the first to
#     the last delivery of the campaign in outbound_log.
# Median of RUNS, and the ratio to the targets (100,000/s and 20,000/s). Every
# wait is bounded (600 s per run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

EXPAND_N=${EXPAND_N:-1000000}
SEND_N=${SEND_N:-200000}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
PHASES=${PHASES:-"expand send"}
LIMIT_SECS=600

if ! [ -x /usr/sbin/smtp-sink ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix sqlite3 >/dev/null
fi
# BIN=path runs another build (an A/B of two commits).
if [ -z "${BIN:-}" ]; then
    cargo build --release -p outbound >/dev/null 2>&1
    BIN=$PWD/target/release/outbound
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work=$(mktemp -d)
pids=()
relay_pid=""
cleanup() {
    for p in "${pids[@]}" $relay_pid; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

port=$(free_port)
/usr/sbin/smtp-sink -u nobody 127.0.0.1:"$port" 1024 &
pids+=($!)
sleep 0.5
transports=()
for d in $(seq 0 9); do transports+=(--transport "d$d.test=127.0.0.1:$port"); done

# sqlite3 waiting for the relay's write lock instead of failing at once.
sq() { sqlite3 -cmd ".timeout 10000" "$@"; }

median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# A fresh store with N subscribers on list 1 and a draft campaign 1 (rate $2,
# 'NULL' for none); prints the store path.
prepare() {
    local n=$1 rate=$2 db="$work/q_$RANDOM$RANDOM.sqlite"
    "$BIN" --store "sqlite:$db" stats >/dev/null 2>&1
    "$BIN" --store "sqlite:$db" account add bench >/dev/null
    sq "$db" >/dev/null <<SQL
PRAGMA journal_mode=WAL;
INSERT INTO lists (account_id, name, opt_in) VALUES (1, 'all', 'single');
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $n)
INSERT INTO subscribers (account_id, email, email_key, name, attributes)
SELECT 1, 'user' || i || '@d' || (i % 10) || '.test', 'user' || i || '@d' || (i % 10) || '.test',
       'User ' || i, '{"code": "C' || i || '"}' FROM n;
INSERT INTO list_members (list_id, subscriber_id, status) SELECT 1, id, 'confirmed' FROM subscribers;
INSERT INTO outbound_templates (name, from_header, subject, text_body)
VALUES ('campaign-bench', 'Bench <bench@sender.test>', 'Hello [Name]',
        'Dear [Name] <[Email]>,' || char(13, 10) || 'your code is [code].' || char(13, 10));
INSERT INTO campaigns (account_id, name, template_id, sender, messages_per_second)
VALUES (1, 'bench', 1, 'bench@sender.test', $rate);
INSERT INTO campaign_lists (campaign_id, list_id, kind) VALUES (1, 1, 'include');
SQL
    echo "$db"
}

# Starts the relay with [campaigns] settings $2; waits for its heartbeat.
relay() {
    local db=$1 campaigns=$2
    cat >"$work/relay.toml" <<TOML
[relay]
poll_interval_ms = 50
batch_size = ${BATCH:-256}
max_in_flight = ${IN_FLIGHT:-5000}
[delivery]
helo_name = "bench.test"
[campaigns]
$campaigns
TOML
    local perf=()
    if [ -n "${PERF:-}" ]; then perf=(perf record -F 499 -g -o "$PERF"); fi
    "${perf[@]}" "$BIN" --store "sqlite:$db" -c "$work/relay.toml" --threads "$THREADS" "${transports[@]}" 2>"$work/relay.log" &
    relay_pid=$!
    local deadline=$(( $(date +%s) + 30 ))
    until [ "$(sq "$db" 'SELECT COUNT(*) FROM outbound_nodes')" -gt 0 ] || [ "$(date +%s)" -ge "$deadline" ]; do sleep 0.1; done
}

wait_until() { # SQL returning 1 when done
    local db=$1 sql=$2 deadline=$(( $(date +%s) + LIMIT_SECS ))
    until [ "$(sq "$db" "$sql")" = 1 ]; do
        if [ "$(date +%s)" -ge "$deadline" ]; then echo "run did not finish in ${LIMIT_SECS}s" >&2; tail -5 "$work/relay.log" >&2; return 1; fi
        sleep 0.2
    done
}

commit=$(git rev-parse --short HEAD)
echo "commit $commit, $(nproc) cores, threads $THREADS, runs $RUNS"

if [[ " $PHASES " == *" expand "* ]]; then
    rates=()
    printf '%-8s %-4s %12s %12s %16s\n' phase run recipients seconds "recipients/s"
    for r in $(seq "$RUNS"); do
        db=$(prepare "$EXPAND_N" 1)
        relay "$db" "backlog = $((EXPAND_N + 1000))
expand_batch = 100000
interval_ms = 10"
        "$BIN" --store "sqlite:$db" campaign start 1 >/dev/null
        wait_until "$db" "SELECT expand_done FROM campaigns WHERE id = 1" || true
        read -r n secs < <(sq -separator ' ' "$db" \
            "SELECT recipients, (julianday(updated_at) - julianday(started_at)) * 86400 FROM campaigns WHERE id = 1")
        kill "$relay_pid"; wait "$relay_pid" || true
        rate=$(echo "$n / $secs" | bc -l)
        rates+=("$rate")
        printf '%-8s %-4s %12s %12.2f %16.0f\n' expand "$r" "$n" "$secs" "$rate"
        rm -f "$db"*
    done
    m=$(printf '%s\n' "${rates[@]}" | median)
    printf 'expand median: %.0f recipients/s (x%.2f of 100,000/s)\n' "$m" "$(echo "$m / 100000" | bc -l)"
fi

if [[ " $PHASES " == *" send "* ]]; then
    rates=()
    printf '%-8s %-4s %12s %12s %16s\n' phase run delivered seconds "deliveries/s"
    for r in $(seq "$RUNS"); do
        db=$(prepare "$SEND_N" NULL)
        relay "$db" "backlog = 100000
expand_batch = 20000
interval_ms = 50"
        "$BIN" --store "sqlite:$db" campaign start 1 >/dev/null
        wait_until "$db" "SELECT state = 'finished' FROM campaigns WHERE id = 1" || true
        kill "$relay_pid"; wait "$relay_pid" || true
        read -r n secs < <(sq -separator ' ' "$db" \
            "SELECT COUNT(*), (julianday(MAX(at)) - julianday(MIN(at))) * 86400 FROM outbound_log \
             WHERE campaign_id = 1 AND outcome = 'delivered'")
        rate=$(echo "$n / $secs" | bc -l)
        rates+=("$rate")
        printf '%-8s %-4s %12s %12.2f %16.0f\n' send "$r" "$n" "$secs" "$rate"
        rm -f "$db"*
    done
    m=$(printf '%s\n' "${rates[@]}" | median)
    printf 'send median: %.0f deliveries/s (x%.2f of 20,000/s)\n' "$m" "$(echo "$m / 20000" | bc -l)"
fi
