//! virtee's `sevctl` 0.6.2 from crates.io, unmodified, against sevd's drop-in /dev/sev.
//! scripts/test.sh installs it (into target/sevctl-0.6.2) and sets SEVCTL_BIN; without it the
//! test fails under CI and as root, and says it is skipped otherwise.

use std::path::Path;
use std::process::{Command, Output};

use tests::{pdh_export, require_mount, Options, Sevd};

fn run(bin: &Path, args: &[&str]) -> Output {
    tests::shown(Command::new(bin).args(args))
}

fn ok(bin: &Path, args: &[&str]) -> String {
    let out = run(bin, args);
    assert!(out.status.success(), "sevctl {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sevctl_manages_and_verifies_the_platform() {
    require_mount!();
    let bin = tests::require_sevctl!();
    let _dev_sev = tests::own_dev_sev!();
    let sevd = Sevd::start_with(Options {
        link: Some("/dev/sev".into()),
        ..Options::default()
    });
    let dir = sevd.dir.path().to_path_buf();
    let s = |p: &Path| p.to_str().unwrap().to_string();

    assert_eq!(ok(&bin, &["show", "flags"]).trim(), "es");
    assert_eq!(ok(&bin, &["show", "guests"]).trim(), "0");
    let id = ok(&bin, &["show", "identifier"]);
    assert_eq!(id.trim().len(), 128, "64 bytes in hex: {id}");

    let before = pdh_export(&sevd.open()).unwrap();
    ok(&bin, &["rotate"]);
    let rotated = pdh_export(&sevd.open()).unwrap();
    assert_ne!(rotated.0, before.0, "rotate makes a new PDH");
    assert_eq!(rotated.1, before.1);

    let (cert, key) = (dir.join("oca.cert"), dir.join("oca.key"));
    ok(&bin, &["generate", &s(&cert), &s(&key)]);
    ok(&bin, &["provision", &s(&cert), &s(&key)]);
    assert_eq!(
        ok(&bin, &["show", "flags"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["owned", "es"]
    );

    // Offline verification: the chain file (PDH ‖ PEK ‖ OCA ‖ CEK) and the firmware's ASK ‖ ARK.
    let (pdh, chain) = pdh_export(&sevd.open()).unwrap();
    assert_eq!(
        &chain[0x824..2 * 0x824],
        std::fs::read(&cert).unwrap().as_slice(),
        "our OCA"
    );
    let chain_file = dir.join("chain.cert");
    std::fs::write(&chain_file, [pdh, chain].concat()).unwrap();
    let ca = sevd.state_dir.join("ask_ark.cert");
    ok(&bin, &["verify", "--sev", &s(&chain_file), "--ca", &s(&ca)]);
    ok(
        &bin,
        &[
            "verify",
            "--sev",
            &s(&chain_file),
            "--ca",
            &s(&ca),
            "--oca",
            &s(&cert),
        ],
    );
    // Another chip's CA does not verify this chip's CEK.
    let other = tests::Sevd::start_with(Options {
        own_chip: true,
        ..Options::default()
    });
    let other_ca = other.state_dir.join("ask_ark.cert");
    assert!(!run(
        &bin,
        &["verify", "--sev", &s(&chain_file), "--ca", &s(&other_ca)]
    )
    .status
    .success());

    ok(&bin, &["reset"]);
    let flags = ok(&bin, &["show", "flags"]);
    assert!(
        !flags.contains("owned"),
        "reset returns the platform to self-owned: {flags}"
    );
}
