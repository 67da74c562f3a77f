//! The launch-time wire formats: the session buffer given to LAUNCH_START, the LAUNCH_SECRET
//! packet header, and the LAUNCH_MEASURE output (firmware-semantics.md §5.4, §7.2, §8.1).

use crate::DecodeError;

/// Size of the session buffer.
pub const SESSION_LEN: usize = 0x80;
/// Size of the LAUNCH_SECRET packet header.
pub const SECRET_HEADER_LEN: usize = 52;
/// Size of the LAUNCH_MEASURE output.
pub const MEASUREMENT_LEN: usize = 48;
/// Size of the ATTESTATION report.
pub const ATTESTATION_REPORT_LEN: usize = 208;
/// The report's bytes the signature covers: MNONCE ‖ LAUNCH_DIGEST ‖ POLICY.
pub const ATTESTATION_SIGNED_LEN: usize = 52;

fn exact<const N: usize>(what: &'static str, bytes: &[u8]) -> Result<[u8; N], DecodeError> {
    bytes.try_into().map_err(|_| DecodeError::Length {
        what,
        expected: N,
        actual: bytes.len(),
    })
}

fn take<const N: usize>(bytes: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&bytes[off..off + N]);
    a
}

/// The 128-byte session buffer: NONCE ‖ WRAP_TK ‖ WRAP_IV ‖ WRAP_MAC ‖ POLICY_MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// KDF context for the master secret.
    pub nonce: [u8; 16],
    /// TEK ‖ TIK under AES-128-CTR(KEK, WRAP_IV).
    pub wrap_tk: [u8; 32],
    /// Initial counter block.
    pub wrap_iv: [u8; 16],
    /// HMAC-SHA256(KIK, WRAP_TK).
    pub wrap_mac: [u8; 32],
    /// HMAC-SHA256(TIK, policy).
    pub policy_mac: [u8; 32],
}

impl Session {
    /// Decodes exactly 128 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let b: [u8; SESSION_LEN] = exact("session buffer", bytes)?;
        Ok(Session {
            nonce: take(&b, 0x00),
            wrap_tk: take(&b, 0x10),
            wrap_iv: take(&b, 0x30),
            wrap_mac: take(&b, 0x40),
            policy_mac: take(&b, 0x60),
        })
    }

    /// Encodes to 128 bytes.
    pub fn encode(&self) -> [u8; SESSION_LEN] {
        let mut b = [0u8; SESSION_LEN];
        b[0x00..0x10].copy_from_slice(&self.nonce);
        b[0x10..0x30].copy_from_slice(&self.wrap_tk);
        b[0x30..0x40].copy_from_slice(&self.wrap_iv);
        b[0x40..0x60].copy_from_slice(&self.wrap_mac);
        b[0x60..0x80].copy_from_slice(&self.policy_mac);
        b
    }
}

/// LAUNCH_SECRET packet header: FLAGS ‖ IV ‖ MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHeader {
    /// Bit 0 COMPRESSED.
    pub flags: u32,
    /// AES-128-CTR initial counter block.
    pub iv: [u8; 16],
    /// HMAC-SHA256 under TIK.
    pub mac: [u8; 32],
}

impl SecretHeader {
    /// Decodes exactly 52 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let b: [u8; SECRET_HEADER_LEN] = exact("LAUNCH_SECRET header", bytes)?;
        Ok(SecretHeader {
            flags: u32::from_le_bytes(take(&b, 0)),
            iv: take(&b, 4),
            mac: take(&b, 20),
        })
    }

    /// Encodes to 52 bytes.
    pub fn encode(&self) -> [u8; SECRET_HEADER_LEN] {
        let mut b = [0u8; SECRET_HEADER_LEN];
        b[0..4].copy_from_slice(&self.flags.to_le_bytes());
        b[4..20].copy_from_slice(&self.iv);
        b[20..52].copy_from_slice(&self.mac);
        b
    }
}

/// LAUNCH_MEASURE output: MEASURE ‖ MNONCE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// HMAC-SHA256(TIK, 0x04 ‖ API ‖ BUILD ‖ POLICY ‖ DIGEST ‖ MNONCE).
    pub measure: [u8; 32],
    /// The firmware's nonce.
    pub mnonce: [u8; 16],
}

impl Measurement {
    /// Decodes exactly 48 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let b: [u8; MEASUREMENT_LEN] = exact("launch measurement", bytes)?;
        Ok(Measurement {
            measure: take(&b, 0),
            mnonce: take(&b, 32),
        })
    }

    /// Encodes to 48 bytes.
    pub fn encode(&self) -> [u8; MEASUREMENT_LEN] {
        let mut b = [0u8; MEASUREMENT_LEN];
        b[..32].copy_from_slice(&self.measure);
        b[32..].copy_from_slice(&self.mnonce);
        b
    }
}

/// The ATTESTATION report of a running guest (firmware-semantics.md §7.4; virtee's
/// `LegacyAttestationReport`): MNONCE ‖ LAUNCH_DIGEST ‖ POLICY ‖ SIG_USAGE ‖ SIG_ALGO ‖
/// reserved ‖ SIG, the signature ECDSA P-384 over SHA-256 of the first 52 bytes, as r ‖ s in
/// 72-byte little-endian fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationReport {
    /// The caller's nonce.
    pub mnonce: [u8; 16],
    /// The guest's launch digest (zero for a guest received by migration).
    pub launch_digest: [u8; 32],
    /// The guest's policy.
    pub policy: u32,
    /// The signing key's usage (the PEK's, 0x1002).
    pub sig_usage: u32,
    /// The signature algorithm (ECDSA with SHA-256, 2).
    pub sig_algo: u32,
    /// Reserved.
    pub reserved: u32,
    /// r ‖ s.
    pub sig: [u8; 144],
}

impl AttestationReport {
    /// Decodes exactly 208 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let b: [u8; ATTESTATION_REPORT_LEN] = exact("attestation report", bytes)?;
        let word = |off| u32::from_le_bytes(take(&b, off));
        Ok(AttestationReport {
            mnonce: take(&b, 0x00),
            launch_digest: take(&b, 0x10),
            policy: word(0x30),
            sig_usage: word(0x34),
            sig_algo: word(0x38),
            reserved: word(0x3c),
            sig: take(&b, 0x40),
        })
    }

    /// Encodes to 208 bytes.
    pub fn encode(&self) -> [u8; ATTESTATION_REPORT_LEN] {
        let mut b = [0u8; ATTESTATION_REPORT_LEN];
        b[..ATTESTATION_SIGNED_LEN].copy_from_slice(&self.signed_bytes());
        b[0x34..0x38].copy_from_slice(&self.sig_usage.to_le_bytes());
        b[0x38..0x3c].copy_from_slice(&self.sig_algo.to_le_bytes());
        b[0x3c..0x40].copy_from_slice(&self.reserved.to_le_bytes());
        b[0x40..].copy_from_slice(&self.sig);
        b
    }

    /// What the signature covers.
    pub fn signed_bytes(&self) -> [u8; ATTESTATION_SIGNED_LEN] {
        let mut b = [0u8; ATTESTATION_SIGNED_LEN];
        b[..0x10].copy_from_slice(&self.mnonce);
        b[0x10..0x30].copy_from_slice(&self.launch_digest);
        b[0x30..].copy_from_slice(&self.policy.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_fields_sit_at_spec_offsets() {
        let bytes: Vec<u8> = (0..SESSION_LEN as u8).collect();
        let s = Session::decode(&bytes).unwrap();
        assert_eq!(s.nonce[0], 0x00);
        assert_eq!(s.wrap_tk[0], 0x10);
        assert_eq!(s.wrap_iv[0], 0x30);
        assert_eq!(s.wrap_mac[0], 0x40);
        assert_eq!(s.policy_mac[0], 0x60);
        assert_eq!(s.encode().as_slice(), bytes.as_slice());
        assert!(Session::decode(&bytes[1..]).is_err());
    }

    #[test]
    fn secret_header_and_measurement_round_trip() {
        let bytes: Vec<u8> = (0..SECRET_HEADER_LEN as u8).collect();
        let h = SecretHeader::decode(&bytes).unwrap();
        assert_eq!(h.flags, 0x0302_0100);
        assert_eq!(h.iv[0], 4);
        assert_eq!(h.mac[0], 20);
        assert_eq!(h.encode().as_slice(), bytes.as_slice());
        let bytes: Vec<u8> = (0..MEASUREMENT_LEN as u8).collect();
        let m = Measurement::decode(&bytes).unwrap();
        assert_eq!(m.mnonce[0], 32);
        assert_eq!(m.encode().as_slice(), bytes.as_slice());
    }

    #[test]
    fn attestation_report_fields_sit_at_virtees_offsets() {
        let bytes: Vec<u8> = (0..ATTESTATION_REPORT_LEN).map(|i| i as u8).collect();
        let r = AttestationReport::decode(&bytes).unwrap();
        assert_eq!((r.mnonce[0], r.launch_digest[0]), (0x00, 0x10));
        assert_eq!(r.policy, u32::from_le_bytes([0x30, 0x31, 0x32, 0x33]));
        assert_eq!(r.sig_usage, u32::from_le_bytes([0x34, 0x35, 0x36, 0x37]));
        assert_eq!(r.sig[0], 0x40);
        assert_eq!(r.encode().as_slice(), bytes.as_slice());
        assert_eq!(r.signed_bytes(), bytes[..52]);
        assert!(AttestationReport::decode(&bytes[..207]).is_err());
    }
}
