#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in fuzz/ with libFuzzer, on the stable toolchain:
# rustc's sanitizer-coverage pass is asked for by -C flags (no -Z, no nightly), and
# libfuzzer-sys builds libFuzzer itself with the system's C++ compiler.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   run each target SECONDS (default 600), JOBS at a
#                                           time (default: the number of cores), and print
#                                           executions, coverage and crashes per target
#   scripts/fuzz.sh merge [TARGET...]       fold what the runs found into the committed
#                                           corpus (fuzz/corpus/<target>), minimised
#
# New inputs go to target/fuzz/corpus/<target>; crashes to target/fuzz/artifacts/<target>/.
# A crash's input belongs in fuzz/corpus/<target> once it is fixed: the suite replays it
# (fuzz/tests/replay.rs). Exits non-zero when any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(uapi_wire manifest policy firmware sev_node vm_node migration_stream)
mode=run
seconds=600
if [[ ${1:-} == merge ]]; then
  mode=merge
  shift
elif [[ ${1:-} =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
fi
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all_targets[@]}")
jobs=${JOBS:-$(nproc)}

work=$PWD/target/fuzz
mkdir -p "$work"
# The firmware targets' chip (RSA-4096 keys take a while to make): one, kept across runs.
export SEV_FUZZ_STATE=$work/chip

triple=$(rustc -vV | sed -n 's/^host: //p')
flags=(
  --cfg fuzzing
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cdebug-assertions
  -Coverflow-checks
)
echo "fuzz: building the targets (release, sanitizer coverage)" >&2
# --target keeps the flags off build scripts and proc macros, as cargo-fuzz does; the
# wrapper keeps them off the arithmetic crates.
RUSTC_WRAPPER=$PWD/fuzz/rustc-wrapper.sh RUSTFLAGS="${flags[*]}" cargo build --quiet --release --manifest-path fuzz/Cargo.toml \
  --features libfuzzer --target "$triple" --target-dir "$work/build" \
  $(printf -- '--bin %s ' "${targets[@]}")
bin=$work/build/$triple/release

# The chip, made once before the targets start (one input that needs it), so that no
# target's first minutes go to RSA key generation.
"$bin/uapi_wire" fuzz/corpus/uapi_wire/nv >/dev/null 2>&1

if [[ $mode == merge ]]; then
  # The smallest set of inputs that covers every edge the committed corpus and the runs
  # reached (edges only: hit counts would keep thousands). Named inputs (the seeds and the
  # regression inputs) stay; the fuzzer's own, named by their SHA-1, are replaced.
  for t in "${targets[@]}"; do
    [[ -d $work/corpus/$t ]] || continue
    picked=$(mktemp -d)
    "$bin/$t" -use_counters=0 -set_cover_merge=1 "$picked" "fuzz/corpus/$t" "$work/corpus/$t" 2>&1 |
      grep -E 'MERGE-OUTER: [0-9]+ new files' || true
    find "fuzz/corpus/$t" -maxdepth 1 -type f -regextype egrep -regex '.*/[0-9a-f]{40}' -delete
    cp -n "$picked"/* "fuzz/corpus/$t/"
    rm -rf "$picked"
    echo "fuzz: $t: $(find "fuzz/corpus/$t" -type f | wc -l) inputs committed" >&2
  done
  exit 0
fi

run_one() {
  local t=$1
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  "$bin/$t" -max_total_time="$seconds" -print_final_stats=1 -max_len=65536 \
    -artifact_prefix="$work/artifacts/$t/" "$work/corpus/$t" "fuzz/corpus/$t" \
    >"$work/$t.log" 2>&1 || true
}

echo "fuzz: ${#targets[@]} targets, ${seconds} s each, $jobs at a time ($(date -u +%F))" >&2
running=0
for t in "${targets[@]}"; do
  rm -f "$work/artifacts/$t"/crash-* "$work/artifacts/$t"/leak-* "$work/artifacts/$t"/timeout-* "$work/artifacts/$t"/oom-* 2>/dev/null || true
  run_one "$t" &
  running=$((running + 1))
  if [[ $running -ge $jobs ]]; then
    wait -n
    running=$((running - 1))
  fi
done
wait

failed=0
printf '%-10s %12s %10s %8s %8s\n' target executions exec/s coverage crashes
for t in "${targets[@]}"; do
  log=$work/$t.log
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
  crashes=$(find "$work/artifacts/$t" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
  printf '%-10s %12s %10s %8s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$crashes"
  if [[ $crashes -gt 0 || -z $execs ]]; then
    failed=1
    find "$work/artifacts/$t" -maxdepth 1 -type f | sed 's/^/  input: /'
    echo "  log: $log"
  fi
done
exit $failed
