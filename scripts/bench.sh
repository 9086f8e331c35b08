#!/usr/bin/env bash
# Benchmark posternd against fwknopd 2.6.10 in network namespaces and write
# bench/RESULTS.md (see bench/README.md). Run as root on an otherwise idle machine.
#   ./scripts/bench.sh                 # 3 runs of everything (about 30 minutes)
#   ./scripts/bench.sh --runs 1        # a quick look
#   ./scripts/bench.sh --runs 1 --servers fwknopd-pcap-fast,posternd-afpacket \
#        --out /tmp/fast.md                 # posternd against fwknopd at its fastest
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
cargo build --release --locked -p posternd -p postern-bench
exec ./target/release/postern-bench --posternd target/release/posternd "$@"
