#!/usr/bin/env bash
# CoAP over DTLS 1.2 with PSK: `tern serve` vs libcoap's `coap-server-openssl`, one after the
# other in the same run, each server pinned to core 0, the load pinned to core 1:
#   1. full handshakes/s (`tern dtls-load handshakes`: new session per handshake, close_notify),
#   2. requests/s over established sessions, under two loads: `tern bench coaps://... -u -k` (the
#      full client) and `tern dtls-load requests` (the record layer driven directly, so cheap per
#      request that one load core keeps either server busy: the target is judged on it),
#   3. memory per idle session at N sessions (`tern dtls-load sessions`: N sockets, one GET each),
#   4. a flood of spoofed ClientHellos from distinct source addresses (`tern dtls-load flood`)
#      while a legitimate client (`tern bench -c 1`) keeps requesting: Tern only.
# Waits (bounded) for a quiet machine first. Writes the section between <!-- bench:dtls --> and
# <!-- /bench:dtls --> of BENCHMARKS.md, keeping the rest of the file. --memory-only runs part 3
# alone and prints its rows, writing nothing.
#
#   bash scripts/bench-dtls.sh [-d SECONDS] [-c CONCURRENCY] [--hs-concurrency N] [-n SESSIONS]
#        [--flood N] [--flood-rate PER_S] [--max-load L] [--quiet-wait SECONDS] [--no-build] [-o FILE]
#        [--memory-only]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION=10
CONCURRENCY=32
HS_CONCURRENCY=32
SESSIONS=10000
FLOOD=100000
FLOOD_RATE=20000
MAX_LOAD=0.7
QUIET_WAIT=1200
BUILD=1
OUT="$ROOT/BENCHMARKS.md"
IDENTITY=bench
KEY=bench-secret-0123
HINT=CoAP

MEMORY_ONLY=0

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        -d|--duration) DURATION="$2"; shift 2 ;;
        -c|--concurrency) CONCURRENCY="$2"; shift 2 ;;
        --hs-concurrency) HS_CONCURRENCY="$2"; shift 2 ;;
        -n|--sessions) SESSIONS="$2"; shift 2 ;;
        --flood) FLOOD="$2"; shift 2 ;;
        --flood-rate) FLOOD_RATE="$2"; shift 2 ;;
        --max-load) MAX_LOAD="$2"; shift 2 ;;
        --quiet-wait) QUIET_WAIT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --memory-only) MEMORY_ONLY=1; shift ;;
        -o|--output) OUT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-dtls: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$DURATION$CONCURRENCY$HS_CONCURRENCY$SESSIONS$FLOOD$FLOOD_RATE$QUIET_WAIT" in
    *[!0-9]*) echo "bench-dtls: numeric arguments take whole numbers" >&2; exit 2 ;;
esac
[ "$FLOOD_RATE" -gt 0 ] || { echo "bench-dtls: --flood-rate must be positive" >&2; exit 2; }

log() { printf 'bench-dtls: %s\n' "$*" >&2; }

for tool in taskset python3 coap-server-openssl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        if [ "$tool" = coap-server-openssl ]; then
            bash "$ROOT/scripts/install-peers.sh" >&2
        else
            log "$tool not found"; exit 1
        fi
    fi
done

# One socket per idle session on the load side, plus the server's own: raise the fd limit.
NEED_FDS=$((SESSIONS + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NEED_FDS" ]; then
    HARD="$(ulimit -Hn)"
    if [ "$HARD" = unlimited ] || [ "$HARD" -ge "$NEED_FDS" ]; then
        ulimit -n "$NEED_FDS"
    else
        ulimit -n "$HARD"
        log "fd limit capped at $HARD; sessions lowered to $((HARD - 1024))"
        SESSIONS=$((HARD - 1024))
    fi
fi

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

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tern-bench-dtls.XXXXXX")"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
    done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a command in the background, remembered for cleanup; its pid in LAST_PID.
start_bg() {
    local out="$1" err="$2"; shift 2
    "$@" >"$out" 2>"$err" </dev/null &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}
stop() {
    local pid="$1"
    if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
}

load1() { cut -d' ' -f1 /proc/loadavg; }
# Waits until the 1-minute load average is below MAX_LOAD, at most QUIET_WAIT seconds.
wait_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT)) l
    while :; do
        l="$(load1)"
        if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$l" "$MAX_LOAD"; then
            log "load average $l: quiet enough"
            QUIET=yes; return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "load average still $l after ${QUIET_WAIT}s: measuring anyway (reported)"
            QUIET=no; return 0
        fi
        log "load average $l >= $MAX_LOAD: waiting"
        sleep 15
    done
}

free_port_pair() {
    python3 - <<'PY'
import socket
for _ in range(200):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); port = u.getsockname()[1]
    ok = True
    for p in (port, port + 1):
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            if p == port and kind == socket.SOCK_DGRAM:
                continue
            s = socket.socket(socket.AF_INET, kind)
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
    u.close()
    if ok and port < 65535:
        print(port); break
else:
    raise SystemExit("no free port pair")
PY
}

# cpu_ticks PID: user + system clock ticks the process has used so far
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null; }
# busy_ticks: user+nice+system+steal ticks of the whole machine so far (not irq/softirq: the
# loopback traffic of the benchmark itself is mostly processed there)
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $9}' /proc/stat; }
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null; }
HZ="$(getconf CLK_TCK)"

# start_server NAME [cert]: starts tern or libcoap on core SERVER_CPU with the PSK (or, with
# `cert`, the test server certificate), waits until a coaps GET works; sets SERVER_PID, DTLS_PORT.
start_server() {
    local name="$1" kind="${2:-psk}" port
    port="$(free_port_pair)"
    DTLS_PORT=$((port + 1))
    case "$name.$kind" in
        tern.psk)
            # Same identity hint as libcoap's default, so both servers send the same flights.
            start_bg "$WORK/$name.out" "$WORK/$name.log" taskset -c "$SERVER_CPU" "$TERN" serve \
                --bind "127.0.0.1:$port" --dtls-bind "127.0.0.1:$DTLS_PORT" \
                --psk-identity "$IDENTITY" --psk-key "$KEY" --psk-hint "$HINT" --log warn ;;
        tern.cert)
            start_bg "$WORK/$name.out" "$WORK/$name.log" taskset -c "$SERVER_CPU" "$TERN" serve \
                --bind "127.0.0.1:$port" --dtls-bind "127.0.0.1:$DTLS_PORT" \
                --cert "$CERTS/server.pem" --key "$CERTS/server.key" --log warn ;;
        libcoap.psk)
            start_bg "$WORK/$name.out" "$WORK/$name.log" taskset -c "$SERVER_CPU" \
                coap-server-openssl -A 127.0.0.1 -p "$port" -k "$KEY" ;;
        libcoap.cert)
            # -n: no client certificate asked for, as on Tern's side.
            start_bg "$WORK/$name.out" "$WORK/$name.log" taskset -c "$SERVER_CPU" \
                coap-server-openssl -A 127.0.0.1 -p "$port" -c "$CERTS/server.pem" -j "$CERTS/server.key" -n ;;
    esac
    SERVER_PID=$LAST_PID
    local i creds=(-u "$IDENTITY" -k "$KEY")
    [ "$kind" = cert ] && creds=(-C "$CERTS/ca.pem")
    for i in $(seq 1 30); do
        if "$TERN" get "${creds[@]}" --timeout 1 "coaps://127.0.0.1:$DTLS_PORT/" \
            >"$WORK/$name.probe" 2>&1; then
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.2
    done
    log "$name ($kind) did not answer a coaps GET on port $DTLS_PORT; its log:"
    cat "$WORK/$name.log" "$WORK/$name.probe" >&2
    exit 1
}

# measure TAG SECONDS_BOUND COMMAND...: measure_once, repeated (at most 3 tries) while other
# work on the machine took more than 15% of a core; keeps the least disturbed try, whatever
# its figures.
measure() {
    local tag="$1" try best=999 other
    for try in 1 2 3; do
        measure_once "$@"
        other="$(awk '{print $3}' "$WORK/$tag.cpu")"
        if [ "$other" -lt "$best" ]; then
            best="$other"
            cp "$WORK/$tag.json" "$WORK/$tag.best.json"; cp "$WORK/$tag.cpu" "$WORK/$tag.best.cpu"
        fi
        [ "$other" -le 15 ] && break
        log "$tag: other work took $other% of a core during the run; measuring again"
        sleep 5
    done
    cp "$WORK/$tag.best.json" "$WORK/$tag.json"; cp "$WORK/$tag.best.cpu" "$WORK/$tag.cpu"
}

# measure_once TAG SECONDS_BOUND COMMAND...: runs the load pinned to LOAD_CPU against SERVER_PID,
# writes $WORK/TAG.json (its stdout) and $WORK/TAG.cpu (server%, load%, other%).
measure_once() {
    local tag="$1" bound="$2"; shift 2
    local s0 b0 load_ticks=0 ticks load_pid status=0 t0 t1
    s0="$(cpu_ticks "$SERVER_PID")"; b0="$(busy_ticks)"; t0="$(date +%s.%N)"
    start_bg "$WORK/$tag.json" "$WORK/$tag.err" taskset -c "$LOAD_CPU" "$@"
    load_pid=$LAST_PID
    local deadline=$((SECONDS + bound))
    while kill -0 "$load_pid" 2>/dev/null; do
        if ticks="$(cpu_ticks "$load_pid")"; then load_ticks="$ticks"; fi
        if [ "$SECONDS" -gt "$deadline" ]; then kill "$load_pid" 2>/dev/null || true; fi
        sleep 0.2
    done
    wait "$load_pid" || status=$?
    t1="$(date +%s.%N)"
    if [ "$status" -ne 0 ]; then
        log "$tag: load failed (status $status):"
        cat "$WORK/$tag.err" "$WORK/$tag.json" >&2
        exit 1
    fi
    python3 -c "
import sys
hz, wall = float(sys.argv[5]), float(sys.argv[7]) - float(sys.argv[6])
s, l, b = (float(x) for x in sys.argv[1:4])
pct = lambda t: round(100 * t / hz / wall)
print(pct(s), pct(l), max(0, pct(b - s - l)))" \
        "$(( $(cpu_ticks "$SERVER_PID") - s0 ))" "$load_ticks" "$(( $(busy_ticks) - b0 ))" x "$HZ" "$t0" "$t1" \
        >"$WORK/$tag.cpu"
    log "$tag: $(tail -n 1 "$WORK/$tag.json") cpu(server load other)%: $(cat "$WORK/$tag.cpu")"
}

CERTS="$WORK/certs"
HAS_CERT=no
if "$TERN" serve --help 2>/dev/null | grep -q -- '--cert'; then
    HAS_CERT=yes
    bash "$ROOT/scripts/make-test-certs.sh" "$CERTS" >&2
fi

wait_quiet
LOAD_AT_START="$(load1)"
date -u +"%Y-%m-%d %H:%M UTC" >"$WORK/date"

# 1 and 2: handshakes/s and requests/s, each server on a fresh process.
for name in tern libcoap; do
    [ "$MEMORY_ONLY" -eq 1 ] && break
    start_server "$name"
    measure "$name.hs" $((DURATION + 60)) "$TERN" dtls-load handshakes "127.0.0.1:$DTLS_PORT" \
        -u "$IDENTITY" -k "$KEY" -c "$HS_CONCURRENCY" -d "$DURATION" --json
    stop "$SERVER_PID"
    start_server "$name"
    measure "$name.rps" $((DURATION + 60)) "$TERN" bench "coaps://127.0.0.1:$DTLS_PORT/" \
        -u "$IDENTITY" -k "$KEY" -c "$CONCURRENCY" -d "$DURATION" --json
    stop "$SERVER_PID"
    start_server "$name"
    measure "$name.lean" $((DURATION + 60)) "$TERN" dtls-load requests "127.0.0.1:$DTLS_PORT" \
        -u "$IDENTITY" -k "$KEY" -s "$(( (CONCURRENCY + 7) / 8 ))" -w 8 -d "$DURATION" --json
    # the payload of GET / (as the UDP benchmark reports it)
    "$TERN" get -u "$IDENTITY" -k "$KEY" --timeout 2 "coaps://127.0.0.1:$DTLS_PORT/" -o "$WORK/$name.payload" \
        >/dev/null 2>&1 || true
    stat -c %s "$WORK/$name.payload" >"$WORK/$name.size" 2>/dev/null || echo "?" >"$WORK/$name.size"
    stop "$SERVER_PID"
    if [ "$HAS_CERT" = yes ]; then
        start_server "$name" cert
        measure "$name.hsc" $((DURATION + 60)) "$TERN" dtls-load handshakes "127.0.0.1:$DTLS_PORT" \
            --no-verify -c "$HS_CONCURRENCY" -d "$DURATION" --json
        stop "$SERVER_PID"
    fi
done

# 3: memory per idle session.
for name in tern libcoap; do
    start_server "$name"
    # Warm up (one-time allocations, allocator arenas): 100 sessions opened and closed.
    "$TERN" dtls-load sessions "127.0.0.1:$DTLS_PORT" -u "$IDENTITY" -k "$KEY" -n 100 --hold 0.1 \
        >/dev/null 2>"$WORK/$name.warm.err" || { log "$name: warm-up failed"; cat "$WORK/$name.warm.err" >&2; exit 1; }
    sleep 1
    rss0="$(rss_kb "$SERVER_PID")"
    start_bg "$WORK/$name.mem.json" "$WORK/$name.mem.err" taskset -c "$LOAD_CPU" "$TERN" dtls-load sessions \
        "127.0.0.1:$DTLS_PORT" -u "$IDENTITY" -k "$KEY" -n "$SESSIONS" -c 64 --hold 5
    load_pid=$LAST_PID
    deadline=$((SECONDS + 300))
    while [ ! -s "$WORK/$name.mem.json" ] && kill -0 "$load_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.2
    done
    if [ ! -s "$WORK/$name.mem.json" ]; then
        log "$name: sessions not set up:"; cat "$WORK/$name.mem.err" >&2; exit 1
    fi
    sleep 1
    rss1="$(rss_kb "$SERVER_PID")"
    echo "$rss0 $rss1" >"$WORK/$name.mem.rss"
    log "$name: $(cat "$WORK/$name.mem.json") server RSS ${rss0} kB -> ${rss1} kB"
    wait "$load_pid" 2>/dev/null || log "$name: some sessions failed: $(tail -n 1 "$WORK/$name.mem.err")"
    stop "$SERVER_PID"
done

if [ "$MEMORY_ONLY" -eq 1 ]; then
    for name in tern libcoap; do
        read -r rss0 rss1 <"$WORK/$name.mem.rss"
        python3 -c "
import json, sys
j = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
r0, r1 = int(sys.argv[3]), int(sys.argv[4])
print(f\"{sys.argv[1]}: {j['sessions']} sessions, {j['failures']} failures, RSS {r0} -> {r1} kB, \"
      f\"server {(r1 - r0) / max(1, j['sessions']):.1f} KB/session, client {j['client_bytes_per_session'] / 1024:.1f} KB/session\")" \
            "$name" "$WORK/$name.mem.json" "$rss0" "$rss1"
    done
    exit 0
fi

# 4: spoofed ClientHello flood against Tern, with a legitimate client requesting throughout.
start_server tern
"$TERN" dtls-load sessions "127.0.0.1:$DTLS_PORT" -u "$IDENTITY" -k "$KEY" -n 100 --hold 0.1 >/dev/null 2>&1 || true
FLOOD_WINDOW=$(( (FLOOD + FLOOD_RATE - 1) / FLOOD_RATE ))
measure flood.base $((FLOOD_WINDOW + 60)) "$TERN" bench "coaps://127.0.0.1:$DTLS_PORT/" \
    -u "$IDENTITY" -k "$KEY" -c 1 -d "$FLOOD_WINDOW" --timeout 5 --json
# flood_run TAG RATE: RSS before, peak (sampled every 0.05 s), after; legit client over the window.
flood_run() {
    local tag="$1" rate="$2" rss0 peak r fpid lpid
    sleep 1
    rss0="$(rss_kb "$SERVER_PID")"; peak="$rss0"
    start_bg "$WORK/$tag.legit.json" "$WORK/$tag.legit.err" taskset -c "$LOAD_CPU" "$TERN" bench \
        "coaps://127.0.0.1:$DTLS_PORT/" -u "$IDENTITY" -k "$KEY" -c 1 -d "$FLOOD_WINDOW" --timeout 5 --json
    lpid=$LAST_PID
    sleep 0.3   # the legitimate session is up before the flood starts
    start_bg "$WORK/$tag.json" "$WORK/$tag.err" taskset -c "$LOAD_CPU" "$TERN" dtls-load flood \
        "127.0.0.1:$DTLS_PORT" -u "$IDENTITY" -k "$KEY" -n "$FLOOD" --rate "$rate"
    fpid=$LAST_PID
    local deadline=$((SECONDS + FLOOD_WINDOW + 120))
    while { kill -0 "$fpid" 2>/dev/null || kill -0 "$lpid" 2>/dev/null; } && [ "$SECONDS" -lt "$deadline" ]; do
        r="$(rss_kb "$SERVER_PID")"; [ -n "$r" ] && [ "$r" -gt "$peak" ] && peak="$r"
        sleep 0.05
    done
    wait "$fpid" || { log "$tag: flood failed"; cat "$WORK/$tag.err" "$WORK/$tag.json" >&2; exit 1; }
    wait "$lpid" || log "$tag: the legitimate client got no answer at all"
    sleep 1
    r="$(rss_kb "$SERVER_PID")"; [ "$r" -gt "$peak" ] && peak="$r"
    echo "$rss0 $peak $r" >"$WORK/$tag.rss"
    log "$tag: $(cat "$WORK/$tag.json") legit: $(tail -n 1 "$WORK/$tag.legit.json") RSS kB before/peak/after: $(cat "$WORK/$tag.rss")"
}
flood_run flood.paced "$FLOOD_RATE"
flood_run flood.burst 0
kill -0 "$SERVER_PID" 2>/dev/null || { log "tern serve died during the flood"; cat "$WORK/tern.log" >&2; exit 1; }
stop "$SERVER_PID"

CPU_MODEL="$( (grep -m1 '^model name' /proc/cpuinfo 2>/dev/null || true) | sed 's/^[^:]*: *//')"
[ -n "$CPU_MODEL" ] || CPU_MODEL="$(uname -m)"
LIBCOAP_VERSION="$( (coap-server-openssl -h 2>&1 || true) | sed -n 's/^coap-server-openssl \(v[0-9.]*\).*/\1/p' | head -1)"
OPENSSL_VERSION="$(openssl version 2>/dev/null | awk '{print $2}' || echo '?')"
TERN_REV="${TERN_REV:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
if [ -d "$ROOT/.git" ] && ! git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null; then TERN_REV="$TERN_REV+dirty"; fi
LOAD_AT_END="$(load1)"
REPRO="bash scripts/bench-dtls.sh -d $DURATION -c $CONCURRENCY --hs-concurrency $HS_CONCURRENCY -n $SESSIONS --flood $FLOOD --flood-rate $FLOOD_RATE"

python3 - "$OUT" "$WORK" <<PY
import json, sys, os, re
out, work = sys.argv[1], sys.argv[2]
def load(tag):
    text = open(os.path.join(work, tag)).read().strip()
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    return {}
def cpu(tag):
    return open(os.path.join(work, tag + ".cpu")).read().split()
def num(v, digits=0):
    if v is None: return "n/a"
    return f"{v:,.{digits}f}" if isinstance(v, (int, float)) else str(v)
def ratio(a, b):
    try: return a / b
    except (TypeError, ZeroDivisionError): return None
def met(ok): return "**met**" if ok else "**missed**"
rev, lib = "$TERN_REV", "libcoap $LIBCOAP_VERSION (\`coap-server-openssl\`)"
label = {"tern": f"Tern (\`tern serve\`, {rev})", "libcoap": lib}
hs = {n: load(n + ".hs.json") for n in ("tern", "libcoap")}
hcpu = {n: cpu(n + ".hs") for n in ("tern", "libcoap")}
rps = {n: load(n + ".rps.json") for n in ("tern", "libcoap")}
rcpu = {n: cpu(n + ".rps") for n in ("tern", "libcoap")}
lean = {n: load(n + ".lean.json") for n in ("tern", "libcoap")}
lcpu = {n: cpu(n + ".lean") for n in ("tern", "libcoap")}
size = {n: open(os.path.join(work, n + ".size")).read().strip() for n in ("tern", "libcoap")}
mem = {}
for n in ("tern", "libcoap"):
    j = load(n + ".mem.json")
    r0, r1 = (int(x) for x in open(os.path.join(work, n + ".mem.rss")).read().split())
    mem[n] = (j, r0, r1, (r1 - r0) * 1024 / max(1, j.get("sessions", 0)))

def extrapolate(rate, server_pct):
    # what one full server core would take, if the server was not the limit
    try:
        s = float(server_pct)
        return rate * 100 / s if 0 < s < 90 else None
    except (TypeError, ValueError):
        return None

hs_rows, rps_rows, mem_rows, lean_rows = [], [], [], []
for n in ("tern", "libcoap"):
    d, c = hs[n], hcpu[n]
    x = extrapolate(d.get("handshakes_per_s"), c[0])
    hs_rows.append(f"| {label[n]} | PSK (PSK-AES128-CCM8) | {num(d.get('handshakes_per_s'))} | {num(d.get('p50_us'))} | {num(d.get('p99_us'))} "
                   f"| {num(d.get('failures'))} | {num(d.get('handshakes'))} | {c[0]}% | {c[1]}% | {c[2]}% | {num(x) if x else '—'} |")
    d, c = rps[n], rcpu[n]
    rps_rows.append(f"| {label[n]} | {num(d.get('rps'))} | {num(d.get('p50_us'))} | {num(d.get('p99_us'))} | {num(d.get('p999_us'))} "
                    f"| {num(d.get('retransmissions'))} | {num(d.get('timeouts'))} | {num(d.get('errors'))} | {num(d.get('requests'))} | {size[n]} "
                    f"| {c[0]}% | {c[1]}% | {c[2]}% |")
    d, c = lean[n], lcpu[n]
    lean_rows.append(f"| {label[n]} | {num(d.get('rps'))} | {num(d.get('p50_us'))} | {num(d.get('p99_us'))} | {num(d.get('p999_us'))} "
                     f"| {num(d.get('timeouts'))} | {num(d.get('errors'))} | {num(d.get('requests'))} | {c[0]}% | {c[1]}% | {c[2]}% |")
    j, r0, r1, per = mem[n]
    mem_rows.append(f"| {label[n]} | {num(j.get('sessions'))} | {num(j.get('failures'))} | {num(r0)} | {num(r1)} | **{num(per / 1024, 1)}** "
                    f"| {num(j.get('client_bytes_per_session', 0) / 1024, 1)} |")
has_cert = "$HAS_CERT" == "yes"
hsc, hccpu = {}, {}
for n in ("tern", "libcoap"):
    if not has_cert:
        hs_rows.append(f"| {label[n]} | ECDHE-ECDSA | not measured: certificates not in this build yet | | | | | | | | |")
        continue
    d, c = load(n + ".hsc.json"), cpu(n + ".hsc")
    hsc[n], hccpu[n] = d, c
    x = extrapolate(d.get("handshakes_per_s"), c[0])
    hs_rows.append(f"| {label[n]} | ECDHE-ECDSA ({d.get('cipher') or '?'}, P-256, server certificate only) | {num(d.get('handshakes_per_s'))} | {num(d.get('p50_us'))} | {num(d.get('p99_us'))} "
                   f"| {num(d.get('failures'))} | {num(d.get('handshakes'))} | {c[0]}% | {c[1]}% | {c[2]}% | {num(x) if x else '—'} |")

base, paced_l, burst_l = load("flood.base.json"), load("flood.paced.legit.json"), load("flood.burst.legit.json")
paced, burst = load("flood.paced.json"), load("flood.burst.json")
def rss3(tag): return [int(x) for x in open(os.path.join(work, tag + ".rss")).read().split()]
flood_rows = []
for title, f, l, tag in (("none (baseline)", None, base, None), ("paced", paced, paced_l, "flood.paced"), ("burst", burst, burst_l, "flood.burst")):
    if f is None:
        flood_rows.append(f"| {title} | — | — | — | — | {num(l.get('requests'))} | {num(l.get('rps'))} | {num(l.get('p50_us'))} | {num(l.get('p99_us'))} | {num(l.get('p999_us'))} | {num(l.get('timeouts'))} | {num(l.get('retransmissions'))} |")
        continue
    r0, peak, r1 = rss3(tag)
    flood_rows.append(f"| {title}: {num(f.get('sent'))} ClientHellos at {num(f.get('rate'))}/s over {f.get('duration_s')} s | {num(r0)} | {num(peak)} | {num(r1)} "
                      f"| **{num((peak - r0) / 1024, 2)} MB** | {num(l.get('requests'))} | {num(l.get('rps'))} | {num(l.get('p50_us'))} | {num(l.get('p99_us'))} | {num(l.get('p999_us'))} | {num(l.get('timeouts'))} | {num(l.get('retransmissions'))} |")
flood_growth_mb = max((rss3(t)[1] - rss3(t)[0]) / 1024 for t in ("flood.paced", "flood.burst"))
legit_ok = all(l.get("requests", 0) > 0 for l in (paced_l, burst_l))

t_hs, l_hs = hs["tern"].get("handshakes_per_s"), hs["libcoap"].get("handshakes_per_s")
rr_full = ratio(rps["tern"].get("rps"), rps["libcoap"].get("rps"))
rr = ratio(lean["tern"].get("rps"), lean["libcoap"].get("rps"))
hr = ratio(t_hs, l_hs)
t_mem = mem["tern"][3] / 1024
def limit(c):
    return (f"server at {c[0]}% of its core, load at {c[1]}%: not saturated, a lower bound"
            if float(c[0]) < 90 else f"server core saturated ({c[0]}%)")
hs_limit = limit(hcpu["tern"])
targets = [
    f"| DTLS-PSK requests/s ≥ 1.5× libcoap | {num(rr, 2)}× under the lean load (Tern's server {lcpu['tern'][0]}%, libcoap's {lcpu['libcoap'][0]}% of their core); {num(rr_full, 2)}× under \`tern bench\` | {met(rr is not None and rr >= 1.5)} |",
    f"| PSK handshakes/s ≥ 5,000 on one core | {num(t_hs)}/s ({hs_limit}) | {met((t_hs or 0) >= 5000)} |",
    (f"| ECDHE-ECDSA handshakes/s ≥ 1,500 on one core | {num(hsc['tern'].get('handshakes_per_s'))}/s ({limit(hccpu['tern'])}) | {met((hsc['tern'].get('handshakes_per_s') or 0) >= 1500)} |"
     if has_cert else "| ECDHE-ECDSA handshakes/s ≥ 1,500 | not measured: certificates not in this build yet | **not measured** |"),
    f"| idle session ≤ 16 KB (stretch 4 KB) | {num(t_mem, 1)} KB | {met(t_mem <= 16)}{' (stretch met)' if t_mem <= 4 else ''} |",
    f"| spoofed-ClientHello flood grows RSS ≤ 1 MB, legitimate client served | {num(flood_growth_mb, 2)} MB, legitimate requests {'answered' if legit_ok else 'NOT answered'} during both floods | {met(flood_growth_mb <= 1 and legit_ok)} |",
]
section = f"""<!-- bench:dtls -->
## CoAP over DTLS 1.2 (PSK; certificates for handshakes too), one server core

Servers on 127.0.0.1, pinned to core $SERVER_CPU (\`taskset -c $SERVER_CPU\`); all load from \`tern\` pinned to core $LOAD_CPU{"$PIN_NOTE"};
the servers run one after the other in the same run, each phase on a fresh server process.
PSK identity \`$IDENTITY\`, a 17-byte key, TLS_PSK_WITH_AES_128_CCM_8, identity hint \`$HINT\` on both
(libcoap's default; Tern's is none) so both send the same flights; HelloVerifyRequest cookies on both.
OpenSSL {"$OPENSSL_VERSION"}. Server, load and other CPU are shares of one core over the run ("other" is every other
process and the hypervisor's steal, not interrupt time: a high figure means the run was disturbed; a run with more than 15% is repeated, at most
three tries, and the least disturbed kept).

### Targets

| target | measured | |
|---|---|---|
{chr(10).join(targets)}

### Full handshakes/s

\`tern dtls-load handshakes\`: {int("$HS_CONCURRENCY")} handshakes in flight, {int("$DURATION")} s; each one a new socket (new source port,
so a new server session), the full exchange (ClientHello, HelloVerifyRequest, ClientHello with cookie, ServerHello …
Finished), then close_notify. "one core would take" divides the rate by the server's CPU share when the server
was not saturated — an extrapolation, not a measurement.

| server | handshake | handshakes/s | p50 µs | p99 µs | failures | handshakes | server CPU | load CPU | other CPU | one core would take (est.) |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(hs_rows)}

Tern/libcoap handshakes/s: PSK **{num(hr, 2)}×**{(", ECDHE-ECDSA **" + num(ratio(hsc['tern'].get('handshakes_per_s'), hsc['libcoap'].get('handshakes_per_s')), 2) + "×**") if has_cert else ""}.
ECDHE-ECDSA: the test certificates of \`scripts/make-test-certs.sh\` (P-256 CA and server certificate); the client
(\`tern dtls-load handshakes --no-verify\`) does not verify the server's chain, so that the load spends less of its core per
handshake than the server (the handshake still checks the server's signature over its key exchange); no client certificate (\`tern serve --cert --key\`, \`coap-server-openssl -c -j -n\`).

### Requests/s over established sessions

\`tern bench coaps://127.0.0.1:PORT/ -u … -k … -c {int("$CONCURRENCY")} -d {int("$DURATION")}\`: GET \`/\` over CON, {int("$CONCURRENCY")} in flight over
{-(-int("$CONCURRENCY") // 8)} DTLS sessions (one per client socket, handshakes done before the clock starts).

| server | req/s | p50 µs | p99 µs | p99.9 µs | retransmissions | timeouts | errors | requests | payload bytes | server CPU | load CPU | other CPU |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rps_rows)}

Tern/libcoap: requests/s **{num(rr_full, 2)}×**, p99 latency **{num(ratio(rps['tern'].get('p99_us'), rps['libcoap'].get('p99_us')), 2)}×** (below 1 is faster).
\`tern bench\` runs the whole client stack per request (message layer, DTLS record layer, the request API), so its core
can be the limit before a fast server's is: the load CPU column says when.

\`tern dtls-load requests 127.0.0.1:PORT -u … -k … -s {-(-int("$CONCURRENCY") // 8)} -w 8 -d {int("$DURATION")}\`: the same GET \`/\` over CON, 8 in flight on each of
{-(-int("$CONCURRENCY") // 8)} sessions, closed loop; the request is built once and re-stamped (message ID, token), sealed by the
client's record layer and matched by message ID, without the CoAP client stack, so one load core can keep either server busy.

| server | req/s | p50 µs | p99 µs | p99.9 µs | timeouts | errors | requests | server CPU | load CPU | other CPU |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(lean_rows)}

Tern/libcoap under the lean load: requests/s **{num(rr, 2)}×**, p99 latency **{num(ratio(lean['tern'].get('p99_us'), lean['libcoap'].get('p99_us')), 2)}×**.

### Memory per established idle session

\`tern dtls-load sessions -n {int("$SESSIONS")}\`: {int("$SESSIONS")} sessions from as many sockets, each a full handshake and one GET \`/\`,
then all held idle. Server RSS after a warm-up of 100 sessions (opened and closed), and again with all sessions up;
growth ÷ sessions. The load tool's own RSS growth per session (its DTLS channels — OpenSSL's SSL object only
during the handshake, as on the server — and sockets, no CoAP state) is beside it for comparison.

| server | sessions | failures | RSS before kB | RSS with sessions kB | server KB/session | client KB/session |
|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(mem_rows)}

What dominated, up to 8be7142 (43.7 KB/session there; heaptrack of \`tern serve\` holding 2,000 sessions): OpenSSL's
\`SSL\` object, kept for the whole session — its record read/write buffers (34 KB allocated per session, from
\`DTLSv1_listen\`; \`SSL_MODE_RELEASE_BUFFERS\` is ignored for DTLS by OpenSSL 3.0), the handshake message buffer
\`init_buf\` that DTLS keeps after the handshake for retransmissions (22 KB allocated, 16 KB of it zeroed and so
resident; no OpenSSL call frees it short of \`SSL_free\`) and the \`SSL\` object itself (7.6 KB); malloc
fragmentation was not a factor (\`MALLOC_ARENA_MAX=1\` or \`malloc_trim\` changed nothing). Since then a channel
established with an AEAD suite (the CoAP suites are AES-CCM-8) takes the session keys from OpenSSL (RFC 5246 key
expansion from the master secret), protects and checks its records itself — sequence numbers, replay window,
close_notify and alerts, its last flight resent if the peer repeats its Finished — and frees the \`SSL\`
object; the server's session cache is off. What is left per session (heaptrack, 2,000 sessions): the
hash-table entries of the DTLS layer and the message layer (the largest share; their capacity doubles), the
channel's record state (about 180 bytes: keys, sequence number, replay window) and a few small queues.

### Spoofed ClientHello flood (Tern)

\`tern dtls-load flood -n {int("$FLOOD")}\`: the first flight of a real Tern client, the same bytes sent from {int("$FLOOD")} distinct
loopback source addresses (50,000 ports on each of 127.77.0.1, 127.77.1.1, …), nothing ever answered — first paced at
{int("$FLOOD_RATE")}/s, then as fast as the generator goes. Throughout, a legitimate client (\`tern bench -c 1 -d {int(f"$FLOOD_WINDOW")}\`,
one DTLS session, CON GET \`/\`) keeps requesting. RSS sampled every 50 ms.

| flood | RSS before kB | RSS peak kB | RSS after kB | growth | legit requests | legit req/s | p50 µs | p99 µs | p99.9 µs | legit time-outs | retransmissions |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(flood_rows)}

- date: {open(os.path.join(work, "date")).read().strip()}
- machine: $CPU_MODEL, \`nproc\` = $NPROC; 1-minute load average {"$LOAD_AT_START"} before the run ({"quiet" if "$QUIET" == "yes" else "NOT quiet: other work was running, figures are lower bounds"}; threshold $MAX_LOAD), {"$LOAD_AT_END"} after it (our own load)
- reproduce: \`$REPRO\`
  (servers: \`taskset -c $SERVER_CPU tern serve --bind 127.0.0.1:PORT --dtls-bind 127.0.0.1:PORT+1 --psk-identity $IDENTITY --psk-key KEY --psk-hint $HINT\`,
  \`taskset -c $SERVER_CPU coap-server-openssl -A 127.0.0.1 -p PORT -k KEY\` (DTLS on PORT+1);
  load: \`taskset -c $LOAD_CPU tern dtls-load handshakes|sessions|flood 127.0.0.1:PORT+1 -u $IDENTITY -k KEY …\` and \`taskset -c $LOAD_CPU tern bench coaps://127.0.0.1:PORT+1/ -u $IDENTITY -k KEY …\`)
<!-- /bench:dtls -->"""
doc = open(out).read() if os.path.exists(out) else "# Benchmarks\n"
pat = re.compile(r"<!-- bench:dtls -->.*?<!-- /bench:dtls -->", re.S)
if pat.search(doc):
    doc = pat.sub(lambda m: section, doc, count=1)
else:
    doc = doc.rstrip("\n") + "\n\n" + section + "\n"
open(out, "w").write(doc)
print(section)
PY
log "updated $OUT"
