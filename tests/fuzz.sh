#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/*.rs) for a short bounded time
# from the committed seeds (fuzz/seeds/TARGET). A crash fails the run and
# leaves its input under fuzz/artifacts/TARGET/.
#   FUZZ_SECS   seconds per target (default 20)
#   FUZZ_ONLY   run only this target
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable
# toolchain accept them for this build only.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${FUZZ_SECS:-20}"
if ! command -v cargo-fuzz >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-fuzz" ]; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build
for t in $(cargo fuzz list); do
    if [ -n "${FUZZ_ONLY:-}" ] && [ "$t" != "$FUZZ_ONLY" ]; then
        continue
    fi
    mkdir -p "corpus/$t"
    echo "fuzz: $t for ${secs}s"
    # -timeout: one input may take at most 10 s; -rss_limit_mb bounds memory.
    log="$(mktemp)"
    st=0
    cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || st=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
    if [ "$st" -ne 0 ]; then
        tail -n 60 "$log" >&2
        rm -f "$log"
        echo "fuzz: $t FAILED (input in fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    rm -f "$log"
done
