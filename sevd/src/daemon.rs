//! Starting and stopping the daemon: state, firmware, driver, mounts, readiness.

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vfs::{CharDevice, DeviceFs, FileMode, MountHandle, MountOptions};

use crate::access::Gate;
use crate::boot::{power_on, BootError};
use crate::driver::kvm_sev::{KvmSev, Limits, Staging};
use crate::driver::passthrough::Passthrough;
use crate::driver::sev_dev::InitMode;
use crate::driver::sev_dev::SevBackend;
use crate::firmware::FirmwareConfig;
use crate::node::{ProcFdCheck, SevNode, VmNode};
use crate::state::{StateDir, StateError};
use crate::vcek_publisher::VcekPublisher;

/// The source name of every mount this daemon makes, which finds stale ones.
pub const FSNAME: &str = "sevd";

/// What answers the commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The software firmware, with its state in `Config::state_dir`.
    Software,
    /// A real SEV device node (or another sevd's), passed through.
    Hardware(PathBuf),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// What answers the commands.
    pub backend: Backend,
    /// `--policy`: who may issue which commands.
    pub policy: Option<PathBuf>,
    /// `--audit-log`: one JSON line per command.
    pub audit_log: Option<PathBuf>,
    /// State directory.
    pub state_dir: PathBuf,
    /// Directory that gets the `sev` node.
    pub mountpoint: PathBuf,
    /// Optional drop-in path for the `sev` node, e.g. `/dev/sev`.
    pub link: Option<PathBuf>,
    /// Owner, group and mode of the nodes.
    pub mode: FileMode,
    /// Kernel generation to mirror.
    pub init_mode: InitMode,
    /// The emulated part.
    pub firmware: FirmwareConfig,
    /// Seed for a deterministic nonce stream (tests only); `None` for the system's CSPRNG.
    pub nonce_seed: Option<[u8; 32]>,
    /// What one user may take through the `sev-vm` node.
    pub limits: Limits,
}

/// Why the daemon did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// A path that must not be covered.
    #[error("{0}: is a character device (real SEV hardware?); refusing to cover it. Use --backend hardware to stand in front of it")]
    RealDevice(PathBuf),
    /// A path of the wrong kind.
    #[error("{path}: {why}")]
    Path {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Mounting failed.
    #[error("mounting on {path}: {source}")]
    Mount {
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The crypto library failed.
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    /// The policy file.
    #[error(transparent)]
    Policy(#[from] crate::access::PolicyError),
    /// The audit log could not be opened.
    #[error("--audit-log {path}: {source}")]
    Audit {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The hardware device.
    #[error("--hw-device {path}: {why}")]
    HwDevice {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

impl From<BootError> for StartError {
    fn from(e: BootError) -> Self {
        match e {
            BootError::State(s) => StartError::State(s),
            BootError::Crypto(c) => StartError::Crypto(c),
        }
    }
}

impl StartError {
    /// Whether the configuration is at fault (flags, paths, the policy, the state directory's
    /// owner or mode, a corrupt chip), so that starting again cannot help; the other errors
    /// (a mount that failed, a directory another daemon holds, I/O) may pass.
    pub fn is_config(&self) -> bool {
        match self {
            StartError::State(s) => s.is_config(),
            StartError::RealDevice(_)
            | StartError::Path { .. }
            | StartError::Policy(_)
            | StartError::Audit { .. }
            | StartError::HwDevice { .. } => true,
            StartError::Mount { .. } | StartError::Crypto(_) => false,
        }
    }
}

/// A running daemon.
pub struct Daemon {
    backend: Arc<dyn SevBackend>,
    gate: Arc<Gate>,
    _state: Option<Arc<StateDir>>,
    mounts: Vec<MountHandle>,
    placeholders: Vec<PathBuf>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("mounts", &self.mounts)
            .finish_non_exhaustive()
    }
}

/// Detaches mounts of ours left at `path` by a daemon that was killed; true if one was.
fn detach_stale(path: &Path) -> bool {
    let found = vfs::find_mounts(FSNAME).unwrap_or_default();
    let mut any = false;
    for p in found.iter().filter(|p| p.as_path() == path) {
        log::warn!(
            "detaching a stale mount at {} left by an earlier daemon",
            p.display()
        );
        if let Err(e) = vfs::detach(p) {
            log::warn!("could not detach {}: {e}", p.display());
        }
        any = true;
    }
    any
}

/// Makes or checks the placeholder file a drop-in node is mounted on; true if it is ours to
/// remove at shutdown.
fn prepare_placeholder(path: &Path, stale: bool) -> Result<bool, StartError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_char_device() => Err(StartError::RealDevice(path.into())),
        Ok(meta) if meta.file_type().is_file() => Ok(stale && meta.len() == 0),
        Ok(_) => Err(StartError::Path {
            path: path.into(),
            why: "exists and is not a regular file".into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            crate::dropin::create_placeholder(path).map_err(|e| StartError::Path {
                path: path.into(),
                why: format!("cannot create the placeholder: {e}"),
            })?;
            Ok(true)
        }
        Err(e) => Err(StartError::Path {
            path: path.into(),
            why: e.to_string(),
        }),
    }
}

/// Lets the VM node recognise this `sev` mount in its callers' file tables.
fn register_sev_node(check: &ProcFdCheck, path: &Path, ino: u64) -> Result<(), StartError> {
    match vfs::fuse_mount(FSNAME, path) {
        Ok(Some(m)) => {
            check.add(m.id, m.dev, ino);
            Ok(())
        }
        Ok(None) => Err(StartError::Path {
            path: path.into(),
            why: "the mount just made is not in /proc/self/mountinfo".into(),
        }),
        Err(e) => Err(StartError::Path {
            path: path.into(),
            why: format!("reading /proc/self/mountinfo: {e}"),
        }),
    }
}

/// Checks that `--hw-device` is a real device node or another sevd's `sev` node, and not
/// one this daemon is about to serve (it would forward to itself).
fn check_hw_device(path: &Path, config: &Config) -> Result<(), StartError> {
    let bad = |why: &str| StartError::HwDevice {
        path: path.into(),
        why: why.into(),
    };
    let meta = fs::metadata(path).map_err(|e| bad(&e.to_string()))?;
    let own = [Some(config.mountpoint.join("sev")), config.link.clone()];
    if own.iter().flatten().any(|p| p == path) {
        return Err(bad("is this daemon's own node; it would forward to itself"));
    }
    if meta.file_type().is_char_device() {
        return Ok(());
    }
    let another_sevd = vfs::find_mounts(FSNAME)
        .unwrap_or_default()
        .iter()
        .any(|m| m == path || m.join("sev") == path);
    if meta.is_file() && another_sevd {
        return Ok(());
    }
    Err(bad(
        "is neither a character device nor another sevd's sev node",
    ))
}

impl Daemon {
    /// Starts the backend (the software firmware from its state, or the device), and mounts
    /// the nodes: `sev`, and `sev-vm` with the software firmware.
    pub fn start(config: &Config) -> Result<Daemon, StartError> {
        let policy = match &config.policy {
            Some(p) => Some((crate::access::Policy::load(p)?, p.clone())),
            None => None,
        };
        let audit = match &config.audit_log {
            Some(p) => {
                Some(
                    crate::access::AuditLog::open(p).map_err(|source| StartError::Audit {
                        path: p.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let gate = Arc::new(Gate::new(policy, audit));
        let fd_check = Arc::new(ProcFdCheck::default());
        // With SNP, the key server's ARK, ASK and the VCEK at the reported TCB (DER), served
        // beside the nodes and replaced when SNP_COMMIT or SNP_SET_CONFIG moves the TCB.
        let mut vcek_files = vec![];
        // What the software part is, for `sevctl exec`; real hardware is the host's CPU.
        let mut part = None;
        let (backend, vm_node, state): (Arc<dyn SevBackend>, Option<Arc<dyn CharDevice>>, _) =
            match &config.backend {
                Backend::Software => {
                    let (dev, state) = power_on(
                        &config.state_dir,
                        config.firmware,
                        config.nonce_seed,
                        config.init_mode,
                    )?;
                    let fw = dev.firmware();
                    part = Some(crate::part::Part::of(
                        &config.firmware,
                        fw.chip().product,
                        fw.current_tcb().microcode,
                    ));
                    let state = Arc::new(state);
                    if config.firmware.snp {
                        crate::boot::publish_vcek_chain(&state, dev.firmware(), true)?;
                        for name in crate::kds::NAMES {
                            let path = state.path().join(format!("{name}.der"));
                            let bytes = fs::read(&path).unwrap_or_default();
                            vcek_files.push((name, vfs::SharedFile::new(bytes)));
                        }
                    }
                    let dev = Arc::new(Mutex::new(dev));
                    let kvm = Arc::new(KvmSev::new(
                        dev.clone(),
                        fd_check.clone(),
                        config.limits,
                        Staging::Always,
                    ));
                    let vm: Arc<dyn CharDevice> = Arc::new(VmNode::new(kvm, gate.clone()));
                    let backend: Arc<dyn SevBackend> = if vcek_files.is_empty() {
                        dev
                    } else {
                        Arc::new(VcekPublisher::new(dev, state.clone(), vcek_files.clone()))
                    };
                    (backend, Some(vm), Some(state))
                }
                Backend::Hardware(path) => {
                    check_hw_device(path, config)?;
                    let dev = Passthrough::open(path).map_err(|e| StartError::HwDevice {
                        path: path.clone(),
                        why: e.to_string(),
                    })?;
                    log::info!("forwarding every command to {}", path.display());
                    (Arc::new(dev), None, None)
                }
            };
        let mut daemon = Daemon {
            backend: backend.clone(),
            gate: gate.clone(),
            _state: state,
            mounts: vec![],
            placeholders: vec![],
        };
        let options = MountOptions {
            fsname: crate::paths::mount_source(&config.mountpoint),
            allow_other: true,
        };
        let node: Arc<dyn CharDevice> = Arc::new(SevNode::new(backend, gate));

        // Check the drop-in paths before mounting anything: PATH for `sev`, PATH-vm beside it.
        let mut links = vec![];
        if let Some(link) = &config.link {
            let mut nodes = vec![(link.clone(), node.clone())];
            if let Some(vm) = &vm_node {
                nodes.push((crate::paths::vm_node(link), vm.clone()));
            }
            for (path, dev) in nodes {
                let stale = detach_stale(&path);
                let ours = prepare_placeholder(&path, stale)?;
                links.push((path, ours, dev));
            }
        }

        detach_stale(&config.mountpoint);
        fs::create_dir_all(&config.mountpoint).map_err(|e| StartError::Path {
            path: config.mountpoint.clone(),
            why: e.to_string(),
        })?;
        // Inode 2 is `sev`, 3 is `sev-vm`.
        let mut devices = vec![("sev".into(), node.clone())];
        if let Some(vm) = vm_node {
            devices.push(("sev-vm".into(), vm));
        }
        // One fence over every mount: a VM closed through one is gone for the others
        // (vfs::ReleaseFence).
        let fence = vfs::ReleaseFence::new();
        let mut fs_dir = DeviceFs::dir(devices, config.mode).with_fence(&fence);
        let backend = match &config.backend {
            Backend::Software => format!(
                "the software firmware (state in {})\n",
                config.state_dir.display()
            ),
            Backend::Hardware(dev) => format!("{}, passed through\n", dev.display()),
        };
        fs_dir = fs_dir.with_file(crate::paths::BACKEND_FILE, backend.into_bytes());
        if let Some(part) = part {
            let json = serde_json::to_vec(&part).map_err(|e| StartError::Path {
                path: config.mountpoint.join(crate::paths::PART_FILE),
                why: e.to_string(),
            })?;
            fs_dir = fs_dir.with_file(crate::paths::PART_FILE, json);
        }
        // The software platform's ASK ‖ ARK beside its nodes, where sevctl looks for it.
        if let Some(state) = &daemon._state {
            let ca = state.path().join(crate::paths::CA_FILE);
            match fs::read(&ca) {
                Ok(bytes) => fs_dir = fs_dir.with_file(crate::paths::CA_FILE, bytes),
                Err(e) => log::warn!("{}: {e}; not published beside the nodes", ca.display()),
            }
            for (name, file) in &vcek_files {
                fs_dir = fs_dir.with_shared_file(&format!("{name}.der"), file.clone());
            }
        }
        let mount = vfs::mount(fs_dir, &config.mountpoint, &options).map_err(|source| {
            StartError::Mount {
                path: config.mountpoint.clone(),
                source,
            }
        })?;
        daemon.mounts.push(mount);
        register_sev_node(&fd_check, &config.mountpoint, 2)?;

        for (path, ours, dev) in links {
            if ours {
                daemon.placeholders.push(path.clone());
            }
            let is_sev = Arc::ptr_eq(&dev, &node);
            let fs = DeviceFs::file(dev, config.mode).with_fence(&fence);
            let mount = vfs::mount(fs, &path, &options).map_err(|source| StartError::Mount {
                path: path.clone(),
                source,
            })?;
            daemon.mounts.push(mount);
            if is_sev {
                register_sev_node(&fd_check, &path, 1)?;
            }
        }
        Ok(daemon)
    }

    /// Rereads the policy file (SIGHUP); a bad file keeps the policy in force.
    pub fn reload(&self) {
        match self.gate.reload() {
            Ok(()) if self.gate.policy_path.is_some() => log::info!("policy reloaded"),
            Ok(()) => log::info!("SIGHUP: no policy file to reload"),
            Err(e) => log::error!("policy not reloaded, the old one stays: {e}"),
        }
    }

    /// Where the nodes are mounted.
    pub fn mount_points(&self) -> Vec<PathBuf> {
        self.mounts.iter().map(|m| m.path().to_path_buf()).collect()
    }

    /// Waits for the command in flight, detaches every mount and removes the placeholders it
    /// made. The firmware has already persisted every change.
    pub fn shutdown(self) {
        // No command after the audit log's last line: the gate lets none in, and waits for
        // those inside, before it closes the log.
        self.gate.close();
        self.backend.barrier();
        for mount in self.mounts {
            let path = mount.path().to_path_buf();
            if let Err(e) = mount.detach() {
                log::warn!("detaching {}: {e}", path.display());
            }
        }
        for p in self.placeholders {
            if let Err(e) = fs::remove_file(&p) {
                log::warn!("removing the placeholder {}: {e}", p.display());
            }
        }
    }
}
