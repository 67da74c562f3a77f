//! The KVM launch path: the same launch, through `/dev/kvm` on a host whose kernel drives real
//! SEV hardware. The VM is created when the launch initialises it: with the type the launch
//! set and `KVM_SEV_INIT2`, or with the default type and the legacy `KVM_SEV_INIT` /
//! `KVM_SEV_ES_INIT` on kernels without VM types (before 6.10). Memory slots are registered
//! and the launch commands go through `KVM_MEMORY_ENCRYPT_OP` with the same `uapi` structs the
//! `sev-vm` node takes. vCPU save areas are KVM's own, built from each vCPU's reset state.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use uapi::ioctl::*;
use uapi::kvm::*;
use uapi::ByteValued;
use vfs::Errno;

use super::transport::{Transport, VmTransport};

/// KVM's API version (`KVM_GET_API_VERSION`), stable since 2.6.22.
const KVM_API_VERSION: i32 = 12;

fn vm_type_name(t: u32) -> &'static str {
    match t {
        KVM_X86_SEV_ES_VM => "KVM_X86_SEV_ES_VM",
        KVM_X86_SEV_VM => "KVM_X86_SEV_VM",
        _ => "KVM_X86_DEFAULT_VM",
    }
}

/// `/dev/kvm` and the kernel's `/dev/sev`.
pub struct Kvm {
    kvm_path: PathBuf,
    sev_path: PathBuf,
    sev: File,
    /// Whether KVM takes SEV VM types and INIT2 (`KVM_CAP_VM_TYPES`), or only the legacy init.
    vm_types: bool,
}

/// Why the KVM path cannot be used here, in words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KvmUnavailable(pub String);

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Kvm {
    /// Opens `/dev/kvm` and checks that its KVM offers SEV VMs and that `sev_path` is the
    /// kernel's SEV device (KVM accepts no other).
    pub fn open(kvm_path: &Path, sev_path: &Path) -> Result<Kvm, KvmUnavailable> {
        let why = KvmUnavailable;
        let kvm = OpenOptions::new()
            .read(true)
            .write(true)
            .open(kvm_path)
            .map_err(|e| {
                why(format!(
                    "{}: {e}: KVM is not available here",
                    kvm_path.display()
                ))
            })?;
        let api = vfs::ioctl_value(&kvm, KVM_GET_API_VERSION, 0)
            .map_err(|e| why(format!("KVM_GET_API_VERSION refused: {e}")))?;
        if api != KVM_API_VERSION {
            return Err(why(format!(
                "KVM API version {api}, expected {KVM_API_VERSION}"
            )));
        }
        let types = vfs::ioctl_value(&kvm, KVM_CHECK_EXTENSION, KVM_CAP_VM_TYPES as u64)
            .unwrap_or(0) as u32;
        let vm_types = types & (1 << KVM_X86_SEV_VM) != 0;
        // Without VM types, a default VM answers KVM_MEMORY_ENCRYPT_OP with a NULL argument
        // with 0 when KVM has SEV (the probe QEMU uses).
        let legacy = !vm_types
            && vfs::ioctl_new_fd(&kvm, KVM_CREATE_VM, KVM_X86_DEFAULT_VM as u64)
                .and_then(|vm| vfs::ioctl_value(&vm, KVM_MEMORY_ENCRYPT_OP, 0))
                .is_ok();
        if !vm_types && !legacy {
            // Ask anyway, so the message carries the kernel's own refusal.
            let refusal = match vfs::ioctl_new_fd(&kvm, KVM_CREATE_VM, KVM_X86_SEV_VM as u64) {
                Err(e) => format!(
                    "KVM_CREATE_VM({}) refused: {e}",
                    vm_type_name(KVM_X86_SEV_VM)
                ),
                Ok(_) => "KVM_CREATE_VM accepted the SEV type anyway".into(),
            };
            return Err(why(format!(
                "this host's KVM has no SEV: KVM_CAP_VM_TYPES offers {types:#x}, without KVM_X86_SEV_VM ({}) or KVM_X86_SEV_ES_VM ({}); {refusal}; and a default VM refuses KVM_MEMORY_ENCRYPT_OP. SEV guests need an AMD CPU with SEV enabled in firmware and kvm_amd loaded with sev=1 (and sev_es=1)",
                KVM_X86_SEV_VM, KVM_X86_SEV_ES_VM
            )));
        }
        let meta =
            std::fs::metadata(sev_path).map_err(|e| why(format!("{}: {e}", sev_path.display())))?;
        if !meta.file_type().is_char_device() {
            return Err(why(format!(
                "{} is not the kernel's SEV device; KVM accepts only the ccp driver's /dev/sev (a sevd node cannot be passed to KVM)",
                sev_path.display()
            )));
        }
        let sev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(sev_path)
            .map_err(|e| why(format!("{}: {e}", sev_path.display())))?;
        Ok(Kvm {
            kvm_path: kvm_path.to_path_buf(),
            sev_path: sev_path.to_path_buf(),
            sev,
            vm_types,
        })
    }
}

impl Transport for Kvm {
    fn sev_ioctl(&self, request: u32, arg: &mut [u8]) -> Result<(), Errno> {
        vfs::ioctl_bytes(&self.sev, request, arg).map(drop)
    }

    fn open_vm(&self) -> Result<Box<dyn VmTransport>, Errno> {
        let kvm = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.kvm_path)
            .map_err(|e| errno_of(&e))?;
        let sev = self.sev.try_clone().map_err(|e| errno_of(&e))?;
        Ok(Box::new(KvmVm {
            kvm,
            sev,
            state: Mutex::new(VmState::default()),
        }))
    }

    fn describe(&self) -> String {
        format!(
            "KVM {} with {}",
            self.kvm_path.display(),
            self.sev_path.display()
        )
    }

    fn offers_vm_types(&self) -> bool {
        self.vm_types
    }
}

#[derive(Default)]
struct VmState {
    vm: Option<File>,
    /// The type `SEVD_VM_SET_TYPE` chose, for KVM_CREATE_VM at INIT2.
    vm_type: Option<u32>,
    /// Slots registered before the VM's type was known.
    slots: Vec<KvmUserspaceMemoryRegion>,
    vcpus: Vec<File>,
    why: Option<String>,
}

/// A KVM VM, created when the launch says SEV or SEV-ES.
struct KvmVm {
    kvm: File,
    sev: File,
    state: Mutex<VmState>,
}

impl KvmVm {
    fn fail(&self, st: &mut VmState, what: String, e: Errno) -> Errno {
        st.why = Some(format!("{what}: {e}"));
        e
    }

    fn encrypt_op(&self, vm: &File, cmd: &mut KvmSevCmd) -> Result<(), Errno> {
        vfs::ioctl_bytes_sized(
            vm,
            KVM_MEMORY_ENCRYPT_OP,
            cmd.as_bytes_mut(),
            size_of::<KvmSevCmd>(),
        )
        .map(drop)
    }

    fn set_slot(vm: &File, r: &mut KvmUserspaceMemoryRegion) -> Result<(), Errno> {
        vfs::ioctl_bytes(vm, KVM_SET_USER_MEMORY_REGION, r.as_bytes_mut())?;
        // SEV guests' memory is pinned by registering it.
        let mut enc = KvmEncRegion {
            addr: r.userspace_addr,
            size: r.memory_size,
        };
        vfs::ioctl_bytes(vm, KVM_MEMORY_ENCRYPT_REG_REGION, enc.as_bytes_mut()).map(drop)
    }

    /// KVM_CREATE_VM, the stashed slots, then the init command as the launch gave it: INIT2
    /// on the type the launch set, the legacy INIT or ES_INIT on the default type.
    fn init(&self, st: &mut VmState, cmd: &mut KvmSevCmd) -> Result<(), Errno> {
        let ty = match KvmSevCmdId::from_id(cmd.id) {
            Some(KvmSevCmdId::Init2) => st.vm_type.unwrap_or(KVM_X86_DEFAULT_VM),
            _ => KVM_X86_DEFAULT_VM,
        };
        if st.vm.is_some() {
            return Err(Errno::EINVAL);
        }
        let vm = vfs::ioctl_new_fd(&self.kvm, KVM_CREATE_VM, ty as u64)
            .map_err(|e| self.fail(st, format!("KVM_CREATE_VM({})", vm_type_name(ty)), e))?;
        for mut r in std::mem::take(&mut st.slots) {
            Self::set_slot(&vm, &mut r)
                .map_err(|e| self.fail(st, "KVM_SET_USER_MEMORY_REGION".into(), e))?;
        }
        // The command's struct, if any, is in this process: KVM reads it where it is.
        let name = KvmSevCmdId::from_id(cmd.id).map_or("KVM_SEV_INIT", |id| id.name());
        self.encrypt_op(&vm, cmd)
            .map_err(|e| self.fail(st, name.into(), e))?;
        st.vm = Some(vm);
        Ok(())
    }

    /// A vCPU whose reset state starts where the given save area does (QEMU sets an SEV-ES
    /// AP's CS and RIP to OVMF's reset vector the same way).
    fn create_vcpu(&self, st: &mut VmState, page: &[u8]) -> Result<(), Errno> {
        let vm = st.vm.as_ref().ok_or(Errno::EINVAL)?;
        let id = st.vcpus.len() as u64;
        let vcpu = vfs::ioctl_new_fd(vm, KVM_CREATE_VCPU, id)
            .map_err(|e| self.fail(st, "KVM_CREATE_VCPU".into(), e))?;
        let q = |off: usize| u64::from_le_bytes(page[off..off + 8].try_into().unwrap_or_default());
        let (cs_base, cs_selector, rip) = (
            q(0x18),
            u16::from_le_bytes([page[0x10], page[0x11]]),
            q(0x178),
        );
        let mut sregs = KvmSregs::default();
        vfs::ioctl_bytes(&vcpu, KVM_GET_SREGS, sregs.as_bytes_mut())?;
        sregs.cs.base = cs_base;
        sregs.cs.selector = cs_selector;
        vfs::ioctl_bytes(&vcpu, KVM_SET_SREGS, sregs.as_bytes_mut())?;
        let mut regs = KvmRegs::default();
        vfs::ioctl_bytes(&vcpu, KVM_GET_REGS, regs.as_bytes_mut())?;
        regs.rip = rip;
        vfs::ioctl_bytes(&vcpu, KVM_SET_REGS, regs.as_bytes_mut())?;
        st.vcpus.push(vcpu);
        Ok(())
    }
}

impl VmTransport for KvmVm {
    fn offers_page_runs(&self) -> bool {
        false
    }

    fn ioctl(&self, request: u32, arg: &mut [u8]) -> Result<(), Errno> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match request {
            KVM_SET_USER_MEMORY_REGION => {
                let mut r = KvmUserspaceMemoryRegion::from_slice(arg).ok_or(Errno::EINVAL)?;
                match &st.vm {
                    Some(vm) => Self::set_slot(vm, &mut r),
                    None => {
                        st.slots.push(r);
                        Ok(())
                    }
                }
            }
            SEVD_VM_SET_TYPE => {
                let ty: [u8; 8] = (*arg).try_into().map_err(|_| Errno::EINVAL)?;
                if st.vm.is_some() || st.vm_type.is_some() || !st.slots.is_empty() {
                    return Err(Errno::EINVAL);
                }
                st.vm_type = Some(u64::from_ne_bytes(ty) as u32);
                Ok(())
            }
            SEVD_VM_SET_VMSA => {
                let v = SevdVmsa::from_slice(arg).ok_or(Errno::EINVAL)?;
                // The caller's page is in this process: the launch code passed its address.
                let page = read_local(v.uaddr)?;
                self.create_vcpu(&mut st, &page)
            }
            SEVD_VM_GUEST_ACCESS => {
                st.why = Some("on real hardware only the guest itself can read its memory".into());
                Err(Errno::ENOTTY)
            }
            SEVD_VM_ENCRYPT_OP => {
                let mut cmd = KvmSevCmd::from_slice(arg).ok_or(Errno::EINVAL)?;
                cmd.sev_fd = self.sev.as_raw_fd() as u32;
                let r = match KvmSevCmdId::from_id(cmd.id) {
                    Some(KvmSevCmdId::Init | KvmSevCmdId::EsInit | KvmSevCmdId::Init2) => {
                        self.init(&mut st, &mut cmd)
                    }
                    _ => match st.vm.as_ref() {
                        Some(vm) => self.encrypt_op(vm, &mut cmd),
                        None => Err(Errno::ENOTTY),
                    },
                };
                arg.copy_from_slice(cmd.as_bytes());
                if let Err(e) = r {
                    if st.why.is_none() {
                        st.why = Some(format!("KVM_MEMORY_ENCRYPT_OP (command {}): {e}", cmd.id));
                    }
                }
                r
            }
            _ => Err(Errno::ENOTTY),
        }
    }

    fn sev_fd(&self) -> u32 {
        self.sev.as_raw_fd() as u32
    }

    fn explain(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .why
            .take()
    }
}

/// Reads a 4 KiB page at an address of this process (the launch code's VMSA buffer).
fn read_local(addr: u64) -> Result<Vec<u8>, Errno> {
    use vfs::CallerMemory;
    let me = vfs::ProcessMemory::new(vfs::Pid(std::process::id()));
    me.read_vec(vfs::UserAddr(addr), 4096)
        .map_err(|_| Errno::EFAULT)
}
