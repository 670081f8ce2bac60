#!/usr/bin/env bash
# The interop matrix: runs every supported combination of transport × security × feature × peer
# against real peers and writes INTEROP.md (a table: pass, FAIL with a footnote, or n/s with the
# reason).
#   bash scripts/interop-matrix.sh                 # peers from scripts/install-peers.sh
#   TERN_INTEROP_OUT=/tmp/x.md bash scripts/interop-matrix.sh
# scripts/test-all.sh runs it after the cargo tests. Exits non-zero when any supported cell fails.
#
# Peers: libcoap's coap-client-notls / coap-server-notls (coap://, coap+tcp://) and, for coaps://
# and coaps+tcp://, coap-client-openssl / coap-server-openssl (all libcoap3-bin), and aiocoap-client
# from the venv that install-peers.sh makes (${TERN_PEERS_DIR:-~/.cache/tern-peers}/venv, or
# TERN_AIOCOAP_CLIENT; its coaps:// needs DTLSSocket, which install-peers.sh adds). Certificates
# for the PKI rows are made fresh by scripts/make-test-certs.sh. Tern is built with
# `cargo build -p tern-cli` (honours CARGO_TARGET_DIR).
# Every server binds to 127.0.0.1 on a free port and is killed on exit; every client run is
# bounded by `timeout`. coap-client exits 0 even when a request failed, so it is judged by its
# output only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT="${TERN_INTEROP_OUT:-$ROOT/INTEROP.md}"
PEERS_DIR="${TERN_PEERS_DIR:-${HOME:-/root}/.cache/tern-peers}"
AIOCOAP_CLIENT="${TERN_AIOCOAP_CLIENT:-$PEERS_DIR/venv/bin/aiocoap-client}"
CLIENT_TIMEOUT=30 # seconds for any one client run

log() { printf 'interop-matrix: %s\n' "$*" >&2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tern-interop.XXXXXX")"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # bounded: a killed child is reaped at once; SIGKILL if it ignored SIGTERM
        timeout 5 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build Tern ------------------------------------------------------------------------------
log "cargo build -p tern-cli"
timeout 1200 cargo build -q -p tern-cli
TERN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/tern"
[ -x "$TERN" ] || { log "no tern binary at $TERN"; exit 1; }

# --- the table -------------------------------------------------------------------------------
COLS=(lc_tern tern_lc aio_tern)
declare -A COL_TITLE=(
    [lc_tern]="libcoap client → tern serve"
    [tern_lc]="tern client → libcoap server"
    [aio_tern]="aiocoap client → tern serve"
)
ROWS=()
declare -A ROW_TITLE CELL
row() { # row ID "transport | security | feature"
    ROWS+=("$1")
    ROW_TITLE[$1]="$2"
}
row wk "coap:// (UDP) | none | GET /.well-known/core"
row get "coap:// (UDP) | none | GET"
row put "coap:// (UDP) | none | PUT then GET round trip"
row nf "coap:// (UDP) | none | 4.04 Not Found"
row sep "coap:// (UDP) | none | separate response"
row non "coap:// (UDP) | none | NON request"
row dtls_psk "coaps:// (DTLS 1.2) | PSK | GET, PUT, 4.04"
row dtls_pki "coaps:// (DTLS 1.2) | PKI (X.509) | GET, PUT, 4.04"
row tcp "coap+tcp:// | none | GET, PUT, 4.04"
row tls_psk "coaps+tcp:// (TLS) | PSK | GET, PUT, 4.04"
row tls_pki "coaps+tcp:// (TLS) | PKI (X.509) | GET, PUT, 4.04"
row block "coap:// (UDP) | none | block-wise (RFC 7959)"
row tcp_block "coap+tcp:// | none | block-wise (RFC 7959)"
row observe "coap:// (UDP) | none | observe (RFC 7641)"
row oscore "coap:// (UDP) | OSCORE (RFC 8613) | GET, PUT, 4.04"

FOOTNOTES=()
PASS=0
FAILS=0
NS=0
set_cell() { # set_cell ROW COL VALUE
    CELL[$1,$2]="$3"
}
pass() { set_cell "$1" "$2" pass; PASS=$((PASS + 1)); }
na() { set_cell "$1" "$2" "n/s: $3"; NS=$((NS + 1)); }
fail() { # fail ROW COL "why" [files to show...]
    local r=$1 c=$2 why=$3 n f
    shift 3
    FOOTNOTES+=("")
    n=${#FOOTNOTES[@]}
    set_cell "$r" "$c" "FAIL[^$n]"
    FAILS=$((FAILS + 1))
    local note="[^$n]: ${ROW_TITLE[$r]}, ${COL_TITLE[$c]}: $why"
    for f in "$@"; do
        [ -s "$f" ] || continue
        note+=$'\n    '"$(basename "$f"):"
        # (without terminal colour codes: tern's log colours its lines)
        note+=$'\n'"$(head -c 2000 "$f" | head -n 25 | sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/        /')"
    done
    FOOTNOTES[n - 1]="$note"
    log "FAIL: ${ROW_TITLE[$r]} / ${COL_TITLE[$c]}: $why"
}

# --- helpers -----------------------------------------------------------------------------------
free_port() { # a port free for both UDP and TCP on 127.0.0.1
    python3 - <<'PY'
import socket
for _ in range(100):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    port = u.getsockname()[1]
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        t.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        t.close()
        u.close()
    print(port)
    break
else:
    raise SystemExit("no free port")
PY
}

coap_ping() { # coap_ping PORT: true when 127.0.0.1:PORT answers a CoAP ping (empty CON) with RST
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.3)
s.sendto(bytes([0x40, 0, 0x12, 0x34]), ("127.0.0.1", int(sys.argv[1])))
try:
    data = s.recv(64)
except OSError:
    sys.exit(1)
sys.exit(0 if len(data) >= 4 and data[0] >> 4 == 0x7 and data[2:4] == b"\x12\x34" else 1)
PY
}

start_server() { # start_server NAME PORT CMD...: starts, waits (bounded) until it answers
    local name=$1 port=$2 i
    shift 2
    "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
    local pid=$!
    for i in $(seq 1 50); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited before becoming ready"
            return 1
        fi
        coap_ping "$port" && return 0
        sleep 0.2
    done
    log "$name did not answer a CoAP ping on 127.0.0.1:$port within 10 s"
    return 1
}

wait_log() { # wait_log NAME REGEX: true once the server's log matches (bounded, 10 s)
    local i
    for i in $(seq 1 50); do
        grep -Eq "$2" "$WORK/$1.log" 2>/dev/null && return 0
        sleep 0.2
    done
    log "$1 did not log /$2/ within 10 s"
    return 1
}

wait_tcp() { # wait_tcp PORT: true once 127.0.0.1:PORT accepts TCP connections (bounded, 10 s)
    local i
    for i in $(seq 1 50); do
        timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null && return 0
        sleep 0.2
    done
    log "nothing accepted TCP connections on 127.0.0.1:$1 within 10 s"
    return 1
}

# The listeners of the servers started (SERVER is the name its log goes by, SCHEME coaps, coap+tcp
# or coaps+tcp): SRV_URI[SERVER,SCHEME] is its base URI once it is there, else SRV_BLOCK says why not.
declare -A SRV_URI SRV_BLOCK
tern_listener() { # tern_listener SERVER SCHEME PORT: there once tern serve logs it
    if wait_log "$1" "listening on 127\.0\.0\.1:$3 \(${2//+/\\+}\)"; then
        SRV_URI[$1,$2]="$2://127.0.0.1:$3"
    else
        SRV_BLOCK[$1,$2]="tern serve ($1) did not report its $2 listener on 127.0.0.1:$3"
    fi
}
lc_listener() { # lc_listener SERVER SCHEME PORT: a libcoap server's, there once it accepts TCP (coaps: at once)
    if [ "$2" = coaps ] || wait_tcp "$3"; then
        SRV_URI[$1,$2]="$2://127.0.0.1:$3"
    else
        SRV_BLOCK[$1,$2]="$1 does not accept $2 connections on 127.0.0.1:$3"
    fi
}

# run NAME CMD...: runs a client, bounded; stdout, stderr and exit status in $WORK/NAME.{out,err,rc}
run() {
    local name=$1 rc=0
    shift
    printf '%q ' "$@" >"$WORK/$name.cmd"
    timeout --kill-after=5 "$CLIENT_TIMEOUT" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null || rc=$?
    echo "$rc" >"$WORK/$name.rc"
    return 0
}
rc_of() { cat "$WORK/$1.rc"; }
files_of() { echo "$WORK/$1.cmd" "$WORK/$1.rc" "$WORK/$1.out" "$WORK/$1.err"; }
# An error response code line (4.xx/5.xx) anywhere in a client's output.
has_error_code() { grep -Eq '(^|[^0-9.])[45]\.[0-9][0-9]( |$)' "$WORK/$1.out" "$WORK/$1.err"; }

# One cell's sub-checks: each miss adds a reason and the files that show it.
cell_begin() { CELL_WHY=(); CELL_FILES=(); }
cell_miss() { CELL_WHY+=("$1"); shift; CELL_FILES+=("$@"); }
cell_end() { # cell_end ROW COL SERVER_LOG
    if [ "${#CELL_WHY[@]}" -eq 0 ]; then
        pass "$1" "$2"
        return
    fi
    local why="" w
    for w in "${CELL_WHY[@]}"; do why+="${why:+; }$w"; done
    fail "$1" "$2" "$why" "${CELL_FILES[@]}" "$3"
}

# --- peers and servers ---------------------------------------------------------------------------
LC_CLIENT="$(command -v coap-client-notls || true)"
LC_SERVER="$(command -v coap-server-notls || true)"
[ -x "$AIOCOAP_CLIENT" ] || AIOCOAP_CLIENT=""
KEY="m$$x$RANDOM" # a fresh store key per run

TERN_PORT="$(free_port)"
TERN_OK=1
mkdir -p "$WORK/files" # tern serve's /files/ (the block-wise row)
# The OSCORE row: one security context (aiocoap's folder format), the server's half for tern
# serve, the client's for aiocoap-client's credentials file.
OSCORE_SECRET='{"secret_hex": "0102030405060708090a0b0c0d0e0f10", "salt_hex": "9e7ca92223786340"}'
mkdir -p "$WORK/oscore-server" "$WORK/oscore-client"
printf '%s\n' "$OSCORE_SECRET" >"$WORK/oscore-server/secret.json"
printf '%s\n' "$OSCORE_SECRET" >"$WORK/oscore-client/secret.json"
printf '{"sender-id_hex": "", "recipient-id_hex": "0b"}\n' >"$WORK/oscore-server/settings.json"
printf '{"sender-id_hex": "0b", "recipient-id_hex": ""}\n' >"$WORK/oscore-client/settings.json"
start_server tern-serve "$TERN_PORT" "$TERN" serve --bind "127.0.0.1:$TERN_PORT" --files "$WORK/files" \
    --oscore "$WORK/oscore-server" || TERN_OK=0
TERN_URI="coap://127.0.0.1:$TERN_PORT"
LC_OK=0
if [ -n "$LC_SERVER" ]; then
    LC_PORT="$(free_port)"
    LC_OK=1
    start_server coap-server "$LC_PORT" "$LC_SERVER" -A 127.0.0.1 -p "$LC_PORT" || LC_OK=0
    LC_URI="coap://127.0.0.1:$LC_PORT"
fi
# Both also listen on TCP on their UDP port (coap+tcp://).
if [ "$TERN_OK" = 1 ]; then
    tern_listener tern-serve coap+tcp "$TERN_PORT"
else
    SRV_BLOCK[tern-serve,coap+tcp]="tern serve did not start"
fi
if [ "$LC_OK" = 1 ]; then
    lc_listener coap-server coap+tcp "$LC_PORT"
else
    SRV_BLOCK[coap-server,coap+tcp]="coap-server-notls did not start or is not installed (run scripts/install-peers.sh)"
fi

# Why a whole column cannot run, or "" when it can.
column_blocker() {
    case $1 in
        lc_tern)
            [ -n "$LC_CLIENT" ] || { echo "coap-client-notls not installed (run scripts/install-peers.sh)"; return; }
            [ "$TERN_OK" = 1 ] || echo "tern serve did not start"
            ;;
        tern_lc)
            [ -n "$LC_SERVER" ] || { echo "coap-server-notls not installed (run scripts/install-peers.sh)"; return; }
            [ "$LC_OK" = 1 ] || echo "coap-server-notls did not start"
            ;;
        aio_tern)
            [ -n "$AIOCOAP_CLIENT" ] || { echo "aiocoap-client not found (run scripts/install-peers.sh)"; return; }
            [ "$TERN_OK" = 1 ] || echo "tern serve did not start"
            ;;
    esac
}
plain_server() { # plain_server COL: the plain server COL's client talks to
    case $1 in
        tern_lc) echo coap-server ;;
        *) echo tern-serve ;;
    esac
}
server_log() { echo "$WORK/$(plain_server "$1").log"; }

# --- libcoap client → tern serve ---------------------------------------------------------------
lc() { run "$1" "$LC_CLIENT" -B 5 "${@:2}"; }
check_lc_tern() {
    local c=lc_tern
    lc lc_wk "$TERN_URI/.well-known/core"
    if ! has_error_code lc_wk && grep -q '</time>' "$WORK/lc_wk.out" && grep -q '</echo>' "$WORK/lc_wk.out"; then
        pass wk $c
    else fail wk $c "no </time> and </echo> links" $(files_of lc_wk); fi

    lc lc_get "$TERN_URI/time"
    if ! has_error_code lc_get && [ -n "$(tr -d '[:space:]' <"$WORK/lc_get.out")" ]; then
        pass get $c
    else fail get $c "no /time payload" $(files_of lc_get); fi

    lc lc_put -m put -e "lc-$KEY" "$TERN_URI/store/lc-$KEY"
    lc lc_put_get "$TERN_URI/store/lc-$KEY"
    if ! has_error_code lc_put && [ "$(cat "$WORK/lc_put_get.out")" = "lc-$KEY" ]; then
        pass put $c
    else fail put $c "GET did not return what PUT stored" $(files_of lc_put) $(files_of lc_put_get); fi

    lc lc_nf "$TERN_URI/nope"
    if grep -Eq '^ *4\.04' "$WORK/lc_nf.out" "$WORK/lc_nf.err"; then
        pass nf $c
    else fail nf $c "no 4.04 reported" $(files_of lc_nf); fi

    na sep $c "tern serve has no slow resource to answer separately"

    lc lc_non -N "$TERN_URI/time"
    if ! has_error_code lc_non && [ -n "$(tr -d '[:space:]' <"$WORK/lc_non.out")" ]; then
        pass non $c
    else fail non $c "no /time payload for a NON GET" $(files_of lc_non); fi
}

# --- tern client → libcoap server --------------------------------------------------------------
check_tern_lc() {
    local c=tern_lc
    run t_wk "$TERN" get --timeout 20 "$LC_URI/.well-known/core"
    if [ "$(rc_of t_wk)" = 0 ] && grep -q '</time>' "$WORK/t_wk.out" && grep -q '</example_data>' "$WORK/t_wk.out"; then
        pass wk $c
    else fail wk $c "no </time> and </example_data> links" $(files_of t_wk); fi

    run t_get "$TERN" get --timeout 20 "$LC_URI/time"
    if [ "$(rc_of t_get)" = 0 ] && [ -n "$(tr -d '[:space:]' <"$WORK/t_get.out")" ]; then
        pass get $c
    else fail get $c "no /time payload" $(files_of t_get); fi

    run t_put "$TERN" put --timeout 20 -e "tern-$KEY" -t text "$LC_URI/example_data"
    run t_put_get "$TERN" get --timeout 20 "$LC_URI/example_data"
    if [ "$(rc_of t_put)" = 0 ] && [ "$(rc_of t_put_get)" = 0 ] && [ "$(cat "$WORK/t_put_get.out")" = "tern-$KEY" ]; then
        pass put $c
    else fail put $c "GET did not return what PUT stored" $(files_of t_put) $(files_of t_put_get); fi

    run t_nf "$TERN" get --timeout 20 "$LC_URI/nope"
    if [ "$(rc_of t_nf)" = 1 ] && grep -q '4\.04' "$WORK/t_nf.err"; then
        pass nf $c
    else fail nf $c "expected exit 1 and a 4.04 reason" $(files_of t_nf); fi

    # /async?1: libcoap sends an empty ACK, then the response as a separate CON after 1 s.
    local t0 t1
    t0=$(date +%s%N)
    run t_sep "$TERN" get --timeout 20 -v "$LC_URI/async?1"
    t1=$(date +%s%N)
    local ms=$(((t1 - t0) / 1000000))
    if [ "$(rc_of t_sep)" = 0 ] && grep -q 'done' "$WORK/t_sep.out" && [ "$ms" -ge 900 ]; then
        pass sep $c
    else
        echo "elapsed ${ms} ms (the separate response comes after 1 s)" >"$WORK/t_sep.note"
        fail sep $c "no separate response" $(files_of t_sep) "$WORK/t_sep.note"
    fi

    run t_non "$TERN" get --timeout 20 --non "$LC_URI/time"
    if [ "$(rc_of t_non)" = 0 ] && [ -n "$(tr -d '[:space:]' <"$WORK/t_non.out")" ]; then
        pass non $c
    else fail non $c "no /time payload for a NON GET" $(files_of t_non); fi
}

# --- aiocoap client → tern serve ---------------------------------------------------------------
aio() { run "$1" "$AIOCOAP_CLIENT" --no-pretty-print --no-color "${@:2}"; }
check_aio_tern() {
    local c=aio_tern
    aio a_wk "$TERN_URI/.well-known/core"
    if [ "$(rc_of a_wk)" = 0 ] && grep -q '</time>' "$WORK/a_wk.out" && grep -q '</echo>' "$WORK/a_wk.out"; then
        pass wk $c
    else fail wk $c "no </time> and </echo> links" $(files_of a_wk); fi

    aio a_get "$TERN_URI/time"
    if [ "$(rc_of a_get)" = 0 ] && [ -n "$(tr -d '[:space:]' <"$WORK/a_get.out")" ]; then
        pass get $c
    else fail get $c "no /time payload" $(files_of a_get); fi

    aio a_put -m PUT --payload "aio-$KEY" "$TERN_URI/store/aio-$KEY"
    aio a_put_get "$TERN_URI/store/aio-$KEY"
    if [ "$(rc_of a_put)" = 0 ] && [ "$(rc_of a_put_get)" = 0 ] && [ "$(cat "$WORK/a_put_get.out")" = "aio-$KEY" ]; then
        pass put $c
    else fail put $c "GET did not return what PUT stored" $(files_of a_put) $(files_of a_put_get); fi

    aio a_nf "$TERN_URI/nope"
    if [ "$(rc_of a_nf)" != 0 ] && [ "$(rc_of a_nf)" != 124 ] && grep -q '4\.04' "$WORK/a_nf.out" "$WORK/a_nf.err"; then
        pass nf $c
    else fail nf $c "expected a non-zero exit and 4.04" $(files_of a_nf); fi

    na sep $c "tern serve has no slow resource to answer separately"

    aio a_non --non "$TERN_URI/time"
    if [ "$(rc_of a_non)" = 0 ] && [ -n "$(tr -d '[:space:]' <"$WORK/a_non.out")" ]; then
        pass non $c
    else fail non $c "no /time payload for a NON GET" $(files_of a_non); fi
}

for c in "${COLS[@]}"; do
    blocker="$(column_blocker "$c")"
    if [ -n "$blocker" ]; then
        for r in wk get put nf sep non; do
            if [ "$r" = sep ] && [ "$c" != tern_lc ]; then
                na sep "$c" "tern serve has no slow resource to answer separately"
            else
                fail "$r" "$c" "$blocker" "$(server_log "$c")"
            fi
        done
        continue
    fi
    log "running ${COL_TITLE[$c]}"
    "check_$c"
done

# --- block-wise (RFC 7959) ------------------------------------------------------------------------
# Each cell: a body far larger than one block PUT then GET back, compared byte for byte (and, on
# tern serve, the file /files/ stored too). Bodies are printable text made fresh per run. The
# tcp_block row does the same over coap+tcp:// with the plain servers' TCP listeners: there a body
# that fits the receiver's Max-Message-Size may go whole; libcoap's -b and tern's -b still ask
# for blocks, aiocoap chooses for itself.
make_body() { # make_body FILE BYTES
    python3 - "$1" "$2" "$KEY" <<'PY'
import random, string, sys
path, n, key = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r = random.Random(key)
alphabet = string.ascii_letters + string.digits + " \n"
open(path, "w").write("".join(r.choice(alphabet) for _ in range(n)))
PY
}
same_bytes() { cmp -s "$1" "$2"; }
cmp_note() { # cmp_note NAME A B: a note file saying how two files differ
    { ls -l "$2" "$3" 2>&1; cmp "$2" "$3" 2>&1 | head -n 3; } >"$WORK/$1.note" || true
    echo "$WORK/$1.note"
}

# The base URI of COL's plain server for a block-wise ROW (block: coap://, tcp_block: coap+tcp://),
# "" when that listener is not there.
block_uri() { # block_uri ROW COL
    local srv
    srv="$(plain_server "$2")"
    if [ "$1" = tcp_block ]; then
        echo "${SRV_URI[$srv,coap+tcp]:-}"
    elif [ "$srv" = tern-serve ]; then
        echo "$TERN_URI"
    else
        echo "$LC_URI"
    fi
}

# libcoap client → tern serve: -b 64 (szx 2) both ways, 200 KB
check_block_lc_tern() { # check_block_lc_tern ROW
    local r=$1 c=lc_tern p="$1_lc" uri
    uri="$(block_uri "$r" $c)"
    local in="$WORK/$p.in" out="$WORK/$p.body" stored="$WORK/files/lc-$r.bin"
    make_body "$in" 200000
    cell_begin
    lc "${p}_put" -b 64 -m put -f "$in" "$uri/files/lc-$r.bin"
    if has_error_code "${p}_put"; then
        cell_miss "PUT of 200 KB in 64-byte blocks answered an error" $(files_of "${p}_put")
    fi
    same_bytes "$in" "$stored" ||
        cell_miss "the file tern serve stored differs from what was PUT" $(cmp_note "${p}_stored" "$in" "$stored")
    lc "${p}_get" -b 64 -o "$out" "$uri/files/lc-$r.bin"
    if has_error_code "${p}_get" || ! same_bytes "$in" "$out"; then
        cell_miss "GET in 64-byte blocks did not return the 200 KB PUT" $(files_of "${p}_get") $(cmp_note "${p}_get" "$in" "$out")
    fi
    cell_end "$r" $c "$WORK/tern-serve.log"
}

# tern client → libcoap server: Block1 PUT in 1024-byte blocks, Block2 GET in 256-byte blocks, 100 KB
check_block_tern_lc() { # check_block_tern_lc ROW
    local r=$1 c=tern_lc p="$1_t" uri
    uri="$(block_uri "$r" $c)"
    local in="$WORK/$p.in" out="$WORK/$p.body"
    make_body "$in" 100000
    cell_begin
    run "${p}_put" "$TERN" put --timeout 20 -b 1024 -f "$in" "$uri/example_data"
    [ "$(rc_of "${p}_put")" = 0 ] || cell_miss "PUT of 100 KB in 1024-byte blocks failed" $(files_of "${p}_put")
    run "${p}_get" "$TERN" get --timeout 20 -b 256 -o "$out" "$uri/example_data"
    if [ "$(rc_of "${p}_get")" != 0 ] || ! same_bytes "$in" "$out"; then
        cell_miss "GET in 256-byte blocks did not return the 100 KB PUT" $(files_of "${p}_get") $(cmp_note "${p}_get" "$in" "$out")
    fi
    cell_end "$r" $c "$WORK/coap-server.log"
}

# aiocoap client → tern serve, its own block sizes: 20 KB over UDP (aiocoap goes block-wise above
# 1024 bytes), 150 KB over TCP
declare -A AIO_BLOCK_BYTES=([block]=20000 [tcp_block]=150000)
check_block_aio_tern() { # check_block_aio_tern ROW
    local r=$1 c=aio_tern p="$1_a" uri n kb
    uri="$(block_uri "$r" $c)"
    n="${AIO_BLOCK_BYTES[$r]}"
    kb="$((n / 1000)) KB"
    local in="$WORK/$p.in" out="$WORK/${p}_get.out" stored="$WORK/files/aio-$r.txt"
    make_body "$in" "$n"
    cell_begin
    aio "${p}_put" -m PUT --payload "@$in" "$uri/files/aio-$r.txt"
    [ "$(rc_of "${p}_put")" = 0 ] && ! has_error_code "${p}_put" ||
        cell_miss "PUT of $kb failed" $(files_of "${p}_put")
    same_bytes "$in" "$stored" ||
        cell_miss "the file tern serve stored differs from what was PUT" $(cmp_note "${p}_stored" "$in" "$stored")
    aio "${p}_get" "$uri/files/aio-$r.txt"
    if [ "$(rc_of "${p}_get")" != 0 ] || ! same_bytes "$in" "$out"; then
        cell_miss "GET did not return the $kb PUT" $(files_of "${p}_get") $(cmp_note "${p}_cmp" "$in" "$out")
    fi
    cell_end "$r" $c "$WORK/tern-serve.log"
}

for r in block tcp_block; do
    for c in "${COLS[@]}"; do
        blocker="$(column_blocker "$c")"
        if [ -z "$blocker" ] && [ -z "$(block_uri "$r" "$c")" ]; then
            blocker="${SRV_BLOCK[$(plain_server "$c"),coap+tcp]:-no coap+tcp:// listener}"
        fi
        if [ -n "$blocker" ]; then
            fail "$r" "$c" "$blocker" "$(server_log "$c")"
            continue
        fi
        log "running ${ROW_TITLE[$r]%% |*} block-wise, ${COL_TITLE[$c]}"
        "check_block_$c" "$r"
    done
done

# --- observe (RFC 7641) -------------------------------------------------------------------------
# Each cell: an observation of /time for about 5 s, which must bring the first response and at
# least three notifications, bringing new times (tern serve's /time and libcoap's both change once a
# second). aiocoap-client 0.4.17 prints only the first response of an observation
# (chrysn/aiocoap#395), so the aiocoap cell observes with aiocoap's library (the same install).
distinct_times() { # distinct_times FILE: distinct tern serve times (YYYY-MM-DDTHH:MM:SSZ) in FILE
    grep -oE '[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z' "$1" | sort -u | wc -l
}

# libcoap client → tern serve: coap-client -s 5 (its payloads are printed back to back)
check_observe_lc_tern() {
    local c=lc_tern n
    cell_begin
    run o_lc "$LC_CLIENT" -s 5 "$TERN_URI/time"
    has_error_code o_lc && cell_miss "an error response" $(files_of o_lc)
    n="$(distinct_times "$WORK/o_lc.out")"
    [ "$n" -ge 4 ] || cell_miss "$n distinct times in 5 s, expected the first response and at least 3 notifications" $(files_of o_lc)
    cell_end observe $c "$WORK/tern-serve.log"
}

# tern client → libcoap server: tern get -s 5, one line per notification
check_observe_tern_lc() {
    local c=tern_lc n
    cell_begin
    run o_t "$TERN" get -s 5 --timeout 20 "$LC_URI/time"
    [ "$(rc_of o_t)" = 0 ] || cell_miss "tern get -s 5 failed" $(files_of o_t)
    n="$(grep -v '^[[:space:]]*$' "$WORK/o_t.out" | sort -u | wc -l)"
    [ "$n" -ge 4 ] || cell_miss "$n distinct times in 5 s, expected the first response and at least 3 notifications" $(files_of o_t)
    cell_end observe $c "$WORK/coap-server.log"
}

# aiocoap → tern serve: aiocoap's observation API, 4 notifications in increasing Observe order (the
# first response and the first notification may fall in the same second)
check_observe_aio_tern() {
    local c=aio_tern py
    py="$(dirname "$AIOCOAP_CLIENT")/python"
    cell_begin
    cat >"$WORK/aio-observe.py" <<'PY'
import asyncio, sys
import aiocoap

async def main(uri, want, limit):
    ctx = await aiocoap.Context.create_client_context()
    pr = ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri, observe=0))
    r = await pr.response
    print("first", r.code, r.payload.decode(), flush=True)
    n = 0
    async def notifications():
        nonlocal n
        async for r in pr.observation:
            n += 1
            print("notification", r.opt.observe, r.code, r.payload.decode(), flush=True)
            if n >= want:
                break
    try:
        await asyncio.wait_for(notifications(), limit)
    except asyncio.TimeoutError:
        pass
    pr.observation.cancel()
    await ctx.shutdown()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
PY
    run o_a "$py" "$WORK/aio-observe.py" "$TERN_URI/time" 4 8
    [ "$(rc_of o_a)" = 0 ] || cell_miss "the aiocoap observation failed" $(files_of o_a)
    local values
    values="$(awk '$1 == "notification" && $3 == "2.05" { print $2 }' "$WORK/o_a.out")"
    [ "$(echo "$values" | grep -c .)" = 4 ] || cell_miss "expected 4 notifications" $(files_of o_a)
    [ "$values" = "$(echo "$values" | sort -n -u)" ] || cell_miss "Observe values not increasing" $(files_of o_a)
    [ "$(distinct_times "$WORK/o_a.out")" -ge 4 ] || cell_miss "the notifications did not bring new times" $(files_of o_a)
    cell_end observe $c "$WORK/tern-serve.log"
}

for c in "${COLS[@]}"; do
    blocker="$(column_blocker "$c")"
    if [ -n "$blocker" ]; then
        fail observe "$c" "$blocker" "$(server_log "$c")"
        continue
    fi
    log "running observe, ${COL_TITLE[$c]}"
    "check_observe_$c"
done

# --- coaps:// (DTLS 1.2), coap+tcp:// and coaps+tcp:// (TLS): GET, PUT, 4.04 ----------------------
# Each cell is three checked exchanges over one kind of session: a GET whose payload is checked
# (tern serve's /whoami, which names the identity the session was authenticated with; libcoap's
# banner at /), a PUT then GET round trip, and a GET of a missing path answered 4.04. coap+tcp://
# goes to the plain servers above, which listen on TCP on their UDP port. The secure rows' servers
# are processes of their own, so a security failure cannot spoil the plain rows: tern serve with a
# DTLS address, on which it listens for TLS too, and coap-server-openssl, which serves DTLS and TLS
# on its port + 1. tinydtls (aiocoap) takes PSKs of at most 16 bytes: a short key.
LC_SECURE_CLIENT="$(command -v coap-client-openssl || true)"
LC_SECURE_SERVER="$(command -v coap-server-openssl || true)"
DTLS_ID="tern-interop"
DTLS_KEY="k$$x$RANDOM" # at most 14 bytes
CERTS="$WORK/certs"
CLIENT_CN="tern-test-client" # the client certificate's CN (scripts/make-test-certs.sh)

free_port_pair() { # a port P with P and P+1 free for UDP and TCP (libcoap serves DTLS on P+1)
    python3 - <<'PY'
import socket
def free(port):
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            s.close()
    return True
for _ in range(200):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    port = u.getsockname()[1]
    u.close()
    if port < 65535 and free(port) and free(port + 1):
        print(port)
        break
else:
    raise SystemExit("no free port pair")
PY
}

# aiocoap's Python: the venv's, else the interpreter on aiocoap-client's #! line.
aio_python() {
    local dir line
    dir="$(dirname "$AIOCOAP_CLIENT")"
    if [ -x "$dir/python" ]; then
        echo "$dir/python"
        return
    fi
    line="$(sed -n '1s/^#! *//p' "$AIOCOAP_CLIENT")"
    set -- $line
    case ${1:-} in
        */env) command -v "${2:-}" || true ;;
        *) echo "${1:-}" ;;
    esac
}
# "" when aiocoap-client can do coaps://, else why not.
aio_dtls_blocker() {
    [ -n "$AIOCOAP_CLIENT" ] || { echo "aiocoap-client not found (run scripts/install-peers.sh)"; return; }
    local py missing
    py="$(aio_python)"
    [ -n "$py" ] || { echo "cannot tell which Python runs $AIOCOAP_CLIENT"; return; }
    if ! missing="$(timeout 30 "$py" -c 'from aiocoap.defaults import dtls_missing_modules as m
print(", ".join(m()))' 2>&1)"; then
        echo "cannot ask aiocoap about its DTLS support: $(echo "$missing" | tail -n 1)"
        return
    fi
    [ -z "$missing" ] ||
        echo "aiocoap has no DTLS client (missing $missing; run scripts/install-peers.sh, which builds DTLSSocket)"
}

# Credentials by name and program: none (coap+tcp://), psk, pki, and cert: tern serve with its
# certificate only, for aiocoap's TLS client, which verifies the server but has no certificate of
# its own to offer (its README: "The TLS parts are server-certificate only").
TERN_SERVE_SEC_psk=(--psk-identity "$DTLS_ID" --psk-key "$DTLS_KEY")
TERN_CLIENT_SEC_none=()
TERN_CLIENT_SEC_psk=(-u "$DTLS_ID" -k "$DTLS_KEY")
LC_CLIENT_SEC_none=()
LC_CLIENT_SEC_psk=(-u "$DTLS_ID" -k "$DTLS_KEY")
LC_SERVER_SEC_psk=(-k "$DTLS_KEY" -h tern-interop-hint)
# PKI: CA-signed certificates both ways; each server requires and verifies the client's (libcoap's
# -C does that), each client verifies the server's against the CA.
TERN_SERVE_SEC_pki=(--cert "$CERTS/server.pem" --key "$CERTS/server.key" --ca "$CERTS/ca.pem" --require-client-cert)
TERN_CLIENT_SEC_pki=(-c "$CERTS/client.pem" -j "$CERTS/client.key" -C "$CERTS/ca.pem")
LC_CLIENT_SEC_pki=(-c "$CERTS/client.pem" -j "$CERTS/client.key" -C "$CERTS/ca.pem")
LC_SERVER_SEC_pki=(-c "$CERTS/server.pem" -j "$CERTS/server.key" -C "$CERTS/ca.pem")
TERN_SERVE_SEC_cert=(--cert "$CERTS/server.pem" --key "$CERTS/server.key")
# what tern's /whoami answers
declare -A WHOAMI=([none]=anonymous [psk]="psk:$DTLS_ID" [pki]="cert:$CLIENT_CN" [cert]=anonymous)

# aiocoap-client's arguments for credentials SEC on a URI, in AIO_CREDS (none: no arguments). aiocoap
# picks them by URI pattern: dtls for coaps://, tlscert (the CA to verify the server with) for
# coaps+tcp://.
aio_credentials() { # aio_credentials ROW SEC URI
    local f="$WORK/aiocoap-credentials-$1.json"
    AIO_CREDS=()
    case $2 in
        psk)
            printf '{"%s/*": {"dtls": {"client-identity": {"ascii": "%s"}, "psk": {"ascii": "%s"}}}}\n' \
                "$3" "$DTLS_ID" "$DTLS_KEY" >"$f"
            ;;
        cert) printf '{"%s/*": {"tlscert": {"certfile": "%s"}}}\n' "$3" "$CERTS/ca.pem" >"$f" ;;
        *) return 0 ;;
    esac
    AIO_CREDS=(--credentials "$f")
}

CERTS_BLOCK=""
if ! timeout 60 bash "$ROOT/scripts/make-test-certs.sh" "$CERTS" >"$WORK/make-test-certs.log" 2>&1; then
    CERTS_BLOCK="scripts/make-test-certs.sh failed: $(tail -n 1 "$WORK/make-test-certs.log")"
fi

# The secure servers: tern-SEC (tern serve) and coap-server-SEC (coap-server-openssl), each with its
# coaps and coaps+tcp listeners in SRV_URI / SRV_BLOCK.
for sec in psk pki cert; do
    servers=(tern)
    [ "$sec" = cert ] || servers+=(lc)
    for s in "${servers[@]}"; do
        [ "$s" = tern ] && name="tern-$sec" || name="coap-server-$sec"
        why=""
        if [ "$sec" != psk ] && [ -n "$CERTS_BLOCK" ]; then
            why="$CERTS_BLOCK"
        elif [ "$s" = tern ]; then
            # a plain listener (for the readiness ping) and a DTLS one, with TLS on the same address
            plain="$(free_port)"
            dport="$(free_port)"
            declare -n tsec="TERN_SERVE_SEC_$sec"
            if start_server "$name" "$plain" "$TERN" serve --bind "127.0.0.1:$plain" \
                --dtls-bind "127.0.0.1:$dport" "${tsec[@]}"; then
                tern_listener "$name" coaps "$dport"
                tern_listener "$name" coaps+tcp "$dport"
            else
                why="tern serve with $sec credentials did not start"
            fi
            unset -n tsec
        elif [ -z "$LC_SECURE_SERVER" ]; then
            why="coap-server-openssl not installed (run scripts/install-peers.sh)"
        else
            # plain on P, DTLS and TLS on P+1
            plain="$(free_port_pair)"
            declare -n lsec="LC_SERVER_SEC_$sec"
            if start_server "$name" "$plain" "$LC_SECURE_SERVER" -A 127.0.0.1 -p "$plain" "${lsec[@]}"; then
                lc_listener "$name" coaps "$((plain + 1))"
                lc_listener "$name" coaps+tcp "$((plain + 1))"
            else
                why="coap-server-openssl ($sec) did not start"
            fi
            unset -n lsec
        fi
        if [ -n "$why" ]; then
            SRV_BLOCK[$name,coaps]="$why"
            SRV_BLOCK[$name,coaps+tcp]="$why"
        fi
    done
done

# Which server and credentials each cell uses (CELL_SRV, CELL_SEC), or why it is not supported
# (CELL_NS); ROW_SCHEME is the row's scheme.
declare -A ROW_SCHEME=([dtls_psk]=coaps [dtls_pki]=coaps [tcp]=coap+tcp [tls_psk]=coaps+tcp [tls_pki]=coaps+tcp)
declare -A CELL_SRV CELL_SEC CELL_NS
for r in tcp dtls_psk dtls_pki tls_psk tls_pki; do
    sec="${r#*_}"
    [ "$r" = tcp ] && sec=none
    for c in "${COLS[@]}"; do
        if [ "$sec" = none ]; then
            CELL_SRV[$r,$c]="$(plain_server "$c")"
        elif [ "$c" = tern_lc ]; then
            CELL_SRV[$r,$c]="coap-server-$sec"
        else
            CELL_SRV[$r,$c]="tern-$sec"
        fi
        CELL_SEC[$r,$c]=$sec
    done
done
CELL_NS[dtls_pki,aio_tern]="aiocoap's coaps:// client (tinydtls via DTLSSocket) takes PSK credentials only; tinydtls has no X.509"
CELL_NS[tls_psk,aio_tern]="aiocoap's coaps+tcp:// client takes no PSK: its TLS is server-certificate only (its \
README: \"preshared, raw public keys and client certificates are not supported yet\")"
# aiocoap over TLS offers no client certificate: it checks tern serve's certificate, on a tern serve
# that asks for none.
CELL_SRV[tls_pki,aio_tern]=tern-cert
CELL_SEC[tls_pki,aio_tern]=cert

cell_uri() { echo "${SRV_URI[${CELL_SRV[$1,$2]},${ROW_SCHEME[$1]}]:-}"; } # cell_uri ROW COL
cell_log() { echo "$WORK/${CELL_SRV[$1,$2]}.log"; }                      # cell_log ROW COL

# libcoap client → tern serve
check_sec_lc_tern() { # check_sec_lc_tern ROW
    local r=$1 c=lc_tern p="$1_lc" sec uri bin
    sec="${CELL_SEC[$r,$c]}"
    uri="$(cell_uri "$r" $c)"
    bin="$LC_SECURE_CLIENT"
    [ "$sec" = none ] && bin="$LC_CLIENT"
    local -n s="LC_CLIENT_SEC_$sec"
    cell_begin
    run "${p}_get" "$bin" -B 5 "${s[@]}" "$uri/whoami"
    [ "$(cat "$WORK/${p}_get.out")" = "${WHOAMI[$sec]}" ] ||
        cell_miss "GET /whoami did not answer ${WHOAMI[$sec]}" $(files_of "${p}_get")
    run "${p}_put" "$bin" -B 5 "${s[@]}" -m put -e "lc-$r-$KEY" "$uri/store/lc-$r"
    run "${p}_put_get" "$bin" -B 5 "${s[@]}" "$uri/store/lc-$r"
    if has_error_code "${p}_put" || [ "$(cat "$WORK/${p}_put_get.out")" != "lc-$r-$KEY" ]; then
        cell_miss "GET did not return what PUT stored" $(files_of "${p}_put") $(files_of "${p}_put_get")
    fi
    run "${p}_nf" "$bin" -B 5 "${s[@]}" "$uri/nope"
    grep -Eq '^ *4\.04' "$WORK/${p}_nf.out" "$WORK/${p}_nf.err" ||
        cell_miss "no 4.04 reported for /nope" $(files_of "${p}_nf")
    cell_end "$r" $c "$(cell_log "$r" $c)"
}

# tern client → libcoap server
check_sec_tern_lc() { # check_sec_tern_lc ROW
    local r=$1 c=tern_lc p="$1_t" sec uri
    sec="${CELL_SEC[$r,$c]}"
    uri="$(cell_uri "$r" $c)"
    local -n s="TERN_CLIENT_SEC_$sec"
    cell_begin
    run "${p}_get" "$TERN" get --timeout 20 "${s[@]}" "$uri/"
    [ "$(rc_of "${p}_get")" = 0 ] && grep -q 'This is a test server made with libcoap' "$WORK/${p}_get.out" ||
        cell_miss "GET / did not return libcoap's banner" $(files_of "${p}_get")
    run "${p}_put" "$TERN" put --timeout 20 "${s[@]}" -e "tern-$r-$KEY" -t text "$uri/example_data"
    run "${p}_put_get" "$TERN" get --timeout 20 "${s[@]}" "$uri/example_data"
    if [ "$(rc_of "${p}_put")" != 0 ] || [ "$(rc_of "${p}_put_get")" != 0 ] ||
        [ "$(cat "$WORK/${p}_put_get.out")" != "tern-$r-$KEY" ]; then
        cell_miss "GET /example_data did not return what PUT stored" $(files_of "${p}_put") $(files_of "${p}_put_get")
    fi
    run "${p}_nf" "$TERN" get --timeout 20 "${s[@]}" "$uri/nope"
    [ "$(rc_of "${p}_nf")" = 1 ] && grep -q '4\.04' "$WORK/${p}_nf.err" ||
        cell_miss "expected exit 1 and a 4.04 reason for /nope" $(files_of "${p}_nf")
    cell_end "$r" $c "$(cell_log "$r" $c)"
}

# aiocoap client → tern serve
check_sec_aio_tern() { # check_sec_aio_tern ROW
    local r=$1 c=aio_tern p="$1_a" sec uri
    sec="${CELL_SEC[$r,$c]}"
    uri="$(cell_uri "$r" $c)"
    aio_credentials "$r" "$sec" "$uri"
    cell_begin
    aio "${p}_get" "${AIO_CREDS[@]}" "$uri/whoami"
    [ "$(rc_of "${p}_get")" = 0 ] && [ "$(cat "$WORK/${p}_get.out")" = "${WHOAMI[$sec]}" ] ||
        cell_miss "GET /whoami did not answer ${WHOAMI[$sec]}" $(files_of "${p}_get")
    aio "${p}_put" "${AIO_CREDS[@]}" -m PUT --payload "aio-$r-$KEY" "$uri/store/aio-$r"
    aio "${p}_put_get" "${AIO_CREDS[@]}" "$uri/store/aio-$r"
    if [ "$(rc_of "${p}_put")" != 0 ] || [ "$(rc_of "${p}_put_get")" != 0 ] ||
        [ "$(cat "$WORK/${p}_put_get.out")" != "aio-$r-$KEY" ]; then
        cell_miss "GET did not return what PUT stored" $(files_of "${p}_put") $(files_of "${p}_put_get")
    fi
    aio "${p}_nf" "${AIO_CREDS[@]}" "$uri/nope"
    [ "$(rc_of "${p}_nf")" != 0 ] && [ "$(rc_of "${p}_nf")" != 124 ] &&
        grep -q '4\.04' "$WORK/${p}_nf.out" "$WORK/${p}_nf.err" ||
        cell_miss "expected a non-zero exit and 4.04 for /nope" $(files_of "${p}_nf")
    cell_end "$r" $c "$(cell_log "$r" $c)"
}

# Why one of these cells cannot run, or "" when it can.
sec_blocker() { # sec_blocker ROW COL
    local r=$1 c=$2 b=""
    case $c in
        lc_tern)
            if [ "${CELL_SEC[$r,$c]}" = none ]; then
                [ -n "$LC_CLIENT" ] || b="coap-client-notls not installed (run scripts/install-peers.sh)"
            else
                [ -n "$LC_SECURE_CLIENT" ] || b="coap-client-openssl not installed (run scripts/install-peers.sh)"
            fi
            ;;
        aio_tern)
            if [ "${ROW_SCHEME[$r]}" = coaps ]; then
                b="$(aio_dtls_blocker)"
            else
                [ -n "$AIOCOAP_CLIENT" ] || b="aiocoap-client not found (run scripts/install-peers.sh)"
            fi
            ;;
    esac
    [ -n "$b" ] || [ -n "$(cell_uri "$r" "$c")" ] ||
        b="${SRV_BLOCK[${CELL_SRV[$r,$c]},${ROW_SCHEME[$r]}]:-no ${ROW_SCHEME[$r]}:// listener}"
    echo "$b"
}

for r in dtls_psk dtls_pki tcp tls_psk tls_pki; do
    for c in "${COLS[@]}"; do
        if [ -n "${CELL_NS[$r,$c]:-}" ]; then
            na "$r" "$c" "${CELL_NS[$r,$c]}"
            continue
        fi
        blocker="$(sec_blocker "$r" "$c")"
        if [ -n "$blocker" ]; then
            fail "$r" "$c" "$blocker" "$(cell_log "$r" "$c")"
            continue
        fi
        log "running ${ROW_TITLE[$r]%% | GET*}, ${COL_TITLE[$c]}"
        "check_sec_$c" "$r"
    done
done

# --- OSCORE (RFC 8613) ----------------------------------------------------------------------------
# aiocoap-client with credentials naming the client's half of the context: GET /whoami (tern
# serve names the kid the request was protected with), a PUT then GET round trip, a 4.04; all
# protected. The aiocoap plugtest both ways is in crates/tern-cli/tests/interop_oscore_plugtest.rs.
na oscore lc_tern "libcoap 4.3.1 as packaged has no OSCORE"
na oscore tern_lc "libcoap 4.3.1 as packaged has no OSCORE"
check_oscore_aio_tern() {
    local c=aio_tern creds="$WORK/oscore-credentials.json"
    printf '{"%s/*": {"oscore": {"contextfile": "%s/"}}}\n' "$TERN_URI" "$WORK/oscore-client" >"$creds"
    aio o_who --credentials "$creds" "$TERN_URI/whoami"
    aio o_put -m PUT --payload "oscore-$KEY" --credentials "$creds" "$TERN_URI/store/oscore-$KEY"
    aio o_put_get --credentials "$creds" "$TERN_URI/store/oscore-$KEY"
    aio o_nf --credentials "$creds" "$TERN_URI/nope"
    if [ "$(rc_of o_who)" != 0 ] || [ "$(tr -d '[:space:]' <"$WORK/o_who.out")" != "oscore:0b" ]; then
        fail oscore $c "/whoami did not name the OSCORE kid 0b" $(files_of o_who)
    elif [ "$(rc_of o_put)" != 0 ] || [ "$(cat "$WORK/o_put_get.out")" != "oscore-$KEY" ]; then
        fail oscore $c "GET did not return what PUT stored" $(files_of o_put) $(files_of o_put_get)
    elif [ "$(rc_of o_nf)" = 0 ] || ! grep -q '4\.04' "$WORK/o_nf.out" "$WORK/o_nf.err"; then
        fail oscore $c "expected a non-zero exit and 4.04" $(files_of o_nf)
    else
        pass oscore $c
    fi
}
blocker="$(column_blocker aio_tern)"
if [ -n "$blocker" ]; then
    fail oscore aio_tern "$blocker" "$(server_log aio_tern)"
else
    log "running OSCORE, aiocoap client → tern serve"
    check_oscore_aio_tern
fi

# --- INTEROP.md ----------------------------------------------------------------------------------
lc_version="$( ("${LC_CLIENT:-false}" 2>&1 || true) | sed -n '1s/.* v\([0-9.]*\).*/\1/p')"
aio_version="$("$(dirname "${AIOCOAP_CLIENT:-/nonexistent/x}")/python" -c \
    'import importlib.metadata as m; print(m.version("aiocoap"))' 2>/dev/null || echo '?')"
tern_version="$("$TERN" --version 2>/dev/null | awk '{print $2}')"
{
    echo "# Interoperability matrix"
    echo
    echo "Written by \`scripts/interop-matrix.sh\` (run by \`scripts/test-all.sh\`); do not edit by hand."
    echo "Peers: libcoap ${lc_version:-?} (\`coap-client-notls\`, \`coap-server-notls\` for coap:// and coap+tcp://;"
    echo "\`coap-client-openssl\`, \`coap-server-openssl\` for coaps:// and coaps+tcp://), aiocoap ${aio_version:-?}"
    echo "(\`aiocoap-client\`, with DTLSSocket for coaps://); Tern ${tern_version:-?} (\`tern\` CLI). Every server on 127.0.0.1."
    echo "coaps://, coap+tcp:// and coaps+tcp:// cells: a GET with its payload checked (tern serve's \`/whoami\`,"
    echo "which names the identity the session was authenticated with; libcoap's banner at \`/\`), a PUT then GET"
    echo "round trip and a 4.04, each over one kind of session with that row's credentials. coap+tcp:// goes to"
    echo "the plain servers, which listen on TCP on their UDP port; TLS is on tern serve's DTLS address and on"
    echo "libcoap's port + 1 (like its DTLS). PKI uses certificates from \`scripts/make-test-certs.sh\`, checked"
    echo "both ways (every server requires the client's certificate), except aiocoap over TLS: its TLS client"
    echo "is server-certificate only, so that cell verifies tern serve's certificate against the test CA"
    echo "(aiocoap \`tlscert\` credentials) on a tern serve that asks for no client certificate (\`/whoami\`:"
    echo "\`anonymous\`)."
    echo "Block-wise cells: a body far larger than one block PUT then GET back and compared byte for byte:"
    echo "libcoap \`-b 64\` with 200 KB on \`/files/\`, tern \`-b 1024\` PUT and \`-b 256\` GET with 100 KB on libcoap's"
    echo "\`/example_data\`, aiocoap with 20 KB (UDP) or 150 KB (TCP) on \`/files/\` (its own block sizes); on"
    echo "tern serve the stored file is compared too. Over coap+tcp:// a body that fits the receiver's"
    echo "Max-Message-Size (tern serve: 1 MiB + 1 KiB; libcoap: 8 MiB + 256) may go whole in one message:"
    echo "libcoap's and tern's \`-b\` still ask for blocks of that size, while aiocoap, which sends its first"
    echo "request before the server's CSM has come, starts a large request body with a BERT block (SZX 7,"
    echo "RFC 8323 §6)."
    echo "Observe cells: \`/time\` observed for about 5 s (libcoap \`-s 5\`, tern \`get -s 5\`, aiocoap's observation API,"
    echo "since aiocoap-client 0.4.17 prints only the first response: chrysn/aiocoap#395): the first response and"
    echo "at least 3 notifications (aiocoap: 4, in Observe order), with at least 4 different times."
    echo "OSCORE cell: aiocoap-client with a credentials file naming an OSCORE context folder, against tern serve"
    echo "\`--oscore\` holding the other half: \`/whoami\` names the kid, a PUT then GET round trip, a 4.04, all"
    echo "protected. aiocoap's OSCORE plugtest runs both ways in the test suite (\`interop_oscore_plugtest\`)."
    echo "\`pass\`: the exchange worked and its result was checked; \`FAIL\`: see the footnote;"
    echo "\`n/s\`: not supported, with the reason."
    echo
    printf '| transport | security | feature |'
    for c in "${COLS[@]}"; do printf ' %s |' "${COL_TITLE[$c]}"; done
    printf '\n|---|---|---|'
    for c in "${COLS[@]}"; do printf -- '---|'; done
    printf '\n'
    for r in "${ROWS[@]}"; do
        printf '| %s |' "${ROW_TITLE[$r]}"
        for c in "${COLS[@]}"; do printf ' %s |' "${CELL[$r,$c]:-?}"; done
        printf '\n'
    done
    echo
    echo "Summary: $PASS pass, $FAILS FAIL, $NS n/s."
    if [ "${#FOOTNOTES[@]}" -gt 0 ]; then
        echo
        for note in "${FOOTNOTES[@]}"; do
            printf '%s\n\n' "$note"
        done
    fi
} >"$OUT"

log "$PASS pass, $FAILS FAIL, $NS n/s; wrote ${OUT#"$ROOT/"}"
[ "$FAILS" -eq 0 ]
