//! A platform as its users see it: the `sev` node's commands and VMs on the `sev-vm` node,
//! typed, over either the daemon's device nodes or the embedded firmware in this process
//! (the trait the CLI is built on). Both speak the same ioctls to the same driver code, so
//! they give the same answers.

pub mod kvm;
pub mod layout;
mod pagemap;
pub mod transport;

use std::path::{Path, PathBuf};

use uapi::ioctl::{
    KVM_SET_USER_MEMORY_REGION, SEVD_VM_ENCRYPT_OP, SEVD_VM_GUEST_ACCESS, SEVD_VM_SET_TYPE,
    SEVD_VM_SET_VMSA, SEV_ISSUE_CMD,
};
use uapi::kvm::*;
use uapi::psp_sev::*;
use uapi::ByteValued;
use vfs::Errno;

use crate::boot::{power_on, BootError};
use crate::driver::sev_dev::InitMode;
use crate::firmware::FirmwareConfig;
use transport::{Device, Embedded, Transport, VmTransport};

mod migrate;
mod snp;
pub use migrate::{RunError, TargetCerts, PACKET_HEADER_LEN};
pub use snp::SnpFinish;

/// A command that failed.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The firmware returned a status.
    #[error("{cmd}: the firmware refused it: {}", uapi::status::describe(*.status))]
    Firmware {
        /// The command.
        cmd: &'static str,
        /// Its status code.
        status: u32,
    },
    /// The driver refused it with an errno.
    #[error("{cmd}: {errno}")]
    Os {
        /// The command.
        cmd: &'static str,
        /// The errno.
        errno: Errno,
    },
    /// The device could not be opened.
    #[error("{path}: {source}")]
    Open {
        /// The node.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The embedded firmware could not start.
    #[error(transparent)]
    Embedded(#[from] BootError),
    /// The KVM path cannot be used, or KVM refused a step; the text says what is missing.
    #[error("{cmd}: {why}")]
    Kvm {
        /// The step.
        cmd: &'static str,
        /// What KVM said, and what it lacks.
        why: String,
    },
}

impl PlatformError {
    /// The firmware status, if the firmware answered.
    pub fn status(&self) -> Option<u32> {
        match self {
            PlatformError::Firmware { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn check(cmd: &'static str, r: Result<(), Errno>, error: u32) -> Result<(), PlatformError> {
    match r {
        Ok(()) => Ok(()),
        Err(Errno::EIO) if error != 0 => Err(PlatformError::Firmware { cmd, status: error }),
        Err(errno) => Err(PlatformError::Os { cmd, errno }),
    }
}

fn addr<T>(v: &mut T) -> u64 {
    v as *mut T as u64
}

/// How to start the firmware embedded in this process: its state directory (locked while the
/// platform lives) and, for tests, the emulated part and a fixed nonce seed.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Where the chip identity and the flash live.
    pub state_dir: PathBuf,
    /// The emulated part (API version, ASIDs).
    pub firmware: FirmwareConfig,
    /// A fixed seed for the firmware's nonces: tests only.
    pub nonce_seed: Option<[u8; 32]>,
}

impl EmbeddedConfig {
    /// The default part, with its state in `state_dir`, on a host that enabled SEV-SNP (as
    /// `sevd --snp`): SNP first, then SEV with SEV-ES.
    pub fn new(state_dir: &Path) -> Self {
        EmbeddedConfig {
            state_dir: state_dir.to_path_buf(),
            firmware: FirmwareConfig {
                snp: true,
                ..FirmwareConfig::default()
            },
            nonce_seed: None,
        }
    }

    /// Whether `state_dir` already holds a chip (a first start makes one, which takes a
    /// few seconds).
    pub fn has_chip(&self) -> bool {
        self.state_dir.join(crate::paths::CHIP_FILE).exists()
    }

    /// The ASK ‖ ARK the embedded firmware publishes in its state directory.
    pub fn ca_file(&self) -> PathBuf {
        self.state_dir.join(crate::paths::CA_FILE)
    }
}

/// An SEV platform.
pub struct Platform {
    t: Box<dyn Transport>,
}

impl Platform {
    /// The device node at `path` (and `<path>-vm`).
    pub fn device(path: &Path) -> Result<Platform, PlatformError> {
        let t = Device::open(path).map_err(|source| PlatformError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Platform { t: Box::new(t) })
    }

    /// Real SEV hardware through KVM: `kvm` (normally `/dev/kvm`) and the kernel's `sev`
    /// device.
    pub fn kvm(kvm: &Path, sev: &Path) -> Result<Platform, PlatformError> {
        let t = kvm::Kvm::open(kvm, sev).map_err(|e| PlatformError::Kvm {
            cmd: "KVM",
            why: e.0,
        })?;
        Ok(Platform { t: Box::new(t) })
    }

    /// The software firmware in this process, as `config` says.
    ///
    /// ```
    /// use sevd::platform::{EmbeddedConfig, Platform};
    ///
    /// let dir = tempfile::tempdir()?;
    /// // The first start makes the chip's keys (a second or two).
    /// let platform = Platform::embedded(&EmbeddedConfig::new(dir.path()))?;
    /// let status = platform.status()?;
    /// assert_eq!((status.api_major, status.api_minor, status.state), (1, 55, 1));
    /// let vm = platform.create_vm(1 << 20)?;
    /// vm.sev_init(false)?;
    /// let handle = vm.launch_start(0x1, None)?; // NODBG, no session
    /// assert_eq!(handle, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn embedded(config: &EmbeddedConfig) -> Result<Platform, PlatformError> {
        let (dev, state) = power_on(
            &config.state_dir,
            config.firmware,
            config.nonce_seed,
            InitMode::AtProbe,
        )?;
        Ok(Platform {
            t: Box::new(Embedded::new(dev, state)),
        })
    }

    /// What this platform is.
    pub fn describe(&self) -> String {
        self.t.describe()
    }

    /// The EPYC generation it is, where that can be known.
    pub fn product(&self) -> Option<crate::part::Product> {
        self.t.product()
    }

    /// The TCB of a TCB_VERSION this platform reports, read in its generation's layout
    /// (Milan's where the generation is unknown).
    pub fn tcb(&self, v: u64) -> Option<uapi::snp::TcbVersion> {
        let layout = self
            .product()
            .map_or(uapi::snp::TcbLayout::Legacy, |p| p.tcb_layout());
        uapi::snp::TcbVersion::from_u64(v, layout)
    }

    /// `SEV_ISSUE_CMD` with `data` pointing at `arg`.
    fn issue(&self, cmd: SevCmd, data: u64) -> Result<(), PlatformError> {
        let mut arg = SevIssueCmd {
            cmd: cmd as u32,
            data,
            error: 0,
        };
        let r = self.t.sev_ioctl(SEV_ISSUE_CMD, arg.as_bytes_mut());
        check(cmd.name(), r, arg.error)
    }

    /// SEV_PLATFORM_STATUS.
    pub fn status(&self) -> Result<SevUserDataStatus, PlatformError> {
        let mut st = SevUserDataStatus::default();
        self.issue(SevCmd::PlatformStatus, addr(&mut st))?;
        Ok(st)
    }

    /// SNP_PLATFORM_STATUS, or `None` on a platform without SNP (the driver's EINVAL or
    /// ENODEV).
    pub fn snp_status(&self) -> Result<Option<SevUserDataSnpStatus>, PlatformError> {
        let mut st = SevUserDataSnpStatus::default();
        match self.issue(SevCmd::SnpPlatformStatus, addr(&mut st)) {
            Ok(()) => Ok(Some(st)),
            Err(PlatformError::Os {
                errno: Errno::EINVAL | Errno::ENODEV,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The key server's certificates, made by the embedded platform (and published in its
    /// state directory); `None` for a device, whose daemon publishes them beside its nodes.
    pub fn vcek_chain(&self) -> Option<Result<crate::kds::VcekChain, PlatformError>> {
        self.t.vcek_chain().map(|r| r.map_err(PlatformError::from))
    }

    /// SNP_COMMIT.
    pub fn snp_commit(&self) -> Result<(), PlatformError> {
        self.issue(SevCmd::SnpCommit, 0)
    }

    /// SNP_SET_CONFIG: the reported TCB (0 for the committed one) and the mask bits.
    pub fn snp_set_config(&self, reported_tcb: u64, mask_bits: u32) -> Result<(), PlatformError> {
        let mut config = SevUserDataSnpConfig {
            reported_tcb,
            mask_bits,
            rsvd1: [0; 52],
        };
        self.issue(SevCmd::SnpSetConfig, addr(&mut config))
    }

    /// SEV_PDH_CERT_EXPORT: the PDH and PEK ‖ OCA ‖ CEK.
    pub fn pdh_cert_export(&self) -> Result<(Vec<u8>, Vec<u8>), PlatformError> {
        let mut pdh = vec![0u8; SEV_CERT_LEN as usize];
        let mut chain = vec![0u8; SEV_CERT_CHAIN_LEN as usize];
        let mut arg = SevUserDataPdhCertExport {
            pdh_cert_address: pdh.as_mut_ptr() as u64,
            pdh_cert_len: SEV_CERT_LEN,
            cert_chain_address: chain.as_mut_ptr() as u64,
            cert_chain_len: SEV_CERT_CHAIN_LEN,
        };
        self.issue(SevCmd::PdhCertExport, addr(&mut arg))?;
        Ok((pdh, chain))
    }

    /// SEV_GET_ID2.
    pub fn get_id(&self) -> Result<Vec<u8>, PlatformError> {
        let mut id = vec![0u8; SEV_ID_LEN as usize];
        let mut arg = SevUserDataGetId2 {
            address: id.as_mut_ptr() as u64,
            length: SEV_ID_LEN,
        };
        self.issue(SevCmd::GetId2, addr(&mut arg))?;
        id.truncate(arg.length as usize);
        Ok(id)
    }

    /// SEV_PEK_GEN.
    pub fn pek_gen(&self) -> Result<(), PlatformError> {
        self.issue(SevCmd::PekGen, 0)
    }

    /// SEV_PDH_GEN.
    pub fn pdh_gen(&self) -> Result<(), PlatformError> {
        self.issue(SevCmd::PdhGen, 0)
    }

    /// SEV_FACTORY_RESET.
    pub fn factory_reset(&self) -> Result<(), PlatformError> {
        self.issue(SevCmd::FactoryReset, 0)
    }

    /// SEV_PEK_CSR.
    pub fn pek_csr(&self) -> Result<Vec<u8>, PlatformError> {
        let mut csr = vec![0u8; SEV_CERT_LEN as usize];
        let mut arg = SevUserDataPekCsr {
            address: csr.as_mut_ptr() as u64,
            length: SEV_CERT_LEN,
        };
        self.issue(SevCmd::PekCsr, addr(&mut arg))?;
        Ok(csr)
    }

    /// SEV_PEK_CERT_IMPORT.
    pub fn pek_cert_import(&self, pek: &[u8], oca: &[u8]) -> Result<(), PlatformError> {
        let mut arg = SevUserDataPekCertImport {
            pek_cert_address: pek.as_ptr() as u64,
            pek_cert_len: pek.len() as u32,
            oca_cert_address: oca.as_ptr() as u64,
            oca_cert_len: oca.len() as u32,
        };
        self.issue(SevCmd::PekCertImport, addr(&mut arg))
    }

    /// A VM of the default type with `ram_size` bytes (rounded up to pages) of guest RAM at
    /// guest address 0; it takes the legacy init.
    pub fn create_vm(&self, ram_size: usize) -> Result<Vm, PlatformError> {
        self.create_vm_of(KVM_X86_DEFAULT_VM, ram_size)
    }

    /// A VM of type `vm_type` (`KVM_X86_SEV_VM`, `KVM_X86_SEV_ES_VM`: it takes INIT2) with
    /// `ram_size` bytes of guest RAM at guest address 0.
    pub fn create_vm_of(&self, vm_type: u32, ram_size: usize) -> Result<Vm, PlatformError> {
        self.create_vm_with(vm_type, &[(0, ram_size as u64)])
    }

    /// A VM of type `vm_type` (`KVM_X86_DEFAULT_VM` takes the legacy init) with guest RAM in
    /// `slots` (guest address, size), as [`layout::ram_slots`] lays a guest out.
    pub fn create_vm_with(&self, vm_type: u32, slots: &[(u64, u64)]) -> Result<Vm, PlatformError> {
        let t = self.t.open_vm().map_err(|errno| PlatformError::Os {
            cmd: "open sev-vm",
            errno,
        })?;
        let mut vm = Vm { t, regions: vec![] };
        if vm_type != KVM_X86_DEFAULT_VM {
            vm.set_type(vm_type)?;
        }
        for &(gpa, size) in slots {
            let size = usize::try_from(size).map_err(|_| PlatformError::Kvm {
                cmd: "guest RAM",
                why: format!("{size} bytes do not fit this process"),
            })?;
            vm.map(gpa, size)?;
        }
        Ok(vm)
    }

    /// Whether VMs take SEV VM types and `KVM_SEV_INIT2`, or only the legacy init (KVM
    /// before Linux 6.10).
    pub fn offers_vm_types(&self) -> bool {
        self.t.offers_vm_types()
    }
}

/// One `SEVD_VM_ENCRYPT_OP` on a VM's transport.
fn vm_op(
    t: &dyn VmTransport,
    id: KvmSevCmdId,
    name: &'static str,
    data: u64,
) -> Result<(), PlatformError> {
    let mut cmd = KvmSevCmd {
        id: id as u32,
        pad0: 0,
        data,
        error: 0,
        sev_fd: t.sev_fd(),
    };
    let r = t.ioctl(SEVD_VM_ENCRYPT_OP, cmd.as_bytes_mut());
    explained(t, name, check(name, r, cmd.error))
}

/// Replaces a bare errno with the transport's explanation, when it has one.
fn explained(
    t: &dyn VmTransport,
    cmd: &'static str,
    r: Result<(), PlatformError>,
) -> Result<(), PlatformError> {
    match r {
        Err(PlatformError::Os { .. }) => match t.explain() {
            Some(why) => Err(PlatformError::Kvm { cmd, why }),
            None => r,
        },
        other => other,
    }
}

/// One memory slot's backing: anonymous memory of this process, as a VMM's guest RAM is.
struct RamRegion {
    gpa: u64,
    buf: memmap2::MmapMut,
}

/// Guest RAM of `size` bytes, zero, page-aligned and backed on first touch: reserved, not
/// committed (MAP_NORESERVE), so a guest's cost is what it touches, as with a VMM's
/// guest RAM. Marked for transparent huge pages, so loading a large guest takes one fault
/// per 2 MiB instead of one per 4 KiB; where the kernel offers none, the advice is
/// ignored and small pages serve.
fn guest_ram(size: usize) -> Result<memmap2::MmapMut, PlatformError> {
    let ram = memmap2::MmapOptions::new()
        .len(size)
        .no_reserve_swap()
        .map_anon()
        .map_err(|e| PlatformError::Kvm {
            cmd: "guest RAM",
            why: format!("cannot map {size} bytes: {e}"),
        })?;
    let _ = ram.advise(memmap2::Advice::HugePage);
    Ok(ram)
}

/// A VM and its guest memory (the hypervisor's view).
pub struct Vm {
    t: Box<dyn VmTransport>,
    regions: Vec<RamRegion>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots: Vec<_> = self.regions.iter().map(|r| (r.gpa, r.buf.len())).collect();
        f.debug_struct("Vm").field("slots", &slots).finish()
    }
}

impl Vm {
    /// Adds `size` bytes (rounded up to pages) of memory at guest address `gpa` as the next
    /// memory slot (`KVM_SET_USER_MEMORY_REGION`), e.g. a firmware image below 4 GiB.
    pub fn map(&mut self, gpa: u64, size: usize) -> Result<(), PlatformError> {
        let size = size.div_ceil(4096) * 4096;
        let mut buf = guest_ram(size)?;
        let mut region = KvmUserspaceMemoryRegion {
            slot: self.regions.len() as u32,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size as u64,
            userspace_addr: buf.as_mut_ptr() as u64,
        };
        let r = self
            .t
            .ioctl(KVM_SET_USER_MEMORY_REGION, region.as_bytes_mut());
        check("KVM_SET_USER_MEMORY_REGION", r, 0)?;
        self.regions.push(RamRegion { gpa, buf });
        Ok(())
    }

    /// Loads `len` bytes at guest address `gpa` a piece at a time (the transport's size) and
    /// measures and encrypts each piece (LAUNCH_UPDATE_DATA) once it is loaded. `load` fills the pieces in
    /// order on a second thread (a guest owner may hash each as it loads it), while this one
    /// hands the pieces loaded so far to the firmware; `progress` hears the bytes done.
    pub fn load_and_update<E: From<PlatformError> + Send>(
        &mut self,
        gpa: u64,
        len: usize,
        mut load: impl FnMut(&mut [u8]) -> Result<(), E> + Send,
        mut progress: impl FnMut(usize),
    ) -> Result<(), E> {
        let name = "LAUNCH_UPDATE_DATA";
        let outside = PlatformError::Os {
            cmd: name,
            errno: Errno::EFAULT,
        };
        let (i, off) = self.region_of(gpa, len).ok_or(outside)?;
        // Fault the range in at once, before the threads start (one call, huge pages).
        let _ = self.regions[i]
            .buf
            .advise_range(memmap2::Advice::PopulateWrite, off, len);
        let t = &*self.t;
        let piece = t.update_piece().max(4096);
        let mem = &mut self.regions[i].buf[off..off + len];
        std::thread::scope(|s| {
            let (to_main, loaded) = std::sync::mpsc::sync_channel::<Result<&mut [u8], E>>(2);
            s.spawn(move || {
                for p in mem.chunks_mut(piece) {
                    let r = load(p).map(|()| p);
                    let failed = r.is_err();
                    if to_main.send(r).is_err() || failed {
                        break;
                    }
                }
            });
            let mut done = 0;
            for p in loaded {
                // No reference to the piece is kept: the firmware rewrites it through its
                // address.
                let p = p?;
                let mut arg = KvmSevLaunchUpdateData {
                    uaddr: p.as_mut_ptr() as u64,
                    len: p.len() as u32,
                    pad0: 0,
                };
                vm_op(t, KvmSevCmdId::LaunchUpdateData, name, addr(&mut arg))?;
                done += p.len();
                progress(done);
            }
            Ok(())
        })
    }

    fn region_of(&self, gpa: u64, len: usize) -> Option<(usize, usize)> {
        self.regions.iter().enumerate().find_map(|(i, r)| {
            let off = gpa.checked_sub(r.gpa)? as usize;
            (off.checked_add(len)? <= r.buf.len()).then_some((i, off))
        })
    }

    /// Guest RAM (slot 0, at guest address 0) as the hypervisor sees it.
    pub fn ram(&self) -> &[u8] {
        &self.regions[0].buf
    }

    /// Guest RAM, to load images into before they are measured.
    pub fn ram_mut(&mut self) -> &mut [u8] {
        &mut self.regions[0].buf
    }

    /// The hypervisor's view of `gpa`+`len`, in whichever slot holds it.
    pub fn memory(&self, gpa: u64, len: usize) -> Option<&[u8]> {
        let (i, at) = self.region_of(gpa, len)?;
        Some(&self.regions[i].buf[at..at + len])
    }

    /// The same, to write images into.
    pub fn memory_mut(&mut self, gpa: u64, len: usize) -> Option<&mut [u8]> {
        let (i, at) = self.region_of(gpa, len)?;
        Some(&mut self.regions[i].buf[at..at + len])
    }

    /// This process's address of guest address `gpa` (slot 0's span extended when no slot
    /// holds it, so the driver, not this process, judges it).
    pub fn uaddr(&self, gpa: u64) -> u64 {
        match self.region_of(gpa, 0) {
            Some((i, at)) => self.regions[i].buf.as_ptr() as u64 + at as u64,
            None => (self.regions[0].buf.as_ptr() as u64).wrapping_add(gpa),
        }
    }

    fn op(&self, id: KvmSevCmdId, name: &'static str, data: u64) -> Result<(), PlatformError> {
        vm_op(&*self.t, id, name, data)
    }

    /// `SEVD_VM_SET_TYPE`: the VM's type (`KVM_X86_SEV_VM`, `KVM_X86_SEV_ES_VM`, ...), as
    /// `KVM_CREATE_VM` takes it; only as the VM's first ioctl.
    fn set_type(&self, vm_type: u32) -> Result<(), PlatformError> {
        let mut arg = (vm_type as u64).to_ne_bytes();
        let r = self.t.ioctl(SEVD_VM_SET_TYPE, &mut arg);
        explained(
            &*self.t,
            "SEVD_VM_SET_TYPE",
            check("SEVD_VM_SET_TYPE", r, 0),
        )
    }

    /// KVM_SEV_INIT2 on a VM of an SEV type, with the SEV-ES save areas' SEV_FEATURES and
    /// the GHCB protocol version (0: KVM's default).
    pub fn sev_init2(&self, vmsa_features: u64, ghcb_version: u16) -> Result<(), PlatformError> {
        let mut arg = KvmSevInit {
            vmsa_features,
            ghcb_version,
            ..Default::default()
        };
        self.op(KvmSevCmdId::Init2, "KVM_SEV_INIT2", addr(&mut arg))
    }

    /// KVM_SEV_INIT or KVM_SEV_ES_INIT.
    pub fn sev_init(&self, es: bool) -> Result<(), PlatformError> {
        if es {
            self.op(KvmSevCmdId::EsInit, "KVM_SEV_ES_INIT", 0)
        } else {
            self.op(KvmSevCmdId::Init, "KVM_SEV_INIT", 0)
        }
    }

    /// KVM_SEV_LAUNCH_START, with the owner's (GODH, session) if any; returns the handle.
    pub fn launch_start(
        &self,
        policy: u32,
        owner: Option<(&[u8], &[u8])>,
    ) -> Result<u32, PlatformError> {
        let mut arg = KvmSevLaunchStart {
            policy,
            ..Default::default()
        };
        if let Some((godh, session)) = owner {
            arg.dh_uaddr = godh.as_ptr() as u64;
            arg.dh_len = godh.len() as u32;
            arg.session_uaddr = session.as_ptr() as u64;
            arg.session_len = session.len() as u32;
        }
        self.op(KvmSevCmdId::LaunchStart, "LAUNCH_START", addr(&mut arg))?;
        Ok(arg.handle)
    }

    /// KVM_SEV_LAUNCH_UPDATE_DATA of guest RAM `gpa`+`len`.
    pub fn launch_update_data(&self, gpa: u64, len: u32) -> Result<(), PlatformError> {
        let mut arg = KvmSevLaunchUpdateData {
            uaddr: self.uaddr(gpa),
            len,
            pad0: 0,
        };
        self.op(
            KvmSevCmdId::LaunchUpdateData,
            "LAUNCH_UPDATE_DATA",
            addr(&mut arg),
        )
    }

    /// SEVD_VM_SET_VMSA: vCPU `vcpu`'s initial save area.
    pub fn set_vmsa(&self, vcpu: u32, page: &[u8; 4096]) -> Result<(), PlatformError> {
        let mut arg = SevdVmsa {
            vcpu,
            pad: 0,
            uaddr: page.as_ptr() as u64,
        };
        let r = self.t.ioctl(SEVD_VM_SET_VMSA, arg.as_bytes_mut());
        explained(
            &*self.t,
            "SEVD_VM_SET_VMSA",
            check("SEVD_VM_SET_VMSA", r, 0),
        )
    }

    /// KVM_SEV_LAUNCH_UPDATE_VMSA: every vCPU's save area, in vCPU order.
    pub fn launch_update_vmsa(&self) -> Result<(), PlatformError> {
        self.op(KvmSevCmdId::LaunchUpdateVmsa, "LAUNCH_UPDATE_VMSA", 0)
    }

    /// KVM_SEV_LAUNCH_MEASURE: MEASURE ‖ MNONCE.
    pub fn launch_measure(&self) -> Result<[u8; 48], PlatformError> {
        let mut blob = [0u8; 48];
        let mut arg = KvmSevLaunchMeasure {
            uaddr: blob.as_mut_ptr() as u64,
            len: 48,
            pad0: 0,
        };
        self.op(KvmSevCmdId::LaunchMeasure, "LAUNCH_MEASURE", addr(&mut arg))?;
        Ok(blob)
    }

    /// KVM_SEV_LAUNCH_SECRET: the packet `header` and `ciphertext` into guest address `gpa`.
    pub fn launch_secret(
        &self,
        header: &[u8],
        gpa: u64,
        ciphertext: &[u8],
    ) -> Result<(), PlatformError> {
        let mut arg = KvmSevLaunchSecret {
            hdr_uaddr: header.as_ptr() as u64,
            hdr_len: header.len() as u32,
            guest_uaddr: self.uaddr(gpa),
            guest_len: ciphertext.len() as u32,
            trans_uaddr: ciphertext.as_ptr() as u64,
            trans_len: ciphertext.len() as u32,
            ..Default::default()
        };
        self.op(KvmSevCmdId::LaunchSecret, "LAUNCH_SECRET", addr(&mut arg))
    }

    /// KVM_SEV_LAUNCH_FINISH.
    pub fn launch_finish(&self) -> Result<(), PlatformError> {
        self.op(KvmSevCmdId::LaunchFinish, "LAUNCH_FINISH", 0)
    }

    /// KVM_SEV_GUEST_STATUS.
    pub fn guest_status(&self) -> Result<KvmSevGuestStatus, PlatformError> {
        let mut st = KvmSevGuestStatus::default();
        self.op(KvmSevCmdId::GuestStatus, "GUEST_STATUS", addr(&mut st))?;
        Ok(st)
    }

    /// KVM_SEV_GET_ATTESTATION_REPORT: the firmware's report of this guest over `mnonce`,
    /// signed with the platform's PEK.
    pub fn attestation_report(
        &self,
        mnonce: [u8; 16],
    ) -> Result<[u8; uapi::launch::ATTESTATION_REPORT_LEN], PlatformError> {
        let mut report = [0u8; uapi::launch::ATTESTATION_REPORT_LEN];
        let mut arg = KvmSevAttestationReport {
            mnonce,
            uaddr: report.as_mut_ptr() as u64,
            len: report.len() as u32,
            pad0: 0,
        };
        self.op(
            KvmSevCmdId::GetAttestationReport,
            "ATTESTATION",
            addr(&mut arg),
        )?;
        Ok(report)
    }

    /// SEVD_VM_GUEST_ACCESS: guest memory as the guest reads it.
    pub fn guest_read(&self, gpa: u64, len: usize) -> Result<Vec<u8>, PlatformError> {
        let mut out = vec![0u8; len];
        let mut arg = SevdGuestAccess {
            gpa,
            uaddr: out.as_mut_ptr() as u64,
            len: len as u32,
            write: 0,
        };
        let r = self.t.ioctl(SEVD_VM_GUEST_ACCESS, arg.as_bytes_mut());
        explained(
            &*self.t,
            "SEVD_VM_GUEST_ACCESS",
            check("SEVD_VM_GUEST_ACCESS", r, 0),
        )?;
        Ok(out)
    }

    /// SEVD_VM_GUEST_ACCESS: guest memory as the guest writes it.
    pub fn guest_write(&self, gpa: u64, data: &[u8]) -> Result<(), PlatformError> {
        let mut arg = SevdGuestAccess {
            gpa,
            uaddr: data.as_ptr() as u64,
            len: data.len() as u32,
            write: 1,
        };
        let r = self.t.ioctl(SEVD_VM_GUEST_ACCESS, arg.as_bytes_mut());
        explained(
            &*self.t,
            "SEVD_VM_GUEST_ACCESS",
            check("SEVD_VM_GUEST_ACCESS", r, 0),
        )
    }
}
