//! ATTESTATION against firmware-semantics.md §2 and §7.4: the report verifies with the PEK
//! the platform exports, carries the caller's MNONCE, the launch digest and the policy, and
//! is given only in the states the table lists.

use uapi::cert::{algo, Certificate, CERT_LEN, SIG_LEN};
use uapi::launch::AttestationReport;
use uapi::Status;

use super::super::migration::tests::{image, platform, running_guest, start_both};
use crate::crypto::ecc::EcPublic;
use crate::crypto::sha256;
use crate::firmware::{Firmware, Policy};

const MNONCE: [u8; 16] = *b"owner's nonce 16";

fn report(fw: &mut Firmware, h: u32) -> Result<AttestationReport, Status> {
    let bytes = fw.attestation(h, &MNONCE, &mut 208)?;
    Ok(AttestationReport::decode(&bytes).unwrap())
}

/// Whether the PEK in `fw`'s exported chain signed `r`.
fn pek_signed(fw: &mut Firmware, r: &AttestationReport) -> bool {
    let (_, chain) = fw.pdh_cert_export(&mut 0x824, &mut 0x186C).unwrap();
    let pek = Certificate::decode(&chain[..CERT_LEN]).unwrap();
    let key = EcPublic::from_certificate(&pek).unwrap();
    let mut slot = [0u8; SIG_LEN];
    slot[..144].copy_from_slice(&r.sig);
    key.verify(algo::ECDSA_SHA256, &r.signed_bytes(), &slot)
}

#[test]
fn the_report_is_signed_by_the_pek_over_nonce_digest_and_policy() {
    let (mut fw, mem) = platform();
    let h = running_guest(&mut fw, &mem, Policy::NODBG, &image());
    let r = report(&mut fw, h).unwrap();
    assert_eq!(r.mnonce, MNONCE);
    assert_eq!(
        r.launch_digest,
        sha256(&image()),
        "the digest of what was measured"
    );
    assert_eq!(
        (r.policy, r.sig_usage, r.sig_algo),
        (Policy::NODBG, 0x1002, 2)
    );
    assert!(pek_signed(&mut fw, &r));
    let mut forged = r.clone();
    forged.policy ^= 1;
    assert!(!pek_signed(&mut fw, &forged));
    // Another platform's PEK did not sign it.
    let (mut other, _) = platform();
    assert!(!pek_signed(&mut other, &r));
}

#[test]
fn the_length_comes_after_the_state_and_is_written_back() {
    let (mut fw, mem) = platform();
    let h = running_guest(&mut fw, &mem, 0, &image());
    for given in [0, 207] {
        let mut len = given;
        assert_eq!(
            fw.attestation(h, &MNONCE, &mut len),
            Err(Status::InvalidLength)
        );
        assert_eq!(len, 208);
    }
    let mut len = 4096;
    fw.attestation(h, &MNONCE, &mut len).unwrap();
    assert_eq!(len, 208);
    assert_eq!(
        fw.attestation(77, &MNONCE, &mut 208),
        Err(Status::InvalidGuest)
    );
}

#[test]
fn only_a_measured_guest_gets_a_report() {
    let (mut fw, mem) = platform();
    let h = fw.launch_start(0, 0, None).unwrap();
    // LUPDATE: no digest yet (the length is not looked at before the state).
    assert_eq!(
        fw.attestation(h, &MNONCE, &mut 0),
        Err(Status::InvalidGuestState)
    );
    fw.decommission(h).unwrap();

    // SUPDATE and SENT on the source; RUPDATE refused on the target, and once it runs
    // there its report carries a zero digest: it was measured elsewhere.
    let h = running_guest(&mut fw, &mem, 0, &image());
    let (mut dst, _) = platform();
    let t = start_both(&mut fw, h, &mut dst);
    assert!(report(&mut fw, h).is_ok(), "SUPDATE");
    assert_eq!(
        report(&mut dst, t),
        Err(Status::InvalidGuestState),
        "RUPDATE"
    );
    fw.send_finish(h).unwrap();
    assert!(report(&mut fw, h).is_ok(), "SENT");
    dst.receive_finish(t).unwrap();
    let moved = report(&mut dst, t).unwrap();
    assert_eq!(moved.launch_digest, [0; 32]);
    assert!(pek_signed(&mut dst, &moved));
}
