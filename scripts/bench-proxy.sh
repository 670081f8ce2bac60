#!/usr/bin/env bash
# The gateway's benchmark: requests/s and latency through `tern proxy` against calling the
# other side directly, in the same run, both directions. Writes its section of BENCHMARKS.md.
#   bash scripts/bench-proxy.sh                      # -c 16 -d 5 -r 3
#   bash scripts/bench-proxy.sh -c 32 -d 10 -r 5 [--no-build] [-o FILE]
#
# CoAP → HTTP: `tern bench coap://GATEWAY/ --proxy-uri http://BACKEND/` against
#   `tern bench http://BACKEND/`; the backend is `tern bench-http-server` (200 with 16 bytes,
#   Cache-Control: no-store, so the gateway's cache never answers).
# HTTP → CoAP: `tern bench http://GATEWAY-API/providers/dev/time -H 'Authorization: Bearer …'`
#   against `tern bench coap://DEVICE/time`; the device is `tern serve`.
# The gateway is pinned to core 0; the backend, the device and the load to core 1. Its requests
# to the device may have as many in flight as the load (--provider-nstart) and reuse message
# IDs (--provider-reuse-message-ids), as `tern bench` itself does, or CoAP's NSTART 1 and
# message-ID lifetime would be what is measured.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CONCURRENCY=16
DURATION=5
ROUNDS=3
BUILD=1
OUT="$ROOT/BENCHMARKS.md"
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        -c|--concurrency) CONCURRENCY="$2"; shift 2 ;;
        -d|--duration) DURATION="$2"; shift 2 ;;
        -r|--rounds) ROUNDS="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -o|--output) OUT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$CONCURRENCY$DURATION$ROUNDS" in *[!0-9]*) echo "bench: -c, -d and -r take whole numbers" >&2; exit 2 ;; esac

log() { printf 'bench: %s\n' "$*" >&2; }
command -v taskset >/dev/null 2>&1 || { log "taskset not found"; exit 1; }
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ "$BUILD" -eq 1 ]; then
    log "cargo build --release -p tern-cli"
    cargo build --release -p tern-cli >&2
fi
TERN="$TARGET_DIR/release/tern"
[ -x "$TERN" ] || { log "no release binary at $TERN"; exit 1; }
GW_CPU=0
LOAD_CPU=1
[ "$(nproc)" -ge 2 ] || { LOAD_CPU=0; log "only one CPU: everything shares core 0"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tern-bench-proxy.XXXXXX")"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
BACKEND="127.0.0.1:$(free_port)"
DEVICE_PORT="$(free_port)"
GW_PORT="$(free_port)"
API="127.0.0.1:$(free_port)"
TOKEN="bench-token-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$TOKEN" >"$WORK/token"

taskset -c "$LOAD_CPU" "$TERN" bench-http-server --bind "$BACKEND" >"$WORK/backend.log" 2>&1 &
PIDS+=("$!")
taskset -c "$LOAD_CPU" "$TERN" serve --bind "127.0.0.1:$DEVICE_PORT" --no-tcp --log warn >"$WORK/device.log" 2>&1 &
PIDS+=("$!")
taskset -c "$GW_CPU" "$TERN" proxy --bind "127.0.0.1:$GW_PORT" --no-tcp --allow 127.0.0.1 --cache-bytes 0 \
    --http-bind "$API" --http-token-file "$WORK/token" --provider "dev=coap://127.0.0.1:$DEVICE_PORT" \
    --provider-nstart "$CONCURRENCY" --provider-reuse-message-ids \
    --log warn >"$WORK/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
for _ in $(seq 1 100); do
    grep -q "HTTP API listening" "$WORK/gateway.log" 2>/dev/null && grep -q "listening" "$WORK/backend.log" 2>/dev/null && break
    sleep 0.1
done
grep -q "HTTP API listening" "$WORK/gateway.log" || { log "the gateway did not start:"; cat "$WORK/gateway.log" >&2; exit 1; }
sleep 0.3

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null; }
LOAD_AVG="$(cut -d' ' -f1 /proc/loadavg)"

# run NAME ROUND ARGS...: one load run; writes $WORK/NAME.ROUND.{json,cpu}
run() {
    local name="$1" round="$2" g0 g1
    shift 2
    g0="$(cpu_ticks "$GW_PID")"
    taskset -c "$LOAD_CPU" "$TERN" bench -c "$CONCURRENCY" -d "$DURATION" --json "$@" \
        >"$WORK/$name.$round.json" 2>"$WORK/$name.$round.err" </dev/null \
        || { log "tern bench ($name) failed:"; cat "$WORK/$name.$round.err" >&2; exit 1; }
    g1="$(cpu_ticks "$GW_PID")"
    echo "$((g1 - g0))" >"$WORK/$name.$round.cpu"
    log "$name round $round: $(tail -n 1 "$WORK/$name.$round.json")"
}
for round in $(seq 1 "$ROUNDS"); do
    run http-direct "$round" "http://$BACKEND/"
    run coap-to-http "$round" "coap://127.0.0.1:$GW_PORT/" --proxy-uri "http://$BACKEND/"
    run coap-direct "$round" "coap://127.0.0.1:$DEVICE_PORT/time"
    run http-to-coap "$round" "http://$API/providers/dev/time" -H "Authorization: Bearer $TOKEN"
done

TERN_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null; then TERN_REV="$TERN_REV+dirty"; fi
CPU_MODEL="$( (grep -m1 '^model name' /proc/cpuinfo 2>/dev/null || true) | sed 's/^[^:]*: *//')"
REPRO="bash scripts/bench-proxy.sh -c $CONCURRENCY -d $DURATION -r $ROUNDS"

python3 - "$OUT" "$WORK" "$ROUNDS" "$DURATION" "$(getconf CLK_TCK)" <<PY
import json, os, statistics, sys, datetime, re
out, work, rounds, duration, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
def last_json(path):
    for line in reversed(open(path).read().splitlines()):
        if line.strip().startswith("{"):
            return json.loads(line)
    raise SystemExit(f"no JSON in {path}")
med = {}
rows = []
labels = {
    "http-direct": "HTTP client → HTTP server",
    "coap-to-http": "CoAP client → **gateway** → HTTP server",
    "coap-direct": "CoAP client → CoAP device",
    "http-to-coap": "HTTP client → **gateway** → CoAP device",
}
for name in ("http-direct", "coap-to-http", "coap-direct", "http-to-coap"):
    runs = [last_json(os.path.join(work, f"{name}.{r}.json")) for r in range(1, rounds + 1)]
    gw = [float(open(os.path.join(work, f"{name}.{r}.cpu")).read()) for r in range(1, rounds + 1)]
    rps = statistics.median(d["rps"] for d in runs)
    p50 = statistics.median(d["p50_us"] for d in runs)
    p99 = statistics.median(d["p99_us"] for d in runs)
    errors = sum(d.get("errors", 0) + d.get("timeouts", 0) for d in runs)
    gw_cpu = statistics.median(100 * g / hz / duration for g in gw)
    med[name] = (rps, p50, p99)
    rows.append(f"| {labels[name]} | {rps:,.0f} | {p50:,.0f} | {p99:,.0f} | {gw_cpu:.0f} % | {errors} |")
def added(a, b):
    return med[b][1] - med[a][1], med[b][2] - med[a][2], med[b][0] / med[a][0]
c2h = added("http-direct", "coap-to-http")
h2c = added("coap-direct", "http-to-coap")
section = f"""<!-- bench:proxy -->
## The CoAP ⇄ HTTP gateway against calling the other side directly (one run)

\`tern proxy\` (at $TERN_REV, cache off) pinned to core 0; on core 1 the HTTP server (\`tern bench-http-server\`: 200 with
16 bytes), the CoAP device (\`tern serve\`, GET \`/time\`) and the load (\`tern bench\`, $CONCURRENCY requests in flight, {duration:.0f} s,
HTTP/1.1 keep-alive or CoAP CON over UDP), {rounds} rounds of each, alternating; the gateway's requests to the device
with NSTART $CONCURRENCY and message IDs reused, as the load's own. Medians; gateway CPU is its share of
core 0 during the run.

| path | requests/s | p50 µs | p99 µs | gateway CPU | errors |
|---|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

- CoAP → HTTP through the gateway: **{c2h[2]:.2f}×** the requests/s of calling the HTTP server directly, **+{c2h[0]:,.0f} µs** at p50, **+{c2h[1]:,.0f} µs** at p99.
- HTTP → CoAP through the gateway: **{h2c[2]:.2f}×** the requests/s of calling the CoAP device directly, **+{h2c[0]:,.0f} µs** at p50, **+{h2c[1]:,.0f} µs** at p99.
- The direct rows have the load and the server sharing core 1 with nothing in between, so they are the ceiling the
  gateway's rows are compared with; in the gateway rows the load, the far side and the gateway all run.

- date: {datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
- machine: $CPU_MODEL, \`nproc\` = $(nproc); 1-minute load average $LOAD_AVG before the run
- reproduce: \`$REPRO\`
<!-- /bench:proxy -->"""
text = open(out).read() if os.path.exists(out) else "# Benchmarks\n"
pattern = re.compile(r"<!-- bench:proxy -->.*?<!-- /bench:proxy -->", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open(out, "w").write(text)
print(section)
PY
