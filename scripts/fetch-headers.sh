#!/usr/bin/env bash
# Unpacks the uapi headers of a newer kernel than the system's into DIR (not installed):
# Debian trixie's linux-libc-dev (Linux 6.12), whose SEV structs (KVM_SEV_INIT2, VM types,
# SNP) the layout test checks our types against. The package is verified with the SHA-256 of
# the signed-by-Debian Packages index it comes from.
#
#   scripts/fetch-headers.sh DIR
set -euo pipefail
dest=${1:?usage: fetch-headers.sh DIR}
mirror=http://deb.debian.org/debian
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

curl -fsS "$mirror/dists/trixie/main/binary-amd64/Packages.xz" | xz -d >"$work/Packages"
read -r file sum < <(awk '
  /^Package: / { p = ($2 == "linux-libc-dev") }
  p && /^Filename: / { f = $2 }
  p && /^SHA256: / { s = $2 }
  p && /^$/ { if (f != "") { print f, s; exit } }
' "$work/Packages")
[[ -n ${file:-} && -n ${sum:-} ]] || { echo "fetch-headers: linux-libc-dev not in trixie's index" >&2; exit 1; }
curl -fsS -o "$work/headers.deb" "$mirror/$file"
echo "$sum  $work/headers.deb" | sha256sum -c --quiet
rm -rf "$dest"
mkdir -p "$dest"
dpkg-deb -x "$work/headers.deb" "$dest"
echo "fetch-headers: $(basename "$file") in $dest"
