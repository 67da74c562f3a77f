//! An SNP guest's `/dev/sev-guest`, served by `sevctl launch --keep --guest-device`, driven
//! by virtee's `sev` crate unmodified (it opens that path and no other): reports, extended
//! reports whose certificates verify the report, and derived keys.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sev::certs::snp::{Chain, Verifiable};
use sev::firmware::guest::{AttestationReport, DerivedKey, Firmware, GuestFieldSelect};
use sev::parser::ByteParser;
use tests::{require_mount, Sevd};

/// A kept guest serving `/dev/sev-guest`; killed (SIGTERM) and waited for on drop.
struct Kept(Child);

impl Drop for Kept {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

#[test]
fn the_sev_crate_gets_reports_certificates_and_keys_from_the_guest_device() {
    require_mount!();
    let _guard = match tests::own_dev_sev_guest() {
        Ok(g) => g,
        Err(why) => tests::missing!(why),
    };
    let sevd = Sevd::start_with(tests::Options {
        args: vec!["--snp".into()],
        ..Default::default()
    });
    let sevctl = tests::sevd_bin().with_file_name("sevctl");
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/snp.yaml");
    let child = Command::new(&sevctl)
        .args([
            "--device",
            sevd.node().to_str().unwrap(),
            "launch",
            manifest,
        ])
        .args(["--keep", "--guest-device", "/dev/sev-guest"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _kept = Kept(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut fw = loop {
        // The placeholder appears before the mount; only the mount answers.
        if let Ok(mut fw) = Firmware::open() {
            if fw.get_report(Some(1), Some([0; 64]), Some(0)).is_ok() {
                break fw;
            }
        }
        assert!(Instant::now() < deadline, "/dev/sev-guest never answered");
        std::thread::sleep(Duration::from_millis(100));
    };

    let data = [0x42u8; 64];
    let bytes = fw
        .get_report(Some(1), Some(data), Some(1))
        .expect("SNP_GET_REPORT");
    let report = AttestationReport::from_bytes(&bytes).expect("a report the crate parses");
    assert_eq!(report.version, 3);
    assert_eq!(report.report_data.to_vec(), data.to_vec());
    assert_eq!(report.vmpl, 1);
    assert_eq!(
        hex::encode(report.host_data),
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
    );

    // The extended report's certificates: ARK, ASK and VCEK, and the chain verifies the
    // report, as a verifier checks it.
    let (bytes, certs) = fw
        .get_ext_report(Some(1), Some(data), Some(0))
        .expect("SNP_GET_EXT_REPORT");
    let report = AttestationReport::from_bytes(&bytes).unwrap();
    let certs = certs.expect("the host's certificates");
    assert_eq!(certs.len(), 3);
    let chain = Chain::from_cert_table_der(certs).expect("a chain the crate builds");
    chain.verify().expect("ARK -> ASK -> VCEK");
    (&chain, &report)
        .verify()
        .expect("the VCEK signed the report");

    // Derived keys: deterministic, bound to what is selected.
    let mut gfs = GuestFieldSelect::default();
    gfs.set_measurement(true);
    let key = |fw: &mut Firmware, gfs| {
        fw.get_derived_key(Some(1), DerivedKey::new(false, gfs, 0, 0, 0, None))
            .expect("SNP_GET_DERIVED_KEY")
    };
    let a = key(&mut fw, gfs);
    assert_eq!(a, key(&mut fw, gfs));
    assert_ne!(a, key(&mut fw, GuestFieldSelect::default()));
}
