//! The SEV certificate: 0x824 bytes (firmware-semantics.md §4.1; SEV API "Certificates").
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x000 | 4 | VERSION (1) |
//! | 0x004 | 1 | API_MAJOR |
//! | 0x005 | 1 | API_MINOR |
//! | 0x006 | 2 | reserved |
//! | 0x008 | 4 | PUBKEY_USAGE |
//! | 0x00C | 4 | PUBKEY_ALGO |
//! | 0x010 | 0x404 | PUBKEY |
//! | 0x414 | 4 + 4 + 0x200 | SIG1 (usage, algo, signature) |
//! | 0x61C | 4 + 4 + 0x200 | SIG2 |
//!
//! Integers are little-endian, and so are the big numbers inside the key and signatures.

use crate::DecodeError;

/// Size of a SEV certificate.
pub const CERT_LEN: usize = 0x824;
/// The signed part: VERSION through PUBKEY.
pub const BODY_LEN: usize = 0x414;
/// Size of the public-key union.
pub const PUBKEY_LEN: usize = 0x404;
/// Size of a signature slot's signature.
pub const SIG_LEN: usize = 0x200;
/// Width of one EC coordinate or ECDSA component field.
pub const ECC_FIELD_LEN: usize = 72;

/// PUBKEY_USAGE and SIG_USAGE codes.
pub mod usage {
    /// AMD root key.
    pub const ARK: u32 = 0x0000;
    /// AMD SEV signing key.
    pub const ASK: u32 = 0x0013;
    /// Empty slot.
    pub const INVALID: u32 = 0x1000;
    /// Owner certificate authority.
    pub const OCA: u32 = 0x1001;
    /// Platform endorsement key.
    pub const PEK: u32 = 0x1002;
    /// Platform Diffie-Hellman key.
    pub const PDH: u32 = 0x1003;
    /// Chip endorsement key.
    pub const CEK: u32 = 0x1004;
}

/// PUBKEY_ALGO and SIG_ALGO codes.
pub mod algo {
    /// Empty slot.
    pub const INVALID: u32 = 0;
    /// RSA, SHA-256.
    pub const RSA_SHA256: u32 = 0x0001;
    /// ECDSA, SHA-256.
    pub const ECDSA_SHA256: u32 = 0x0002;
    /// ECDH, SHA-256.
    pub const ECDH_SHA256: u32 = 0x0003;
    /// RSA, SHA-384.
    pub const RSA_SHA384: u32 = 0x0101;
    /// ECDSA, SHA-384.
    pub const ECDSA_SHA384: u32 = 0x0102;
    /// ECDH, SHA-384.
    pub const ECDH_SHA384: u32 = 0x0103;
}

/// EC curve ids in the public key.
pub mod curve {
    /// NIST P-256.
    pub const P256: u32 = 1;
    /// NIST P-384, the only curve the firmware accepts.
    pub const P384: u32 = 2;
}

/// One signature slot.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    /// Signer's usage, or [`usage::INVALID`] for an empty slot.
    pub usage: u32,
    /// Signer's algorithm, or [`algo::INVALID`].
    pub algo: u32,
    /// The signature, little-endian: ECDSA r[72] ‖ s[72] ‖ zeros, or RSA S.
    pub sig: [u8; SIG_LEN],
}

impl Signature {
    /// An empty slot.
    pub fn empty() -> Self {
        Signature {
            usage: usage::INVALID,
            algo: algo::INVALID,
            sig: [0; SIG_LEN],
        }
    }

    /// Whether the slot is empty (either field says so).
    pub fn is_empty(&self) -> bool {
        self.usage == usage::INVALID || self.algo == algo::INVALID
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signature")
            .field("usage", &format_args!("{:#x}", self.usage))
            .field("algo", &format_args!("{:#x}", self.algo))
            .finish_non_exhaustive()
    }
}

/// A SEV certificate, field by field. Encoding a decoded certificate gives back its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    /// VERSION, 1.
    pub version: u32,
    /// API major version of the firmware that made it (0 for owner-made certificates).
    pub api_major: u8,
    /// API minor version.
    pub api_minor: u8,
    /// The reserved bytes at 0x006, kept for byte-exact round trips.
    pub reserved: u16,
    /// PUBKEY_USAGE.
    pub usage: u32,
    /// PUBKEY_ALGO.
    pub algo: u32,
    /// The public-key union, raw.
    pub pubkey: [u8; PUBKEY_LEN],
    /// SIG1 and SIG2.
    pub sigs: [Signature; 2],
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("version", &self.version)
            .field(
                "api",
                &format_args!("{}.{}", self.api_major, self.api_minor),
            )
            .field("usage", &format_args!("{:#x}", self.usage))
            .field("algo", &format_args!("{:#x}", self.algo))
            .field("sigs", &self.sigs)
            .finish_non_exhaustive()
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(w)
}

impl Certificate {
    /// A certificate with an EC public key and two empty signature slots.
    pub fn new_ecc(api: (u8, u8), usage: u32, algo: u32, qx: &[u8], qy: &[u8]) -> Self {
        let mut cert = Certificate {
            version: 1,
            api_major: api.0,
            api_minor: api.1,
            reserved: 0,
            usage,
            algo,
            pubkey: [0; PUBKEY_LEN],
            sigs: [Signature::empty(), Signature::empty()],
        };
        cert.set_ecc_pubkey(curve::P384, qx, qy);
        cert
    }

    /// Decodes exactly [`CERT_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != CERT_LEN {
            return Err(DecodeError::Length {
                what: "SEV certificate",
                expected: CERT_LEN,
                actual: bytes.len(),
            });
        }
        let sig_at = |off: usize| {
            let mut sig = [0u8; SIG_LEN];
            sig.copy_from_slice(&bytes[off + 8..off + 8 + SIG_LEN]);
            Signature {
                usage: u32_at(bytes, off),
                algo: u32_at(bytes, off + 4),
                sig,
            }
        };
        let mut pubkey = [0u8; PUBKEY_LEN];
        pubkey.copy_from_slice(&bytes[0x10..0x10 + PUBKEY_LEN]);
        Ok(Certificate {
            version: u32_at(bytes, 0),
            api_major: bytes[4],
            api_minor: bytes[5],
            reserved: u16::from_le_bytes([bytes[6], bytes[7]]),
            usage: u32_at(bytes, 8),
            algo: u32_at(bytes, 0xC),
            pubkey,
            sigs: [sig_at(0x414), sig_at(0x61C)],
        })
    }

    /// Encodes to [`CERT_LEN`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        for sig in &self.sigs {
            out.extend_from_slice(&sig.usage.to_le_bytes());
            out.extend_from_slice(&sig.algo.to_le_bytes());
            out.extend_from_slice(&sig.sig);
        }
        debug_assert_eq!(out.len(), CERT_LEN);
        out
    }

    /// The signed body: the first [`BODY_LEN`] bytes.
    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CERT_LEN);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.push(self.api_major);
        out.push(self.api_minor);
        out.extend_from_slice(&self.reserved.to_le_bytes());
        out.extend_from_slice(&self.usage.to_le_bytes());
        out.extend_from_slice(&self.algo.to_le_bytes());
        out.extend_from_slice(&self.pubkey);
        out
    }

    /// The EC key as (curve, qx, qy), little-endian 72-byte fields; `None` for RSA keys.
    pub fn ecc_pubkey(&self) -> Option<(u32, &[u8], &[u8])> {
        match self.algo {
            algo::ECDSA_SHA256 | algo::ECDSA_SHA384 | algo::ECDH_SHA256 | algo::ECDH_SHA384 => {
                Some((
                    u32_at(&self.pubkey, 0),
                    &self.pubkey[4..4 + ECC_FIELD_LEN],
                    &self.pubkey[4 + ECC_FIELD_LEN..4 + 2 * ECC_FIELD_LEN],
                ))
            }
            _ => None,
        }
    }

    /// Sets the EC key; `qx` and `qy` are little-endian, at most 72 bytes each.
    pub fn set_ecc_pubkey(&mut self, curve: u32, qx: &[u8], qy: &[u8]) {
        self.pubkey = [0; PUBKEY_LEN];
        self.pubkey[..4].copy_from_slice(&curve.to_le_bytes());
        self.pubkey[4..4 + qx.len()].copy_from_slice(qx);
        self.pubkey[4 + ECC_FIELD_LEN..4 + ECC_FIELD_LEN + qy.len()].copy_from_slice(qy);
    }

    /// The slot signed by a key of this usage and algorithm, if any.
    pub fn signature_by(&self, usage: u32, algo: u32) -> Option<&Signature> {
        self.sigs
            .iter()
            .find(|s| !s.is_empty() && s.usage == usage && s.algo == algo)
    }

    /// The first empty slot, if any.
    pub fn empty_slot(&mut self) -> Option<&mut Signature> {
        self.sigs.iter_mut().find(|s| s.is_empty())
    }
}

/// Splits a concatenation of SEV certificates (a chain file) into certificates.
pub fn decode_chain(bytes: &[u8], count: usize) -> Result<Vec<Certificate>, DecodeError> {
    if bytes.len() != count * CERT_LEN {
        return Err(DecodeError::Length {
            what: "SEV certificate chain",
            expected: count * CERT_LEN,
            actual: bytes.len(),
        });
    }
    bytes.chunks(CERT_LEN).map(Certificate::decode).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate with every field set to a distinct value, laid out by hand.
    fn fixture() -> Vec<u8> {
        let mut b = vec![0u8; CERT_LEN];
        b[0x000..0x004].copy_from_slice(&1u32.to_le_bytes()); // VERSION
        b[0x004] = 0; // API_MAJOR
        b[0x005] = 22; // API_MINOR
        b[0x008..0x00C].copy_from_slice(&0x1002u32.to_le_bytes()); // PUBKEY_USAGE = PEK
        b[0x00C..0x010].copy_from_slice(&0x2u32.to_le_bytes()); // PUBKEY_ALGO = ECDSA_SHA256
        b[0x010..0x014].copy_from_slice(&2u32.to_le_bytes()); // CURVE = P-384
        b[0x014] = 0xAA; // QX[0]
        b[0x05C] = 0xBB; // QY[0]
        b[0x414..0x418].copy_from_slice(&0x1001u32.to_le_bytes()); // SIG1_USAGE = OCA
        b[0x418..0x41C].copy_from_slice(&0x2u32.to_le_bytes()); // SIG1_ALGO
        b[0x41C] = 0xCC; // SIG1 r[0]
        b[0x61C..0x620].copy_from_slice(&0x1004u32.to_le_bytes()); // SIG2_USAGE = CEK
        b[0x620..0x624].copy_from_slice(&0x2u32.to_le_bytes()); // SIG2_ALGO
        b[0x624 + 72] = 0xDD; // SIG2 s[0]
        b
    }

    #[test]
    fn decodes_fields_at_their_offsets_and_round_trips() {
        let bytes = fixture();
        let cert = Certificate::decode(&bytes).unwrap();
        assert_eq!(cert.version, 1);
        assert_eq!((cert.api_major, cert.api_minor), (0, 22));
        assert_eq!(cert.usage, usage::PEK);
        let (curve, qx, qy) = cert.ecc_pubkey().unwrap();
        assert_eq!((curve, qx[0], qy[0]), (curve::P384, 0xAA, 0xBB));
        assert_eq!(cert.sigs[0].usage, usage::OCA);
        assert_eq!(cert.sigs[0].sig[0], 0xCC);
        assert_eq!(cert.sigs[1].usage, usage::CEK);
        assert_eq!(cert.sigs[1].sig[72], 0xDD);
        assert!(cert.signature_by(usage::CEK, algo::ECDSA_SHA256).is_some());
        assert_eq!(cert.encode(), bytes);
        assert_eq!(cert.body(), bytes[..BODY_LEN]);
    }

    #[test]
    fn rejects_wrong_lengths() {
        assert!(Certificate::decode(&[0u8; CERT_LEN - 1]).is_err());
        assert!(Certificate::decode(&[]).is_err());
        assert!(decode_chain(&[0u8; CERT_LEN * 3 - 1], 3).is_err());
        assert_eq!(decode_chain(&[0u8; CERT_LEN * 3], 3).unwrap().len(), 3);
    }
}
