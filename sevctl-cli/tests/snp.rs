//! `sevctl launch` of SNP guests on the embedded firmware: the example, an owner's ID block
//! (with and without an author key, keys as OpenSSL writes them), a wrong expected digest,
//! and the manifest rules of `mode: snp`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

/// A state directory with the suite's shared chip and key server (each made once: RSA-4096).
fn state() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(concat!(env!("CARGO_TARGET_TMPDIR"), "/chip-fixture"));
    let shared =
        sevd::state::StateDir::open_waiting(fixture, std::time::Duration::from_secs(120)).unwrap();
    let chip = shared.load_or_create_chip((1, 55), None, None).unwrap();
    shared
        .key_server(sevd::part::Product::DEFAULT, true)
        .unwrap();
    std::fs::write(dir.path().join("chip.bin"), chip.encode()).unwrap();
    let kds = sevd::paths::KDS_FILE;
    std::fs::copy(fixture.join(kds), dir.path().join(kds)).unwrap();
    dir
}

fn sevctl(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sevctl"))
        .arg("--emulated")
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .expect("run sevctl")
}

/// A manifest in a directory beside a copy of the example firmware.
fn manifest(dir: &Path, yaml: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("firmware")).unwrap();
    std::fs::copy(
        examples().join("firmware/OVMF.amdsev.suffix.fd"),
        dir.join("firmware/OVMF.amdsev.suffix.fd"),
    )
    .unwrap();
    let path = dir.join("m.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

const SNP: &str = "apiVersion: sevctl/v1
name: t
guest:
  memory: 32M
  vcpus: 3
  mode: snp
  vcpuType: EPYC-Genoa
images:
  ovmf: firmware/OVMF.amdsev.suffix.fd
";

fn launch_json(st: &Path, m: &Path) -> serde_json::Value {
    let o = sevctl(st, &["--json", "launch", m.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn the_snp_example_launches_and_attests() {
    let st = state();
    let report = launch_json(st.path(), &examples().join("snp.yaml"));
    assert_eq!(report["mode"], "SEV-SNP");
    assert_eq!(report["launch_digest"].as_str().unwrap().len(), 96);
    assert_eq!(report["measurement"], report["launch_digest"]);
    assert_eq!(
        report["host_data"],
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
    );
    let bytes = hex::decode(report["report"].as_str().unwrap()).unwrap();
    assert_eq!(bytes.len(), 0x4a0);
    assert_eq!(
        bytes[0xc0..0xe0],
        hex::decode(report["host_data"].as_str().unwrap()).unwrap()[..]
    );
    // The text form says each step.
    let o = sevctl(
        st.path(),
        &["launch", examples().join("snp.yaml").to_str().unwrap()],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    for step in [
        "SNP_LAUNCH_START",
        "as SECRETS",
        "as CPUID",
        "SNP_LAUNCH_FINISH",
        "attestation report",
        "matches",
        "verify report",
        "release secrets",
        "unwrap secrets",
    ] {
        assert!(out.contains(step), "{step}: {out}");
    }
}

/// A P-384 key as `openssl` writes it: PKCS #8 (`genpkey`) or SEC 1 (`ecparam -genkey`).
fn openssl_key(dir: &Path, name: &str, sec1: bool) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = Command::new("openssl");
    if sec1 {
        cmd.args(["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out"]);
    } else {
        cmd.args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
        ]);
    }
    assert!(cmd.arg(&path).status().unwrap().success(), "openssl");
    path
}

#[test]
fn an_owners_id_block_is_checked_at_launch_finish() {
    let st = state();
    let dir = tempfile::tempdir().unwrap();
    let id = openssl_key(dir.path(), "id.pem", false);
    let author = openssl_key(dir.path(), "author.pem", true);
    let with = |extra: &str| {
        manifest(
            dir.path(),
            &format!(
                "{SNP}owner:\n  idBlock:\n    idKey: {}\n{extra}    familyId: 0102030405060708090a0b0c0d0e0f10\n    guestSvn: 3\n",
                id.display()
            ),
        )
    };
    let report = launch_json(st.path(), &with(""));
    let r = hex::decode(report["report"].as_str().unwrap()).unwrap();
    assert_eq!(
        u32::from_le_bytes(r[4..8].try_into().unwrap()),
        3,
        "GUEST_SVN"
    );
    assert_eq!(
        r[0x10..0x20],
        hex::decode("0102030405060708090a0b0c0d0e0f10").unwrap()[..]
    );
    assert!(r[0xe0..0x110].iter().any(|b| *b != 0), "ID_KEY_DIGEST");
    assert!(r[0x110..0x140].iter().all(|b| *b == 0), "no author key");
    let report = launch_json(
        st.path(),
        &with(&format!("    authorKey: {}\n", author.display())),
    );
    let r = hex::decode(report["report"].as_str().unwrap()).unwrap();
    assert!(r[0x110..0x140].iter().any(|b| *b != 0), "AUTHOR_KEY_DIGEST");
    assert_eq!(r[0x48] & 1, 1, "AUTHOR_KEY_EN");

    // An ID block over another digest: the firmware refuses LAUNCH_FINISH (exit 4).
    let wrong = manifest(
        dir.path(),
        &format!(
            "{SNP}measurement: {}\nowner:\n  idBlock:\n    idKey: {}\n",
            "ab".repeat(48),
            id.display()
        ),
    );
    let o = sevctl(st.path(), &["launch", wrong.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("BAD_MEASUREMENT"), "{err}");
    // Not a key.
    std::fs::write(dir.path().join("id.pem"), "not a key").unwrap();
    let o = sevctl(st.path(), &["launch", with("").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_wrong_expected_digest_is_refused_after_the_report() {
    let st = state();
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(
        dir.path(),
        &format!("{SNP}measurement: {}\n", "00".repeat(48)),
    );
    let o = sevctl(st.path(), &["launch", m.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("is not the expected"), "{err}");
}

#[test]
fn snp_manifest_rules() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "session",
            format!(
                "{SNP}owner:\n  session:\n    godh: a\n    session: b\n    tek: c\n    tik: d\n"
            ),
            "secrets follow attestation",
        ),
        (
            "SEV's CA",
            format!("{SNP}owner:\n  ca: firmware/OVMF.amdsev.suffix.fd\n"),
            "give owner.ark",
        ),
        (
            "ARK on SEV",
            format!(
                "{}owner:\n  ark: firmware/OVMF.amdsev.suffix.fd\n",
                SNP.replace("mode: snp", "mode: sev")
            ),
            "only for mode snp",
        ),
        (
            "legacy init",
            SNP.replace("  mode: snp", "  mode: snp\n  legacyVmType: false"),
            "KVM_X86_SNP_VM",
        ),
        (
            "short host data",
            SNP.replace("  mode: snp", "  mode: snp\n  hostData: 0011"),
            "64 hex digits",
        ),
        (
            "guest features",
            SNP.replace("  mode: snp", "  mode: snp\n  guestFeatures: 0x4"),
            "DebugSwap",
        ),
        (
            "SEV digest length",
            format!("{SNP}measurement: {}\n", "00".repeat(32)),
            "96 hex digits",
        ),
        (
            "no OVMF",
            SNP.replace(
                "  ovmf: firmware/OVMF.amdsev.suffix.fd",
                "  regions:\n    - address: 0\n      file: firmware/OVMF.amdsev.suffix.fd",
            ),
            "images.ovmf is needed",
        ),
        (
            "SEV flag",
            SNP.replace("  mode: snp", "  mode: snp\n  policy:\n    flags: [nodbg]"),
            "unknown SNP policy flag",
        ),
        (
            "raw without bit 17",
            SNP.replace("  mode: snp", "  mode: snp\n  policy:\n    raw: 0x10000"),
            "bit 17",
        ),
        (
            "host data on SEV",
            SNP.replace("  mode: snp", "  mode: sev-es\n  hostData: 00"),
            "only for mode snp",
        ),
    ];
    for (name, yaml, what) in cases {
        let m = manifest(dir.path(), &yaml);
        let o = Command::new(env!("CARGO_BIN_EXE_sevctl"))
            .args(["manifest", "check", m.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(what), "{name}: {err}");
    }
    // Named policy fields, and the policy manifest check reports.
    let m = manifest(
        dir.path(),
        &SNP.replace("  mode: snp", "  mode: snp\n  policy:\n    smt: false\n    debug: true\n    apiMajor: 1\n    apiMinor: 51"),
    );
    let o = Command::new(env!("CARGO_BIN_EXE_sevctl"))
        .args(["--json", "manifest", "check", m.to_str().unwrap()])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["policy"], 0xa0133);
    assert_eq!(v["mode"], "SEV-SNP");
}

#[test]
fn the_embedded_platform_makes_its_certificates() {
    let st = state();
    // The suite's key server, so this test makes no RSA keys of its own.
    let fixture = Path::new(concat!(env!("CARGO_TARGET_TMPDIR"), "/chip-fixture"));
    let ks = sevd::state::StateDir::open_waiting(fixture, std::time::Duration::from_secs(120))
        .unwrap()
        .key_server(sevd::part::Product::DEFAULT, true)
        .unwrap()
        .unwrap();
    std::fs::write(st.path().join("kds.bin"), ks.encode().unwrap()).unwrap();
    let out = st.path().join("certs");
    let o = sevctl(
        st.path(),
        &["--json", "snp", "certificates", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["reported_tcb"], "3:0:8:115");
    assert_eq!(v["files"].as_array().unwrap().len(), 6);
    let status = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(out.join("ark.pem"))
        .arg("-untrusted")
        .arg(out.join("ask.pem"))
        .arg(out.join("vcek.pem"))
        .status()
        .unwrap();
    assert!(status.success(), "openssl verify");
    // Published in the state directory too.
    assert!(st.path().join("vcek.der").is_file());
}

#[test]
fn snp_verify_checks_a_report_as_its_owner() {
    let st = state();
    let fixture = Path::new(concat!(env!("CARGO_TARGET_TMPDIR"), "/chip-fixture"));
    let ks = sevd::state::StateDir::open_waiting(fixture, std::time::Duration::from_secs(120))
        .unwrap()
        .key_server(sevd::part::Product::DEFAULT, true)
        .unwrap()
        .unwrap();
    std::fs::write(st.path().join("kds.bin"), ks.encode().unwrap()).unwrap();
    let report = launch_json(st.path(), &examples().join("snp.yaml"));
    let bytes = hex::decode(report["report"].as_str().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.bin");
    std::fs::write(&file, &bytes).unwrap();
    let certs = dir.path().join("certs");
    let o = sevctl(st.path(), &["snp", "certificates", certs.to_str().unwrap()]);
    assert!(o.status.success());
    let measurement = report["measurement"].as_str().unwrap().to_string();
    let host_data = report["host_data"].as_str().unwrap().to_string();
    let verify = |report: &Path, extra: &[&str]| {
        let mut args = vec![
            "snp",
            "verify",
            report.to_str().unwrap(),
            "--certs",
            certs.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        sevctl(st.path(), &args)
    };
    let o = verify(
        &file,
        &[
            "--measurement",
            &measurement,
            "--host-data",
            &host_data,
            "--policy",
            "0x30000",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("ok  signature") && out.contains("ok  measurement"),
        "{out}"
    );
    // Refusals are exit 3, with what differs.
    let o = verify(&file, &["--policy", "0x70000"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("policy"));
    let mut flipped = bytes.clone();
    flipped[0x90] ^= 1;
    let bad = dir.path().join("flipped.bin");
    std::fs::write(&bad, &flipped).unwrap();
    let o = verify(&bad, &[]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("did not sign"));
    // Not a report: bad input.
    std::fs::write(&bad, b"short").unwrap();
    assert_eq!(verify(&bad, &[]).status.code(), Some(2));
}

const SNP_SECRET: &str = "secrets:
  entries:
    - guid: 736869e5-84f0-4973-92ec-06879ce3da0b
      value: correct horse battery staple
";

#[test]
fn an_snp_guest_attests_then_gets_its_secrets() {
    let st = state();
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &format!("{SNP}{SNP_SECRET}"));
    let r = launch_json(st.path(), &m);
    let steps: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    let at = |name: &str| steps.iter().position(|s| *s == name).unwrap();
    // The owner verifies the report before anything is released, and the guest unwraps.
    assert!(at("attestation report") < at("verify report"));
    assert!(at("verify report") < at("release secrets"));
    assert!(at("release secrets") < at("unwrap secrets"));
    let secret = &r["secret"];
    assert_eq!(secret["entries"][0]["matches"], true);
    assert_eq!(
        secret["guest_view"],
        serde_json::Value::Null,
        "hidden by default"
    );
    let plain = hex::encode("correct horse battery staple");
    assert!(!secret["hypervisor_view"].as_str().unwrap().contains(&plain));
    assert!(
        !r.to_string().contains(&plain),
        "no plaintext without --show-secrets"
    );
    // REPORT_DATA is the binding, not the bare nonce.
    let report = hex::decode(r["report"].as_str().unwrap()).unwrap();
    assert_eq!(hex::encode(&report[0x50..0x90]), r["report_data"]);
    assert_ne!(r["report_data"], r["nonce"]);

    let o = sevctl(
        st.path(),
        &["--json", "launch", "--show-secrets", m.to_str().unwrap()],
    );
    assert!(o.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(shown["secret"]["guest_view"]
        .as_str()
        .unwrap()
        .contains(&plain));
}

#[test]
fn secrets_follow_only_a_report_the_owner_accepts() {
    let st = state();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let o = sevctl(st.path(), &["snp", "certificates", certs.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Pinned to the platform's ARK: released.
    let pinned = format!(
        "{SNP}{SNP_SECRET}owner:\n  ark: {}\n",
        certs.join("ark.pem").display()
    );
    let r = launch_json(st.path(), &manifest(dir.path(), &pinned));
    assert_eq!(r["secret"]["entries"][0]["matches"], true);
    let detail = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "verify report")
        .unwrap()["detail"]
        .to_string();
    assert!(detail.contains("owner.ark"), "{detail}");

    // Another root (here the ASK stands in for a foreign ARK), and a wrong digest: refused
    // with exit code 3 and nothing released.
    let cases = [
        (
            format!(
                "{SNP}{SNP_SECRET}owner:\n  ark: {}\n",
                certs.join("ask.der").display()
            ),
            "is not the owner's",
        ),
        (
            format!("{SNP}{SNP_SECRET}measurement: {}\n", "00".repeat(48)),
            "is not the expected",
        ),
    ];
    for (yaml, why) in cases {
        let m = manifest(dir.path(), &yaml);
        let o = sevctl(st.path(), &["launch", m.to_str().unwrap()]);
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert_eq!(o.status.code(), Some(3), "{why}: {err}");
        assert!(
            err.contains(why) && err.contains("no secret was released"),
            "{err}"
        );
        assert!(!out.contains("release secrets"), "{out}");
    }
}
