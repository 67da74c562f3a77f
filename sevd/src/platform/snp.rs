//! An SNP guest's launch through the VM node (or KVM): KVM_SEV_SNP_LAUNCH_START, _UPDATE
//! (looping while KVM reports partial progress, as QEMU does) and _FINISH.

use uapi::kvm::*;
use uapi::snp::PageType;

use super::{addr, PlatformError, Vm};

/// LAUNCH_FINISH's optional owner inputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnpFinish<'a> {
    /// The ID block (96 bytes) and its authentication structure (4096 bytes).
    pub id_block: Option<(&'a [u8], &'a [u8])>,
    /// Whether the ID authentication carries an author key.
    pub author_key: bool,
    /// HOST_DATA.
    pub host_data: [u8; 32],
}

impl Vm {
    /// KVM_SEV_SNP_LAUNCH_START with `policy` and no guest OS workarounds.
    pub fn snp_launch_start(&self, policy: u64) -> Result<(), PlatformError> {
        let mut arg = KvmSevSnpLaunchStart {
            policy,
            ..Default::default()
        };
        self.op(
            KvmSevCmdId::SnpLaunchStart,
            "SNP_LAUNCH_START",
            addr(&mut arg),
        )
    }

    /// KVM_SEV_SNP_LAUNCH_UPDATE of guest memory `gpa`+`len` as pages of type `ty`, the
    /// source being the VM's own memory there; called again while KVM reports progress.
    pub fn snp_launch_update(&self, gpa: u64, len: u64, ty: PageType) -> Result<(), PlatformError> {
        let mut arg = KvmSevSnpLaunchUpdate {
            gfn_start: gpa / 4096,
            uaddr: self.uaddr(gpa),
            len,
            type_: ty as u8,
            ..Default::default()
        };
        while arg.len > 0 {
            let before = arg.len;
            self.op(
                KvmSevCmdId::SnpLaunchUpdate,
                "SNP_LAUNCH_UPDATE",
                addr(&mut arg),
            )?;
            if arg.len >= before {
                return Err(PlatformError::Kvm {
                    cmd: "SNP_LAUNCH_UPDATE",
                    why: "made no progress".into(),
                });
            }
            // ZERO pages leave `uaddr`; the next gfn's address is ours again.
            arg.uaddr = self.uaddr(arg.gfn_start * 4096);
        }
        Ok(())
    }

    /// KVM_SEV_SNP_LAUNCH_FINISH: the save areas are measured, then the launch closes.
    pub fn snp_launch_finish(&self, finish: &SnpFinish<'_>) -> Result<(), PlatformError> {
        let mut arg = KvmSevSnpLaunchFinish {
            host_data: finish.host_data,
            ..Default::default()
        };
        if let Some((block, auth)) = finish.id_block {
            arg.id_block_en = 1;
            arg.id_block_uaddr = block.as_ptr() as u64;
            arg.id_auth_uaddr = auth.as_ptr() as u64;
            arg.auth_key_en = finish.author_key as u8;
        }
        self.op(
            KvmSevCmdId::SnpLaunchFinish,
            "SNP_LAUNCH_FINISH",
            addr(&mut arg),
        )
    }
}

impl Vm {
    /// `SEVD_VM_SNP_GUEST_REQUEST`: hands the guest's request page to the firmware, as KVM
    /// does for the guest's VMGEXIT; the response page, or the `exitinfo2` of a refusal.
    pub fn snp_guest_request(
        &self,
        request: &[u8],
    ) -> Result<Vec<u8>, crate::guest::GuestRequestError> {
        use crate::guest::GuestRequestError;
        let mut req = vec![0u8; 4096];
        let n = request.len().min(4096);
        req[..n].copy_from_slice(&request[..n]);
        let mut resp = vec![0u8; 4096];
        let mut arg = SevdSnpGuestRequest {
            req_uaddr: req.as_ptr() as u64,
            resp_uaddr: resp.as_mut_ptr() as u64,
            exitinfo2: 0,
        };
        self.t
            .ioctl(
                uapi::ioctl::SEVD_VM_SNP_GUEST_REQUEST,
                uapi::ByteValued::as_bytes_mut(&mut arg),
            )
            .map_err(|e| GuestRequestError::Transport(format!("SEVD_VM_SNP_GUEST_REQUEST: {e}")))?;
        if arg.exitinfo2 != 0 {
            return Err(GuestRequestError::Refused(arg.exitinfo2));
        }
        Ok(resp)
    }
}
