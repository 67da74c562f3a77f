//! KVM's SEV migration ids on the `sev-vm` node (`sev_send_start` … `sev_receive_finish` in
//! arch/x86/kvm/svm/sev.c; migration.md §5): KVM's structs, its length queries (EIO with
//! error 4 and the lengths written back), one page per update and its errno. The firmware
//! does the work (`firmware::migration`).

use uapi::kvm::*;
use uapi::psp_sev::SEV_FW_BLOB_MAX_SIZE;
use uapi::Status;
use vfs::{CallerMemory, Errno};

use super::{copy_user_blob, stage, Ctx, KvmSev, Vm, Vmsa, PAGE, VMSA_BASE};
use crate::driver::stage_pipe::unstage;
use crate::driver::{read_obj, write_bytes, write_obj};
use crate::firmware::migration::{Packet, Target, PACKET_HEADER_LEN};
use crate::memctl::{GuestAddress, GuestMemory};

/// The most a transport or header buffer may be: what `kzalloc` gives (KMALLOC_MAX_SIZE);
/// beyond it KVM fails with ENOMEM.
const KMALLOC_MAX: u32 = 4 << 20;

/// The one page an update may touch: its guest address, or EINVAL for a null address, an
/// empty or longer range, or one crossing a page.
fn one_page(vm: &Vm, uaddr: u64, len: u32) -> Result<GuestAddress, Errno> {
    if uaddr == 0 || len == 0 || len as u64 > PAGE || (uaddr & (PAGE - 1)) + len as u64 > PAGE {
        return Err(Errno::EINVAL);
    }
    match vm.slots.translate(uaddr, len as u64)?[..] {
        [(gpa, _)] => Ok(gpa),
        _ => Err(Errno::EFAULT),
    }
}

/// Copies a packet to the caller's header and transport buffers, each as long as the caller
/// said and zeroed beyond what the firmware wrote (KVM's `kzalloc`ed buffers).
fn copy_packet_out(
    mem: &dyn CallerMemory,
    packet: &Packet,
    (hdr_uaddr, hdr_len): (u64, u32),
    (trans_uaddr, trans_len): (u64, u32),
) -> Result<(), Errno> {
    for (at, len, bytes) in [
        (trans_uaddr, trans_len, &packet.trans[..]),
        (hdr_uaddr, hdr_len, &packet.header[..]),
    ] {
        let mut out = vec![0u8; len as usize];
        let n = bytes.len().min(out.len());
        out[..n].copy_from_slice(&bytes[..n]);
        write_bytes(mem, at, &out)?;
    }
    Ok(())
}

impl KvmSev {
    /// `sev_send_start`: `session_len` 0 asks for the session's length.
    pub(super) fn send_start(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let sev = Self::sev(vm)?;
        let mut params: KvmSevSendStart = read_obj(ctx.mem, ctx.data)?;
        let query = params.session_len == 0;
        let blobs = if query {
            None
        } else {
            if params.pdh_cert_uaddr == 0
                || params.pdh_cert_len == 0
                || params.session_uaddr == 0
                || params.session_len > SEV_FW_BLOB_MAX_SIZE
            {
                return Err(Errno::EINVAL);
            }
            Some((
                copy_user_blob(ctx.mem, params.pdh_cert_uaddr, params.pdh_cert_len)?,
                copy_user_blob(ctx.mem, params.plat_certs_uaddr, params.plat_certs_len)?,
                copy_user_blob(ctx.mem, params.amd_certs_uaddr, params.amd_certs_len)?,
            ))
        };
        self.check_fd(ctx.pid, sev.fd)?;
        let (pdh, plat, amd) = blobs.unwrap_or_default();
        let target = Target {
            pdh: &pdh,
            plat_certs: &plat,
            amd_certs: &amd,
        };
        let mut session_len = if query { 0 } else { params.session_len };
        let r = self
            .dev()
            .firmware_mut()
            .send_start(sev.handle, &target, &mut session_len);
        let r = ctx.fw(r);
        if let Ok(started) = &r {
            write_bytes(ctx.mem, params.session_uaddr, &started.session)?;
            params.policy = started.policy;
        }
        // Whatever the firmware said, its policy and session length go back.
        params.session_len = session_len;
        write_obj(ctx.mem, ctx.data, &params)?;
        r.map(drop)
    }

    /// `sev_send_update_data`: one page of guest memory out as a packet. `hdr_len` or
    /// `trans_len` 0 asks for the lengths.
    pub(super) fn send_update_data(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let sev = Self::sev(vm)?;
        let mut params: KvmSevSendUpdateData = read_obj(ctx.mem, ctx.data)?;
        if params.hdr_len == 0 || params.trans_len == 0 {
            // The firmware sees a zeroed buffer but for the handle: it writes 52 back as
            // HDR_LEN and leaves TRANS_LEN 0, and KVM copies both back.
            self.check_fd(ctx.pid, sev.fd)?;
            let mut hdr_len = 0;
            let r = self.dev().firmware_mut().send_update_data(
                sev.handle,
                &mut hdr_len,
                GuestAddress(0),
                0,
                0,
                &crate::memctl::VecGuestMemory::new(),
            );
            let r = ctx.fw(r);
            params.hdr_len = hdr_len;
            params.trans_len = 0;
            write_obj(ctx.mem, ctx.data, &params)?;
            return r.map(drop);
        }
        if params.trans_uaddr == 0 || params.hdr_uaddr == 0 {
            return Err(Errno::EINVAL);
        }
        let gpa = one_page(vm, params.guest_uaddr, params.guest_len)?;
        if params.hdr_len > KMALLOC_MAX || params.trans_len > KMALLOC_MAX {
            return Err(Errno::ENOMEM);
        }
        let staged = stage(&vm.slots, ctx.mem, gpa.0, params.guest_len as u64)?;
        self.check_fd(ctx.pid, sev.fd)?;
        let mut hdr_len = params.hdr_len;
        let r = self.dev().firmware_mut().send_update_data(
            sev.handle,
            &mut hdr_len,
            gpa,
            params.guest_len,
            params.trans_len,
            &staged,
        );
        let packet = ctx.fw(r)?;
        // KVM's buffers are as long as the caller said, zeroed beyond what the firmware wrote.
        let header = (params.hdr_uaddr, params.hdr_len);
        copy_packet_out(
            ctx.mem,
            &packet,
            header,
            (params.trans_uaddr, params.trans_len),
        )
    }

    /// `sev_send_finish` (`cancel` false) and `sev_send_cancel`.
    pub(super) fn send_end(
        &self,
        vm: &mut Vm,
        ctx: &mut Ctx<'_>,
        cancel: bool,
    ) -> Result<(), Errno> {
        self.with_guest(vm, ctx, |h, ctx| {
            let mut dev = self.dev();
            let fw = dev.firmware_mut();
            let r = if cancel {
                fw.send_cancel(h)
            } else {
                fw.send_finish(h)
            };
            ctx.fw(r)
        })
    }

    /// `sev_receive_start`: the firmware context, then ACTIVATE with the VM's ASID. Unlike
    /// KVM, a VM that already has a guest is refused (EINVAL) rather than leaking it.
    pub(super) fn receive_start(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let sev = vm.sev.as_mut().ok_or(Errno::ENOTTY)?;
        if sev.handle != 0 {
            return Err(Errno::EINVAL);
        }
        let mut params: KvmSevReceiveStart = read_obj(ctx.mem, ctx.data)?;
        let pdh = copy_user_blob(ctx.mem, params.pdh_uaddr, params.pdh_len)?;
        let session = copy_user_blob(ctx.mem, params.session_uaddr, params.session_len)?;
        self.check_fd(ctx.pid, ctx.sev_fd)?;
        let handle = self.new_active_guest(ctx, sev.asid, |fw| {
            fw.receive_start(params.handle, params.policy, &pdh, &session)
        })?;
        params.handle = handle;
        self.hand_back(ctx, &params, handle)?;
        sev.handle = handle;
        sev.fd = ctx.sev_fd;
        Ok(())
    }

    /// `sev_receive_update_data`: one packet into one page of guest memory.
    pub(super) fn receive_update_data(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        // KVM answers EINVAL here, not ENOTTY, for a VM that is not an SEV guest.
        let sev = vm.sev.as_ref().ok_or(Errno::EINVAL)?;
        let params: KvmSevReceiveUpdateData = read_obj(ctx.mem, ctx.data)?;
        if params.hdr_uaddr == 0
            || params.hdr_len == 0
            || params.trans_uaddr == 0
            || params.trans_len == 0
        {
            return Err(Errno::EINVAL);
        }
        let gpa = one_page(vm, params.guest_uaddr, params.guest_len)?;
        let header = copy_user_blob(ctx.mem, params.hdr_uaddr, params.hdr_len)?;
        let trans = copy_user_blob(ctx.mem, params.trans_uaddr, params.trans_len)?;
        let staged = stage(&vm.slots, ctx.mem, gpa.0, params.guest_len as u64)?;
        self.check_fd(ctx.pid, sev.fd)?;
        let r = self.dev().firmware_mut().receive_update_data(
            sev.handle,
            &header,
            gpa,
            params.guest_len,
            &trans,
            &staged,
        );
        ctx.fw(r)?;
        unstage(&vm.slots, ctx.mem, gpa.0, staged).map(drop)
    }

    /// `sev_receive_finish`.
    pub(super) fn receive_finish(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        self.with_guest(vm, ctx, |h, ctx| {
            let r = self.dev().firmware_mut().receive_finish(h);
            ctx.fw(r)
        })
    }

    /// `SEVD_VM_SEND_VMSA` (this node's extension): SEND_UPDATE_VMSA of one vCPU's save area,
    /// which LAUNCH_UPDATE_VMSA or RECEIVE_VMSA protected. `hdr_len` or `trans_len` 0 asks
    /// for the lengths (EIO, INVALID_LENGTH in `error`, 52 and 4096 written back).
    pub(super) fn send_vmsa(
        &self,
        vm: &mut Vm,
        mem: &dyn CallerMemory,
        pid: u32,
        arg: &mut SevdVmsaPacket,
        error: &mut u32,
    ) -> Result<(), Errno> {
        let sev = vm
            .sev
            .as_ref()
            .filter(|s| s.es && !s.snp)
            .ok_or(Errno::ENOTTY)?;
        if !vm.vmsas.get(&arg.vcpu).is_some_and(|v| v.protected) {
            return Err(Errno::EINVAL);
        }
        self.check_fd(pid, sev.fd)?;
        let gpa = GuestAddress(VMSA_BASE + arg.vcpu as u64 * PAGE);
        if arg.hdr_len == 0 || arg.trans_len == 0 {
            arg.hdr_len = PACKET_HEADER_LEN as u32;
            arg.trans_len = PAGE as u32;
            *error = Status::InvalidLength as u32;
            return Err(Errno::EIO);
        }
        if arg.hdr_len > KMALLOC_MAX || arg.trans_len > KMALLOC_MAX {
            return Err(Errno::ENOMEM);
        }
        let mut hdr_len = arg.hdr_len;
        let r = self.dev().firmware_mut().send_update_vmsa(
            sev.handle,
            &mut hdr_len,
            gpa,
            PAGE as u32,
            arg.trans_len,
            &sev.vmsa_mem,
        );
        let packet = super::super::fw_result(error, r)?;
        let header = (arg.hdr_uaddr, arg.hdr_len);
        copy_packet_out(mem, &packet, header, (arg.trans_uaddr, arg.trans_len))
    }

    /// `SEVD_VM_RECEIVE_VMSA` (this node's extension): RECEIVE_UPDATE_VMSA of one vCPU's
    /// save area into an SEV-ES VM being received; the vCPU then has a protected save area.
    pub(super) fn receive_vmsa(
        &self,
        vm: &mut Vm,
        mem: &dyn CallerMemory,
        pid: u32,
        arg: &SevdVmsaPacket,
        error: &mut u32,
    ) -> Result<(), Errno> {
        let sev = vm
            .sev
            .as_ref()
            .filter(|s| s.es && !s.snp)
            .ok_or(Errno::ENOTTY)?;
        // KVM_MAX_VCPUS.
        if arg.vcpu >= 4096 || sev.handle == 0 {
            return Err(Errno::EINVAL);
        }
        if !vm.vmsas.contains_key(&arg.vcpu) && vm.vmsas.len() >= self.limits.vcpus_per_vm as usize
        {
            return Err(self.limit_hit(vm.uid, "vCPUs per VM", Errno::ENOSPC));
        }
        let header = copy_user_blob(mem, arg.hdr_uaddr, arg.hdr_len)?;
        let trans = copy_user_blob(mem, arg.trans_uaddr, arg.trans_len)?;
        self.check_fd(pid, sev.fd)?;
        let gpa = GuestAddress(VMSA_BASE + arg.vcpu as u64 * PAGE);
        if sev.vmsa_mem.check_range(gpa, PAGE).is_err() {
            sev.vmsa_mem.add_region(gpa, PAGE as usize);
        }
        let r = self.dev().firmware_mut().receive_update_vmsa(
            sev.handle,
            &header,
            gpa,
            trans.len() as u32,
            &trans,
            &sev.vmsa_mem,
        );
        super::super::fw_result(error, r)?;
        vm.vmsas.insert(
            arg.vcpu,
            Vmsa {
                page: Box::new([0u8; PAGE as usize]),
                protected: true,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
#[path = "migrate_tests.rs"]
pub(crate) mod tests;
