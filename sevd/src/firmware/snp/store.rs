//! The SNP half of the firmware's flash: the committed TCB and version (anti-rollback) and
//! SNP_CONFIG's reported TCB and mask flags. Sealed as the SEV half is (`nv::seal`), under
//! its own key and magic.

use uapi::snp::{TcbLayout, TcbVersion};

use crate::crypto::CryptoError;
use crate::firmware::nv::{seal, unseal, NvError};
use crate::firmware::FirmwareVersion;

const MAGIC: &[u8; 8] = b"SEVDSNP1";
const BODY_LEN: usize = 8 + 3 + 1 + 8 + 1;

/// What SNP keeps across power cycles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpStore {
    /// The TCB at the last SNP_COMMIT (or the first SNP_INIT).
    pub committed_tcb: TcbVersion,
    /// The firmware version at the last SNP_COMMIT.
    pub committed_version: FirmwareVersion,
    /// SNP_CONFIG's reported TCB, until the next SNP_COMMIT.
    pub config_tcb: Option<TcbVersion>,
    /// SNP_CONFIG's MASK_CHIP_ID.
    pub mask_chip_id: bool,
    /// SNP_CONFIG's MASK_CHIP_KEY.
    pub mask_chip_key: bool,
}

impl SnpStore {
    /// A part's store before its first SNP_INIT: committed at what is installed.
    pub fn new(installed: TcbVersion, version: FirmwareVersion) -> Self {
        SnpStore {
            committed_tcb: installed,
            committed_version: version,
            config_tcb: None,
            mask_chip_id: false,
            mask_chip_key: false,
        }
    }

    /// SNP_CONFIG's TCB, else the committed one.
    pub fn reported_tcb(&self) -> TcbVersion {
        self.config_tcb.unwrap_or(self.committed_tcb)
    }

    /// committed TCB ‖ api major, minor, build ‖ has config ‖ config TCB ‖ mask bits, sealed.
    pub fn encode(&self, key: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut body = Vec::with_capacity(BODY_LEN);
        body.extend_from_slice(&self.committed_tcb.to_u64().to_le_bytes());
        let v = self.committed_version;
        body.extend_from_slice(&[v.api_major, v.api_minor, v.build]);
        body.push(self.config_tcb.is_some() as u8);
        body.extend_from_slice(&self.config_tcb.unwrap_or_default().to_u64().to_le_bytes());
        body.push(self.mask_chip_id as u8 | (self.mask_chip_key as u8) << 1);
        seal(key, MAGIC, &body)
    }

    /// Checks the seal and every field; its TCBs are laid out as the part's.
    pub fn decode(bytes: &[u8], key: &[u8], layout: TcbLayout) -> Result<Self, NvError> {
        let body = unseal(key, MAGIC, bytes)?;
        if body.len() != BODY_LEN {
            return Err(NvError::Corrupt("SNP store has the wrong length"));
        }
        let tcb = |at: usize| {
            let v = u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or_default());
            TcbVersion::from_u64(v, layout).ok_or(NvError::Corrupt("SNP store TCB"))
        };
        let config_tcb = match body[11] {
            0 => None,
            1 => Some(tcb(12)?),
            _ => return Err(NvError::Corrupt("SNP store flag")),
        };
        if body[20] & !3 != 0 {
            return Err(NvError::Corrupt("SNP store mask bits"));
        }
        Ok(SnpStore {
            committed_tcb: tcb(0)?,
            committed_version: FirmwareVersion {
                api_major: body[8],
                api_minor: body[9],
                build: body[10],
            },
            config_tcb,
            mask_chip_id: body[20] & 1 != 0,
            mask_chip_key: body[20] & 2 != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_round_trips_and_refuses_tampering() {
        let key = [7u8; 32];
        let store = SnpStore {
            committed_tcb: "3:0:8:115".parse().unwrap(),
            committed_version: FirmwareVersion::default(),
            config_tcb: Some("2:0:6:100".parse().unwrap()),
            mask_chip_id: true,
            mask_chip_key: false,
        };
        let bytes = store.encode(&key).unwrap();
        assert_eq!(
            SnpStore::decode(&bytes, &key, TcbLayout::Legacy).unwrap(),
            store
        );
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(SnpStore::decode(&bad, &key, TcbLayout::Legacy).is_err());
        assert!(SnpStore::decode(&bytes, &[8u8; 32], TcbLayout::Legacy).is_err());
        assert!(SnpStore::decode(&bytes[..10], &key, TcbLayout::Legacy).is_err());
    }
}
