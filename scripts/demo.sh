#!/usr/bin/env bash
# The main job, for now: start sevd on the software firmware, talk to its /dev/sev with an
# unmodified C client built against <linux/psp-sev.h>, then stop it cleanly. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release -p sevd --quiet

work=$(mktemp -d)
cleanup() {
  [[ -n "${pid:-}" ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid" || true
  rm -rf "$work"
}
trap cleanup EXIT

cc -O2 -Wall -o "$work/sevclient" tests/c/sevclient.c
echo "== starting sevd (state in $work/state; the first start makes the chip's keys)"
target/release/sevd --state-dir "$work/state" --mountpoint "$work/mnt" &
pid=$!
for _ in $(seq 600); do
  [[ -e "$work/mnt/sev" ]] && "$work/sevclient" info "$work/mnt/sev" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "== $work/mnt/sev, as a C client sees it"
"$work/sevclient" info "$work/mnt/sev"
echo "== driver conformance checks"
"$work/sevclient" check "$work/mnt/sev" | tail -n 1
echo "== AMD's part of the chain (ASK, ARK) made by this firmware: $work/state/ask_ark.cert"
ls -l "$work/state"
echo "== stopping sevd"
kill -TERM "$pid"
wait "$pid"
pid=
echo "sevd exited cleanly"
