#!/usr/bin/env bash
# The test command: installs the interop peers, then runs every test of the workspace.
#   bash scripts/test-all.sh
# Interop tests fail (instead of skipping) when a peer is missing: TERN_REQUIRE_PEERS=1.
# Honours CARGO_TARGET_DIR; extra arguments are passed to `cargo test --all-targets`.
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

echo "test-all: cargo test --workspace --all-targets" >&2
cargo test --workspace --all-targets "$@"

echo "test-all: cargo test --workspace --doc" >&2
cargo test --workspace --doc

echo "test-all: all tests passed" >&2
