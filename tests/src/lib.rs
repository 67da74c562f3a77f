//! Harness for the integration tests: starts the real `sevd` binary on temporary paths,
//! waits until its node answers, and always stops it and removes its mounts.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use uapi::ioctl::SEV_ISSUE_CMD;
use uapi::psp_sev::{SevIssueCmd, SevUserDataStatus};

pub use tempfile::TempDir;

pub mod bench;
pub mod fuse_file;

/// Runs `cmd` to its end and shows the command and what it printed, for a failing test's log.
pub fn shown(cmd: &mut Command) -> Output {
    let o = cmd.output().expect("run a command");
    eprintln!(
        "$ {cmd:?}\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// As [`shown`], and the command must succeed.
pub fn succeeds(cmd: &mut Command) -> Output {
    let o = shown(cmd);
    assert!(o.status.success(), "{cmd:?} failed");
    o
}

/// Whether a test whose prerequisite is missing must fail rather than skip: under CI
/// (`CI=true`) and as root, where the set-up provides everything.
pub fn must_run() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true") || nix::unistd::geteuid().is_root()
}

/// A prerequisite is missing: the test fails under CI or as root, and skips (saying why)
/// only for an unprivileged developer.
#[macro_export]
macro_rules! missing {
    ($why:expr) => {{
        let why = $why;
        if $crate::must_run() {
            panic!("prerequisite missing: {why}");
        }
        eprintln!("skipped: {why}");
        return;
    }};
}

/// The test mounts FUSE: root and /dev/fuse.
#[macro_export]
macro_rules! require_mount {
    () => {
        if !$crate::can_mount() {
            $crate::missing!("needs root and /dev/fuse");
        }
    };
}

/// virtee's `sevctl` 0.6.2, which scripts/test.sh installs and names in `SEVCTL_BIN`.
#[macro_export]
macro_rules! require_sevctl {
    () => {
        match $crate::sevctl_bin() {
            Ok(bin) => bin,
            Err(why) => $crate::missing!(why),
        }
    };
}

/// The path `/dev/sev` (and `/dev/sev-vm`), owned by this test until the guard drops.
#[macro_export]
macro_rules! own_dev_sev {
    () => {
        match $crate::own_dev_sev() {
            Ok(guard) => guard,
            Err(why) => $crate::missing!(why),
        }
    };
}

/// The two launch validators: sev-snp-measure (PyPI, named in `SEV_SNP_MEASURE` by
/// scripts/test.sh) and libvirt's virt-qemu-sev-validate, run by the system Python 3.
#[macro_export]
macro_rules! require_validators {
    () => {
        match $crate::validators() {
            Ok(v) => v,
            Err(why) => $crate::missing!(why),
        }
    };
}

/// `(sev-snp-measure, virt-qemu-sev-validate)`, checked.
pub fn validators() -> Result<(PathBuf, PathBuf), String> {
    let snp = std::env::var_os("SEV_SNP_MEASURE")
        .map(PathBuf::from)
        .ok_or("SEV_SNP_MEASURE is not set (scripts/test.sh installs sev-snp-measure)")?;
    if !snp.exists() {
        return Err(format!("SEV_SNP_MEASURE={} does not exist", snp.display()));
    }
    let legacy = PathBuf::from("/usr/bin/virt-qemu-sev-validate");
    if !legacy.exists() || !Path::new("/usr/bin/python3").exists() {
        return Err("virt-qemu-sev-validate is not installed (scripts/setup.sh installs libvirt-clients-qemu)".into());
    }
    Ok((snp, legacy))
}

/// A peer tool scripts/test.sh installs and names in the variable `var`, checked.
fn peer_bin(var: &str, tool: &str) -> Result<PathBuf, String> {
    let bin = std::env::var_os(var)
        .map(PathBuf::from)
        .ok_or_else(|| format!("{var} is not set (scripts/test.sh installs {tool})"))?;
    if !bin.exists() {
        return Err(format!("{var}={} does not exist", bin.display()));
    }
    Ok(bin)
}

/// `SEVCTL_BIN`: virtee's sevctl.
pub fn sevctl_bin() -> Result<PathBuf, String> {
    peer_bin("SEVCTL_BIN", "sevctl 0.6.2")
}

/// `SNPGUEST_BIN`: virtee's snpguest.
pub fn snpguest_bin() -> Result<PathBuf, String> {
    peer_bin("SNPGUEST_BIN", "snpguest 0.11.0")
}

/// `SNPHOST_BIN`: virtee's snphost, the host side of SEV-SNP.
pub fn snphost_bin() -> Result<PathBuf, String> {
    peer_bin("SNPHOST_BIN", "snphost 0.9.0")
}

/// Compiles tests/c/sevclient.c (a client of the system's <linux/psp-sev.h>) into `dir`.
pub fn build_c_client(dir: &Path) -> PathBuf {
    let bin = dir.join("sevclient");
    let out = Command::new("cc")
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&bin)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/c/sevclient.c"))
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// The `sevd` binary next to the test executables.
pub fn sevd_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("sevd");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        bin.display()
    );
    bin
}

/// Whether this machine can run FUSE tests (root and /dev/fuse). CI always can.
pub fn can_mount() -> bool {
    nix::unistd::geteuid().is_root() && Path::new("/dev/fuse").exists()
}

/// The chip the tests share: one per run of the suite, made by whichever test needs it first
/// (RSA-4096 generation takes seconds and is not what the tests test) and kept in
/// `target/tmp/chip-fixture` (scripts/test.sh clears it, so each run makes its own).
pub fn shared_chip() -> &'static [u8] {
    static CHIP: OnceLock<Vec<u8>> = OnceLock::new();
    CHIP.get_or_init(|| {
        let dir = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/tmp/chip-fixture"
        ));
        let state = sevd::state::StateDir::open_waiting(dir, Duration::from_secs(120))
            .expect("the chip fixture's directory");
        state
            .load_or_create_chip((1, 55), None, None)
            .expect("the shared chip")
            .encode()
            .to_vec()
    })
}

/// The key server (SNP ARK and ASK) the tests share, kept beside the shared chip: a daemon
/// started with `--snp` publishes its certificates, which would otherwise mean two more
/// RSA-4096 keys for every such daemon.
pub fn shared_kds() -> &'static [u8] {
    static KDS: OnceLock<Vec<u8>> = OnceLock::new();
    KDS.get_or_init(|| {
        let dir = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/tmp/chip-fixture"
        ));
        let state = sevd::state::StateDir::open_waiting(dir, Duration::from_secs(120))
            .expect("the chip fixture's directory");
        state
            .key_server(sevd::part::Product::DEFAULT, true)
            .expect("the shared key server")
            .expect("made")
            .encode()
            .expect("encoded")
            .to_vec()
    })
}

/// `ioctl(fd, SEV_ISSUE_CMD, {cmd, data, error})`: the result (errno on failure) and the
/// `error` field afterwards.
pub fn sev_issue(file: &File, cmd: u32, data: u64, error: u32) -> (Result<(), i32>, u32) {
    let mut arg = SevIssueCmd { cmd, data, error };
    // SAFETY: `arg` is a live 16-byte packed struct for the duration of the call.
    let r = unsafe {
        ioctl_sys::ioctl(
            file.as_raw_fd(),
            SEV_ISSUE_CMD as _,
            &mut arg as *mut SevIssueCmd,
        )
    };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let error = arg.error;
    (if r < 0 { Err(errno) } else { Ok(()) }, error)
}

/// Opens `path` read-write, or exits the helper process with the reason.
pub fn open_rw_or_exit(path: &str) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| {
            println!("error {path}: {e}");
            std::process::exit(1)
        })
}

/// `SEVD_VM_ENCRYPT_OP` on the VM file `vm` with KVM's command `id`, `data` as its struct and
/// `sev` as `sev_fd`: the errno on failure.
pub fn vm_encrypt_op<T>(
    vm: &File,
    sev: &File,
    id: uapi::kvm::KvmSevCmdId,
    data: &mut T,
) -> Result<(), i32> {
    let mut cmd = uapi::kvm::KvmSevCmd {
        id: id as u32,
        pad0: 0,
        data: data as *mut T as u64,
        error: 0,
        sev_fd: sev.as_raw_fd() as u32,
    };
    // SAFETY: `cmd` is a live kvm_sev_cmd, and `data` a live struct, for the whole call.
    let r = unsafe {
        ioctl_sys::ioctl(
            vm.as_raw_fd(),
            uapi::ioctl::SEVD_VM_ENCRYPT_OP as _,
            &mut cmd as *mut uapi::kvm::KvmSevCmd,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

/// PLATFORM_STATUS on an open node.
pub fn platform_status(file: &File) -> Result<SevUserDataStatus, i32> {
    let mut status = SevUserDataStatus::default();
    sev_issue(file, 1, &mut status as *mut _ as u64, 0).0?;
    Ok(status)
}

/// How to start a daemon.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Use this state directory instead of a fresh one.
    pub state_dir: Option<PathBuf>,
    /// Use this mount point instead of a fresh one.
    pub mountpoint: Option<PathBuf>,
    /// `--link`.
    pub link: Option<PathBuf>,
    /// Put the shared chip into a fresh state directory (default) or let sevd make one.
    pub own_chip: bool,
    /// More arguments.
    pub args: Vec<String>,
}

/// A running `sevd` child process.
pub struct Sevd {
    child: Option<Child>,
    /// Temporary directory holding the default state, mount point and log.
    pub dir: TempDir,
    /// `--state-dir`.
    pub state_dir: PathBuf,
    /// `--mountpoint`.
    pub mountpoint: PathBuf,
    /// `--link`, if any.
    pub link: Option<PathBuf>,
    log: PathBuf,
    attached: bool,
    hardware: bool,
}

impl Sevd {
    /// Starts a daemon on fresh temporary paths.
    pub fn start() -> Sevd {
        Self::start_with(Options::default())
    }

    /// Starts a daemon and waits until its node answers PLATFORM_STATUS.
    pub fn start_with(opts: Options) -> Sevd {
        let dir = tempfile::tempdir().expect("tempdir");
        let state_dir = opts
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("state"));
        if !opts.own_chip && !state_dir.join("chip.bin").exists() {
            std::fs::create_dir_all(&state_dir).expect("state dir");
            std::fs::write(state_dir.join("chip.bin"), shared_chip()).expect("chip");
            if opts.args.iter().any(|a| a == "--snp") {
                let kds = state_dir.join("kds.bin");
                std::fs::write(&kds, shared_kds()).expect("key server");
                std::fs::set_permissions(&kds, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .expect("key server mode");
            }
        }
        let mountpoint = opts
            .mountpoint
            .clone()
            .unwrap_or_else(|| dir.path().join("mnt"));
        let log = dir.path().join("sevd.log");
        let mut sevd = Sevd {
            child: None,
            dir,
            state_dir,
            mountpoint,
            link: opts.link.clone(),
            log,
            attached: false,
            hardware: opts.args.iter().any(|a| a == "hardware"),
        };
        let child = sevd.spawn(&opts.args);
        sevd.child = Some(child);
        sevd.wait_ready();
        sevd
    }

    fn spawn(&self, extra: &[String]) -> Child {
        let mut cmd = Command::new(sevd_bin());
        cmd.arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--mountpoint")
            .arg(&self.mountpoint);
        if let Some(link) = &self.link {
            cmd.arg("--link").arg(link);
        }
        cmd.args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&self.log).expect("log file"));
        cmd.spawn().expect("spawn sevd")
    }

    /// Whether every node answers: `sev` (and its drop-in) a PLATFORM_STATUS, and every
    /// mount is in place.
    fn ready(&self) -> bool {
        let mut nodes = vec![self.node()];
        nodes.extend(self.link.clone());
        let answers = nodes.iter().all(|n| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(n)
                .map(|f| platform_status(&f).is_ok())
                .unwrap_or(false)
        });
        answers && self.our_mounts().len() == 1 + self.expected_links()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.ready() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "sevd exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sevd not ready after 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A handle on a daemon started by another process, at `mountpoint` (for child
    /// processes of tests). Dropping it does not stop that daemon.
    pub fn attach(mountpoint: &Path) -> Sevd {
        Sevd {
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            state_dir: PathBuf::new(),
            mountpoint: mountpoint.to_path_buf(),
            link: None,
            log: PathBuf::new(),
            attached: true,
            hardware: false,
        }
    }

    /// `<mountpoint>/sev`.
    pub fn node(&self) -> PathBuf {
        self.mountpoint.join("sev")
    }

    /// Opens the node read-write.
    pub fn open(&self) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.node())
            .expect("open node")
    }

    /// Opens the node read-only.
    pub fn open_ro(&self) -> File {
        OpenOptions::new()
            .read(true)
            .open(self.node())
            .expect("open node")
    }

    /// What the daemon has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn signal_and_wait(&mut self, sig: nix::sys::signal::Signal) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM and wait; returns how it exited.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal_and_wait(nix::sys::signal::Signal::SIGTERM)
            .expect("daemon was running")
    }

    /// SIGKILL and wait, leaving its mounts stale (as a crash does).
    pub fn kill(&mut self) {
        self.signal_and_wait(nix::sys::signal::Signal::SIGKILL);
    }

    /// Starts the daemon again on the same paths.
    pub fn restart(&mut self, args: &[String]) {
        assert!(self.child.is_none(), "stop it first");
        let child = self.spawn(args);
        self.child = Some(child);
        self.wait_ready();
    }

    /// `<mountpoint>/sev-vm`.
    pub fn vm_node(&self) -> PathBuf {
        self.mountpoint.join("sev-vm")
    }

    /// The drop-in paths: `--link` and the VM node beside it.
    pub fn links(&self) -> Vec<PathBuf> {
        match &self.link {
            Some(l) => vec![l.clone(), sevd::paths::vm_node(l)],
            None => vec![],
        }
    }

    /// How many drop-in mounts the daemon makes: none without --link, `sev` alone in front
    /// of hardware, `sev` and `sev-vm` with the software firmware.
    fn expected_links(&self) -> usize {
        match (&self.link, self.hardware) {
            (None, _) => 0,
            (Some(_), true) => 1,
            (Some(_), false) => 2,
        }
    }

    /// Paths where a mount of ours is (still) present.
    pub fn our_mounts(&self) -> Vec<PathBuf> {
        let mut ours = vec![self.mountpoint.clone()];
        ours.extend(self.links());
        vfs::find_mounts("sevd")
            .unwrap_or_default()
            .into_iter()
            .filter(|p| ours.contains(p))
            .collect()
    }
}

impl Drop for Sevd {
    fn drop(&mut self) {
        if self.attached {
            return;
        }
        self.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
        // Whatever happened, leave no mount and no placeholder behind.
        for p in self.our_mounts() {
            let _ = vfs::detach(&p);
        }
        if let Some(link) = &self.link {
            if std::fs::metadata(link)
                .map(|m| m.is_file() && m.len() == 0)
                .unwrap_or(false)
            {
                let _ = std::fs::remove_file(link);
            }
        }
    }
}

/// Takes over `paths` for a test: nothing there, an empty placeholder file, or a mount of
/// ours (file-system name `fsname`) whose server is gone (its connection dead). A live
/// server's node or a real device is refused, never touched.
fn take_over(paths: &[&Path], fsname: &str) -> Result<(), String> {
    for path in paths {
        let mounted = vfs::find_mounts(fsname)
            .unwrap_or_default()
            .iter()
            .any(|p| p == path);
        if mounted {
            match std::fs::metadata(path) {
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                    let _ = vfs::detach(path);
                }
                _ => {
                    return Err(format!(
                        "{} is served by a running {fsname}; this test needs that path",
                        path.display()
                    ))
                }
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = std::fs::remove_file(path);
            }
            Ok(_) => {
                return Err(format!(
                    "{} exists and is not ours (real hardware?); this test needs that path",
                    path.display()
                ))
            }
            Err(_) => {}
        }
    }
    Ok(())
}

/// Exclusive use of `/dev/sev` (and `/dev/sev-vm`) for tools that insist on that path.
pub fn own_dev_sev() -> Result<MutexGuard<'static, ()>, String> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    take_over(&[Path::new("/dev/sev"), Path::new("/dev/sev-vm")], "sevd")?;
    Ok(guard)
}

/// Exclusive use of `/dev/sev-guest`, for tools that open only that path.
pub fn own_dev_sev_guest() -> Result<MutexGuard<'static, ()>, String> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    take_over(&[Path::new("/dev/sev-guest")], "sevctl")?;
    Ok(guard)
}

/// PDH_CERT_EXPORT with right-sized buffers: (PDH, PEK ‖ OCA ‖ CEK).
pub fn pdh_export(file: &File) -> Result<(Vec<u8>, Vec<u8>), (i32, u32)> {
    use uapi::psp_sev::SevUserDataPdhCertExport;
    let mut pdh = vec![0u8; 0x824];
    let mut chain = vec![0u8; 3 * 0x824];
    let mut arg = SevUserDataPdhCertExport {
        pdh_cert_address: pdh.as_mut_ptr() as u64,
        pdh_cert_len: pdh.len() as u32,
        cert_chain_address: chain.as_mut_ptr() as u64,
        cert_chain_len: chain.len() as u32,
    };
    match sev_issue(file, 5, &mut arg as *mut _ as u64, 0) {
        (Ok(()), _) => Ok((pdh, chain)),
        (Err(errno), error) => Err((errno, error)),
    }
}

/// A VMM's view of one VM on the `sev-vm` node: the VM file, the `sev` file whose number is
/// `sev_fd`, and page-aligned guest RAM registered as slot 0 at guest address 0.
pub struct VmClient {
    /// The VM (`sev-vm` open file).
    pub vm: File,
    /// The `sev` node, passed as `sev_fd`.
    pub sev: File,
    ram: *mut u8,
    ram_len: usize,
}

/// Failure of a VM ioctl: errno and the firmware status in `error`.
pub type VmError = (i32, u32);

impl VmClient {
    /// Opens a VM on `sevd` with `ram_len` bytes of guest RAM (a multiple of 4096).
    pub fn new(sevd: &Sevd, ram_len: usize) -> VmClient {
        let vm = OpenOptions::new()
            .read(true)
            .write(true)
            .open(sevd.vm_node())
            .expect("open sev-vm");
        Self::from_files(vm, sevd.open(), ram_len)
    }

    /// As [`VmClient::new`], the VM's type set first (`SEVD_VM_SET_TYPE`).
    pub fn new_typed(sevd: &Sevd, ram_len: usize, vm_type: u64) -> VmClient {
        let vm = OpenOptions::new()
            .read(true)
            .write(true)
            .open(sevd.vm_node())
            .expect("open sev-vm");
        // SAFETY: the argument points at a live u64, the request's size.
        let r = unsafe {
            ioctl_sys::ioctl(
                vm.as_raw_fd(),
                uapi::ioctl::SEVD_VM_SET_TYPE as _,
                &vm_type as *const u64,
            )
        };
        assert_eq!(r, 0, "SEVD_VM_SET_TYPE {vm_type}");
        Self::from_files(vm, sevd.open(), ram_len)
    }

    /// A VM on an open `sev-vm` file with no RAM and no ioctl issued yet.
    pub fn from_files_unmapped(vm: File, sev: File) -> VmClient {
        VmClient {
            vm,
            sev,
            ram: std::ptr::null_mut(),
            ram_len: 0,
        }
    }

    /// A VM on an open `sev-vm` file, with `sev` as its `sev_fd` and `ram_len` bytes of RAM.
    pub fn from_files(vm: File, sev: File, ram_len: usize) -> VmClient {
        // SAFETY: an anonymous private mapping; the pointer is checked below and unmapped on drop.
        let ram = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ram_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ram, libc::MAP_FAILED, "mmap guest RAM");
        let client = VmClient {
            vm,
            sev,
            ram: ram as *mut u8,
            ram_len,
        };
        let region = uapi::kvm::KvmUserspaceMemoryRegion {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: ram_len as u64,
            userspace_addr: client.ram as u64,
        };
        client
            .ioctl(
                uapi::ioctl::KVM_SET_USER_MEMORY_REGION,
                &region as *const _ as u64,
            )
            .expect("set memory region");
        client
    }

    /// A raw ioctl on the VM file.
    pub fn ioctl(&self, request: u32, arg: u64) -> Result<(), i32> {
        // SAFETY: the caller passes a pointer to a live struct of the request's size.
        let r = unsafe { ioctl_sys::ioctl(self.vm.as_raw_fd(), request as _, arg) };
        if r < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(())
        }
    }

    /// `SEVD_VM_ENCRYPT_OP` with KVM's command `id` and its struct at `data`.
    pub fn encrypt_op_raw(
        &self,
        id: uapi::kvm::KvmSevCmdId,
        data: u64,
        sev_fd: i32,
    ) -> Result<(), VmError> {
        let mut cmd = uapi::kvm::KvmSevCmd {
            id: id as u32,
            pad0: 0,
            data,
            error: 0,
            sev_fd: sev_fd as u32,
        };
        let r = self.ioctl(uapi::ioctl::SEVD_VM_ENCRYPT_OP, &mut cmd as *mut _ as u64);
        r.map_err(|errno| (errno, cmd.error))
    }

    /// `SEVD_VM_ENCRYPT_OP` with the VM's own `sev` file.
    pub fn encrypt_op<T>(&self, id: uapi::kvm::KvmSevCmdId, data: &mut T) -> Result<(), VmError> {
        self.encrypt_op_raw(id, data as *mut T as u64, self.sev.as_raw_fd())
    }

    /// A command without a struct.
    pub fn encrypt_op_plain(&self, id: uapi::kvm::KvmSevCmdId) -> Result<(), VmError> {
        self.encrypt_op_raw(id, 0, self.sev.as_raw_fd())
    }

    /// The VMM's (hypervisor's) view of guest RAM.
    pub fn ram(&self) -> &[u8] {
        // SAFETY: the mapping lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ram, self.ram_len) }
    }

    /// The VMM's view of guest RAM, to load images into.
    pub fn ram_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mapping lives as long as `self`, borrowed mutably here.
        unsafe { std::slice::from_raw_parts_mut(self.ram, self.ram_len) }
    }

    /// The VMM's address of guest address `gpa`.
    pub fn uaddr(&self, gpa: u64) -> u64 {
        self.ram as u64 + gpa
    }

    /// `SEVD_VM_SET_VMSA`.
    pub fn set_vmsa(&self, vcpu: u32, page: &[u8]) -> Result<(), i32> {
        assert_eq!(page.len(), 4096);
        let arg = uapi::kvm::SevdVmsa {
            vcpu,
            pad: 0,
            uaddr: page.as_ptr() as u64,
        };
        self.ioctl(uapi::ioctl::SEVD_VM_SET_VMSA, &arg as *const _ as u64)
    }

    /// `SEVD_VM_GUEST_ACCESS` read: what the guest sees at `gpa`.
    pub fn guest_read(&self, gpa: u64, len: usize) -> Result<Vec<u8>, i32> {
        let mut out = vec![0u8; len];
        let mut arg = uapi::kvm::SevdGuestAccess {
            gpa,
            uaddr: out.as_mut_ptr() as u64,
            len: len as u32,
            write: 0,
        };
        self.ioctl(uapi::ioctl::SEVD_VM_GUEST_ACCESS, &mut arg as *mut _ as u64)?;
        Ok(out)
    }
}

impl Drop for VmClient {
    fn drop(&mut self) {
        if self.ram.is_null() {
            return;
        }
        // SAFETY: unmaps exactly the mapping made in `from_files`.
        unsafe { libc::munmap(self.ram as *mut libc::c_void, self.ram_len) };
    }
}

/// A guest owner's session for platform `p`: a fresh GODH and the session buffer wrapping
/// `keys` for `p`'s PDH under `policy`, both encoded as LAUNCH_START takes them.
pub fn owner_session(
    p: &sevd::platform::Platform,
    keys: &sevd::owner::session::TransportKeys,
    policy: u32,
) -> (Vec<u8>, Vec<u8>) {
    use sevd::crypto::ecc::{EcKeyPair, EcPublic};
    use uapi::cert::{algo, usage, Certificate};
    let (pdh, _) = p.pdh_cert_export().expect("PDH_CERT_EXPORT");
    let pdh = Certificate::decode(&pdh).expect("a PDH certificate");
    let pdh = EcPublic::from_certificate(&pdh).expect("a P-384 PDH");
    let godh_key = EcKeyPair::generate().expect("GODH key");
    let godh = godh_key
        .certificate((0, 0), usage::PDH, algo::ECDH_SHA256)
        .expect("GODH certificate")
        .encode();
    let shared = godh_key.ecdh(&pdh).expect("ECDH");
    let session = sevd::owner::session::wrap(&shared, [1; 16], [2; 16], keys, policy)
        .expect("session")
        .encode()
        .to_vec();
    (godh, session)
}

/// xorshift64*: reproducible pseudo-random numbers for tests, from a seed they print.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// The seed of a randomised test: `VALIDATORS_SEED` to repeat a run, else the clock; printed,
/// so a failing run can be repeated.
pub fn seed() -> u64 {
    let seed = std::env::var("VALIDATORS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        | 1;
    eprintln!("VALIDATORS_SEED={seed}");
    seed
}

/// A `/dev/sev-guest` ioctl (`cmd` one of `uapi::sev_guest::SNP_GET_*`) with `io`: the
/// ioctl's return value.
///
/// # Safety
/// `io`'s request and response (and an extended report's certificate buffer) must point at
/// live buffers of the lengths Linux's driver takes; the call writes them.
pub unsafe fn sev_guest_ioctl(
    dev: &File,
    cmd: u32,
    io: &mut uapi::sev_guest::SnpGuestRequestIoctl,
) -> i32 {
    // SAFETY: `io` is live for the call and what it points at is as the caller promised.
    unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            cmd as _,
            io as *mut uapi::sev_guest::SnpGuestRequestIoctl,
        )
    }
}

/// A guest kept by `sevctl launch --keep --guest-device /dev/sev-guest` on `sevd`: its
/// `/dev/sev-guest` answers once this returns; SIGTERM and waited for on drop.
pub struct KeptGuest(std::process::Child);

impl KeptGuest {
    /// Launches `manifest` on `sevd` (started with `--snp`) and waits for the guest device.
    pub fn serve(sevd: &Sevd, manifest: &Path) -> KeptGuest {
        Self::serve_at(sevd, manifest, Path::new("/dev/sev-guest"))
    }

    /// The same, with the guest device served at `device`.
    pub fn serve_at(sevd: &Sevd, manifest: &Path, device: &Path) -> KeptGuest {
        Self::serve_through(&sevd.node(), manifest, device, &[])
    }

    /// The same through the platform's node `node` (its `--link`, say), with `extra` flags
    /// for `sevctl launch`.
    pub fn serve_through(node: &Path, manifest: &Path, device: &Path, extra: &[&str]) -> KeptGuest {
        let sevctl = sevd_bin().with_file_name("sevctl");
        let child = Command::new(&sevctl)
            .arg("--device")
            .arg(node)
            .arg("launch")
            .arg(manifest)
            .args(["--keep", "--guest-device"])
            .arg(device)
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("run sevctl");
        let mut kept = KeptGuest(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        // The placeholder appears before the mount; only the mount answers ioctls.
        while !vfs::find_mounts("sevctl")
            .unwrap_or_default()
            .iter()
            .any(|p| p == device)
        {
            if let Ok(Some(status)) = kept.0.try_wait() {
                panic!("sevctl launch --keep ended: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "{} was never served",
                device.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        kept
    }
}

impl Drop for KeptGuest {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

/// A process's peak resident memory (VmHWM) in KiB; 0 once it is gone.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The example manifest `example` (`examples/`) with `memory` of guest RAM and its paths
/// made absolute, written into `dir`.
pub fn example_sized(dir: &Path, example: &str, memory: &str) -> PathBuf {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let text = std::fs::read_to_string(examples.join(example)).expect("the example");
    let ex = examples.display().to_string();
    let out: String = text
        .lines()
        .map(|line| {
            let line = if line.trim_start().starts_with("memory:") {
                format!("  memory: {memory}")
            } else {
                line.to_string()
            };
            line.replace(": firmware/", &format!(": {ex}/firmware/"))
                .replace(": kernel/", &format!(": {ex}/kernel/"))
                .replace(": secrets/", &format!(": {ex}/secrets/"))
                + "\n"
        })
        .collect();
    let path = dir.join(format!("{example}-{memory}.yaml"));
    std::fs::write(&path, out).expect("the sized manifest");
    path
}

/// Runs `cmd` to its end (stdout and stderr captured, stderr shown): its output and its peak
/// resident memory, wait4's ru_maxrss in KiB.
#[expect(
    clippy::zombie_processes,
    reason = "wait4 reaps the child: std's wait gives no rusage"
)]
pub fn measured(cmd: &mut Command) -> (Output, u64) {
    eprintln!("$ {cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = vec![];
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid, and wait4 writes only it and `status`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: the child is ours and not yet waited for.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let output = Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    (output, usage.ru_maxrss as u64)
}

/// Waits up to a minute for `path` to appear (a listener's socket); `what` says who failed
/// to make it.
pub fn wait_for_path(path: &Path, what: &str) {
    let t = Instant::now();
    while !path.exists() {
        assert!(t.elapsed() < Duration::from_secs(60), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
