//! sevctl: manage an SEV platform, act as a guest owner, and launch guests from YAML
//! manifests, on a device (`/dev/sev` of sevd or of the kernel) or on the embedded firmware.

use sevctl_cli::{
    error, exec, launch, manifest, migrate, ok, owner_cmds, platform_cmds, select, snp, validate,
};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use error::Result;
use owner_cmds::{MeasurementArgs, SecretArgs, VmsaBuildArgs};
use platform_cmds::Show;
use select::Target;

/// Manage AMD SEV platforms and launch SEV guests.
#[derive(Debug, Parser)]
#[command(name = "sevctl", version)]
struct Cli {
    /// The SEV device node; the VM node is `<PATH>-vm`.
    #[arg(long, global = true, default_value = "/dev/sev")]
    device: PathBuf,
    /// Use the firmware embedded in this program instead of a device.
    #[arg(long, global = true)]
    emulated: bool,
    /// State of the embedded firmware (default: $XDG_STATE_HOME/sevctl or ~/.local/state/sevctl).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// The EPYC generation of the embedded firmware's part: a new state directory's chip is
    /// made as it (Milan by default); an existing chip must be it.
    #[arg(long, global = true, value_enum)]
    product: Option<sevd::part::Product>,
    /// Print data as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Print only errors and the data asked for.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Show platform information.
    Show {
        #[command(subcommand)]
        what: Show,
    },
    /// Everything the platform reports.
    Status,
    /// Export the platform's certificate chain (PDH, PEK, OCA, CEK; --full adds ASK, ARK).
    Export {
        /// Add AMD's part of the chain.
        #[arg(short, long)]
        full: bool,
        /// ASK ‖ ARK file (for --full).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Output file.
        destination: PathBuf,
    },
    /// Verify a certificate chain.
    Verify {
        /// Chain file (PDH ‖ PEK ‖ OCA ‖ CEK [‖ ASK ‖ ARK]); the platform's when absent.
        #[arg(long)]
        sev: Option<PathBuf>,
        /// Use this OCA instead of the chain's.
        #[arg(long)]
        oca: Option<PathBuf>,
        /// ASK ‖ ARK file.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Run a program, unmodified, so that it and every process it starts see the emulated
    /// part as their CPU (CPUID, MSRs, kvm_amd's parameters) and the platform at /dev/sev.
    Exec {
        /// The program and its arguments, after `--`.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "PROGRAM"
        )]
        command: Vec<std::ffi::OsString>,
    },
    /// Probe this host for SEV support (and say where guests can run).
    Ok {
        /// The SEV generation to probe for (default: this CPU's).
        #[arg(value_enum)]
        gen: Option<ok::Generation>,
    },
    /// Check that the PEK of a platform's chain signed an attestation report.
    Validate(validate::ValidateArgs),
    /// Generate an owner certificate authority (OCA) and its key.
    Generate {
        /// OCA certificate output.
        cert: PathBuf,
        /// OCA private key output (DER, mode 0600).
        key: PathBuf,
    },
    /// Take ownership of the platform with an OCA.
    Provision {
        /// OCA certificate.
        cert: PathBuf,
        /// OCA private key.
        key: PathBuf,
    },
    /// Reset the platform (new keys, self-owned).
    Reset,
    /// Rotate the platform's PDH.
    Rotate,
    /// Make a launch session for a PDH: NAME_godh.b64, NAME_session.b64, NAME_tek.bin, NAME_tik.bin.
    Session {
        /// File name prefix (default "vm").
        #[arg(short, long)]
        name: Option<String>,
        /// The platform's PDH certificate.
        pdh: PathBuf,
        /// Guest policy.
        policy: u32,
    },
    /// Launch measurements.
    Measurement {
        #[command(subcommand)]
        cmd: MeasurementCmd,
    },
    /// Launch secrets.
    Secret {
        #[command(subcommand)]
        cmd: SecretCmd,
    },
    /// SEV-ES save areas.
    Vmsa {
        #[command(subcommand)]
        cmd: VmsaCmd,
    },
    /// SEV-SNP: the platform's certificates.
    Snp {
        #[command(subcommand)]
        cmd: snp::SnpCmd,
    },
    /// Launch the guest a manifest describes, as owner and host, and inject its secrets.
    Launch {
        /// The manifest.
        manifest: PathBuf,
        /// Keep the guest until interrupted.
        #[arg(long)]
        keep: bool,
        /// Show the secrets' plaintext as the guest reads it (by default only each entry's
        /// GUID, length and whether it arrived as sent).
        #[arg(long)]
        show_secrets: bool,
        /// ASK ‖ ARK to verify the platform with (default: the manifest's, or the platform's
        /// published one).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Where the guest runs: sevd (the device or the embedded firmware) or kvm (/dev/kvm
        /// with the kernel's /dev/sev, on real hardware).
        #[arg(long, value_enum)]
        platform: Option<manifest::PlatformKind>,
        /// With --keep, an SNP guest: serve the guest's /dev/sev-guest at PATH (needs root or
        /// a setuid fusermount3).
        #[arg(long, value_name = "PATH", requires = "keep")]
        guest_device: Option<PathBuf>,
        /// With --guest-device, the certificate table extended reports carry: FILE in the
        /// kernel's format, as `snphost import` writes it (default: the platform's ARK, ASK
        /// and VCEK).
        #[arg(long, value_name = "FILE", requires = "guest_device")]
        certs: Option<PathBuf>,
        /// With --keep, an SEV or SEV-ES guest: take `sevctl migrate PATH` orders on a Unix
        /// socket at PATH (this user only).
        #[arg(
            long,
            value_name = "PATH",
            requires = "keep",
            conflicts_with = "guest_device"
        )]
        control: Option<PathBuf>,
        /// Then move the guest to a listening `sevctl receive` (unix:PATH or tcp:HOST:PORT).
        #[arg(long, value_name = "ADDR", conflicts_with_all = ["keep", "guest_device"])]
        migrate_to: Option<migrate::Addr>,
        /// After LAUNCH_FINISH, write the guest's ATTESTATION report (over a fresh random
        /// MNONCE) to FILE, for `validate`.
        #[arg(long, value_name = "FILE")]
        attestation_report: Option<PathBuf>,
        /// How long the migration waits for the target, in seconds.
        #[arg(
            long,
            value_name = "SECONDS",
            default_value_t = 30,
            requires = "migrate_to"
        )]
        migrate_timeout: u64,
    },
    /// Receive a migrating guest: listen, hand the source this platform's PDH and chain, and
    /// bring the guest to RUNNING here.
    Receive {
        /// Where to listen: unix:PATH or tcp:HOST:PORT.
        #[arg(long, value_name = "ADDR")]
        listen: migrate::Addr,
        /// Keep the guest until interrupted.
        #[arg(long)]
        keep: bool,
        /// With --keep: take `sevctl migrate PATH` orders on a Unix socket at PATH (this user
        /// only), so the guest can move on.
        #[arg(long, value_name = "PATH", requires = "keep")]
        control: Option<PathBuf>,
        /// Show the secrets' plaintext as the received guest reads it.
        #[arg(long)]
        show_secrets: bool,
        /// How long to wait for the source once it has connected, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        timeout: u64,
        /// ASK ‖ ARK of this platform, for the source's checks (default: the one the platform
        /// publishes).
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Move a guest kept with `--keep --control PATH` (by `launch` or `receive`) to a
    /// listening `sevctl receive`; the process keeping it does the move and then ends.
    Migrate {
        /// The kept guest's control socket.
        control: PathBuf,
        /// Where the target listens: unix:PATH or tcp:HOST:PORT.
        #[arg(long, value_name = "ADDR")]
        to: migrate::Addr,
        /// How long the move waits for the target, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        timeout: u64,
    },
    /// Manifests.
    Manifest {
        #[command(subcommand)]
        cmd: ManifestCmd,
    },
}

#[derive(Debug, Subcommand)]
enum MeasurementCmd {
    /// Compute the measurement a launch should report.
    Build(MeasurementArgs),
}

#[derive(Debug, Subcommand)]
enum SecretCmd {
    /// Build a LAUNCH_SECRET packet.
    Build(SecretArgs),
}

#[derive(Debug, Subcommand)]
enum VmsaCmd {
    /// Build a vCPU's initial save area.
    Build(VmsaBuildArgs),
    /// Show a save area.
    Show {
        /// The VMSA file.
        filename: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ManifestCmd {
    /// Check a manifest without launching.
    Check {
        /// The manifest.
        manifest: PathBuf,
    },
}

fn run(cli: Cli) -> Result<()> {
    sevctl_cli::steps::set_quiet(cli.quiet);
    let target = Target {
        device: cli.device.clone(),
        emulated: cli.emulated,
        state_dir: cli.state_dir.clone(),
        product: cli.product,
    };
    match cli.cmd {
        Cmd::Show { what } => platform_cmds::show(&target.open()?, what, cli.json),
        Cmd::Status => platform_cmds::status(&target.open()?, cli.json),
        Cmd::Snp {
            cmd: snp::SnpCmd::Certificates { dir },
        } => snp::certificates(&target, &target.open()?, &dir, cli.json),
        Cmd::Snp {
            cmd: snp::SnpCmd::Verify(args),
        } => snp::verify(&args, cli.json),
        Cmd::Export {
            full,
            ca,
            destination,
        } => platform_cmds::export(&target.open()?, &target, full, ca.as_deref(), &destination),
        Cmd::Ok { gen } => ok::ok(&target, gen, cli.json, cli.quiet),
        Cmd::Exec { command } => exec::exec(&target, &command),
        Cmd::Validate(args) => validate::validate(&args, cli.json, cli.quiet),
        Cmd::Verify { sev, oca, ca } => {
            let platform = if sev.is_none() {
                Some(target.open()?)
            } else {
                None
            };
            platform_cmds::verify(
                platform.as_ref(),
                &target,
                sev.as_deref(),
                oca.as_deref(),
                ca.as_deref(),
                cli.quiet,
            )
        }
        Cmd::Generate { cert, key } => platform_cmds::generate(&cert, &key),
        Cmd::Provision { cert, key } => platform_cmds::provision(&target.open()?, &cert, &key),
        Cmd::Reset => Ok(target.open()?.factory_reset()?),
        Cmd::Rotate => Ok(target.open()?.pdh_gen()?),
        Cmd::Session { name, pdh, policy } => owner_cmds::session(name.as_deref(), &pdh, policy),
        Cmd::Measurement {
            cmd: MeasurementCmd::Build(args),
        } => owner_cmds::measurement_build(&args),
        Cmd::Secret {
            cmd: SecretCmd::Build(args),
        } => owner_cmds::secret_build(&args),
        Cmd::Vmsa {
            cmd: VmsaCmd::Build(args),
        } => owner_cmds::vmsa_build(&args),
        Cmd::Vmsa {
            cmd: VmsaCmd::Show { filename },
        } => owner_cmds::vmsa_show(&filename),
        Cmd::Manifest {
            cmd: ManifestCmd::Check { manifest },
        } => {
            let m = manifest::Manifest::load(&manifest)?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "manifest": manifest,
                        "valid": true,
                        "guest": m.name,
                        "mode": m.mode.label(),
                        "policy": m.snp.as_ref().map_or(m.policy as u64, |s| s.policy),
                    })
                );
            } else {
                println!(
                    "{}: valid ({} guest {:?}, {} MiB, {} vCPUs, policy {:#x}, {} secrets)",
                    manifest.display(),
                    m.mode.label(),
                    m.name,
                    m.memory >> 20,
                    m.vcpus,
                    m.snp.as_ref().map_or(m.policy as u64, |s| s.policy),
                    m.secrets.len()
                );
            }
            Ok(())
        }
        Cmd::Launch {
            manifest,
            keep,
            show_secrets,
            ca,
            platform,
            guest_device,
            certs,
            control,
            migrate_to,
            migrate_timeout,
            attestation_report,
        } => {
            let mut m = manifest::Manifest::load(&manifest)?;
            // Refused before the guest starts.
            let certs = certs.as_deref().map(launch::read_cert_table).transpose()?;
            if control.is_some() && m.mode == manifest::Mode::Snp {
                return Err(error::input(
                    "--control keeps SEV and SEV-ES guests for `sevctl migrate`; SEV-SNP guests do not migrate through SEND/RECEIVE",
                ));
            }
            let kvm = match platform {
                None => m.kvm,
                Some(p) => p == manifest::PlatformKind::Kvm,
            };
            m.kvm = kvm;
            let platform = if kvm {
                sevd::platform::Platform::kvm(std::path::Path::new("/dev/kvm"), &target.device)?
            } else {
                target.open()?
            };
            let guest = launch::launch(
                &m,
                &target,
                &platform,
                ca.as_deref(),
                cli.json,
                show_secrets,
                &launch::After {
                    attestation_report: attestation_report.as_deref(),
                    migrate_to: migrate_to
                        .map(|addr| launch::MigrateTo {
                            addr,
                            timeout: std::time::Duration::from_secs(migrate_timeout),
                        })
                        .as_ref(),
                },
            )?;
            if !keep {
                return Ok(());
            }
            // Block the signals before saying so, so an early Ctrl-C is not lost.
            let signals = interrupt_signals();
            match &guest_device {
                Some(path) if m.mode == manifest::Mode::Snp => {
                    let served = launch::serve_guest_device(
                        &m, &target, &platform, guest.vm, path, certs,
                    )?;
                    let kept = migrate::control::keep(cli.json, signals, None, None);
                    // The device goes first, then the guest.
                    drop(served);
                    kept
                }
                Some(_) => Err(error::input(
                    "--guest-device serves an SNP guest's /dev/sev-guest; this manifest is not mode snp",
                )),
                None => {
                    let source = (m.mode != manifest::Mode::Snp).then(|| guest.source(&platform));
                    migrate::control::keep(cli.json, signals, control.as_deref(), source)
                }
            }
        }
        Cmd::Receive {
            listen,
            keep,
            control,
            show_secrets,
            timeout,
            ca,
        } => {
            let platform = target.open()?;
            let opts = migrate::receive::Options {
                listen,
                timeout: std::time::Duration::from_secs(timeout),
                show_secrets,
                ca,
            };
            let mut log = sevctl_cli::steps::Log::new(cli.json);
            let guest = migrate::receive::receive(&mut log, &target, &platform, &opts)?;
            if keep {
                let signals = interrupt_signals();
                let source = Some(guest.source(&platform));
                migrate::control::keep(cli.json, signals, control.as_deref(), source)?;
            }
            Ok(())
        }
        Cmd::Migrate {
            control,
            to,
            timeout,
        } => migrate::control::migrate(
            &control,
            &to,
            std::time::Duration::from_secs(timeout),
            cli.json,
        ),
    }
}

/// SIGINT and SIGTERM, blocked in this thread so they can be waited for.
fn interrupt_signals() -> Option<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().ok().map(|()| set)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sevctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
