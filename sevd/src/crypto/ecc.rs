//! P-384 keys in SEV's representation: OCA, PEK, CEK (ECDSA) and PDH, GODH (ECDH), on
//! RustCrypto's `p384`. SEV stores coordinates, signatures and scalars little-endian; the
//! crate speaks big-endian SEC 1, so every crossing reverses the bytes.

use p384::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::elliptic_curve::bigint::{Encoding, NonZero, U512};
use p384::elliptic_curve::sec1::{EncodedPoint, FromEncodedPoint, ToEncodedPoint};
use p384::elliptic_curve::Curve;
use p384::{NistP384, PublicKey, SecretKey};
use zeroize::Zeroizing;

use super::{sha256, CryptoError};
use crate::crypto::Digest;
use uapi::cert::{algo, curve, Certificate, ECC_FIELD_LEN, SIG_LEN};

/// Length of a P-384 point in SEC 1's uncompressed form.
pub const SEC1_LEN: usize = 97;

/// The digest a certificate's algorithm signs with.
fn digest_for(key_algo: u32, data: &[u8]) -> Option<Vec<u8>> {
    match key_algo {
        algo::ECDSA_SHA256 | algo::ECDH_SHA256 => Some(sha256(data).to_vec()),
        algo::ECDSA_SHA384 | algo::ECDH_SHA384 => Some(sha2::Sha384::digest(data).to_vec()),
        _ => None,
    }
}

/// AMD's public key format (SEV-SNP ABI, "ECC public key format"): 0x404 bytes.
pub const AMD_KEY_LEN: usize = 0x404;

/// Bytes of a P-384 coordinate or scalar (SEV's fields are 72 bytes, zero above these).
const P384_LEN: usize = 48;

/// Little-endian ↔ big-endian.
fn reversed(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().rev().copied().collect()
}

/// A big-endian P-384 value as one of SEV's 72-byte little-endian fields.
fn to_field(be: &[u8]) -> Vec<u8> {
    let mut le = reversed(be);
    le.resize(ECC_FIELD_LEN, 0);
    le
}

/// One of SEV's 72-byte little-endian fields as a big-endian P-384 value; `None` when it does
/// not fit in 48 bytes.
fn from_field(le: &[u8]) -> Option<Vec<u8>> {
    if le.len() != ECC_FIELD_LEN || le[P384_LEN..].iter().any(|&b| b != 0) {
        return None;
    }
    Some(reversed(&le[..P384_LEN]))
}

/// A P-384 private key (zeroized on drop by the crate).
pub struct EcKeyPair(SecretKey);

impl std::fmt::Debug for EcKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EcKeyPair(P-384, private)")
    }
}

impl EcKeyPair {
    /// A fresh key from the system's CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        // A uniformly random scalar: 64 random bytes reduced as `from_seed` does.
        let seed = Zeroizing::new(super::random_bytes::<64>()?);
        Self::from_seed(&*seed)
    }

    /// A key derived from `seed` (big-endian, up to 64 bytes) as the firmware derives the
    /// CEK: d = (seed mod (n − 1)) + 1, FIPS 186-4 B.4.1.
    pub fn from_seed(seed: &[u8]) -> Result<Self, CryptoError> {
        if seed.len() > 64 {
            return Err(CryptoError::Key("a seed of more than 64 bytes"));
        }
        let mut wide = Zeroizing::new([0u8; 64]);
        wide[64 - seed.len()..].copy_from_slice(seed);
        let seed = U512::from_be_slice(&*wide);
        let order = NistP384::ORDER;
        let mut n = [0u8; 64];
        n[16..].copy_from_slice(&order.to_be_bytes());
        let n1 = U512::from_be_slice(&n).wrapping_sub(&U512::ONE);
        let n1 = Option::<NonZero<U512>>::from(NonZero::new(n1))
            .ok_or(CryptoError::Key("the curve's order"))?;
        let d = seed.rem(&n1).wrapping_add(&U512::ONE);
        let d = Zeroizing::new(d.to_be_bytes());
        let key = SecretKey::from_slice(&d[16..]).map_err(|_| CryptoError::Key("a zero scalar"))?;
        Ok(EcKeyPair(key))
    }

    /// The key as SEC 1 DER (ECPrivateKey with the named curve and the public key), what
    /// `sevctl generate` writes. The curve's OID is included, as OpenSSL writes it and as
    /// OpenSSL-based readers (virtee's sevctl) need it.
    pub fn to_der(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        use p384::elliptic_curve::pkcs8::AssociatedOid;
        use sec1::der::Encode;
        let d = Zeroizing::new(self.0.to_bytes());
        let public = self.0.public_key().to_encoded_point(false);
        let key = sec1::EcPrivateKey {
            private_key: &d,
            parameters: Some(sec1::EcParameters::NamedCurve(NistP384::OID)),
            public_key: Some(public.as_bytes()),
        };
        key.to_der()
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Key("SEC 1 encoding"))
    }

    /// A key in PEM, PKCS #8 (`BEGIN PRIVATE KEY`, as `openssl genpkey` writes it) or SEC 1
    /// (`BEGIN EC PRIVATE KEY`); only P-384 is accepted.
    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        use p384::pkcs8::DecodePrivateKey;
        SecretKey::from_pkcs8_pem(pem)
            .or_else(|_| SecretKey::from_sec1_pem(pem))
            .map(EcKeyPair)
            .map_err(|_| CryptoError::Key("not a P-384 private key in PEM (PKCS #8 or SEC 1)"))
    }

    /// A key from SEC 1 DER; only P-384 is accepted.
    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        SecretKey::from_sec1_der(der)
            .map(EcKeyPair)
            .map_err(|_| CryptoError::Key("not a P-384 private key in SEC 1 DER"))
    }

    /// Its public half.
    pub fn public(&self) -> Result<EcPublic, CryptoError> {
        Ok(EcPublic(self.0.public_key()))
    }

    /// A certificate for this key (unsigned).
    pub fn certificate(
        &self,
        api: (u8, u8),
        usage: u32,
        key_algo: u32,
    ) -> Result<Certificate, CryptoError> {
        let (qx, qy) = self.public()?.coordinates_le()?;
        Ok(Certificate::new_ecc(api, usage, key_algo, &qx, &qy))
    }

    /// Signs `cert`'s body into its first free signature slot (r ‖ s, little-endian).
    pub fn sign_certificate(
        &self,
        cert: &mut Certificate,
        signer_usage: u32,
        signer_algo: u32,
    ) -> Result<(), CryptoError> {
        let slot = self.sign(signer_algo, &cert.body())?;
        // A certificate always has a free slot when the firmware signs it; if not, the
        // second slot is replaced, which is what re-signing means.
        let target = cert.sigs.iter().position(|s| s.is_empty()).unwrap_or(1);
        cert.sigs[target].usage = signer_usage;
        cert.sigs[target].algo = signer_algo;
        cert.sigs[target].sig = slot;
        Ok(())
    }

    /// ECDSA P-384 over `msg` with the hash `algo` names (ECDSA_SHA256 or _SHA384), as r ‖ s
    /// in 72-byte little-endian fields: an SEV signature slot (the ATTESTATION report's).
    pub fn sign(&self, algo: u32, msg: &[u8]) -> Result<[u8; SIG_LEN], CryptoError> {
        let digest = digest_for(algo, msg).ok_or(CryptoError::Key("not an ECDSA algorithm"))?;
        let sig: Signature = SigningKey::from(&self.0)
            .sign_prehash(&digest)
            .map_err(|_| CryptoError::Key("ECDSA signing"))?;
        let (r, s) = sig.split_bytes();
        let mut slot = [0u8; SIG_LEN];
        slot[..ECC_FIELD_LEN].copy_from_slice(&to_field(&r));
        slot[ECC_FIELD_LEN..2 * ECC_FIELD_LEN].copy_from_slice(&to_field(&s));
        Ok(slot)
    }

    /// ECDSA P-384 with SHA-384 over `msg`, as r ‖ s in 72-byte little-endian fields: the
    /// first 144 bytes of AMD's signature format (ID blocks, attestation reports).
    pub fn sign_sha384(&self, msg: &[u8]) -> Result<[u8; SIG_LEN], CryptoError> {
        self.sign(algo::ECDSA_SHA384, msg)
    }

    /// ECDH: the shared point's x-coordinate, 48 bytes big-endian (as OpenSSL derives it).
    pub fn ecdh(&self, peer: &EcPublic) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let shared = p384::ecdh::diffie_hellman(self.0.to_nonzero_scalar(), peer.0.as_affine());
        Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
    }
}

/// A P-384 public key.
#[derive(Clone)]
pub struct EcPublic(PublicKey);

impl std::fmt::Debug for EcPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EcPublic(P-384)")
    }
}

impl EcPublic {
    /// The key a certificate holds; `None` for another curve or a point off the curve.
    pub fn from_certificate(cert: &Certificate) -> Option<Self> {
        let (curve_id, qx, qy) = cert.ecc_pubkey()?;
        Self::from_le_point(curve_id, qx, qy)
    }

    /// The key in AMD's public key format (SEV-SNP ABI: curve u32, Qx and Qy as 72-byte
    /// little-endian fields), as ID blocks carry it; `None` for another curve or a point off
    /// the curve.
    pub fn from_amd_key(key: &[u8]) -> Option<Self> {
        let curve_id = u32::from_le_bytes(key.get(0..4)?.try_into().ok()?);
        let qx = key.get(4..4 + ECC_FIELD_LEN)?;
        let qy = key.get(4 + ECC_FIELD_LEN..4 + 2 * ECC_FIELD_LEN)?;
        Self::from_le_point(curve_id, qx, qy)
    }

    fn from_le_point(curve_id: u32, qx: &[u8], qy: &[u8]) -> Option<Self> {
        if curve_id != curve::P384 {
            return None;
        }
        let (x, y) = (from_field(qx)?, from_field(qy)?);
        let point = EncodedPoint::<NistP384>::from_affine_coordinates(
            x.as_slice().into(),
            y.as_slice().into(),
            false,
        );
        // Rejects points that are not on the curve.
        Option::from(PublicKey::from_encoded_point(&point)).map(EcPublic)
    }

    /// The key in AMD's public key format: curve 2 (P-384), Qx, Qy, zero to 0x404 bytes.
    pub fn amd_key(&self) -> Result<[u8; AMD_KEY_LEN], CryptoError> {
        let (x, y) = self.coordinates_le()?;
        let mut key = [0u8; AMD_KEY_LEN];
        key[..4].copy_from_slice(&curve::P384.to_le_bytes());
        key[4..4 + ECC_FIELD_LEN].copy_from_slice(&x);
        key[4 + ECC_FIELD_LEN..4 + 2 * ECC_FIELD_LEN].copy_from_slice(&y);
        Ok(key)
    }

    /// A P-384 key from X.509's SubjectPublicKeyInfo (DER); `None` for anything else.
    pub fn from_spki_der(der: &[u8]) -> Option<Self> {
        use p384::pkcs8::DecodePublicKey;
        PublicKey::from_public_key_der(der).ok().map(EcPublic)
    }

    /// The key as X.509's SubjectPublicKeyInfo (DER).
    pub fn to_spki_der(&self) -> Result<Vec<u8>, CryptoError> {
        use p384::pkcs8::EncodePublicKey;
        self.0
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|_| CryptoError::Key("SubjectPublicKeyInfo encoding"))
    }

    /// The key as SEC 1's uncompressed point (`04 ‖ x ‖ y`, 97 bytes).
    pub fn to_sec1(&self) -> [u8; SEC1_LEN] {
        let mut out = [0u8; SEC1_LEN];
        out.copy_from_slice(self.0.to_encoded_point(false).as_bytes());
        out
    }

    /// A key from SEC 1's uncompressed point; `None` for a point off the curve.
    pub fn from_sec1(bytes: &[u8]) -> Option<Self> {
        (bytes.len() == SEC1_LEN)
            .then(|| PublicKey::from_sec1_bytes(bytes).ok().map(EcPublic))
            .flatten()
    }

    /// (x, y) as SEV stores them: 72-byte little-endian fields.
    pub fn coordinates_le(&self) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        let point = self.0.to_encoded_point(false);
        match (point.x(), point.y()) {
            (Some(x), Some(y)) => Ok((to_field(x), to_field(y))),
            _ => Err(CryptoError::Key("the point at infinity")),
        }
    }

    /// Whether `sig` (r ‖ s, little-endian) signs `body` under `key_algo`.
    pub fn verify(&self, key_algo: u32, body: &[u8], sig: &[u8; SIG_LEN]) -> bool {
        let Some(digest) = digest_for(key_algo, body) else {
            return false;
        };
        let (Some(r), Some(s)) = (
            from_field(&sig[..ECC_FIELD_LEN]),
            from_field(&sig[ECC_FIELD_LEN..2 * ECC_FIELD_LEN]),
        ) else {
            return false;
        };
        let Ok(sig) = Signature::from_scalars(
            *p384::FieldBytes::from_slice(&r),
            *p384::FieldBytes::from_slice(&s),
        ) else {
            return false;
        };
        VerifyingKey::from(&self.0)
            .verify_prehash(&digest, &sig)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uapi::cert::usage;

    #[test]
    fn amd_format_keys_and_signatures_round_trip() {
        let key = EcKeyPair::generate().unwrap();
        let public = EcPublic::from_amd_key(&key.public().unwrap().amd_key().unwrap()).unwrap();
        let sig = key.sign_sha384(b"id block").unwrap();
        assert!(public.verify(algo::ECDSA_SHA384, b"id block", &sig));
        assert!(!public.verify(algo::ECDSA_SHA384, b"id blocK", &sig));
        let mut wrong_curve = key.public().unwrap().amd_key().unwrap();
        wrong_curve[0] = 1;
        assert!(EcPublic::from_amd_key(&wrong_curve).is_none());
    }

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

    /// The same key in OpenSSL.
    fn openssl_key(key: &EcKeyPair) -> openssl::ec::EcKey<openssl::pkey::Private> {
        openssl::ec::EcKey::private_key_from_der(&key.to_der().unwrap()).unwrap()
    }

    #[test]
    fn seeded_keys_match_the_openssl_derivation() {
        use openssl::bn::{BigNum, BigNumContext};
        let seed: Vec<u8> = (0..56u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(200))
            .collect();
        let ours = EcKeyPair::from_seed(&seed).unwrap();
        let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP384R1).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let mut n = BigNum::new().unwrap();
        group.order(&mut n, &mut ctx).unwrap();
        let mut n1 = BigNum::new().unwrap();
        n1.checked_sub(&n, &BigNum::from_u32(1).unwrap()).unwrap();
        let mut d = BigNum::new().unwrap();
        d.nnmod(&BigNum::from_slice(&seed).unwrap(), &n1, &mut ctx)
            .unwrap();
        d.add_word(1).unwrap();
        assert_eq!(
            openssl_key(&ours).private_key().to_vec(),
            d.to_vec(),
            "d = (seed mod (n - 1)) + 1"
        );
    }

    #[test]
    fn signatures_and_ecdh_agree_with_openssl_both_ways() {
        use openssl::bn::BigNum;
        use openssl::ecdsa::EcdsaSig;
        let key = EcKeyPair::generate().unwrap();
        let ossl = openssl_key(&key);
        let mut cert = key
            .certificate((1, 55), usage::PEK, algo::ECDSA_SHA256)
            .unwrap();
        for alg in [algo::ECDSA_SHA256, algo::ECDSA_SHA384] {
            cert.sigs = [
                uapi::cert::Signature::empty(),
                uapi::cert::Signature::empty(),
            ];
            key.sign_certificate(&mut cert, usage::OCA, alg).unwrap();
            let sig = &cert.sigs[0].sig;
            let le = |b: &[u8]| BigNum::from_slice(&reversed(&b[..P384_LEN])).unwrap();
            let theirs = EcdsaSig::from_private_components(
                le(&sig[..ECC_FIELD_LEN]),
                le(&sig[ECC_FIELD_LEN..2 * ECC_FIELD_LEN]),
            )
            .unwrap();
            let digest = digest_for(alg, &cert.body()).unwrap();
            assert!(
                theirs.verify(&digest, &ossl).unwrap(),
                "OpenSSL verifies ours"
            );
            // And ours verifies OpenSSL's.
            let made = EcdsaSig::sign(&digest, &ossl).unwrap();
            let mut slot = [0u8; SIG_LEN];
            slot[..ECC_FIELD_LEN].copy_from_slice(&to_field(&made.r().to_vec_padded(48).unwrap()));
            slot[ECC_FIELD_LEN..2 * ECC_FIELD_LEN]
                .copy_from_slice(&to_field(&made.s().to_vec_padded(48).unwrap()));
            assert!(key.public().unwrap().verify(alg, &cert.body(), &slot));
        }
        let peer = EcKeyPair::generate().unwrap();
        let ours = key.ecdh(&peer.public().unwrap()).unwrap();
        let a = openssl::pkey::PKey::from_ec_key(ossl).unwrap();
        let b = openssl::pkey::PKey::from_ec_key(openssl_key(&peer)).unwrap();
        let mut deriver = openssl::derive::Deriver::new(&a).unwrap();
        deriver.set_peer(&b).unwrap();
        assert_eq!(*ours, deriver.derive_to_vec().unwrap());
    }

    #[test]
    fn malformed_signatures_and_keys_are_refused_without_panic() {
        let key = EcKeyPair::generate().unwrap();
        let mut cert = key
            .certificate((1, 55), usage::OCA, algo::ECDSA_SHA256)
            .unwrap();
        key.sign_certificate(&mut cert, usage::OCA, algo::ECDSA_SHA256)
            .unwrap();
        let public = key.public().unwrap();
        let mut bad = cert.sigs[0].sig;
        bad[60] = 1; // r above 384 bits
        assert!(!public.verify(algo::ECDSA_SHA256, &cert.body(), &bad));
        assert!(!public.verify(algo::ECDSA_SHA256, &cert.body(), &[0u8; SIG_LEN]));
        assert!(!public.verify(algo::ECDSA_SHA256, &cert.body(), &[0xffu8; SIG_LEN]));
        assert!(!public.verify(0x9999, &cert.body(), &cert.sigs[0].sig));
        assert!(EcKeyPair::from_der(b"not DER").is_err());
        assert!(EcKeyPair::from_der(&[]).is_err());
        let mut wide = cert.clone();
        wide.pubkey[4 + 60] = 1; // x above 384 bits
        assert!(EcPublic::from_certificate(&wide).is_none());
    }
}
