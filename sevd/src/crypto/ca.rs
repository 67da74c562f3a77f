//! RSA keys and AMD's CA certificate format: the ARK and ASK, and the ASK's signature on the
//! CEK (firmware-semantics.md §4.2: RSASSA-PSS, MGF1 with the same hash, salt = hash length),
//! on RustCrypto's `rsa`. AMD stores the exponent, modulus and signature little-endian.

use rsa::pss::{BlindedSigningKey, Signature, VerifyingKey};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use sha2::{Sha256, Sha384};

use super::CryptoError;
use uapi::ca::CaCertificate;

/// The hash of an RSASSA-PSS signature (and of its MGF1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PssHash {
    /// SHA-256 (Naples' 2048-bit keys; RSA_SHA256).
    Sha256,
    /// SHA-384 (4096-bit keys; RSA_SHA384).
    Sha384,
}

/// The PSS hash AMD uses for a CA key of this size: SHA-256 for 2048 bits, SHA-384 above.
pub fn ca_digest(modulus_bits: usize) -> PssHash {
    if modulus_bits <= 2048 {
        PssHash::Sha256
    } else {
        PssHash::Sha384
    }
}

/// An RSA private key (ARK or ASK). Lives only while the chip is being made; the crate
/// zeroizes it when dropped.
pub struct RsaKeyPair(RsaPrivateKey);

impl RsaKeyPair {
    /// A fresh key with e = 65537.
    pub fn generate(bits: usize) -> Result<Self, CryptoError> {
        RsaPrivateKey::new(&mut rand_core::OsRng, bits)
            .map(RsaKeyPair)
            .map_err(|_| CryptoError::Key("RSA key generation"))
    }

    /// Size in bits.
    pub fn bits(&self) -> usize {
        self.0.size() * 8
    }

    /// RSASSA-PSS over `data`, returned little-endian.
    pub fn sign_pss(&self, hash: PssHash, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut rng = rand_core::OsRng;
        let key = self.0.clone();
        let sig = match hash {
            PssHash::Sha256 => BlindedSigningKey::<Sha256>::new(key)
                .try_sign_with_rng(&mut rng, data)
                .map(|s| s.to_vec()),
            PssHash::Sha384 => BlindedSigningKey::<Sha384>::new(key)
                .try_sign_with_rng(&mut rng, data)
                .map(|s| s.to_vec()),
        };
        let mut sig = sig.map_err(|_| CryptoError::Key("RSA-PSS signing"))?;
        sig.reverse();
        Ok(sig)
    }

    /// The public half.
    pub fn public(&self) -> RsaPublicKey {
        self.0.to_public_key()
    }

    /// The key as PKCS #8 DER (for the key server's store; wiped when dropped).
    pub fn to_pkcs8_der(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, CryptoError> {
        use rsa::pkcs8::EncodePrivateKey;
        self.0
            .to_pkcs8_der()
            .map(|d| zeroize::Zeroizing::new(d.as_bytes().to_vec()))
            .map_err(|_| CryptoError::Key("PKCS #8 encoding"))
    }

    /// A key from PKCS #8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        use rsa::pkcs8::DecodePrivateKey;
        RsaPrivateKey::from_pkcs8_der(der)
            .map(RsaKeyPair)
            .map_err(|_| CryptoError::Key("not an RSA private key in PKCS #8 DER"))
    }

    /// RSASSA-PSS with SHA-384 (MGF1 SHA-384, salt 48) over `data`, big-endian, as X.509
    /// carries it.
    pub fn sign_pss_sha384_be(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut sig = self.sign_pss(PssHash::Sha384, data)?;
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
        let width = self.bits() / 8;
        let le = |n: &BigUint| {
            let mut v = n.to_bytes_le();
            v.resize(width, 0);
            v
        };
        Ok(CaCertificate {
            version: 1,
            key_id,
            certifying_id,
            key_usage,
            reserved: [0; 16],
            pubexp: le(self.0.e()),
            modulus: le(self.0.n()),
            signature: vec![0; width],
        })
    }

    /// Signs `cert` (its header, exponent and modulus) into its signature field.
    pub fn sign_ca_certificate(&self, cert: &mut CaCertificate) -> Result<(), CryptoError> {
        let hash = ca_digest(self.bits());
        let mut sig = self.sign_pss(hash, &cert.signed_part())?;
        sig.resize(cert.modulus.len(), 0);
        cert.signature = sig;
        Ok(())
    }
}

/// The public key in a CA certificate; refused when the modulus or exponent is unusable
/// (the crate takes moduli up to 4096 bits and odd exponents from 3).
pub fn ca_public_key(cert: &CaCertificate) -> Result<RsaPublicKey, CryptoError> {
    let n = BigUint::from_bytes_le(&cert.modulus);
    let e = BigUint::from_bytes_le(&cert.pubexp);
    RsaPublicKey::new(n, e).map_err(|_| CryptoError::Key("RSA public key"))
}

/// Whether `sig` (big-endian, as X.509 carries it) is `key`'s RSASSA-PSS SHA-384 signature
/// of `data`.
pub fn verify_pss_sha384_be(key: &RsaPublicKey, data: &[u8], sig: &[u8]) -> bool {
    let Ok(sig) = Signature::try_from(sig) else {
        return false;
    };
    VerifyingKey::<Sha384>::new(key.clone())
        .verify(data, &sig)
        .is_ok()
}

/// Whether `sig_le` is `key`'s RSASSA-PSS signature of `data` under `hash`, the salt as long
/// as the hash (what the firmware checks).
pub fn verify_pss(key: &RsaPublicKey, hash: PssHash, data: &[u8], sig_le: &[u8]) -> bool {
    let modulus_len = key.size();
    if sig_le.len() < modulus_len || sig_le[modulus_len..].iter().any(|&b| b != 0) {
        return false;
    }
    let sig: Vec<u8> = sig_le[..modulus_len].iter().rev().copied().collect();
    let Ok(sig) = Signature::try_from(sig.as_slice()) else {
        return false;
    };
    let key = key.clone();
    match hash {
        PssHash::Sha256 => VerifyingKey::<Sha256>::new(key).verify(data, &sig).is_ok(),
        PssHash::Sha384 => VerifyingKey::<Sha384>::new(key).verify(data, &sig).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::{Padding, Rsa};
    use openssl::sign::{RsaPssSaltlen, Signer, Verifier};
    use rsa::pkcs1::EncodeRsaPrivateKey;

    /// A 2048-bit key (quick to make) and the same key in OpenSSL.
    fn keys() -> (RsaKeyPair, PKey<openssl::pkey::Private>) {
        let ours = RsaKeyPair::generate(2048).unwrap();
        let der = ours.0.to_pkcs1_der().unwrap();
        let theirs = PKey::from_rsa(Rsa::private_key_from_der(der.as_bytes()).unwrap()).unwrap();
        (ours, theirs)
    }

    /// OpenSSL's RSASSA-PSS parameters as the firmware's: MGF1 with the same hash, salt as
    /// long as the hash.
    trait PssParams {
        fn pss(&mut self, md: MessageDigest);
    }
    impl PssParams for Signer<'_> {
        fn pss(&mut self, md: MessageDigest) {
            self.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            self.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                .unwrap();
            self.set_rsa_mgf1_md(md).unwrap();
        }
    }
    impl PssParams for Verifier<'_> {
        fn pss(&mut self, md: MessageDigest) {
            self.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            self.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                .unwrap();
            self.set_rsa_mgf1_md(md).unwrap();
        }
    }

    #[test]
    fn pss_signatures_agree_with_openssl_both_ways() {
        let (ours, theirs) = keys();
        let mut cert = ours.ca_certificate(0x13, [1; 16], [1; 16]).unwrap();
        ours.sign_ca_certificate(&mut cert).unwrap();
        let data = cert.signed_part();
        // OpenSSL verifies ours (SHA-256 for a 2048-bit key).
        let mut v = Verifier::new(MessageDigest::sha256(), &theirs).unwrap();
        v.pss(MessageDigest::sha256());
        let be: Vec<u8> = cert.signature.iter().rev().copied().collect();
        assert!(v.verify_oneshot(&be, &data).unwrap());
        // And we verify OpenSSL's, under both hashes.
        let public = ca_public_key(&cert).unwrap();
        for (hash, md) in [
            (PssHash::Sha256, MessageDigest::sha256()),
            (PssHash::Sha384, MessageDigest::sha384()),
        ] {
            let mut s = Signer::new(md, &theirs).unwrap();
            s.pss(md);
            let mut sig = s.sign_oneshot_to_vec(&data).unwrap();
            sig.reverse();
            assert!(verify_pss(&public, hash, &data, &sig));
            let mut tampered = data.clone();
            tampered[3] ^= 1;
            assert!(!verify_pss(&public, hash, &tampered, &sig));
        }
    }

    #[test]
    fn malformed_keys_and_signatures_are_refused_without_panic() {
        let (ours, _) = keys();
        let mut cert = ours.ca_certificate(0x13, [1; 16], [1; 16]).unwrap();
        ours.sign_ca_certificate(&mut cert).unwrap();
        let public = ca_public_key(&cert).unwrap();
        let data = cert.signed_part();
        assert!(!verify_pss(
            &public,
            PssHash::Sha256,
            &data,
            &cert.signature[..100]
        ));
        assert!(!verify_pss(&public, PssHash::Sha256, &data, &[0xff; 256]));
        let mut longer = cert.signature.clone();
        longer.push(1);
        assert!(!verify_pss(&public, PssHash::Sha256, &data, &longer));
        let mut bad = cert.clone();
        bad.modulus = vec![0; 256];
        assert!(ca_public_key(&bad).is_err(), "a zero modulus");
        bad.modulus = vec![0xff; 1024];
        assert!(
            ca_public_key(&bad).is_err(),
            "8192 bits: more than the firmware takes"
        );
        let mut even = cert.clone();
        even.pubexp = vec![0; 256];
        even.pubexp[0] = 2;
        assert!(ca_public_key(&even).is_err(), "an even exponent");
    }
}
