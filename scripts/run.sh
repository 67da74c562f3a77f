#!/usr/bin/env bash
# The main job: launch the SEV-ES example guest (examples/sev-es.yaml) with sevctl on its
# embedded firmware (no daemon; no root once the packages are installed), verify the launch
# measurement as its owner, inject its secrets, and show them as the guest and as the
# hypervisor see them. Extra arguments go to `sevctl launch` (e.g. --json).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh run
cargo build --release --quiet -p sevctl-cli
exec target/release/sevctl launch examples/sev-es.yaml "$@"
