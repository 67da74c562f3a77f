//! SEV-SNP's platform half (snp.md §2, §4.1, §4.5; ASPFW `snp_mcmd_init_common`,
//! `snp_mcmd_platform_status`, `snp_mcmd_config`, `snp_mcmd_commit`, `snp_mcmd_vlek_load`).
//!
//! The TCB model: the chip's installed SPLs are the *current* TCB. The *committed* TCB and
//! version live in the SNP store and move only at SNP_COMMIT (anti-rollback: SNP_INIT
//! refuses a part whose installed SPLs are below them). The *reported* TCB is SNP_CONFIG's
//! value, or the committed TCB when SNP_CONFIG set none.

mod cpuid;
mod derived_key;
mod guest;
mod report;
mod request;
mod store;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use uapi::psp_sev::SevUserDataSnpStatus;
use uapi::snp::TcbVersion;
use uapi::Status;

use super::nv::{MemStorage, NvStorage};
use super::{internal, Firmware, FwResult, PlatformState};
pub use cpuid::{check_cpuid_page, C_BIT_POSITION};
pub use guest::{IdentityBinding, SnpGuestState, SnpGuestStatus, SnpLaunchFinish, GCTX_BASE};
pub use store::SnpStore;

/// The SNP platform's states (ASPFW `SNP_STATE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SnpState {
    /// SNP not initialised.
    Uninit = 0,
    /// Initialised: the RMP is set up and SNP guests may be launched.
    Init = 1,
}

/// SNP_PLATFORM_STATUS's feature bits (offset 8).
pub mod status_bits {
    /// MASK_CHIP_ID is set: reports carry a zero CHIP_ID.
    pub const MASK_CHIP_ID: u32 = 1 << 0;
    /// MASK_CHIP_KEY is set: reports are not signed with the VCEK.
    pub const MASK_CHIP_KEY: u32 = 1 << 1;
    /// A VLEK is loaded.
    pub const VLEK_EN: u32 = 1 << 2;
    /// SNP_FEATURE_INFO is supported.
    pub const FEATURE_INFO: u32 = 1 << 3;
}

/// SNP_PLATFORM_STATUS's `is_rmp_initialized` bits (offset 3).
pub mod rmp_init_bits {
    /// The RMP is initialised.
    pub const RMP_INITIALIZED: u8 = 1 << 0;
    /// Alias detection completed since the last reset, with no aliasing addresses.
    pub const ALIAS_CHECK_COMPLETE: u8 = 1 << 1;
}

/// SNP_CONFIG's mask bits (`sev_user_data_snp_config` offset 8).
const CONFIG_MASK_CHIP_ID: u32 = 1 << 0;
const CONFIG_MASK_CHIP_KEY: u32 = 1 << 1;

/// SNP_COMMIT's buffer: `{u32 length}`, which must be 4.
pub const COMMIT_LEN: u32 = 4;

/// The wrapped VLEK (`vlek_wrapped_t`, 432 bytes): IV, reserved, the wrapped seed, the TCB
/// it is for, reserved, the GCM tag.
pub mod hashstick {
    /// Its size.
    pub const LEN: usize = 432;
    /// AES-GCM IV.
    pub const IV: std::ops::Range<usize> = 0x00..0x0c;
    /// Must be zero.
    pub const RESERVED1: std::ops::Range<usize> = 0x0c..0x10;
    /// The wrapped VLEK seed.
    pub const WRAPPED: std::ops::Range<usize> = 0x10..0x190;
    /// The TCB the VLEK is for, with the reserved bytes after it: the associated data.
    pub const AAD: std::ops::Range<usize> = 0x190..0x1a0;
    /// Must be zero.
    pub const RESERVED2: std::ops::Range<usize> = 0x198..0x1a0;
    /// GCM tag.
    pub const TAG: std::ops::Range<usize> = 0x1a0..0x1b0;
}

/// SNP's part of the firmware.
pub(crate) struct SnpPlatform {
    /// Whether the host enabled SNP (SYSCFG.SNP_EN and the RMP set up by the BIOS).
    pub(crate) enabled: bool,
    state: SnpState,
    store: SnpStore,
    nv: Box<dyn NvStorage>,
    vlek: Option<Zeroizing<Vec<u8>>>,
    /// The VCEK at the TCB it was last derived for: deriving walks the hash sticks (hundreds
    /// of SHA-384s), which the firmware does once per reported TCB, not per report.
    vcek: std::sync::Mutex<Option<(TcbVersion, crate::crypto::ecc::EcKeyPair)>>,
    guests: std::collections::BTreeMap<u32, guest::SnpGuest>,
}

impl SnpPlatform {
    /// SNP off, with an in-memory store.
    pub(crate) fn disabled(installed: TcbVersion, version: super::FirmwareVersion) -> Self {
        SnpPlatform {
            enabled: false,
            state: SnpState::Uninit,
            store: SnpStore::new(installed, version),
            nv: Box::new(MemStorage::default()),
            vlek: None,
            vcek: Default::default(),
            guests: Default::default(),
        }
    }
}

impl Firmware {
    /// Enables SNP (the host's SYSCFG.SNP_EN) with its store in `nv`. A store that fails its
    /// seal is set aside and replaced by one committed at the installed TCB.
    pub fn with_snp(mut self, nv: Box<dyn NvStorage>) -> Self {
        let installed = self.chip.tcb;
        let version = self.config.version;
        let store = match nv.read() {
            Ok(Some(bytes)) => {
                match self
                    .chip
                    .snp_nv_seal_key()
                    .map_err(|e| e.to_string())
                    .and_then(|key| {
                        SnpStore::decode(&bytes, &key, self.chip.product.tcb_layout())
                            .map_err(|e| e.to_string())
                    }) {
                    Ok(store) => Some(store),
                    Err(why) => {
                        log::error!("firmware: the SNP store is unusable ({why}); it is set aside and SNP starts committed at the installed TCB");
                        None
                    }
                }
            }
            Ok(None) => None,
            Err(e) => {
                log::error!("firmware: reading the SNP store: {e}");
                None
            }
        };
        let mut nv = nv;
        if store.is_none() && matches!(nv.read(), Ok(Some(_))) {
            if let Err(e) = nv.quarantine() {
                log::error!("firmware: setting the SNP store aside: {e}");
            }
        }
        self.snp = SnpPlatform {
            enabled: true,
            state: SnpState::Uninit,
            store: store.unwrap_or_else(|| SnpStore::new(installed, version)),
            nv,
            vlek: None,
            vcek: Default::default(),
            guests: Default::default(),
        };
        self
    }

    /// Whether the host enabled SNP.
    pub fn snp_enabled(&self) -> bool {
        self.snp.enabled
    }

    /// The SNP platform state.
    pub fn snp_state(&self) -> SnpState {
        self.snp.state
    }

    /// `is_rmp_initialized`: the RMP is up, and (on firmware with the CVE-2024-21944
    /// mitigation) alias detection completed with it. The emulated part's memory has no
    /// aliases, so the check passes wherever the firmware has it.
    fn rmp_init_bits(&self) -> u8 {
        if self.snp.state != SnpState::Init {
            return 0;
        }
        let v = self.config.version;
        if (v.api_major, v.api_minor, v.build) >= self.chip.product.alias_check_firmware() {
            rmp_init_bits::RMP_INITIALIZED | rmp_init_bits::ALIAS_CHECK_COMPLETE
        } else {
            rmp_init_bits::RMP_INITIALIZED
        }
    }

    /// Whether reports say PLATFORM_INFO.ALIAS_CHECK_COMPLETE.
    pub(crate) fn alias_check_complete(&self) -> bool {
        self.rmp_init_bits() & rmp_init_bits::ALIAS_CHECK_COMPLETE != 0
    }

    /// The current TCB: the SPLs installed on the part.
    pub fn current_tcb(&self) -> TcbVersion {
        self.chip.tcb
    }

    /// The TCB reports claim: SNP_CONFIG's, else the committed one (`get_reported_tcb`).
    pub fn reported_tcb(&self) -> TcbVersion {
        self.snp.store.reported_tcb()
    }

    fn persist_snp(&mut self, store: &SnpStore) -> FwResult<()> {
        let key = self
            .chip
            .snp_nv_seal_key()
            .map_err(|e| internal("SNP store key", e))?;
        let bytes = store
            .encode(&key)
            .map_err(|e| internal("SNP store encode", e))?;
        self.snp
            .nv
            .write(&bytes)
            .map_err(|e| internal("writing the SNP store", e))
    }

    /// SNP_INIT / SNP_INIT_EX: SNP UNINIT → INIT, with SEV itself still UNINIT (SNP must
    /// come first). The first SNP_INIT commits the installed TCB; a part whose installed
    /// SPLs are below the committed ones is refused (BAD_SVN).
    pub fn snp_init(&mut self) -> FwResult<()> {
        if !self.snp.enabled {
            return Err(Status::InvalidConfig);
        }
        if self.snp.state != SnpState::Uninit || self.state != PlatformState::Uninit {
            return Err(Status::InvalidPlatformState);
        }
        let committed = self.snp.store.committed_tcb;
        if committed.exceeds(self.chip.tcb) {
            log::error!(
                "firmware: SNP_INIT: the installed TCB {} is below the committed TCB {committed}",
                self.chip.tcb
            );
            return Err(Status::BadSvn);
        }
        if !matches!(self.snp.nv.read(), Ok(Some(_))) {
            let store = self.snp.store.clone();
            self.persist_snp(&store)?;
        }
        self.dirty_all_asids();
        self.snp.state = SnpState::Init;
        Ok(())
    }

    /// SNP_SHUTDOWN: SNP INIT → UNINIT, with SEV shut down first. Forgets the VLEK.
    pub fn snp_shutdown(&mut self) -> FwResult<()> {
        if self.state != PlatformState::Uninit {
            return Err(Status::InvalidPlatformState);
        }
        self.snp.vlek = None;
        for (_, guest) in std::mem::take(&mut self.snp.guests) {
            if let Some(asid) = guest.asid {
                self.memctl.clear(asid);
                self.asids[asid as usize] = super::AsidState::Dirty;
            }
        }
        self.snp.state = SnpState::Uninit;
        Ok(())
    }

    /// SNP_PLATFORM_STATUS: any state.
    pub fn snp_platform_status(&self) -> FwResult<SevUserDataSnpStatus> {
        let v = self.config.version;
        let store = &self.snp.store;
        let mut bits = status_bits::FEATURE_INFO;
        if store.mask_chip_id {
            bits |= status_bits::MASK_CHIP_ID;
        }
        if store.mask_chip_key {
            bits |= status_bits::MASK_CHIP_KEY;
        }
        if self.snp.vlek.is_some() {
            bits |= status_bits::VLEK_EN;
        }
        Ok(SevUserDataSnpStatus {
            api_major: v.api_major,
            api_minor: v.api_minor,
            state: self.snp.state as u8,
            is_rmp_initialized: self.rmp_init_bits(),
            build_id: v.build as u32,
            feature_bits: bits,
            guest_count: self.snp_guest_count(),
            current_tcb_version: self.current_tcb().to_u64(),
            reported_tcb_version: self.reported_tcb().to_u64(),
        })
    }

    /// SNP_COMMIT: the committed TCB and version become the current ones; SNP_CONFIG's TCB
    /// is dropped, and with it a VLEK made for another TCB. Any SNP state.
    pub fn snp_commit(&mut self, length: u32) -> FwResult<()> {
        if !self.snp.enabled {
            return Err(Status::InvalidConfig);
        }
        if length != COMMIT_LEN {
            return Err(Status::InvalidParam);
        }
        let reported = self.reported_tcb();
        let mut store = self.snp.store.clone();
        store.committed_tcb = self.chip.tcb;
        store.committed_version = self.config.version;
        store.config_tcb = None;
        self.persist_snp(&store)?;
        self.snp.store = store;
        if self.reported_tcb() != reported {
            self.snp.vlek = None;
        }
        Ok(())
    }

    /// SNP_CONFIG: the reported TCB (0 for the committed one; never above it) and the mask
    /// flags. SNP INIT only.
    pub fn snp_config(&mut self, config: &[u8; 64]) -> FwResult<()> {
        self.require_snp_init()?;
        let reported = u64::from_le_bytes(config[0..8].try_into().unwrap_or_default());
        let mask = u32::from_le_bytes(config[8..12].try_into().unwrap_or_default());
        if mask & !(CONFIG_MASK_CHIP_ID | CONFIG_MASK_CHIP_KEY) != 0
            || config[12..].iter().any(|b| *b != 0)
        {
            return Err(Status::InvalidParam);
        }
        let committed = self.snp.store.committed_tcb;
        let requested = match reported {
            0 => committed,
            v => self.chip.product.tcb(v).ok_or(Status::InvalidParam)?,
        };
        if requested.exceeds(committed) {
            return Err(Status::InvalidParam);
        }
        let mut store = self.snp.store.clone();
        store.config_tcb = Some(requested);
        store.mask_chip_id = mask & CONFIG_MASK_CHIP_ID != 0;
        store.mask_chip_key = mask & CONFIG_MASK_CHIP_KEY != 0;
        self.persist_snp(&store)?;
        self.snp.store = store;
        Ok(())
    }

    /// SNP_VLEK_LOAD: unwraps a hashstick made for this chip at the reported TCB. One made
    /// for another TCB is BAD_SVN; one this chip cannot unwrap is BAD_MEASUREMENT.
    pub fn snp_vlek_load(
        &mut self,
        len: u32,
        version: u8,
        reserved: [u8; 3],
        stick: &[u8; hashstick::LEN],
    ) -> FwResult<()> {
        self.require_snp_init()?;
        if len != 16 || version != 0 || reserved != [0; 3] {
            return Err(Status::InvalidParam);
        }
        let tcb = u64::from_le_bytes(stick[0x190..0x198].try_into().unwrap_or_default());
        let reported = self.reported_tcb();
        if tcb != reported.to_u64() {
            return Err(Status::BadSvn);
        }
        let key = self
            .chip
            .vlek_wrapping_key(reported)
            .map_err(|e| internal("VLEK wrapping key", e))?;
        let cipher = Aes256Gcm::new_from_slice(&key).map_err(|e| internal("VLEK key", e))?;
        let mut sealed = stick[hashstick::WRAPPED].to_vec();
        sealed.extend_from_slice(&stick[hashstick::TAG]);
        let vlek = cipher
            .decrypt(
                Nonce::from_slice(&stick[hashstick::IV]),
                Payload {
                    msg: &sealed,
                    aad: &stick[hashstick::AAD],
                },
            )
            .map_err(|_| Status::BadMeasurement)?;
        self.snp.vlek = Some(Zeroizing::new(vlek));
        Ok(())
    }

    fn require_snp_init(&self) -> FwResult<()> {
        if !self.snp.enabled {
            return Err(Status::InvalidConfig);
        }
        if self.snp.state != SnpState::Init {
            return Err(Status::InvalidPlatformState);
        }
        Ok(())
    }
}

/// A VLEK hashstick for `chip` at `tcb`: what AMD's key server hands a cloud provider for a
/// real part. Only whoever holds the chip's secret can make one, as only AMD can for AMD's
/// parts; here that is this project, for tests and for operators of their own platforms.
pub fn wrap_vlek_hashstick(
    chip: &super::chip::Chip,
    tcb: TcbVersion,
    vlek_seed: &[u8; 0x180],
) -> Result<[u8; hashstick::LEN], crate::crypto::CryptoError> {
    let key = chip.vlek_wrapping_key(tcb)?;
    let iv = crate::crypto::random_bytes::<12>()?;
    let mut stick = [0u8; hashstick::LEN];
    stick[hashstick::IV].copy_from_slice(&iv);
    stick[0x190..0x198].copy_from_slice(&tcb.to_u64().to_le_bytes());
    let cipher = Aes256Gcm::new_from_slice(&key).map_err(|_| crate::crypto::CryptoError::Seal)?;
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&iv),
            Payload {
                msg: vlek_seed,
                aad: &stick[hashstick::AAD],
            },
        )
        .map_err(|_| crate::crypto::CryptoError::Seal)?;
    let (wrapped, tag) = sealed.split_at(0x180);
    stick[hashstick::WRAPPED].copy_from_slice(wrapped);
    stick[hashstick::TAG].copy_from_slice(tag);
    Ok(stick)
}

#[cfg(test)]
mod tests;
