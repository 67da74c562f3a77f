//! AES-128-XTS with one 16-byte block per data unit, the unit's tweak being its address:
//! C = E_K1(P ⊕ T) ⊕ T with T = E_K2(address as a little-endian 128-bit number) (IEEE 1619
//! with a one-block data unit).
//!
//! With one-block units, the `xts-mode` crate's per-sector API would set up a tweak and run
//! a one-block cipher call per 16 bytes. The same construction is computed here with the
//! `aes` crate's parallel block API over 4 KiB pieces (AES-NI, eight blocks at a time), with
//! no allocation on this path; `tests.rs` proves it equal to `xts-mode` and to OpenSSL's
//! `aes-128-xts`, block for block.

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes128;

use crate::crypto::CryptoError;

/// Blocks in a piece: a page, so the scratch buffers live on the stack and stay in cache.
const PIECE_BLOCKS: usize = 256;
const BLOCK: usize = 16;

type Block = GenericArray<u8, aes::cipher::consts::U16>;

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
    let data_cipher = Aes128::new(GenericArray::from_slice(k1));
    let tweak_cipher = Aes128::new(GenericArray::from_slice(k2));
    let mut tweaks = [Block::default(); PIECE_BLOCKS];
    let mut blocks = [Block::default(); PIECE_BLOCKS];
    let piece_len = PIECE_BLOCKS * BLOCK;
    for (i, piece) in data.chunks_mut(piece_len).enumerate() {
        inspect(piece);
        let n = piece.len() / BLOCK;
        let base = gpa.wrapping_add((i * piece_len) as u64);
        for (j, t) in tweaks[..n].iter_mut().enumerate() {
            let address = base.wrapping_add((BLOCK * j) as u64) as u128;
            t.copy_from_slice(&address.to_le_bytes());
        }
        tweak_cipher.encrypt_blocks(&mut tweaks[..n]);
        for ((b, p), t) in blocks
            .iter_mut()
            .zip(piece.chunks_exact(BLOCK))
            .zip(&tweaks[..n])
        {
            xor_into(b, p, t);
        }
        if encrypt {
            data_cipher.encrypt_blocks(&mut blocks[..n]);
        } else {
            data_cipher.decrypt_blocks(&mut blocks[..n]);
        }
        for ((p, b), t) in piece
            .chunks_exact_mut(BLOCK)
            .zip(&blocks[..n])
            .zip(&tweaks[..n])
        {
            xor_into(p, b, t);
        }
    }
    Ok(())
}

/// `out = a ⊕ b`, 16 bytes.
fn xor_into(out: &mut [u8], a: &[u8], b: &[u8]) {
    let a = u128::from_ne_bytes(a.try_into().unwrap_or([0; 16]));
    let b = u128::from_ne_bytes(b.try_into().unwrap_or([0; 16]));
    out.copy_from_slice(&(a ^ b).to_ne_bytes());
}
