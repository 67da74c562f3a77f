//! The VM mirror: what KVM's `arch/x86/kvm/svm/sev.c` does for `KVM_MEMORY_ENCRYPT_OP`
//! (reference/linux-abi.md §3), behind the `sev-vm` node. Each open file is one VM.
//!
//! Locks: the VM table only long enough to find a VM; each VM's own lock for its command;
//! the ASIDs, then the firmware (the driver's lock), briefly. The caller's memory, guest
//! memory included, is staged before the firmware's lock is taken and written back after it
//! is released, so a caller whose pages never arrive holds up nobody but itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use uapi::ioctl::{
    KVM_SET_USER_MEMORY_REGION, SEVD_VM_ENCRYPT_OP, SEVD_VM_GUEST_ACCESS, SEVD_VM_RECEIVE_PAGES,
    SEVD_VM_RECEIVE_VMSA, SEVD_VM_SEND_PAGES, SEVD_VM_SEND_VMSA, SEVD_VM_SET_TYPE,
    SEVD_VM_SET_VMSA, SEVD_VM_SNP_GUEST_REQUEST,
};
use uapi::kvm::*;
use uapi::psp_sev::SEV_FW_BLOB_MAX_SIZE;
use uapi::ByteValued;
use vfs::{CallerMemory, Errno, IoctlReply, IoctlRequest, UserAddr};

use super::kvm_asids::KvmAsids;
use super::sev_dev::{SevDev, NOT_REACHED};
use super::stage_pipe::{each_staged, stage_into, unstage};
use super::vm_memory::Slots;
use super::{read_obj, write_bytes, write_obj};
use crate::firmware::{FwResult, LaunchSecret};
use crate::memctl::{GuestAddress, GuestMemory, VecGuestMemory};

mod attestation;
mod init;
mod migrate;
mod migrate_pages;
mod snp;
mod snp_update;
pub use init::SUPPORTED_VMSA_FEATURES;

/// Where VMSA pages live in the firmware's view: above any guest physical address.
const VMSA_BASE: u64 = 1 << 52;
const PAGE: u64 = 4096;
/// Largest SEVD_VM_GUEST_ACCESS.
const GUEST_ACCESS_MAX: u32 = 16 << 20;
/// Largest piece of guest memory staged and handed to the firmware at once. Pieces are read
/// ahead and written behind while the firmware works (`stage_pipe`), so a small piece costs
/// little time and bounds the daemon's memory: three pieces per update in flight.
const UPDATE_PIECE: u64 = 1 << 20;
/// Largest piece handed to the firmware at once when it works in place (the kernel's
/// `sev_launch_update_data` hands it whole pinned ranges; 16 MiB bounds one command).
const IN_PLACE_PIECE: u64 = 16 << 20;
/// LAUNCH_SECRET's guest range is staged only up to this; the firmware refuses longer ones
/// (its buffer is 0x5000 bytes) before it would write.
const SECRET_STAGE_MAX: u32 = 64 << 10;

/// Whether LAUNCH_UPDATE_DATA stages guest memory before the firmware's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staging {
    /// The daemon: callers are other processes, any of which may stall, and the lock is
    /// shared by all of them.
    Always,
    /// The embedded platform: the only caller is this process, so there is nobody to hold
    /// up, and the firmware works on guest memory in place (no extra copy).
    InPlace,
}

/// Tells whether an fd number in a process is an open file of this daemon's `sev` node
/// (what KVM's check of `f_op == &sev_fops` is for).
pub trait SevFdCheck: Send + Sync {
    /// Whether `fd` in the process of thread `pid` is our `sev` node.
    fn is_sev_node(&self, pid: u32, fd: u32) -> bool;
}

/// What one user may take of the daemon and the platform through `sev-vm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open VMs per uid (`KVM_CREATE_VM` beyond it: ENOMEM).
    pub vms_per_uid: u32,
    /// vCPU save areas per VM (`SEVD_VM_SET_VMSA` beyond it: ENOSPC); KVM_MAX_VCPUS is 4096.
    pub vcpus_per_vm: u32,
    /// Bytes of guest memory a VM may register (`KVM_SET_USER_MEMORY_REGION` beyond it:
    /// ENOMEM). Registering costs the daemon nothing (the memory is the caller's); the
    /// default, 16 TiB, is above what a two-socket EPYC holds (12 TiB).
    pub memory_per_vm: u64,
    /// ASIDs per uid, 0 for no limit (INIT beyond it: EBUSY, as the misc cgroup charge).
    pub asids_per_uid: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            vms_per_uid: 64,
            vcpus_per_vm: 512,
            memory_per_vm: 16 << 40,
            asids_per_uid: 0,
        }
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
    /// An SNP guest (`KVM_X86_SNP_VM`): only the SNP ids are taken, and `handle` is the
    /// firmware's guest context.
    snp: bool,
    asid: u32,
    /// Firmware handle, 0 until LAUNCH_START.
    handle: u32,
    /// The `sev_fd` LAUNCH_START came with; later commands go through it.
    fd: u32,
    /// Where the firmware sees the VMSA pages.
    vmsa_mem: VecGuestMemory,
    /// SEV_FEATURES of every save area (`kvm_sev_init.vmsa_features`; 0 for the legacy init).
    vmsa_features: u64,
    /// Whether the vCPUs' FPU state goes into their save areas (INIT2); the legacy init
    /// leaves that area zero.
    sync_fpu: bool,
}

/// One VM.
struct Vm {
    /// The process that created it (KVM's `kvm->mm`): only it may use it.
    owner: u32,
    /// The uid that created it, charged for it.
    uid: u32,
    /// `KVM_CREATE_VM`'s type (`SEVD_VM_SET_TYPE`; the default type until then).
    vm_type: u32,
    /// Whether any ioctl reached it yet (the type can only be set before).
    used: bool,
    /// The memory object backing its private pages, as the RMP names them.
    object: u64,
    slots: Slots,
    sev: Option<SevVm>,
    vmsas: BTreeMap<u32, Vmsa>,
    /// The buffers of the last run of pages moved (`SEVD_VM_SEND_PAGES`), kept so a
    /// migration does not fault in fresh memory for every run. They hold only ciphertext.
    run: migrate_pages::RunBuffers,
}

/// A VM in the table, with what is needed without taking its lock (which a command whose
/// caller stalls may hold).
struct VmEntry {
    uid: u32,
    vm: Arc<Mutex<Vm>>,
}

/// Every VM of the daemon, and KVM's ASIDs.
pub struct KvmSev {
    dev: Arc<Mutex<SevDev>>,
    fd_check: Arc<dyn SevFdCheck>,
    vms: Mutex<HashMap<u64, VmEntry>>,
    asids: Mutex<KvmAsids>,
    limits: Limits,
    staging: Staging,
    /// (uid, limit) pairs already logged: a limit is logged once, not per call.
    warned: Mutex<HashSet<(u32, &'static str)>>,
    /// The next VM's memory object.
    next_object: std::sync::atomic::AtomicU64,
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

/// What an ioctl on a VM came to: the reply, and the firmware status if the firmware ran.
#[derive(Debug)]
pub struct VmOutcome {
    /// The reply (or an early errno, nothing copied back).
    pub reply: Result<IoctlReply, Errno>,
    /// The firmware's status, `None` when the command never reached it.
    pub status: Option<u32>,
}

/// `psp_copy_user_blob`: EINVAL for a null or empty blob and above 16 KiB.
fn copy_user_blob(mem: &dyn CallerMemory, addr: u64, len: u32) -> Result<Vec<u8>, Errno> {
    if addr == 0 || len == 0 || len > SEV_FW_BLOB_MAX_SIZE {
        return Err(Errno::EINVAL);
    }
    mem.read_vec(UserAddr(addr), len as usize)
        .map_err(|_| Errno::EFAULT)
}

/// Copies `len` bytes of guest memory at `gpa` out of the VMM's memory, for the firmware to
/// work on without touching the VMM's.
fn stage(
    slots: &Slots,
    mem: &dyn CallerMemory,
    gpa: u64,
    len: u64,
) -> Result<VecGuestMemory, Errno> {
    stage_into(Vec::new(), slots, mem, gpa, len)
}

/// The 16-byte-aligned span around `at`+`n` (the memory controller's block).
fn block_span(at: u64, n: u64) -> Result<(u64, u64), Errno> {
    let end = at
        .checked_add(n)
        .and_then(|e| e.checked_add(15))
        .ok_or(Errno::EFAULT)?;
    Ok((at & !15, end & !15))
}

impl KvmSev {
    /// The VM side over the shared driver.
    pub fn new(
        dev: Arc<Mutex<SevDev>>,
        fd_check: Arc<dyn SevFdCheck>,
        limits: Limits,
        staging: Staging,
    ) -> Self {
        let config = dev
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .firmware()
            .config();
        KvmSev {
            dev,
            fd_check,
            vms: Mutex::new(HashMap::new()),
            asids: Mutex::new(KvmAsids::new(
                config.min_sev_asid,
                config.max_asid,
                limits.asids_per_uid,
            )),
            limits,
            staging,
            warned: Mutex::new(HashSet::new()),
            next_object: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn dev(&self) -> MutexGuard<'_, SevDev> {
        self.dev.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn asids(&self) -> MutexGuard<'_, KvmAsids> {
        self.asids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs that `uid` hit `limit`, once per uid and limit.
    fn limit_hit(&self, uid: u32, limit: &'static str, errno: Errno) -> Errno {
        let first = self
            .warned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((uid, limit));
        if first {
            log::warn!("uid {uid} reached the limit on {limit}; further requests get {errno} (logged once)");
        }
        errno
    }

    /// `KVM_CREATE_VM`: a VM for the open file `fh`, owned by process `owner` of user `uid`.
    /// A handle already in use is refused, never replaced.
    pub fn create_vm(&self, fh: u64, owner: u32, uid: u32) -> Result<(), Errno> {
        let mut vms = self.vms.lock().unwrap_or_else(|e| e.into_inner());
        if vms.contains_key(&fh) {
            log::error!("VM handle {fh} is already in use; refusing to replace it");
            return Err(Errno::EEXIST);
        }
        let mine = vms.values().filter(|e| e.uid == uid).count();
        if mine >= self.limits.vms_per_uid as usize {
            return Err(self.limit_hit(uid, "open VMs", Errno::ENOMEM));
        }
        let vm = Vm {
            owner,
            uid,
            vm_type: KVM_X86_DEFAULT_VM,
            used: false,
            object: self
                .next_object
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            slots: Slots::default(),
            sev: None,
            vmsas: BTreeMap::new(),
            run: Default::default(),
        };
        vms.insert(
            fh,
            VmEntry {
                uid,
                vm: Arc::new(Mutex::new(vm)),
            },
        );
        Ok(())
    }

    /// The VM's file is closed: `sev_vm_destroy` (DEACTIVATE, DECOMMISSION, ASID freed).
    pub fn destroy_vm(&self, fh: u64) {
        let vm = self
            .vms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh);
        let Some(entry) = vm else { return };
        let vm = entry.vm.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sev) = &vm.sev else { return };
        if sev.snp {
            self.snp_destroy(vm.object, sev.handle);
        } else if sev.handle != 0 {
            let mut dev = self.dev();
            let fw = dev.firmware_mut();
            let _ = fw.deactivate(sev.handle);
            if let Err(s) = fw.decommission(sev.handle) {
                log::warn!("DECOMMISSION of handle {} failed: {}", sev.handle, s);
            }
        }
        self.asids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free(sev.asid);
    }

    /// Number of live VMs.
    pub fn vm_count(&self) -> usize {
        self.vms.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// An ioctl on VM `fh` from thread `pid` of process `owner`, whose memory is `mem`.
    pub fn ioctl(
        &self,
        pid: u32,
        owner: u32,
        mem: &dyn CallerMemory,
        fh: u64,
        request: IoctlRequest<'_>,
    ) -> Result<IoctlReply, Errno> {
        self.ioctl_outcome(pid, owner, mem, fh, request).reply
    }

    /// As [`KvmSev::ioctl`], with the firmware status for the audit log.
    pub fn ioctl_outcome(
        &self,
        pid: u32,
        owner: u32,
        mem: &dyn CallerMemory,
        fh: u64,
        request: IoctlRequest<'_>,
    ) -> VmOutcome {
        let mut status = None;
        let reply = self.dispatch(pid, owner, mem, fh, request, &mut status);
        VmOutcome { reply, status }
    }

    fn dispatch(
        &self,
        pid: u32,
        owner: u32,
        mem: &dyn CallerMemory,
        fh: u64,
        request: IoctlRequest<'_>,
        status: &mut Option<u32>,
    ) -> Result<IoctlReply, Errno> {
        let vm = self
            .vms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .map(|e| e.vm.clone())
            .ok_or(Errno::EBADF)?;
        let mut vm = vm.lock().unwrap_or_else(|e| e.into_inner());
        // KVM: a VM belongs to the mm that made it.
        if vm.owner != owner {
            return Err(Errno::EIO);
        }
        let first = !std::mem::replace(&mut vm.used, true);
        match request.cmd {
            SEVD_VM_SET_TYPE => {
                let ty: [u8; 8] = request.in_data.try_into().map_err(|_| Errno::EINVAL)?;
                self.set_type(&mut vm, u64::from_ne_bytes(ty), first)?;
                Ok(IoctlReply::ok(vec![]))
            }
            KVM_SET_USER_MEMORY_REGION => {
                let r =
                    KvmUserspaceMemoryRegion::from_slice(request.in_data).ok_or(Errno::EINVAL)?;
                if vm.slots.size_with(&r) > self.limits.memory_per_vm {
                    return Err(self.limit_hit(vm.uid, "guest memory per VM", Errno::ENOMEM));
                }
                vm.slots.set(&r)?;
                Ok(IoctlReply::ok(vec![]))
            }
            SEVD_VM_SET_VMSA => {
                let arg = SevdVmsa::from_slice(request.in_data).ok_or(Errno::EINVAL)?;
                self.set_vmsa(&mut vm, mem, &arg)?;
                Ok(IoctlReply::ok(vec![]))
            }
            SEVD_VM_GUEST_ACCESS => {
                let arg = SevdGuestAccess::from_slice(request.in_data).ok_or(Errno::EINVAL)?;
                self.guest_access(&vm, mem, &arg)?;
                Ok(IoctlReply::ok(arg.as_bytes().to_vec()))
            }
            SEVD_VM_SNP_GUEST_REQUEST => {
                let mut arg =
                    SevdSnpGuestRequest::from_slice(request.in_data).ok_or(Errno::EINVAL)?;
                let fw_status = self.snp_guest_request(&vm, mem, &mut arg)?;
                *status = fw_status;
                Ok(IoctlReply::ok(arg.as_bytes().to_vec()))
            }
            SEVD_VM_SEND_VMSA | SEVD_VM_RECEIVE_VMSA => {
                let mut arg = SevdVmsaPacket::from_slice(request.in_data).ok_or(Errno::EINVAL)?;
                let mut error = NOT_REACHED;
                let r = if request.cmd == SEVD_VM_SEND_VMSA {
                    self.send_vmsa(&mut vm, mem, pid, &mut arg, &mut error)
                } else {
                    self.receive_vmsa(&mut vm, mem, pid, &arg, &mut error)
                };
                if error != NOT_REACHED {
                    arg.error = error;
                    *status = Some(error);
                }
                Ok(match r {
                    Ok(()) => IoctlReply::ok(arg.as_bytes().to_vec()),
                    Err(e) => IoctlReply::failed(e, arg.as_bytes().to_vec()),
                })
            }
            SEVD_VM_SEND_PAGES | SEVD_VM_RECEIVE_PAGES => {
                let mut arg = SevdPages::from_slice(request.in_data).ok_or(Errno::EINVAL)?;
                let mut error = NOT_REACHED;
                let r = if request.cmd == SEVD_VM_SEND_PAGES {
                    self.send_pages(&mut vm, mem, pid, &mut arg, &mut error)
                } else {
                    self.receive_pages(&mut vm, mem, pid, &mut arg, &mut error)
                };
                if error != NOT_REACHED {
                    *status = Some(error);
                }
                Ok(match r {
                    Ok(()) => IoctlReply::ok(arg.as_bytes().to_vec()),
                    Err(e) => IoctlReply::failed(e, arg.as_bytes().to_vec()),
                })
            }
            SEVD_VM_ENCRYPT_OP => {
                let mut cmd = KvmSevCmd::from_slice(request.in_data).ok_or(Errno::EINVAL)?;
                let id = KvmSevCmdId::from_id(cmd.id).ok_or(Errno::EINVAL)?;
                let mut error = NOT_REACHED;
                let mut ctx = Ctx {
                    mem,
                    pid,
                    data: cmd.data,
                    sev_fd: cmd.sev_fd,
                    error: &mut error,
                };
                let r = self.encrypt_op(&mut vm, id, &mut ctx)?;
                if error != NOT_REACHED {
                    cmd.error = error;
                    *status = Some(error);
                }
                Ok(match r {
                    Ok(()) => IoctlReply::ok(cmd.as_bytes().to_vec()),
                    Err(e) => IoctlReply::failed(e, cmd.as_bytes().to_vec()),
                })
            }
            _ => Err(Errno::ENOTTY),
        }
    }

    /// `SEVD_VM_SET_VMSA`: a vCPU's initial save area, until LAUNCH_UPDATE_VMSA protects it.
    fn set_vmsa(&self, vm: &mut Vm, mem: &dyn CallerMemory, arg: &SevdVmsa) -> Result<(), Errno> {
        // KVM_MAX_VCPUS.
        if arg.vcpu >= 4096 {
            return Err(Errno::EINVAL);
        }
        if vm.vmsas.get(&arg.vcpu).is_some_and(|v| v.protected) {
            return Err(Errno::EINVAL);
        }
        if !vm.vmsas.contains_key(&arg.vcpu) && vm.vmsas.len() >= self.limits.vcpus_per_vm as usize
        {
            return Err(self.limit_hit(vm.uid, "vCPUs per VM", Errno::ENOSPC));
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
        Ok(())
    }

    /// `sev_mem_enc_ioctl`'s switch. The outer error is for ids KVM does not copy back.
    fn encrypt_op(
        &self,
        vm: &mut Vm,
        id: KvmSevCmdId,
        ctx: &mut Ctx<'_>,
    ) -> Result<Result<(), Errno>, Errno> {
        use KvmSevCmdId::*;
        // Once KVM_SEV_INIT2 made the VM an SNP guest, only the SNP ids.
        if vm.sev.as_ref().is_some_and(|s| s.snp) && !id.is_snp() {
            return Ok(Err(Errno::EPERM));
        }
        Ok(match id {
            Init | EsInit => self.legacy_init(vm, id == EsInit, ctx),
            Init2 => self.init2(vm, ctx),
            LaunchStart => self.launch_start(vm, ctx),
            LaunchUpdateData => self.launch_update_data(vm, ctx),
            LaunchUpdateVmsa => self.launch_update_vmsa(vm, ctx),
            LaunchMeasure => self.launch_measure(vm, ctx),
            LaunchSecret => self.launch_secret(vm, ctx),
            LaunchFinish => self.with_guest(vm, ctx, |h, ctx| {
                let r = self.dev().firmware_mut().launch_finish(h);
                ctx.fw(r)
            }),
            GuestStatus => self.guest_status(vm, ctx),
            DbgDecrypt => self.dbg_crypt(vm, ctx, true),
            DbgEncrypt => self.dbg_crypt(vm, ctx, false),
            SnpLaunchStart => self.snp_launch_start(vm, ctx),
            SnpLaunchUpdate => self.snp_launch_update(vm, ctx),
            SnpLaunchFinish => self.snp_launch_finish(vm, ctx),
            SendStart => self.send_start(vm, ctx),
            SendUpdateData => self.send_update_data(vm, ctx),
            SendFinish => self.send_end(vm, ctx, false),
            SendCancel => self.send_end(vm, ctx, true),
            ReceiveStart => self.receive_start(vm, ctx),
            ReceiveUpdateData => self.receive_update_data(vm, ctx),
            ReceiveFinish => self.receive_finish(vm, ctx),
            GetAttestationReport => self.attestation_report(vm, ctx),
            // KVM has no VMSA ids for migration: 10 and 14 fall to its default.
            _ => return Err(Errno::EINVAL),
        })
    }

    /// The SEV context, or ENOTTY for a VM that is not an SEV guest.
    fn sev(vm: &Vm) -> Result<&SevVm, Errno> {
        vm.sev.as_ref().ok_or(Errno::ENOTTY)
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
        f(sev.handle, ctx)
    }

    /// `sev_launch_start`: the firmware context, then ACTIVATE with the VM's ASID.
    fn launch_start(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let sev = vm.sev.as_mut().ok_or(Errno::ENOTTY)?;
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
        let owner = godh
            .as_deref()
            .map(|g| (g, session.as_deref().unwrap_or(&[])));
        let handle = self.new_active_guest(ctx, sev.asid, |fw| {
            fw.launch_start(params.handle, params.policy, owner)
        })?;
        params.handle = handle;
        self.hand_back(ctx, &params, handle)?;
        sev.handle = handle;
        sev.fd = ctx.sev_fd;
        Ok(())
    }

    /// A new guest context from `start`, then ACTIVATE with the VM's ASID, as KVM does after
    /// LAUNCH_START and RECEIVE_START; the context goes again if ACTIVATE fails.
    fn new_active_guest(
        &self,
        ctx: &mut Ctx<'_>,
        asid: u32,
        start: impl FnOnce(&mut crate::firmware::Firmware) -> FwResult<u32>,
    ) -> Result<u32, Errno> {
        let mut dev = self.dev();
        let fw = dev.firmware_mut();
        let handle = ctx.fw(start(fw))?;
        if let Err(status) = fw.activate(handle, asid) {
            *ctx.error = status as u32;
            let _ = fw.decommission(handle);
            return Err(Errno::EIO);
        }
        Ok(handle)
    }

    /// Copies `params`, which carry the new `handle`, back to the caller; if that faults,
    /// the guest goes (DEACTIVATE, DECOMMISSION) and the caller gets EFAULT, as from KVM.
    fn hand_back<T: ByteValued>(
        &self,
        ctx: &mut Ctx<'_>,
        params: &T,
        handle: u32,
    ) -> Result<(), Errno> {
        if write_obj(ctx.mem, ctx.data, params).is_err() {
            let mut dev = self.dev();
            let fw = dev.firmware_mut();
            let _ = fw.deactivate(handle);
            let _ = fw.decommission(handle);
            return Err(Errno::EFAULT);
        }
        Ok(())
    }

    /// `sev_launch_update_data`: each guest-physically contiguous piece in turn, staged.
    fn launch_update_data(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let sev = Self::sev(vm)?;
        let params: KvmSevLaunchUpdateData = read_obj(ctx.mem, ctx.data)?;
        let pieces = vm.slots.translate(params.uaddr, params.len as u64)?;
        self.check_fd(ctx.pid, sev.fd)?;
        if self.staging == Staging::InPlace {
            let mem = vm.slots.memory(ctx.mem);
            let mut dev = self.dev();
            for (gpa, len) in pieces {
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(IN_PLACE_PIECE);
                    let at = GuestAddress(gpa.0 + done);
                    let r = dev
                        .firmware_mut()
                        .launch_update_data(sev.handle, at, n as u32, &mem);
                    ctx.fw(r)?;
                    done += n;
                }
            }
            return Ok(());
        }
        let mut staged_pieces = vec![];
        for (gpa, len) in pieces {
            let mut done = 0;
            while done < len {
                let n = (len - done).min(UPDATE_PIECE);
                staged_pieces.push((gpa.0 + done, n));
                done += n;
            }
        }
        let handle = sev.handle;
        each_staged(&vm.slots, ctx.mem, &staged_pieces, |at, n, staged| {
            let r = self.dev().firmware_mut().launch_update_data(
                handle,
                GuestAddress(at),
                n as u32,
                staged,
            );
            super::fw_result(ctx.error, r)
        })
    }

    /// `sev_launch_update_vmsa`: every vCPU's save area, in vCPU order.
    fn launch_update_vmsa(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let sev = vm.sev.as_ref().ok_or(Errno::ENOTTY)?;
        if !sev.es {
            return Err(Errno::ENOTTY);
        }
        self.check_fd(ctx.pid, sev.fd)?;
        let mut dev = self.dev();
        let fw = dev.firmware_mut();
        for (&vcpu, vmsa) in vm.vmsas.iter_mut() {
            if vmsa.protected {
                return Err(Errno::EINVAL);
            }
            let gpa = GuestAddress(VMSA_BASE + vcpu as u64 * PAGE);
            if sev.vmsa_mem.check_range(gpa, PAGE).is_err() {
                sev.vmsa_mem.add_region(gpa, PAGE as usize);
            }
            let mut page = vmsa.page.clone();
            init::sync_vmsa(&mut page, sev.vmsa_features, sev.sync_fpu)?;
            sev.vmsa_mem
                .write(gpa, &page[..])
                .map_err(|_| Errno::EFAULT)?;
            zeroize::Zeroize::zeroize(&mut page[..]);
            ctx.fw(fw.launch_update_vmsa(sev.handle, gpa, PAGE as u32, &sev.vmsa_mem))?;
            vmsa.protected = true;
            vmsa.page.fill(0);
        }
        Ok(())
    }

    /// `sev_launch_measure`: `len` 0 asks for the length.
    fn launch_measure(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let mut params: KvmSevLaunchMeasure = read_obj(ctx.mem, ctx.data)?;
        let (r, len) = self.fill_blob(vm, ctx, (params.uaddr, params.len), |fw, h, len| {
            fw.launch_measure(h, len).map(|m| m.to_vec())
        })?;
        params.len = len;
        write_obj(ctx.mem, ctx.data, &params)?;
        r
    }

    /// KVM's shape for a command that fills a caller's buffer (`sev_launch_measure`,
    /// `sev_get_attestation_report`): `len` 0 asks for the length (the firmware's
    /// INVALID_LENGTH, the length given back); a null `uaddr` with a length gives the firmware
    /// no buffer; more than 16 KiB is EINVAL. The buffer gets `len` bytes, zero beyond the
    /// firmware's. Returns the outcome and the length to write back, or an errno when
    /// nothing is to be written back (KVM's early returns and its `e_free_blob`).
    fn fill_blob(
        &self,
        vm: &Vm,
        ctx: &mut Ctx<'_>,
        (uaddr, given): (u64, u32),
        command: impl FnOnce(&mut crate::firmware::Firmware, u32, &mut u32) -> FwResult<Vec<u8>>,
    ) -> Result<(Result<(), Errno>, u32), Errno> {
        let sev = Self::sev(vm)?;
        let query = given == 0;
        let mut len = 0;
        if !query && uaddr != 0 {
            if given > SEV_FW_BLOB_MAX_SIZE {
                return Err(Errno::EINVAL);
            }
            len = given;
        }
        self.check_fd(ctx.pid, sev.fd)?;
        let r = command(self.dev().firmware_mut(), sev.handle, &mut len);
        let r = ctx.fw(r);
        if query {
            return Ok((r.map(drop), len));
        }
        let blob = r?;
        let mut copied = Ok(());
        if uaddr != 0 {
            let mut out = vec![0u8; given as usize];
            let n = out.len().min(blob.len());
            out[..n].copy_from_slice(&blob[..n]);
            copied = write_bytes(ctx.mem, uaddr, &out);
        }
        Ok((copied, len))
    }

    /// `sev_launch_secret`: the secret's guest range must be contiguous guest memory.
    fn launch_secret(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let sev = Self::sev(vm)?;
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
        let staged = if params.guest_len <= SECRET_STAGE_MAX {
            stage(&vm.slots, ctx.mem, gpa.0, params.guest_len as u64)?
        } else {
            VecGuestMemory::new()
        };
        let secret = LaunchSecret {
            header: &header,
            guest_gpa: gpa,
            guest_len: params.guest_len,
            trans: &trans,
        };
        let r = self
            .dev()
            .firmware_mut()
            .launch_secret(sev.handle, secret, &staged);
        ctx.fw(r)?;
        unstage(&vm.slots, ctx.mem, gpa.0, staged).map(drop)
    }

    /// `sev_guest_status`.
    fn guest_status(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let sev = Self::sev(vm)?;
        self.check_fd(ctx.pid, sev.fd)?;
        let st = self.dev().firmware().guest_status(sev.handle);
        let st = ctx.fw(st)?;
        let out = KvmSevGuestStatus {
            handle: st.handle,
            policy: st.policy,
            state: st.state as u32,
        };
        write_obj(ctx.mem, ctx.data, &out)
    }

    /// `sev_dbg_crypt`: guest memory to a plain buffer (decrypt) or back (encrypt), with
    /// unaligned ends handled as KVM does, by reading and merging whole 16-byte blocks.
    fn dbg_crypt(&self, vm: &mut Vm, ctx: &mut Ctx<'_>, decrypt: bool) -> Result<(), Errno> {
        let sev = Self::sev(vm)?;
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
        let mut off = 0u64;
        for (gpa, len) in pieces {
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(PAGE);
                let at = gpa.0 + done;
                let (start, end) = block_span(at, n)?;
                let staged = stage(&vm.slots, ctx.mem, start, end - start)?;
                let inner = (at - start) as usize..(at - start + n) as usize;
                let user = UserAddr(plain_uaddr.wrapping_add(off + done));
                let span = self.dev().firmware().dbg_decrypt(
                    sev.handle,
                    GuestAddress(start),
                    (end - start) as u32,
                    &staged,
                );
                let mut span = ctx.fw(span)?;
                if decrypt {
                    ctx.mem
                        .write(user, &span[inner])
                        .map_err(|_| Errno::EFAULT)?;
                } else {
                    ctx.mem
                        .read(user, &mut span[inner])
                        .map_err(|_| Errno::EFAULT)?;
                    let r = self.dev().firmware().dbg_encrypt(
                        sev.handle,
                        GuestAddress(start),
                        &span,
                        &staged,
                    );
                    ctx.fw(r)?;
                    unstage(&vm.slots, ctx.mem, start, staged)?;
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
        vm: &Vm,
        mem: &dyn CallerMemory,
        arg: &SevdGuestAccess,
    ) -> Result<(), Errno> {
        let sev = Self::sev(vm)?;
        if sev.handle == 0 || arg.len == 0 || arg.len > GUEST_ACCESS_MAX {
            return Err(Errno::EINVAL);
        }
        let mut done = 0u64;
        while done < arg.len as u64 {
            let n = (arg.len as u64 - done).min(64 * 1024);
            let at = arg.gpa.checked_add(done).ok_or(Errno::EFAULT)?;
            let (start, end) = block_span(at, n)?;
            let staged = stage(&vm.slots, mem, start, end - start)?;
            let user = UserAddr(arg.uaddr.wrapping_add(done));
            let mut buf = vec![0u8; n as usize];
            if arg.write != 0 {
                mem.read(user, &mut buf).map_err(|_| Errno::EFAULT)?;
                self.dev()
                    .firmware()
                    .guest_write(sev.handle, GuestAddress(at), &buf, &staged)
                    .map_err(|_| Errno::EFAULT)?;
                unstage(&vm.slots, mem, start, staged)?;
            } else {
                self.dev()
                    .firmware()
                    .guest_view(sev.handle, GuestAddress(at), &mut buf, &staged)
                    .map_err(|_| Errno::EFAULT)?;
                mem.write(user, &buf).map_err(|_| Errno::EFAULT)?;
            }
            done += n;
        }
        Ok(())
    }
}
