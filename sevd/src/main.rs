//! `sevd`: serves `/dev/sev` from the software firmware through FUSE.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use nix::sys::signal::{SigSet, Signal};

use sevd::daemon::{Backend as DaemonBackend, Config, Daemon};
use sevd::driver::kvm_sev::Limits;
use sevd::driver::sev_dev::InitMode;
use sevd::firmware::FirmwareConfig;
use vfs::FileMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// The emulated PSP.
    Software,
    /// A real SEV device node, passed through.
    Hardware,
}

/// A user-space AMD SEV driver: serves <mountpoint>/sev, byte for byte like the kernel's /dev/sev.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// What answers the commands.
    #[arg(long, value_enum, default_value = "software")]
    backend: Backend,
    /// Where the firmware keeps its chip identity and flash.
    #[arg(long, default_value = "/var/lib/sevd")]
    state_dir: PathBuf,
    /// Directory that gets the `sev` node.
    #[arg(long, default_value = "/run/sevd")]
    mountpoint: PathBuf,
    /// Also serve the node at this path (e.g. /dev/sev), mounted on a placeholder file.
    #[arg(long)]
    link: Option<PathBuf>,
    /// Group owning the nodes (mode then defaults to 0660).
    #[arg(long)]
    group: Option<String>,
    /// Mode of the nodes, in octal (default 0600).
    #[arg(long, value_parser = parse_mode)]
    mode: Option<u16>,
    /// The real device for --backend hardware.
    #[arg(long)]
    hw_device: Option<PathBuf>,
    /// Append one JSON line per command to this file.
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Who may issue which commands (YAML; see the README). Reloaded on SIGHUP.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Mirror kernels from 6.16: the platform stays UNINIT and state-changing commands
    /// initialise it only for their duration.
    #[arg(long)]
    init_per_command: bool,
    /// Bring the platform up with SEV-SNP, as a host with SNP enabled: SNP_INIT (the RMP)
    /// before SEV's INIT, and the SNP commands of /dev/sev answered.
    #[arg(long)]
    snp: bool,
    /// The SPLs installed on the emulated part, BOOTLOADER:TEE:SNP:MICROCODE, and on a
    /// Turin FMC:BOOTLOADER:TEE:SNP:MICROCODE (a new state directory's default: 3:0:8:115,
    /// a Turin's 0:0:0:0:9). On an existing one this installs a firmware or microcode
    /// update; SNP_COMMIT then commits it, and SNP refuses to start below what was
    /// committed.
    #[arg(long, value_name = "[FMC:]BL:TEE:SNP:UCODE")]
    snp_tcb: Option<uapi::snp::TcbVersion>,
    /// The EPYC generation of the emulated part: a new state directory's chip is made as it
    /// (Milan by default); an existing chip must be it.
    #[arg(long, value_enum)]
    product: Option<sevd::part::Product>,
    /// Highest ASID of the emulated part (CPUID 0x8000001F ECX).
    #[arg(long, default_value_t = FirmwareConfig::default().max_asid)]
    max_asid: u32,
    /// First plain-SEV ASID; SEV-ES guests get 1..this (CPUID 0x8000001F EDX).
    #[arg(long, default_value_t = FirmwareConfig::default().min_sev_asid)]
    min_sev_asid: u32,
    /// Open VMs (sev-vm files) one uid may hold; beyond it open() fails with ENOMEM.
    #[arg(long, default_value_t = Limits::default().vms_per_uid)]
    max_vms_per_uid: u32,
    /// vCPU save areas (SEVD_VM_SET_VMSA) one VM may hold; beyond it ENOSPC.
    #[arg(long, default_value_t = Limits::default().vcpus_per_vm)]
    max_vcpus_per_vm: u32,
    /// MiB of guest memory one VM may register; beyond it KVM_SET_USER_MEMORY_REGION fails
    /// with ENOMEM.
    #[arg(long, default_value_t = Limits::default().memory_per_vm >> 20)]
    max_memory_per_vm_mib: u64,
    /// ASIDs one uid may hold at once (as the misc cgroup's sev.max); 0 for no limit.
    /// Beyond it INIT fails with EBUSY.
    #[arg(long, default_value_t = 0)]
    max_asids_per_uid: u32,
    /// For tests only: draw the firmware's nonces from a fixed 32-byte seed (64 hex digits),
    /// so runs can be compared byte for byte. Never use it for real guests.
    #[arg(long, value_parser = parse_seed, hide = true)]
    nonce_seed: Option<[u8; 32]>,
}

fn parse_seed(s: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return Err("the seed is 64 hex digits".into());
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| "the seed is 64 hex digits".to_string())?;
    }
    Ok(out)
}

fn parse_mode(s: &str) -> Result<u16, String> {
    let v = u16::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("{s:?} is not an octal mode"))?;
    if v > 0o777 {
        return Err(format!(
            "{s:?}: only permission bits (at most 0777) are allowed"
        ));
    }
    Ok(v)
}

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // fuser logs every request it does not implement at warn; only its errors matter.
        let max = if m.target().starts_with("fuser") {
            log::Level::Error
        } else {
            log::max_level().to_level().unwrap_or(log::Level::Error)
        };
        m.level() <= max
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let _ = writeln!(
                std::io::stderr(),
                "sevd: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

/// Tells systemd we are ready when it asked (`Type=notify`).
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => return log::warn!("NOTIFY_SOCKET: {e}"),
    };
    let bytes = path.as_encoded_bytes();
    let r = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(b"READY=1", &addr))
    } else {
        sock.send_to(b"READY=1", PathBuf::from(&path))
    };
    if let Err(e) = r {
        log::warn!("could not notify systemd: {e}");
    }
}

/// `EX_CONFIG` (sysexits.h): the configuration is wrong, and starting again will not help.
/// The units name it in `RestartPreventExitStatus=`, so systemd stops instead of looping.
const EX_CONFIG: u8 = 78;

/// A configuration error: flags, groups, paths, the policy, the state directory.
fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("sevd: error: {msg}");
    ExitCode::from(EX_CONFIG)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = log::set_logger(&StderrLogger);
    log::set_max_level(match std::env::var("SEVD_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("warn") => log::LevelFilter::Warn,
        _ => log::LevelFilter::Info,
    });

    let backend = match (args.backend, &args.hw_device) {
        (Backend::Hardware, Some(dev)) => DaemonBackend::Hardware(dev.clone()),
        (Backend::Hardware, None) => return fail("--backend hardware needs --hw-device PATH"),
        (Backend::Software, Some(_)) => return fail("--hw-device goes with --backend hardware"),
        (Backend::Software, None) => DaemonBackend::Software,
    };
    if args.min_sev_asid == 0 || args.min_sev_asid > args.max_asid + 1 || args.max_asid > 1024 {
        return fail("need 1 <= --min-sev-asid <= --max-asid + 1 and --max-asid <= 1024");
    }
    let mut mode = FileMode::default();
    if let Some(name) = &args.group {
        match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => {
                mode.gid = g.gid.as_raw();
                mode.perm = 0o660;
            }
            Ok(None) => return fail(format!("--group {name}: no such group")),
            Err(e) => return fail(format!("--group {name}: {e}")),
        }
    }
    if let Some(perm) = args.mode {
        mode.perm = perm;
    }

    // Block the signals we wait for before any thread starts, so every thread inherits it.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    if let Err(e) = signals.thread_block() {
        return fail(format!("blocking signals: {e}"));
    }

    let config = Config {
        backend,
        policy: args.policy,
        audit_log: args.audit_log,
        state_dir: args.state_dir,
        mountpoint: args.mountpoint,
        link: args.link,
        mode,
        init_mode: if args.init_per_command {
            InitMode::PerCommand
        } else {
            InitMode::AtProbe
        },
        firmware: FirmwareConfig {
            max_asid: args.max_asid,
            min_sev_asid: args.min_sev_asid,
            snp: args.snp,
            tcb: args.snp_tcb,
            product: args.product,
            ..FirmwareConfig::default()
        },
        nonce_seed: args.nonce_seed,
        limits: Limits {
            vms_per_uid: args.max_vms_per_uid,
            vcpus_per_vm: args.max_vcpus_per_vm,
            memory_per_vm: args.max_memory_per_vm_mib.saturating_mul(1 << 20),
            asids_per_uid: args.max_asids_per_uid,
        },
    };
    let daemon = match Daemon::start(&config) {
        Ok(d) => d,
        Err(e) if e.is_config() => return fail(e),
        Err(e) => {
            eprintln!("sevd: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for p in daemon.mount_points() {
        log::info!("serving {}", p.display());
    }
    notify_ready();

    loop {
        match signals.wait() {
            Ok(Signal::SIGHUP) => daemon.reload(),
            Ok(sig) => {
                log::info!("{sig}: shutting down");
                break;
            }
            Err(e) => log::warn!("sigwait: {e}"),
        }
    }
    daemon.shutdown();
    // Exit without joining fuser's threads: a client holding a file keeps them alive.
    std::process::exit(0);
}
