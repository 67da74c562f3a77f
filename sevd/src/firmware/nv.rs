//! The non-volatile store: what the PSP keeps in flash across SHUTDOWN and power cycles
//! (OCA, PEK, PDH and the owner flag), sealed with a chip key so corruption is detected.

use std::io;

use zeroize::Zeroizing;

use uapi::cert::{Certificate, CERT_LEN};

use crate::crypto::ecc::EcKeyPair;
use crate::crypto::{hmac_sha256, mac_eq, CryptoError};

const MAGIC: &[u8; 8] = b"SEVDNV01";

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
    /// Serialises and seals with `mac_key`: magic ‖ owner ‖ keys and certificates ‖ HMAC.
    pub fn encode(&self, mac_key: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut out = Zeroizing::new(Vec::new());
        out.extend_from_slice(MAGIC);
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
        let mac = hmac_sha256(mac_key, &[&out])?;
        out.extend_from_slice(&mac);
        Ok(out)
    }

    /// Checks the seal and reads the keys back.
    pub fn decode(bytes: &[u8], mac_key: &[u8]) -> Result<Self, NvError> {
        if bytes.len() < MAGIC.len() + 32 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(NvError::Corrupt("not a sevd store"));
        }
        let (body, mac) = bytes.split_at(bytes.len() - 32);
        if !mac_eq(&hmac_sha256(mac_key, &[body])?, mac) {
            return Err(NvError::Corrupt("integrity check failed"));
        }
        let mut r = Reader(&body[MAGIC.len()..]);
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
}
