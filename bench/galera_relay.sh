#!/usr/bin/env bash
# Relay deliveries per second from a three-node MariaDB Galera cluster on loopback,
# with two relay nodes on two different Galera nodes, into smtp-sink; beside it, in
# the same run, one relay on a single MariaDB (same settings, same build).
#
#   bench/galera_relay.sh                 # N=20000 recipients over 10 domains, 3 runs
#   BIN=target/release/outbound N=10000 RUNS=1 bench/galera_relay.sh
#
# Galera nodes: galera-4's provider, rsync state transfer (joiners' datadirs are
# handed to `nobody`, which the rsync daemon runs as), innodb_flush_log_at_trx_commit
# = 1 like the single server. Reported: rows / seconds from the relays' start to the
# last row delivered. Bounded: 300 s per run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${N:-20000}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
if [ -z "${BIN:-}" ]; then
    cargo build --release -p outbound >/dev/null 2>&1
    BIN=$PWD/target/release/outbound
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

sink=$(free_port)
/usr/sbin/smtp-sink -u nobody 127.0.0.1:"$sink" 1024 &
pids+=($!)

common=(--no-defaults --bind-address=127.0.0.1 --user=root --skip-name-resolve
        --innodb-buffer-pool-size=512M --innodb-flush-log-at-trx-commit=1 --max-connections=500)
# Galera: node 1 bootstraps, 2 and 3 join by rsync.
g=(); for i in 1 2 3; do g[$i]=$(free_port); done
gcomm="gcomm://127.0.0.1:${g[1]},127.0.0.1:${g[2]},127.0.0.1:${g[3]}"
declare -a port
for i in 1 2 3; do
    d="$work/g$i"; mkdir -p "$d/data" "$d/tmp"; chmod 777 "$d/data" "$d/tmp"
    [ "$i" = 1 ] && mariadb-install-db --no-defaults --datadir="$d/data" --user=root \
        --auth-root-authentication-method=normal --skip-test-db >/dev/null 2>&1 && chmod 777 "$d/data"
    port[$i]=$(free_port)
    extra=(); [ "$i" = 1 ] && extra=(--wsrep-new-cluster)
    mariadbd "${common[@]}" --datadir="$d/data" --socket="$d/sock" --port="${port[$i]}" --tmpdir="$d/tmp" \
        --wsrep-on=ON --wsrep-provider=/usr/lib/galera/libgalera_smm.so --wsrep-cluster-address="$gcomm" \
        --wsrep-node-address="127.0.0.1:${g[$i]}" --wsrep-node-name="n$i" \
        --wsrep-provider-options="gmcast.listen_addr=tcp://127.0.0.1:${g[$i]};ist.recv_addr=127.0.0.1:$(free_port);gcache.size=128M" \
        --wsrep-sst-method=rsync --wsrep-sst-receive-address="127.0.0.1:$(free_port)" --wsrep-slave-threads=4 \
        --binlog-format=ROW --innodb-autoinc-lock-mode=2 "${extra[@]}" >"$d/log" 2>&1 &
    pids+=($!)
    for _ in $(seq 300); do
        [ "$(mariadb -S "$d/sock" -uroot -N -B -e "SHOW STATUS LIKE 'wsrep_local_state_comment'" 2>/dev/null | cut -f2)" = Synced ] && break
        sleep 0.2
    done
    [ "$i" = 1 ] && mariadb -S "$d/sock" -uroot -e "CREATE USER 'b'@'127.0.0.1' IDENTIFIED BY 'b'; GRANT ALL ON *.* TO 'b'@'127.0.0.1';"
done
# The single server beside it.
s="$work/single"; mkdir -p "$s"
mariadb-install-db --no-defaults --datadir="$s/data" --user=root --auth-root-authentication-method=normal --skip-test-db >/dev/null 2>&1
sport=$(free_port)
mariadbd "${common[@]}" --datadir="$s/data" --socket="$s/sock" --port="$sport" >"$s/log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do mariadb -S "$s/sock" -uroot -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
mariadb -S "$s/sock" -uroot -e "CREATE USER 'b'@'127.0.0.1' IDENTIFIED BY 'b'; GRANT ALL ON *.* TO 'b'@'127.0.0.1';"

transports=(); for d in $(seq 0 9); do transports+=(--transport "d$d.test=127.0.0.1:$sink"); done
printf '[relay]\npoll_interval_ms = 50\n[delivery]\nhelo_name = "bench.test"\n' >"$work/relay.toml"
insert="SET SESSION max_recursive_iterations = 1000000; INSERT INTO outbound_queue (sender, recipient, body)
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
SELECT 'bench@sender.test', CONCAT('user', i, '@d', i % 10, '.test'),
       CONCAT('From: bench@sender.test\r\nSubject: message ', i, '\r\n\r\nhello ', i, '\r\n') FROM n"

# run LABEL SOCKET-FOR-SQL URL...: one relay per URL, until N delivered.
run() {
    local label=$1 sock=$2; shift 2
    local db="r_${label}_$r"
    mariadb -S "$sock" -uroot -e "CREATE DATABASE $db"
    local urls=(); for p in "$@"; do urls+=("mysql://b:b@127.0.0.1:$p/$db"); done
    "$BIN" --store "${urls[0]}" --migrate stats >/dev/null 2>&1
    sleep 1
    mariadb -S "$sock" -uroot "$db" -e "$insert"
    local start; start=$(date +%s.%N)
    local relays=() k=0
    for u in "${urls[@]}"; do
        k=$((k + 1))
        "$BIN" --store "$u" -c "$work/relay.toml" --threads "$THREADS" --node-id "$label-$k" "${transports[@]}" 2>"$work/relay-$label-$k.log" &
        relays+=($!)
    done
    local deadline=$(( $(date +%s) + 300 )) done_rows=0
    while :; do
        done_rows=$(mariadb -S "$sock" -uroot "$db" -N -e "SELECT COUNT(*) FROM outbound_queue WHERE state = 'delivered'")
        [ "$done_rows" -ge "$N" ] || [ "$(date +%s)" -ge "$deadline" ] && break
        sleep 0.1
    done
    local end; end=$(date +%s.%N)
    for p in "${relays[@]}"; do kill "$p"; wait "$p" || true; done
    local per; per=$(mariadb -S "$sock" -uroot "$db" -N -e "SELECT GROUP_CONCAT(CONCAT(node_id, '=', n)) FROM (SELECT node_id, COUNT(*) n FROM outbound_log GROUP BY node_id) x")
    local secs; secs=$(echo "$end - $start" | bc)
    printf '%-8s %-4s %8s %8.2f %14.0f  %s\n' "$label" "$r" "$done_rows" "$secs" "$(echo "$done_rows / $secs" | bc -l)" "$per"
}

printf '%-8s %-4s %8s %8s %14s  %s\n' store run rows seconds "deliveries/s" "per relay"
for r in $(seq "$RUNS"); do
    run single "$s/sock" "$sport"
    run galera "$work/g1/sock" "${port[1]}" "${port[2]}"
done
