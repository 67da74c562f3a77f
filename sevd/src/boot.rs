//! Powering a software platform on: the state directory opened and locked, the chip loaded
//! (or made, once), the firmware started on its flash, and the driver probed. The daemon and
//! the embedded platform both start this way.

use std::path::Path;

use crate::crypto::CryptoError;
use crate::driver::sev_dev::{InitMode, SevDev};
use crate::firmware::random::{OsRandom, RandomSource, SeededRandom};
use crate::firmware::{Firmware, FirmwareConfig};
use crate::kds::VcekChain;
use crate::state::{StateDir, StateError};

/// Why a software platform could not start.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The state directory: in use, unsafe, unreadable, or its files corrupt.
    #[error(transparent)]
    State(#[from] StateError),
    /// The crypto library failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl BootError {
    /// Another process holds the state directory.
    pub fn is_locked(&self) -> bool {
        matches!(self, BootError::State(StateError::Busy { .. }))
    }

    /// The state directory itself is wrong (owned by someone else, writable by others, not a
    /// directory, corrupt files): something the user must fix, not a passing failure.
    pub fn is_config(&self) -> bool {
        matches!(self, BootError::State(s) if s.is_config())
    }
}

/// Publishes the key server's ARK and ASK and the VCEK certificate of `fw`'s chip at its
/// reported TCB in `state` (`ark`, `ask`, `vcek`, each `.pem` and `.der`), as a person would
/// fetch them from AMD's key server. The key server is made if `create` (seconds, once);
/// without one and not `create`, nothing is published.
pub fn publish_vcek_chain(
    state: &StateDir,
    fw: &Firmware,
    create: bool,
) -> Result<Option<VcekChain>, BootError> {
    let Some(ks) = state.key_server(fw.chip().product, create)? else {
        return Ok(None);
    };
    let vcek = ks
        .vcek(fw.chip(), fw.reported_tcb())
        .map_err(|source| StateError::KeyServer {
            path: state.path().join(crate::paths::KDS_FILE),
            source,
        })?;
    let chain = VcekChain {
        ark: ks.ark.clone(),
        ask: ks.ask.clone(),
        vcek,
    };
    state.publish_vcek_chain(&chain)?;
    Ok(Some(chain))
}

/// Opens and locks `state_dir`, loads (or makes) the chip (installing `firmware.tcb` if
/// given), publishes its ASK ‖ ARK there, powers the firmware on (with SNP if
/// `firmware.snp`) and probes the driver as `init_mode` says.
pub fn power_on(
    state_dir: &Path,
    firmware: FirmwareConfig,
    nonce_seed: Option<[u8; 32]>,
    init_mode: InitMode,
) -> Result<(SevDev, StateDir), BootError> {
    let version = firmware.version;
    let state = StateDir::open(state_dir)?;
    let chip = state.load_or_create_chip(
        (version.api_major, version.api_minor),
        firmware.tcb,
        firmware.product,
    )?;
    let mut ca = chip.ask.encode();
    ca.extend_from_slice(&chip.ark.encode());
    state.write_ca_file(&ca)?;
    let rng: Box<dyn RandomSource> = match nonce_seed {
        Some(seed) => {
            log::warn!("nonces come from a fixed seed: for tests only, never for real guests");
            Box::new(SeededRandom::new(seed))
        }
        None => Box::new(OsRandom),
    };
    let mut fw = Firmware::new(chip, Box::new(state.nv_storage()), firmware, rng)?;
    if firmware.snp {
        fw = fw.with_snp(Box::new(state.snp_nv_storage()));
    }
    Ok((SevDev::probe(fw, init_mode), state))
}
