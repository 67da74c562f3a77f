//! The VM mirror: what KVM's `arch/x86/kvm/svm/sev.c` does for `KVM_MEMORY_ENCRYPT_OP`
//! (reference/linux-abi.md §3), behind the `sev-vm` node. Each open file is one VM.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use uapi::ioctl::{
    KVM_SET_USER_MEMORY_REGION, SEVD_VM_ENCRYPT_OP, SEVD_VM_GUEST_ACCESS, SEVD_VM_SET_VMSA,
};
use uapi::kvm::*;
use uapi::psp_sev::SEV_FW_BLOB_MAX_SIZE;
use uapi::ByteValued;
use vfs::{CallerMemory, Errno, IoctlReply, IoctlRequest, UserAddr};

use super::read_obj;
use super::sev_dev::SevDev;
use super::vm_memory::Slots;
use crate::firmware::{FwResult, LaunchSecret};
use crate::memctl::{GuestAddress, GuestMemory, VecGuestMemory};

/// Where VMSA pages live in the firmware's view: above any guest physical address.
const VMSA_BASE: u64 = 1 << 52;
const PAGE: u64 = 4096;
/// vCPUs a VM may have (KVM_MAX_VCPUS).
const MAX_VCPUS: u32 = 4096;
/// Largest SEVD_VM_GUEST_ACCESS.
const GUEST_ACCESS_MAX: u32 = 16 << 20;
/// Largest piece handed to the firmware at once by LAUNCH_UPDATE_DATA.
const UPDATE_PIECE: u64 = 16 << 20;

/// Tells whether an fd number in a process is an open file of this daemon's `sev` node
/// (what KVM's check of `f_op == &sev_fops` is for).
pub trait SevFdCheck: Send + Sync {
    /// Whether `fd` in the process of thread `pid` is our `sev` node.
    fn is_sev_node(&self, pid: u32, fd: u32) -> bool;
}

/// KVM's ASID allocator (`sev_asid_new`): SEV-ES guests get 1..min_sev_asid, SEV guests
/// min_sev_asid..=max_asid. Freed ASIDs wait in `reclaim` until a shortage makes KVM
/// flush (DF_FLUSH) and reuse them all.
#[derive(Debug)]
struct KvmAsids {
    used: Vec<bool>,
    reclaim: Vec<bool>,
    min_sev: u32,
    max: u32,
}

impl KvmAsids {
    fn new(min_sev: u32, max: u32) -> Self {
        KvmAsids {
            used: vec![false; max as usize + 1],
            reclaim: vec![false; max as usize + 1],
            min_sev,
            max,
        }
    }

    fn range(&self, es: bool) -> std::ops::RangeInclusive<u32> {
        if es {
            1..=self.min_sev.saturating_sub(1)
        } else {
            self.min_sev..=self.max
        }
    }

    fn alloc(&mut self, es: bool, dev: &mut SevDev) -> Result<u32, Errno> {
        for retry in [true, false] {
            if let Some(a) = self.range(es).find(|&a| !self.used[a as usize]) {
                self.used[a as usize] = true;
                return Ok(a);
            }
            let reclaimable = self.range(es).any(|a| self.reclaim[a as usize]);
            if !(retry && reclaimable) {
                break;
            }
            // __sev_recycle_asids: WBINVD on all CPUs, DF_FLUSH, then every reclaimed ASID is free.
            if dev.firmware_mut().df_flush().is_err() {
                break;
            }
            for a in 0..self.used.len() {
                if self.reclaim[a] {
                    self.reclaim[a] = false;
                    self.used[a] = false;
                }
            }
        }
        Err(Errno::EBUSY)
    }

    fn free(&mut self, asid: u32) {
        self.reclaim[asid as usize] = true;
    }
}

/// A vCPU's save area.
struct Vmsa {
    page: Box<[u8; PAGE as usize]>,
    /// Measured and encrypted (KVM's `guest_state_protected`).
    protected: bool,
}

/// An SEV context of a VM (`struct kvm_sev_info`).
struct SevVm {
    es: bool,
    asid: u32,
    /// Firmware handle, 0 until LAUNCH_START.
    handle: u32,
    /// The `sev_fd` LAUNCH_START came with; later commands go through it.
    fd: u32,
    /// Where the firmware sees the VMSA pages.
    vmsa_mem: VecGuestMemory,
}

/// One VM.
struct Vm {
    /// The process that created it (KVM's `kvm->mm`): only it may use it.
    owner: u32,
    slots: Slots,
    sev: Option<SevVm>,
    vmsas: BTreeMap<u32, Vmsa>,
}

/// Every VM of the daemon, and KVM's ASIDs.
pub struct KvmSev {
    dev: Arc<Mutex<SevDev>>,
    fd_check: Arc<dyn SevFdCheck>,
    state: Mutex<(HashMap<u64, Vm>, KvmAsids)>,
}

/// One command's context.
struct Ctx<'a> {
    mem: &'a dyn CallerMemory,
    pid: u32,
    data: u64,
    sev_fd: u32,
    error: &'a mut u32,
}

impl Ctx<'_> {
    fn fw<T>(&mut self, r: FwResult<T>) -> Result<T, Errno> {
        super::fw_result(self.error, r)
    }
}

/// `psp_copy_user_blob`: EINVAL for a null or empty blob and above 16 KiB.
fn copy_user_blob(mem: &dyn CallerMemory, addr: u64, len: u32) -> Result<Vec<u8>, Errno> {
    if addr == 0 || len == 0 || len > SEV_FW_BLOB_MAX_SIZE {
        return Err(Errno::EINVAL);
    }
    mem.read_vec(UserAddr(addr), len as usize)
        .map_err(|_| Errno::EFAULT)
}

fn write_obj<T: ByteValued>(mem: &dyn CallerMemory, addr: u64, v: &T) -> Result<(), Errno> {
    super::write_obj(mem, addr, v)
}

impl KvmSev {
    /// The VM side over the shared driver.
    pub fn new(dev: Arc<Mutex<SevDev>>, fd_check: Arc<dyn SevFdCheck>) -> Self {
        let config = dev
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .firmware()
            .config();
        KvmSev {
            dev,
            fd_check,
            state: Mutex::new((
                HashMap::new(),
                KvmAsids::new(config.min_sev_asid, config.max_asid),
            )),
        }
    }

    /// `KVM_CREATE_VM`: a VM for the file `fh`, owned by process `owner`.
    pub fn create_vm(&self, fh: u64, owner: u32) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0.insert(
            fh,
            Vm {
                owner,
                slots: Slots::default(),
                sev: None,
                vmsas: BTreeMap::new(),
            },
        );
    }

    /// The VM's file is closed: `sev_vm_destroy` (DEACTIVATE, DECOMMISSION, ASID freed).
    pub fn destroy_vm(&self, fh: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (vms, asids) = &mut *state;
        let Some(vm) = vms.remove(&fh) else { return };
        let Some(sev) = vm.sev else { return };
        let mut dev = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        if sev.handle != 0 {
            let fw = dev.firmware_mut();
            let _ = fw.deactivate(sev.handle);
            if let Err(s) = fw.decommission(sev.handle) {
                log::warn!("DECOMMISSION of handle {} failed: {}", sev.handle, s);
            }
        }
        asids.free(sev.asid);
    }

    /// Number of live VMs.
    pub fn vm_count(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0.len()
    }

    /// An ioctl on a VM file.
    /// An ioctl on VM `fh` from thread `pid` of process `owner`, whose memory is `mem`.
    pub fn ioctl(
        &self,
        pid: u32,
        owner: u32,
        mem: &dyn CallerMemory,
        fh: u64,
        request: IoctlRequest<'_>,
    ) -> Result<IoctlReply, Errno> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (vms, asids) = &mut *state;
        let vm = vms.get_mut(&fh).ok_or(Errno::EBADF)?;
        // KVM: a VM belongs to the mm that made it.
        if vm.owner != owner {
            return Err(Errno::EIO);
        }
        match request.cmd {
            KVM_SET_USER_MEMORY_REGION => {
                let r =
                    KvmUserspaceMemoryRegion::from_slice(request.in_data).ok_or(Errno::EINVAL)?;
                vm.slots.set(&r)?;
                Ok(IoctlReply::ok(vec![]))
            }
            SEVD_VM_SET_VMSA => {
                let arg = SevdVmsa::from_slice(request.in_data).ok_or(Errno::EINVAL)?;
                if arg.vcpu >= MAX_VCPUS {
                    return Err(Errno::EINVAL);
                }
                if vm.vmsas.get(&arg.vcpu).is_some_and(|v| v.protected) {
                    return Err(Errno::EINVAL);
                }
                let mut page = Box::new([0u8; PAGE as usize]);
                mem.read(UserAddr(arg.uaddr), &mut page[..])
                    .map_err(|_| Errno::EFAULT)?;
                vm.vmsas.insert(
                    arg.vcpu,
                    Vmsa {
                        page,
                        protected: false,
                    },
                );
                Ok(IoctlReply::ok(vec![]))
            }
            SEVD_VM_GUEST_ACCESS => {
                let arg = SevdGuestAccess::from_slice(request.in_data).ok_or(Errno::EINVAL)?;
                self.guest_access(vm, mem, &arg)?;
                Ok(IoctlReply::ok(arg.as_bytes().to_vec()))
            }
            SEVD_VM_ENCRYPT_OP => {
                let mut cmd = KvmSevCmd::from_slice(request.in_data).ok_or(Errno::EINVAL)?;
                let id = KvmSevCmdId::from_id(cmd.id).ok_or(Errno::EINVAL)?;
                let mut error = cmd.error;
                let mut ctx = Ctx {
                    mem,
                    pid,
                    data: cmd.data,
                    sev_fd: cmd.sev_fd,
                    error: &mut error,
                };
                let r = self.encrypt_op(vm, asids, id, &mut ctx)?;
                cmd.error = error;
                Ok(match r {
                    Ok(()) => IoctlReply::ok(cmd.as_bytes().to_vec()),
                    Err(e) => IoctlReply::failed(e, cmd.as_bytes().to_vec()),
                })
            }
            _ => Err(Errno::ENOTTY),
        }
    }

    /// `sev_mem_enc_ioctl`'s switch. The outer error is for ids KVM does not copy back.
    fn encrypt_op(
        &self,
        vm: &mut Vm,
        asids: &mut KvmAsids,
        id: KvmSevCmdId,
        ctx: &mut Ctx<'_>,
    ) -> Result<Result<(), Errno>, Errno> {
        use KvmSevCmdId::*;
        let mut dev = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        let dev = &mut *dev;
        Ok(match id {
            Init | EsInit => self.sev_guest_init(vm, asids, dev, id == EsInit, ctx),
            LaunchStart => self.launch_start(vm, dev, ctx),
            LaunchUpdateData => self.launch_update_data(vm, dev, ctx),
            LaunchUpdateVmsa => self.launch_update_vmsa(vm, dev, ctx),
            LaunchMeasure => self.launch_measure(vm, dev, ctx),
            LaunchSecret => self.launch_secret(vm, dev, ctx),
            LaunchFinish => self.with_guest(vm, ctx, |h, ctx| {
                ctx.fw(dev.firmware_mut().launch_finish(h))
            }),
            GuestStatus => self.guest_status(vm, dev, ctx),
            DbgDecrypt => self.dbg_crypt(vm, dev, ctx, true),
            DbgEncrypt => self.dbg_crypt(vm, dev, ctx, false),
            // INIT2 needs a VM created with an SEV type; migration and attestation reports
            // are not offered by this daemon.
            _ => return Err(Errno::EINVAL),
        })
    }

    /// `sev_guest_init`: an ASID and an initialised platform.
    fn sev_guest_init(
        &self,
        vm: &mut Vm,
        asids: &mut KvmAsids,
        dev: &mut SevDev,
        es: bool,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Errno> {
        if es && asids.range(true).is_empty() {
            return Err(Errno::ENOTTY);
        }
        if vm.sev.is_some() {
            return Err(Errno::EINVAL);
        }
        let asid = asids.alloc(es, dev)?;
        if let Err(e) = dev.platform_init(ctx.error) {
            asids.free(asid);
            return Err(e);
        }
        vm.sev = Some(SevVm {
            es,
            asid,
            handle: 0,
            fd: 0,
            vmsa_mem: VecGuestMemory::new(),
        });
        Ok(())
    }

    /// The SEV context, or ENOTTY for a VM that is not an SEV guest.
    fn sev(vm: &mut Vm) -> Result<&mut SevVm, Errno> {
        vm.sev.as_mut().ok_or(Errno::ENOTTY)
    }

    /// `sev_issue_cmd`'s fd check: the fd must be our `sev` node in the caller's table.
    fn check_fd(&self, pid: u32, fd: u32) -> Result<(), Errno> {
        if self.fd_check.is_sev_node(pid, fd) {
            Ok(())
        } else {
            Err(Errno::EBADF)
        }
    }

    /// Runs `f` with the guest's handle, after KVM's checks for a launched SEV guest.
    fn with_guest(
        &self,
        vm: &mut Vm,
        ctx: &mut Ctx<'_>,
        f: impl FnOnce(u32, &mut Ctx<'_>) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        let sev = Self::sev(vm)?;
        self.check_fd(ctx.pid, sev.fd)?;
        let handle = sev.handle;
        f(handle, ctx)
    }

    /// `sev_launch_start`: the firmware context, then ACTIVATE with the VM's ASID.
    fn launch_start(&self, vm: &mut Vm, dev: &mut SevDev, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let sev = Self::sev(vm)?;
        if sev.handle != 0 {
            return Err(Errno::EINVAL);
        }
        let mut params: KvmSevLaunchStart = read_obj(ctx.mem, ctx.data)?;
        let godh = match params.dh_uaddr {
            0 => None,
            a => Some(copy_user_blob(ctx.mem, a, params.dh_len)?),
        };
        let session = match params.session_uaddr {
            0 => None,
            a => Some(copy_user_blob(ctx.mem, a, params.session_len)?),
        };
        self.check_fd(ctx.pid, ctx.sev_fd)?;
        let fw = dev.firmware_mut();
        let owner = godh
            .as_deref()
            .map(|g| (g, session.as_deref().unwrap_or(&[])));
        let handle = ctx.fw(fw.launch_start(params.handle, params.policy, owner))?;
        if let Err(status) = fw.activate(handle, sev.asid) {
            *ctx.error = status as u32;
            let _ = fw.decommission(handle);
            return Err(Errno::EIO);
        }
        params.handle = handle;
        if write_obj(ctx.mem, ctx.data, &params).is_err() {
            let _ = fw.deactivate(handle);
            let _ = fw.decommission(handle);
            return Err(Errno::EFAULT);
        }
        sev.handle = handle;
        sev.fd = ctx.sev_fd;
        Ok(())
    }

    /// `sev_launch_update_data`: each guest-physically contiguous piece in turn.
    fn launch_update_data(
        &self,
        vm: &mut Vm,
        dev: &mut SevDev,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Errno> {
        let sev = vm.sev.as_ref().ok_or(Errno::ENOTTY)?;
        let params: KvmSevLaunchUpdateData = read_obj(ctx.mem, ctx.data)?;
        let pieces = vm.slots.translate(params.uaddr, params.len as u64)?;
        self.check_fd(ctx.pid, sev.fd)?;
        let mem = vm.slots.memory(ctx.mem);
        let fw = dev.firmware_mut();
        for (gpa, len) in pieces {
            let mut done = 0;
            while done < len {
                let n = (len - done).min(UPDATE_PIECE);
                ctx.fw(fw.launch_update_data(
                    sev.handle,
                    GuestAddress(gpa.0 + done),
                    n as u32,
                    &mem,
                ))?;
                done += n;
            }
        }
        Ok(())
    }

    /// `sev_launch_update_vmsa`: every vCPU's save area, in vCPU order.
    fn launch_update_vmsa(
        &self,
        vm: &mut Vm,
        dev: &mut SevDev,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Errno> {
        let sev = vm.sev.as_ref().ok_or(Errno::ENOTTY)?;
        if !sev.es {
            return Err(Errno::ENOTTY);
        }
        self.check_fd(ctx.pid, sev.fd)?;
        let fw = dev.firmware_mut();
        for (&vcpu, vmsa) in vm.vmsas.iter_mut() {
            if vmsa.protected {
                return Err(Errno::EINVAL);
            }
            let gpa = GuestAddress(VMSA_BASE + vcpu as u64 * PAGE);
            if sev.vmsa_mem.check_range(gpa, PAGE).is_err() {
                sev.vmsa_mem.add_region(gpa, PAGE as usize);
            }
            sev.vmsa_mem
                .write(gpa, &vmsa.page[..])
                .map_err(|_| Errno::EFAULT)?;
            ctx.fw(fw.launch_update_vmsa(sev.handle, gpa, PAGE as u32, &sev.vmsa_mem))?;
            vmsa.protected = true;
            vmsa.page.fill(0);
        }
        Ok(())
    }

    /// `sev_launch_measure`: `len` 0 asks for the length.
    fn launch_measure(
        &self,
        vm: &mut Vm,
        dev: &mut SevDev,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Errno> {
        let sev = vm.sev.as_ref().ok_or(Errno::ENOTTY)?;
        let mut params: KvmSevLaunchMeasure = read_obj(ctx.mem, ctx.data)?;
        let query = params.len == 0;
        let mut len = 0;
        if !query && params.uaddr != 0 {
            if params.len > SEV_FW_BLOB_MAX_SIZE {
                return Err(Errno::EINVAL);
            }
            len = params.len;
        }
        self.check_fd(ctx.pid, sev.fd)?;
        let r = dev.firmware_mut().launch_measure(sev.handle, &mut len);
        let r = ctx.fw(r);
        if !query {
            let blob = r?;
            if params.uaddr != 0 {
                let mut out = vec![0u8; params.len as usize];
                let n = out.len().min(blob.len());
                out[..n].copy_from_slice(&blob[..n]);
                super::write_bytes(ctx.mem, params.uaddr, &out)?;
            }
        }
        params.len = len;
        write_obj(ctx.mem, ctx.data, &params)?;
        r.map(drop)
    }

    /// `sev_launch_secret`: the secret's guest range must be contiguous guest memory.
    fn launch_secret(&self, vm: &mut Vm, dev: &mut SevDev, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let sev = vm.sev.as_ref().ok_or(Errno::ENOTTY)?;
        let params: KvmSevLaunchSecret = read_obj(ctx.mem, ctx.data)?;
        let pieces = vm
            .slots
            .translate(params.guest_uaddr, params.guest_len as u64)?;
        let [(gpa, _)] = pieces[..] else {
            return Err(Errno::EINVAL);
        };
        let trans = copy_user_blob(ctx.mem, params.trans_uaddr, params.trans_len)?;
        let header = copy_user_blob(ctx.mem, params.hdr_uaddr, params.hdr_len)?;
        self.check_fd(ctx.pid, sev.fd)?;
        let mem = vm.slots.memory(ctx.mem);
        let secret = LaunchSecret {
            header: &header,
            guest_gpa: gpa,
            guest_len: params.guest_len,
            trans: &trans,
        };
        let r = dev.firmware_mut().launch_secret(sev.handle, secret, &mem);
        ctx.fw(r)
    }

    /// `sev_guest_status`.
    fn guest_status(&self, vm: &mut Vm, dev: &mut SevDev, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let sev = vm.sev.as_ref().ok_or(Errno::ENOTTY)?;
        self.check_fd(ctx.pid, sev.fd)?;
        let st = ctx.fw(dev.firmware().guest_status(sev.handle))?;
        let out = KvmSevGuestStatus {
            handle: st.handle,
            policy: st.policy,
            state: st.state as u32,
        };
        write_obj(ctx.mem, ctx.data, &out)
    }

    /// `sev_dbg_crypt`: guest memory to a plain buffer (decrypt) or back (encrypt), with
    /// unaligned ends handled as KVM does, by reading and merging whole 16-byte blocks.
    fn dbg_crypt(
        &self,
        vm: &mut Vm,
        dev: &mut SevDev,
        ctx: &mut Ctx<'_>,
        decrypt: bool,
    ) -> Result<(), Errno> {
        let sev = vm.sev.as_ref().ok_or(Errno::ENOTTY)?;
        let d: KvmSevDbg = read_obj(ctx.mem, ctx.data)?;
        if d.len == 0 || d.src_uaddr.checked_add(d.len as u64).is_none() || d.dst_uaddr == 0 {
            return Err(Errno::EINVAL);
        }
        let (guest_uaddr, plain_uaddr) = if decrypt {
            (d.src_uaddr, d.dst_uaddr)
        } else {
            (d.dst_uaddr, d.src_uaddr)
        };
        let pieces = vm.slots.translate(guest_uaddr, d.len as u64)?;
        self.check_fd(ctx.pid, sev.fd)?;
        let mem = vm.slots.memory(ctx.mem);
        let fw = dev.firmware();
        let mut off = 0u64;
        for (gpa, len) in pieces {
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(PAGE);
                let at = gpa.0 + done;
                let start = at & !15;
                let end = (at + n + 15) & !15;
                let mut span = ctx.fw(fw.dbg_decrypt(
                    sev.handle,
                    GuestAddress(start),
                    (end - start) as u32,
                    &mem,
                ))?;
                let inner = (at - start) as usize..(at - start + n) as usize;
                let user = UserAddr(plain_uaddr.wrapping_add(off + done));
                if decrypt {
                    ctx.mem
                        .write(user, &span[inner])
                        .map_err(|_| Errno::EFAULT)?;
                } else {
                    ctx.mem
                        .read(user, &mut span[inner])
                        .map_err(|_| Errno::EFAULT)?;
                    ctx.fw(fw.dbg_encrypt(sev.handle, GuestAddress(start), &span, &mem))?;
                }
                done += n;
            }
            off += len;
        }
        Ok(())
    }

    /// `SEVD_VM_GUEST_ACCESS`: guest memory as the guest reads or writes it.
    fn guest_access(
        &self,
        vm: &mut Vm,
        mem: &dyn CallerMemory,
        arg: &SevdGuestAccess,
    ) -> Result<(), Errno> {
        let sev = vm.sev.as_ref().ok_or(Errno::ENOTTY)?;
        if sev.handle == 0 || arg.len == 0 || arg.len > GUEST_ACCESS_MAX {
            return Err(Errno::EINVAL);
        }
        let guest = vm.slots.memory(mem);
        let dev = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        let fw = dev.firmware();
        let mut done = 0u64;
        while done < arg.len as u64 {
            let n = (arg.len as u64 - done).min(64 * 1024) as usize;
            let gpa = GuestAddress(arg.gpa.checked_add(done).ok_or(Errno::EFAULT)?);
            let user = UserAddr(arg.uaddr.wrapping_add(done));
            let mut buf = vec![0u8; n];
            if arg.write != 0 {
                mem.read(user, &mut buf).map_err(|_| Errno::EFAULT)?;
                fw.guest_write(sev.handle, gpa, &buf, &guest)
                    .map_err(|_| Errno::EFAULT)?;
            } else {
                fw.guest_view(sev.handle, gpa, &mut buf, &guest)
                    .map_err(|_| Errno::EFAULT)?;
                mem.write(user, &buf).map_err(|_| Errno::EFAULT)?;
            }
            done += n as u64;
        }
        Ok(())
    }
}
