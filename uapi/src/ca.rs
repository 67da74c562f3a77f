//! AMD's root certificates, ARK and ASK (firmware-semantics.md §4.2).
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x00 | 4 | VERSION (1) |
//! | 0x04 | 16 | KEY_ID |
//! | 0x14 | 16 | CERTIFYING_ID |
//! | 0x24 | 4 | KEY_USAGE (0x00 ARK, 0x13 ASK) |
//! | 0x28 | 16 | reserved |
//! | 0x38 | 4 | PUBEXP_SIZE (bits) |
//! | 0x3C | 4 | MODULUS_SIZE (bits) |
//! | 0x40 | PUBEXP_SIZE/8 | PUBEXP (LE) |
//! | … | MODULUS_SIZE/8 | MODULUS (LE) |
//! | … | MODULUS_SIZE/8 | SIGNATURE (LE) |

use crate::DecodeError;

const HEADER_LEN: usize = 0x40;

/// An ARK or ASK certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct CaCertificate {
    /// VERSION, 1.
    pub version: u32,
    /// This key's id.
    pub key_id: [u8; 16],
    /// The signer's key id (its own for the ARK).
    pub certifying_id: [u8; 16],
    /// 0x00 ARK, 0x13 ASK.
    pub key_usage: u32,
    /// Reserved bytes, kept for round trips.
    pub reserved: [u8; 16],
    /// Public exponent, little-endian, `pubexp_bits / 8` bytes.
    pub pubexp: Vec<u8>,
    /// Modulus, little-endian, `modulus_bits / 8` bytes.
    pub modulus: Vec<u8>,
    /// RSASSA-PSS signature over [`CaCertificate::signed_part`], little-endian.
    pub signature: Vec<u8>,
}

impl std::fmt::Debug for CaCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaCertificate")
            .field("key_usage", &format_args!("{:#x}", self.key_usage))
            .field("modulus_bits", &self.modulus_bits())
            .finish_non_exhaustive()
    }
}

impl CaCertificate {
    /// Key size in bits.
    pub fn modulus_bits(&self) -> usize {
        self.modulus.len() * 8
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.pubexp.len() + self.modulus.len() + self.signature.len()
    }

    /// Decodes one certificate from the start of `bytes`; returns it and the rest.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
        let short = |expected| DecodeError::Length {
            what: "AMD CA certificate",
            expected,
            actual: bytes.len(),
        };
        if bytes.len() < HEADER_LEN {
            return Err(short(HEADER_LEN));
        }
        let u32_at = |off: usize| {
            u32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]])
        };
        let pubexp_bits = u32_at(0x38) as usize;
        let modulus_bits = u32_at(0x3C) as usize;
        for bits in [pubexp_bits, modulus_bits] {
            if bits != 2048 && bits != 4096 {
                return Err(DecodeError::Field {
                    what: "AMD CA certificate",
                    why: format!("key size {bits} bits is neither 2048 nor 4096"),
                });
            }
        }
        let (p, m) = (pubexp_bits / 8, modulus_bits / 8);
        let total = HEADER_LEN + p + 2 * m;
        if bytes.len() < total {
            return Err(short(total));
        }
        let arr16 = |off: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&bytes[off..off + 16]);
            a
        };
        let cert = CaCertificate {
            version: u32_at(0),
            key_id: arr16(0x04),
            certifying_id: arr16(0x14),
            key_usage: u32_at(0x24),
            reserved: arr16(0x28),
            pubexp: bytes[HEADER_LEN..HEADER_LEN + p].to_vec(),
            modulus: bytes[HEADER_LEN + p..HEADER_LEN + p + m].to_vec(),
            signature: bytes[HEADER_LEN + p + m..total].to_vec(),
        };
        Ok((cert, &bytes[total..]))
    }

    /// Decodes exactly one certificate.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (cert, rest) = Self::decode_prefix(bytes)?;
        if !rest.is_empty() {
            return Err(DecodeError::Length {
                what: "AMD CA certificate",
                expected: cert.encoded_len(),
                actual: bytes.len(),
            });
        }
        Ok(cert)
    }

    /// The signed part: header, PUBEXP and MODULUS.
    pub fn signed_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&self.certifying_id);
        out.extend_from_slice(&self.key_usage.to_le_bytes());
        out.extend_from_slice(&self.reserved);
        out.extend_from_slice(&((self.pubexp.len() * 8) as u32).to_le_bytes());
        out.extend_from_slice(&((self.modulus.len() * 8) as u32).to_le_bytes());
        out.extend_from_slice(&self.pubexp);
        out.extend_from_slice(&self.modulus);
        out
    }

    /// Encodes the certificate.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.signed_part();
        out.extend_from_slice(&self.signature);
        out
    }
}

/// Decodes an `ask_ark` file: ASK ‖ ARK.
pub fn decode_ask_ark(bytes: &[u8]) -> Result<(CaCertificate, CaCertificate), DecodeError> {
    let (ask, rest) = CaCertificate::decode_prefix(bytes)?;
    let ark = CaCertificate::decode(rest)?;
    Ok((ask, ark))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_truncation() {
        let mut b = vec![0u8; HEADER_LEN + 3 * 256];
        b[0..4].copy_from_slice(&1u32.to_le_bytes());
        b[0x04] = 0x11; // KEY_ID[0]
        b[0x14] = 0x22; // CERTIFYING_ID[0]
        b[0x24..0x28].copy_from_slice(&0x13u32.to_le_bytes()); // KEY_USAGE = ASK
        b[0x38..0x3C].copy_from_slice(&2048u32.to_le_bytes());
        b[0x3C..0x40].copy_from_slice(&2048u32.to_le_bytes());
        b[HEADER_LEN] = 0x01; // PUBEXP
        b[HEADER_LEN + 2] = 0x01; // 65537, little-endian
        b[HEADER_LEN + 256] = 0x33; // MODULUS[0]
        b[HEADER_LEN + 512] = 0x44; // SIGNATURE[0]
        let cert = CaCertificate::decode(&b).unwrap();
        assert_eq!(cert.key_usage, 0x13);
        assert_eq!(cert.modulus[0], 0x33);
        assert_eq!(cert.signature[0], 0x44);
        assert_eq!(cert.encode(), b);
        assert!(CaCertificate::decode(&b[..b.len() - 1]).is_err());
        let mut two = b.clone();
        two.extend_from_slice(&b);
        let (ask, ark) = decode_ask_ark(&two).unwrap();
        assert_eq!(ask, ark);
    }
}
