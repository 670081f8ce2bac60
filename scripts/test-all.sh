#!/usr/bin/env bash
# The test command: installs the interop peers, then runs every test of the workspace.
#   bash scripts/test-all.sh
# Interop tests fail (instead of skipping) when a peer is missing: TERN_REQUIRE_PEERS=1.
# Honours CARGO_TARGET_DIR; extra arguments are passed to `cargo test --all-targets`.
# Every test target runs (--no-fail-fast); the last line is "test-all: N passed, N failed, N skipped".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PEERS_DIR="${TERN_PEERS_DIR:-${HOME:-/root}/.cache/tern-peers}"
export TERN_PEERS_DIR="$PEERS_DIR"

bash "$ROOT/scripts/install-peers.sh"

export TERN_REQUIRE_PEERS=1
export TERN_AIOCOAP_CLIENT="$PEERS_DIR/venv/bin/aiocoap-client"
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    export CARGO_TARGET_DIR
    echo "test-all: CARGO_TARGET_DIR=$CARGO_TARGET_DIR" >&2
fi

RESULTS="$(mktemp "${TMPDIR:-/tmp}/tern-test-all.XXXXXX")"
trap 'rm -f "$RESULTS"' EXIT

# Runs cargo, copying its stdout to $RESULTS for the summary; returns cargo's status.
run_cargo() {
    echo "test-all: cargo $*" >&2
    local rc=0
    cargo "$@" | tee -a "$RESULTS" || rc=$?
    return "$rc"
}

summary() {
    # Sum cargo's "test result: ok. N passed; N failed; N ignored; ..." lines.
    awk '/^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i) ~ /^passed;?$/)  p += $(i-1)
                if ($(i) ~ /^failed;?$/)  f += $(i-1)
                if ($(i) ~ /^ignored;?$/) s += $(i-1)
            }
         }
         END { printf "test-all: %d passed, %d failed, %d skipped\n", p, f, s }' "$RESULTS"
}

status=0
run_cargo test --workspace --all-targets --no-fail-fast "$@" || status=$?
doc_status=0
run_cargo test --workspace --doc --no-fail-fast || doc_status=$?
[ "$status" -ne 0 ] || status=$doc_status
# Interop matrix (writes INTEROP.md); its output goes to stderr so the summary stays the last line.
bash "$ROOT/scripts/interop-matrix.sh" >&2 || { m=$?; [ "$status" -ne 0 ] || status=$m; }
summary
if [ "$status" -ne 0 ]; then
    echo "test-all: FAILED (cargo exited $status)" >&2
    exit "$status"
fi
