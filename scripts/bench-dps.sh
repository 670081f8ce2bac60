#!/usr/bin/env bash
# Zero-touch provisioning: devices provisioned per second and provisioning time, on SQLite and on
# PostgreSQL. Builds a trial PKI and an enrollment group with `tern pki` / `tern dps group create`,
# runs `tern dps serve` pinned to core 0 and `tern dps bench` (N devices, C at a time, each the
# whole client: time, a fresh P-256 key and CSR, ACLs, hub; two TLS handshakes) pinned to core 1.
# PostgreSQL: a private server started with initdb in a temporary directory (as user nobody when
# run as root), pinned to core 0 with the service (the service side on one core, the load on the
# other), stopped at the end. The simulated devices' state files go to tmpfs (see DEVICE_STATE). Writes the section between <!-- bench:dps --> and
# <!-- /bench:dps --> of BENCHMARKS.md, keeping the rest of the file.
#
#   bash scripts/bench-dps.sh [-n DEVICES] [-c CONCURRENCY] [--no-build] [-o FILE]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEVICES=1000
CONCURRENCY=32
BUILD=1
OUT="$ROOT/BENCHMARKS.md"
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        -n|--devices) DEVICES="$2"; shift 2 ;;
        -c|--concurrency) CONCURRENCY="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -o|--output) OUT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-dps: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$DEVICES$CONCURRENCY" in
    *[!0-9]*|"") echo "bench-dps: -n and -c take whole numbers" >&2; exit 2 ;;
esac
log() { printf 'bench-dps: %s\n' "$*" >&2; }

if [ "$BUILD" = 1 ]; then
    cargo build --release -q -p tern-cli
fi
TERN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tern"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
[ -x "$PGBIN/initdb" ] || { log "no PostgreSQL server binaries (bash scripts/install-peers.sh)"; exit 1; }

WORK="$(mktemp -d /tmp/tern-bench-dps.XXXXXX)"
# The simulated devices keep their state files (written durably after every step) on tmpfs
# when there is one: a thousand devices each have their own flash, not this machine's one disk,
# whose inode allocation after thousands of create-and-rename cycles would be measured instead.
# The service's store stays on disk. DPS_DEVICE_STATE=/tmp puts the devices on disk too.
DEVICE_STATE="${DPS_DEVICE_STATE:-/tmp}"
[ -z "${DPS_DEVICE_STATE:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ] && DEVICE_STATE=/dev/shm
chmod 755 "$WORK"
SERVER_PID=""
PG_STARTED=0
as_pg() { if [ "$(id -u)" = 0 ]; then su nobody -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    [ "$PG_STARTED" = 1 ] && as_pg "'$PGBIN/pg_ctl' -D '$WORK/pg/data' -m immediate stop" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cd "$WORK"
"$TERN" pki ca --cn "Bench Maker CA" --name maker >/dev/null
"$TERN" pki ca --cn "Bench DPS CA" --name dpsca >/dev/null
"$TERN" pki ca --cn "Bench Hub CA" --name hubca >/dev/null
"$TERN" pki server --ca-cert dpsca.pem --ca-key dpsca-key.pem --name dps >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run_one STORE-URL LABEL: prints the bench's JSON line.
run_one() {
    local store="$1" port
    port="$(free_port)"
    "$TERN" dps group create --store "$store" --id bench --manufacturer-ca maker.pem --hub-id hub \
        --hub-endpoint coaps+tcp://127.0.0.1:5684 --hub-ca hubca.pem --authorization-code bench \
        --acl '/light/*=rw' >/dev/null
    taskset -c 0 "$TERN" dps serve --store "$store" --bind "127.0.0.1:$port" --ca-cert dpsca.pem \
        --ca-key dpsca-key.pem --cert dps.pem --key dps-key.pem >"$WORK/serve.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do grep -q listening "$WORK/serve.log" && break; sleep 0.1; done
    grep -q listening "$WORK/serve.log" || { log "the service did not start"; cat "$WORK/serve.log" >&2; exit 1; }
    local before after
    before="$(awk '{print $14+$15}' /proc/$SERVER_PID/stat)"
    TMPDIR="$DEVICE_STATE" taskset -c 1 "$TERN" dps bench "coaps+tcp://127.0.0.1:$port" --maker-cert maker.pem \
        --maker-key maker-key.pem --dps-ca dpsca.pem --devices "$DEVICES" \
        --concurrency "$CONCURRENCY" --json >"$WORK/bench.json"
    after="$(awk '{print $14+$15}' /proc/$SERVER_PID/stat)"
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
    python3 - "$WORK/bench.json" "$((after - before))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r["server_cpu"] = int(sys.argv[2]) / int(sys.argv[3]) / r["seconds"]
print(json.dumps(r))
PY
}

log "SQLite: $DEVICES devices, $CONCURRENCY at a time"
SQLITE="$(run_one "sqlite://$WORK/dps.db")"
log "$SQLITE"

mkdir -p "$WORK/pg"
[ "$(id -u)" = 0 ] && chown nobody "$WORK/pg"
PGPORT="$(free_port)"
as_pg "'$PGBIN/initdb' -D '$WORK/pg/data' -A trust -U tern -E UTF8 >/dev/null"
as_pg "taskset -c 0 '$PGBIN/pg_ctl' -D '$WORK/pg/data' -o '-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1' -l '$WORK/pg/log' -w start >/dev/null"
PG_STARTED=1
as_pg "'$PGBIN/createdb' -h 127.0.0.1 -p $PGPORT -U tern dps"
log "PostgreSQL: $DEVICES devices, $CONCURRENCY at a time"
PG="$(run_one "postgres://tern@127.0.0.1:$PGPORT/dps")"
log "$PG"
PGVERSION="$("$PGBIN/postgres" --version | awk '{print $3}')"

cd "$ROOT"
python3 - "$OUT" "$SQLITE" "$PG" "$PGVERSION" "$(git rev-parse --short HEAD)" "$DEVICES" "$CONCURRENCY" "$DEVICE_STATE" <<'PY'
import json, re, sys, datetime, os
out, sqlite, pg, pgv, rev, n, c, state = sys.argv[1:]
state_why = ("tmpfs: a thousand devices have a thousand flash chips, not this machine's one disk, "
             "whose inode allocation after thousands of create-and-rename cycles would be measured "
             "instead" if state == "/dev/shm" else "disk")
rows = [("SQLite (WAL, synchronous=FULL)", json.loads(sqlite)), (f"PostgreSQL {pgv} (fsync on)", json.loads(pg))]
def row(name, r):
    met = "**met**" if r["devices_per_s"] >= 200 else "not met"
    return (f"| {name} | {r['devices_per_s']:,.1f} | {r['p50_ms']:,.0f} | {r['p99_ms']:,.0f} | {r['max_ms']:,.0f} "
            f"| {r['devices']:,} | {r['failed_attempts']} | {r['server_cpu']*100:.0f}% | {met} |")
table = "\n".join(row(name, r) for name, r in rows)
date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
section = f"""<!-- bench:dps -->
## Zero-touch provisioning: devices/s and provisioning time

`tern dps serve` ({rev}) pinned to core 0, with PostgreSQL when that is the store; `tern dps bench`
pinned to core 1 provisions {int(n):,} devices, {c} at a time, each the whole device client: the time
step, a fresh P-256 key and CSR, the identity certificate, ACLs and hub configuration, over two
mutual-TLS coaps+tcp connections (ECDHE-ECDSA P-256), its state saved durably after every step (on
{state}: {state_why}). The service's store is on disk with every commit synced.
Manufacturer certificates are issued before the clock starts. Target: at least 200 devices/s on 2 cores.

| store | devices/s | p50 ms | p99 ms | max ms | devices | failed attempts (retried) | service CPU | target |
|---|---:|---:|---:|---:|---:|---:|---:|---|
{table}

Service CPU is the share of its core the service used over the run: below 100% the service was not
the limit.

- date: {date}
- machine: `nproc` = {os.cpu_count()}
- reproduce: `bash scripts/bench-dps.sh -n {n} -c {c}` (`DPS_DEVICE_STATE=/tmp` puts the devices' state on disk)
<!-- /bench:dps -->"""
text = open(out).read() if os.path.exists(out) else "# Benchmarks\n"
pat = re.compile(r"<!-- bench:dps -->.*?<!-- /bench:dps -->", re.S)
text = pat.sub(lambda _: section, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open(out, "w").write(text)
PY
log "wrote the dps section of $OUT"
