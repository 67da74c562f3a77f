//! The hardware backend, tested by chaining: a software sevd, and a hardware-backend sevd
//! whose `--hw-device` is the first one's node. Unmodified clients get the same answers
//! through the chain; the chained daemon refuses devices it must not use, survives the device
//! vanishing, and enforces a policy and keeps an audit log.

use std::os::unix::process::CommandExt;
use std::process::Command;

use tests::{pdh_export, platform_status, sev_issue, Options, Sevd};

use tests::require_mount;

fn chained(first: &Sevd, extra: &[&str]) -> Sevd {
    let mut args: Vec<String> = vec![
        "--backend".into(),
        "hardware".into(),
        "--hw-device".into(),
        first.node().to_str().unwrap().into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Sevd::start_with(Options {
        args,
        ..Options::default()
    })
}

#[test]
fn the_chain_answers_as_the_device_does() {
    require_mount!();
    let first = Sevd::start();
    let second = chained(&first, &[]);
    assert!(
        !second.vm_node().exists(),
        "no VM node in front of hardware"
    );
    // Same answers directly and through the chain.
    let (direct, via) = (first.open(), second.open());
    assert_eq!(
        platform_status(&direct).unwrap(),
        platform_status(&via).unwrap()
    );
    assert_eq!(pdh_export(&direct).unwrap(), pdh_export(&via).unwrap());
    // The unmodified C client's checks, through the chain (they change the platform, so
    // each daemon gets a fresh pair).
    let client = tests::build_c_client(second.dir.path());
    let out = Command::new(&client)
        .arg("check")
        .arg(second.node())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "through the chain:\n{text}\n{}",
        second.log()
    );
    let fresh = Sevd::start();
    let direct = Command::new(&client)
        .arg("check")
        .arg(fresh.node())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&direct.stdout),
        text,
        "identical results"
    );
}

#[test]
fn the_sev_crate_through_the_chain() {
    require_mount!();
    let _dev_sev = tests::own_dev_sev!();
    let first = Sevd::start();
    let mut args: Vec<String> = vec![
        "--backend".into(),
        "hardware".into(),
        "--hw-device".into(),
        first.node().to_str().unwrap().into(),
    ];
    args.push("--init-per-command".into()); // accepted and irrelevant with hardware
    let _second = Sevd::start_with(Options {
        link: Some("/dev/sev".into()),
        args,
        ..Options::default()
    });
    let mut fw = sev::firmware::host::Firmware::open().unwrap();
    let st = fw.platform_status().unwrap();
    assert_eq!((st.build.version.major, st.build.version.minor), (1, 55));
    assert_eq!(Vec::<u8>::from(fw.get_identifier().unwrap()).len(), 64);
    fw.pek_csr().unwrap();
    fw.pdh_generate().unwrap();
    let chain = fw.pdh_cert_export().unwrap();
    let mut pdh = vec![];
    sev::parser::Encoder::encode(&chain.pdh, &mut pdh, ()).unwrap();
    assert_eq!(pdh, pdh_export(&first.open()).unwrap().0);
    use sev::certs::sev::{sev::Usage, Signer};
    let (mut oca, key) = sev::certs::sev::sev::Certificate::generate(Usage::OCA).unwrap();
    key.sign(&mut oca).unwrap();
    let mut pek = fw.pek_csr().unwrap();
    key.sign(&mut pek).unwrap();
    fw.pek_cert_import(&pek, &oca).unwrap();
    assert_eq!(
        platform_status(&first.open()).unwrap().flags & 1,
        1,
        "owned, as seen directly"
    );
    fw.platform_reset().unwrap();
    drop(fw);
    // virtee's sevctl through the chain too.
    {
        let sevctl = tests::require_sevctl!();
        let run = |args: &[&str]| Command::new(&sevctl).args(args).output().unwrap();
        let o = run(&["rotate"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let o = run(&["show", "flags"]);
        assert!(o.status.success());
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "es",
            "re-initialised by rotate, self-owned"
        );
        let o = run(&["show", "identifier"]);
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim().len(), 128);
    }
}

#[test]
fn refuses_devices_it_must_not_use() {
    require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let start = |hw: &std::path::Path, extra: &[&str]| {
        Command::new(tests::sevd_bin())
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--mountpoint")
            .arg(dir.path().join("mnt"))
            .args(["--backend", "hardware", "--hw-device"])
            .arg(hw)
            .args(extra)
            .output()
            .unwrap()
    };
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"").unwrap();
    let o = start(&plain, &[]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("neither a character device nor another sevd")
    );
    let o = start(&dir.path().join("mnt/sev"), &[]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("forward to itself") || !o.status.success()
    );
    let o = start(&dir.path().join("missing"), &[]);
    assert!(!o.status.success());
    let o = Command::new(tests::sevd_bin())
        .args(["--backend", "hardware"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs --hw-device"));
    assert!(vfs::find_mounts("sevd")
        .unwrap()
        .iter()
        .all(|p| !p.starts_with(dir.path())));
}

#[test]
fn a_vanishing_device_gives_enodev_until_it_returns() {
    require_mount!();
    let mut first = Sevd::start();
    let second = chained(&first, &[]);
    let f = second.open();
    assert!(platform_status(&f).is_ok());
    first.kill();
    assert_eq!(platform_status(&f).unwrap_err(), libc::ENODEV);
    assert_eq!(platform_status(&f).unwrap_err(), libc::ENODEV, "still gone");
    first.restart(&[]);
    assert_eq!(platform_status(&f).unwrap().state, 1, "recovered");
    assert!(
        second.log().contains("is gone") && second.log().contains("is back"),
        "{}",
        second.log()
    );
}

#[test]
fn policy_decides_who_may_do_what_and_reloads_on_sighup() {
    require_mount!();
    let first = Sevd::start();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "rules:\n  - classes: [read]\n    users: [nobody, root]\n",
    )
    .unwrap();
    let audit = dir.path().join("audit.log");
    let second = chained(
        &first,
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
            "--mode",
            "0666",
        ],
    );
    let f = second.open();
    assert!(platform_status(&f).is_ok(), "read is granted");
    let (r, error) = sev_issue(&f, 4, 0, 0xdead); // PDH_GEN
    assert_eq!(
        (r, error),
        (Err(libc::EPERM), 0xdead),
        "manage is not; the backend never saw it"
    );
    let before = pdh_export(&first.open()).unwrap();

    // As `nobody`: read works, manage does not.
    std::fs::set_permissions(
        second.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let client = tests::build_c_client(dir.path());
    let as_nobody = |mode: &str| {
        Command::new(&client)
            .arg(mode)
            .arg(second.node())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    assert!(as_nobody("info").status.success());

    // Reload: grant manage to root; the open file keeps working.
    std::fs::write(
        &policy,
        "rules:\n  - classes: [read, manage]\n    users: [root]\n",
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while sev_issue(&f, 4, 0, 0).0.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the reloaded policy is not in force"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_ne!(
        pdh_export(&first.open()).unwrap().0,
        before.0,
        "PDH_GEN reached the device"
    );
    // A broken policy file is refused on reload; the old one stays.
    std::fs::write(
        &policy,
        "rules:\n  - classes: [everything]\n    users: [root]\n",
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(sev_issue(&f, 4, 0, 0).0, Ok(()));
    assert!(
        second.log().contains("policy not reloaded"),
        "{}",
        second.log()
    );

    // The audit log: one JSON line per command, denied ones included, no buffers.
    drop(f);
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(lines.len() >= 4);
    let denied = lines
        .iter()
        .find(|l| l["command"] == "SEV_PDH_GEN" && l["errno"] == libc::EPERM)
        .expect("the denied PDH_GEN");
    assert_eq!(denied["uid"], 0);
    assert!(
        denied["status"].is_null(),
        "refused before the firmware: no status, not the caller's error field: {denied}"
    );
    assert!(
        denied["exe"].as_str().unwrap().contains("hardware"),
        "the test binary: {denied}"
    );
    assert!(
        lines.iter().any(|l| l["uid"] == 65534),
        "nobody's commands are there"
    );
    for l in &lines {
        for key in [
            "time",
            "pid",
            "uid",
            "exe",
            "command",
            "status",
            "errno",
            "duration_us",
        ] {
            assert!(l.get(key).is_some(), "{key} in {l}");
        }
        assert_eq!(l.as_object().unwrap().len(), 8, "nothing else: {l}");
    }
}

#[test]
fn a_bad_policy_stops_the_start_and_a_full_disk_only_warns() {
    require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "rules:\n  - classes: [read]\n    groups: [no-such-group-here]\n",
    )
    .unwrap();
    let o = Command::new(tests::sevd_bin())
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--mountpoint")
        .arg(dir.path().join("mnt"))
        .arg("--policy")
        .arg(&policy)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown group \"no-such-group-here\""));

    // /dev/full: every audit write fails with ENOSPC; commands still succeed.
    let sevd = Sevd::start_with(Options {
        args: vec!["--audit-log".into(), "/dev/full".into()],
        ..Options::default()
    });
    let f = sevd.open();
    for _ in 0..5 {
        assert!(platform_status(&f).is_ok());
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(sevd.log().contains("audit log /dev/full"), "{}", sevd.log());
}

#[test]
fn the_example_policy_is_valid_here() {
    let path = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/policy.example.yaml"
    ));
    match sevd::access::Policy::load(path) {
        Ok(_) => {}
        // The kvm group comes with Debian's udev; a machine without it refuses the file, clearly.
        Err(e) => assert!(e.to_string().contains("unknown group \"kvm\""), "{e}"),
    }
}

#[test]
fn a_caller_killed_mid_stream_loses_no_audit_line() {
    require_mount!();
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let sevd = Sevd::start_with(Options {
        args: vec!["--audit-log".into(), audit.to_str().unwrap().into()],
        ..Options::default()
    });
    let mut child = Command::new(tests::sevd_bin().with_file_name("status-loop"))
        .arg(sevd.node())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    child.kill().unwrap();
    let pid = child.id();
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    child.wait().unwrap();
    let completed = text.lines().filter(|l| *l == "done").count();
    assert!(completed > 10, "the child ran: {completed}");
    // The daemon still serves; then count the child's lines.
    let f = sevd.open();
    assert!(platform_status(&f).is_ok());
    drop(f);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = std::fs::read_to_string(&audit).unwrap();
    let mine = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("whole JSON lines only"))
        .filter(|l| l["pid"] == pid)
        .count();
    // None lost; the child's last commands may have been done but unprinted, or in flight,
    // when it was killed.
    assert!(
        (completed..=completed + 2).contains(&mine),
        "{mine} audit lines for {completed} completed commands"
    );
}

#[test]
fn the_policy_applies_to_the_software_backend_too() {
    require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "rules:\n  - classes: [read]\n    users: [root]\n").unwrap();
    let sevd = Sevd::start_with(Options {
        args: vec!["--policy".into(), policy.to_str().unwrap().into()],
        ..Options::default()
    });
    let f = sevd.open();
    assert!(platform_status(&f).is_ok());
    let before = pdh_export(&f).unwrap();
    assert_eq!(
        sev_issue(&f, 4, 0, 7),
        (Err(libc::EPERM), 7),
        "PDH_GEN denied"
    );
    assert_eq!(
        sev_issue(&f, 0, 0, 7),
        (Err(libc::EPERM), 7),
        "FACTORY_RESET denied"
    );
    assert_eq!(pdh_export(&f).unwrap(), before, "nothing changed");
}
