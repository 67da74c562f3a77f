//! Keeps the published VCEK chain current: after a successful SNP_COMMIT or SNP_SET_CONFIG
//! the reported TCB may have moved, and with it the VCEK that signs reports, so the files in
//! the state directory and beside the nodes are rewritten (as a person would fetch the new
//! VCEK from AMD's key server after a firmware update).

use std::sync::{Arc, Mutex};

use uapi::psp_sev::SevCmd;
use vfs::{CallerMemory, Errno, SharedFile};

use crate::driver::sev_dev::{SevBackend, SevDev};
use crate::state::StateDir;

/// A software backend that republishes the VCEK chain when the reported TCB may change.
pub struct VcekPublisher {
    dev: Arc<Mutex<SevDev>>,
    state: Arc<StateDir>,
    /// The DER files served beside the nodes, by the key server's names (`ark`, `ask`, `vcek`).
    served: Vec<(&'static str, Arc<SharedFile>)>,
}

impl VcekPublisher {
    /// Wraps `dev`, whose chain is published in `state` and served as `served`.
    pub fn new(
        dev: Arc<Mutex<SevDev>>,
        state: Arc<StateDir>,
        served: Vec<(&'static str, Arc<SharedFile>)>,
    ) -> Self {
        VcekPublisher { dev, state, served }
    }

    fn republish(&self) {
        let dev = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        match crate::boot::publish_vcek_chain(&self.state, dev.firmware(), false) {
            Ok(Some(chain)) => {
                for (name, cert) in chain.named() {
                    let der = crate::certs::x509::to_der(cert);
                    let file = self.served.iter().find(|(n, _)| *n == name);
                    if let (Ok(der), Some((_, file))) = (der, file) {
                        file.set(der);
                    }
                }
                log::info!(
                    "published the VCEK at TCB {}",
                    dev.firmware().reported_tcb()
                );
            }
            Ok(None) => {}
            // The command itself succeeded; stale files are worth a warning, not a failure.
            Err(e) => log::warn!("the VCEK chain was not republished: {e}"),
        }
    }
}

impl SevBackend for VcekPublisher {
    fn issue(
        &self,
        cmd: SevCmd,
        writable: bool,
        mem: &dyn CallerMemory,
        data: u64,
        error: &mut u32,
    ) -> Result<(), Errno> {
        self.dev.issue(cmd, writable, mem, data, error)?;
        if matches!(cmd, SevCmd::SnpCommit | SevCmd::SnpSetConfig) {
            self.republish();
        }
        Ok(())
    }

    fn barrier(&self) {
        self.dev.barrier()
    }
}
