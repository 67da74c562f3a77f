//! What QEMU's `query-sev-capabilities` says with the software firmware at `/dev/sev`: QEMU
//! asks KVM (`KVM_MEMORY_ENCRYPT_OP` with no argument) before it opens `/dev/sev`, so on a
//! host whose KVM has no SEV it answers that, and no command reaches the node. In front of
//! real hardware (the pass-through backend) KVM has SEV, and QEMU's queries go on to the
//! device through sevd.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use tests::{require_mount, Options, Sevd};

const QEMU: &str = "/usr/bin/qemu-system-x86_64";

/// QMP's answers to `commands`, one JSON value per line, greeting and events left out.
fn qmp(commands: &[&str]) -> Vec<serde_json::Value> {
    let mut child = Command::new(QEMU)
        .args(["-nodefaults", "-nographic", "-S", "-display", "none"])
        .args(["-machine", "none,accel=kvm:tcg", "-qmp", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu");
    let mut stdin = child.stdin.take().unwrap();
    for c in commands {
        writeln!(stdin, "{{\"execute\": \"{c}\"}}").unwrap();
    }
    writeln!(stdin, "{{\"execute\": \"quit\"}}").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("return").is_some() || v.get("error").is_some())
        .collect()
}

#[test]
fn qemus_capability_query_asks_kvm_before_the_node() {
    require_mount!();
    if !Path::new(QEMU).exists() {
        tests::missing!("qemu-system-x86_64 is not installed (scripts/setup.sh installs it)");
    }
    let _dev_sev = tests::own_dev_sev!();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let _sevd = Sevd::start_with(Options {
        link: Some("/dev/sev".into()),
        args: vec!["--audit-log".into(), audit.display().to_string()],
        ..Options::default()
    });
    let answers = qmp(&["qmp_capabilities", "query-kvm", "query-sev-capabilities"]);
    assert_eq!(answers.len(), 4, "{answers:?}");
    let kvm = answers[1]["return"]["enabled"].as_bool().unwrap();
    let desc = answers[2]["error"]["desc"].as_str().unwrap_or_default();
    let expected = if kvm {
        "SEV is not enabled in KVM"
    } else {
        "KVM not enabled"
    };
    assert_eq!(desc, expected, "{answers:?}");
    // The daemon's own readiness probes are there; nothing of QEMU's.
    let lines = std::fs::read_to_string(&audit).unwrap_or_default();
    assert!(
        !lines.contains("qemu-system"),
        "QEMU reached the node: {lines}"
    );
}

/// Under `sevctl exec`, QEMU's launch of an SEV guest gets past its host check (CPUID
/// 0x8000001F's C-bit against `cbitpos`) to the platform's `/dev/sev`, and then stops where
/// the README says: KVM_SEV_INIT on the host's KVM, which has no SEV.
#[test]
fn under_sevctl_exec_qemu_passes_its_host_c_bit_check_and_stops_at_kvm() {
    require_mount!();
    if !Path::new(QEMU).exists() {
        tests::missing!("qemu-system-x86_64 is not installed (scripts/setup.sh installs it)");
    }
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let sevd = Sevd::start_with(Options {
        args: vec!["--audit-log".into(), audit.display().to_string()],
        ..Options::default()
    });
    let qemu_args = [
        "-machine",
        "q35,accel=kvm,confidential-guest-support=sev0",
        "-object",
        "sev-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,policy=0x1",
        "-nodefaults",
        "-display",
        "none",
        "-m",
        "256",
    ];
    // Without it, the host's CPUID stops QEMU first.
    let out = tests::shown(Command::new(QEMU).args(qemu_args));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cbitpos check failed"));
    let sevctl = tests::sevd_bin().with_file_name("sevctl");
    let node = sevd.node().display().to_string();
    let out = tests::shown(
        Command::new(sevctl)
            .args(["--device", &node, "exec", "--", QEMU])
            .args(qemu_args),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("cbitpos check failed"), "{err}");
    assert!(err.contains("sev_kvm_init: failed to initialize"), "{err}");
    // It reached the platform: its PLATFORM_STATUS is in the audit log.
    let lines = std::fs::read_to_string(&audit).unwrap_or_default();
    assert!(
        lines
            .lines()
            .any(|l| l.contains("qemu-system") && l.contains("PLATFORM_STATUS")),
        "{lines}"
    );
}
