//! P-384 keys in SEV's representation: OCA, PEK, CEK (ECDSA) and PDH, GODH (ECDH).

use openssl::bn::{BigNum, BigNumContext};
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use zeroize::Zeroizing;

use super::{bn_from_le, bn_to_le, CryptoError};
use uapi::cert::{algo, curve, Certificate, ECC_FIELD_LEN, SIG_LEN};

fn group() -> Result<EcGroup, CryptoError> {
    Ok(EcGroup::from_curve_name(Nid::SECP384R1)?)
}

/// The digest a key of this SEV algorithm signs with.
fn digest_for(key_algo: u32, data: &[u8]) -> Option<Vec<u8>> {
    match key_algo {
        algo::ECDSA_SHA256 | algo::ECDH_SHA256 => Some(super::sha256(data).to_vec()),
        algo::ECDSA_SHA384 | algo::ECDH_SHA384 => Some(openssl::sha::sha384(data).to_vec()),
        _ => None,
    }
}

/// A P-384 private key. OpenSSL clears the scalar when the key is freed.
pub struct EcKeyPair(EcKey<Private>);

impl std::fmt::Debug for EcKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EcKeyPair(P-384, private)")
    }
}

impl EcKeyPair {
    /// A fresh random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let group = group()?;
        Ok(EcKeyPair(EcKey::generate(&group)?))
    }

    /// A key whose scalar is derived from `seed` bytes: (seed mod (n − 1)) + 1, so any seed
    /// gives a valid key. Used for the chip's CEK, which the firmware derives, never stores.
    pub fn from_seed(seed: &[u8]) -> Result<Self, CryptoError> {
        let group = group()?;
        let mut ctx = BigNumContext::new_secure()?;
        let mut order = BigNum::new()?;
        group.order(&mut order, &mut ctx)?;
        let mut n1 = BigNum::new()?;
        n1.checked_sub(&order, BigNum::from_u32(1)?.as_ref())?;
        let seed = BigNum::from_slice(seed)?;
        let mut d = BigNum::new_secure()?;
        d.nnmod(&seed, &n1, &mut ctx)?;
        d.add_word(1)?;
        let mut q = EcPoint::new(&group)?;
        q.mul_generator2(&group, &d, &mut ctx)?;
        let key = EcKey::from_private_components(&group, &d, &q)?;
        key.check_key()?;
        Ok(EcKeyPair(key))
    }

    /// The key as DER (SEC 1), zeroized when dropped.
    pub fn to_der(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        Ok(Zeroizing::new(self.0.private_key_to_der()?))
    }

    /// A key from DER (SEC 1); checked to be on P-384.
    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        let key = EcKey::private_key_from_der(der)?;
        key.check_key()?;
        if key.group().curve_name() != Some(Nid::SECP384R1) {
            return Err(CryptoError::Library(openssl::error::ErrorStack::get()));
        }
        Ok(EcKeyPair(key))
    }

    /// The public half.
    pub fn public(&self) -> Result<EcPublic, CryptoError> {
        Ok(EcPublic(EcKey::from_public_key(
            self.0.group(),
            self.0.public_key(),
        )?))
    }

    /// A certificate for this key's public half with empty signature slots.
    pub fn certificate(
        &self,
        api: (u8, u8),
        usage: u32,
        key_algo: u32,
    ) -> Result<Certificate, CryptoError> {
        let (qx, qy) = self.public()?.coordinates_le()?;
        Ok(Certificate::new_ecc(api, usage, key_algo, &qx, &qy))
    }

    /// Signs `cert`'s body into its first empty slot, as a key of `signer_usage` and
    /// `signer_algo` (ECDSA_SHA256 for every firmware key).
    pub fn sign_certificate(
        &self,
        cert: &mut Certificate,
        signer_usage: u32,
        signer_algo: u32,
    ) -> Result<(), CryptoError> {
        let digest = digest_for(signer_algo, &cert.body())
            .ok_or_else(|| CryptoError::Library(openssl::error::ErrorStack::get()))?;
        let sig = EcdsaSig::sign(&digest, &self.0)?;
        let mut slot = [0u8; SIG_LEN];
        slot[..ECC_FIELD_LEN].copy_from_slice(&bn_to_le(sig.r(), ECC_FIELD_LEN)?);
        slot[ECC_FIELD_LEN..2 * ECC_FIELD_LEN].copy_from_slice(&bn_to_le(sig.s(), ECC_FIELD_LEN)?);
        // A certificate always has a free slot when the firmware signs it; if not, the
        // second slot is replaced, which is what re-signing means.
        let target = cert.sigs.iter().position(|s| s.is_empty()).unwrap_or(1);
        cert.sigs[target].usage = signer_usage;
        cert.sigs[target].algo = signer_algo;
        cert.sigs[target].sig = slot;
        Ok(())
    }

    /// ECDH: the 48-byte big-endian x-coordinate of the shared point (firmware-semantics.md §5.2).
    pub fn ecdh(&self, peer: &EcPublic) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let ours = PKey::from_ec_key(self.0.clone())?;
        let theirs = PKey::from_ec_key(peer.0.clone())?;
        let mut deriver = Deriver::new(&ours)?;
        deriver.set_peer(&theirs)?;
        Ok(Zeroizing::new(deriver.derive_to_vec()?))
    }
}

/// A P-384 public key.
#[derive(Clone)]
pub struct EcPublic(EcKey<Public>);

impl std::fmt::Debug for EcPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EcPublic(P-384)")
    }
}

impl EcPublic {
    /// The key in a certificate: curve P-384 and a point on it, or `None`.
    pub fn from_certificate(cert: &Certificate) -> Option<Self> {
        let (curve_id, qx, qy) = cert.ecc_pubkey()?;
        if curve_id != curve::P384 {
            return None;
        }
        let group = group().ok()?;
        let x = bn_from_le(qx).ok()?;
        let y = bn_from_le(qy).ok()?;
        // from_public_key_affine_coordinates rejects points off the curve.
        let key = EcKey::from_public_key_affine_coordinates(&group, &x, &y).ok()?;
        key.check_key().ok()?;
        Some(EcPublic(key))
    }

    /// (qx, qy) as little-endian 72-byte fields.
    pub fn coordinates_le(&self) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        let group = self.0.group();
        let mut ctx = BigNumContext::new()?;
        let mut x = BigNum::new()?;
        let mut y = BigNum::new()?;
        self.0
            .public_key()
            .affine_coordinates(group, &mut x, &mut y, &mut ctx)?;
        Ok((bn_to_le(&x, ECC_FIELD_LEN)?, bn_to_le(&y, ECC_FIELD_LEN)?))
    }

    /// Whether `sig` (r ‖ s, little-endian 72-byte fields) is this key's ECDSA signature of
    /// `body` under the digest of `key_algo`.
    pub fn verify(&self, key_algo: u32, body: &[u8], sig: &[u8; SIG_LEN]) -> bool {
        let Some(digest) = digest_for(key_algo, body) else {
            return false;
        };
        let parts = (
            bn_from_le(&sig[..ECC_FIELD_LEN]),
            bn_from_le(&sig[ECC_FIELD_LEN..2 * ECC_FIELD_LEN]),
        );
        let (Ok(r), Ok(s)) = parts else {
            return false;
        };
        match EcdsaSig::from_private_components(r, s) {
            Ok(sig) => sig.verify(&digest, &self.0).unwrap_or(false),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uapi::cert::usage;

    #[test]
    fn sign_then_verify_and_tamper() {
        let oca = EcKeyPair::generate().unwrap();
        let mut cert = oca
            .certificate((1, 55), usage::OCA, algo::ECDSA_SHA256)
            .unwrap();
        oca.sign_certificate(&mut cert, usage::OCA, algo::ECDSA_SHA256)
            .unwrap();
        let public = EcPublic::from_certificate(&cert).unwrap();
        assert!(public.verify(algo::ECDSA_SHA256, &cert.body(), &cert.sigs[0].sig));
        let mut body = cert.body();
        body[5] ^= 1;
        assert!(!public.verify(algo::ECDSA_SHA256, &body, &cert.sigs[0].sig));
    }

    #[test]
    fn seeded_keys_are_deterministic_and_ecdh_agrees() {
        let a = EcKeyPair::from_seed(&[1u8; 56]).unwrap();
        let a2 = EcKeyPair::from_seed(&[1u8; 56]).unwrap();
        assert_eq!(
            a.public().unwrap().coordinates_le().unwrap(),
            a2.public().unwrap().coordinates_le().unwrap()
        );
        let b = EcKeyPair::generate().unwrap();
        let z1 = a.ecdh(&b.public().unwrap()).unwrap();
        let z2 = b.ecdh(&a.public().unwrap()).unwrap();
        assert_eq!(z1.len(), 48);
        assert_eq!(*z1, *z2);
    }

    #[test]
    fn point_off_the_curve_is_rejected() {
        let key = EcKeyPair::generate().unwrap();
        let mut cert = key
            .certificate((0, 0), usage::PDH, algo::ECDH_SHA256)
            .unwrap();
        cert.pubkey[4] ^= 1;
        assert!(EcPublic::from_certificate(&cert).is_none());
        let der = key.to_der().unwrap();
        assert!(EcKeyPair::from_der(&der).is_ok());
    }
}
