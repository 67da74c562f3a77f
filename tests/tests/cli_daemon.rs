//! Our sevctl through the daemon, and its file formats against virtee's sevctl 0.6.2
//! (SEVCTL_BIN, installed by scripts/test.sh): virtee's session files drive our launch, our
//! session and measurement agree with virtee's `measurement build`, and a packet from
//! virtee's `secret build` is accepted by LAUNCH_SECRET.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use sevd::platform::Platform;
use tests::{pdh_export, Sevd};

fn ours() -> PathBuf {
    tests::sevd_bin().with_file_name("sevctl")
}

fn examples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

fn run(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    tests::shown(Command::new(bin).current_dir(dir).args(args))
}

fn ok(bin: &Path, dir: &Path, args: &[&str]) -> String {
    let o = run(bin, dir, args);
    assert!(o.status.success(), "{} {args:?} failed", bin.display());
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A copy of the examples with the daemon's PDH, and a manifest using session files.
fn workdir(sevd: &Sevd) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["firmware", "secrets"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(examples().join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
        }
    }
    let (pdh, _) = pdh_export(&sevd.open()).unwrap();
    std::fs::write(dir.path().join("pdh.cert"), pdh).unwrap();
    let manifest = std::fs::read_to_string(examples().join("sev-es.yaml")).unwrap()
        + "owner:\n  session:\n    godh: s_godh.b64\n    session: s_session.b64\n    tek: s_tek.bin\n    tik: s_tik.bin\n";
    std::fs::write(dir.path().join("m.yaml"), manifest).unwrap();
    dir
}

use tests::require_mount;

#[test]
fn sevctl_launches_through_the_daemon() {
    require_mount!();
    let sevd = Sevd::start();
    let node = sevd.node();
    let ca = sevd.state_dir.join("ask_ark.cert");
    let out = ok(
        &ours(),
        Path::new("."),
        &[
            "--device",
            node.to_str().unwrap(),
            "launch",
            examples().join("sev-es.yaml").to_str().unwrap(),
            "--ca",
            ca.to_str().unwrap(),
            "--show-secrets",
        ],
    );
    assert!(out.contains(&format!("device {}", node.display())), "{out}");
    assert!(out.contains("\"correct horse battery staple\""), "{out}");
    let flags = ok(
        &ours(),
        Path::new("."),
        &["--device", node.to_str().unwrap(), "show", "flags"],
    );
    assert_eq!(flags.trim(), "es");
}

#[test]
fn a_region_of_several_pieces_is_measured_alike_through_the_daemon() {
    require_mount!();
    let sevd = Sevd::start();
    let node = sevd.node();
    let ca = sevd.state_dir.join("ask_ark.cert");
    let dir = tempfile::tempdir().unwrap();
    // Three of the device's load pieces (8 MiB), each many of the daemon's staged pieces.
    let blob: Vec<u8> = (0..(20 << 20) + 5u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("blob.bin"), &blob).unwrap();
    let manifest = "apiVersion: sevctl/v1\nguest:\n  memory: 32M\n  mode: sev\nimages:\n  regions:\n    - address: 0x100000\n      file: blob.bin\nsecrets:\n  placement: 0x10000\n  entries:\n    - guid: 736869e5-84f0-4973-92ec-06879ce3da0b\n      value: hello\n";
    std::fs::write(dir.path().join("m.yaml"), manifest).unwrap();
    let json = ok(
        &ours(),
        dir.path(),
        &[
            "--device",
            node.to_str().unwrap(),
            "--json",
            "launch",
            "m.yaml",
            "--ca",
            ca.to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut padded = blob;
    padded.resize(padded.len().div_ceil(16) * 16, 0);
    assert_eq!(
        v["launch_digest"],
        hex::encode(sevd::crypto::sha256(&padded)),
        "the owner's digest covers the region; the launch succeeded, so the firmware's agrees"
    );
}

#[test]
fn virtee_session_files_drive_our_launch() {
    require_mount!();
    let virtee = tests::require_sevctl!();
    let sevd = Sevd::start();
    let dir = workdir(&sevd);
    ok(
        &virtee,
        dir.path(),
        &["session", "--name", "s", "pdh.cert", "7"],
    );
    let ca = sevd.state_dir.join("ask_ark.cert");
    let out = ok(
        &ours(),
        dir.path(),
        &[
            "--device",
            sevd.node().to_str().unwrap(),
            "launch",
            "m.yaml",
            "--ca",
            ca.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("s_session.b64") && out.contains("matches"),
        "{out}"
    );
}

#[test]
fn our_session_and_measurement_agree_with_virtee_measurement_build() {
    require_mount!();
    let virtee = tests::require_sevctl!();
    let sevd = Sevd::start();
    let dir = workdir(&sevd);
    ok(
        &ours(),
        dir.path(),
        &["session", "--name", "s", "pdh.cert", "7"],
    );
    let ca = sevd.state_dir.join("ask_ark.cert");
    let json = ok(
        &ours(),
        dir.path(),
        &[
            "--json",
            "--device",
            sevd.node().to_str().unwrap(),
            "launch",
            "m.yaml",
            "--ca",
            ca.to_str().unwrap(),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let blob = hex::decode(report["measurement"].as_str().unwrap()).unwrap();
    let digest = hex::decode(report["launch_digest"].as_str().unwrap()).unwrap();
    let theirs = ok(
        &virtee,
        dir.path(),
        &[
            "measurement",
            "build",
            "--api-major",
            "1",
            "--api-minor",
            "55",
            "--build-id",
            "25",
            "--policy",
            "7",
            "--tik",
            "s_tik.bin",
            "--launch-digest",
            &b64(&digest),
            "--launch-measure-blob",
            &b64(&blob),
        ],
    );
    assert_eq!(
        theirs.trim(),
        b64(&blob),
        "virtee's sevctl computes the measurement the platform reported"
    );
}

#[test]
fn a_virtee_secret_build_packet_is_accepted() {
    require_mount!();
    let virtee = tests::require_sevctl!();
    let sevd = Sevd::start();
    let dir = workdir(&sevd);
    ok(
        &ours(),
        dir.path(),
        &["session", "--name", "s", "pdh.cert", "7"],
    );
    let read_b64 = |f: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(std::fs::read_to_string(dir.path().join(f)).unwrap().trim())
            .unwrap()
    };
    let (godh, session) = (read_b64("s_godh.b64"), read_b64("s_session.b64"));

    // Host side by hand, up to LAUNCH_MEASURE.
    let p = Platform::device(&sevd.node()).unwrap();
    let mut vm = p.create_vm(16 << 20).unwrap();
    vm.sev_init(true).unwrap();
    vm.launch_start(7, Some((&godh, &session))).unwrap();
    vm.ram_mut()[..4096].fill(0x90);
    vm.launch_update_data(0, 4096).unwrap();
    vm.set_vmsa(0, &[0u8; 4096]).unwrap();
    vm.launch_update_vmsa().unwrap();
    let blob = vm.launch_measure().unwrap();

    // Owner side with virtee's sevctl, then LAUNCH_SECRET with its packet.
    let secret = dir.path().join("secrets/disk-passphrase.txt");
    let arg = format!("736869e5-84f0-4973-92ec-06879ce3da0b:{}", secret.display());
    ok(
        &virtee,
        dir.path(),
        &[
            "secret",
            "build",
            "--tik",
            "s_tik.bin",
            "--tek",
            "s_tek.bin",
            "--launch-measure-blob",
            &b64(&blob),
            "--secret",
            &arg,
            "header.bin",
            "payload.bin",
        ],
    );
    let header = std::fs::read(dir.path().join("header.bin")).unwrap();
    let payload = std::fs::read(dir.path().join("payload.bin")).unwrap();
    vm.launch_secret(&header, 0x10000, &payload).unwrap();
    let table = vm.guest_read(0x10000, payload.len()).unwrap();
    assert_eq!(
        hex::encode(&table[..16]),
        "42f5741edd71664d963eef4287ff173b",
        "efi_secret table GUID"
    );
    let passphrase = std::fs::read(secret).unwrap();
    assert_eq!(&table[40..40 + passphrase.len()], passphrase.as_slice());
    vm.launch_finish().unwrap();
}

#[test]
fn a_symlinked_device_finds_its_vm_node_beside_the_target() {
    require_mount!();
    let sevd = Sevd::start();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("mysev");
    std::os::unix::fs::symlink(sevd.node(), &link).unwrap();
    let p = Platform::device(&link).unwrap();
    let vm = p.create_vm(1 << 20).unwrap();
    vm.sev_init(false).unwrap();
    assert_eq!(p.status().unwrap().state, 1);
}

#[test]
fn the_daemon_publishes_its_ca_beside_its_nodes() {
    require_mount!();
    // A state directory of the test's own, not /var/lib/sevd: sevctl finds the ASK ‖ ARK
    // beside the node instead of asking for --ca.
    let sevd = Sevd::start();
    let node = sevd.node();
    let published = node.with_file_name("ask_ark.cert");
    assert_eq!(
        std::fs::read(&published).unwrap(),
        std::fs::read(sevd.state_dir.join("ask_ark.cert")).unwrap()
    );
    assert!(std::fs::OpenOptions::new()
        .write(true)
        .open(&published)
        .is_err());
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.cert");
    ok(
        &ours(),
        Path::new("."),
        &[
            "--device",
            node.to_str().unwrap(),
            "export",
            "--full",
            full.to_str().unwrap(),
        ],
    );
    let full = std::fs::read(&full).unwrap();
    assert!(full.ends_with(&std::fs::read(&published).unwrap()));
    assert_eq!(
        full.len(),
        4 * 2084 + std::fs::read(&published).unwrap().len()
    );
    ok(
        &ours(),
        Path::new("."),
        &[
            "--device",
            node.to_str().unwrap(),
            "launch",
            examples().join("sev-es.yaml").to_str().unwrap(),
        ],
    );
}

#[test]
fn a_node_this_user_may_not_open_is_exit_1() {
    use std::os::unix::process::CommandExt;
    require_mount!();
    let sevd = Sevd::start();
    std::fs::set_permissions(
        sevd.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let o = Command::new(ours())
        .args(["--device", sevd.node().to_str().unwrap(), "status"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
}

#[test]
fn sevctl_shows_the_snp_tcb_of_a_daemon_started_with_snp() {
    require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let plain = Sevd::start();
    let node = plain.node();
    let o = run(
        &ours(),
        dir.path(),
        &["--device", node.to_str().unwrap(), "show", "tcb"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--snp"));
    let status = ok(
        &ours(),
        dir.path(),
        &["--device", node.to_str().unwrap(), "status"],
    );
    assert!(status.contains("snp:        not offered"), "{status}");

    let snp = Sevd::start_with(tests::Options {
        args: vec!["--snp".into(), "--snp-tcb".into(), "2:0:10:200".into()],
        ..Default::default()
    });
    let node = snp.node();
    let shown = ok(
        &ours(),
        dir.path(),
        &["--device", node.to_str().unwrap(), "--json", "show", "tcb"],
    );
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["current_tcb"], "2:0:10:200");
    assert_eq!(v["reported_tcb"], "2:0:10:200");
    assert_eq!(v["state"], "INIT");
}

/// The certificates a daemon with `--snp` publishes verify in OpenSSL, carry the reported
/// TCB, and the VCEK verifies the reports of the guests it launches.
#[test]
fn sevctl_fetches_the_snp_certificates_a_daemon_publishes() {
    require_mount!();
    let sevd = Sevd::start_with(tests::Options {
        args: vec!["--snp".into()],
        ..Default::default()
    });
    for name in ["ark", "ask", "vcek"] {
        assert!(
            sevd.state_dir.join(format!("{name}.pem")).is_file(),
            "{name}.pem"
        );
        assert!(
            sevd.mountpoint.join(format!("{name}.der")).is_file(),
            "{name}.der beside the nodes"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let node = sevd.node();
    let out = dir.path().join("certs");
    ok(
        &ours(),
        dir.path(),
        &[
            "--device",
            node.to_str().unwrap(),
            "snp",
            "certificates",
            out.to_str().unwrap(),
        ],
    );
    let pem = |n: &str| std::fs::read(out.join(format!("{n}.pem"))).unwrap();
    let ark = openssl::x509::X509::from_pem(&pem("ark")).unwrap();
    let ask = openssl::x509::X509::from_pem(&pem("ask")).unwrap();
    let vcek = openssl::x509::X509::from_pem(&pem("vcek")).unwrap();
    assert!(ark.verify(&ark.public_key().unwrap()).unwrap());
    assert!(ask.verify(&ark.public_key().unwrap()).unwrap());
    assert!(vcek.verify(&ask.public_key().unwrap()).unwrap());
    assert_eq!(
        std::fs::read(out.join("vcek.der")).unwrap(),
        vcek.to_der().unwrap()
    );

    // A launched guest's report is signed by that VCEK (ECDSA P-384 over 0x000..0x2A0, R and
    // S little-endian at 0x2A0 and 0x2E8).
    let report = ok(
        &ours(),
        dir.path(),
        &[
            "--device",
            node.to_str().unwrap(),
            "--json",
            "launch",
            examples().join("snp.yaml").to_str().unwrap(),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    // The owner verified it with the chain published beside the node, then released the
    // example's secret to the guest.
    let verified = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "verify report")
        .expect("a verify report step")["detail"]
        .to_string();
    assert!(
        verified.contains("the VCEK signed the report"),
        "{verified}"
    );
    assert_eq!(report["secret"]["entries"][0]["matches"], true, "{report}");
    let r = hex::decode(report["report"].as_str().unwrap()).unwrap();
    let be = |le: &[u8]| {
        let mut v = le[..48].to_vec();
        v.reverse();
        openssl::bn::BigNum::from_slice(&v).unwrap()
    };
    let sig = openssl::ecdsa::EcdsaSig::from_private_components(be(&r[0x2a0..]), be(&r[0x2e8..]))
        .unwrap();
    let digest = openssl::sha::sha384(&r[..0x2a0]);
    let key = vcek.public_key().unwrap().ec_key().unwrap();
    assert!(
        sig.verify(&digest, &key).unwrap(),
        "the VCEK signed the report"
    );
    let mut tampered = r.clone();
    tampered[0x50] ^= 1;
    assert!(!sig
        .verify(&openssl::sha::sha384(&tampered[..0x2a0]), &key)
        .unwrap());
}
