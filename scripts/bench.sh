#!/usr/bin/env bash
# Runs the benchmarks (round trip, launch, CLI, each crypto primitive against OpenSSL, SNP reports)
# against a freshly built release sevd (cargo bench does not build another package's
# binaries). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet -p sevd -p sevctl-cli -p tests --bins
cargo bench -p tests --bench roundtrip
cargo bench -p tests --bench launch
cargo bench -p tests --bench cli
cargo bench -p tests --bench crypto
cargo bench -p tests --bench snp_report
cargo bench -p tests --bench migrate
cargo bench -p tests --bench exec
cargo bench -p tests --bench large
