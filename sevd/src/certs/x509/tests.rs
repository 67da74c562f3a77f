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

/// A `product`'s ARK, ASK and the VCEK of a fresh key for `chip_id` at `tcb`.
fn chain(
    product: Product,
    chip_id: &[u8; 64],
    tcb: TcbVersion,
) -> (Certificate, Certificate, Certificate) {
    let (ark_key, ask_key) = keys();
    let ark = ark(ark_key, product).unwrap();
    let ask = ask(ark_key, &ark, ask_key, product).unwrap();
    let key = EcKeyPair::generate().unwrap().public().unwrap();
    let vcek = vcek(ask_key, &ask, &key, tcb, chip_id, product).unwrap();
    (ark, ask, vcek)
}

fn milan_chain(chip_id: &[u8; 64], tcb: TcbVersion) -> (Certificate, Certificate, Certificate) {
    chain(Product::Milan, chip_id, tcb)
}

/// The value of AMD's extension `suffix` in `cert`.
fn amd_ext(cert: &Certificate, suffix: &str) -> Option<Vec<u8>> {
    let oid = amd_oid(suffix).unwrap();
    let exts = cert.tbs_certificate.extensions.as_ref()?;
    exts.iter()
        .find(|e| e.extn_id == oid)
        .map(|e| e.extn_value.as_bytes().to_vec())
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
    let value = |suffix: &str| amd_ext(&vcek, suffix).unwrap();
    assert_eq!(value("1"), [0x02, 0x01, 0x00]);
    assert_eq!(value("2"), [&[0x16, 0x08][..], b"Milan-B0"].concat());
    assert_eq!(value("3.1"), [0x02, 0x01, 3]);
    assert_eq!(value("3.2"), [0x02, 0x01, 1]);
    assert_eq!(value("3.3"), [0x02, 0x01, 8]);
    assert_eq!(value("3.8"), [0x02, 0x01, 0x73]);
    assert_eq!(value("4"), [&[0x04, 0x40][..], &chip_id].concat());
    assert_eq!(exts.len(), 11, "AMD's extensions and nothing else");
    assert_eq!(amd_ext(&vcek, "3.9"), None, "no fmcSPL on a Milan");
    assert_eq!(vcek_tcb(&vcek), Some(tcb));
    assert_eq!(vcek.tbs_certificate.serial_number.as_bytes(), [0]);
    // PEM round trip.
    let pem = to_pem(&vcek).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(from_der(&to_der(&vcek).unwrap()).unwrap(), vcek);
}

/// A Turin VCEK has the extensions of AMD's (virtee/sev `tests/certs_data/vcek_turin.der`):
/// structVersion 1, productName "Turin", fmcSPL, no spl_4; its TCB reads back with the FMC.
#[test]
fn a_turin_vcek_has_an_fmc_spl() {
    let mut chip_id = [0u8; 64];
    chip_id[..8].copy_from_slice(&[0x1e, 0x55, 0x0a, 0x8e, 0xe5, 0xcf, 0x9f, 0x4d]);
    let tcb: TcbVersion = "2:1:0:3:9".parse().unwrap();
    let (ark, ask, vcek) = chain(Product::Turin, &chip_id, tcb);
    let value = |suffix: &str| amd_ext(&vcek, suffix);
    assert_eq!(value("1").unwrap(), [0x02, 0x01, 0x01]);
    assert_eq!(value("2").unwrap(), [&[0x16, 0x05][..], b"Turin"].concat());
    assert_eq!(value("3.9").unwrap(), [0x02, 0x01, 2]);
    assert_eq!(value("3.1").unwrap(), [0x02, 0x01, 1]);
    assert_eq!(value("3.3").unwrap(), [0x02, 0x01, 3]);
    assert_eq!(value("3.8").unwrap(), [0x02, 0x01, 9]);
    assert_eq!(value("3.4"), None);
    assert_eq!(value("4").unwrap(), [&[0x04, 0x40][..], &chip_id].concat());
    assert_eq!(vcek_tcb(&vcek), Some(tcb));
    assert_eq!(subject_cn(&ark).as_deref(), Some("ARK-Turin"));
    let o_vcek = openssl(&vcek);
    assert!(o_vcek.verify(&openssl(&ask).public_key().unwrap()).unwrap());
}
