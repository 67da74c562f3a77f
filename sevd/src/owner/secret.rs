//! The LAUNCH_SECRET packet (firmware-semantics.md §8.1): the owner encrypts a secret with
//! TEK and MACs it with TIK, bound to the launch measurement.

use uapi::launch::SecretHeader;

use crate::crypto::{aes128_ctr, hmac_sha256, CryptoError};

/// Channel context for secrets.
const CONTEXT_SECRET: u8 = 0x01;

/// MAC = HMAC-SHA256(TIK, 0x01 ‖ FLAGS ‖ IV ‖ GUEST_LEN ‖ TRANS_LEN ‖ CIPHERTEXT ‖ MEASURE).
pub fn secret_mac(
    tik: &[u8; 16],
    flags: u32,
    iv: &[u8; 16],
    guest_len: u32,
    ciphertext: &[u8],
    measure: &[u8; 32],
) -> Result<[u8; 32], CryptoError> {
    hmac_sha256(
        tik,
        &[
            &[CONTEXT_SECRET],
            &flags.to_le_bytes(),
            iv,
            &guest_len.to_le_bytes(),
            &(ciphertext.len() as u32).to_le_bytes(),
            ciphertext,
            measure,
        ],
    )
}

/// Packages `secret` for the guest whose launch produced `measure`: the 52-byte header and
/// the ciphertext (GUEST_LENGTH = TRANS_LENGTH = the secret's length).
pub fn package(
    tek: &[u8; 16],
    tik: &[u8; 16],
    measure: &[u8; 32],
    iv: [u8; 16],
    secret: &[u8],
) -> Result<(SecretHeader, Vec<u8>), CryptoError> {
    let ciphertext = aes128_ctr(tek, &iv, secret)?;
    let mac = secret_mac(tik, 0, &iv, secret.len() as u32, &ciphertext, measure)?;
    Ok((SecretHeader { flags: 0, iv, mac }, ciphertext))
}
