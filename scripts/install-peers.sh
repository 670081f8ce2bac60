#!/usr/bin/env bash
# Install the interop peers Tern's tests run against (see shared/PEERS.md):
#   - libcoap 4.3.1 command-line tools (Debian package libcoap3-bin)
#   - pkg-config and libssl-dev (for the openssl crate)
#   - the PostgreSQL server (Debian package postgresql): the store tests start their own
#     throw-away server with its initdb and postgres binaries; nothing is configured system-wide
#   - aiocoap 0.4.17 in a Python venv at ${TERN_PEERS_DIR:-$HOME/.cache/tern-peers}/venv
#   - aiocoap's DTLS (coaps://, PSK) client support: DTLSSocket (tinydtls bindings), built from
#     source by pip; its build needs autoconf, automake, libtool, a C compiler and Python's headers
#     (installed with apt only when the build is needed and they are missing)
#   - aiocoap's OSCORE plugtest (plugtest-server, plugtest-client) from the aiocoap sdist, at
#     $PEERS_DIR/oscore-plugtest, with its security contexts (RFC 8613 Appendix C.1 and C.3)
#     written as aiocoap context folders in common-context/{a,b,c,d}
#
# Idempotent: installs only what is missing; runs `apt-get update` at most once.
# Works without stdin (CI) and under `set -euo pipefail`.
set -euo pipefail

PEERS_DIR="${TERN_PEERS_DIR:-${HOME:-/root}/.cache/tern-peers}"
VENV="$PEERS_DIR/venv"
AIOCOAP_SPEC='aiocoap[oscore]==0.4.17'
AIOCOAP_VERSION='0.4.17'
DTLSSOCKET_SPEC='DTLSSocket==0.2.3'

log() { printf 'install-peers: %s\n' "$*" >&2; }

export DEBIAN_FRONTEND=noninteractive

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        SUDO=(__not_root__)
    fi
fi

APT_UPDATED=0
apt_install() {
    # apt_install PKG...: install the given Debian packages (apt-get update once).
    if [ "${SUDO[*]:-}" = "__not_root__" ]; then
        log "need root (or passwordless sudo) to install: $*"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found; install these yourself: $*"
        return 1
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -q </dev/null
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "$@" </dev/null
}

pkg_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

# --- Debian packages -------------------------------------------------------
missing=()
if ! command -v coap-client-notls >/dev/null 2>&1 || ! command -v coap-server-notls >/dev/null 2>&1; then
    missing+=(libcoap3-bin)
fi
if ! command -v pkg-config >/dev/null 2>&1; then
    missing+=(pkg-config)
fi
# curl: the HTTP client of the gateway's HTTP → CoAP tests.
if ! command -v curl >/dev/null 2>&1; then
    missing+=(curl)
fi
if ! pkg_installed libssl-dev && ! pkg-config --exists openssl 2>/dev/null; then
    missing+=(libssl-dev)
fi
if ! command -v python3 >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
# PostgreSQL server binaries: the store's tests run initdb and postgres themselves.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
else
    log "Debian packages already present (libcoap3-bin, pkg-config, libssl-dev, curl, postgresql)"
fi

# --- aiocoap venv -------------------------------------------------------------
venv_ok() {
    [ -x "$VENV/bin/aiocoap-client" ] || return 1
    local v
    v="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("aiocoap"))' 2>/dev/null)" || return 1
    [ "$v" = "$AIOCOAP_VERSION" ] || return 1
    # the [oscore] extra brings cryptography and cbor2
    "$VENV/bin/python" -c 'import cryptography, cbor2' >/dev/null 2>&1
}

if venv_ok; then
    log "aiocoap $AIOCOAP_VERSION already in $VENV"
else
    mkdir -p "$PEERS_DIR"
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating venv $VENV"
        rm -rf "$VENV"
        python3 -m venv "$VENV"
    fi
    log "pip install $AIOCOAP_SPEC"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install -q "$AIOCOAP_SPEC" </dev/null
    if ! venv_ok; then
        log "aiocoap install in $VENV did not succeed"
        exit 1
    fi
fi

# --- aiocoap DTLS support (DTLSSocket) -----------------------------------------------
# Not fatal: without it only the aiocoap coaps:// tests fail (or skip), everything else runs.
dtls_ok() {
    # aiocoap's own check: no module missing for its tinydtls transport
    "$VENV/bin/python" -c 'import sys
from aiocoap.defaults import dtls_missing_modules
sys.exit(1 if dtls_missing_modules() else 0)' >/dev/null 2>&1
}

dtls_build_deps_missing() {
    # prints the Debian packages DTLSSocket's source build needs that are not there
    command -v autoreconf >/dev/null 2>&1 || echo autoconf
    { command -v automake >/dev/null 2>&1 && command -v aclocal >/dev/null 2>&1; } || echo automake
    command -v libtoolize >/dev/null 2>&1 || echo libtool
    command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || echo gcc
    "$VENV/bin/python" -c 'import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
        >/dev/null 2>&1 || echo python3-dev
}

AIOCOAP_DTLS="yes"
if dtls_ok; then
    log "aiocoap DTLS support (DTLSSocket) already in $VENV"
else
    dtls_deps=()
    while IFS= read -r pkg; do dtls_deps+=("$pkg"); done < <(dtls_build_deps_missing)
    deps_ok=1
    if [ "${#dtls_deps[@]}" -gt 0 ]; then
        apt_install "${dtls_deps[@]}" || deps_ok=0
    fi
    if [ "$deps_ok" -eq 1 ]; then
        log "pip install $DTLSSOCKET_SPEC (builds tinydtls from source)"
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install -q "$AIOCOAP_SPEC" "$DTLSSOCKET_SPEC" </dev/null \
            || log "pip install $DTLSSOCKET_SPEC failed (output above)"
    fi
    if dtls_ok; then
        log "aiocoap DTLS support installed"
    else
        AIOCOAP_DTLS="no (DTLSSocket missing: the aiocoap coaps:// tests will fail or skip)"
        log "WARNING: aiocoap in $VENV has no DTLS support; $AIOCOAP_DTLS"
    fi
fi

# --- aiocoap OSCORE plugtest ------------------------------------------------------
# The suite is in the sdist only (contrib/oscore-plugtest), without its context folders;
# those are the RFC 8613 test vectors' contexts: a/b are C.1's client and server, c/d C.3's
# (the same with ID Context 37cbf3210017a2d3).
PLUGTEST="$PEERS_DIR/oscore-plugtest"
plugtest_ok() {
    [ -f "$PLUGTEST/plugtest-server" ] && [ -f "$PLUGTEST/plugtest-client" ] \
        && [ -f "$PLUGTEST/plugtest_common.py" ] && [ -f "$PLUGTEST/common-context/d/settings.json" ]
}
if plugtest_ok; then
    log "aiocoap OSCORE plugtest already in $PLUGTEST"
else
    work="$(mktemp -d)"
    log "pip download aiocoap==$AIOCOAP_VERSION (sdist, for contrib/oscore-plugtest)"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" download -q --no-deps --no-binary :all: \
        -d "$work" "aiocoap==$AIOCOAP_VERSION" </dev/null
    tar -xzf "$work/aiocoap-$AIOCOAP_VERSION.tar.gz" -C "$work"
    rm -rf "$PLUGTEST"
    cp -r "$work/aiocoap-$AIOCOAP_VERSION/contrib/oscore-plugtest" "$PLUGTEST"
    rm -rf "$work"
    secret='{"secret_hex": "0102030405060708090a0b0c0d0e0f10", "salt_hex": "9e7ca92223786340"}'
    write_context() { # write_context NAME SENDER RECIPIENT [ID_CONTEXT]
        local dir="$PLUGTEST/common-context/$1" extra=""
        [ -n "${4:-}" ] && extra=", \"id-context_hex\": \"$4\""
        mkdir -p "$dir"
        printf '%s\n' "$secret" > "$dir/secret.json"
        printf '{"algorithm": "AES-CCM-16-64-128", "sender-id_hex": "%s", "recipient-id_hex": "%s"%s}\n' \
            "$2" "$3" "$extra" > "$dir/settings.json"
    }
    write_context a "" 01
    write_context b 01 ""
    write_context c "" 01 37cbf3210017a2d3
    write_context d 01 "" 37cbf3210017a2d3
    plugtest_ok || { log "the OSCORE plugtest did not install in $PLUGTEST"; exit 1; }
    log "aiocoap OSCORE plugtest installed in $PLUGTEST"
fi

# --- report --------------------------------------------------------------------
cat <<INFO
tern peers:
  coap-client-notls: $(command -v coap-client-notls)
  coap-server-notls: $(command -v coap-server-notls)
  pkg-config:        $(command -v pkg-config) (openssl $(pkg-config --modversion openssl 2>/dev/null || echo '?'))
  aiocoap venv:      $VENV
  aiocoap-client:    $VENV/bin/aiocoap-client
  aiocoap DTLS:      $AIOCOAP_DTLS
  OSCORE plugtest:   $PLUGTEST
  export TERN_AIOCOAP_CLIENT=$VENV/bin/aiocoap-client
INFO
