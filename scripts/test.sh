#!/usr/bin/env bash
# Install everything the tests need on a Debian 12 machine, then run every check and
# every test. Run as root (tests use network namespaces and the real fwknop).
#   sudo ./scripts/test.sh            # everything
#   FUZZ_SECONDS=0 ./scripts/test.sh  # skip the fuzz smoke run
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: run as root (apt installs, network namespaces)" >&2
    exit 1
fi

say "Debian packages"
pkgs=(fwknop-client fwknop-server nftables iptables iproute2 python3 build-essential pkg-config ca-certificates curl)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# fwknop-server's package starts a daemon on some systems; the tests start their own.
command -v fwknop >/dev/null
command -v fwknopd >/dev/null

say "Rust toolchain"
if ! command -v cargo >/dev/null; then
    [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
fi
cargo --version

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo test"
cargo test --workspace --locked

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
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
