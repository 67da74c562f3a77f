#!/usr/bin/env bash
# RUSTC_WRAPPER for scripts/fuzz.sh: compiles the big-number and curve crates without the
# sanitizer-coverage flags. Their constant-time arithmetic is not what the targets explore,
# and instrumenting every comparison in it made the firmware target twenty times slower.
rustc=$1
shift
crate=
prev=
for a in "$@"; do
  [[ $prev == --crate-name ]] && crate=$a
  prev=$a
done
case $crate in
  p384 | primeorder | elliptic_curve | crypto_bigint | ecdsa | rsa | num_bigint_dig | \
    sha2 | aes | aes_gcm | ghash | polyval | ctr | hmac | xts_mode | ff | group | subtle)
    args=()
    skip=0
    for a in "$@"; do
      if [[ $skip == 1 ]]; then
        skip=0
        [[ $a == passes=sancov-module || $a == llvm-args=-sanitizer-coverage* ]] && continue
        args+=(-C "$a")
        continue
      fi
      case $a in
        -C) skip=1 ;;
        -Cpasses=sancov-module | -Cllvm-args=-sanitizer-coverage*) ;;
        *) args+=("$a") ;;
      esac
    done
    exec "$rustc" "${args[@]}"
    ;;
esac
exec "$rustc" "$@"
