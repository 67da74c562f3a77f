#!/usr/bin/env bash
# The whole test suite: formatting, lints, every unit and integration test. Run as root
# (the integration tests mount FUSE); exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

# Every test makes its temporary directories (state, mount points, helpers' mounts) under
# the suite's own directory, so cleaning up touches only what the suite made: never a
# daemon the host runs. /dev/sev and /dev/sev-vm are taken over by the tests that need
# them only when nothing live is there (tests/src/lib.rs, own_dev_sev).
suite_tmp=$PWD/target/test-tmp
export TMPDIR=$suite_tmp
# FUSE mounts under the suite's directory (mountinfo escapes spaces as \040).
suite_mounts() { awk -v d="$suite_tmp/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo; }
# Mounts left by an interrupted earlier run would confuse the tests.
for m in $(suite_mounts); do umount -l "$m" || true; done
rm -rf "$suite_tmp"
mkdir -p "$suite_tmp"
# The chip the tests share is made once per run (tests/src/lib.rs, shared_chip).
rm -rf target/tmp/chip-fixture

# virtee's sevctl, unmodified, for tests/tests/sevctl.rs (built once into target/). Both
# peers ask for a vendored OpenSSL; OPENSSL_NO_VENDOR links the system's instead, which
# saves building OpenSSL twice (about 5 of CI's minutes).
sevctl_root=target/sevctl-0.6.2
if [[ ! -x $sevctl_root/bin/sevctl ]]; then
  echo "test: installing sevctl 0.6.2 from crates.io (once)"
  OPENSSL_NO_VENDOR=1 cargo install --quiet --locked --version 0.6.2 sevctl --root "$sevctl_root"
fi
export SEVCTL_BIN=$PWD/$sevctl_root/bin/sevctl

# virtee's snpguest, unmodified, the SNP attestation verifier (built once into target/).
snpguest_root=target/snpguest-0.11.0
if [[ ! -x $snpguest_root/bin/snpguest ]]; then
  echo "test: installing snpguest 0.11.0 from crates.io (once)"
  OPENSSL_NO_VENDOR=1 cargo install --quiet --locked --version 0.11.0 snpguest --root "$snpguest_root"
fi
export SNPGUEST_BIN=$PWD/$snpguest_root/bin/snpguest

# virtee's snphost, unmodified, the SNP host tool (built once into target/).
snphost_root=target/snphost-0.9.0
if [[ ! -x $snphost_root/bin/snphost ]]; then
  echo "test: installing snphost 0.9.0 from crates.io (once)"
  OPENSSL_NO_VENDOR=1 cargo install --quiet --locked --version 0.9.0 snphost --root "$snphost_root"
fi
export SNPHOST_BIN=$PWD/$snphost_root/bin/snphost

# sev-snp-measure from PyPI, the current-QEMU launch validator, in a virtualenv under target/
# (libvirt's virt-qemu-sev-validate, the legacy one, comes from setup.sh's packages).
snp_measure_venv=target/validators/sev-snp-measure-0.0.13
if [[ ! -x $snp_measure_venv/bin/sev-snp-measure ]]; then
  echo "test: installing sev-snp-measure 0.0.13 from PyPI (once)"
  rm -rf "$snp_measure_venv"
  /usr/bin/python3 -m venv "$snp_measure_venv"
  "$snp_measure_venv/bin/pip" install --quiet --disable-pip-version-check sev-snp-measure==0.0.13
fi
export SEV_SNP_MEASURE=$PWD/$snp_measure_venv/bin/sev-snp-measure

# Linux 6.12's uapi headers (Debian trixie's linux-libc-dev, unpacked under target/, not
# installed): the layout test checks the structs of current kernels against them.
new_headers=target/headers/linux-libc-dev-trixie
if [[ ! -f $new_headers/usr/include/linux/kvm.h ]]; then
  echo "test: fetching Linux 6.12's uapi headers (once)"
  scripts/fetch-headers.sh "$new_headers"
fi
export UAPI_NEW_HEADERS=$PWD/$new_headers

cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The fuzz crate is a workspace of its own; without its libfuzzer feature it builds no
# C++ and shares the main build's dependencies in target/.
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --target-dir target --quiet -- -D warnings
cargo build --workspace --all-targets --quiet
# The product is pure Rust: OpenSSL is only the tests' referee (dev-dependencies).
if cargo tree -e normal -p sevd -p sevctl-cli -p uapi -p vfs --prefix none 2>/dev/null |
  grep -qE '^openssl(-sys)? '; then
  echo "test: a product crate depends on OpenSSL (cargo tree -e normal)" >&2
  exit 1
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# The fuzz targets' committed corpus, replayed on the suite's chip (scripts/fuzz.sh).
SEV_FUZZ_STATE=$PWD/target/tmp/chip-fixture cargo test --manifest-path fuzz/Cargo.toml \
  --target-dir target --no-fail-fast 2>&1 | tee -a "$log" || status=$?
# The systemd units, booted under a real systemd (scripts/systemd-test.sh).
units=0
scripts/systemd-test.sh target/debug/sevd || units=$?
# Thirty seconds of the soak (scripts/soak.sh) on the debug build and the suite's chip.
soak=0
SOAK_CHIP=$PWD/target/tmp/chip-fixture/chip.bin SOAK_MANIFEST=$PWD/examples/sev.yaml \
  target/debug/soak 30 "$suite_tmp/soak" || soak=$?
# One closing line for the whole suite: cargo prints one per test binary, the boot test's
# report ends with its own count (a missing or unfinished report counts as one failure).
sp=0 sf=1
last=$(tail -n 1 target/systemd-test/report 2>/dev/null || true)
if [[ $last =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
  sp=${BASH_REMATCH[1]} sf=${BASH_REMATCH[2]}
fi
# The soak counts as one check.
if [[ $soak -eq 0 ]]; then sp=$((sp + 1)); else sf=$((sf + 1)); fi
awk -v sp="$sp" -v sf="$sf" '/^test result:/ { p += $4; f += $6 }
  END { printf "suite: %d passed, %d failed\n", p + sp, f + sf }' "$log"
[[ $status -eq 0 ]] || exit "$status"
[[ $units -eq 0 ]] || exit "$units"
[[ $soak -eq 0 ]] || exit "$soak"

left=$(suite_mounts)
if [[ -n "$left" ]]; then
  echo "test: FUSE mounts left behind: $left" >&2
  for m in $left; do umount -l "$m" || true; done
  exit 1
fi
# A placeholder the tests made and left: an empty file with nothing mounted on it.
for p in /dev/sev /dev/sev-vm; do
  if [[ -f $p && ! -s $p ]] && ! mountpoint -q "$p"; then
    echo "test: a placeholder $p was left behind" >&2
    rm -f "$p"
    exit 1
  fi
done
