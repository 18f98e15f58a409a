#!/usr/bin/env bash
# Fuzzes the parsers Tenfold owns for a bounded time each (default 60 s):
# stored fragments and frame indexes (what nodes and the index hand back),
# zip entry names, listing tokens and share-link tokens (what clients send). Not part of
# .ci/run. Crashes land in fuzz/artifacts/TARGET/; each one found is kept
# as a regression test beside the code it broke.
#   bash fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fragments frame_plan names share_tokens)
tools="${TENFOLD_TOOLS:-$HOME/.cache/tenfold/tools}"
[ -x "$tools/bin/cargo-fuzz" ] || cargo install --quiet --locked cargo-fuzz --root "$tools"
export PATH="$tools/bin:$PATH"
# libFuzzer's instrumentation needs nightly flags; this stable toolchain
# accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tenfold/fuzz-target}"
for t in "${targets[@]}"; do
    echo "== $t ($seconds s)"
    cargo fuzz run "$t" -- -max_total_time="$seconds" -rss_limit_mb=4096
done
