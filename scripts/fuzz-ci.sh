#!/usr/bin/env bash
# Fuzzing in CI: runs every cargo-fuzz target under fuzz/fuzz_targets for a bounded time.
#   bash scripts/fuzz-ci.sh
#   TERN_FUZZ_SECONDS=300 bash scripts/fuzz-ci.sh      # longer runs (default 30 s per target)
#   TERN_FUZZ_TARGETS="uri datagram" bash scripts/fuzz-ci.sh
#   TERN_FUZZ_ARGS="-max_len=512" bash scripts/fuzz-ci.sh  # extra libFuzzer flags
#
# - Installs cargo-fuzz (`cargo install --locked cargo-fuzz`) when it is missing; fuzzing needs
#   the nightly toolchain (`cargo +nightly fuzz`), everything else in the project builds on stable.
# - Each target starts from fuzz/corpus/<target>/ and fuzz/regressions/<target>/ (read only);
#   new inputs and crash artifacts go to a scratch directory (TERN_FUZZ_WORK, default a fresh
#   temporary directory), never into the repository.
# - A crash (or time-out, leak, out-of-memory) fails the script and prints the input's path and
#   hex. To keep it as a regression test, copy it to fuzz/regressions/<target>/ once fixed:
#   crates/tern-proto/tests/fuzz_regressions.rs replays every file there on stable `cargo test`.
# Honours CARGO_TARGET_DIR. Every step is bounded by `timeout`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SECONDS_PER_TARGET="${TERN_FUZZ_SECONDS:-30}"
TOOLCHAIN="${TERN_FUZZ_TOOLCHAIN:-nightly}"
case "$SECONDS_PER_TARGET" in
    '' | *[!0-9]*) echo "fuzz-ci: TERN_FUZZ_SECONDS must be a whole number of seconds" >&2; exit 2 ;;
esac

log() { printf 'fuzz-ci: %s\n' "$*" >&2; }

started=$(date +%s)

# --- cargo-fuzz -----------------------------------------------------------------------------
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "cargo-fuzz not found: cargo install --locked cargo-fuzz"
    timeout 900 cargo install --locked cargo-fuzz
fi
if ! cargo "+$TOOLCHAIN" --version >/dev/null 2>&1; then
    log "the $TOOLCHAIN toolchain is missing (rustup toolchain install $TOOLCHAIN)"
    exit 1
fi
log "$(cargo fuzz --version), $(cargo "+$TOOLCHAIN" --version)"

# --- scratch space --------------------------------------------------------------------------
if [ -n "${TERN_FUZZ_WORK:-}" ]; then
    WORK="$TERN_FUZZ_WORK"
    mkdir -p "$WORK"
else
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/tern-fuzz.XXXXXX")"
    trap 'rm -rf "$WORK"' EXIT
fi

# --- targets --------------------------------------------------------------------------------
if [ -n "${TERN_FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$TERN_FUZZ_TARGETS"
else
    targets=()
    for f in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$f" .rs)")
    done
fi
if [ "${#targets[@]}" -eq 0 ]; then
    log "no fuzz targets under fuzz/fuzz_targets"
    exit 1
fi

# One cargo invocation builds every target (the per-target runs below then find them built).
log "building ${targets[*]} (cargo +$TOOLCHAIN fuzz build)"
(cd fuzz && timeout 900 cargo "+$TOOLCHAIN" fuzz build)

hexdump_file() { od -An -v -tx1 "$1" | tr -d ' \n'; }

failed=()
for target in "${targets[@]}"; do
    corpus="$WORK/corpus/$target"
    artifacts="$WORK/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    seeds=("$ROOT/fuzz/corpus/$target")
    [ -d "$ROOT/fuzz/regressions/$target" ] && seeds+=("$ROOT/fuzz/regressions/$target")
    log "running $target for ${SECONDS_PER_TARGET}s (seeds: ${seeds[*]#"$ROOT/"})"
    rc=0
    # New inputs go to the first corpus directory (the scratch one); the seeds are only read.
    (cd fuzz && timeout --kill-after=10 $((SECONDS_PER_TARGET + 120)) \
        cargo "+$TOOLCHAIN" fuzz run "$target" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 ${TERN_FUZZ_ARGS:-}) \
        >"$WORK/$target.log" 2>&1 || rc=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ *DONE)' "$WORK/$target.log" |
        sed "s/^/fuzz-ci: $target: /" >&2 || true
    crashes=()
    for f in "$artifacts"/*; do
        [ -f "$f" ] && crashes+=("$f")
    done
    if [ "$rc" -ne 0 ] || [ "${#crashes[@]}" -gt 0 ]; then
        failed+=("$target")
        log "$target FAILED (exit $rc); last lines of its log:"
        tail -n 40 "$WORK/$target.log" >&2
        for f in "${crashes[@]}"; do
            # Keep the input: copy it out of the scratch directory that the trap removes.
            keep="${TMPDIR:-/tmp}/tern-fuzz-crash-$target-$(basename "$f")"
            cp "$f" "$keep"
            log "$target crashing input: $keep ($(wc -c <"$f") bytes)"
            log "$target crashing input hex: $(hexdump_file "$f")"
            log "  reproduce: cd fuzz && cargo +$TOOLCHAIN fuzz run $target $keep"
            log "  once fixed, keep it: cp $keep fuzz/regressions/$target/"
        done
    else
        log "$target ok: $(find "$corpus" -type f | wc -l) new inputs in scratch corpus"
    fi
done

log "done in $(($(date +%s) - started))s: ${#targets[@]} targets, ${#failed[@]} failed"
if [ "${#failed[@]}" -gt 0 ]; then
    log "FAILED: ${failed[*]}"
    exit 1
fi
