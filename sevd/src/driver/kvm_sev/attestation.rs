//! `KVM_SEV_GET_ATTESTATION_REPORT` (id 20, `sev_get_attestation_report` in
//! arch/x86/kvm/svm/sev.c): the firmware's ATTESTATION report of the VM's guest over the
//! caller's MNONCE, with KVM's struct, length query and errno.

use uapi::kvm::KvmSevAttestationReport;
use vfs::Errno;

use super::{Ctx, KvmSev, Vm};
use crate::driver::{read_obj, write_obj};

impl KvmSev {
    /// `sev_get_attestation_report`: `len` 0 asks for the report's length (EIO, error 4,
    /// 208 written back).
    pub(super) fn attestation_report(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let mut params: KvmSevAttestationReport = read_obj(ctx.mem, ctx.data)?;
        let mnonce = params.mnonce;
        let (r, len) = self.fill_blob(vm, ctx, (params.uaddr, params.len), |fw, h, len| {
            fw.attestation(h, &mnonce, len).map(|r| r.to_vec())
        })?;
        params.len = len;
        write_obj(ctx.mem, ctx.data, &params)?;
        r
    }
}

#[cfg(test)]
#[path = "attestation_tests.rs"]
mod tests;
