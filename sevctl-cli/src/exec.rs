//! `sevctl exec [--device PATH | --emulated] -- PROGRAM [ARGS...]`: runs an unmodified
//! program so that it, its threads and every process it starts see the emulated part
//! instead of the host. Its CPUID (vendor, signature, brand, the memory-encryption leaf) is
//! the part's; in a mount namespace of its own it finds the part's MSRs at
//! `/dev/cpu/N/msr`, `kvm_amd`'s parameters, a `/proc/cpuinfo` that names the part, and
//! the platform's node at `/dev/sev`. The rest of the host stays as it is. Exit statuses
//! are env(1)'s.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use sevd::daemon::{Backend, Config, Daemon};
use sevd::driver::kvm_sev::Limits;
use sevd::part::Part;
use sevd::paths::{published_dir, vm_node, PART_FILE};
use supervisor::{Content, CpuidTable, MsrDevice, Outcome, Overlay, Patch, Program};

use crate::select::Target;

/// A failure of `sevctl exec` itself: what it says, and its exit status (125, as env(1)'s
/// own failures, unless the program could not be found or run).
struct Failure(String, u8);

impl From<supervisor::Error> for Failure {
    fn from(e: supervisor::Error) -> Failure {
        let code = e.exit_code();
        Failure(e.to_string(), code)
    }
}

fn failure(e: impl std::fmt::Display) -> Failure {
    Failure(e.to_string(), 125)
}

/// Runs `command` as described above and ends this process as the program ended.
pub fn exec(target: &Target, command: &[OsString]) -> ! {
    match run(target, command) {
        Ok(outcome) => supervisor::exit_like(outcome),
        Err(Failure(why, code)) => {
            let _ = writeln!(std::io::stderr(), "sevctl exec: {why}");
            std::process::exit(code.into())
        }
    }
}

fn run(target: &Target, command: &[OsString]) -> Result<Outcome, Failure> {
    // Before any thread exists, so that none takes a signal meant for the program.
    supervisor::signals::block()?;
    let (name, args) = command
        .split_first()
        .ok_or_else(|| failure("no program given"))?;
    let program = Program::new(name, args)?;
    if !supervisor::cpuid_faulting() {
        return Err(supervisor::Error::NoCpuidFaulting.into());
    }
    let scratch = Scratch::new()?;
    // The namespace is made while this process has one thread.
    supervisor::private_namespace().map_err(supervisor::Error::from)?;
    let served = Served::start(target, &scratch)?;
    let node = served.node(&scratch);
    let part = published_part(&node)?;
    let msrs = serve_msrs(&part, &scratch.0.join("msr"))?;
    view(&part, &node, &msrs)
        .mount(&scratch.0.join("build"))
        .map_err(supervisor::Error::from)?;
    let outcome = supervisor::run(&program, &cpuid(&part));
    served.stop();
    let _ = msrs.mount.detach();
    drop(scratch);
    Ok(outcome?.0)
}

/// A private directory for the namespace's tmpfs and the embedded platform's nodes; it goes
/// with this command.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, Failure> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir().join(format!("sevctl-exec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&base)
            .map_err(|e| failure(format!("{}: {e}", base.display())))?;
        let scratch = Scratch(base);
        for d in ["build", "nodes", "msr"] {
            std::fs::create_dir(scratch.0.join(d))
                .map_err(|e| failure(format!("{}: {e}", scratch.0.display())))?;
        }
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What answers the program's `/dev/sev`.
enum Served {
    /// A daemon's node.
    Device(PathBuf),
    /// The embedded firmware, served by this process in the program's namespace alone.
    Embedded(Daemon),
}

impl Served {
    fn start(target: &Target, scratch: &Scratch) -> Result<Served, Failure> {
        if !target.is_embedded() {
            return Ok(Served::Device(target.device.clone()));
        }
        let embedded = target.embedded();
        let why = if target.emulated {
            String::new()
        } else {
            format!("no SEV device at {}; ", target.device.display())
        };
        crate::steps::note(format!(
            "{why}serving the embedded firmware to the program (state in {})",
            embedded.state_dir.display()
        ));
        let config = Config {
            backend: Backend::Software,
            policy: None,
            audit_log: None,
            state_dir: embedded.state_dir,
            mountpoint: scratch.0.join("nodes"),
            link: None,
            // This user's, as the embedded platform is.
            mode: vfs::FileMode {
                perm: 0o600,
                uid: nix::unistd::geteuid().as_raw(),
                gid: nix::unistd::getegid().as_raw(),
            },
            init_mode: Default::default(),
            firmware: embedded.firmware,
            nonce_seed: None,
            limits: Limits::default(),
        };
        Ok(Served::Embedded(Daemon::start(&config).map_err(failure)?))
    }

    fn node(&self, scratch: &Scratch) -> PathBuf {
        match self {
            Served::Device(p) => p.clone(),
            Served::Embedded(_) => scratch.0.join("nodes/sev"),
        }
    }

    fn stop(self) {
        if let Served::Embedded(d) = self {
            d.shutdown();
        }
    }
}

/// The part the sevd behind `node` publishes.
fn published_part(node: &Path) -> Result<Part, Failure> {
    let meta = std::fs::metadata(node).map_err(|e| {
        failure(format!(
            "{}: {e}; start sevd (its --link or mountpoint), or use --emulated",
            node.display()
        ))
    })?;
    if meta.file_type().is_char_device() {
        return Err(failure(format!(
            "{} is the kernel's SEV device: this host's own CPU is the part, so run the program without sevctl exec",
            node.display()
        )));
    }
    let file = published_dir(node).join(PART_FILE);
    let bytes = std::fs::read(&file).map_err(|e| {
        failure(format!(
            "{}: {e}; the sevd behind {} publishes no emulated part (its backend is hardware, or it predates sevctl exec)",
            file.display(),
            node.display()
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| failure(format!("{}: {e}", file.display())))
}

/// The part's CPUID over the host's.
fn cpuid(part: &Part) -> CpuidTable {
    let mut t = CpuidTable::new();
    for l in part.cpuid() {
        let [eax, ebx, ecx, edx] = l.regs;
        t.set(l.leaf, None, Patch { eax, ebx, ecx, edx });
    }
    t.extend_to(Part::MAX_EXTENDED);
    t
}

/// The part's MSRs, one file per CPU, served by this process at `dir`.
struct Msrs {
    mount: vfs::MountHandle,
    cpus: Vec<PathBuf>,
}

fn serve_msrs(part: &Part, dir: &Path) -> Result<Msrs, Failure> {
    let device: std::sync::Arc<dyn vfs::CharDevice> =
        std::sync::Arc::new(MsrDevice::new(part.msrs().into_iter().collect()));
    // SAFETY: sysconf takes a constant and returns a number.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1);
    let files = (0..cpus)
        .map(|cpu| (cpu.to_string(), device.clone()))
        .collect();
    // root:root 0600, as the msr driver's nodes; only the caller's own user otherwise.
    let mode = vfs::FileMode {
        perm: 0o600,
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    };
    let options = vfs::MountOptions {
        fsname: "sevctl-exec".into(),
        allow_other: true,
    };
    let mount = vfs::mount(vfs::DeviceFs::dir(files, mode), dir, &options)
        .map_err(|e| failure(format!("serving the MSRs at {}: {e}", dir.display())))?;
    Ok(Msrs {
        mount,
        cpus: (0..cpus).map(|cpu| dir.join(cpu.to_string())).collect(),
    })
}

/// The files the program sees of the part: `/dev/sev` (and `/dev/sev-vm`) the platform's
/// nodes, the MSRs of every CPU, `kvm_amd`'s parameters and `/proc/cpuinfo`.
fn view(part: &Part, node: &Path, msrs: &Msrs) -> Overlay {
    let mut o = Overlay::new();
    o.shadow("/dev").shadow("/sys/module");
    o.add("/dev/sev", Content::Bind(node.to_path_buf()), 0);
    let vm = vm_node(node);
    if vm.exists() {
        o.add("/dev/sev-vm", Content::Bind(vm), 0);
    }
    for (cpu, file) in msrs.cpus.iter().enumerate() {
        o.add(
            format!("/dev/cpu/{cpu}/msr"),
            Content::Bind(file.clone()),
            0,
        );
        // The cpuid driver would answer with the host's CPUID.
        o.add(format!("/dev/cpu/{cpu}/cpuid"), Content::Absent, 0);
    }
    for (name, on) in part.kvm_amd() {
        let value = if on { "Y\n" } else { "N\n" };
        o.add(
            format!("/sys/module/kvm_amd/parameters/{name}"),
            Content::Bytes(value.into()),
            0o444,
        );
    }
    if let Ok(host) = std::fs::read_to_string("/proc/cpuinfo") {
        o.cover("/proc/cpuinfo", cpuinfo(&host, part).into_bytes(), 0o444);
    }
    o
}

/// The host's `/proc/cpuinfo` with the part's vendor, signature, name and microcode, and
/// the memory-encryption flags the kernel shows on such a host.
fn cpuinfo(host: &str, part: &Part) -> String {
    let [family, model, stepping] = part.product.fms();
    let mut flags = vec!["sme", "sev", "sev_es"];
    if part.snp {
        flags.push("sev_snp");
    }
    let mut out = String::with_capacity(host.len() + 64);
    for line in host.lines() {
        let (key, value) = match line.split_once(':') {
            Some((k, v)) => (k.trim_end(), v.trim_start()),
            None => (line, ""),
        };
        let pad = &line[..line.find(':').unwrap_or(line.len())];
        let new = match key {
            "vendor_id" => Some("AuthenticAMD".to_string()),
            "cpu family" => Some(family.to_string()),
            "model" => Some(model.to_string()),
            "model name" => Some(part.product.brand().to_string()),
            "stepping" => Some(stepping.to_string()),
            "microcode" => Some(format!("{:#x}", part.patch_level())),
            "flags" => {
                let have: Vec<&str> = value.split_whitespace().collect();
                let mut all = value.to_string();
                for f in &flags {
                    if !have.contains(f) {
                        all.push(' ');
                        all.push_str(f);
                    }
                }
                Some(all)
            }
            _ => None,
        };
        match new {
            Some(v) => {
                out.push_str(pad);
                out.push_str(": ");
                out.push_str(&v);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_names_the_part_and_keeps_the_rest() {
        let host = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel(R) Xeon(R)\nstepping\t: 8\nmicrocode\t: 0x2b000590\nflags\t\t: fpu vme sev\nbogomips\t: 4000.00\n\n";
        let part = Part {
            product: sevd::part::Product::Milan,
            max_asid: 31,
            min_sev_asid: 16,
            snp: true,
            microcode: 0x73,
        };
        let out = cpuinfo(host, &part);
        assert_eq!(
            out,
            "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC-Milan Processor\nstepping\t: 1\nmicrocode\t: 0xa001173\nflags\t\t: fpu vme sev sme sev_es sev_snp\nbogomips\t: 4000.00\n\n"
        );
    }
}
