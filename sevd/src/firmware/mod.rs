//! The software PSP: AMD's SEV firmware as a pure state machine.
//!
//! One method per firmware command, named after it, with its checks in the order
//! `reference/firmware-semantics.md` gives (the ASPFW handlers where they differ from the
//! spec's tables). Nothing here knows about files, FUSE or ioctls: the chip identity and the
//! non-volatile store are handed in, and results come back as values and [`Status`] codes.

pub mod chip;
pub mod nv;
mod platform;

use uapi::Status;

use crate::crypto::ecc::EcKeyPair;
use chip::Chip;
use nv::{NvStorage, PlatformKeys};

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

/// The emulated PSP.
pub struct Firmware {
    version: FirmwareVersion,
    chip: Chip,
    cek_key: EcKeyPair,
    nv: Box<dyn NvStorage>,
    state: PlatformState,
    config_es: bool,
    /// Loaded at INIT, dropped at SHUTDOWN; `Some` exactly when the state is not UNINIT.
    keys: Option<PlatformKeys>,
}

impl std::fmt::Debug for Firmware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Firmware")
            .field("version", &self.version)
            .field("state", &self.state)
            .field("config_es", &self.config_es)
            .finish_non_exhaustive()
    }
}

impl Firmware {
    /// A powered-on PSP in UNINIT: its chip, its flash, its version.
    pub fn new(
        chip: Chip,
        nv: Box<dyn NvStorage>,
        version: FirmwareVersion,
    ) -> Result<Self, crate::crypto::CryptoError> {
        let cek_key = chip.cek_key()?;
        Ok(Firmware {
            version,
            chip,
            cek_key,
            nv,
            state: PlatformState::Uninit,
            config_es: false,
            keys: None,
        })
    }

    /// The version this firmware reports.
    pub fn version(&self) -> FirmwareVersion {
        self.version
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

    /// One chip per test binary: RSA-4096 generation is slow and not what these tests test.
    pub fn chip() -> Chip {
        static CHIP: OnceLock<Vec<u8>> = OnceLock::new();
        let bytes = CHIP.get_or_init(|| {
            Chip::generate((1, 55))
                .expect("chip generation")
                .encode()
                .to_vec()
        });
        Chip::decode(bytes).expect("chip decodes")
    }

    /// A powered-on firmware over an in-memory store.
    pub fn firmware() -> Firmware {
        Firmware::new(
            chip(),
            Box::new(nv::MemStorage::default()),
            FirmwareVersion::default(),
        )
        .expect("firmware")
    }
}

#[cfg(test)]
mod tests;
