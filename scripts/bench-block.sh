#!/usr/bin/env bash
# Block-wise throughput (RFC 7959) over loopback, 1024-byte blocks: `tern serve --files` against
# libcoap's `coap-server-notls` (/example_data), one after the other in the same run, each server
# pinned to core 0 and the load to core 1:
#   1. GET of a SIZE-byte body (Block2) and PUT of one (Block1), each request a whole transfer,
#      closed loop with one transfer at a time (`tern bench -b 1024 -c 1`): MB/s of body;
#   2. the same GET by libcoap's client (`coap-client-notls -b 1024`, one process per transfer,
#      so its figure includes process start-up), against both servers.
# Waits (bounded) for a quiet machine first. Writes the section between <!-- bench:block --> and
# <!-- /bench:block --> of BENCHMARKS.md, keeping the rest of the file.
#
#   bash scripts/bench-block.sh [-d SECONDS] [--size BYTES] [--runs N] [--max-load L]
#        [--quiet-wait SECONDS] [--no-build] [-o FILE]
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION=10
SIZE=1048576
RUNS=20
MAX_LOAD=0.7
QUIET_WAIT=120
BUILD=1
OUT="$ROOT/BENCHMARKS.md"

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        -d|--duration) DURATION="$2"; shift 2 ;;
        --size) SIZE="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --max-load) MAX_LOAD="$2"; shift 2 ;;
        --quiet-wait) QUIET_WAIT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -o|--output) OUT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-block: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$SIZE" in ''|*[!0-9]*) echo "bench-block: --size must be a number of bytes" >&2; exit 2 ;; esac
case "$RUNS" in ''|*[!0-9]*|0) echo "bench-block: --runs must be a positive number" >&2; exit 2 ;; esac
[ "$SIZE" -ge 1024 ] && [ "$SIZE" -le 16777216 ] \
    || { echo "bench-block: --size must be between 1024 and 16777216" >&2; exit 2; }

log() { printf 'bench-block: %s\n' "$*" >&2; }
for tool in taskset python3 coap-server-notls coap-client-notls; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        case "$tool" in
            coap-*) bash "$ROOT/scripts/install-peers.sh" >&2 ;;
            *) log "$tool not found"; exit 1 ;;
        esac
    fi
done

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ "$BUILD" -eq 1 ]; then
    log "cargo build --release -p tern-cli"
    cargo build --release -p tern-cli >&2
fi
TERN="$TARGET_DIR/release/tern"
[ -x "$TERN" ] || { log "no release binary at $TERN"; exit 1; }
LOAD_CPU=1
[ "$(nproc)" -ge 2 ] || LOAD_CPU=0

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tern-bench-block.XXXXXX")"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

load1() { cut -d' ' -f1 /proc/loadavg; }
QUIET=no
deadline=$((SECONDS + QUIET_WAIT))
while :; do
    l="$(load1)"
    if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$l" "$MAX_LOAD"; then
        QUIET=yes; break
    fi
    [ "$SECONDS" -lt "$deadline" ] || { log "load average still $l: measuring anyway (reported)"; break; }
    log "load average $l >= $MAX_LOAD: waiting"; sleep 15
done
LOAD_AT_START="$(load1)"

free_port() {
    python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ="$(getconf CLK_TCK)"

head -c "$SIZE" /dev/urandom > "$WORK/body"
mkdir -p "$WORK/files"
cp "$WORK/body" "$WORK/files/body"

# measure NAME URI_GET URI_PUT SERVER_PID: runs the tern bench loads, writes NAME.get.json etc.
measure() {
    local name="$1" get="$2" put="$3" pid="$4" kind t0 t1
    # libcoap's client first (the PUT load below overwrites libcoap's /example_data): RUNS sequential GETs, one process each; the last body checked byte-exact.
    local start end i
    start="$(date +%s.%N)"
    for i in $(seq "$RUNS"); do
        taskset -c "$LOAD_CPU" coap-client-notls -b 1024 -o "$WORK/$name.out" "$get"
    done
    end="$(date +%s.%N)"
    cmp -s "$WORK/body" "$WORK/$name.out" \
        || { log "$name: libcoap's client got a different body"; exit 1; }
    python3 -c "import sys; print(f'{float(sys.argv[3]) * float(sys.argv[4]) / (float(sys.argv[2]) - float(sys.argv[1])) / 1e6:.3f}')" \
        "$start" "$end" "$RUNS" "$SIZE" > "$WORK/$name.libcoap-client"
    for kind in get put; do
        t0="$(cpu_ticks "$pid")"
        if [ "$kind" = get ]; then
            taskset -c "$LOAD_CPU" "$TERN" bench -b 1024 -c 1 -d "$DURATION" --json "$get" \
                > "$WORK/$name.$kind.json"
        else
            taskset -c "$LOAD_CPU" "$TERN" bench -b 1024 -c 1 -d "$DURATION" --json \
                --method put --payload "$SIZE" "$put" > "$WORK/$name.$kind.json"
        fi
        t1="$(cpu_ticks "$pid")"
        echo "$(( t1 - t0 ))" > "$WORK/$name.$kind.ticks"
    done
}

PORT="$(free_port)"
log "tern serve --files on 127.0.0.1:$PORT"
taskset -c 0 "$TERN" serve --bind "127.0.0.1:$PORT" --files "$WORK/files" \
    --files-max-size "$SIZE" >"$WORK/tern.out" 2>&1 </dev/null &
PIDS+=("$!"); TERN_PID=$!
sleep 1
measure tern "coap://127.0.0.1:$PORT/files/body" "coap://127.0.0.1:$PORT/files/put" "$TERN_PID"
cmp -s "$WORK/body" "$WORK/files/body" || { log "tern serve: the served file changed"; exit 1; }
[ "$(stat -c %s "$WORK/files/put")" -eq "$SIZE" ] || { log "tern serve: PUT body incomplete"; exit 1; }
kill "$TERN_PID"; wait "$TERN_PID" 2>/dev/null || true

PORT="$(free_port)"
log "coap-server-notls on 127.0.0.1:$PORT"
taskset -c 0 coap-server-notls -A 127.0.0.1 -p "$PORT" >"$WORK/libcoap.out" 2>&1 </dev/null &
PIDS+=("$!"); LIBCOAP_PID=$!
sleep 1
# /example_data serves what was last PUT: the body first, so GETs move SIZE bytes.
coap-client-notls -m put -b 1024 -f "$WORK/body" "coap://127.0.0.1:$PORT/example_data"
measure libcoap "coap://127.0.0.1:$PORT/example_data" "coap://127.0.0.1:$PORT/example_data" "$LIBCOAP_PID"
kill "$LIBCOAP_PID"; wait "$LIBCOAP_PID" 2>/dev/null || true

LIBCOAP_VERSION="$(coap-client-notls 2>&1 | grep -o 'v[0-9][0-9.]*' | head -1 || true)"
TERN_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
if ! git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null; then TERN_REV="$TERN_REV+dirty"; fi
python3 - "$OUT" "$WORK" <<PY
import json, re, sys, os
out, work = sys.argv[1], sys.argv[2]
hz, duration = $HZ, float("$DURATION")
def row(name, kind):
    r = json.load(open(os.path.join(work, f"{name}.{kind}.json")))
    ticks = int(open(os.path.join(work, f"{name}.{kind}.ticks")).read())
    cpu = ticks / hz / r["duration_s"] * 100
    return r, cpu
rows, ratios = [], {}
for kind, label in (("get", "GET (Block2)"), ("put", "PUT (Block1)")):
    for name, server in (("tern", "Tern (\`tern serve --files\`, $TERN_REV)"),
                         ("libcoap", "libcoap $LIBCOAP_VERSION (\`coap-server-notls\`, /example_data)")):
        r, cpu = row(name, kind)
        ratios.setdefault(kind, {})[name] = r["mb_per_s"]
        rows.append(f"| {server} | {label} | {r['mb_per_s']:.2f} | {r['requests']:,} | {r['p50_us']:,} | {r['p99_us']:,} | {r['retransmissions']} | {r['timeouts']} | {r['errors']} | {cpu:.0f}% |")
client = {n: float(open(os.path.join(work, f"{n}.libcoap-client")).read()) for n in ("tern", "libcoap")}
size = $SIZE
section = f"""<!-- bench:block -->
## Block-wise transfer (RFC 7959): MB/s of body, {size:,} bytes in 1024-byte blocks

Servers on 127.0.0.1 pinned to core 0, one after the other in the same run; the load pinned to core $LOAD_CPU.
\`tern bench -b 1024 -c 1 -d {duration:g}\`: one transfer at a time, each request a whole block-wise transfer
by Tern's client (GET: Block2 with early negotiation of 1024-byte blocks; PUT: Block1), the next as soon as the
last block is answered; MB/s = body bytes moved ÷ time (10^6 bytes). The served and stored bodies are checked
byte-exact after the run. Server CPU is its share of one core over the run.

| server | transfer | MB/s | transfers | p50 µs | p99 µs | retransmissions | timeouts | errors | server CPU |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Tern/libcoap MB/s: GET **{ratios['get']['tern'] / ratios['get']['libcoap']:.2f}×**, PUT **{ratios['put']['tern'] / ratios['put']['libcoap']:.2f}×**.

libcoap's client (\`coap-client-notls -b 1024\`, $RUNS GETs, one process each, start-up included; last body
checked byte-exact): {client['tern']:.2f} MB/s from Tern's server, {client['libcoap']:.2f} MB/s from libcoap's.

A transfer is lock-step — one block per round trip — so these figures are bounded by the loopback round trip
(a single small request's p50 from \`tern bench -c 1\` is the floor per block), not by either server's CPU.

- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), \`nproc\` = $(nproc); 1-minute load average $LOAD_AT_START before the run ({"quiet" if "$QUIET" == "yes" else "NOT quiet: figures are lower bounds"}; threshold $MAX_LOAD)
- reproduce: \`bash scripts/bench-block.sh -d {duration:g} --size {size} --runs $RUNS\`
<!-- /bench:block -->"""
text = open(out).read() if os.path.exists(out) else "# Benchmarks\n"
pat = re.compile(r"<!-- bench:block -->.*?<!-- /bench:block -->", re.S)
text = pat.sub(lambda _: section, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open(out, "w").write(text)
print(section)
PY
log "updated $OUT"
