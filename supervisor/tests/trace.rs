//! The supervisor on real programs: a C probe, dynamically and statically linked, shells,
//! children of children, exit statuses, and what is left once the program ends.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use supervisor::{run, CpuidTable, Error, Outcome, Patch, Program, Regs};

fn regs(eax: u32, ebx: u32, ecx: u32, edx: u32) -> Regs {
    Regs { eax, ebx, ecx, edx }
}

/// A part unlike any host: AMD's vendor string, family 19h model 01h, and a
/// 0x8000_001F of its own.
fn table() -> CpuidTable {
    let vendor = |s: &[u8; 12]| {
        let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
        (w(0), w(4), w(8))
    };
    let (b, d, c) = vendor(b"AuthenticAMD");
    let mut t = CpuidTable::new();
    t.set(
        0,
        None,
        Patch {
            ebx: Some(b),
            ecx: Some(c),
            edx: Some(d),
            ..Patch::default()
        },
    )
    .set(
        1,
        None,
        Patch {
            eax: Some(0x00a0_0f11),
            ..Patch::default()
        },
    )
    .set(
        0x8000_001f,
        None,
        Patch::all(regs(0x1_b0ff, 0x4173, 509, 100)),
    )
    .extend_to(0x8000_001f);
    t
}

/// The probe built with the system's C compiler, with `flags`.
fn probe(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe.c");
    let st = Command::new("gcc")
        .args(flags)
        .arg("-O1")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc (scripts/setup.sh installs it)");
    assert!(st.success(), "building the probe with {flags:?}");
    out
}

fn sh(script: &str) -> Program {
    Program::new(
        OsStr::new("sh"),
        &[OsString::from("-c"), OsString::from(script)],
    )
    .unwrap()
}

/// Each line of the probe's output: leaf, sub-leaf and the four registers.
fn parse(out: &str) -> Vec<(String, Regs)> {
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let h = |s: &str| u32::from_str_radix(s, 16).unwrap();
            (f[0].to_string(), regs(h(f[1]), h(f[2]), h(f[3]), h(f[4])))
        })
        .collect()
}

fn vendor(r: Regs) -> String {
    let b: Vec<u8> = [r.ebx, r.edx, r.ecx]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn dynamic_and_static_programs_and_their_children_see_the_table() {
    assert!(
        supervisor::cpuid_faulting(),
        "this host has no CPUID faulting; the suite needs it"
    );
    let dir = tempfile::tempdir().unwrap();
    let dynamic = probe(dir.path(), "probe", &[]);
    let fixed = probe(dir.path(), "probe-static", &["-static"]);
    let host = parse(
        &String::from_utf8(Command::new(&dynamic).arg("7").output().unwrap().stdout).unwrap(),
    );
    for (bin, how) in [(&dynamic, "dynamic"), (&fixed, "static")] {
        let out = dir.path().join(format!("{how}.out"));
        // The shell, its child the probe, and the probe's own child.
        let script = format!(
            "{} 0 1 80000000 8000000a 8000001f 7 --then {} 80000001 > {}",
            bin.display(),
            bin.display(),
            out.display()
        );
        let (outcome, stats) = run(&sh(&script), &table()).unwrap();
        assert_eq!(outcome, Outcome::Exited(0), "{how}");
        assert!(stats.cpuids >= 6 && stats.execs >= 3, "{how}: {stats:?}");
        let seen = parse(&std::fs::read_to_string(&out).unwrap());
        assert_eq!(seen.len(), 7, "{how}: {seen:?}");
        assert_eq!(vendor(seen[0].1), "AuthenticAMD", "{how}");
        assert_eq!(seen[1].1.eax, 0x00a0_0f11, "{how}");
        assert!(seen[2].1.eax >= 0x8000_001f, "{how}");
        assert_eq!(seen[4].1, regs(0x1_b0ff, 0x4173, 509, 100), "{how}");
        // Every other leaf is the host's.
        assert_eq!(seen[5].1, host[0].1, "{how}: leaf 7");
        if Command::new(bin)
            .arg("80000000")
            .output()
            .unwrap()
            .stdout
            .starts_with(b"80000000.0 8000000")
        {
            assert_eq!(
                seen[3].1,
                Regs::default(),
                "{how}: a leaf the host lacks is empty"
            );
        }
        assert_eq!(seen[6].0, "80000001.0", "{how}: the child of the child");
    }
}

#[test]
fn exit_statuses_are_the_programs() {
    let t = table();
    assert_eq!(run(&sh("exit 7"), &t).unwrap().0, Outcome::Exited(7));
    assert_eq!(
        run(&sh("kill -TERM $$"), &t).unwrap().0,
        Outcome::Signaled(nix::sys::signal::Signal::SIGTERM)
    );
    let missing = Program::new(OsStr::new("no-such-program-anywhere"), &[]).unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)));
    assert_eq!(missing.exit_code(), 127);
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"not a program").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Found and executable, but no format execve knows: as env(1), 126.
    let e = run(&Program::new(plain.as_os_str(), &[]).unwrap(), &t).unwrap_err();
    assert_eq!(e.exit_code(), 126, "{e}");
}

#[test]
fn nothing_the_program_started_outlives_it() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("sleep 600 & echo $! > {}; exit 3", pidfile.display());
    assert_eq!(run(&sh(&script), &table()).unwrap().0, Outcome::Exited(3));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Dead: gone, or a zombie its new parent has yet to reap.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next();
    assert!(
        matches!(state, None | Some("Z")),
        "sleep {pid} still runs: {stat}"
    );
}
