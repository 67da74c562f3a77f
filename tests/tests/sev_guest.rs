//! An SNP guest's `/dev/sev-guest`, served by `sevctl launch --keep --guest-device`, driven
//! by virtee's `sev` crate unmodified (it opens that path and no other): reports, extended
//! reports whose certificates verify the report, and derived keys.

use std::path::Path;

use sev::certs::snp::{Chain, Verifiable};
use sev::firmware::guest::{AttestationReport, DerivedKey, Firmware, GuestFieldSelect};
use sev::parser::ByteParser;
use tests::{require_mount, Sevd};

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
    let manifest = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/snp.yaml"));
    let _kept = tests::KeptGuest::serve(&sevd, manifest);
    let mut fw = Firmware::open().expect("open /dev/sev-guest");

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
