//! The primitives the firmware and the guest owner share (firmware-semantics.md §4, §5).
//!
//! Big numbers cross this module's edge as little-endian byte strings, as SEV stores them.

pub mod ca;
pub mod ecc;

use openssl::bn::{BigNum, BigNumRef};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::symm::{Cipher, Crypter, Mode};
use zeroize::Zeroizing;

/// A failure inside the crypto library; the message never holds key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// OpenSSL failed.
    #[error("crypto library failure: {0}")]
    Library(#[from] openssl::error::ErrorStack),
    /// Sealing (AES-GCM) failed: a wrong key length, or a message too long.
    #[error("sealing failed")]
    Seal,
}

/// SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(data)
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], CryptoError> {
    let pkey = PKey::hmac(key)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &pkey)?;
    for part in parts {
        signer.update(part)?;
    }
    let mut out = [0u8; 32];
    signer.sign(&mut out)?;
    Ok(out)
}

/// Compares two MACs in constant time.
pub fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

/// NIST SP 800-108 KDF in counter mode with HMAC-SHA256, as the SEV firmware has it
/// (firmware-semantics.md §5.3): K_i = HMAC(key, i ‖ label ‖ 0x00 ‖ context ‖ L), with the
/// counter i and the output length L in bits as little-endian u32.
pub fn kdf(
    key: &[u8],
    label: &[u8],
    context: &[u8],
    out_len: usize,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let bits = ((out_len * 8) as u32).to_le_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(out_len + 32));
    let mut counter = 1u32;
    while out.len() < out_len {
        let block = hmac_sha256(key, &[&counter.to_le_bytes(), label, &[0], context, &bits])?;
        out.extend_from_slice(&block);
        counter += 1;
    }
    out.truncate(out_len);
    Ok(out)
}

/// AES-128-CTR with a full 128-bit big-endian counter (OpenSSL's), encrypting or decrypting.
pub fn aes128_ctr(key: &[u8; 16], iv: &[u8; 16], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut crypter = Crypter::new(Cipher::aes_128_ctr(), Mode::Encrypt, key, Some(iv))?;
    let mut out = vec![0u8; data.len() + 16];
    let mut n = crypter.update(data, &mut out)?;
    n += crypter.finalize(&mut out[n..])?;
    out.truncate(n);
    Ok(out)
}

/// Fills a buffer from the library's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    openssl::rand::rand_bytes(&mut out)?;
    Ok(out)
}

/// A little-endian big number.
pub fn bn_from_le(le: &[u8]) -> Result<BigNum, CryptoError> {
    let be: Vec<u8> = le.iter().rev().copied().collect();
    Ok(BigNum::from_slice(&be)?)
}

/// A big number as `width` little-endian bytes (zero-padded).
pub fn bn_to_le(bn: &BigNumRef, width: usize) -> Result<Vec<u8>, CryptoError> {
    let mut v = bn.to_vec_padded(width as i32)?;
    v.reverse();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answers from virtee/sev src/session/key.rs (firmware-semantics.md §10).
    #[test]
    fn kdf_matches_virtee_vector() {
        let out = kdf(&[0u8; 16], b"sev-master-secret", &[0u8; 16], 16).unwrap();
        assert_eq!(hex::encode(&*out), "ab4d269fcc62bedb4511d56c386ce706");
    }

    #[test]
    fn hmac_matches_virtee_vector() {
        let mac = hmac_sha256(&[0u8; 16], &[&[0u8; 4]]).unwrap();
        assert!(hex::encode(mac).starts_with("aa7855e1"));
    }

    #[test]
    fn ctr_round_trips() {
        let key = [7u8; 16];
        let iv = [9u8; 16];
        let ct = aes128_ctr(&key, &iv, b"attack at dawn").unwrap();
        assert_ne!(&ct, b"attack at dawn");
        assert_eq!(aes128_ctr(&key, &iv, &ct).unwrap(), b"attack at dawn");
    }

    #[test]
    fn little_endian_big_numbers_round_trip() {
        let le = [1u8, 2, 3, 0, 0];
        let bn = bn_from_le(&le).unwrap();
        assert_eq!(
            bn.to_dec_str().unwrap().to_string(),
            (1 + 2 * 256 + 3 * 65536).to_string()
        );
        assert_eq!(bn_to_le(&bn, 5).unwrap(), le);
    }
}
