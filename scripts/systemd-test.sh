#!/usr/bin/env bash
# Proves the systemd units by booting them (run as root): a minimal Debian 12 root file
# system, the freshly built sevd installed as the README says (systemd/install.sh), booted
# with systemd-nspawn; a check unit inside (tests/systemd/) runs every check against
# sevd.service and sevd-hardware.service and powers off. The report is copied to
# target/systemd-test/report; the script exits non-zero if any check failed.
#
# The root file system is made once per machine with debootstrap and kept as a tarball in
# $SEVD_TEST_CACHE (default /var/cache/sevd-test); each run unpacks a fresh copy under target/.
# Extra arguments: the sevd binary to install (default target/debug/sevd).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/sevd}
cache=${SEVD_TEST_CACHE:-/var/cache/sevd-test}
tarball=$cache/bookworm-minbase-v1.tar
out=target/systemd-test
root=$out/root

for tool in debootstrap systemd-nspawn cc; do
  command -v "$tool" > /dev/null || { echo "systemd-test: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done
[[ -x $bin ]] || { echo "systemd-test: $bin: build it first" >&2; exit 1; }

if [[ ! -s $tarball ]]; then
  echo "systemd-test: making the Debian root file system (once per machine, into $cache)"
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,fuse3,libssl3 \
    bookworm "$tmp/root" http://deb.debian.org/debian > "$cache/debootstrap.log" 2>&1 ||
    { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
  tar -C "$tmp/root" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
  rm -rf "$tmp"
  trap - EXIT
fi

rm -rf "$out"
mkdir -p "$root"
tar -C "$root" -xf "$tarball"

# Installed as the README's deployment steps say, into the image.
systemd/install.sh --root "$root" --bin "$bin" > /dev/null
# The checks, their clients, and the install script for the hardware unit's turn.
check=$root/sevd-check
mkdir -p "$check"
cp tests/systemd/check.sh systemd/install.sh systemd/*.service systemd/*.conf systemd/policy.example.yaml "$check/"
cc -O2 -Wall -Werror -o "$check/sevclient" tests/c/sevclient.c
if [[ -n ${SEVCTL_BIN:-} && -x $SEVCTL_BIN ]]; then cp "$SEVCTL_BIN" "$check/sevctl"; fi
install -m 0644 tests/systemd/sevd-check.service "$root/etc/systemd/system/"
systemctl --root="$root" enable sevd-check.service > /dev/null
echo "sevd-test" > "$root/etc/hostname"

echo "systemd-test: booting $root"
start=$(date +%s)
# No systemd runs on the host: --register=no --keep-unit. The console stays silent here, so
# the report is a file; the boot has a deadline.
timeout 600 systemd-nspawn --quiet --directory="$root" --boot --bind=/dev/fuse \
  --register=no --keep-unit --console=read-only > "$out/console.log" 2>&1 || true
echo "systemd-test: the boot took $(($(date +%s) - start)) s"

if [[ ! -s $check/report ]]; then
  echo "systemd-test: no report; console:" >&2
  tail -n 40 "$out/console.log" >&2
  exit 1
fi
cp "$check/report" "$out/report"
cp "$check/log" "$out/log" 2>/dev/null || true
cat "$out/report"
tail -n 1 "$out/report" | grep -q ", 0 failed$" || {
  echo "systemd-test: checks failed; details in $out/log" >&2
  exit 1
}
