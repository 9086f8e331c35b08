#!/usr/bin/env bash
# Install everything the tests need on a Debian 12 machine, then run every check and
# every test. Run as root (tests use network namespaces and the real fwknop).
#   ./scripts/test.sh            # everything
#   FUZZ_SECONDS=0 ./scripts/test.sh  # skip the fuzz smoke run
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

say "dependencies"
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
cargo --version

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo deny check licenses bans sources"
command -v cargo-deny >/dev/null || cargo install cargo-deny --locked
cargo deny --all-features check licenses bans sources

say "cargo test"
cargo test --workspace --locked

say "Debian package: build, dpkg -i, selftest, purge (scripts/package-test.sh)"
package_start=$(date +%s)
scripts/package-test.sh
echo "package step: $(($(date +%s) - package_start)) s"

FUZZ_SECONDS=${FUZZ_SECONDS:-20}
if [ "$FUZZ_SECONDS" -gt 0 ]; then
    say "fuzz smoke run (${FUZZ_SECONDS}s per target)"
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (
        cd fuzz
        for target in $(cargo fuzz list); do
            mkdir -p "$work/$target"
            if ! cargo fuzz run -s none "$target" "$work/$target" "corpus/$target" -- \
                -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 >"$work/$target.log" 2>&1; then
                tail -n 60 "$work/$target.log" >&2
                echo "fuzz target $target failed: see fuzz/artifacts/$target" >&2
                exit 1
            fi
            echo "$target: $(grep -E 'stat::number_of_executed_units' "$work/$target.log" || tail -n 1 "$work/$target.log")"
        done
    )
fi

say "all checks passed"
