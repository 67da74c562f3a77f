//! AES-128-XTS with one 16-byte block per data unit, the unit's tweak being its address:
//! C = E_K1(P ⊕ T) ⊕ T with T = E_K2(address as a little-endian 128-bit number) (IEEE 1619
//! with a one-block data unit). Computed with ECB passes over 4 KiB pieces, which AES-NI
//! runs at memory speed, with no allocation on this path.

use openssl::symm::{Cipher, Crypter, Mode};

use crate::crypto::CryptoError;

/// Piece size: a page, so the scratch buffers live on the stack and stay in cache.
const PIECE: usize = 4096;

fn ecb(key: &[u8], mode: Mode) -> Result<Crypter, CryptoError> {
    let mut c = Crypter::new(Cipher::aes_128_ecb(), mode, key, None)?;
    c.pad(false);
    Ok(c)
}

/// Encrypts (`encrypt`) or decrypts `data` in place; `data` starts at address `gpa`.
/// Both are 16-byte aligned (checked by the caller).
pub(super) fn apply(
    key: &[u8; 32],
    gpa: u64,
    data: &mut [u8],
    encrypt: bool,
) -> Result<(), CryptoError> {
    apply_inspecting(key, gpa, data, encrypt, |_| {})
}

/// As [`apply`], handing each piece to `inspect` just before it is transformed, while it is
/// still in cache (LAUNCH_UPDATE_DATA hashes the plaintext this way).
pub(super) fn apply_inspecting(
    key: &[u8; 32],
    gpa: u64,
    data: &mut [u8],
    encrypt: bool,
    mut inspect: impl FnMut(&[u8]),
) -> Result<(), CryptoError> {
    let (k1, k2) = key.split_at(16);
    let mut tweak_cipher = ecb(k2, Mode::Encrypt)?;
    let mut data_cipher = ecb(
        k1,
        if encrypt {
            Mode::Encrypt
        } else {
            Mode::Decrypt
        },
    )?;
    // OpenSSL wants room for one block more than it writes.
    let mut addresses = [0u8; PIECE];
    let mut tweaks = [0u8; PIECE + 16];
    let mut out = [0u8; PIECE + 16];
    for (i, piece) in data.chunks_mut(PIECE).enumerate() {
        let n = piece.len();
        inspect(piece);
        let base = gpa + (i * PIECE) as u64;
        for (j, a) in addresses[..n].chunks_exact_mut(16).enumerate() {
            a[..8].copy_from_slice(&(base + 16 * j as u64).to_le_bytes());
        }
        tweak_cipher.update(&addresses[..n], &mut tweaks)?;
        xor(piece, &tweaks[..n]);
        data_cipher.update(piece, &mut out)?;
        piece.copy_from_slice(&out[..n]);
        xor(piece, &tweaks[..n]);
    }
    Ok(())
}

fn xor(data: &mut [u8], with: &[u8]) {
    for (d, w) in data.chunks_exact_mut(8).zip(with.chunks_exact(8)) {
        let v = u64::from_ne_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
            ^ u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        d.copy_from_slice(&v.to_ne_bytes());
    }
}
