#!/usr/bin/env bash
# Click redirects of `outbound web` on SQLite: `GET /l/<token>` → 302, the click
# written by the batching writer task. Two runs of oha against one masked link:
# (1) a bounded load of N requests over C connections, as fast as they go;
# (2) a fixed rate of RATE requests/s for SECS seconds (latency at a steady load).
# Reported by oha: requests/s and the latency percentiles; then the clicks the
# writer committed (every request must be one row: none dropped).
#
#   bench/clicks.sh                                   # N=20000 C=50 RATE=2000 SECS=10
#   N=100000 C=100 bench/clicks.sh
#
# The store: one account, a campaign (as SQL) with one link; the token is minted
# here in Python from the documented format (outbound/src/tracking/token.rs) with
# the same key as the web's [tracking] section.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${N:-20000}
C=${C:-50}
RATE=${RATE:-2000}
SECS=${SECS:-10}
KEY=bench-tracking-key-0123456789

# oha from crates.io (LOAD=python: the stdlib client bench/clicks_load.py instead).
LOAD=${LOAD:-oha}
if [ "$LOAD" = oha ] && ! command -v oha >/dev/null; then cargo install oha --locked >/dev/null; fi
command -v sqlite3 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends sqlite3 >/dev/null
if [ -z "${BIN:-}" ]; then
    cargo build --release -p outbound >/dev/null 2>&1
    BIN=$PWD/target/release/outbound
fi

work=$(mktemp -d)
web_pid=""
cleanup() {
    if [ -n "$web_pid" ]; then kill "$web_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

db=$work/q.sqlite
"$BIN" --store "sqlite:$db" stats >/dev/null 2>&1
"$BIN" --store "sqlite:$db" account add bench >/dev/null
sqlite3 -cmd ".timeout 10000" "$db" >/dev/null <<'SQL'
PRAGMA journal_mode=WAL;
INSERT INTO outbound_templates (name, from_header, subject, text_body)
VALUES ('campaign-bench', 'Bench <bench@sender.test>', 's', 'https://example.com/landing?x=1#y');
INSERT INTO campaigns (account_id, name, template_id, sender, tracking_domains)
VALUES (1, 'bench', 1, 'bench@sender.test', '["t.bench.test"]');
INSERT INTO campaign_links (campaign_id, url, url_sha256) VALUES (1, 'https://example.com/landing?x=1#y', 'x');
SQL
cat >"$work/web.toml" <<TOML
[tracking]
key = "$KEY"
scheme = "http"
TOML
"$BIN" --store "sqlite:$db" -c "$work/web.toml" web --listen 127.0.0.1:0 >"$work/web.out" 2>"$work/web.log" &
web_pid=$!
for _ in $(seq 100); do grep -q listening "$work/web.out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^outbound web: listening on //p' "$work/web.out")
token=$(python3 - "$KEY" <<'PY'
import base64, hashlib, hmac, sys
def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7f; v >>= 7
        if v: out.append(b | 0x80)
        else: out.append(b); return bytes(out)
payload = bytes([1]) + varint(1) + varint(1) + varint(12345)
tag = hmac.new(sys.argv[1].encode(), b"outbound-tracking-v1\0" + payload, hashlib.sha256).digest()[:12]
print(base64.urlsafe_b64encode(payload + tag).rstrip(b"=").decode())
PY
)
url="http://$addr/l/$token"
code=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "$url")
[ "${code%% *}" = 302 ] || { echo "expected 302, got $code" >&2; cat "$work/web.log" >&2; exit 1; }

echo "commit $(git rev-parse --short HEAD), $(nproc) cores, $(uname -m), release build, SQLite (WAL)"
echo "== bounded: $N requests over $C connections ($LOAD)"
if [ "$LOAD" = oha ]; then
    oha --no-tui --redirect 0 -n "$N" -c "$C" "$url"
else
    python3 bench/clicks_load.py "$url" "$N" "$C"
fi
echo "== fixed rate: $RATE requests/s for ${SECS}s over $C connections ($LOAD)"
if [ "$LOAD" = oha ]; then
    oha --no-tui --redirect 0 -q "$RATE" -z "${SECS}s" -c "$C" "$url"
else
    python3 bench/clicks_load.py "$url" $(( RATE * SECS )) "$C" "$RATE"
fi
sleep 1
want=$(( 1 + N ))
got=$(sqlite3 -cmd ".timeout 10000" "$db" "SELECT COUNT(*) FROM clicks")
echo "clicks recorded: $got (bounded run $N + 1 check + the fixed-rate run's); dropped (log lines): $(grep -c 'dropped' "$work/web.log" || true)"
[ "$got" -ge "$want" ] || { echo "fewer clicks than requests of the bounded run" >&2; exit 1; }
