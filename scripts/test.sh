#!/usr/bin/env bash
# The whole test suite: formatting, lints, every unit and integration test. Run as root
# (the integration tests mount FUSE); exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

# Mounts left by an interrupted earlier run would confuse the tests; so would a placeholder.
stale_mounts() { awk '$0 ~ / - fuse[^ ]* sevd/ { print $5 }' /proc/self/mountinfo; }
for m in $(stale_mounts); do umount -l "$m" || true; done

# virtee's sevctl, unmodified, for tests/tests/sevctl.rs (built once into target/).
sevctl_root=target/sevctl-0.6.2
if [[ ! -x $sevctl_root/bin/sevctl ]]; then
  echo "test: installing sevctl 0.6.2 from crates.io (once)"
  cargo install --quiet --locked --version 0.6.2 sevctl --root "$sevctl_root"
fi
export SEVCTL_BIN=$PWD/$sevctl_root/bin/sevctl

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --all-targets --quiet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "suite: %d passed, %d failed\n", p, f }' "$log"
[[ $status -eq 0 ]] || exit "$status"

left=$(stale_mounts)
if [[ -n "$left" ]]; then
  echo "test: FUSE mounts left behind: $left" >&2
  for m in $left; do umount -l "$m" || true; done
  exit 1
fi
if [[ -f /dev/sev && ! -c /dev/sev ]]; then
  echo "test: a placeholder /dev/sev was left behind" >&2
  rm -f /dev/sev
  exit 1
fi
