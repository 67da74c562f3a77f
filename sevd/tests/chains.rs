//! Our certificate codec and chain verifier against AMD's real chains (tests/data/README.md).

use sevd::certs::{verify_cek, CaChain, FullChain, PlatformChain};
use uapi::ca::CaCertificate;
use uapi::cert::Certificate;

fn read(gen: &str, name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/{gen}/{name}.cert",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn chain(gen: &str) -> FullChain {
    let sev = |name| Certificate::decode(&read(gen, name)).unwrap();
    let ca = |name| CaCertificate::decode(&read(gen, name)).unwrap();
    FullChain {
        ca: CaChain {
            ask: ca("ask"),
            ark: ca("ark"),
        },
        platform: PlatformChain {
            pdh: sev("pdh"),
            pek: sev("pek"),
            oca: sev("oca"),
            cek: sev("cek"),
        },
    }
}

#[test]
fn certificates_round_trip_byte_for_byte() {
    for gen in ["naples", "rome"] {
        for name in ["pdh", "pek", "oca", "cek"] {
            let bytes = read(gen, name);
            assert_eq!(
                Certificate::decode(&bytes).unwrap().encode(),
                bytes,
                "{gen} {name}"
            );
        }
        for name in ["ark", "ask"] {
            let bytes = read(gen, name);
            assert_eq!(
                CaCertificate::decode(&bytes).unwrap().encode(),
                bytes,
                "{gen} {name}"
            );
        }
    }
}

#[test]
fn naples_chain_verifies() {
    chain("naples").verify().unwrap();
}

#[test]
fn rome_chain_verifies() {
    chain("rome").verify().unwrap();
}

#[test]
fn naples_cek_does_not_verify_under_the_rome_ask() {
    // virtee/sev tests/certs.rs test_for_verify_false_positive.
    let naples = chain("naples");
    let rome = chain("rome");
    assert!(verify_cek(&rome.ca.ask, &naples.platform.cek).is_err());
    assert!(verify_cek(&naples.ca.ask, &rome.platform.cek).is_err());
}

#[test]
fn reversed_and_mixed_links_fail() {
    let mut c = chain("rome");
    std::mem::swap(&mut c.platform.pek, &mut c.platform.pdh);
    assert!(c.verify().is_err());
    let mut c = chain("rome");
    c.platform.oca = chain("naples").platform.oca;
    assert!(c.verify().is_err());
    let mut c = chain("naples");
    c.ca.ark = chain("rome").ca.ark;
    assert!(c.verify().is_err());
}
