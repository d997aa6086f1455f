# Sourced by bench/compare.sh and bench/ab.sh: a private, durable MariaDB for a run.
#   start_bench_mariadb DATADIR SOCKET LOG   # sets DB_PORT and DB_PID; user b/b over TCP
# Needs free_port from the caller. InnoDB flushes its log at every commit
# (innodb_flush_log_at_trx_commit=1), as the durable SQLite store fsyncs.
start_bench_mariadb() {
    local datadir=$1 sock=$2 log=$3
    mariadb-install-db --no-defaults --datadir="$datadir" --user=root --auth-root-authentication-method=normal --skip-test-db >/dev/null 2>&1
    DB_PORT=$(free_port)
    mariadbd --no-defaults --datadir="$datadir" --socket="$sock" --port="$DB_PORT" --bind-address=127.0.0.1 \
        --user=root --innodb-buffer-pool-size=1G --innodb-log-file-size=512M --innodb-flush-log-at-trx-commit=1 >"$log" 2>&1 &
    DB_PID=$!
    for _ in $(seq 150); do mariadb --no-defaults -S "$sock" -uroot -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
    mariadb --no-defaults -S "$sock" -uroot -e "CREATE USER 'b'@'127.0.0.1' IDENTIFIED BY 'b'; GRANT ALL ON *.* TO 'b'@'127.0.0.1';"
}

# With STORE=mysql: start_bench_mariadb in WORK/mysql (socket WORK/db.sock, log
# WORK/db.log); otherwise nothing.
start_bench_mariadb_for_store() {
    [ "${STORE:-sqlite}" = mysql ] || return 0
    mkdir -p "$1/mysql"
    start_bench_mariadb "$1/mysql" "$1/db.sock" "$1/db.log"
}
