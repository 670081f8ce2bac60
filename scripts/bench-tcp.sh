#!/usr/bin/env bash
# CoAP over TCP and TLS (RFC 8323): `tern serve` vs libcoap's `coap-server-openssl`, one after the
# other in the same run, each server pinned to core 0, the load (`tern stream-load`) pinned to core 1:
#   1. requests/s over TCP and over TLS-PSK: C connections, W GETs pipelined on each,
#   2. new TLS connections/s (TCP connect, handshake, close_notify), PSK and ECDHE-ECDSA,
#   3. memory per idle TLS connection at N connections (handshake and CSM exchange each).
# Each phase on a fresh server process; each server's CPU use is sampled over each run, so the
# report says whether the server was the limit. Waits (bounded) for a quiet machine first.
# Writes the section between <!-- bench:tcp --> and <!-- /bench:tcp --> of BENCHMARKS.md,
# keeping the rest of the file. --memory-only runs part 3 alone and prints its rows, writing
# nothing.
#
#   bash scripts/bench-tcp.sh [-d SECONDS] [-c CONNECTIONS] [-w WINDOW] [--hs-concurrency N]
#        [-n CONNECTIONS] [--max-load L] [--quiet-wait SECONDS] [--no-build] [-o FILE]
#        [--memory-only]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION=10
CONNECTIONS=4
WINDOW=32
HS_CONCURRENCY=32
IDLE=10000
MAX_LOAD=0.7
QUIET_WAIT=1200
BUILD=1
OUT="$ROOT/BENCHMARKS.md"
IDENTITY=bench
KEY=bench-secret-0123
HINT=CoAP
MEMORY_ONLY=0

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        -d|--duration) DURATION="$2"; shift 2 ;;
        -c|--connections) CONNECTIONS="$2"; shift 2 ;;
        -w|--window) WINDOW="$2"; shift 2 ;;
        --hs-concurrency) HS_CONCURRENCY="$2"; shift 2 ;;
        -n|--idle) IDLE="$2"; shift 2 ;;
        --max-load) MAX_LOAD="$2"; shift 2 ;;
        --quiet-wait) QUIET_WAIT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --memory-only) MEMORY_ONLY=1; shift ;;
        -o|--output) OUT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-tcp: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$DURATION$CONNECTIONS$WINDOW$HS_CONCURRENCY$IDLE$QUIET_WAIT" in
    *[!0-9]*) echo "bench-tcp: numeric arguments take whole numbers" >&2; exit 2 ;;
esac
[ "$DURATION" -gt 0 ] || { echo "bench-tcp: -d must be positive" >&2; exit 2; }

log() { printf 'bench-tcp: %s\n' "$*" >&2; }

for tool in taskset python3 openssl coap-server-openssl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        if [ "$tool" = coap-server-openssl ]; then
            bash "$ROOT/scripts/install-peers.sh" >&2
        else
            log "$tool not found"; exit 1
        fi
    fi
done

# One socket per idle connection on each side (children inherit the limit): raise it.
NEED_FDS=$((IDLE + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NEED_FDS" ]; then
    HARD="$(ulimit -Hn)"
    if [ "$HARD" = unlimited ] || [ "$HARD" -ge "$NEED_FDS" ]; then
        ulimit -n "$NEED_FDS"
    else
        ulimit -n "$HARD"
        log "fd limit capped at $HARD; idle connections lowered to $((HARD - 1024))"
        IDLE=$((HARD - 1024))
    fi
fi

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ "$BUILD" -eq 1 ]; then
    CARGO=cargo
    command -v cargo-polite >/dev/null 2>&1 && CARGO=cargo-polite
    log "$CARGO build --release -p tern-cli"
    "$CARGO" build --release -p tern-cli >&2
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

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tern-bench-tcp.XXXXXX")"
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

# A port P with UDP and TCP free on P and P+1 (Tern: UDP and TCP on P, DTLS and TLS on P+1;
# libcoap: the same with -p P).
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

# start_server NAME [psk|cert]: starts tern or libcoap on core SERVER_CPU with the PSK (or the
# test server certificate), waits until a pipelined GET works over TCP and over TLS; sets
# SERVER_PID, TCP_PORT, TLS_PORT and TLS_CREDS (the load's credential flags).
start_server() {
    local name="$1" kind="${2:-psk}" port
    port="$(free_port_pair)"
    TCP_PORT=$port
    TLS_PORT=$((port + 1))
    case "$name.$kind" in
        tern.psk)
            # Same identity hint as libcoap's default, as in the DTLS benchmark.
            start_bg "$WORK/$name.out" "$WORK/$name.log" taskset -c "$SERVER_CPU" "$TERN" serve \
                --bind "127.0.0.1:$port" --dtls-bind "127.0.0.1:$TLS_PORT" \
                --psk-identity "$IDENTITY" --psk-key "$KEY" --psk-hint "$HINT" --log warn ;;
        tern.cert)
            start_bg "$WORK/$name.out" "$WORK/$name.log" taskset -c "$SERVER_CPU" "$TERN" serve \
                --bind "127.0.0.1:$port" --dtls-bind "127.0.0.1:$TLS_PORT" \
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
    TLS_CREDS=(-u "$IDENTITY" -k "$KEY")
    [ "$kind" = cert ] && TLS_CREDS=(-C "$CERTS/ca.pem")
    local i
    for i in $(seq 1 30); do
        if "$TERN" stream-load requests "coap+tcp://127.0.0.1:$TCP_PORT/" -c 1 -w 1 -d 0.1 --timeout 1 \
                >"$WORK/$name.probe" 2>&1 \
            && "$TERN" stream-load requests "coaps+tcp://127.0.0.1:$TLS_PORT/" "${TLS_CREDS[@]}" -c 1 -w 1 -d 0.1 --timeout 1 \
                >>"$WORK/$name.probe" 2>&1; then
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.2
    done
    log "$name ($kind) did not answer over TCP $TCP_PORT and TLS $TLS_PORT; its log:"
    cat "$WORK/$name.log" "$WORK/$name.probe" >&2
    exit 1
}

# measure TAG SECONDS_BOUND COMMAND...: measure_once, repeated (at most 3 tries) while other
# work on the machine took more than 15% of a core; keeps the least disturbed try.
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
bash "$ROOT/scripts/make-test-certs.sh" "$CERTS" >&2

wait_quiet
LOAD_AT_START="$(load1)"
date -u +"%Y-%m-%d %H:%M UTC" >"$WORK/date"

REQ=(-c "$CONNECTIONS" -w "$WINDOW" -d "$DURATION" --json)
# 1 and 2: requests/s and new connections/s, each phase on a fresh server process.
for name in tern libcoap; do
    [ "$MEMORY_ONLY" -eq 1 ] && break
    start_server "$name"
    measure "$name.tcp" $((DURATION + 60)) "$TERN" stream-load requests "coap+tcp://127.0.0.1:$TCP_PORT/" "${REQ[@]}"
    # the payload of GET / (as the UDP benchmark reports it)
    "$TERN" get --timeout 2 "coap+tcp://127.0.0.1:$TCP_PORT/" -o "$WORK/$name.payload" >/dev/null 2>&1 || true
    stat -c %s "$WORK/$name.payload" >"$WORK/$name.size" 2>/dev/null || echo "?" >"$WORK/$name.size"
    stop "$SERVER_PID"
    start_server "$name"
    measure "$name.tls" $((DURATION + 60)) "$TERN" stream-load requests "coaps+tcp://127.0.0.1:$TLS_PORT/" \
        "${TLS_CREDS[@]}" "${REQ[@]}"
    stop "$SERVER_PID"
    start_server "$name"
    measure "$name.hs" $((DURATION + 60)) "$TERN" stream-load handshakes "coaps+tcp://127.0.0.1:$TLS_PORT/" \
        "${TLS_CREDS[@]}" -c "$HS_CONCURRENCY" -d "$DURATION" --json
    stop "$SERVER_PID"
    start_server "$name" cert
    measure "$name.hsc" $((DURATION + 60)) "$TERN" stream-load handshakes "coaps+tcp://127.0.0.1:$TLS_PORT/" \
        "${TLS_CREDS[@]}" -c "$HS_CONCURRENCY" -d "$DURATION" --json
    stop "$SERVER_PID"
done

# 3: memory per idle TLS connection.
HOLD=5
for name in tern libcoap; do
    start_server "$name"
    # Warm up (one-time allocations, allocator arenas): 100 connections opened and closed.
    "$TERN" stream-load idle "coaps+tcp://127.0.0.1:$TLS_PORT/" "${TLS_CREDS[@]}" -n 100 --hold 0.1 \
        >/dev/null 2>"$WORK/$name.warm.err" || { log "$name: warm-up failed"; cat "$WORK/$name.warm.err" >&2; exit 1; }
    sleep 1
    rss0="$(rss_kb "$SERVER_PID")"
    start_bg "$WORK/$name.mem.json" "$WORK/$name.mem.err" taskset -c "$LOAD_CPU" "$TERN" stream-load idle \
        "coaps+tcp://127.0.0.1:$TLS_PORT/" "${TLS_CREDS[@]}" -n "$IDLE" -c 64 --hold "$HOLD"
    load_pid=$LAST_PID
    deadline=$((SECONDS + 300))
    while [ ! -s "$WORK/$name.mem.json" ] && kill -0 "$load_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.2
    done
    if [ ! -s "$WORK/$name.mem.json" ]; then
        log "$name: idle connections not set up:"; cat "$WORK/$name.mem.err" >&2; exit 1
    fi
    sleep 1
    rss1="$(rss_kb "$SERVER_PID")"
    echo "$rss0 $rss1" >"$WORK/$name.mem.rss"
    log "$name: $(head -n 1 "$WORK/$name.mem.json") server RSS ${rss0} kB -> ${rss1} kB"
    wait "$load_pid" 2>/dev/null || log "$name: some connections failed: $(tail -n 2 "$WORK/$name.mem.err")"
    log "$name: $(tail -n 1 "$WORK/$name.mem.json")"
    stop "$SERVER_PID"
done

if [ "$MEMORY_ONLY" -eq 1 ]; then
    for name in tern libcoap; do
        read -r rss0 rss1 <"$WORK/$name.mem.rss"
        python3 -c "
import json, sys
j = json.loads(open(sys.argv[2]).read().strip().splitlines()[0])
r0, r1 = int(sys.argv[3]), int(sys.argv[4])
print(f\"{sys.argv[1]}: {j['connections']} connections, {j['failures']} failures, RSS {r0} -> {r1} kB, \"
      f\"server {(r1 - r0) / max(1, j['connections']):.1f} KB/connection, client {j['client_bytes_per_connection'] / 1024:.1f} KB/connection\")" \
            "$name" "$WORK/$name.mem.json" "$rss0" "$rss1"
    done
    exit 0
fi

CPU_MODEL="$( (grep -m1 '^model name' /proc/cpuinfo 2>/dev/null || true) | sed 's/^[^:]*: *//')"
[ -n "$CPU_MODEL" ] || CPU_MODEL="$(uname -m)"
LIBCOAP_VERSION="$( (coap-server-openssl -h 2>&1 || true) | sed -n 's/^coap-server-openssl \(v[0-9.]*\).*/\1/p' | head -1)"
OPENSSL_VERSION="$(openssl version 2>/dev/null | awk '{print $2}' || echo '?')"
TERN_REV="${TERN_REV:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
if [ -d "$ROOT/.git" ] && { ! git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || [ -n "$(git -C "$ROOT" ls-files --others --exclude-standard -- crates 2>/dev/null)" ]; }; then
    TERN_REV="$TERN_REV+dirty"
fi
LOAD_AT_END="$(load1)"
REPRO="bash scripts/bench-tcp.sh -d $DURATION -c $CONNECTIONS -w $WINDOW --hs-concurrency $HS_CONCURRENCY -n $IDLE"

python3 - "$OUT" "$WORK" <<PY
import json, sys, os, re
out, work = sys.argv[1], sys.argv[2]
def load(tag):
    text = open(os.path.join(work, tag)).read().strip()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    return {}
def load_last(tag):
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
def sat(c):
    return "yes" if float(c[0]) >= 90 else "no"
rev, lib = "$TERN_REV", "libcoap $LIBCOAP_VERSION (\`coap-server-openssl\`)"
label = {"tern": f"Tern (\`tern serve\`, {rev})", "libcoap": lib}
names = ("tern", "libcoap")
size = {n: open(os.path.join(work, n + ".size")).read().strip() for n in names}
req = {(n, t): (load(f"{n}.{t}.json"), cpu(f"{n}.{t}")) for n in names for t in ("tcp", "tls")}
hs = {(n, t): (load(f"{n}.{t}.json"), cpu(f"{n}.{t}")) for n in names for t in ("hs", "hsc")}
mem = {}
for n in names:
    j = load(n + ".mem.json")
    tail = load_last(n + ".mem.json")
    r0, r1 = (int(x) for x in open(os.path.join(work, n + ".mem.rss")).read().split())
    mem[n] = (j, tail, r0, r1, (r1 - r0) * 1024 / max(1, j.get("connections", 0)))

def per_request_us(d, c):
    # server CPU time per request, µs
    try: return float(c[0]) / 100 / d["rps"] * 1e6
    except (KeyError, TypeError, ZeroDivisionError, ValueError): return None

req_rows, ratios = [], {}
for t, title in (("tcp", "TCP"), ("tls", "TLS-PSK")):
    for n in names:
        d, c = req[(n, t)]
        suite = f"{d.get('tls_version')} {d.get('cipher')}" if d.get("cipher") else "—"
        req_rows.append(f"| {label[n]} | {title} | {suite} | {num(d.get('rps'))} | {num(d.get('p50_us'))} | {num(d.get('p99_us'))} | {num(d.get('p999_us'))} "
                        f"| {num(d.get('errors'))} | {num(d.get('timeouts'))} | {num(d.get('requests'))} | {size[n]} | {c[0]}% | {sat(c)} | {num(per_request_us(d, c), 2)} | {c[1]}% | {c[2]}% |")
    t_d, t_c = req[("tern", t)]; l_d, l_c = req[("libcoap", t)]
    ratios[t] = (ratio(t_d.get("rps"), l_d.get("rps")), ratio(per_request_us(l_d, l_c), per_request_us(t_d, t_c)),
                 ratio(t_d.get("p99_us"), l_d.get("p99_us")), t_c, l_c)

def extrapolate(rate, server_pct):
    # what one full server core would take, if the server was not the limit
    try:
        s = float(server_pct)
        return rate * 100 / s if 0 < s < 90 else None
    except (TypeError, ValueError):
        return None

hs_rows = []
for t, title in (("hs", "PSK"), ("hsc", "ECDHE-ECDSA, P-256 server certificate")):
    for n in names:
        d, c = hs[(n, t)]
        x = extrapolate(d.get("handshakes_per_s"), c[0])
        hs_rows.append(f"| {label[n]} | {title} | {d.get('tls_version') or '?'} {d.get('cipher') or '?'} | {num(d.get('handshakes_per_s'))} | {num(d.get('p50_us'))} | {num(d.get('p99_us'))} "
                       f"| {num(d.get('p999_us'))} | {num(d.get('failures'))} | {num(d.get('handshakes'))} | {c[0]}% | {sat(c)} | {c[1]}% | {c[2]}% | {num(x) if x else '—'} |")
hr = {t: ratio(hs[("tern", t)][0].get("handshakes_per_s"), hs[("libcoap", t)][0].get("handshakes_per_s")) for t in ("hs", "hsc")}

mem_rows = []
for n in names:
    j, tail, r0, r1, per = mem[n]
    mem_rows.append(f"| {label[n]} | {num(j.get('connections'))} | {num(j.get('failures'))} | {num(j.get('retries'))} | {num(j.get('setup_s'), 1)} "
                    f"| {num(tail.get('still_open'))} | {num(r0)} | {num(r1)} | **{num(per / 1024, 1)}** | {num(j.get('client_bytes_per_connection', 0) / 1024, 1)} |")
mr = ratio(mem["tern"][4], mem["libcoap"][4])

def limit_note(c_t, c_l):
    if float(c_t[0]) >= 90 and float(c_l[0]) >= 90:
        return "both servers saturated"
    parts = []
    for who, c in (("Tern", c_t), ("libcoap", c_l)):
        if float(c[0]) < 90:
            parts.append(f"{who}'s server at {c[0]}% (load {c[1]}%): not saturated")
    return "; ".join(parts)

targets = []
for t, title in (("tcp", "TCP"), ("tls", "TLS-PSK")):
    r, cpu_r, _, tc, lc = ratios[t]
    targets.append(f"| requests/s over {title} ≥ 1.5× libcoap, one server core | {num(r, 2)}× ({limit_note(tc, lc)}; server CPU per request {num(cpu_r, 2)}× less) | {met(r is not None and r >= 1.5)} |")
targets.append(f"| new TLS connections/s | PSK {num(hs[('tern', 'hs')][0].get('handshakes_per_s'))}/s ({num(hr['hs'], 2)}× libcoap; {limit_note(hs[('tern', 'hs')][1], hs[('libcoap', 'hs')][1])}), "
               f"ECDHE-ECDSA {num(hs[('tern', 'hsc')][0].get('handshakes_per_s'))}/s ({num(hr['hsc'], 2)}× libcoap; {limit_note(hs[('tern', 'hsc')][1], hs[('libcoap', 'hsc')][1])}) | measured (no target set) |")
targets.append(f"| memory per idle TLS connection at {int('$IDLE'):,} connections | {num(mem['tern'][4] / 1024, 1)} KB (libcoap {num(mem['libcoap'][4] / 1024, 1)} KB, {num(mr, 2)}×) | measured (no target set) |")

section = f"""<!-- bench:tcp -->
## CoAP over TCP and TLS (RFC 8323), one server core

Servers on 127.0.0.1, pinned to core $SERVER_CPU (\`taskset -c $SERVER_CPU\`); all load from \`tern stream-load\` pinned to core $LOAD_CPU{"$PIN_NOTE"};
the servers run one after the other in the same run, each phase on a fresh server process. TLS with PSK: identity \`$IDENTITY\`,
a 17-byte key, TLS 1.2 (PSKs are TLS 1.2 only), the suite each server picks from Tern's default list; identity hint \`$HINT\`
on both. Certificates: the P-256 test CA and server certificate of \`scripts/make-test-certs.sh\`, the client verifies the
server's chain and name, no client certificate (\`tern serve --cert --key\`, \`coap-server-openssl -c -j -n\`), TLS 1.3 unless
the row says otherwise. OpenSSL {"$OPENSSL_VERSION"}. Server, load and other CPU are shares of one core over the run ("other" is
every other process and the hypervisor's steal, not interrupt time; a run with more than 15% is repeated, at most three
tries, and the least disturbed kept); "saturated" means the server used at least 90% of its core.

### Targets

| target | measured | |
|---|---|---|
{chr(10).join(targets)}

### Requests/s

\`tern stream-load requests URI -c {int("$CONNECTIONS")} -w {int("$WINDOW")} -d {int("$DURATION")}\`: GET \`/\` over {int("$CONNECTIONS")} connections, {int("$WINDOW")} requests pipelined on
each ({int("$CONNECTIONS") * int("$WINDOW")} in flight), each answered request sent again at once; connections (TCP, TLS, CSM exchange)
set up before the clock starts; a request counts when its 2.05 arrives. "CPU µs/req" is the server's CPU time per
request (its CPU share ÷ req/s).

| server | transport | TLS | req/s | p50 µs | p99 µs | p99.9 µs | errors | timeouts | requests | payload bytes | server CPU | saturated | CPU µs/req | load CPU | other CPU |
|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|
{chr(10).join(req_rows)}

Tern/libcoap: TCP requests/s **{num(ratios['tcp'][0], 2)}×** (server CPU per request {num(ratios['tcp'][1], 2)}× less, p99 latency {num(ratios['tcp'][2], 2)}×);
TLS-PSK requests/s **{num(ratios['tls'][0], 2)}×** (server CPU per request {num(ratios['tls'][1], 2)}× less, p99 latency {num(ratios['tls'][2], 2)}×). Latency below 1 is faster.

### New TLS connections/s

\`tern stream-load handshakes URI -c {int("$HS_CONCURRENCY")} -d {int("$DURATION")}\`: {int("$HS_CONCURRENCY")} attempts in flight, each a new TCP connection, the full TLS
handshake, then close_notify and close; no CSM exchange; a connection counts when its handshake completes (an attempt
not complete within 5 s is a failure). "one core would take" divides the rate by the server's CPU share when the
server was not saturated — an extrapolation, not a measurement.

| server | credentials | negotiated | connections/s | p50 µs | p99 µs | p99.9 µs | failures | connections | server CPU | saturated | load CPU | other CPU | one core would take (est.) |
|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|
{chr(10).join(hs_rows)}

Tern/libcoap connections/s: PSK **{num(hr['hs'], 2)}×**, ECDHE-ECDSA **{num(hr['hsc'], 2)}×**.

### Memory per idle TLS connection

\`tern stream-load idle URI -n {int("$IDLE")} -c 64\`: {int("$IDLE"):,} TLS-PSK connections, 64 being set up at once (a refused or reset one
is tried again, up to 5 times), each a full handshake and a CSM exchange, then all held idle. Server RSS after a warm-up of
100 connections (opened and closed), and again 1 s after all are up; growth ÷ connections. "still open" counts the
connections the server had not closed after {int("$HOLD")} s idle. The load's own RSS growth per connection (socket, OpenSSL's
SSL object, no CoAP state) is beside it for comparison. libcoap 4.3.1 caps neither idle sessions nor sessions in handshake
by default and \`coap-server\` has no flag for either; Tern's listener takes 16,384 connections and 256 in handshake at once.

| server | connections | failures | retries | set-up s | still open | RSS before kB | RSS with connections kB | server KB/connection | client KB/connection |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(mem_rows)}

- date: {open(os.path.join(work, "date")).read().strip()}
- machine: $CPU_MODEL, \`nproc\` = $NPROC; 1-minute load average {"$LOAD_AT_START"} before the run ({"quiet" if "$QUIET" == "yes" else "NOT quiet: other work was running, figures are lower bounds"}; threshold $MAX_LOAD), {"$LOAD_AT_END"} after it (our own load)
- reproduce: \`$REPRO\`
  (servers: \`taskset -c $SERVER_CPU tern serve --bind 127.0.0.1:PORT --dtls-bind 127.0.0.1:PORT+1 --psk-identity $IDENTITY --psk-key KEY --psk-hint $HINT\`
  (TCP on PORT, TLS on PORT+1) or \`--cert server.pem --key server.key\`;
  \`taskset -c $SERVER_CPU coap-server-openssl -A 127.0.0.1 -p PORT -k KEY\` or \`-c server.pem -j server.key -n\` (TCP on PORT, TLS on PORT+1);
  load: \`taskset -c $LOAD_CPU tern stream-load requests coap+tcp://127.0.0.1:PORT/ -c {int("$CONNECTIONS")} -w {int("$WINDOW")} -d {int("$DURATION")} --json\`,
  \`… requests coaps+tcp://127.0.0.1:PORT+1/ -u $IDENTITY -k KEY …\`, \`… handshakes coaps+tcp://127.0.0.1:PORT+1/ -u $IDENTITY -k KEY (or -C ca.pem) -c {int("$HS_CONCURRENCY")} …\`,
  \`… idle coaps+tcp://127.0.0.1:PORT+1/ -u $IDENTITY -k KEY -n {int("$IDLE")} -c 64 --hold {int("$HOLD")}\`)
<!-- /bench:tcp -->"""
doc = open(out).read() if os.path.exists(out) else "# Benchmarks\n"
pat = re.compile(r"<!-- bench:tcp -->.*?<!-- /bench:tcp -->", re.S)
if pat.search(doc):
    doc = pat.sub(lambda m: section, doc, count=1)
else:
    # After the DTLS section and its notes: before the block-wise section.
    anchor = doc.find("<!-- bench:block -->")
    if anchor >= 0:
        doc = doc[:anchor] + section + "\n\n" + doc[anchor:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + section + "\n"
open(out, "w").write(doc)
print(section)
PY
log "updated $OUT"
