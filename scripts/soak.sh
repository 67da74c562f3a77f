#!/usr/bin/env bash
# The soak: a real sevd (software backend, policy and audit log on) under eight clients and
# faults for MINUTES (default 30), then a table of what held (tests/src/bin/soak). Run as
# root. Exits non-zero when any check failed.
#
#   scripts/soak.sh [MINUTES]
#
# The clients: three issue platform commands (PLATFORM_STATUS, PDH_CERT_EXPORT, GET_ID2,
# PEK_CSR); two keep VMs on sev-vm under debug reads; two run `sevctl launch` of
# examples/sev.yaml (a measured launch with a secret) over and over; one, the owner, issues
# PDH_GEN, PEK_GEN and FACTORY_RESET. Meanwhile clients are SIGKILLed at random (about one a
# second), the policy is reloaded (SIGHUP), and every 10 s the daemon is SIGKILLed (every
# third time SIGTERMed) under load and started again. Every 10 s, between restarts, all
# clients are killed at once and the platform must hold no guest and have every ASID free.
#
# Release binaries; SOAK_PROFILE=debug uses the debug ones (the test suite's 30-second run).
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${1:-30}
profile=${SOAK_PROFILE:-release}
if [[ $profile == release ]]; then
  cargo build --quiet --release -p sevd -p sevctl-cli -p tests --bin sevd --bin sevctl --bin soak
else
  cargo build --quiet -p sevd -p sevctl-cli -p tests --bin sevd --bin sevctl --bin soak
fi
work=${SOAK_DIR:-$PWD/target/soak}
seconds=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }')
exec "target/$profile/soak" "$seconds" "$work"
