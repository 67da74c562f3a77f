//! The non-volatile store: what the PSP keeps in flash across SHUTDOWN and power cycles
//! (OCA, PEK, PDH and the owner flag), sealed with a key derived from the chip's seed:
//! encrypted and authenticated (AES-256-GCM), so the private keys are never on disk in the
//! clear and any change is detected.
//!
//! Format 2: `SEVDNV02` ‖ nonce (12) ‖ AES-256-GCM(body) ‖ tag (16), with the magic as
//! associated data. Format 1 (`SEVDNV01` ‖ body ‖ HMAC-SHA256), which left the keys readable
//! to whoever could read the file, is still read, and replaced by format 2 at the next write.

use std::io;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use uapi::cert::{Certificate, CERT_LEN};

use crate::crypto::ecc::EcKeyPair;
use crate::crypto::{hmac_sha256, mac_eq, CryptoError};

/// Format 1: MACed only.
const MAGIC_V1: &[u8; 8] = b"SEVDNV01";
/// Format 2: encrypted and authenticated.
const MAGIC: &[u8; 8] = b"SEVDNV02";
const NONCE_LEN: usize = 12;

/// Where the firmware's flash lives. The firmware only calls these; the daemon's
/// implementation writes a file atomically, the tests' keeps a buffer.
pub trait NvStorage: Send {
    /// The stored bytes, `None` if nothing is stored.
    fn read(&self) -> io::Result<Option<Vec<u8>>>;
    /// Replaces the stored bytes, all or nothing.
    fn write(&mut self, data: &[u8]) -> io::Result<()>;
    /// Deletes the stored bytes.
    fn erase(&mut self) -> io::Result<()>;
    /// Moves corrupt bytes aside so they are kept for inspection but no longer loaded.
    fn quarantine(&mut self) -> io::Result<()>;
}

/// An in-memory store, for tests and embedded use without a state directory.
#[derive(Debug, Default, Clone)]
pub struct MemStorage {
    /// The stored bytes.
    pub data: Option<Vec<u8>>,
    /// The last bytes quarantined.
    pub quarantined: Option<Vec<u8>>,
}

impl NvStorage for MemStorage {
    fn read(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.data.clone())
    }
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.data = Some(data.to_vec());
        Ok(())
    }
    fn erase(&mut self) -> io::Result<()> {
        self.data = None;
        Ok(())
    }
    fn quarantine(&mut self) -> io::Result<()> {
        self.quarantined = self.data.take();
        Ok(())
    }
}

/// Who owns the platform (PLATFORM_STATUS owner bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The firmware made and holds the OCA.
    SelfOwned,
    /// An owner's OCA signed the PEK (PEK_CERT_IMPORT).
    External,
}

/// The persistent platform keys and certificates.
#[derive(Debug)]
pub struct PlatformKeys {
    /// Owner flag.
    pub owner: Owner,
    /// The OCA's private key, held only when self-owned.
    pub oca_key: Option<EcKeyPair>,
    /// OCA certificate.
    pub oca: Certificate,
    /// PEK private key.
    pub pek_key: EcKeyPair,
    /// PEK certificate (signed by the OCA and the CEK).
    pub pek: Certificate,
    /// PDH private key.
    pub pdh_key: EcKeyPair,
    /// PDH certificate (signed by the PEK).
    pub pdh: Certificate,
}

/// Why stored bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum NvError {
    /// Wrong magic, truncated, bad MAC or bad field: the firmware's SECURE_DATA_INVALID.
    #[error("non-volatile store is corrupt: {0}")]
    Corrupt(&'static str),
    /// The crypto library failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// `magic` ‖ nonce ‖ AES-256-GCM(`body`) ‖ tag, with the magic as associated data.
pub(crate) fn seal(key: &[u8], magic: &[u8; 8], body: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let nonce = crate::crypto::random_bytes::<NONCE_LEN>()?;
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| CryptoError::Seal)?;
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: body,
                aad: magic,
            },
        )
        .map_err(|_| CryptoError::Seal)?;
    let mut out = Vec::with_capacity(magic.len() + NONCE_LEN + sealed.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The body [`seal`] sealed under `key` with `magic`, or why not.
pub(crate) fn unseal(
    key: &[u8],
    magic: &[u8; 8],
    bytes: &[u8],
) -> Result<Zeroizing<Vec<u8>>, NvError> {
    if bytes.len() < magic.len() + NONCE_LEN + 16 || &bytes[..magic.len()] != magic {
        return Err(NvError::Corrupt("not a sevd store"));
    }
    let (nonce, sealed) = bytes[magic.len()..].split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| NvError::Corrupt("seal key"))?;
    let payload = Payload {
        msg: sealed,
        aad: magic,
    };
    cipher
        .decrypt(Nonce::from_slice(nonce), payload)
        .map(Zeroizing::new)
        .map_err(|_| NvError::Corrupt("integrity check failed"))
}

fn put_blob(out: &mut Vec<u8>, blob: &[u8]) {
    out.extend_from_slice(&(blob.len() as u32).to_le_bytes());
    out.extend_from_slice(blob);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], NvError> {
        if self.0.len() < n {
            return Err(NvError::Corrupt("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn blob(&mut self) -> Result<&'a [u8], NvError> {
        let len = self.take(4)?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        self.take(len)
    }
    fn cert(&mut self) -> Result<Certificate, NvError> {
        Certificate::decode(self.take(CERT_LEN)?).map_err(|_| NvError::Corrupt("certificate"))
    }
    fn key(&mut self) -> Result<EcKeyPair, NvError> {
        EcKeyPair::from_der(self.blob()?).map_err(|_| NvError::Corrupt("private key"))
    }
}

impl PlatformKeys {
    /// The keys and certificates, unsealed: owner ‖ keys and certificates.
    fn body(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut out = Zeroizing::new(Vec::new());
        out.push(match self.owner {
            Owner::SelfOwned => 0,
            Owner::External => 1,
        });
        match &self.oca_key {
            Some(key) => put_blob(&mut out, &key.to_der()?),
            None => put_blob(&mut out, &[]),
        }
        out.extend_from_slice(&self.oca.encode());
        put_blob(&mut out, &self.pek_key.to_der()?);
        out.extend_from_slice(&self.pek.encode());
        put_blob(&mut out, &self.pdh_key.to_der()?);
        out.extend_from_slice(&self.pdh.encode());
        Ok(out)
    }

    /// Serialises and seals under `seal_key` (32 bytes, from the chip): format 2.
    pub fn encode(&self, seal_key: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal(seal_key, MAGIC, &self.body()?)
    }

    /// Checks the seal and reads the keys back: format 2 under `seal_key`, or format 1 (as
    /// older sevd wrote it) under `v1_mac_key`.
    pub fn decode(bytes: &[u8], seal_key: &[u8], v1_mac_key: &[u8]) -> Result<Self, NvError> {
        let body = if bytes.starts_with(MAGIC_V1) {
            if bytes.len() < MAGIC_V1.len() + 32 {
                return Err(NvError::Corrupt("not a sevd store"));
            }
            let (body, mac) = bytes.split_at(bytes.len() - 32);
            if !mac_eq(&hmac_sha256(v1_mac_key, &[body])?, mac) {
                return Err(NvError::Corrupt("integrity check failed"));
            }
            Zeroizing::new(body[MAGIC_V1.len()..].to_vec())
        } else {
            unseal(seal_key, MAGIC, bytes)?
        };
        Self::parse(&body)
    }

    fn parse(body: &[u8]) -> Result<Self, NvError> {
        let mut r = Reader(body);
        let owner = match r.take(1)?[0] {
            0 => Owner::SelfOwned,
            1 => Owner::External,
            _ => return Err(NvError::Corrupt("owner flag")),
        };
        let oca_der = r.blob()?;
        let oca_key = if oca_der.is_empty() {
            None
        } else {
            Some(EcKeyPair::from_der(oca_der).map_err(|_| NvError::Corrupt("private key"))?)
        };
        let keys = PlatformKeys {
            owner,
            oca_key,
            oca: r.cert()?,
            pek_key: r.key()?,
            pek: r.cert()?,
            pdh_key: r.key()?,
            pdh: r.cert()?,
        };
        if !r.0.is_empty() {
            return Err(NvError::Corrupt("trailing bytes"));
        }
        if (owner == Owner::SelfOwned) != keys.oca_key.is_some() {
            return Err(NvError::Corrupt("owner flag disagrees with the OCA key"));
        }
        Ok(keys)
    }

    /// Format 1, for the test that older stores still load.
    #[cfg(test)]
    pub(crate) fn encode_v1(&self, mac_key: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = MAGIC_V1.to_vec();
        out.extend_from_slice(&self.body()?);
        let mac = hmac_sha256(mac_key, &[&out])?;
        out.extend_from_slice(&mac);
        Ok(out)
    }
}
