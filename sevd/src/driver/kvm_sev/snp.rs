//! KVM's SNP launch (`snp_launch_start`, `snp_launch_update`, `snp_launch_finish` in
//! arch/x86/kvm/svm/sev.c; snp.md §3), on the `sev-vm` node. Each VM's memory stands for its
//! guest_memfd: a page is private once the RMP assigns it to the guest, and KVM's
//! populate-and-measure loop runs page by page, staged outside the firmware's lock.

use uapi::kvm::*;
use uapi::snp::{policy, PageType, VMSA_GPA};
use vfs::{Errno, UserAddr};

use super::{copy_user_blob, Ctx, KvmSev, Vm, PAGE, VMSA_BASE};
use crate::driver::read_obj;
use crate::firmware::snp::SnpLaunchFinish;
use crate::memctl::rmp::HostPage;
use crate::memctl::{GuestAddress, GuestMemory};

/// `SNP_POLICY_MASK_VALID`: the policy bits KVM lets through (Linux 6.11).
const POLICY_VALID: u64 =
    0xffff | policy::SMT | policy::RSVD_MBO | policy::DEBUG | policy::SINGLE_SOCKET;
/// `SVM_SEV_FEAT_SNP_ACTIVE`: KVM sets it in every SNP save area.
pub(super) const SEV_FEAT_SNP_ACTIVE: u64 = 1;

impl KvmSev {
    /// `snp_launch_start`: a guest context, LAUNCH_START, then ACTIVATE with the VM's ASID.
    pub(super) fn snp_launch_start(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let sev = vm.sev.as_mut().filter(|s| s.snp).ok_or(Errno::ENOTTY)?;
        let params: KvmSevSnpLaunchStart = read_obj(ctx.mem, ctx.data)?;
        if sev.handle != 0 || params.flags != 0 {
            return Err(Errno::EINVAL);
        }
        if params.policy & !POLICY_VALID != 0 || params.policy & policy::RSVD_MBO == 0 {
            return Err(Errno::EINVAL);
        }
        // `snp_context_create` goes through `sev_fd`; any failure there is ENOTTY.
        if self.check_fd(ctx.pid, ctx.sev_fd).is_err() {
            return Err(Errno::ENOTTY);
        }
        let mut dev = self.dev();
        let fw = dev.firmware_mut();
        let gctx = match fw.snp_gctx_create() {
            Ok(g) => g,
            Err(status) => {
                *ctx.error = status as u32;
                return Err(Errno::ENOTTY);
            }
        };
        let started = fw
            .snp_launch_start(gctx, params.policy, params.gosvw)
            .and_then(|()| fw.snp_activate(gctx, sev.asid));
        if let Err(status) = started {
            *ctx.error = status as u32;
            let _ = fw.snp_decommission(gctx);
            return Err(Errno::EIO);
        }
        *ctx.error = 0;
        sev.handle = gctx;
        sev.fd = ctx.sev_fd;
        Ok(())
    }

    /// `snp_launch_finish`: every vCPU's save area measured at the VMSA GPA, in vCPU
    /// order, then LAUNCH_FINISH with the ID block and HOST_DATA.
    pub(super) fn snp_launch_finish(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let sev = vm.sev.as_ref().filter(|s| s.snp).ok_or(Errno::ENOTTY)?;
        if sev.handle == 0 {
            return Err(Errno::EINVAL);
        }
        let params: KvmSevSnpLaunchFinish = read_obj(ctx.mem, ctx.data)?;
        if params.flags != 0 {
            return Err(Errno::EINVAL);
        }
        self.snp_launch_update_vmsa(vm, ctx)?;
        let id = if params.id_block_en != 0 {
            let block = copy_user_blob(
                ctx.mem,
                params.id_block_uaddr,
                KVM_SEV_SNP_ID_BLOCK_SIZE as u32,
            )?;
            let auth = copy_user_blob(
                ctx.mem,
                params.id_auth_uaddr,
                KVM_SEV_SNP_ID_AUTH_SIZE as u32,
            )?;
            Some((block, auth))
        } else {
            None
        };
        let sev = vm.sev.as_ref().ok_or(Errno::ENOTTY)?;
        self.check_fd(ctx.pid, sev.fd)?;
        let id_block = match &id {
            Some((b, a)) => Some((
                b.as_slice().try_into().map_err(|_| Errno::EINVAL)?,
                a.as_slice().try_into().map_err(|_| Errno::EINVAL)?,
            )),
            None => None,
        };
        let finish = SnpLaunchFinish {
            id_block,
            auth_key_en: params.id_block_en != 0 && params.auth_key_en != 0,
            vcek_disabled: params.vcek_disabled != 0,
            host_data: params.host_data,
        };
        let r = self
            .dev()
            .firmware_mut()
            .snp_launch_finish(sev.handle, &finish);
        ctx.fw(r)
    }

    /// `snp_launch_update_vmsa`: each save area synced (SEV_FEATURES with SNP active),
    /// assigned to the guest at the VMSA GPA, and measured; a page the firmware refuses is
    /// taken back.
    fn snp_launch_update_vmsa(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let object = vm.object;
        let Some(sev) = vm.sev.as_mut() else {
            return Err(Errno::ENOTTY);
        };
        if !self.fd_check.is_sev_node(ctx.pid, ctx.sev_fd) {
            return Err(Errno::EBADF);
        }
        let mut dev = self.dev();
        let fw = dev.firmware_mut();
        for (&vcpu, vmsa) in vm.vmsas.iter_mut() {
            let at = VMSA_BASE + vcpu as u64 * PAGE;
            let page = HostPage { object, addr: at };
            if vmsa.protected || fw.rmp_assign(page, sev.asid, VMSA_GPA).is_err() {
                return Err(Errno::EINVAL);
            }
            if sev.vmsa_mem.check_range(GuestAddress(at), PAGE).is_err() {
                sev.vmsa_mem.add_region(GuestAddress(at), PAGE as usize);
            }
            let mut area = vmsa.page.clone();
            if let Err(e) = super::init::sync_vmsa(&mut area, sev.vmsa_features, sev.sync_fpu) {
                fw.rmp_make_shared(page);
                return Err(e);
            }
            let written = sev.vmsa_mem.write(GuestAddress(at), &area[..]);
            zeroize::Zeroize::zeroize(&mut area[..]);
            written.map_err(|_| Errno::EFAULT)?;
            let r = fw.snp_launch_update(
                sev.handle,
                page,
                PageType::Vmsa,
                &sev.vmsa_mem,
                GuestAddress(at),
            );
            if let Err(status) = r {
                fw.rmp_make_shared(page);
                *ctx.error = status as u32;
                return Err(Errno::EIO);
            }
            vmsa.protected = true;
            vmsa.page.fill(0);
        }
        Ok(())
    }

    /// `SEVD_VM_SNP_GUEST_REQUEST`: what KVM does for a guest's SNP_GUEST_REQUEST VMGEXIT
    /// (`snp_handle_guest_req`): the request page to the firmware, its answer back, and the
    /// firmware's status in `exitinfo2`. Returns that status for the audit log.
    pub(super) fn snp_guest_request(
        &self,
        vm: &Vm,
        mem: &dyn vfs::CallerMemory,
        arg: &mut SevdSnpGuestRequest,
    ) -> Result<Option<u32>, Errno> {
        let sev = vm.sev.as_ref().filter(|s| s.snp).ok_or(Errno::EINVAL)?;
        if sev.handle == 0 || arg.req_uaddr == 0 || arg.resp_uaddr == 0 {
            return Err(Errno::EINVAL);
        }
        let mut req = vec![0u8; PAGE as usize];
        mem.read(UserAddr(arg.req_uaddr), &mut req)
            .map_err(|_| Errno::EFAULT)?;
        let r = self
            .dev()
            .firmware_mut()
            .snp_guest_request(sev.handle, &req);
        let status = match r {
            Ok(resp) => {
                mem.write(UserAddr(arg.resp_uaddr), &resp)
                    .map_err(|_| Errno::EFAULT)?;
                0
            }
            Err(s) => s as u32,
        };
        arg.exitinfo2 = status as u64;
        Ok(Some(status))
    }

    /// `sev_vm_destroy` of an SNP VM: DECOMMISSION, then every page of the VM given back
    /// to the hypervisor.
    pub(super) fn snp_destroy(&self, object: u64, gctx: u32) {
        let mut dev = self.dev();
        let fw = dev.firmware_mut();
        if gctx != 0 {
            if let Err(s) = fw.snp_decommission(gctx) {
                log::warn!("SNP_DECOMMISSION of context {gctx:#x} failed: {s}");
            }
        }
        for (page, _) in fw.rmp_owned_pages(object) {
            fw.rmp_make_shared(page);
        }
    }
}

#[cfg(test)]
#[path = "snp_tests.rs"]
mod tests;
