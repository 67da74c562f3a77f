//! ATTESTATION (0x36, firmware-semantics.md §2 and §7.4): a report of a launched guest's
//! launch digest and policy over the caller's MNONCE, signed with the platform's PEK, so an
//! owner holding the platform's chain can check what runs after the launch.

use uapi::cert::{algo, usage};
use uapi::launch::{AttestationReport, ATTESTATION_REPORT_LEN};
use uapi::Status;

use super::guest::GuestState;
use super::{internal, Firmware, FwResult};

impl Firmware {
    /// ATTESTATION for `handle` over `mnonce`. `len` is the buffer's length in and 208 out
    /// (INVALID_LENGTH when shorter, after the guest's state is checked: LSECRET, RUNNING,
    /// SUPDATE or SENT).
    pub fn attestation(
        &mut self,
        handle: u32,
        mnonce: &[u8; 16],
        len: &mut u32,
    ) -> FwResult<[u8; ATTESTATION_REPORT_LEN]> {
        let guest = self.guest(handle)?;
        if !matches!(
            guest.state,
            GuestState::Lsecret | GuestState::Running | GuestState::Supdate | GuestState::Sent
        ) {
            return Err(Status::InvalidGuestState);
        }
        let given = *len;
        *len = ATTESTATION_REPORT_LEN as u32;
        if given < ATTESTATION_REPORT_LEN as u32 {
            return Err(Status::InvalidLength);
        }
        let mut report = AttestationReport {
            mnonce: *mnonce,
            launch_digest: guest.launch_digest,
            policy: guest.policy.0,
            sig_usage: usage::PEK,
            sig_algo: algo::ECDSA_SHA256,
            reserved: 0,
            sig: [0; 144],
        };
        let sig = self
            .keys()?
            .pek_key
            .sign(algo::ECDSA_SHA256, &report.signed_bytes())
            .map_err(|e| internal("ATTESTATION", e))?;
        report.sig.copy_from_slice(&sig[..144]);
        Ok(report.encode())
    }
}

#[cfg(test)]
#[path = "attestation_tests.rs"]
mod tests;
