//! The certificates against OpenSSL, the referee: they parse, each signature verifies under
//! its issuer's key, and the VCEK carries AMD's names and extensions.

use std::sync::OnceLock;

use super::*;
use crate::crypto::ecc::EcKeyPair;

/// An ARK and ASK key pair (RSA-4096 takes seconds: made once).
fn keys() -> &'static (RsaKeyPair, RsaKeyPair) {
    static KEYS: OnceLock<(RsaKeyPair, RsaKeyPair)> = OnceLock::new();
    KEYS.get_or_init(|| {
        (
            RsaKeyPair::generate(4096).unwrap(),
            RsaKeyPair::generate(4096).unwrap(),
        )
    })
}

fn openssl(cert: &Certificate) -> openssl::x509::X509 {
    openssl::x509::X509::from_der(&to_der(cert).unwrap()).unwrap()
}

/// A Milan's ARK, ASK and the VCEK of a fresh key for `chip_id` at `tcb`.
fn milan_chain(chip_id: &[u8; 64], tcb: TcbVersion) -> (Certificate, Certificate, Certificate) {
    let (ark_key, ask_key) = keys();
    let ark = ark(ark_key, Product::Milan).unwrap();
    let ask = ask(ark_key, &ark, ask_key, Product::Milan).unwrap();
    let key = EcKeyPair::generate().unwrap().public().unwrap();
    let vcek = vcek(ask_key, &ask, &key, tcb, chip_id, Product::Milan).unwrap();
    (ark, ask, vcek)
}

#[test]
fn the_chain_verifies_in_openssl_and_here() {
    let (ark, ask, vcek) = milan_chain(&[0x5au8; 64], "3:0:8:115".parse().unwrap());

    let (o_ark, o_ask, o_vcek) = (openssl(&ark), openssl(&ask), openssl(&vcek));
    assert!(o_ark.verify(&o_ark.public_key().unwrap()).unwrap());
    assert!(o_ask.verify(&o_ark.public_key().unwrap()).unwrap());
    assert!(o_vcek.verify(&o_ask.public_key().unwrap()).unwrap());
    assert!(!o_vcek.verify(&o_ark.public_key().unwrap()).unwrap());
    let cn = |n: &openssl::x509::X509NameRef| {
        n.entries_by_nid(openssl::nid::Nid::COMMONNAME)
            .next()
            .unwrap()
            .data()
            .as_slice()
            .to_vec()
    };
    assert_eq!(cn(o_ark.subject_name()), b"ARK-Milan");
    assert_eq!(cn(o_ask.subject_name()), b"SEV-Milan");
    assert_eq!(cn(o_vcek.subject_name()), b"SEV-VCEK");
    assert_eq!(cn(o_vcek.issuer_name()), b"SEV-Milan");
    assert_eq!(subject_cn(&ark).as_deref(), Some("ARK-Milan"));
    assert_eq!(subject_cn(&vcek).as_deref(), Some("SEV-VCEK"));
    assert_eq!(o_vcek.public_key().unwrap().bits(), 384);
    assert_eq!(o_ark.public_key().unwrap().bits(), 4096);
    assert_eq!(
        o_vcek.signature_algorithm().object().nid(),
        openssl::nid::Nid::RSASSAPSS
    );

    verify(&ark, &ark, "ARK").unwrap();
    verify(&ark, &ask, "ASK").unwrap();
    verify(&ask, &vcek, "VCEK").unwrap();
    assert!(matches!(
        verify(&ark, &vcek, "VCEK"),
        Err(X509Error::BadSignature(_))
    ));
    let mut tampered = vcek.clone();
    tampered.tbs_certificate.serial_number = SerialNumber::new(&[1]).unwrap();
    assert!(verify(&ask, &tampered, "VCEK").is_err());
}

#[test]
fn the_vcek_carries_amds_extensions() {
    let chip_id: [u8; 64] = std::array::from_fn(|i| i as u8);
    let tcb: TcbVersion = "3:1:8:115".parse().unwrap();
    let (_, _, vcek) = milan_chain(&chip_id, tcb);
    let exts = vcek.tbs_certificate.extensions.as_ref().unwrap();
    let value = |suffix: &str| {
        let oid = amd_oid(suffix).unwrap();
        exts.iter()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes().to_vec())
            .unwrap()
    };
    assert_eq!(value("1"), [0x02, 0x01, 0x00]);
    assert_eq!(value("2"), [&[0x16, 0x08][..], b"Milan-B0"].concat());
    assert_eq!(value("3.1"), [0x02, 0x01, 3]);
    assert_eq!(value("3.2"), [0x02, 0x01, 1]);
    assert_eq!(value("3.3"), [0x02, 0x01, 8]);
    assert_eq!(value("3.8"), [0x02, 0x01, 0x73]);
    assert_eq!(value("4"), [&[0x04, 0x40][..], &chip_id].concat());
    assert_eq!(exts.len(), 11, "AMD's extensions and nothing else");
    assert_eq!(vcek.tbs_certificate.serial_number.as_bytes(), [0]);
    // PEM round trip.
    let pem = to_pem(&vcek).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(from_der(&to_der(&vcek).unwrap()).unwrap(), vcek);
}
