//! `sevctl ok [sev|es|snp]`: probes the host for SEV support, as virtee sevctl's `ok` does
//! (the same checks, names, line format and exit rule), then says what only this project can:
//! whether `/dev/sev` is the kernel's device or a sevd drop-in and what stands behind it,
//! and where guests can run here (the embedded firmware always; `--platform kvm` only on
//! hardware).

use std::io::IsTerminal;
use std::path::Path;

use serde_json::json;

use crate::error::{CliError, Result};
use crate::select::Target;

/// The SEV generation a check belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generation {
    /// Secure Encrypted Virtualization.
    Sev,
    /// SEV with Encrypted State.
    Es,
    /// SEV with Secure Nested Paging.
    Snp,
}

impl Generation {
    /// The generations a probe for `self` covers.
    fn covers(self, of: Generation) -> bool {
        of as u8 <= self as u8
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pass,
    Fail,
    Skip,
}

impl State {
    fn word(self) -> &'static str {
        match self {
            State::Pass => "PASS",
            State::Fail => "FAIL",
            State::Skip => "SKIP",
        }
    }
}

/// One line: a check, its depth, its generation, and what it found.
struct Line {
    name: String,
    depth: usize,
    state: State,
    detail: Option<String>,
}

/// A check and the checks that only make sense if it passes. Its line names it `name` when
/// skipped and as `run` says when run (virtee's names differ between the two for some).
struct Check {
    name: String,
    gen: Generation,
    run: Box<dyn Fn() -> Found>,
    sub: Vec<Check>,
}

/// What a check found: its state, the name its line shows, and a detail.
struct Found {
    state: State,
    name: Option<String>,
    detail: Option<String>,
}

impl From<(State, Option<String>)> for Found {
    fn from((state, detail): (State, Option<String>)) -> Found {
        Found {
            state,
            name: None,
            detail,
        }
    }
}

fn check<F: Into<Found>>(
    name: impl Into<String>,
    gen: Generation,
    run: impl Fn() -> F + 'static,
    sub: Vec<Check>,
) -> Check {
    Check {
        name: name.into(),
        gen,
        run: Box::new(move || run().into()),
        sub,
    }
}

/// A found state shown under another name.
fn named(name: String, (state, detail): (State, Option<String>)) -> Found {
    Found {
        state,
        name: Some(name),
        detail,
    }
}

fn pass_if(ok: bool) -> (State, Option<String>) {
    (if ok { State::Pass } else { State::Fail }, None)
}

fn info(detail: String) -> (State, Option<String>) {
    (State::Pass, Some(detail))
}

/// CPUID `leaf`: (eax, ebx, ecx, edx); zeros where there is no x86 CPUID.
fn cpuid(leaf: u32) -> [u32; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        let r = std::arch::x86_64::__cpuid(leaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = leaf;
        [0; 4]
    }
}

fn sev_leaf() -> [u32; 4] {
    cpuid(0x8000_001f)
}

/// SYSCFG (MSR 0xC0010010) through the msr driver, 0 where it cannot be read (as virtee).
fn syscfg() -> u64 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/cpu/0/msr")
        .and_then(|f| f.read_exact_at(&mut b, 0xC001_0010))
        .map_or(0, |()| u64::from_le_bytes(b))
}

fn vendor() -> String {
    let [_, b, c, d] = cpuid(0);
    let bytes: Vec<u8> = [b, d, c].iter().flat_map(|r| r.to_le_bytes()).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn brand() -> String {
    let bytes: Vec<u8> = (0x8000_0002u32..=0x8000_0004)
        .flat_map(|l| cpuid(l).into_iter().flat_map(u32::to_le_bytes))
        .collect();
    String::from_utf8_lossy(&bytes)
        .trim_matches(char::from(0))
        .trim()
        .to_string()
}

fn kvm_param(name: &str) -> (State, Option<String>) {
    let path = format!("/sys/module/kvm_amd/parameters/{name}");
    match std::fs::read_to_string(&path) {
        Ok(v) if v.trim() == "1" || v.trim() == "Y" => info("enabled".into()),
        Ok(v) => (
            State::Fail,
            Some(format!("Error - contents read from {path}: {}", v.trim())),
        ),
        Err(_) if !Path::new(&path).exists() => {
            (State::Fail, Some(format!("Error - {path} does not exist")))
        }
        Err(e) => (
            State::Fail,
            Some(format!("Error - (unable to read {path}): {e}")),
        ),
    }
}

fn open_sev(path: &Path, write: bool) -> (State, Option<String>) {
    let what = if write { "writable" } else { "readable" };
    let r = std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open(path);
    match r {
        Ok(_) => info(format!("{} {what}", path.display())),
        Err(e) => (
            State::Fail,
            Some(format!("{} not {what}: {e}", path.display())),
        ),
    }
}

/// virtee's "Reading /dev/sev" and "Writing /dev/sev".
fn open_named(path: &Path, write: bool) -> Found {
    let verb = if write { "Writing" } else { "Reading" };
    named(format!("{verb} {}", path.display()), open_sev(path, write))
}

fn kvm_api() -> Found {
    let found = match std::fs::File::open("/dev/kvm") {
        Ok(kvm) => match vfs::ioctl_value(&kvm, uapi::ioctl::KVM_GET_API_VERSION, 0) {
            Ok(v) => info(format!("API version: {v}")),
            Err(_) => (
                State::Fail,
                Some("Error - accessing KVM device node failed".into()),
            ),
        },
        Err(e) => (State::Fail, Some(format!("Error reading /dev/kvm: ({e})"))),
    };
    named("KVM supported".into(), found)
}

fn memlock() -> Found {
    use nix::sys::resource::{getrlimit, Resource};
    let found = match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Ok((soft, hard)) => info(format!("Soft: {soft} | Hard: {hard}")),
        Err(_) => (
            State::Fail,
            Some("Unable to retrieve memlock resource limits".into()),
        ),
    };
    named("Memlock resource limit".into(), found)
}

/// The generation of this CPU by family and model, as virtee's `ok` tells it (`None`: not a
/// known SEV generation).
fn current() -> Option<Generation> {
    let eax = cpuid(0x8000_0001)[0];
    let family = ((eax >> 8) & 0xf) + ((eax >> 20) & 0xff);
    let model = ((eax >> 16) & 0xf) << 4 | ((eax >> 4) & 0xf);
    match (family, model) {
        (0x17, 0x1..=0x30) => Some(Generation::Sev),
        (0x17, 0x31..=0x3f) => Some(Generation::Es),
        (0x19 | 0x1a, _) => Some(Generation::Snp),
        _ => None,
    }
}

/// virtee sevctl's checks, in its order and with its names.
fn hardware_checks(sev: &Path) -> Vec<Check> {
    let (r, w) = (sev.to_path_buf(), sev.to_path_buf());
    use Generation::*;
    let bit = |b: u32| sev_leaf()[0] & (1 << b) != 0;
    vec![
        check(
            "AMD CPU",
            Sev,
            || pass_if(vendor() == "AuthenticAMD"),
            vec![
                check(
                    "Microcode support",
                    Sev,
                    || pass_if(brand().to_uppercase().contains("EPYC")),
                    vec![],
                ),
                check(
                    "Secure Memory Encryption (SME)",
                    Sev,
                    move || pass_if(bit(0) && syscfg() & (1 << 23) != 0),
                    vec![],
                ),
                check(
                    "Secure Encrypted Virtualization (SEV)",
                    Sev,
                    move || pass_if(bit(1)),
                    vec![
                        check(
                            "Encrypted State (SEV-ES)",
                            Es,
                            move || pass_if(bit(3)),
                            vec![],
                        ),
                        check(
                            "Secure Nested Paging (SEV-SNP)",
                            Snp,
                            move || pass_if(bit(4) && syscfg() & (1 << 24) != 0),
                            vec![check(
                                "VM Permission Levels",
                                Snp,
                                move || pass_if(bit(5) && syscfg() & (1 << 25) != 0),
                                vec![check(
                                    "Number of VMPLs",
                                    Snp,
                                    || info(format!("{}", (sev_leaf()[1] >> 12) & 0xf)),
                                    vec![],
                                )],
                            )],
                        ),
                        check(
                            "Physical address bit reduction",
                            Sev,
                            || info(format!("{}", (sev_leaf()[1] >> 6) & 0x3f)),
                            vec![],
                        ),
                        check(
                            "C-bit location",
                            Sev,
                            || info(format!("{}", sev_leaf()[1] & 0x3f)),
                            vec![],
                        ),
                        check(
                            "Number of encrypted guests supported simultaneously",
                            Sev,
                            || info(format!("{}", sev_leaf()[2])),
                            vec![],
                        ),
                        check(
                            "Minimum ASID value for SEV-enabled, SEV-ES disabled guest",
                            Sev,
                            || info(format!("{}", sev_leaf()[3])),
                            vec![],
                        ),
                        check("SEV enabled in KVM", Sev, || kvm_param("sev"), vec![]),
                        check("SEV-ES enabled in KVM", Es, || kvm_param("sev_es"), vec![]),
                        check(
                            format!("{} readable", sev.display()),
                            Sev,
                            move || open_named(&r, false),
                            vec![],
                        ),
                        check(
                            format!("{} writable", sev.display()),
                            Sev,
                            move || open_named(&w, true),
                            vec![],
                        ),
                    ],
                ),
                check(
                    "Page flush MSR",
                    Sev,
                    move || {
                        // Enabled or not, the MSR is there: virtee passes it either way.
                        let on = if bit(2) { "ENABLED" } else { "DISABLED" };
                        named(format!("Page flush MSR: {on}"), (State::Pass, None))
                    },
                    vec![],
                ),
            ],
        ),
        check("KVM Support", Sev, kvm_api, vec![]),
        check("memlock limit", Sev, memlock, vec![]),
    ]
}

/// Runs `checks` as far as `gen` asks; a failed check skips the checks under it.
fn run(checks: &[Check], gen: Generation, depth: usize, skip: bool, out: &mut Vec<Line>) {
    for c in checks {
        let found = if skip || !gen.covers(c.gen) {
            (State::Skip, None).into()
        } else {
            (c.run)()
        };
        let state = found.state;
        out.push(Line {
            name: found.name.unwrap_or_else(|| c.name.clone()),
            depth,
            state,
            detail: found.detail,
        });
        run(&c.sub, gen, depth + 1, state != State::Pass, out);
    }
}

/// What stands at `--device`: the kernel's character device, a sevd drop-in (a FUSE file
/// of a mount named `sevd`), or nothing.
fn device_kind(path: &Path) -> (State, Option<String>) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return (
            State::Fail,
            Some(format!("{} does not exist", path.display())),
        );
    };
    if meta.file_type().is_char_device() {
        return info("the kernel's SEV device (ccp driver)".into());
    }
    let node = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let ours = vfs::find_mounts(sevd::daemon::FSNAME).unwrap_or_default();
    let mounted = ours
        .iter()
        .any(|m| m == &node || node.parent() == Some(m.as_path()));
    if !mounted {
        return (
            State::Fail,
            Some(format!(
                "{} is neither a device nor a sevd node",
                path.display()
            )),
        );
    }
    // A daemon says what answers in the directory its nodes' mount source names.
    let published = sevd::paths::published_dir(&node).join(sevd::paths::BACKEND_FILE);
    let backend = std::fs::read_to_string(published).ok();
    match backend {
        Some(b) => info(format!("a sevd drop-in; behind it: {}", b.trim())),
        None => info("a sevd drop-in".into()),
    }
}

/// What only this project can tell.
fn sevd_checks(target: &Target, hardware: bool) -> Vec<Line> {
    let line = |name: &str, depth, (state, detail): (State, Option<String>)| Line {
        name: name.to_string(),
        depth,
        state,
        detail,
    };
    let device = &target.device;
    let kind = device_kind(device);
    let present = kind.0 == State::Pass;
    let mut out = vec![line(&format!("{}", device.display()), 0, kind)];
    if present {
        out.push(line("readable", 1, open_sev(device, false)));
        out.push(line("writable", 1, open_sev(device, true)));
    }
    let state = target.state_dir();
    out.push(line(
        "Embedded firmware",
        0,
        info(format!(
            "built in (sevctl --emulated); state in {}{}",
            state.display(),
            if sevd::platform::EmbeddedConfig::new(&state).has_chip() {
                ""
            } else {
                ", chip made on first use"
            }
        )),
    ));
    out.push(line(
        "Guests on sevd (--device or --emulated)",
        0,
        info("SEV, SEV-ES and SEV-SNP launches, migration, attestation".into()),
    ));
    out.push(line(
        "Guests through KVM (--platform kvm)",
        0,
        if hardware {
            info("this CPU has SEV: /dev/kvm with the kernel's /dev/sev".into())
        } else {
            (
                State::Fail,
                Some("no SEV in this CPU: launch on the emulated platform instead".into()),
            )
        },
    ));
    out
}

/// `sevctl ok [GEN]`: prints each line as virtee sevctl does (`[ PASS ] - name: detail`),
/// then this project's; exit code 1 when a hardware check asked for failed.
pub fn ok(target: &Target, gen: Option<Generation>, json_out: bool, quiet: bool) -> Result<()> {
    // Without one, the generation of this CPU, or every check on a CPU of none.
    let gen = gen.or_else(current).unwrap_or(Generation::Snp);
    let mut lines = vec![];
    run(&hardware_checks(&target.device), gen, 0, false, &mut lines);
    let failed = lines.iter().any(|l| l.state == State::Fail);
    let hardware = sev_leaf()[0] & 0b10 != 0;
    let ours = sevd_checks(target, hardware);
    if json_out {
        let show = |ls: &[Line]| {
            ls.iter()
                .map(|l| json!({ "check": l.name, "depth": l.depth, "result": l.state.word(), "detail": l.detail }))
                .collect::<Vec<_>>()
        };
        println!(
            "{}",
            json!({ "ok": !failed, "generation": format!("{gen:?}").to_lowercase(), "checks": show(&lines), "sevd": show(&ours) })
        );
    } else if !quiet {
        let color = std::io::stdout().is_terminal();
        for l in &lines {
            print_line(l, color);
        }
        println!("sevd:");
        for l in &ours {
            print_line(l, color);
        }
    }
    if failed {
        Err(CliError::Other(
            "one or more checks of SEV support failed".into(),
        ))
    } else {
        Ok(())
    }
}

fn print_line(l: &Line, color: bool) {
    let word = l.state.word();
    let word = if color {
        let code = match l.state {
            State::Pass => 2,
            State::Fail => 1,
            State::Skip => 3,
        };
        format!("\x1b[38;5;{code}m{word}\x1b[0m")
    } else {
        word.to_string()
    };
    let detail = l
        .detail
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    println!(
        "[ {word} ] {:width$}- {}{detail}",
        "",
        l.name,
        width = 2 * l.depth
    );
}
