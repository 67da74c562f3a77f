//! Platform commands against firmware-semantics.md §1.3, a test per row or rule.

use uapi::cert::{algo, usage, Certificate, CERT_LEN};
use uapi::Status;

use super::nv::{MemStorage, NvStorage};
use super::test_support::{chip, firmware, firmware_with};
use super::*;
use crate::certs::{FullChain, PlatformChain};

#[derive(Debug, Clone, Copy)]
enum Cmd {
    Init,
    Shutdown,
    PlatformReset,
    PlatformStatus,
    PekGen,
    PekCsr,
    PekCertImport,
    PdhGen,
    PdhCertExport,
    GetId,
    DfFlush,
}

fn run(fw: &mut Firmware, cmd: Cmd) -> Status {
    let big = 0x4000;
    let r = match cmd {
        Cmd::Init => fw.init(INIT_FLAGS_ES),
        Cmd::Shutdown => fw.shutdown(),
        Cmd::PlatformReset => fw.platform_reset(),
        Cmd::PlatformStatus => fw.platform_status().map(drop),
        Cmd::PekGen => fw.pek_gen(),
        Cmd::PekCsr => fw.pek_csr(&mut { big }).map(drop),
        // Lengths of 0 pass every state check and then fail INVALID_LENGTH.
        Cmd::PekCertImport => fw.pek_cert_import(&[], &[]),
        Cmd::PdhGen => fw.pdh_gen(),
        Cmd::PdhCertExport => fw.pdh_cert_export(&mut { big }, &mut { big }).map(drop),
        Cmd::GetId => fw.get_id(&mut { big }).map(drop),
        Cmd::DfFlush => fw.df_flush(),
    };
    r.err().unwrap_or(Status::Success)
}

#[test]
fn state_table_rows() {
    use Cmd::*;
    use Status::*;
    let ips = InvalidPlatformState;
    // (command, status in UNINIT, status in INIT) — firmware-semantics.md §1.3, FW column.
    let rows = [
        (Init, Success, ips),
        (Shutdown, Success, Success),
        (PlatformReset, Success, ips),
        (PlatformStatus, Success, Success),
        (PekGen, ips, Success),
        (PekCsr, ips, Success),
        (PekCertImport, ips, InvalidLength),
        (PdhGen, ips, Success),
        (PdhCertExport, ips, Success),
        (GetId, Success, Success),
        (DfFlush, Success, Success),
    ];
    for (cmd, in_uninit, in_init) in rows {
        let mut fw = firmware();
        assert_eq!(run(&mut fw, cmd), in_uninit, "{cmd:?} in UNINIT");
        let mut fw = firmware();
        fw.init(INIT_FLAGS_ES).unwrap();
        assert_eq!(run(&mut fw, cmd), in_init, "{cmd:?} in INIT");
    }
}

#[test]
fn init_rejects_reserved_flags_and_stays_uninit() {
    let mut fw = firmware();
    assert_eq!(fw.init(0x2), Err(Status::InvalidConfig));
    assert_eq!(fw.state(), PlatformState::Uninit);
    fw.init(0).unwrap();
    assert_eq!(
        { fw.platform_status().unwrap().flags },
        0,
        "no ES without the flag"
    );
}

#[test]
fn platform_status_reports_zeros_in_uninit() {
    let mut fw = firmware();
    fw.init(INIT_FLAGS_ES).unwrap();
    let s = fw.platform_status().unwrap();
    assert_eq!((s.api_major, s.api_minor, s.state, s.build), (1, 55, 1, 25));
    assert_eq!({ s.flags }, 0x100);
    fw.shutdown().unwrap();
    let s = fw.platform_status().unwrap();
    assert_eq!((s.state, { s.flags }, { s.guest_count }), (0, 0, 0));
}

fn export(fw: &mut Firmware) -> PlatformChain {
    let (pdh, chain) = fw
        .pdh_cert_export(&mut (CERT_LEN as u32), &mut (3 * CERT_LEN as u32))
        .unwrap();
    let certs = uapi::cert::decode_chain(&chain, 3).unwrap();
    PlatformChain {
        pdh: Certificate::decode(&pdh).unwrap(),
        pek: certs[0].clone(),
        oca: certs[1].clone(),
        cek: certs[2].clone(),
    }
}

#[test]
fn exported_chain_verifies_up_to_the_firmwares_ark() {
    let mut fw = firmware();
    fw.init(INIT_FLAGS_ES).unwrap();
    let platform = export(&mut fw);
    assert_eq!((platform.pek.api_major, platform.pek.api_minor), (1, 55));
    FullChain {
        ca: fw.ca_chain(),
        platform,
    }
    .verify()
    .unwrap();
}

#[test]
fn keys_persist_across_shutdown_and_pdh_gen_changes_only_the_pdh() {
    let mut fw = firmware();
    fw.init(INIT_FLAGS_ES).unwrap();
    let first = export(&mut fw);
    fw.shutdown().unwrap();
    fw.init(INIT_FLAGS_ES).unwrap();
    assert_eq!(export(&mut fw), first);
    fw.pdh_gen().unwrap();
    let after = export(&mut fw);
    assert_eq!((&after.pek, &after.oca), (&first.pek, &first.oca));
    assert_ne!(after.pdh, first.pdh);
    after.verify().unwrap();
}

#[test]
fn pek_gen_and_platform_reset_make_new_keys() {
    let mut fw = firmware();
    fw.init(INIT_FLAGS_ES).unwrap();
    let first = export(&mut fw);
    fw.pek_gen().unwrap();
    let second = export(&mut fw);
    assert_ne!(second.oca, first.oca);
    assert_ne!(second.pek, first.pek);
    second.verify().unwrap();
    fw.shutdown().unwrap();
    fw.platform_reset().unwrap();
    fw.init(INIT_FLAGS_ES).unwrap();
    let third = export(&mut fw);
    assert_ne!(third.pek, second.pek);
    assert_eq!(
        third.cek, second.cek,
        "the CEK is the chip's, not the store's"
    );
}

#[test]
fn length_probes_write_back_the_needed_lengths() {
    let mut fw = firmware();
    fw.init(INIT_FLAGS_ES).unwrap();
    let mut len = 0;
    assert_eq!(fw.pek_csr(&mut len), Err(Status::InvalidLength));
    assert_eq!(len, 0x824);
    let (mut pdh_len, mut certs_len) = (0x824, 0x186B);
    assert_eq!(
        fw.pdh_cert_export(&mut pdh_len, &mut certs_len),
        Err(Status::InvalidLength)
    );
    assert_eq!((pdh_len, certs_len), (0x824, 0x186C));
    let mut id_len = 63;
    assert_eq!(fw.get_id(&mut id_len), Err(Status::InvalidLength));
    assert_eq!(id_len, 64);
    let mut id_len = 128;
    let id = fw.get_id(&mut id_len).unwrap();
    assert_eq!((id.len(), id_len), (64, 64));
    let csr = Certificate::decode(&fw.pek_csr(&mut { 0x824 }).unwrap()).unwrap();
    assert!(csr.sigs.iter().all(|s| s.is_empty()));
    assert_eq!(csr.usage, usage::PEK);
}

/// An owner's OCA (as sevctl provision makes it) and the CSR signed with it.
fn owner_sign(fw: &mut Firmware) -> (Vec<u8>, Vec<u8>, crate::crypto::ecc::EcKeyPair) {
    let oca_key = crate::crypto::ecc::EcKeyPair::generate().unwrap();
    let mut oca = oca_key
        .certificate((0, 0), usage::OCA, algo::ECDSA_SHA256)
        .unwrap();
    oca_key
        .sign_certificate(&mut oca, usage::OCA, algo::ECDSA_SHA256)
        .unwrap();
    let mut pek = Certificate::decode(&fw.pek_csr(&mut { 0x824 }).unwrap()).unwrap();
    oca_key
        .sign_certificate(&mut pek, usage::OCA, algo::ECDSA_SHA256)
        .unwrap();
    (pek.encode(), oca.encode(), oca_key)
}

#[test]
fn pek_cert_import_makes_the_platform_externally_owned() {
    let mut fw = firmware();
    fw.init(INIT_FLAGS_ES).unwrap();
    let before = export(&mut fw);
    let (pek, oca, _key) = owner_sign(&mut fw);
    fw.pek_cert_import(&pek, &oca).unwrap();
    assert_eq!({ fw.platform_status().unwrap().flags } & 1, 1);
    let after = export(&mut fw);
    assert_eq!(after.oca.encode(), oca);
    assert_eq!(after.pek.body(), before.pek.body());
    assert_ne!(after.pdh, before.pdh, "PDH is regenerated");
    FullChain {
        ca: fw.ca_chain(),
        platform: after.clone(),
    }
    .verify()
    .unwrap();
    // Ownership survives a restart of the firmware and is refused a second time.
    fw.shutdown().unwrap();
    fw.init(INIT_FLAGS_ES).unwrap();
    assert_eq!(export(&mut fw), after);
    assert_eq!(fw.pek_cert_import(&pek, &oca), Err(Status::AlreadyOwned));
    // PEK_GEN returns it to self-ownership.
    fw.pek_gen().unwrap();
    assert_eq!({ fw.platform_status().unwrap().flags } & 1, 0);
}

#[test]
fn pek_cert_import_refuses_forgeries_and_changes_nothing() {
    let mut fw = firmware();
    fw.init(INIT_FLAGS_ES).unwrap();
    let before = export(&mut fw);
    let (pek, oca, _key) = owner_sign(&mut fw);

    let mut forged = pek.clone();
    forged[0x41C + 3] ^= 0x40; // a bit of SIG1's r
    assert_eq!(fw.pek_cert_import(&forged, &oca), Err(Status::BadSignature));

    let mut bad_oca = oca.clone();
    bad_oca[0x8] = 0x02; // usage PEK instead of OCA: the self-signature no longer matches
    assert!(fw.pek_cert_import(&pek, &bad_oca).is_err());

    let (other_pek, other_oca, _) = {
        let mut other = firmware();
        other.init(INIT_FLAGS_ES).unwrap();
        owner_sign(&mut other)
    };
    assert_eq!(
        fw.pek_cert_import(&other_pek, &other_oca),
        Err(Status::InvalidCertificate),
        "a PEK that is not this platform's"
    );
    assert_eq!(
        fw.pek_cert_import(&pek[..100], &oca),
        Err(Status::InvalidLength)
    );
    assert_eq!(export(&mut fw), before);
    assert_eq!({ fw.platform_status().unwrap().flags } & 1, 0);
}

#[test]
fn corrupt_store_gives_secure_data_invalid_then_a_fresh_store() {
    let mut nv = MemStorage::default();
    // Write a valid store, then flip one byte of it.
    let mut fw = firmware_with(MemStorage::default());
    fw.init(0).unwrap();
    let keys = fw.keys.take().unwrap();
    let sealed = keys.encode(&fw.chip.nv_seal_key().unwrap()).unwrap();
    let mut corrupt = sealed.to_vec();
    corrupt[40] ^= 1;
    nv.write(&corrupt).unwrap();
    let mut fw = firmware_with(nv);
    assert_eq!(fw.init(INIT_FLAGS_ES), Err(Status::SecureDataInvalid));
    assert_eq!(fw.state(), PlatformState::Uninit);
    fw.init(INIT_FLAGS_ES).unwrap();
    export(&mut fw).verify().unwrap();
}

#[test]
fn store_from_another_chip_is_refused() {
    let mut fw = firmware();
    fw.init(0).unwrap();
    let keys = fw.keys.take().unwrap();
    let other = chip().with_seed([0x5a; 32]);
    let sealed = keys.encode(&other.nv_seal_key().unwrap()).unwrap();
    let nv = MemStorage {
        data: Some(sealed.to_vec()),
        quarantined: None,
    };
    let mut fw = firmware_with(nv);
    assert_eq!(fw.init(0), Err(Status::SecureDataInvalid));
}

#[test]
fn the_store_holds_no_private_key_in_the_clear_and_older_stores_load() {
    let mut fw = firmware();
    fw.init(0).unwrap();
    let keys = fw.keys.take().unwrap();
    let sealed = keys.encode(&fw.chip.nv_seal_key().unwrap()).unwrap();
    for key in [&keys.pek_key, &keys.pdh_key] {
        let der = key.to_der().unwrap();
        // The DER of a P-384 key holds its 48-byte scalar; no 16-byte run of it is stored.
        assert!(
            !sealed.windows(16).any(|w| der.windows(16).any(|d| d == w)),
            "a private key is readable in the store"
        );
    }
    assert_eq!(&sealed[..8], b"SEVDNV02");
    // A format-1 store (MAC only, as sevd wrote before) still loads, with the same keys.
    let v1 = keys.encode_v1(&fw.chip.nv_v1_mac_key().unwrap()).unwrap();
    let pdh = keys.pdh.encode();
    let mut fw = firmware_with(MemStorage {
        data: Some(v1),
        quarantined: None,
    });
    fw.init(0).unwrap();
    assert_eq!(fw.keys.as_ref().unwrap().pdh.encode(), pdh);
}

#[test]
fn chip_round_trips_and_detects_corruption() {
    let c = chip();
    let bytes = c.encode();
    let again = Chip::decode(&bytes).unwrap();
    assert_eq!(again.encode(), bytes);
    let mut bad = bytes.to_vec();
    bad[100] ^= 1;
    assert!(Chip::decode(&bad).is_err());
    assert!(Chip::decode(&bad[..50]).is_err());
}
