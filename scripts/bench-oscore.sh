#!/usr/bin/env bash
# OSCORE requests/s against plain requests/s on the same server in one run: one `tern serve
# --oscore DIR` pinned to core 0, loaded by `tern bench` pinned to core 1 with the same GET of
# `/`, alternately plain and protected with OSCORE (AES-CCM-16-64-128), ROUNDS times each; the
# medians and their ratio, with the CPU each side used. Writes the section between
# <!-- bench:oscore --> and <!-- /bench:oscore --> of BENCHMARKS.md, keeping the rest.
#
#   bash scripts/bench-oscore.sh [-c CONCURRENCY] [-d SECONDS] [-r ROUNDS] [--no-build] [-o FILE]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CONCURRENCY=64
DURATION=5
ROUNDS=3
BUILD=1
OUT="$ROOT/BENCHMARKS.md"

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
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

SERVER_CPU=0
LOAD_CPU=1
[ "$(nproc)" -ge 2 ] || { LOAD_CPU=0; log "only one CPU: server and load share core 0"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tern-bench-oscore.XXXXXX")"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# One context, both halves (aiocoap's folder format), made fresh for the run.
SECRET='{"secret_hex": "0102030405060708090a0b0c0d0e0f10", "salt_hex": "9e7ca92223786340"}'
mkdir -p "$WORK/client" "$WORK/server"
printf '%s\n' "$SECRET" >"$WORK/client/secret.json"
printf '%s\n' "$SECRET" >"$WORK/server/secret.json"
printf '{"sender-id_hex": "01", "recipient-id_hex": ""}\n' >"$WORK/client/settings.json"
# With more requests in flight than the default replay window (32) is wide, a request
# overtaken by 32 later ones would be refused as too old: the window is as wide as allowed.
printf '{"sender-id_hex": "", "recipient-id_hex": "01", "window": 128}\n' >"$WORK/server/settings.json"

PORT="$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
taskset -c "$SERVER_CPU" "$TERN" serve --bind "127.0.0.1:$PORT" --no-tcp --oscore "$WORK/server" --log warn \
    >"$WORK/server.log" 2>&1 </dev/null &
SERVER_PID=$!
URI="coap://127.0.0.1:$PORT/"
for _ in $(seq 1 50); do
    if "$TERN" get --timeout 1 "$URI" >/dev/null 2>&1; then break; fi
    sleep 0.1
done
"$TERN" get --timeout 2 --oscore "$WORK/client" "$URI" >/dev/null \
    || { log "the server does not answer OSCORE; its log:"; cat "$WORK/server.log" >&2; exit 1; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null; }
LOAD_AVG="$(cut -d' ' -f1 /proc/loadavg)"

# run MODE ROUND: one load run; writes $WORK/MODE.ROUND.{json,cpu}
run() {
    local mode="$1" round="$2" extra=() s0 s1 load_pid load_ticks=0 t
    [ "$mode" = oscore ] && extra=(--oscore "$WORK/client")
    s0="$(cpu_ticks "$SERVER_PID")"
    taskset -c "$LOAD_CPU" "$TERN" bench "$URI" -c "$CONCURRENCY" -d "$DURATION" --json "${extra[@]}" \
        >"$WORK/$mode.$round.json" 2>"$WORK/$mode.$round.err" </dev/null &
    load_pid=$!
    while kill -0 "$load_pid" 2>/dev/null; do
        if t="$(cpu_ticks "$load_pid")"; then load_ticks="$t"; fi
        sleep 0.2
    done
    wait "$load_pid" || { log "tern bench ($mode) failed:"; cat "$WORK/$mode.$round.err" >&2; exit 1; }
    s1="$(cpu_ticks "$SERVER_PID")"
    echo "$((s1 - s0)) $load_ticks" >"$WORK/$mode.$round.cpu"
    log "$mode round $round: $(tail -n 1 "$WORK/$mode.$round.json")"
}
for round in $(seq 1 "$ROUNDS"); do
    run plain "$round"
    run oscore "$round"
done

TERN_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null; then TERN_REV="$TERN_REV+dirty"; fi
CPU_MODEL="$( (grep -m1 '^model name' /proc/cpuinfo 2>/dev/null || true) | sed 's/^[^:]*: *//')"
REPRO="bash scripts/bench-oscore.sh -c $CONCURRENCY -d $DURATION -r $ROUNDS"

python3 - "$OUT" "$WORK" "$ROUNDS" "$DURATION" "$(getconf CLK_TCK)" <<PY
import json, os, statistics, sys, datetime, re
out, work, rounds, duration, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
def last_json(path):
    for line in reversed(open(path).read().splitlines()):
        if line.strip().startswith("{"):
            return json.loads(line)
    raise SystemExit(f"no JSON in {path}")
rows, med = [], {}
for mode in ("plain", "oscore"):
    runs = [last_json(os.path.join(work, f"{mode}.{r}.json")) for r in range(1, rounds + 1)]
    cpus = [open(os.path.join(work, f"{mode}.{r}.cpu")).read().split() for r in range(1, rounds + 1)]
    rps = [d["rps"] for d in runs]
    server_cpu = statistics.median(100 * float(c[0]) / hz / duration for c in cpus)
    load_cpu = statistics.median(100 * float(c[1]) / hz / duration for c in cpus)
    m = statistics.median(rps)
    med[mode] = m
    us_per_req = statistics.median(float(c[0]) / hz / d["rps"] / duration * 1e6 for c, d in zip(cpus, runs))
    p50 = statistics.median(d.get("p50_us", 0) for d in runs)
    p99 = statistics.median(d.get("p99_us", 0) for d in runs)
    errors = sum(d.get("errors", 0) + d.get("timeouts", 0) for d in runs)
    rows.append(f"| {mode} | {m:,.0f} | {min(rps):,.0f} – {max(rps):,.0f} | {p50:,.0f} | {p99:,.0f} | {server_cpu:.0f} % | {us_per_req:.2f} µs | {load_cpu:.0f} % | {errors} |")
ratio = med["oscore"] / med["plain"]
section = f"""<!-- bench:oscore -->
## OSCORE requests/s against plain requests/s (one server, one run)

One \`tern serve --oscore DIR\` (at $TERN_REV) pinned to core 0; \`tern bench\` pinned to core 1 sends GET \`/\` with
$CONCURRENCY requests in flight for {duration:.0f} s, alternately plain and protected with OSCORE (AES-CCM-16-64-128, the
client's sequence-number marks stored 65,536 apart, the server's replay window 128 wide), {rounds} rounds each. Medians; server µs/request is its CPU
time per answered request.

| requests | requests/s (median) | range | p50 µs | p99 µs | server CPU | server µs/request | load CPU | errors |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

**OSCORE/plain: {ratio:.2f}×** (target at least 0.7×: {"**met**" if ratio >= 0.7 else "**not met**"}). Both sides protect and
unprotect once per request, so the load generator pays for OSCORE as much as the server does.

- date: {datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
- machine: $CPU_MODEL, \`nproc\` = $(nproc); 1-minute load average $LOAD_AVG before the run
- reproduce: \`$REPRO\`
<!-- /bench:oscore -->"""
text = open(out).read() if os.path.exists(out) else "# Benchmarks\n"
pattern = re.compile(r"<!-- bench:oscore -->.*?<!-- /bench:oscore -->", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open(out, "w").write(text)
print(section)
PY
