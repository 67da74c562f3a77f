//! AES-128-XTS with one 16-byte block per data unit, the unit's tweak being its address:
//! C = E_K1(P ⊕ T) ⊕ T with T = E_K2(address as a little-endian 128-bit number) (IEEE 1619
//! with a one-block data unit). Computed in bulk with ECB passes, which AES-NI runs at
//! memory speed.

use openssl::symm::{Cipher, Crypter, Mode};

use crate::crypto::CryptoError;

fn ecb(key: &[u8], mode: Mode, data: &mut [u8]) -> Result<(), CryptoError> {
    let mut c = Crypter::new(Cipher::aes_128_ecb(), mode, key, None)?;
    c.pad(false);
    // OpenSSL wants room for one more block than it writes.
    let mut out = vec![0u8; data.len() + 16];
    let n = c.update(data, &mut out)?;
    data.copy_from_slice(&out[..n]);
    Ok(())
}

/// Encrypts (`encrypt`) or decrypts `data` in place; `data` starts at address `gpa`.
/// Both are 16-byte aligned (checked by the caller).
pub(super) fn apply(
    key: &[u8; 32],
    gpa: u64,
    data: &mut [u8],
    encrypt: bool,
) -> Result<(), CryptoError> {
    let (k1, k2) = key.split_at(16);
    let mut tweaks = vec![0u8; data.len()];
    for (i, t) in tweaks.chunks_exact_mut(16).enumerate() {
        t[..8].copy_from_slice(&(gpa + 16 * i as u64).to_le_bytes());
    }
    ecb(k2, Mode::Encrypt, &mut tweaks)?;
    xor(data, &tweaks);
    ecb(
        k1,
        if encrypt {
            Mode::Encrypt
        } else {
            Mode::Decrypt
        },
        data,
    )?;
    xor(data, &tweaks);
    Ok(())
}

fn xor(data: &mut [u8], with: &[u8]) {
    for (d, w) in data.iter_mut().zip(with) {
        *d ^= w;
    }
}
