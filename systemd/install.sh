#!/bin/sh
# Installs sevd as a systemd service: the binary, a unit, its groups (sysusers.d), its
# directories (tmpfiles.d) and, unless one exists, the example access policy.
#
#   systemd/install.sh [--root DIR] [--bin PATH] [--hardware]
#
# --hardware installs sevd-hardware.service (in front of the kernel's /dev/sev) instead of
# sevd.service (the software firmware). On a live system (no --root) it then makes the
# groups and directories and enables and starts the unit. With --root it prepares the file
# system at DIR, whose systemd does the rest at boot (this is how scripts/systemd-test.sh
# installs into the image it boots).
set -eu
root= bin=target/release/sevd unit=sevd.service
while [ $# -gt 0 ]; do
  case $1 in
    --root) root=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --hardware) unit=sevd-hardware.service; shift ;;
    *) echo "usage: $0 [--root DIR] [--bin PATH] [--hardware]" >&2; exit 2 ;;
  esac
done
here=$(dirname "$0")
[ -x "$bin" ] || { echo "install: $bin: build it first (cargo build --release -p sevd)" >&2; exit 1; }

[ "$bin" -ef "$root/usr/local/bin/sevd" ] || install -D -m 0755 "$bin" "$root/usr/local/bin/sevd"
install -D -m 0644 "$here/sevd.sysusers.conf" "$root/usr/lib/sysusers.d/sevd.conf"
install -D -m 0644 "$here/sevd.tmpfiles.conf" "$root/usr/lib/tmpfiles.d/sevd.conf"
install -D -m 0644 "$here/$unit" "$root/etc/systemd/system/$unit"
if [ ! -e "$root/etc/sevd/policy.yaml" ]; then
  install -D -m 0644 "$here/policy.example.yaml" "$root/etc/sevd/policy.yaml"
fi

if [ -n "$root" ]; then
  systemctl --root="$root" enable "$unit"
else
  systemd-sysusers
  systemd-tmpfiles --create /usr/lib/tmpfiles.d/sevd.conf
  systemctl daemon-reload
  systemctl enable --now "$unit"
fi
