#!/usr/bin/env bash
# Requests/s and latency of `tern serve` vs libcoap's `coap-server-notls`, CoAP over UDP (CON),
# one after the other in the same run, each server pinned to core 0, the load (`tern bench`)
# pinned to core 1, same path (`/`, a short fixed text on both), same concurrency and duration.
# Writes the section between <!-- bench:udp --> and <!-- /bench:udp --> of BENCHMARKS.md,
# keeping the rest of the file.
#
#   bash scripts/bench-vs-libcoap.sh [-c CONCURRENCY] [-d SECONDS] [--no-build] [-o FILE]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CONCURRENCY=32
DURATION=10
BUILD=1
OUT="$ROOT/BENCHMARKS.md"
PATH_UNDER_TEST=/
ORIG_ARGS=("$@")

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        -c|--concurrency) CONCURRENCY="$2"; shift 2 ;;
        -d|--duration) DURATION="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -o|--output) OUT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$CONCURRENCY$DURATION" in *[!0-9]*) echo "bench: -c and -d take whole numbers" >&2; exit 2 ;; esac

log() { printf 'bench: %s\n' "$*" >&2; }

for tool in taskset python3 coap-server-notls; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        if [ "$tool" = coap-server-notls ]; then
            bash "$ROOT/scripts/install-peers.sh" >&2
        else
            log "$tool not found"; exit 1
        fi
    fi
done

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ "$BUILD" -eq 1 ]; then
    log "cargo build --release -p tern-cli"
    cargo build --release -p tern-cli >&2
fi
TERN="$TARGET_DIR/release/tern"
[ -x "$TERN" ] || { log "no release binary at $TERN"; exit 1; }

NPROC="$(nproc)"
SERVER_CPU=0
LOAD_CPU=1
PIN_NOTE=""
if [ "$NPROC" -lt 2 ]; then
    LOAD_CPU=0
    PIN_NOTE=" (only one CPU: load and server share core 0)"
    log "only $NPROC CPU: server and load both on core 0"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tern-bench.XXXXXX")"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 - <<'PY'
import socket
for _ in range(100):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); port = u.getsockname()[1]
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        t.bind(("127.0.0.1", port)); print(port); break
    except OSError:
        pass
    finally:
        t.close(); u.close()
else:
    raise SystemExit("no free port")
PY
}

# CoAP GET of PATH_UNDER_TEST with a bounded number of tries; prints the payload size on success.
probe() {
    python3 - "$1" "$PATH_UNDER_TEST" <<'PY'
import socket, sys, time
port = int(sys.argv[1]); path = [p for p in sys.argv[2].split("/") if p]
opts = b""; last = 0
for seg in path:
    seg = seg.encode(); delta = 11 - last; last = 11
    assert len(seg) < 13
    opts += bytes([(delta << 4) | len(seg)]) + seg
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
for i in range(75):  # about 15 s at most
    mid = 0x1000 + i
    req = bytes([0x41, 0x01, mid >> 8, mid & 0xff, 0x7a]) + opts
    try:
        s.sendto(req, ("127.0.0.1", port))
        data, _ = s.recvfrom(2048)
    except OSError:
        time.sleep(0.1); continue
    if len(data) >= 4 and data[1] >> 5 == 2:
        payload = data.split(b"\xff", 1)[1] if b"\xff" in data[4:] else b""
        print(len(payload)); sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
PY
}

# cpu_ticks PID: user + system clock ticks the process has used so far
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null; }

# run_one NAME COMMAND... : start the server pinned to SERVER_CPU, load it, write $WORK/NAME.json
run_one() {
    local name="$1"; shift
    local port="$1"; shift
    log "starting $name on core $SERVER_CPU: $*"
    taskset -c "$SERVER_CPU" "$@" >"$WORK/$name.log" 2>&1 </dev/null &
    SERVER_PID=$!
    local size
    if ! size="$(probe "$port")"; then
        log "$name did not answer GET $PATH_UNDER_TEST on port $port; its log:"
        cat "$WORK/$name.log" >&2
        exit 1
    fi
    echo "$size" >"$WORK/$name.size"
    local uri="coap://127.0.0.1:$port$PATH_UNDER_TEST"
    log "load on core $LOAD_CPU: tern bench $uri -c $CONCURRENCY -d $DURATION --json"
    # CPU time of the server and of the load generator over the run tells which one limited it.
    local server_ticks0 load_ticks=0 ticks load_pid load_status=0
    server_ticks0="$(cpu_ticks "$SERVER_PID")"
    taskset -c "$LOAD_CPU" "$TERN" bench "$uri" -c "$CONCURRENCY" -d "$DURATION" --json \
        >"$WORK/$name.json" 2>"$WORK/$name.bench.err" </dev/null &
    load_pid=$!
    local deadline=$((SECONDS + DURATION + 60))
    while kill -0 "$load_pid" 2>/dev/null; do
        if ticks="$(cpu_ticks "$load_pid")"; then load_ticks="$ticks"; fi
        if [ "$SECONDS" -gt "$deadline" ]; then kill "$load_pid" 2>/dev/null || true; fi
        sleep 0.2
    done
    wait "$load_pid" || load_status=$?
    if [ "$load_status" -ne 0 ]; then
        log "tern bench against $name failed:"
        cat "$WORK/$name.bench.err" "$WORK/$name.json" >&2
        exit 1
    fi
    local server_ticks1
    server_ticks1="$(cpu_ticks "$SERVER_PID")"
    python3 -c "import sys; hz=float(sys.argv[3]); d=float(sys.argv[4]); print(round(100*float(sys.argv[1])/hz/d), round(100*float(sys.argv[2])/hz/d))" \
        "$((server_ticks1 - server_ticks0))" "$load_ticks" "$(getconf CLK_TCK)" "$DURATION" >"$WORK/$name.cpu"
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    log "$name: $(tail -n 1 "$WORK/$name.json")"
}

TERN_PORT="$(free_port)"
run_one tern "$TERN_PORT" "$TERN" serve --bind "127.0.0.1:$TERN_PORT" --log warn
LIBCOAP_PORT="$(free_port)"
run_one libcoap "$LIBCOAP_PORT" coap-server-notls -A 127.0.0.1 -p "$LIBCOAP_PORT"

CPU_MODEL="$( (grep -m1 '^model name' /proc/cpuinfo 2>/dev/null || true) | sed 's/^[^:]*: *//')"
[ -n "$CPU_MODEL" ] || CPU_MODEL="$(uname -m)"
LIBCOAP_VERSION="$( (coap-server-notls -h 2>&1 || true) | sed -n 's/^coap-server-notls \(v[0-9.]*\).*/\1/p' | head -1)"
TERN_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null; then TERN_REV="$TERN_REV+dirty"; fi
REPRO="bash scripts/bench-vs-libcoap.sh -c $CONCURRENCY -d $DURATION"

python3 - "$OUT" "$WORK" <<PY
import json, sys, datetime, os, re
out, work = sys.argv[1], sys.argv[2]
def load(name):
    text = open(os.path.join(work, name + ".json")).read().strip()
    # the last line that parses as a JSON object
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    return json.loads(text)
t, l = load("tern"), load("libcoap")
size = {n: open(os.path.join(work, n + ".size")).read().strip() for n in ("tern", "libcoap")}
cpu = {n: open(os.path.join(work, n + ".cpu")).read().split() for n in ("tern", "libcoap")}
def num(v, digits=0):
    if v is None: return "n/a"
    return f"{v:,.{digits}f}" if isinstance(v, (int, float)) else str(v)
def ratio(a, b):
    try: return f"{a / b:.2f}"
    except (TypeError, ZeroDivisionError): return "n/a"
rows = []
for name, label, d in (("tern", "Tern (\`tern serve\`, $TERN_REV)", t), ("libcoap", "libcoap $LIBCOAP_VERSION (\`coap-server-notls\`)", l)):
    rows.append(f"| {label} | {num(d.get('rps'))} | {num(d.get('p50_us'))} | {num(d.get('p99_us'))} | {num(d.get('p999_us'))} "
                f"| {num(d.get('retransmissions'))} | {num(d.get('timeouts'))} | {num(d.get('errors'))} | {num(d.get('requests'))} | {size[name]} "
                f"| {cpu[name][0]}% | {cpu[name][1]}% |")
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
section = f"""<!-- bench:udp -->
## CoAP over UDP: requests/s, one server core

GET \`$PATH_UNDER_TEST\` over CON on 127.0.0.1, {int("$CONCURRENCY")} requests in flight, {int("$DURATION")} s per server.
Each server pinned to core $SERVER_CPU (\`taskset -c $SERVER_CPU\`), load from \`tern bench\` pinned to core $LOAD_CPU{"$PIN_NOTE"}; the two servers run one after the other in the same run.

| server | req/s | p50 µs | p99 µs | p99.9 µs | retransmissions | timeouts | errors | requests | payload bytes | server CPU | load CPU |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Tern/libcoap: requests/s **{ratio(t.get('rps'), l.get('rps'))}×**, p99 latency **{ratio(t.get('p99_us'), l.get('p99_us'))}×** (below 1 is faster).

Server CPU and load CPU are the share of one core each process used over the run: a server
below 100% with the load near 100% was limited by the load generator, so its figure is a lower
bound.

- date: {now}
- machine: $CPU_MODEL, \`nproc\` = $NPROC
- reproduce: \`$REPRO\`
  (runs \`taskset -c $SERVER_CPU tern serve --bind 127.0.0.1:PORT --log warn\`, then \`taskset -c $SERVER_CPU coap-server-notls -A 127.0.0.1 -p PORT\`,
  each loaded by \`taskset -c $LOAD_CPU tern bench coap://127.0.0.1:PORT$PATH_UNDER_TEST -c $CONCURRENCY -d $DURATION --json\`)
<!-- /bench:udp -->"""
if os.path.exists(out):
    doc = open(out).read()
else:
    doc = "# Benchmarks\n"
pat = re.compile(r"<!-- bench:udp -->.*?<!-- /bench:udp -->", re.S)
if pat.search(doc):
    doc = pat.sub(lambda m: section, doc, count=1)
else:
    doc = doc.rstrip("\n") + "\n\n" + section + "\n"
open(out, "w").write(doc)
print(section)
PY
log "updated $OUT"
