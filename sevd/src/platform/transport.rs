//! How a [`super::Platform`] reaches a driver: real ioctls on device nodes, or the same
//! driver code called in-process (the embedded firmware), with the ioctl boundary kept:
//! arguments go in and come back as bytes, and nested pointers are followed in this
//! process's memory exactly as the daemon follows them in a caller's.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vfs::{CallerMemory, Errno, IoctlReply, IoctlRequest, ProcessMemory};

use crate::driver::kvm_sev::{KvmSev, Limits, SevFdCheck, Staging};
use crate::driver::sev_dev::{sev_ioctl, SevDev};
use crate::state::StateDir;

/// One ioctl interface: `arg` is the request's struct, updated in place as the kernel
/// copies it back.
pub trait Transport: Send + Sync {
    /// An ioctl on the `sev` node.
    fn sev_ioctl(&self, request: u32, arg: &mut [u8]) -> Result<(), Errno>;
    /// Opens a VM.
    fn open_vm(&self) -> Result<Box<dyn VmTransport>, Errno>;
    /// What the platform is, for messages.
    fn describe(&self) -> String;

    /// Whether VMs take SEV VM types and `KVM_SEV_INIT2` (true of the `sev-vm` node; of KVM
    /// since Linux 6.10), or only the legacy init.
    fn offers_vm_types(&self) -> bool {
        true
    }

    /// The key server's certificates for this platform (ARK, ASK, the VCEK at the reported
    /// TCB), where the transport can make them: the embedded firmware can; a device's are
    /// what its daemon published.
    fn vcek_chain(&self) -> Option<Result<crate::kds::VcekChain, crate::boot::BootError>> {
        None
    }

    /// The EPYC generation behind it: the part a daemon publishes, else the host's own
    /// (the kernel's device is this CPU); `None` when neither says.
    fn product(&self) -> Option<crate::part::Product> {
        crate::part::Product::of_host()
    }
}

/// A VM's ioctl interface.
pub trait VmTransport: Send {
    /// An ioctl on the VM.
    fn ioctl(&self, request: u32, arg: &mut [u8]) -> Result<(), Errno>;
    /// The `sev_fd` to pass with encryption commands.
    fn sev_fd(&self) -> u32;

    /// Why the last ioctl failed, in words, when the transport knows more than the errno.
    fn explain(&self) -> Option<String> {
        None
    }

    /// How much guest memory each LAUNCH_UPDATE_DATA of a long load covers
    /// ([`super::Vm::load_and_update`]). A device (the daemon, or KVM) works on its own
    /// threads, so large pieces spread the cost of a call.
    fn update_piece(&self) -> usize {
        8 << 20
    }

    /// Whether the node takes runs of pages to migrate (`SEVD_VM_SEND_PAGES`), or only
    /// KVM's one page per call.
    fn offers_page_runs(&self) -> bool {
        true
    }
}

/// Device nodes: `sev` and `sev-vm` beside it (the daemon's, or on hardware the kernel's).
pub struct Device {
    path: PathBuf,
    vm_path: PathBuf,
    sev: File,
    /// The part behind it, read once when first asked (a file read, or CPUID).
    product: std::sync::OnceLock<Option<crate::part::Product>>,
}

impl Device {
    /// Opens `path` read-write (as QEMU and sevctl do); the VM node is beside the node it
    /// resolves to (`/dev/sev` → `/dev/sev-vm`; a symlink to `/run/sevd/sev` →
    /// `/run/sevd/sev-vm`).
    pub fn open(path: &Path) -> std::io::Result<Device> {
        let sev = OpenOptions::new().read(true).write(true).open(path)?;
        let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(Device {
            path: path.to_path_buf(),
            vm_path: crate::paths::vm_node(&resolved),
            sev,
            product: std::sync::OnceLock::new(),
        })
    }
}

impl Transport for Device {
    fn sev_ioctl(&self, request: u32, arg: &mut [u8]) -> Result<(), Errno> {
        vfs::ioctl_bytes(&self.sev, request, arg).map(drop)
    }

    fn product(&self) -> Option<crate::part::Product> {
        *self.product.get_or_init(|| {
            let part = crate::paths::published_dir(&self.path).join(crate::paths::PART_FILE);
            match std::fs::read(part) {
                Ok(json) => serde_json::from_slice::<crate::part::Part>(&json)
                    .ok()
                    .map(|p| p.product),
                Err(_) => crate::part::Product::of_host(),
            }
        })
    }

    fn open_vm(&self) -> Result<Box<dyn VmTransport>, Errno> {
        let vm = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.vm_path)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let sev = self
            .sev
            .try_clone()
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        Ok(Box::new(DeviceVm { vm, sev }))
    }

    fn describe(&self) -> String {
        format!("device {}", self.path.display())
    }
}

struct DeviceVm {
    vm: File,
    sev: File,
}

impl VmTransport for DeviceVm {
    fn ioctl(&self, request: u32, arg: &mut [u8]) -> Result<(), Errno> {
        vfs::ioctl_bytes(&self.vm, request, arg).map(drop)
    }

    fn sev_fd(&self) -> u32 {
        use std::os::fd::AsRawFd;
        self.sev.as_raw_fd() as u32
    }
}

/// The `sev_fd` of the embedded platform: there is no file, only this number.
const EMBEDDED_SEV_FD: u32 = u32::MAX;

struct EmbeddedFd;

impl SevFdCheck for EmbeddedFd {
    fn is_sev_node(&self, _pid: u32, fd: u32) -> bool {
        fd == EMBEDDED_SEV_FD
    }
}

/// The software firmware and driver, in this process.
pub struct Embedded {
    dev: Arc<Mutex<SevDev>>,
    kvm: Arc<KvmSev>,
    state: StateDir,
    next_vm: Arc<AtomicU64>,
}

impl Embedded {
    /// A powered-on firmware and its driver over `state` (locked while this lives).
    pub fn new(dev: SevDev, state: StateDir) -> Self {
        let dev = Arc::new(Mutex::new(dev));
        let kvm = Arc::new(KvmSev::new(
            dev.clone(),
            Arc::new(EmbeddedFd),
            Limits::default(),
            Staging::InPlace,
        ));
        Embedded {
            dev,
            kvm,
            state,
            next_vm: Arc::new(AtomicU64::new(1)),
        }
    }
}

fn me() -> (u32, ProcessMemory) {
    let tid = nix::unistd::gettid().as_raw() as u32;
    (tid, ProcessMemory::new(vfs::Pid(tid)))
}

/// What the kernel does with a driver's answer: copy the argument back unless the driver
/// returned early, and turn a negative result into an errno.
fn complete(arg: &mut [u8], reply: Result<IoctlReply, Errno>) -> Result<(), Errno> {
    let reply = reply?;
    let n = reply.data.len().min(arg.len());
    arg[..n].copy_from_slice(&reply.data[..n]);
    if reply.result < 0 {
        Err(Errno::from_raw(-reply.result))
    } else {
        Ok(())
    }
}

fn request<'a>(cmd: u32, arg: &'a [u8]) -> IoctlRequest<'a> {
    IoctlRequest {
        cmd,
        in_data: arg,
        out_size: arg.len() as u32,
        compat: false,
    }
}

impl Transport for Embedded {
    fn sev_ioctl(&self, cmd: u32, arg: &mut [u8]) -> Result<(), Errno> {
        let (_, mem) = me();
        let input = arg.to_vec();
        complete(
            arg,
            sev_ioctl(
                &*self.dev,
                true,
                &mem as &dyn CallerMemory,
                request(cmd, &input),
            ),
        )
    }

    fn open_vm(&self) -> Result<Box<dyn VmTransport>, Errno> {
        let fh = self.next_vm.fetch_add(1, Ordering::Relaxed);
        let uid = nix::unistd::geteuid().as_raw();
        self.kvm.create_vm(fh, std::process::id(), uid)?;
        Ok(Box::new(EmbeddedVm {
            kvm: self.kvm.clone(),
            fh,
        }))
    }

    fn product(&self) -> Option<crate::part::Product> {
        let dev = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        Some(dev.firmware().chip().product)
    }

    fn vcek_chain(&self) -> Option<Result<crate::kds::VcekChain, crate::boot::BootError>> {
        let dev = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        let chain = crate::boot::publish_vcek_chain(&self.state, dev.firmware(), true);
        chain.transpose()
    }

    fn describe(&self) -> String {
        format!(
            "embedded firmware, state in {}",
            self.state.path().display()
        )
    }
}

struct EmbeddedVm {
    kvm: Arc<KvmSev>,
    fh: u64,
}

impl VmTransport for EmbeddedVm {
    fn ioctl(&self, cmd: u32, arg: &mut [u8]) -> Result<(), Errno> {
        let (tid, mem) = me();
        let input = arg.to_vec();
        let reply = self
            .kvm
            .ioctl(tid, std::process::id(), &mem, self.fh, request(cmd, &input));
        complete(arg, reply)
    }

    fn sev_fd(&self) -> u32 {
        EMBEDDED_SEV_FD
    }

    /// The firmware runs on the caller's thread here: pieces it hashes and encrypts without
    /// a side thread leave the other core to the loader.
    fn update_piece(&self) -> usize {
        crate::memctl::SIDE_HASH_ABOVE
    }
}

impl Drop for EmbeddedVm {
    fn drop(&mut self) {
        self.kvm.destroy_vm(self.fh);
    }
}
