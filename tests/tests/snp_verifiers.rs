//! Unmodified verifiers against our attestation reports, offline, with our own roots: virtee's
//! `sev` crate and `snpguest` accept a genuine report and reject the four forgeries: a
//! flipped report byte, a report under another chip's VCEK, a chain from another ARK, and a
//! VCEK whose TCB is not the report's. The other chip is a second platform whose state was
//! made separately (the embedded firmware in its own state directory).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sev::certs::snp::{ca, Certificate, Chain, Verifiable};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;
use tests::{require_mount, Sevd};

fn sevctl() -> PathBuf {
    tests::sevd_bin().with_file_name("sevctl")
}

fn run(cmd: &mut Command) -> Output {
    tests::succeeds(cmd)
}

/// A launch's report (bytes), from `sevctl --json launch examples/snp.yaml` on `platform`.
fn report(platform: &[String]) -> Vec<u8> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/snp.yaml");
    let out = run(Command::new(sevctl())
        .args(platform)
        .args(["--json", "launch", manifest]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    hex::decode(v["report"].as_str().unwrap()).unwrap()
}

/// The platform's certificates, written by `sevctl snp certificates` into `dir`.
fn certificates(platform: &[String], dir: &Path) {
    run(Command::new(sevctl())
        .args(platform)
        .args(["snp", "certificates"])
        .arg(dir));
}

fn chain(dir: &Path) -> Chain {
    let der = |n: &str| {
        Certificate::from_der(&std::fs::read(dir.join(format!("{n}.der"))).unwrap()).unwrap()
    };
    Chain {
        ca: ca::Chain {
            ark: der("ark"),
            ask: der("ask"),
        },
        vek: der("vcek"),
    }
}

fn accepted(chain: &Chain, report: &[u8]) -> bool {
    let Ok(report) = AttestationReport::from_bytes(report) else {
        return false;
    };
    chain.verify().is_ok() && (chain, &report).verify().is_ok()
}

#[test]
fn the_sev_crate_accepts_our_reports_and_rejects_forgeries() {
    require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let sevd = Sevd::start_with(tests::Options {
        args: vec!["--snp".into()],
        ..Default::default()
    });
    let a = vec!["--device".to_string(), sevd.node().display().to_string()];
    // A second platform, made separately: its own chip and key server.
    let b_state = dir.path().join("b");
    let b = vec![
        "--emulated".to_string(),
        "--state-dir".to_string(),
        b_state.display().to_string(),
    ];
    let (a_certs, b_certs) = (dir.path().join("a"), dir.path().join("b-certs"));
    certificates(&a, &a_certs);
    certificates(&b, &b_certs);
    let (a_chain, b_chain) = (chain(&a_certs), chain(&b_certs));
    let a_report = report(&a);
    let b_report = report(&b);

    assert!(accepted(&a_chain, &a_report), "a genuine report");
    assert!(
        accepted(&b_chain, &b_report),
        "the other platform's, under its own chain"
    );
    let mut flipped = a_report.clone();
    flipped[0x90] ^= 1;
    assert!(!accepted(&a_chain, &flipped), "a flipped report byte");
    assert!(
        !accepted(&a_chain, &b_report),
        "another chip's VCEK signed it"
    );
    let mixed = Chain {
        ca: b_chain.ca.clone(),
        vek: a_chain.vek.clone(),
    };
    assert!(!accepted(&mixed, &a_report), "a chain from another ARK");

    // The platform reports a lower TCB (SNP_SET_CONFIG); restarted, it publishes that VCEK,
    // which is not the one the earlier report was signed under.
    let lower = uapi::snp::TcbVersion {
        microcode: 100,
        ..sevd::firmware::chip::DEFAULT_TCB
    };
    let mut config = uapi::psp_sev::SevUserDataSnpConfig {
        reported_tcb: lower.to_u64(),
        mask_bits: 0,
        rsvd1: [0; 52],
    };
    let (r, _) = tests::sev_issue(&sevd.open(), 11, &mut config as *mut _ as u64, 0);
    assert_eq!(r, Ok(()));
    let mut sevd = sevd;
    sevd.terminate();
    sevd.restart(&["--snp".into()]);
    let new_certs = dir.path().join("a-new");
    certificates(&a, &new_certs);
    let new_chain = chain(&new_certs);
    assert!(new_chain.verify().is_ok());
    assert!(!accepted(&new_chain, &a_report), "a VCEK of another TCB");
    assert!(
        accepted(&new_chain, &report(&a)),
        "a report made at the new TCB"
    );
}

/// `snpguest`, run as given.
fn snpguest(args: &[&str], dir: &Path) -> Output {
    let bin = tests::snpguest_bin().expect("checked by the test");
    tests::shown(Command::new(bin).current_dir(dir).args(args))
}

#[test]
fn snpguest_accepts_our_reports_and_rejects_forgeries() {
    require_mount!();
    if let Err(why) = tests::snpguest_bin() {
        tests::missing!(why);
    }
    let _guard = match tests::own_dev_sev_guest() {
        Ok(g) => g,
        Err(why) => tests::missing!(why),
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sevd = Sevd::start_with(tests::Options {
        args: vec!["--snp".into()],
        ..Default::default()
    });
    let manifest = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/snp.yaml"));
    let kept = tests::KeptGuest::serve(&sevd, manifest);

    // In the guest: a report over random data, and the host's certificates.
    let ok = |o: Output| assert!(o.status.success());
    ok(snpguest(
        &["report", "report.bin", "request.bin", "--random"],
        d,
    ));
    ok(snpguest(&["certificates", "der", "certs"], d));
    for name in ["ark.der", "ask.der", "vcek.der"] {
        assert!(d.join("certs").join(name).is_file(), "{name}");
    }
    // Offline, as a verifier: the chain, then the report against the VCEK.
    ok(snpguest(&["verify", "certs", "certs"], d));
    // snpguest reads these as hex with a 0x prefix.
    let host_data = "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let request = format!(
        "0x{}",
        hex::encode(std::fs::read(d.join("request.bin")).unwrap())
    );
    ok(snpguest(
        &[
            "verify",
            "attestation",
            "certs",
            "report.bin",
            "-d",
            host_data,
            "-r",
            &request,
        ],
        d,
    ));
    drop(kept);
    // Our own verifier takes snpguest's files too.
    run(Command::new(sevctl()).current_dir(d).args([
        "snp",
        "verify",
        "report.bin",
        "--certs",
        "certs",
    ]));

    let refused = |args: &[&str]| assert!(!snpguest(args, d).status.success(), "{args:?}");
    // A flipped report byte.
    let mut flipped = std::fs::read(d.join("report.bin")).unwrap();
    flipped[0x90] ^= 1;
    std::fs::write(d.join("flipped.bin"), &flipped).unwrap();
    refused(&["verify", "attestation", "certs", "flipped.bin"]);
    let ours = Command::new(sevctl())
        .current_dir(d)
        .args(["snp", "verify", "flipped.bin", "--certs", "certs"])
        .output()
        .unwrap();
    assert_eq!(ours.status.code(), Some(3));
    // Another chip's VCEK: a second platform, made separately.
    let b = vec![
        "--emulated".to_string(),
        "--state-dir".to_string(),
        d.join("b").display().to_string(),
    ];
    certificates(&b, &d.join("b-certs"));
    refused(&["verify", "attestation", "b-certs", "report.bin"]);
    // A chain from another ARK: the other platform's ARK and ASK above our VCEK.
    std::fs::create_dir(d.join("mixed")).unwrap();
    for (name, from) in [
        ("ark.der", "b-certs"),
        ("ask.der", "b-certs"),
        ("vcek.der", "certs"),
    ] {
        std::fs::copy(d.join(from).join(name), d.join("mixed").join(name)).unwrap();
    }
    refused(&["verify", "certs", "mixed"]);
    // A VCEK whose TCB is not the report's: the platform now reports a lower TCB and, after
    // a restart, publishes that VCEK.
    let lower = uapi::snp::TcbVersion {
        microcode: 100,
        ..sevd::firmware::chip::DEFAULT_TCB
    };
    let mut config = uapi::psp_sev::SevUserDataSnpConfig {
        reported_tcb: lower.to_u64(),
        mask_bits: 0,
        rsvd1: [0; 52],
    };
    let (r, _) = tests::sev_issue(&sevd.open(), 11, &mut config as *mut _ as u64, 0);
    assert_eq!(r, Ok(()));
    let mut sevd = sevd;
    sevd.terminate();
    sevd.restart(&["--snp".into()]);
    let a = vec!["--device".to_string(), sevd.node().display().to_string()];
    certificates(&a, &d.join("lower"));
    refused(&["verify", "attestation", "lower", "report.bin"]);
    refused(&["verify", "attestation", "--tcb", "lower", "report.bin"]);
}
