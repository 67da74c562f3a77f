//! `sevctl exec`: unmodified programs see the emulated part, not the host, whatever the
//! host's CPU: virtee's `sevctl ok`, a C probe (dynamic and static), Python, shells and their
//! children; and it behaves as env(1) does with exit statuses, missing programs and signals.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tests::{require_mount, shown, Options, Sevd};

fn sevctl() -> PathBuf {
    tests::sevd_bin().with_file_name("sevctl")
}

/// An embedded platform's state directory holding the suite's chip.
fn embedded(root: &Path) -> PathBuf {
    let dir = root.join("state");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.join(sevd::paths::CHIP_FILE), tests::shared_chip()).unwrap();
    let kds = dir.join(sevd::paths::KDS_FILE);
    std::fs::write(&kds, tests::shared_kds()).unwrap();
    std::fs::set_permissions(&kds, std::fs::Permissions::from_mode(0o600)).unwrap();
    dir
}

/// `sevctl [platform] exec -- program...`.
fn exec(platform: &[&str], program: &[&str]) -> Output {
    let mut cmd = Command::new(sevctl());
    cmd.args(platform).arg("exec").arg("--").args(program);
    shown(&mut cmd)
}

/// The embedded platform's flags for a state directory.
fn emulated(state: &Path) -> Vec<String> {
    vec![
        "--emulated".into(),
        "--state-dir".into(),
        state.display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The C probe of the supervisor's tests, built with `flags`.
fn probe(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../supervisor/tests/probe.c");
    let st = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "gcc {flags:?}");
    out
}

/// The probe's lines: "leaf.subleaf" and its registers.
fn leaves(out: &[u8]) -> Vec<(String, [u32; 4])> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let h = |s: &str| u32::from_str_radix(s, 16).ok();
            Some((
                f.first()?.to_string(),
                [h(f.get(1)?)?, h(f.get(2)?)?, h(f.get(3)?)?, h(f.get(4)?)?],
            ))
        })
        .collect()
}

fn vendor(r: [u32; 4]) -> String {
    let b: Vec<u8> = [r[1], r[3], r[2]]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    String::from_utf8_lossy(&b).into_owned()
}

/// virtee's `ok` lines without colours: (state, text).
fn ok_lines(out: &[u8]) -> Vec<(String, String)> {
    let mut plain = String::new();
    let mut esc = false;
    for c in String::from_utf8_lossy(out).chars() {
        match (esc, c) {
            (false, '\u{1b}') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => plain.push(c),
        }
    }
    plain
        .lines()
        .filter_map(|l| {
            let (state, rest) = l.strip_prefix("[ ")?.split_once(" ]")?;
            Some((
                state.trim().to_string(),
                rest.trim_start_matches([' ', '-']).to_string(),
            ))
        })
        .collect()
}

#[test]
fn virtees_sevctl_ok_passes_every_line_with_the_daemons_part() {
    require_mount!();
    let virtee = tests::require_sevctl!();
    let virtee = virtee.display().to_string();
    let sevd = Sevd::start_with(Options {
        args: ["--snp", "--max-asid", "509", "--min-sev-asid", "100"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    });
    let node = sevd.node().display().to_string();
    let o = exec(&["--device", &node], &[&virtee, "ok"]);
    assert!(o.status.success(), "virtee's ok under sevctl exec");
    let lines = ok_lines(&o.stdout);
    assert!(lines.len() >= 19, "{lines:?}");
    for (state, text) in &lines {
        assert_eq!(state, "PASS", "{text}");
    }
    let find = |name: &str| {
        lines
            .iter()
            .find(|(_, t)| t.starts_with(name))
            .unwrap_or_else(|| panic!("no line {name}: {lines:?}"))
            .1
            .clone()
    };
    assert_eq!(find("C-bit location"), "C-bit location: 51");
    assert_eq!(
        find("Physical address bit reduction"),
        "Physical address bit reduction: 1"
    );
    assert_eq!(
        find("Number of encrypted guests"),
        "Number of encrypted guests supported simultaneously: 509"
    );
    assert_eq!(
        find("Minimum ASID"),
        "Minimum ASID value for SEV-enabled, SEV-ES disabled guest: 100"
    );
    assert_eq!(find("Number of VMPLs"), "Number of VMPLs: 4");
    drop(sevd);

    // A daemon without SNP: the SNP lines fail, as on a host whose BIOS left SNP off.
    let sevd = Sevd::start();
    let node = sevd.node().display().to_string();
    let o = exec(&["--device", &node], &[&virtee, "ok"]);
    assert!(!o.status.success());
    let lines = ok_lines(&o.stdout);
    let snp = lines
        .iter()
        .find(|(_, t)| t.starts_with("Secure Nested Paging"))
        .unwrap();
    assert_eq!(snp.0, "FAIL");
    let sev = lines
        .iter()
        .find(|(_, t)| t.starts_with("Encrypted State"))
        .unwrap();
    assert_eq!(sev.0, "PASS");
    let o = exec(&["--device", &node], &[&virtee, "ok", "es"]);
    assert!(o.status.success(), "SEV and SEV-ES pass");
}

#[test]
fn programs_static_dynamic_python_and_their_children_see_the_emulated_part() {
    require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let state = embedded(dir.path());
    let flags = emulated(&state);
    let dynamic = probe(dir.path(), "probe", &[]);
    let fixed = probe(dir.path(), "probe-static", &["-static"]);
    let host = leaves(
        &Command::new(&dynamic)
            .args(["1", "7"])
            .output()
            .unwrap()
            .stdout,
    );
    let leaves_asked = "0 1 80000000 80000001 8000001f 7";
    for bin in [&dynamic, &fixed] {
        // The probe, in a shell, in a shell: a child of a child.
        let script = format!("sh -c '{} {leaves_asked}'", bin.display());
        let o = exec(&strs(&flags), &["sh", "-c", &script]);
        assert!(o.status.success());
        let seen = leaves(&o.stdout);
        assert_eq!(seen.len(), 6, "{seen:?}");
        assert_eq!(vendor(seen[0].1), "AuthenticAMD");
        // Milan, whatever the host is (the host here: {host:?}).
        assert_eq!(seen[1].1[0], 0x00a0_0f11, "host {:x}", host[0].1[0]);
        assert_eq!(seen[3].1[0], 0x00a0_0f11);
        assert!(seen[2].1[0] >= 0x8000_001f);
        // The embedded platform: SNP on, 31 ASIDs from 16, C-bit 51.
        assert_eq!(seen[4].1, [0x3f, 0x4000 | 1 << 6 | 51, 31, 16]);
        // Every other leaf is the host's.
        assert_eq!(seen[5].1, host[1].1, "leaf 7");
    }
    // Python, whose own start runs CPUID through glibc, then asks the CPU itself.
    let py = r#"
import ctypes, mmap
# push rbx; mov eax,edi; xor ecx,ecx; mov r8,rsi; cpuid; mov [r8],eax; mov [r8+4],ebx;
# mov [r8+8],ecx; mov [r8+12],edx; pop rbx; ret
code = bytes.fromhex("5389f831c94989f00fa241890041895804418948084189500c5bc3")
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(code)
f = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_void_p)(ctypes.addressof(ctypes.c_char.from_buffer(m)))
r = (ctypes.c_uint32 * 4)()
for leaf in (0, 1):
    f(leaf, ctypes.addressof(r))
    print("%x.0 %08x %08x %08x %08x" % (leaf, r[0], r[1], r[2], r[3]))
"#;
    let o = exec(&strs(&flags), &["python3", "-c", py]);
    assert!(o.status.success());
    let seen = leaves(&o.stdout);
    assert_eq!(vendor(seen[0].1), "AuthenticAMD");
    assert_eq!(seen[1].1[0], 0x00a0_0f11);
    // Go, statically linked, whose runtime asks CPUID before its first system call.
    let go = dir.path().join("go-probe");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/cpuid-probe");
    let built = tests::shown(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&go)
            .arg(".")
            .current_dir(&src)
            .env("GOCACHE", dir.path().join("gocache"))
            .env("GOPATH", dir.path().join("gopath"))
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local"),
    );
    assert!(
        built.status.success(),
        "go build (scripts/setup.sh installs golang-go)"
    );
    let o = exec(&strs(&flags), &[go.to_str().unwrap()]);
    assert!(o.status.success());
    let seen = leaves(&o.stdout);
    assert_eq!(vendor(seen[0].1), "AuthenticAMD");
    assert_eq!(seen[1].1[0], 0x00a0_0f11);
}

#[test]
fn the_files_show_the_part_and_the_host_keeps_its_own() {
    require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let state = embedded(dir.path());
    let flags = emulated(&state);
    let script = "cat /sys/module/kvm_amd/parameters/sev /sys/module/kvm_amd/parameters/sev_es /sys/module/kvm_amd/parameters/sev_snp; \
        grep -m1 '^model name' /proc/cpuinfo; grep -m1 '^microcode' /proc/cpuinfo; \
        test -e /dev/cpu/0/cpuid && echo cpuid-device; test -e /dev/sev && test -e /dev/sev-vm && echo nodes; \
        test -e /dev/null && test -e /dev/pts && echo host-devices";
    let o = exec(&strs(&flags), &["sh", "-c", script]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..3], ["Y", "Y", "Y"]);
    assert!(lines[3].ends_with(": AMD EPYC-Milan Processor"), "{text}");
    // The chip's installed microcode SPL (115) as the patch level's low byte.
    assert!(lines[4].ends_with(": 0xa001173"), "{text}");
    assert_eq!(
        lines[5..],
        ["nodes", "host-devices"],
        "no host cpuid device"
    );
    // SYSCFG, RMP_BASE, RMP_END and the patch level at their MSR numbers.
    let py = "import os\nf = os.open('/dev/cpu/0/msr', os.O_RDONLY)\nfor m in (0xc0010010, 0xc0010132, 0xc0010133, 0x8b):\n    print(hex(int.from_bytes(os.pread(f, 8, m), 'little')))\ntry:\n    os.pread(f, 8, 0x10)\nexcept OSError as e:\n    print(e.errno)";
    let o = exec(&strs(&flags), &["python3", "-c", py]);
    let text = String::from_utf8_lossy(&o.stdout);
    let msrs: Vec<&str> = text.lines().collect();
    assert_eq!(msrs[0], "0x3f40000", "SYSCFG: SMEE, SNP_EN, VMPL_EN");
    assert_eq!(msrs[1], "0x100000000");
    assert!(msrs[2].starts_with("0x") && msrs[2] > msrs[1]);
    assert_eq!(msrs[3], "0xa001173");
    assert_eq!(msrs[4], libc::EIO.to_string(), "an MSR the part lacks");
    // Outside, nothing changed.
    let host = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    assert!(!host.contains("EPYC-Milan"));
}

#[test]
fn exit_statuses_missing_programs_and_signals_are_env1s() {
    require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let state = embedded(dir.path());
    let flags = emulated(&state);
    let f = strs(&flags);
    assert_eq!(exec(&f, &["sh", "-c", "exit 7"]).status.code(), Some(7));
    let o = exec(&f, &["no-such-program-anywhere"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("no-such-program-anywhere: No such file or directory"));
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"no format execve knows").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        exec(&f, &[plain.to_str().unwrap()]).status.code(),
        Some(126)
    );
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        exec(&f, &[plain.to_str().unwrap()]).status.code(),
        Some(126)
    );
    // Killed by a signal: sevctl exec dies of it too.
    let o = exec(&f, &["sh", "-c", "kill -KILL $$"]);
    assert_eq!(o.status.signal(), Some(libc::SIGKILL));

    // A signal sent to sevctl exec reaches the program, and nothing it started outlives it.
    let pidfile = dir.path().join("sleep.pid");
    let script = format!(
        "trap 'exit 42' TERM; sleep 600 & echo $! > {}; while :; do sleep 0.1; done",
        pidfile.display()
    );
    let mut child = Command::new(sevctl())
        .args(&f)
        .args(["exec", "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the program never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(42));
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next();
    assert!(
        matches!(state, None | Some("Z")),
        "the sleep still runs: {stat}"
    );
}

#[test]
fn a_launch_under_exec_goes_through_the_bound_dev_sev() {
    require_mount!();
    let sevd = Sevd::start();
    let node = sevd.node().display().to_string();
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/sev-es.yaml");
    // Inside, /dev/sev and /dev/sev-vm are binds of the daemon's nodes: the VM node takes
    // the bound /dev/sev as its sev_fd, and the daemon's published ASK and ARK are found
    // from the bind's mount source.
    let me = sevctl().display().to_string();
    let o = exec(&["--device", &node], &[&me, "launch", manifest, "--json"]);
    assert!(o.status.success(), "sevctl launch under sevctl exec");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["launch_digest"]
        .as_str()
        .is_some_and(|d| d.len() == 64));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("embedded firmware"));
}

#[test]
fn snphosts_show_commands_and_ok_answer_with_the_daemons_part() {
    require_mount!();
    let snphost = match tests::snphost_bin() {
        Ok(b) => b.display().to_string(),
        Err(why) => tests::missing!(why),
    };
    let sevd = Sevd::start_with(Options {
        args: ["--snp", "--snp-tcb", "3:0:8:115"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    });
    let node = sevd.node().display().to_string();
    let show = |what: &str| {
        let o = exec(&["--device", &node], &[&snphost, "show", what]);
        assert!(o.status.success(), "snphost show {what}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let tcb = show("tcb");
    assert!(
        tcb.contains("Microcode:   115") && tcb.contains("SNP:         8"),
        "{tcb}"
    );
    assert_eq!(show("version").trim(), "1.55");
    assert_eq!(show("guests").trim(), "0");
    let id = show("identifier");
    assert_eq!(id.trim().len(), 128, "{id}");
    let url = show("vcek-url");
    assert!(
        url.trim()
            .starts_with("https://kdsintf.amd.com/vcek/v1/Milan/")
            && url.contains(id.trim())
            && url.contains("blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"),
        "{url}"
    );
    // Every check of `ok`, the RMP, its alias check and the TCBs included.
    let o = exec(&["--device", &node], &[&snphost, "ok"]);
    let lines = ok_lines(&o.stdout);
    assert!(lines.len() >= 25, "{lines:?}");
    for (state, text) in &lines {
        assert_eq!(state, "PASS", "{text}");
    }
    assert!(o.status.success());
}

/// A new embedded chip made as `product` (its own ARK, ASK and chip identity: seconds):
/// programs under exec see its signature, its ARK names it, a launch's report carries its
/// CPUID fields (`fms`), and unmodified snpguest picks the product from the report and
/// verifies it against that product's chain. Returns the state directory's flags.
fn a_part_as_programs_reports_and_verifiers_see_it(
    snpguest: &Path,
    dir: &Path,
    product: &str,
    signature: u32,
    fms: [u8; 3],
) -> Vec<String> {
    let state = dir.join(product);
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut flags = emulated(&state);
    flags.extend(["--product".to_string(), product.to_string()]);
    let bin = probe(dir, "probe", &[]);
    let mut cmd = Command::new(sevctl());
    cmd.args(&flags).args(["exec", "--"]);
    let o = shown(cmd.arg(&bin).args(["1", "80000001"]));
    assert!(o.status.success());
    let seen = leaves(&o.stdout);
    assert_eq!((seen[0].1[0], seen[1].1[0]), (signature, signature));
    let ark = sevd::certs::x509::from_der(&std::fs::read(state.join("ark.der")).unwrap()).unwrap();
    let name = sevd::part::Product::from_signature(signature)
        .unwrap()
        .name();
    assert_eq!(
        sevd::certs::x509::subject_cn(&ark),
        Some(format!("ARK-{name}"))
    );
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/snp.yaml");
    let mut cmd = Command::new(sevctl());
    cmd.args(&flags).args(["--json", "launch", manifest]);
    let out = tests::succeeds(&mut cmd);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = hex::decode(v["report"].as_str().unwrap()).unwrap();
    assert_eq!(report[0x188..0x18b], fms, "CPUID_FAM_ID, MOD_ID, STEP");
    let (certs, file) = (dir.join("certs"), dir.join("report.bin"));
    std::fs::write(&file, &report).unwrap();
    let mut cmd = Command::new(sevctl());
    cmd.args(&flags).args(["snp", "certificates"]).arg(&certs);
    tests::succeeds(&mut cmd);
    let o = shown(
        Command::new(snpguest)
            .args(["verify", "attestation"])
            .arg(&certs)
            .arg(&file),
    );
    assert!(o.status.success(), "snpguest verify attestation");
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("VEK signed the Attestation Report!"),
        "{said}"
    );
    flags
}

#[test]
fn a_genoa_is_a_genoa_to_programs_reports_and_verifiers() {
    require_mount!();
    let snpguest = match tests::snpguest_bin() {
        Ok(b) => b,
        Err(why) => tests::missing!(why),
    };
    let dir = tempfile::tempdir().unwrap();
    let flags = a_part_as_programs_reports_and_verifiers_see_it(
        &snpguest,
        dir.path(),
        "genoa",
        0x00a1_0f11,
        [0x19, 0x11, 0x01],
    );
    // A part cannot change what it is.
    let mut milan = flags[..3].to_vec();
    milan.extend(["--product".to_string(), "milan".to_string()]);
    let o = exec(&strs(&milan), &["true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr).contains("this chip is a Genoa"));
}

/// A Turin: family 1Ah model 02h, an 8-byte chip id, and a TCB with an FMC level, in
/// its layout everywhere: SNP_PLATFORM_STATUS as unmodified snphost decodes it (by the
/// CPU it sees), its key server URL, the VCEK snpguest compares the report's FMC with.
#[test]
fn a_turin_is_a_turin_with_its_fmc() {
    require_mount!();
    let (snphost, snpguest) = match (tests::snphost_bin(), tests::snpguest_bin()) {
        (Ok(h), Ok(g)) => (h.display().to_string(), g),
        (Err(why), _) | (_, Err(why)) => tests::missing!(why),
    };
    let dir = tempfile::tempdir().unwrap();
    // A TCB without an FMC level is no Turin's: refused before a chip is made.
    let (state, mnt) = (dir.path().join("refused"), dir.path().join("mnt"));
    std::fs::create_dir(&state).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let o = shown(
        Command::new(tests::sevd_bin())
            .arg("--state-dir")
            .arg(&state)
            .arg("--mountpoint")
            .arg(&mnt)
            .args(["--snp", "--product", "turin", "--snp-tcb", "3:0:8:115"]),
    );
    assert!(!o.status.success());
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("a Turin's TCB has an FMC level"), "{said}");
    assert!(!state.join(sevd::paths::CHIP_FILE).exists());

    let flags = a_part_as_programs_reports_and_verifiers_see_it(
        &snpguest,
        dir.path(),
        "turin",
        0x00b0_0f21,
        [0x1a, 0x02, 0x01],
    );
    let show = |what: &str| {
        let o = exec(&strs(&flags), &[&snphost, "show", what]);
        assert!(o.status.success(), "snphost show {what}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let tcb = show("tcb");
    assert!(
        tcb.contains("Microcode:   9") && tcb.contains("FMC:         0"),
        "{tcb}"
    );
    let id = show("identifier");
    let url = show("vcek-url");
    assert!(
        url.trim()
            .starts_with("https://kdsintf.amd.com/vcek/v1/Turin/")
            && url.contains(id.trim())
            && url.contains("?fmcSPL=00&blSPL=00&teeSPL=00&snpSPL=00&ucodeSPL=09"),
        "{url}"
    );
    // The VCEK names the product without a stepping and carries fmcSPL.
    let vcek = std::fs::read(dir.path().join("certs/vcek.der")).unwrap();
    let vcek = sevd::certs::x509::from_der(&vcek).unwrap();
    assert_eq!(
        sevd::certs::x509::vcek_tcb(&vcek).map(|t| t.to_string()),
        Some("0:0:0:0:9".into())
    );
}
