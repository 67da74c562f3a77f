//! RSA keys and AMD's CA certificate format: the ARK and ASK, and the ASK's signature on the
//! CEK (firmware-semantics.md §4.2: RSASSA-PSS, MGF1 with the same hash, salt = hash length).

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};

use super::{bn_from_le, bn_to_le, CryptoError};
use uapi::ca::CaCertificate;

/// The PSS hash AMD uses for a CA key of this size: SHA-256 for 2048 bits, SHA-384 above.
pub fn ca_digest(modulus_bits: usize) -> MessageDigest {
    if modulus_bits <= 2048 {
        MessageDigest::sha256()
    } else {
        MessageDigest::sha384()
    }
}

/// An RSA private key (ARK or ASK). Lives only while the chip is being made.
pub struct RsaKeyPair(PKey<Private>);

impl RsaKeyPair {
    /// A fresh key with e = 65537.
    pub fn generate(bits: u32) -> Result<Self, CryptoError> {
        Ok(RsaKeyPair(PKey::from_rsa(Rsa::generate(bits)?)?))
    }

    /// Size in bits.
    pub fn bits(&self) -> usize {
        self.0.bits() as usize
    }

    /// RSASSA-PSS over `data`, returned little-endian.
    pub fn sign_pss(&self, digest: MessageDigest, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut signer = Signer::new(digest, &self.0)?;
        signer.set_rsa_padding(Padding::PKCS1_PSS)?;
        signer.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
        signer.set_rsa_mgf1_md(digest)?;
        signer.update(data)?;
        let mut sig = signer.sign_to_vec()?;
        sig.reverse();
        Ok(sig)
    }

    /// An unsigned CA certificate for this key (PUBEXP_SIZE = MODULUS_SIZE, as AMD's are).
    pub fn ca_certificate(
        &self,
        key_usage: u32,
        key_id: [u8; 16],
        certifying_id: [u8; 16],
    ) -> Result<CaCertificate, CryptoError> {
        let rsa = self.0.rsa()?;
        let width = self.bits() / 8;
        Ok(CaCertificate {
            version: 1,
            key_id,
            certifying_id,
            key_usage,
            reserved: [0; 16],
            pubexp: bn_to_le(rsa.e(), width)?,
            modulus: bn_to_le(rsa.n(), width)?,
            signature: vec![0; width],
        })
    }

    /// Signs `cert` (its header, exponent and modulus) into its signature field.
    pub fn sign_ca_certificate(&self, cert: &mut CaCertificate) -> Result<(), CryptoError> {
        let digest = ca_digest(self.bits());
        let mut sig = self.sign_pss(digest, &cert.signed_part())?;
        sig.resize(cert.modulus.len(), 0);
        cert.signature = sig;
        Ok(())
    }
}

/// The public key in a CA certificate.
pub fn ca_public_key(cert: &CaCertificate) -> Result<PKey<Public>, CryptoError> {
    let rsa = Rsa::from_public_components(bn_from_le(&cert.modulus)?, bn_from_le(&cert.pubexp)?)?;
    Ok(PKey::from_rsa(rsa)?)
}

/// Whether `sig_le` is `key`'s RSASSA-PSS signature of `data` under `digest`.
pub fn verify_pss(key: &PKey<Public>, digest: MessageDigest, data: &[u8], sig_le: &[u8]) -> bool {
    let modulus_len = key.size();
    if sig_le.len() < modulus_len || sig_le[modulus_len..].iter().any(|&b| b != 0) {
        return false;
    }
    let sig: Vec<u8> = sig_le[..modulus_len].iter().rev().copied().collect();
    let check = || -> Result<bool, openssl::error::ErrorStack> {
        let mut verifier = Verifier::new(digest, key)?;
        verifier.set_rsa_padding(Padding::PKCS1_PSS)?;
        verifier.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
        verifier.set_rsa_mgf1_md(digest)?;
        verifier.update(data)?;
        verifier.verify(&sig)
    };
    check().unwrap_or(false)
}
