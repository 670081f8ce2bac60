#!/usr/bin/env bash
# Soak: mixed load against `tern serve` on 127.0.0.1 for TERN_SOAK_SECONDS (default 600),
# sampling the server's memory and descriptors. NOT run by CI.
#
#   bash scripts/soak.sh                          # ten minutes
#   TERN_SOAK_SECONDS=120 bash scripts/soak.sh    # two
#
# Load, all at once for the whole run (closed-loop, so it never overloads the loopback queues):
#   UDP: tern bench GET /time (CON, 4 in flight), GET /time (NON, 2), POST /echo with 200 bytes
#     (CON, 4), PUT /store/k with 64 bytes (CON, 2), PUT /store/k (NON, 2);
#   block-wise: PUT of 4,000 bytes to /store/blk in 256-byte blocks (2), GET of it (2);
#   DTLS (PSK): GET /time over coaps:// from 4 sessions (4), POST /echo (2);
#   OSCORE: GET /time and POST /echo protected with a context of the server's (2 each);
#   observe: 8 `tern get -s` observers of /time (one notification a second each), each of
#     which must see at least 90% of the notifications the run allows;
#   plus a python3 stream of malformed
#   datagrams (~400/s from 32 source ports: truncated headers, token length 9-15, bad option
#   deltas and lengths, payload markers with no payload, reserved codes, random bytes, unknown
#   critical options), with a CoAP ping every 50th datagram that must be answered (RST).
# Samples every 5 s into a CSV (t_s, rss_kb, fds, threads): VmRSS and Threads from
# /proc/PID/status, open descriptors from /proc/PID/fd. The CSV is kept in
# ${CARGO_TARGET_DIR:-target}/soak/ (or TERN_SOAK_CSV).
#
# Fails (exit 1) on:
#   - any bench error or time-out (the only injected faults are the malformed datagrams, which
#     the bench never sees), or fewer than 99% of the injector's pings answered;
#   - the server dying, or not answering GET /time afterwards;
#   - RSS rising: the least-squares slope of RSS over the second half of the samples above
#     TERN_SOAK_MAX_SLOPE_KB_PER_MIN (default 1024 KiB/min). Why 1 MiB/min: the load runs at
#     about 75,000 requests/s on 2 cores (4.5 million a minute), so a leak of even 0.25 byte per
#     request on average (one 64-byte allocation per 250 requests) exceeds it. Legitimate growth
#     stays below it: the injector's CONs (about 60/s from 32 ports, each with a cached answer)
#     fill the deduplication cache until entries expire after EXCHANGE_LIFETIME (247 s), about
#     0.5 MiB/min measured; so in runs shorter than ~500 s the second half still shows that fill.
#     In a 600 s run (47 million requests) the second half rose 137 KiB/min (0.003 byte per
#     request), 16.2 MiB at the end: worth watching over longer runs, well below the limit.
#   - descriptors growing: more open in the second half than at any time in the first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${TERN_SOAK_SECONDS:-600}"
MAX_SLOPE="${TERN_SOAK_MAX_SLOPE_KB_PER_MIN:-1024}"
INTERVAL=5
case "$DURATION" in '' | *[!0-9]*) echo "soak: TERN_SOAK_SECONDS must be a number" >&2; exit 2 ;; esac
[ "$DURATION" -ge 30 ] || { echo "soak: TERN_SOAK_SECONDS must be at least 30" >&2; exit 2; }

log() { printf 'soak: %s\n' "$*" >&2; }

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
mkdir -p "$TARGET_DIR/soak"
CSV="${TERN_SOAK_CSV:-$TARGET_DIR/soak/soak-$(date +%Y%m%d-%H%M%S).csv}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tern-soak.XXXXXX")"
PIDS=()
SERVER_PID=""
cleanup() {
    local pid
    for pid in "${PIDS[@]}" $SERVER_PID; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}" $SERVER_PID; do
        timeout 5 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "cargo build --release -p tern-cli"
timeout 1800 cargo build -q --release -p tern-cli
TERN="$TARGET_DIR/release/tern"

PORT="$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
DTLS_PORT="$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URI="coap://127.0.0.1:$PORT"
DTLS_URI="coaps://127.0.0.1:$DTLS_PORT"
PSK=(--psk-identity soak --psk-key soak-secret-key)
# Two OSCORE contexts (one per load process: a context's sequence numbers belong to one
# sender), both halves of each in aiocoap's folder format.
SECRET='{"secret_hex": "0102030405060708090a0b0c0d0e0f10", "salt_hex": "9e7ca92223786340"}'
for kid in 01 02; do
    mkdir -p "$WORK/oscore-client-$kid" "$WORK/oscore-server-$kid"
    printf '%s\n' "$SECRET" >"$WORK/oscore-client-$kid/secret.json"
    printf '%s\n' "$SECRET" >"$WORK/oscore-server-$kid/secret.json"
    printf '{"sender-id_hex": "%s", "recipient-id_hex": ""}\n' "$kid" >"$WORK/oscore-client-$kid/settings.json"
    printf '{"sender-id_hex": "", "recipient-id_hex": "%s", "window": 64}\n' "$kid" >"$WORK/oscore-server-$kid/settings.json"
done
"$TERN" serve --bind "127.0.0.1:$PORT" --no-tcp --dtls-bind "127.0.0.1:$DTLS_PORT" "${PSK[@]}" \
    --oscore "$WORK/oscore-server-01" --oscore "$WORK/oscore-server-02" --usage-interval 60 >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 50); do
    timeout 5 "$TERN" get --timeout 1 "$URI/time" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { log "tern serve exited"; cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.2
done
timeout 5 "$TERN" get --timeout 2 "$URI/time" >/dev/null || { log "tern serve not answering"; exit 1; }
log "tern serve pid $SERVER_PID on 127.0.0.1:$PORT; load for ${DURATION}s; samples to $CSV"

# --- load ----------------------------------------------------------------------------------------
bench() { # bench NAME ARGS...
    local name=$1
    shift
    timeout --kill-after=10 $((DURATION + 60)) "$TERN" bench --json -d "$DURATION" --timeout 5 "$@" \
        >"$WORK/bench-$name.json" 2>"$WORK/bench-$name.err" &
    PIDS+=("$!")
}
bench get-con -c 4 "$URI/time"
bench get-non -c 2 --non "$URI/time"
bench post-con -c 4 --method post --payload 200 "$URI/echo"
bench put-con -c 2 --method put --payload 64 "$URI/store/k"
bench put-non -c 2 --method put --payload 64 --non "$URI/store/k"
# The block-wise body exists before anyone GETs it.
head -c 4000 /dev/zero | tr '\0' 'b' >"$WORK/blk"
timeout 10 "$TERN" put -b 256 -f "$WORK/blk" "$URI/store/blk" >/dev/null \
    || { log "cannot store the block-wise body"; exit 1; }
bench put-block -c 2 --method put --payload 4000 -b 256 "$URI/store/blk"
bench get-block -c 2 -b 256 "$URI/store/blk"
bench get-dtls -c 4 --sockets 4 "${PSK[@]}" "$DTLS_URI/time"
bench post-dtls -c 2 --method post --payload 100 "${PSK[@]}" "$DTLS_URI/echo"
bench get-oscore -c 2 --oscore "$WORK/oscore-client-01" "$URI/time"
bench post-oscore -c 2 --method post --payload 100 --oscore "$WORK/oscore-client-02" "$URI/echo"
OBSERVERS=8
for i in $(seq 1 "$OBSERVERS"); do
    timeout --kill-after=10 $((DURATION + 60)) "$TERN" get -s "$DURATION" "$URI/time" \
        >"$WORK/observe-$i.out" 2>"$WORK/observe-$i.err" &
    PIDS+=("$!")
done

timeout --kill-after=10 $((DURATION + 60)) python3 - "$PORT" "$DURATION" >"$WORK/inject.json" 2>"$WORK/inject.err" <<'PY' &
import json, os, random, select, socket, sys, time

port, duration = int(sys.argv[1]), float(sys.argv[2])
rng = random.Random(7)
socks = []
for _ in range(32):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    socks.append(s)
dest = ("127.0.0.1", port)

def malformed():
    kind = rng.randrange(8)
    mid = rng.randrange(65536).to_bytes(2, "big")
    if kind == 0:   # truncated header
        return os.urandom(rng.randrange(1, 4))
    if kind == 1:   # token length 9..15
        return bytes([0x40 | rng.randrange(9, 16), 0x01]) + mid + os.urandom(rng.randrange(0, 16))
    if kind == 2:   # option delta 15 (reserved) without a payload marker
        return bytes([0x40, 0x01]) + mid + bytes([0xF0 | rng.randrange(15)])
    if kind == 3:   # option length running past the end
        return bytes([0x40, 0x01]) + mid + bytes([0xBE, 0x20]) + b"ab"
    if kind == 4:   # payload marker with no payload
        return bytes([0x50, 0x01]) + mid + b"\xff"
    if kind == 5:   # reserved code class 1, 6, 7
        return bytes([0x40, rng.choice([1, 6, 7]) << 5 | 1]) + mid
    if kind == 6:   # CON GET with an unknown critical option (answered 4.02)
        return bytes([0x41, 0x01]) + mid + b"\x07" + bytes([0xE1, 0x06, 0xF4]) + b"x"  # option 2049
    return os.urandom(rng.randrange(0, 200))   # random bytes

sent = pings = answered = 0
pending = {}
rate = 400.0
start = time.monotonic()
next_at = start
while time.monotonic() - start < duration:
    now = time.monotonic()
    if now < next_at:
        r, _, _ = select.select(socks, [], [], next_at - now)
    else:
        r = []
    for s in r:
        try:
            while True:
                data = s.recv(2048)
                if len(data) >= 4 and data[0] >> 4 == 7:   # RST
                    key = (s.getsockname()[1], data[2:4])
                    if pending.pop(key, None) is not None:
                        answered += 1
        except BlockingIOError:
            pass
    if time.monotonic() < next_at:
        continue
    next_at += 1.0 / rate
    s = socks[sent % len(socks)]
    if sent % 50 == 0:
        mid = rng.randrange(65536).to_bytes(2, "big")
        pending[(s.getsockname()[1], mid)] = time.monotonic()
        s.sendto(bytes([0x40, 0x00]) + mid, dest)
        pings += 1
    else:
        s.sendto(malformed(), dest)
    sent += 1
deadline = time.monotonic() + 2
while pending and time.monotonic() < deadline:
    r, _, _ = select.select(socks, [], [], 0.1)
    for s in r:
        try:
            while True:
                data = s.recv(2048)
                key = (s.getsockname()[1], data[2:4])
                if data[0] >> 4 == 7 and pending.pop(key, None) is not None:
                    answered += 1
        except BlockingIOError:
            pass
print(json.dumps({"sent": sent, "malformed": sent - pings, "pings": pings, "answered": answered}))
PY
PIDS+=("$!")

# --- samples -------------------------------------------------------------------------------------
echo "t_s,rss_kb,fds,threads" >"$CSV"
t0=$(date +%s)
samples=$((DURATION / INTERVAL))
for i in $(seq 0 "$samples"); do
    # sleep to the next multiple of INTERVAL (bounded: samples+1 iterations)
    target=$((t0 + i * INTERVAL))
    now=$(date +%s)
    [ "$now" -ge "$target" ] || sleep $((target - now))
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "tern serve died at t=$((i * INTERVAL))s"
        tail -n 20 "$WORK/server.log" >&2
        exit 1
    fi
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")
    threads=$(awk '/^Threads:/ {print $2}' "/proc/$SERVER_PID/status")
    fds=$(find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    echo "$((i * INTERVAL)),$rss,$fds,$threads" >>"$CSV"
done
log "waiting for the load to finish"
for pid in "${PIDS[@]}"; do wait "$pid" || log "a load process exited with status $? (pid $pid)"; done
PIDS=()

final=0
timeout 10 "$TERN" get --timeout 5 "$URI/time" >"$WORK/final.out" 2>&1 && [ -s "$WORK/final.out" ] && final=1

grep '^usage:' "$WORK/server.log" | tail -n 1 | sed 's/^/soak: server /' >&2 || true

# --- verdict -------------------------------------------------------------------------------------
python3 - "$CSV" "$WORK" "$MAX_SLOPE" "$final" "$DURATION" <<'PY'
import csv, glob, json, os, sys

path, work, max_slope, final, duration = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
rows = [(int(r["t_s"]), int(r["rss_kb"]), int(r["fds"]), int(r["threads"])) for r in csv.DictReader(open(path))]
problems = []

def slope(points):
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0

half = rows[len(rows) // 2:]
first = rows[: len(rows) // 2]
rss_slope = slope([(t / 60, rss) for t, rss, _, _ in half])  # KiB per minute
print(f"soak: {len(rows)} samples over {rows[-1][0]} s; RSS {rows[0][1]} KiB at start, "
      f"{max(r[1] for r in first)} KiB max in the first half, {rows[len(rows)//2][1]} KiB at half-time, "
      f"{rows[-1][1]} KiB at the end, {max(r[1] for r in rows)} KiB peak")
print(f"soak: RSS slope over the second half {rss_slope:+.1f} KiB/min (limit {max_slope:.0f}); "
      f"descriptors {min(r[2] for r in rows)}..{max(r[2] for r in rows)}, threads {min(r[3] for r in rows)}..{max(r[3] for r in rows)}")
if rss_slope > max_slope:
    problems.append(f"RSS rises {rss_slope:.1f} KiB/min over the second half (limit {max_slope:.0f})")
if max(r[2] for r in half) > max(r[2] for r in first):
    problems.append(f"descriptors grew: {max(r[2] for r in first)} in the first half, {max(r[2] for r in half)} in the second")

total = 0
for f in sorted(glob.glob(os.path.join(work, "bench-*.json"))):
    name = os.path.basename(f)[6:-5]
    try:
        b = json.load(open(f))
    except Exception:
        err = open(f[:-5] + ".err").read().strip()[-500:]
        problems.append(f"bench {name} gave no result: {err}")
        continue
    total += b["requests"]
    print(f"soak: bench {name:8} {b['requests']:>9} requests, {b['rps']:>8.0f}/s, p99 {b['p99_us']} µs, "
          f"p99.9 {b['p999_us']} µs, retransmissions {b['retransmissions']}, timeouts {b['timeouts']}, errors {b['errors']}")
    if b["timeouts"] or b["errors"]:
        problems.append(f"bench {name}: {b['timeouts']} time-outs, {b['errors']} errors")
    if b["requests"] == 0:
        problems.append(f"bench {name}: no requests completed")
try:
    inj = json.load(open(os.path.join(work, "inject.json")))
    print(f"soak: injected {inj['malformed']} malformed datagrams; {inj['answered']}/{inj['pings']} pings answered")
    if inj["pings"] == 0 or inj["answered"] < 0.99 * inj["pings"]:
        problems.append(f"only {inj['answered']}/{inj['pings']} pings answered between malformed datagrams")
except Exception:
    problems.append("the malformed-datagram injector gave no result: "
                    + open(os.path.join(work, "inject.err")).read().strip()[-500:])
observers = sorted(glob.glob(os.path.join(work, "observe-*.out")))
expected = duration - 5  # one notification a second, less the start-up
for f in observers:
    lines = sum(1 for line in open(f) if line.strip())
    if lines < 0.9 * expected:
        err = open(f[:-4] + ".err").read().strip()[-300:]
        problems.append(f"observer {os.path.basename(f)} saw {lines} notifications, expected about {expected}: {err}")
if observers:
    counts = [sum(1 for line in open(f) if line.strip()) for f in observers]
    print(f"soak: {len(observers)} observers saw {min(counts)}..{max(counts)} notifications each")
print(f"soak: {total} requests in all")
if not final:
    problems.append("GET /time failed after the soak")
for p in problems:
    print(f"soak: FAIL: {p}")
print(f"soak: {'FAILED' if problems else 'passed'} ({path})")
sys.exit(1 if problems else 0)
PY
