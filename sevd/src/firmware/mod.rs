//! The software PSP: AMD's SEV firmware as a pure state machine.
//!
//! One method per firmware command, named after it, with its checks in the order
//! `reference/firmware-semantics.md` gives (the ASPFW handlers where they differ from the
//! spec's tables). Nothing here knows about files, FUSE or ioctls: the chip identity and the
//! non-volatile store are handed in, and results come back as values and [`Status`] codes.

mod attestation;
pub mod chip;
mod cores;
mod guest;
pub mod migration;
pub mod nv;
mod platform;
pub mod random;
pub mod snp;

use std::collections::BTreeMap;

use uapi::Status;

use crate::crypto::ecc::EcKeyPair;
use crate::memctl::MemoryController;
use chip::Chip;
use guest::Guest;
pub use guest::{AsidState, GuestState, GuestStatus, LaunchSecret, Policy};
use nv::{NvStorage, PlatformKeys};
use random::RandomSource;

/// What a firmware command returns: a value, or the status the PSP would report.
pub type FwResult<T> = Result<T, Status>;

/// Platform states (firmware-semantics.md §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PlatformState {
    /// Not initialised (after power-on or SHUTDOWN).
    Uninit = 0,
    /// Initialised, no guests.
    Init = 1,
    /// Initialised, with guests.
    Working = 2,
}

/// The firmware's version, as PLATFORM_STATUS reports it and the launch measurement binds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirmwareVersion {
    /// API major.
    pub api_major: u8,
    /// API minor.
    pub api_minor: u8,
    /// Build.
    pub build: u8,
}

impl Default for FirmwareVersion {
    /// 1.55 build 25: the Genoa SEV firmware whose published source this emulation follows.
    fn default() -> Self {
        FirmwareVersion {
            api_major: 1,
            api_minor: 55,
            build: 25,
        }
    }
}

/// INIT's `flags` bit 0: initialise SEV-ES (reserve the TMR).
pub const INIT_FLAGS_ES: u32 = 0x1;

/// What the part looks like: version, ASID ranges (CPUID 0x8000001F), guest handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirmwareConfig {
    /// Version reported and measured.
    pub version: FirmwareVersion,
    /// Highest ASID (CPUID 0x8000001F ECX).
    pub max_asid: u32,
    /// First ASID for plain SEV guests (CPUID 0x8000001F EDX); SEV-ES guests use
    /// 1..min_sev_asid.
    pub min_sev_asid: u32,
    /// Number of guest handles (1..=max_guests).
    pub max_guests: u32,
    /// Whether the host enabled SEV-SNP (SYSCFG.SNP_EN, the RMP reserved by the BIOS).
    pub snp: bool,
    /// SPLs to install on the chip (an update, or a new chip's); `None` keeps the chip's.
    pub tcb: Option<uapi::snp::TcbVersion>,
    /// The EPYC generation a new chip is made as; an existing chip must be it (`None`:
    /// whatever the chip is, Milan for a new one).
    pub product: Option<crate::part::Product>,
}

impl Default for FirmwareConfig {
    /// 15 SEV-ES ASIDs (1..=15), 16 SEV ASIDs (16..=31), 1024 handles (as on Genoa), SNP
    /// off.
    fn default() -> Self {
        FirmwareConfig {
            version: FirmwareVersion::default(),
            max_asid: 31,
            min_sev_asid: 16,
            max_guests: 1024,
            snp: false,
            tcb: None,
            product: None,
        }
    }
}

/// The emulated PSP.
pub struct Firmware {
    config: FirmwareConfig,
    chip: Chip,
    cek_key: EcKeyPair,
    nv: Box<dyn NvStorage>,
    rng: Box<dyn RandomSource>,
    state: PlatformState,
    config_es: bool,
    /// Loaded at INIT, dropped at SHUTDOWN; `Some` exactly when the state is not UNINIT.
    keys: Option<PlatformKeys>,
    guests: BTreeMap<u32, Guest>,
    asids: Vec<AsidState>,
    memctl: MemoryController,
    rmp: crate::memctl::rmp::Rmp,
    snp: snp::SnpPlatform,
}

impl std::fmt::Debug for Firmware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Firmware")
            .field("config", &self.config)
            .field("state", &self.state)
            .field("config_es", &self.config_es)
            .field("guests", &self.guests.len())
            .finish_non_exhaustive()
    }
}

impl Firmware {
    /// A powered-on PSP in UNINIT: its chip, its flash, its configuration, and where its
    /// nonces come from.
    pub fn new(
        chip: Chip,
        nv: Box<dyn NvStorage>,
        config: FirmwareConfig,
        rng: Box<dyn RandomSource>,
    ) -> Result<Self, crate::crypto::CryptoError> {
        let cek_key = chip.cek_key()?;
        let snp = snp::SnpPlatform::disabled(chip.tcb, config.version);
        Ok(Firmware {
            config,
            chip,
            cek_key,
            nv,
            rng,
            state: PlatformState::Uninit,
            config_es: false,
            keys: None,
            guests: BTreeMap::new(),
            asids: vec![AsidState::Clean; config.max_asid as usize + 1],
            memctl: MemoryController::new(),
            rmp: Default::default(),
            snp,
        })
    }

    /// The configuration.
    pub fn config(&self) -> FirmwareConfig {
        self.config
    }

    /// The version this firmware reports.
    pub fn version(&self) -> FirmwareVersion {
        self.config.version
    }

    /// The platform state.
    pub fn state(&self) -> PlatformState {
        self.state
    }

    /// AMD's part of this chip's chain, ASK and ARK, which a real platform's owner fetches
    /// from AMD and which here only the firmware can give.
    pub fn ca_chain(&self) -> crate::certs::CaChain {
        crate::certs::CaChain {
            ask: self.chip.ask.clone(),
            ark: self.chip.ark.clone(),
        }
    }

    /// The chip: what AMD's key server knows of the part (its VCEKs and CHIP_ID), for this
    /// project's stand-in for that server.
    pub fn chip(&self) -> &Chip {
        &self.chip
    }

    /// The chip's CEK certificate, signed by its ASK.
    pub fn cek_certificate(&self) -> &uapi::cert::Certificate {
        &self.chip.cek
    }
}

/// Logs an internal failure (never key material: these are library and I/O errors) and
/// reports it the way a PSP reports a hardware fault.
fn internal(what: &str, err: impl std::fmt::Display) -> Status {
    log::error!("firmware: {what}: {err}");
    Status::HwerrorPlatform
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::sync::OnceLock;

    /// The suite's shared chip (one per run, in target/tmp/chip-fixture; see
    /// tests/src/lib.rs): RSA-4096 generation is slow and not what these tests test.
    pub fn chip() -> Chip {
        static CHIP: OnceLock<Vec<u8>> = OnceLock::new();
        let bytes = CHIP.get_or_init(|| {
            let dir = std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/tmp/chip-fixture"
            ));
            let state =
                crate::state::StateDir::open_waiting(dir, std::time::Duration::from_secs(120))
                    .expect("the chip fixture's directory");
            state
                .load_or_create_chip((1, 55), None, None)
                .expect("the shared chip")
                .encode()
                .to_vec()
        });
        Chip::decode(bytes).expect("chip decodes")
    }

    /// A powered-on firmware over an in-memory store.
    pub fn firmware() -> Firmware {
        firmware_with(nv::MemStorage::default())
    }

    /// A powered-on firmware over the given store.
    pub fn firmware_with(nv: nv::MemStorage) -> Firmware {
        Firmware::new(
            chip(),
            Box::new(nv),
            FirmwareConfig::default(),
            Box::new(random::OsRandom),
        )
        .expect("firmware")
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod guest_tests;
