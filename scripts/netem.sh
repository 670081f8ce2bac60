#!/usr/bin/env bash
# Real network faults: Tern's server and clients (and libcoap's client) across a test network of
# their own, under tc netem fault profiles. NOT run by CI (it needs root and the sch_netem qdisc).
#
#   sudo bash scripts/netem.sh                      # all profiles, 10 requests of each kind each
#   sudo TERN_NETEM_REQUESTS=30 bash scripts/netem.sh
#   sudo TERN_NETEM_PROFILES="clean dup5" bash scripts/netem.sh
#   sudo TERN_NETEM_CLEAN_ONLY=1 bash scripts/netem.sh   # without netem: only the clean profile
#
# What it does: two network namespaces (tern-ns-srv-PID, tern-ns-cli-PID) joined by a veth pair
# created inside them (10.99.0.1/24 and 10.99.0.2/24 exist only in the namespaces; the host's
# interfaces and routes are never touched); `tern serve` in one; in the other, per profile, N each
# of: tern GET (CON), tern GET --non, tern PUT then GET of the same key (round trip), libcoap
# coap-client-notls GET and PUT. Each profile's netem qdisc is set on both veth ends (so it
# applies to both directions). Prints a table of successes per profile and kind.
# Needs: root, iproute2 (ip, tc), python3, coap-client-notls (scripts/install-peers.sh), cargo.
# Without root, `ip netns` or the netem qdisc it says so in one line and exits 0.
# Exits 1 when anything fails on the clean profile (faults may fail requests; a clean link may not).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

REQUESTS="${TERN_NETEM_REQUESTS:-10}"
NS_SRV="tern-ns-srv-$$"
NS_CLI="tern-ns-cli-$$"
SRV_IP=10.99.0.1
CLI_IP=10.99.0.2
PORT=5683
CLIENT_TIMEOUT=120 # hard bound for one client process (CON gives up after ~93 s at most)

declare -A PROFILE=(
    [clean]=""
    [loss10]="loss 10%"
    [loss20-delay50-reorder]="delay 50ms 10ms loss 20% reorder 25% 50%"
    [dup5]="duplicate 5%"
    [mixed]="delay 20ms 5ms loss 5% duplicate 5% reorder 10% 50% corrupt 1%"
)
PROFILE_ORDER=(clean loss10 loss20-delay50-reorder dup5 mixed)
[ -z "${TERN_NETEM_PROFILES:-}" ] || read -r -a PROFILE_ORDER <<<"$TERN_NETEM_PROFILES"
[ "${TERN_NETEM_CLEAN_ONLY:-0}" != 1 ] || PROFILE_ORDER=(clean)

say() { printf 'netem: %s\n' "$*" >&2; }
skip() { # one line, exit 0
    printf 'netem: skipped: %s\n' "$*"
    exit 0
}

[ "$(id -u)" -eq 0 ] || skip "needs root (ip netns, tc); run: sudo bash scripts/netem.sh"
command -v ip >/dev/null 2>&1 || skip "ip (iproute2) not installed"
command -v tc >/dev/null 2>&1 || skip "tc (iproute2) not installed"
command -v python3 >/dev/null 2>&1 || skip "python3 not installed"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tern-netem.XXXXXX")"
SERVER_PID=""
cleanup() {
    local pid ns
    [ -z "$SERVER_PID" ] || kill "$SERVER_PID" 2>/dev/null || true
    for ns in "$NS_CLI" "$NS_SRV"; do
        # processes this script started inside its own namespaces
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill "$pid" 2>/dev/null || true
        done
    done
    [ -z "$SERVER_PID" ] || timeout 5 tail --pid="$SERVER_PID" -f /dev/null 2>/dev/null || true
    for ns in "$NS_CLI" "$NS_SRV"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -9 "$pid" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || true # also removes the veth end inside it
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the network -----------------------------------------------------------------------------
ip netns add "$NS_SRV" 2>/dev/null || skip "cannot create a network namespace (ip netns add)"
ip netns add "$NS_CLI" 2>/dev/null || skip "cannot create a second network namespace"
# Both veth ends are created inside the namespaces: nothing appears on the host.
ip -n "$NS_SRV" link add v-srv type veth peer name v-cli netns "$NS_CLI" ||
    skip "cannot create a veth pair inside the namespaces"
ip -n "$NS_SRV" addr add "$SRV_IP/24" dev v-srv
ip -n "$NS_CLI" addr add "$CLI_IP/24" dev v-cli
for ns in "$NS_SRV" "$NS_CLI"; do
    ip -n "$ns" link set lo up
done
ip -n "$NS_SRV" link set v-srv up
ip -n "$NS_CLI" link set v-cli up

netem_available() {
    ip netns exec "$NS_CLI" tc qdisc add dev v-cli root netem delay 1ms 2>/dev/null &&
        ip netns exec "$NS_CLI" tc qdisc del dev v-cli root 2>/dev/null
}
if ! netem_available; then
    command -v modprobe >/dev/null 2>&1 && modprobe sch_netem 2>/dev/null || true
    if ! netem_available; then
        if [ "${TERN_NETEM_CLEAN_ONLY:-0}" = 1 ]; then
            say "the netem qdisc is unavailable; running the clean profile only (TERN_NETEM_CLEAN_ONLY=1)"
        else
            skip "the kernel has no netem qdisc (tc qdisc add ... netem failed, also after modprobe sch_netem)"
        fi
    fi
fi

set_profile() { # set_profile NAME: the profile's netem on both ends, or none
    local spec=${PROFILE[$1]} ns dev
    for ns_dev in "$NS_SRV:v-srv" "$NS_CLI:v-cli"; do
        ns=${ns_dev%%:*}
        dev=${ns_dev#*:}
        ip netns exec "$ns" tc qdisc del dev "$dev" root 2>/dev/null || true
        if [ -n "$spec" ]; then
            # shellcheck disable=SC2086 # the spec is a list of netem words
            ip netns exec "$ns" tc qdisc add dev "$dev" root netem $spec
        fi
    done
}

# --- peers and the server ----------------------------------------------------------------------
LC_CLIENT="$(command -v coap-client-notls || true)"
[ -n "$LC_CLIENT" ] || say "coap-client-notls not installed (scripts/install-peers.sh): its columns are n/a"
say "cargo build -p tern-cli"
timeout 1200 cargo build -q -p tern-cli
TERN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/tern"

ip netns exec "$NS_SRV" "$TERN" serve --bind "$SRV_IP:$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
ready=0
for _ in $(seq 1 50); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    if ip netns exec "$NS_CLI" python3 - "$SRV_IP" "$PORT" <<'PY'; then
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.3)
s.sendto(bytes([0x40, 0, 0x12, 0x34]), (sys.argv[1], int(sys.argv[2])))
try:
    d = s.recv(64)
except OSError:
    sys.exit(1)
sys.exit(0 if len(d) >= 4 and d[0] >> 4 == 0x7 else 1)
PY
        ready=1
        break
    fi
    sleep 0.2
done
if [ "$ready" != 1 ]; then
    say "tern serve did not answer on $SRV_IP:$PORT within 10 s"
    cat "$WORK/server.log" >&2
    exit 1
fi
URI="coap://$SRV_IP:$PORT"

# --- one request of each kind -------------------------------------------------------------------
in_cli() { ip netns exec "$NS_CLI" timeout --kill-after=5 "$CLIENT_TIMEOUT" "$@"; }

# Each job writes "ok" or "fail" and its duration (ms) to $WORK/<profile>/<kind>.<n>.
job() { # job PROFILE KIND N
    local p=$1 kind=$2 n=$3 out="$WORK/$1/$2.$3" t0 ok=fail key value
    t0=$(date +%s%N)
    case $kind in
        tern-get)
            in_cli "$TERN" get --timeout 100 "$URI/time" >"$out.out" 2>"$out.err" &&
                [ -s "$out.out" ] && ok=ok
            ;;
        tern-get-non)
            in_cli "$TERN" get --non --timeout 10 "$URI/time" >"$out.out" 2>"$out.err" &&
                [ -s "$out.out" ] && ok=ok
            ;;
        tern-put-get)
            key="$p-$n"
            value="v-$p-$n-$RANDOM"
            if in_cli "$TERN" put --timeout 100 -e "$value" -t text "$URI/store/$key" >"$out.out" 2>"$out.err" &&
                in_cli "$TERN" get --timeout 100 "$URI/store/$key" >"$out.out" 2>>"$out.err" &&
                [ "$(cat "$out.out")" = "$value" ]; then
                ok=ok
            fi
            ;;
        libcoap-get)
            # coap-client exits 0 on failures: judge its output
            in_cli "$LC_CLIENT" -B 100 "$URI/time" >"$out.out" 2>"$out.err" || true
            if [ -s "$out.out" ] && ! grep -Eq '^ *[45]\.[0-9][0-9]' "$out.out" "$out.err"; then ok=ok; fi
            ;;
        libcoap-put)
            key="lc-$p-$n"
            value="w-$p-$n-$RANDOM"
            in_cli "$LC_CLIENT" -B 100 -m put -e "$value" "$URI/store/$key" >"$out.out" 2>"$out.err" || true
            in_cli "$LC_CLIENT" -B 100 "$URI/store/$key" >"$out.get" 2>>"$out.err" || true
            [ "$(cat "$out.get")" = "$value" ] && ok=ok
            ;;
    esac
    echo "$ok $((($(date +%s%N) - t0) / 1000000))" >"$out"
}

KINDS=(tern-get tern-get-non tern-put-get)
[ -z "$LC_CLIENT" ] || KINDS+=(libcoap-get libcoap-put)

declare -A CELL
clean_failures=0
for p in "${PROFILE_ORDER[@]}"; do
    [ -n "${PROFILE[$p]+x}" ] || { say "unknown profile $p"; exit 2; }
    mkdir -p "$WORK/$p"
    set_profile "$p"
    say "profile $p (netem: ${PROFILE[$p]:-none}): $REQUESTS × ${#KINDS[@]} kinds in parallel"
    pids=()
    for kind in "${KINDS[@]}"; do
        for n in $(seq 1 "$REQUESTS"); do
            job "$p" "$kind" "$n" &
            pids+=("$!")
        done
    done
    for pid in "${pids[@]}"; do wait "$pid" || true; done # each job is bounded by timeout
    for kind in "${KINDS[@]}"; do
        ok=0
        max=0
        for n in $(seq 1 "$REQUESTS"); do
            read -r res ms <"$WORK/$p/$kind.$n" || res=fail ms=0
            [ "$res" = ok ] && ok=$((ok + 1))
            [ "$ms" -gt "$max" ] && max=$ms
        done
        CELL[$p,$kind]="$ok/$REQUESTS ($(awk -v m="$max" 'BEGIN { printf "%.1f", m / 1000 }') s)"
        if [ "$p" = clean ] && [ "$ok" -ne "$REQUESTS" ]; then
            clean_failures=$((clean_failures + REQUESTS - ok))
        fi
    done
    if [ -n "${PROFILE[$p]}" ]; then
        ip netns exec "$NS_CLI" tc -s qdisc show dev v-cli | sed -n 's/^ *Sent/  client→server: Sent/p' >"$WORK/$p.stats"
        ip netns exec "$NS_SRV" tc -s qdisc show dev v-srv | sed -n 's/^ *Sent/  server→client: Sent/p' >>"$WORK/$p.stats"
    fi
done
set_profile clean
kill -0 "$SERVER_PID" 2>/dev/null || { say "tern serve died"; cat "$WORK/server.log" >&2; exit 1; }

# --- the table --------------------------------------------------------------------------------------
echo
echo "Successes per profile (ok/total, slowest in seconds); netem on both directions:"
echo
printf '| profile | netem |'
for kind in "${KINDS[@]}"; do printf ' %s |' "$kind"; done
printf '\n|---|---|'
for _ in "${KINDS[@]}"; do printf -- '---|'; done
printf '\n'
for p in "${PROFILE_ORDER[@]}"; do
    printf '| %s | %s |' "$p" "${PROFILE[$p]:-none}"
    for kind in "${KINDS[@]}"; do printf ' %s |' "${CELL[$p,$kind]}"; done
    printf '\n'
done
for p in "${PROFILE_ORDER[@]}"; do
    if [ -s "$WORK/$p.stats" ]; then
        echo
        echo "$p (tc -s):"
        cat "$WORK/$p.stats"
    fi
done
if [ "$clean_failures" -gt 0 ]; then
    say "$clean_failures request(s) failed on the clean profile"
    exit 1
fi
