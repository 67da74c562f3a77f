#!/usr/bin/env bash
# Installs the system packages the project needs (Debian), only those that are missing.
# Safe to run again.
#
#   scripts/setup.sh run    what the main job needs (scripts/run.sh): a C linker for cargo
#   scripts/setup.sh        everything the test suite needs as well (the default)
set -euo pipefail

# The main job builds sevctl, which is pure Rust: no OpenSSL, no FUSE.
run_packages=(
  gcc              # the linker cargo calls
  libc6-dev
)
packages=(
  gcc              # C test client, layout test, openssl-sys
  libc6-dev
  linux-libc-dev   # <linux/psp-sev.h>, <linux/kvm.h> for the layout test and the C client
  libssl-dev       # OpenSSL, for the tests only: the referee of our crypto, and the sev crate
  pkg-config       # finds OpenSSL (tests)
  fuse3            # fusermount3, to clean up FUSE mounts by hand (sevd itself needs no helper)
  ovmf             # Debian's OVMF, for examples/debian-ovmf.yaml and its test
  systemd          # systemd-analyze, for the units' tests
  systemd-container # systemd-nspawn, which boots the units in scripts/systemd-test.sh
  debootstrap      # the Debian root file system that test boots
  qemu-system-x86  # QEMU, whose capability query tests/tests/qemu.rs tries against sevd
  python3-venv     # the virtualenv sev-snp-measure (PyPI) is installed into, under target/
  golang-go        # a Go program under sevctl exec (tests/tests/exec.rs)
  curl             # scripts/fetch-headers.sh: Linux 6.12's headers for the layout test
  xz-utils
  libvirt-clients-qemu # virt-qemu-sev-validate, the legacy-world launch validator
  python3-lxml     # which it imports at start
  python3-cryptography
)

if [[ ${1:-test} == run ]]; then
  packages=("${run_packages[@]}")
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing packages: ${missing[*]}; run this script as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [[ ${1:-test} != run && ! -e /dev/fuse ]]; then
  modprobe fuse 2>/dev/null || mknod -m 0600 /dev/fuse c 10 229
fi
