//! The primitives the firmware and the guest owner share (firmware-semantics.md §4, §5).
//!
//! Big numbers cross this module's edge as little-endian byte strings, as SEV stores them.

pub mod ca;
pub mod ecc;

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The running SHA-256 of a launch digest (RustCrypto's `sha2`), and the trait of its methods.
pub use sha2::{Digest, Sha256};

/// A failure inside the crypto library; the message never holds key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Sealing (AES-GCM) failed: a wrong key length, or a message too long.
    #[error("sealing failed")]
    Seal,
    /// A key, point or signature that cannot be used (named, never its bytes).
    #[error("unusable key material: {0}")]
    Key(&'static str),
    /// The system's random source failed.
    #[error("no random bytes from the system: {0}")]
    Random(getrandom::Error),
}

/// SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], CryptoError> {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| CryptoError::Key("HMAC key"))?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes().into())
}

/// An HMAC-SHA256 key prepared once (its inner and outer pads hashed) for many messages.
#[derive(Clone)]
pub struct HmacKey(Hmac<Sha256>);

impl HmacKey {
    /// Prepares `key`.
    pub fn new(key: &[u8]) -> Result<HmacKey, CryptoError> {
        <Hmac<Sha256> as Mac>::new_from_slice(key)
            .map(HmacKey)
            .map_err(|_| CryptoError::Key("HMAC key"))
    }

    /// HMAC-SHA256 over the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// Compares two MACs in constant time.
pub fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
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

/// AES-128-CTR with a full 128-bit big-endian counter (the SEV API's, and OpenSSL's),
/// encrypting or decrypting.
pub fn aes128_ctr(key: &[u8; 16], iv: &[u8; 16], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut out = data.to_vec();
    ctr::Ctr128BE::<aes::Aes128>::new(key.into(), iv.into()).apply_keystream(&mut out);
    Ok(out)
}

/// AES-128-CTR (big-endian 128-bit counter) over `data` in place.
pub fn aes128_ctr_in_place(key: &[u8; 16], iv: &[u8; 16], data: &mut [u8]) {
    ctr::Ctr128BE::<aes::Aes128>::new(key.into(), iv.into()).apply_keystream(data);
}

/// Fills `buf` from the system's CSPRNG (getrandom(2)).
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::getrandom(buf).map_err(CryptoError::Random)
}

/// `N` bytes from the system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    fill_random(&mut out)?;
    Ok(out)
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
    fn ctr_matches_openssl_and_round_trips() {
        use openssl::symm::{encrypt, Cipher};
        let key = [0x2bu8; 16];
        let iv = [0xffu8; 16]; // the 128-bit counter wraps within the first blocks
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let ours = aes128_ctr(&key, &iv, &data).unwrap();
        let theirs = encrypt(Cipher::aes_128_ctr(), &key, Some(&iv), &data).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn sha_and_hmac_match_openssl() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(sha256(&data), openssl::sha::sha256(&data));
        let key = openssl::pkey::PKey::hmac(b"key").unwrap();
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
        signer.update(&data).unwrap();
        assert_eq!(
            hmac_sha256(b"key", &[&data[..10], &data[10..]])
                .unwrap()
                .to_vec(),
            signer.sign_to_vec().unwrap()
        );
        assert!(mac_eq(b"same", b"same") && !mac_eq(b"same", b"sane") && !mac_eq(b"a", b"ab"));
    }

    #[test]
    fn ctr_round_trips() {
        let key = [7u8; 16];
        let iv = [9u8; 16];
        let ct = aes128_ctr(&key, &iv, b"attack at dawn").unwrap();
        assert_ne!(&ct, b"attack at dawn");
        assert_eq!(aes128_ctr(&key, &iv, &ct).unwrap(), b"attack at dawn");
    }
}
