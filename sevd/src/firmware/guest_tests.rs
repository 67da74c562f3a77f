//! Guest commands against firmware-semantics.md §2–§8: a test per row or rule.

use uapi::cert::{algo, usage, Certificate};
use uapi::launch::Measurement;
use uapi::Status;

use super::test_support::{chip, firmware};
use super::*;
use crate::crypto::ecc::{EcKeyPair, EcPublic};
use crate::memctl::{GuestAddress, GuestMemory, VecGuestMemory};
use crate::owner::measurement::{measure, MeasuredPlatform};
use crate::owner::secret::package;
use crate::owner::session::{wrap, TransportKeys};

const ES: u32 = Policy::ES;

/// A firmware in INIT with SEV-ES, ASIDs flushed, and 64 KiB of guest memory at 0.
fn ready() -> (Firmware, VecGuestMemory) {
    let mut fw = firmware();
    fw.init(INIT_FLAGS_ES).unwrap();
    fw.df_flush().unwrap();
    let mem = VecGuestMemory::new();
    mem.add_region(GuestAddress(0), 0x10000);
    (fw, mem)
}

fn sev_asid(fw: &Firmware) -> u32 {
    fw.config().min_sev_asid
}

/// The owner's side of a session for this firmware's PDH.
fn owner_session(fw: &mut Firmware, policy: u32) -> (Vec<u8>, Vec<u8>, TransportKeys) {
    let (pdh, _) = fw.pdh_cert_export(&mut 0x824, &mut 0x186C).unwrap();
    let pdh = EcPublic::from_certificate(&Certificate::decode(&pdh).unwrap()).unwrap();
    let godh_key = EcKeyPair::generate().unwrap();
    let godh = godh_key
        .certificate((0, 0), usage::PDH, algo::ECDH_SHA256)
        .unwrap();
    let z = godh_key.ecdh(&pdh).unwrap();
    let keys = TransportKeys::generate().unwrap();
    let session = wrap(&z, [3; 16], [4; 16], &keys, policy).unwrap();
    (godh.encode(), session.encode().to_vec(), keys)
}

fn platform(fw: &Firmware) -> MeasuredPlatform {
    let v = fw.version();
    MeasuredPlatform {
        api_major: v.api_major,
        api_minor: v.api_minor,
        build: v.build,
    }
}

#[test]
fn launch_with_a_session_measures_and_injects_a_secret() {
    let (mut fw, mem) = ready();
    let policy = 0x1; // NODBG, as QEMU defaults
    let (godh, session, keys) = owner_session(&mut fw, policy);
    let handle = fw.launch_start(0, policy, Some((&godh, &session))).unwrap();
    assert_eq!(handle, 1, "handles start at 1");
    assert_eq!(fw.state(), PlatformState::Working);
    assert_eq!({ fw.platform_status().unwrap().guest_count }, 1);
    fw.activate(handle, sev_asid(&fw)).unwrap();

    let image: Vec<u8> = (0..0x2000u32).map(|i| (i * 7) as u8).collect();
    mem.write(GuestAddress(0x1000), &image).unwrap();
    fw.launch_update_data(handle, GuestAddress(0x1000), 0x1000, &mem)
        .unwrap();
    fw.launch_update_data(handle, GuestAddress(0x2000), 0x1000, &mem)
        .unwrap();
    let mut host = vec![0u8; 0x2000];
    mem.read(GuestAddress(0x1000), &mut host).unwrap();
    assert_ne!(
        host, image,
        "the host sees ciphertext after LAUNCH_UPDATE_DATA"
    );
    let mut guest = vec![0u8; 0x2000];
    fw.guest_view(handle, GuestAddress(0x1000), &mut guest, &mem)
        .unwrap();
    assert_eq!(guest, image, "the guest sees plaintext");

    let m = Measurement::decode(&fw.launch_measure(handle, &mut 48).unwrap()).unwrap();
    let digest = crate::crypto::sha256(&image);
    let expected = measure(&keys.tik, platform(&fw), policy, &digest, &m.mnonce).unwrap();
    assert_eq!(m.measure, expected, "the owner recomputes the measurement");

    let secret = b"the owner's disk key, 32 bytes!!";
    let (header, ct) = package(&keys.tek, &keys.tik, &m.measure, [9; 16], secret).unwrap();
    let at = GuestAddress(0x8000);
    let packet = LaunchSecret {
        header: &header.encode(),
        guest_gpa: at,
        guest_len: 32,
        trans: &ct,
    };
    fw.launch_secret(handle, packet, &mem).unwrap();
    let mut seen = [0u8; 32];
    fw.guest_view(handle, at, &mut seen, &mem).unwrap();
    assert_eq!(&seen, secret);
    let mut raw = [0u8; 32];
    mem.read(at, &mut raw).unwrap();
    assert_ne!(&raw, secret, "the hypervisor sees ciphertext");
    fw.launch_finish(handle).unwrap();
    let st = fw.guest_status(handle).unwrap();
    assert_eq!(
        (st.state, st.policy, st.asid),
        (GuestState::Running, policy, sev_asid(&fw))
    );
    // Secrets are no longer accepted after FINISH.
    assert_eq!(
        fw.launch_secret(handle, packet, &mem),
        Err(Status::InvalidGuestState)
    );
}

#[test]
fn a_launch_without_a_session_uses_zero_keys() {
    let (mut fw, mem) = ready();
    let h = fw.launch_start(0, 0, None).unwrap();
    fw.activate(h, sev_asid(&fw)).unwrap();
    fw.launch_update_data(h, GuestAddress(0), 0x100, &mem)
        .unwrap();
    let m = Measurement::decode(&fw.launch_measure(h, &mut 48).unwrap()).unwrap();
    let digest = crate::crypto::sha256(&[0u8; 0x100]);
    assert_eq!(
        m.measure,
        measure(&[0; 16], platform(&fw), 0, &digest, &m.mnonce).unwrap()
    );
}

#[test]
fn forged_sessions_are_refused() {
    let (mut fw, _mem) = ready();
    let (godh, session, _) = owner_session(&mut fw, 0);
    let mut bad = session.clone();
    bad[0x10] ^= 1; // WRAP_TK
    assert_eq!(
        fw.launch_start(0, 0, Some((&godh, &bad))),
        Err(Status::BadMeasurement)
    );
    assert_eq!(
        fw.launch_start(0, 1, Some((&godh, &session))),
        Err(Status::BadMeasurement),
        "policy MAC"
    );
    assert_eq!(
        fw.launch_start(0, 0, Some((&godh, &session[..127]))),
        Err(Status::InvalidLength)
    );
    let mut not_pdh = godh.clone();
    not_pdh[8] = 0x02; // usage PEK
    assert_eq!(
        fw.launch_start(0, 0, Some((&not_pdh, &session))),
        Err(Status::InvalidCertificate)
    );
    let mut off_curve = godh.clone();
    off_curve[0x14] ^= 1;
    assert_eq!(
        fw.launch_start(0, 0, Some((&off_curve, &session))),
        Err(Status::InvalidCertificate)
    );
    // Policy checks come after the MACs, with a session only.
    let reserved = 1 << 6;
    let (godh, session, _) = owner_session(&mut fw, reserved);
    assert_eq!(
        fw.launch_start(0, reserved, Some((&godh, &session))),
        Err(Status::PolicyFailure)
    );
    let too_new = 0xff << 16;
    let (godh, session, _) = owner_session(&mut fw, too_new);
    assert_eq!(
        fw.launch_start(0, too_new, Some((&godh, &session))),
        Err(Status::PolicyFailure)
    );
    assert!(
        fw.launch_start(0, reserved, None).is_ok(),
        "not checked without a session"
    );
    assert_eq!(
        { fw.platform_status().unwrap().guest_count },
        1,
        "refused launches left nothing"
    );
}

#[test]
fn launch_start_needs_an_initialised_platform_and_es_for_es_guests() {
    let mut fw = firmware();
    assert_eq!(
        fw.launch_start(0, 0, None),
        Err(Status::InvalidPlatformState)
    );
    fw.init(0).unwrap();
    assert_eq!(fw.launch_start(0, ES, None), Err(Status::Unsupported));
    assert!(fw.launch_start(0, 0, None).is_ok());
}

#[test]
fn guest_commands_by_state() {
    use GuestState::*;
    let (mut fw, mem) = ready();
    let h = fw.launch_start(0, ES, None).unwrap();
    let asid = 1; // an SEV-ES ASID
    fw.activate(h, asid).unwrap();
    let data = |fw: &mut Firmware| fw.launch_update_data(h, GuestAddress(0), 16, &mem);
    let vmsa = |fw: &mut Firmware| fw.launch_update_vmsa(h, GuestAddress(0x4000), 4096, &mem);
    let finish = |fw: &mut Firmware| fw.launch_finish(h);
    // LUPDATE
    assert_eq!(fw.guest_status(h).unwrap().state, Lupdate);
    assert_eq!(data(&mut fw), Ok(()));
    assert_eq!(vmsa(&mut fw), Ok(()));
    assert_eq!(finish(&mut fw), Err(Status::InvalidGuestState));
    assert_eq!(
        fw.launch_measure(h, &mut 0),
        Err(Status::InvalidLength),
        "a length probe"
    );
    assert_eq!(
        fw.guest_status(h).unwrap().state,
        Lupdate,
        "the probe changed nothing"
    );
    fw.launch_measure(h, &mut 48).unwrap();
    // LSECRET
    assert_eq!(data(&mut fw), Err(Status::InvalidGuestState));
    assert_eq!(vmsa(&mut fw), Err(Status::InvalidGuestState));
    assert_eq!(
        fw.launch_measure(h, &mut 48),
        Err(Status::InvalidGuestState)
    );
    assert_eq!(finish(&mut fw), Ok(()));
    // RUNNING
    assert_eq!(data(&mut fw), Err(Status::InvalidGuestState));
    assert_eq!(finish(&mut fw), Err(Status::InvalidGuestState));
    assert_eq!(fw.decommission(h), Err(Status::Active));
    fw.deactivate(h).unwrap();
    assert_eq!(fw.deactivate(h), Err(Status::Inactive));
    fw.decommission(h).unwrap();
    assert_eq!(fw.state(), PlatformState::Init, "the last guest gone");
    assert_eq!(
        fw.guest_status(h).unwrap().state,
        Uninit,
        "an invalid handle is not an error"
    );
    assert_eq!(fw.launch_finish(h), Err(Status::InvalidPlatformState));
}

#[test]
fn update_commands_check_activation_alignment_and_length() {
    let (mut fw, mem) = ready();
    let h = fw.launch_start(0, 0, None).unwrap();
    assert_eq!(
        fw.launch_update_data(h, GuestAddress(0), 16, &mem),
        Err(Status::Inactive)
    );
    fw.activate(h, sev_asid(&fw)).unwrap();
    assert_eq!(
        fw.launch_update_data(h, GuestAddress(8), 16, &mem),
        Err(Status::InvalidAddress)
    );
    assert_eq!(
        fw.launch_update_data(h, GuestAddress(0), 0, &mem),
        Err(Status::InvalidLength)
    );
    assert_eq!(
        fw.launch_update_data(h, GuestAddress(0), 24, &mem),
        Err(Status::InvalidLength)
    );
    assert_eq!(
        fw.launch_update_data(h, GuestAddress(0xfff0), 0x20, &mem),
        Err(Status::InvalidAddress),
        "past guest memory"
    );
    assert_eq!(
        fw.launch_update_data(h + 1, GuestAddress(0), 16, &mem),
        Err(Status::InvalidGuest)
    );
    assert_eq!(
        fw.launch_update_vmsa(h, GuestAddress(0), 4096, &mem),
        Err(Status::Unsupported),
        "not an ES guest"
    );
    assert_eq!(
        fw.launch_update_vmsa(h, GuestAddress(0), 4095, &mem),
        Err(Status::InvalidLength)
    );
}

#[test]
fn asid_rules() {
    let mut fw = firmware();
    fw.init(INIT_FLAGS_ES).unwrap();
    let h = fw.launch_start(0, 0, None).unwrap();
    let sev = sev_asid(&fw);
    assert_eq!(
        fw.activate(h, sev),
        Err(Status::DfFlushRequired),
        "INIT leaves every ASID dirty"
    );
    fw.df_flush().unwrap();
    assert_eq!(fw.activate(h, 0), Err(Status::InvalidAsid));
    assert_eq!(
        fw.activate(h, fw.config().max_asid + 1),
        Err(Status::InvalidAsid)
    );
    assert_eq!(
        fw.activate(h, 1),
        Err(Status::InvalidAsid),
        "an SEV guest in the SEV-ES range"
    );
    fw.activate(h, sev).unwrap();
    fw.activate(h, sev).unwrap(); // the same ASID again: allowed
    assert_eq!(fw.activate(h, sev + 1), Err(Status::Active));
    let other = fw.launch_start(0, 0, None).unwrap();
    assert_eq!(fw.activate(other, sev), Err(Status::AsidOwned));
    fw.deactivate(h).unwrap();
    assert_eq!(
        fw.activate(other, sev),
        Err(Status::DfFlushRequired),
        "dirty after DEACTIVATE"
    );
    fw.df_flush().unwrap();
    fw.activate(other, sev).unwrap();
    let es = fw.launch_start(0, ES, None).unwrap();
    assert_eq!(
        fw.activate(es, sev + 1),
        Err(Status::InvalidAsid),
        "an ES guest in the SEV range"
    );
    fw.activate(es, 1).unwrap();
}

#[test]
fn key_sharing_follows_noks_and_identical_policy() {
    let (mut fw, mem) = ready();
    let a = fw.launch_start(0, 0, None).unwrap();
    assert_eq!(fw.launch_start(99, 0, None), Err(Status::InvalidGuest));
    assert_eq!(
        fw.launch_start(a, 0x1, None),
        Err(Status::PolicyFailure),
        "policies differ"
    );
    let b = fw.launch_start(a, 0, None).unwrap();
    fw.activate(a, sev_asid(&fw)).unwrap();
    fw.activate(b, sev_asid(&fw) + 1).unwrap();
    fw.guest_write(a, GuestAddress(0x100), b"shared key", &mem)
        .unwrap();
    // Each ASID has its own slot, but the same VEK: b reads what a wrote.
    let mut seen = [0u8; 10];
    fw.guest_view(b, GuestAddress(0x100), &mut seen, &mem)
        .unwrap();
    assert_eq!(&seen, b"shared key");
    let noks = fw.launch_start(0, Policy::NOKS, None).unwrap();
    assert_eq!(
        fw.launch_start(noks, Policy::NOKS, None),
        Err(Status::PolicyFailure)
    );
}

#[test]
fn handles_run_out_with_resource_limit() {
    let config = FirmwareConfig {
        max_guests: 2,
        ..FirmwareConfig::default()
    };
    let mut fw = Firmware::new(
        chip(),
        Box::new(nv::MemStorage::default()),
        config,
        Box::new(random::OsRandom),
    )
    .unwrap();
    fw.init(0).unwrap();
    fw.launch_start(0, 0, None).unwrap();
    fw.launch_start(0, 0, None).unwrap();
    assert_eq!(fw.launch_start(0, 0, None), Err(Status::ResourceLimit));
    fw.decommission(1).unwrap();
    assert_eq!(fw.launch_start(0, 0, None), Ok(1), "the lowest free handle");
}

fn secret<'a>(hdr: &'a [u8], at: GuestAddress, len: u32, ct: &'a [u8]) -> LaunchSecret<'a> {
    LaunchSecret {
        header: hdr,
        guest_gpa: at,
        guest_len: len,
        trans: ct,
    }
}

#[test]
fn secrets_are_checked_before_they_touch_memory() {
    let (mut fw, mem) = ready();
    let h = fw.launch_start(0, 0, None).unwrap();
    fw.activate(h, sev_asid(&fw)).unwrap();
    let zero = [0u8; 16];
    let (header, ct) = package(&zero, &zero, &[0; 32], [1; 16], &[5u8; 32]).unwrap();
    let hdr = header.encode();
    let at = GuestAddress(0x200);
    assert_eq!(
        fw.launch_secret(h, secret(&hdr, at, 32, &ct), &mem),
        Err(Status::InvalidGuestState),
        "LUPDATE"
    );
    assert_eq!(
        fw.launch_secret(h, secret(&hdr, GuestAddress(0x201), 32, &ct), &mem),
        Err(Status::InvalidAddress),
        "alignment before state"
    );
    let m = Measurement::decode(&fw.launch_measure(h, &mut 48).unwrap()).unwrap();
    // The MAC binds the measurement: a packet made for another launch is refused.
    assert_eq!(
        fw.launch_secret(h, secret(&hdr, at, 32, &ct), &mem),
        Err(Status::BadMeasurement)
    );
    let (header, ct) = package(&zero, &zero, &m.measure, [1; 16], &[5u8; 32]).unwrap();
    let hdr = header.encode();
    let mut tampered = ct.clone();
    tampered[3] ^= 1;
    assert_eq!(
        fw.launch_secret(h, secret(&hdr, at, 32, &tampered), &mem),
        Err(Status::BadMeasurement)
    );
    assert_eq!(
        fw.launch_secret(h, secret(&hdr[..51], at, 32, &ct), &mem),
        Err(Status::InvalidLength)
    );
    assert_eq!(
        fw.launch_secret(h, secret(&hdr, at, 16, &ct), &mem),
        Err(Status::InvalidLength),
        "guest_len != trans_len"
    );
    assert_eq!(
        fw.launch_secret(h, secret(&hdr, GuestAddress(0xfff0), 32, &ct), &mem),
        Err(Status::InvalidAddress)
    );
    let mut before = [0u8; 32];
    mem.read(at, &mut before).unwrap();
    assert_eq!(before, [0u8; 32], "refused packets wrote nothing");
    let mut compressed = hdr;
    compressed[0] = 1;
    let mac = crate::owner::secret::secret_mac(&zero, 1, &[1; 16], 32, &ct, &m.measure).unwrap();
    compressed[20..].copy_from_slice(&mac);
    assert_eq!(
        fw.launch_secret(h, secret(&compressed, at, 32, &ct), &mem),
        Err(Status::Unsupported)
    );
    fw.launch_secret(h, secret(&hdr, at, 32, &ct), &mem)
        .unwrap();
    fw.launch_secret(h, secret(&hdr, at, 32, &ct), &mem)
        .unwrap(); // repeatable in LSECRET
}

#[test]
fn debugging_is_refused_under_nodbg() {
    let (mut fw, mem) = ready();
    let h = fw.launch_start(0, Policy::NODBG, None).unwrap();
    fw.activate(h, sev_asid(&fw)).unwrap();
    assert_eq!(
        fw.dbg_decrypt(h, GuestAddress(0), 16, &mem),
        Err(Status::PolicyFailure)
    );
    assert_eq!(
        fw.dbg_encrypt(h, GuestAddress(0), &[0; 16], &mem),
        Err(Status::PolicyFailure)
    );
    let d = fw.launch_start(0, 0, None).unwrap();
    fw.activate(d, sev_asid(&fw) + 1).unwrap();
    fw.dbg_encrypt(d, GuestAddress(0x40), b"debugger wrote!!", &mem)
        .unwrap();
    assert_eq!(
        fw.dbg_decrypt(d, GuestAddress(0x40), 16, &mem).unwrap(),
        b"debugger wrote!!"
    );
    assert_eq!(
        fw.dbg_decrypt(d, GuestAddress(0x41), 16, &mem),
        Err(Status::InvalidAddress)
    );
    assert_eq!(
        fw.dbg_decrypt(d, GuestAddress(0x40), 15, &mem),
        Err(Status::InvalidLength)
    );
}

#[test]
fn shutdown_destroys_every_guest_and_key() {
    let (mut fw, mem) = ready();
    let h = fw.launch_start(0, 0, None).unwrap();
    fw.activate(h, sev_asid(&fw)).unwrap();
    fw.launch_update_data(h, GuestAddress(0), 16, &mem).unwrap();
    fw.shutdown().unwrap();
    fw.init(INIT_FLAGS_ES).unwrap();
    assert_eq!({ fw.platform_status().unwrap().guest_count }, 0);
    assert_eq!(fw.guest_status(h).unwrap().state, GuestState::Uninit);
    assert!(fw
        .asid_states()
        .iter()
        .skip(1)
        .all(|a| *a == AsidState::Dirty));
}

#[test]
fn the_same_nonce_source_gives_the_same_measurement() {
    let run = || {
        let config = FirmwareConfig::default();
        let rng = Box::new(random::SeededRandom::new([7; 32]));
        let mut fw =
            Firmware::new(chip(), Box::new(nv::MemStorage::default()), config, rng).unwrap();
        fw.init(0).unwrap();
        fw.df_flush().unwrap();
        let mem = VecGuestMemory::new();
        mem.add_region(GuestAddress(0), 0x1000);
        mem.write(GuestAddress(0), &[0x5a; 0x1000]).unwrap();
        let h = fw.launch_start(0, 0, None).unwrap();
        fw.activate(h, 16).unwrap();
        fw.launch_update_data(h, GuestAddress(0), 0x1000, &mem)
            .unwrap();
        fw.launch_measure(h, &mut 48).unwrap()
    };
    assert_eq!(run(), run());
}

/// virtee/sevctl tests/secretbuild.rs `secret_build`: `sevctl secret build` with tik1.bin,
/// tek1.bin, one secret (secret1.txt under GUID 736869e5-84f0-4973-92ec-06879ce3da0b), this
/// launch measurement and IV, gives this header and payload. Our LAUNCH_SECRET accepts them,
/// and the guest then holds sevctl's secret table.
#[test]
fn sevctl_secret_build_vector_is_accepted() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).unwrap();
    let data = |name: &str| {
        std::fs::read(format!(
            "{}/tests/data/sevctl/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let blob = b64("TLeA7607lZQntLjRY1/i+sbtdSZ+75zxpz4Px9hzpBLwItF5Q2o4prA++3ZZv9ZS");
    let header = b64("AAAAAKxUdO1N0yx9mJ7FI9klWey8FSzeYQ4X8K71VzNKLU/KQsIsQxLjtbhaPUewqshX5Q==");
    let payload = b64(
        "0U3e5PcXv0UW+H4tSBFKOdCYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+lVfCCwD/2w5cPA==",
    );
    let (tik, tek) = (data("tik1.bin"), data("tek1.bin"));

    let (mut fw, mem) = ready();
    let h = fw.launch_start(0, 0, None).unwrap();
    fw.activate(h, sev_asid(&fw)).unwrap();
    fw.launch_measure(h, &mut 48).unwrap();
    fw.force_launch_keys(
        h,
        tek.try_into().unwrap(),
        tik.try_into().unwrap(),
        blob[..32].try_into().unwrap(),
    );
    let at = GuestAddress(0x3000);
    let packet = LaunchSecret {
        header: &header,
        guest_gpa: at,
        guest_len: payload.len() as u32,
        trans: &payload,
    };
    fw.launch_secret(h, packet, &mem).unwrap();

    let mut table = vec![0u8; payload.len()];
    fw.guest_view(h, at, &mut table, &mem).unwrap();
    // efi_secret table: header GUID 1e74f542-71dd-4d66-963e-ef4287ff173b (bytes_le), length.
    assert_eq!(
        hex::encode(&table[..16]),
        "42f5741edd71664d963eef4287ff173b"
    );
    assert_eq!(u32::from_le_bytes(table[16..20].try_into().unwrap()), 0x3a);
    assert_eq!(
        hex::encode(&table[20..36]),
        "e5696873f084734992ec06879ce3da0b"
    );
    let secret = data("secret1.txt");
    assert_eq!(
        u32::from_le_bytes(table[36..40].try_into().unwrap()) as usize,
        20 + secret.len()
    );
    assert_eq!(&table[40..40 + secret.len()], &secret[..]);
    assert!(
        table[40 + secret.len()..].iter().all(|&b| b == 0),
        "zero padding"
    );

    let mut forged = header.clone();
    forged[30] ^= 1;
    let packet = LaunchSecret {
        header: &forged,
        ..packet
    };
    assert_eq!(
        fw.launch_secret(h, packet, &mem),
        Err(Status::BadMeasurement)
    );
}
