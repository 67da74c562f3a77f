//! SNP launches in the firmware alone: the RMP, the digest, the secrets and CPUID pages, the
//! ID block, and that a failure changes nothing.

use uapi::snp::{id_auth, id_block, policy, PageType};
use uapi::Status;

use crate::crypto::ecc::EcKeyPair;
use crate::firmware::nv::MemStorage;
use crate::firmware::test_support::firmware;
use crate::firmware::Firmware;
use crate::memctl::rmp::{HostPage, PageState};
use crate::memctl::{GuestAddress, GuestMemory, VecGuestMemory};
use crate::owner::snp_measurement::LaunchDigest;

use super::*;

const OBJ: u64 = 7;
const ASID: u32 = 3;
const POLICY: u64 = 0x30000;

fn page(gpa: u64) -> HostPage {
    HostPage {
        object: OBJ,
        addr: gpa,
    }
}

/// An SNP platform with a launched-into context bound to ASID 3.
fn launching() -> (Firmware, u32) {
    let mut fw = firmware().with_snp(Box::new(MemStorage::default()));
    fw.snp_init().unwrap();
    fw.df_flush().unwrap();
    let gctx = fw.snp_gctx_create().unwrap();
    fw.snp_launch_start(gctx, POLICY, [9; 16]).unwrap();
    fw.snp_activate(gctx, ASID).unwrap();
    (fw, gctx)
}

fn memory(len: usize) -> VecGuestMemory {
    let mem = VecGuestMemory::new();
    mem.add_region(GuestAddress(0), len);
    mem
}

/// Assigns and updates one page, as KVM does.
fn update(
    fw: &mut Firmware,
    gctx: u32,
    mem: &VecGuestMemory,
    gpa: u64,
    ty: PageType,
) -> Result<(), Status> {
    fw.rmp_assign(page(gpa), ASID, gpa).unwrap();
    let r = fw.snp_launch_update(gctx, page(gpa), ty, mem, GuestAddress(gpa));
    if r.is_err() {
        fw.rmp_make_shared(page(gpa));
    }
    r
}

#[test]
fn the_launch_policy_is_checked_as_the_firmware_does() {
    let mut fw = firmware().with_snp(Box::new(MemStorage::default()));
    assert_eq!(fw.snp_gctx_create(), Err(Status::InvalidPlatformState));
    fw.snp_init().unwrap();
    let gctx = fw.snp_gctx_create().unwrap();
    for bad in [
        0x10000,                             // no must-be-one bit
        0x20000,                             // SMT disallowed on an SMT platform
        policy::compose(policy::SMT, 1, 56), // a newer ABI than 1.55
        0x30000 | policy::CXL_ALLOW,         // reserved in firmware 1.55
    ] {
        assert_eq!(
            fw.snp_launch_start(gctx, bad, [0; 16]),
            Err(Status::PolicyFailure),
            "{bad:#x}"
        );
    }
    assert_eq!(
        fw.snp_launch_start(gctx + 1, POLICY, [0; 16]),
        Err(Status::InvalidGuest)
    );
    fw.snp_launch_start(
        gctx,
        policy::compose(policy::SMT | policy::DEBUG, 1, 55),
        [0; 16],
    )
    .unwrap();
    assert_eq!(
        fw.snp_launch_start(gctx, POLICY, [0; 16]),
        Err(Status::InvalidGuestState)
    );
    assert_eq!({ fw.snp_platform_status().unwrap().guest_count }, 1);
    // ASIDs: SNP guests take the SEV-ES range, after DF_FLUSH.
    assert_eq!(fw.snp_activate(gctx, ASID), Err(Status::DfFlushRequired));
    fw.df_flush().unwrap();
    assert_eq!(fw.snp_activate(gctx, 16), Err(Status::InvalidAsid));
    fw.snp_activate(gctx, ASID).unwrap();
    let other = fw.snp_gctx_create().unwrap();
    fw.snp_launch_start(other, POLICY, [0; 16]).unwrap();
    assert_eq!(fw.snp_activate(other, ASID), Err(Status::AsidOwned));
}

#[test]
fn every_page_type_is_measured_as_sev_snp_measure_does() {
    let (mut fw, gctx) = launching();
    let mem = memory(0x8000);
    let code: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    mem.write(GuestAddress(0), &code).unwrap();
    mem.write(GuestAddress(0x3000), &[0x55; 4096]).unwrap();
    let mut owner = LaunchDigest::new();
    update(&mut fw, gctx, &mem, 0, PageType::Normal).unwrap();
    owner.update(PageType::Normal, 0, 4096, &code).unwrap();
    for (gpa, ty) in [
        (0x1000, PageType::Zero),
        (0x2000, PageType::Secrets),
        (0x3000, PageType::Unmeasured),
        (0x4000, PageType::Cpuid),
    ] {
        update(&mut fw, gctx, &mem, gpa, ty).unwrap();
        owner.update(ty, gpa, 4096, &[]).unwrap();
    }
    assert_eq!(fw.snp_launch_digest(gctx), Some(owner.bytes()));

    // The hypervisor sees ciphertext; the guest sees its pages, the secrets page filled.
    let mut host = vec![0u8; 4096];
    mem.read(GuestAddress(0), &mut host).unwrap();
    assert_ne!(host, code);
    let mut guest = vec![0u8; 4096];
    fw.memctl
        .guest_read(ASID, &mem, GuestAddress(0), &mut guest)
        .unwrap();
    assert_eq!(guest, code);
    fw.memctl
        .guest_read(ASID, &mem, GuestAddress(0x1000), &mut guest)
        .unwrap();
    assert!(guest.iter().all(|b| *b == 0));
    fw.memctl
        .guest_read(ASID, &mem, GuestAddress(0x2000), &mut guest)
        .unwrap();
    assert_eq!(guest[0..4], 3u32.to_le_bytes());
    assert_eq!(
        guest[8..12],
        crate::part::Product::DEFAULT.signature().to_le_bytes()
    );
    assert_eq!(guest[0x10..0x20], [9; 16]);
    let vmpck0 = guest[0x20..0x40].to_vec();
    assert!(vmpck0.iter().any(|b| *b != 0));
    assert_eq!(fw.rmp_entry(page(0x2000)).state, PageState::GuestValid);
    assert_eq!(fw.rmp_assigned(), 5);

    // Another guest gets other VMPCKs.
    let other = fw.snp_gctx_create().unwrap();
    fw.snp_launch_start(other, POLICY, [9; 16]).unwrap();
    fw.snp_activate(other, ASID + 1).unwrap();
    let mem2 = memory(0x1000);
    let p = HostPage {
        object: OBJ + 1,
        addr: 0,
    };
    fw.rmp_assign(p, ASID + 1, 0x2000).unwrap();
    fw.snp_launch_update(other, p, PageType::Secrets, &mem2, GuestAddress(0))
        .unwrap();
    fw.memctl
        .guest_read(ASID + 1, &mem2, GuestAddress(0), &mut guest)
        .unwrap();
    assert_ne!(guest[0x20..0x40], vmpck0[..]);
}

#[test]
fn launch_update_refuses_pages_not_assigned_to_the_guest_and_changes_nothing() {
    let (mut fw, gctx) = launching();
    let mem = memory(0x4000);
    let before = fw.snp_launch_digest(gctx);
    // Not assigned.
    assert_eq!(
        fw.snp_launch_update(gctx, page(0), PageType::Normal, &mem, GuestAddress(0)),
        Err(Status::InvalidPageState)
    );
    // Assigned to another ASID.
    fw.rmp_assign(page(0x1000), ASID + 1, 0x1000).unwrap();
    assert_eq!(
        fw.snp_launch_update(
            gctx,
            page(0x1000),
            PageType::Normal,
            &mem,
            GuestAddress(0x1000)
        ),
        Err(Status::InvalidPageOwner)
    );
    fw.rmp_make_shared(page(0x1000));
    // Twice: the page is the guest's now.
    update(&mut fw, gctx, &mem, 0x2000, PageType::Normal).unwrap();
    assert_eq!(
        fw.snp_launch_update(
            gctx,
            page(0x2000),
            PageType::Normal,
            &mem,
            GuestAddress(0x2000)
        ),
        Err(Status::InvalidPageState)
    );
    // Memory that is not there.
    fw.rmp_assign(page(0x9000), ASID, 0x9000).unwrap();
    assert_eq!(
        fw.snp_launch_update(
            gctx,
            page(0x9000),
            PageType::Normal,
            &mem,
            GuestAddress(0x9000)
        ),
        Err(Status::InvalidAddress)
    );
    assert_eq!(
        fw.rmp_entry(page(0x9000)).state,
        PageState::PreGuest,
        "unchanged"
    );
    assert_ne!(fw.snp_launch_digest(gctx), before);
}

#[test]
fn a_cpuid_page_the_firmware_rejects_comes_back_corrected_in_the_clear() {
    let (mut fw, gctx) = launching();
    let mem = memory(0x1000);
    let mut table = vec![0u8; 4096];
    table[0..4].copy_from_slice(&1u32.to_le_bytes());
    table[0x10..0x14].copy_from_slice(&0x8000_001fu32.to_le_bytes());
    table[0x10 + 28..0x10 + 32].copy_from_slice(&0x0000_0130u32.to_le_bytes()); // C-bit 48
    mem.write(GuestAddress(0), &table).unwrap();
    let before = fw.snp_launch_digest(gctx);
    assert_eq!(
        update(&mut fw, gctx, &mem, 0, PageType::Cpuid),
        Err(Status::InvalidParam)
    );
    assert_eq!(fw.snp_launch_digest(gctx), before);
    let mut back = vec![0u8; 4096];
    mem.read(GuestAddress(0), &mut back).unwrap();
    assert_eq!(back[0x10 + 28..0x10 + 32], 0x0000_0133u32.to_le_bytes());
    // The corrected page is accepted.
    update(&mut fw, gctx, &mem, 0, PageType::Cpuid).unwrap();
    assert_eq!(fw.rmp_assigned(), 1);
}

/// An ID block for `ld` and `policy`, signed by `id_key`, with `author` signing the ID key.
fn id_block_for(
    ld: [u8; 48],
    policy: u64,
    id_key: &EcKeyPair,
    author: Option<&EcKeyPair>,
) -> ([u8; 96], [u8; 4096]) {
    let block = crate::owner::id_block::IdBlock {
        ld,
        family_id: [0xfa; 16],
        image_id: [0x1d; 16],
        guest_svn: 7,
        policy,
    };
    let (b, a) = block.sign(id_key, author).unwrap();
    (b, *a)
}

#[test]
fn launch_finish_checks_the_id_block_and_its_signatures() {
    let (mut fw, gctx) = launching();
    let mem = memory(0x1000);
    update(&mut fw, gctx, &mem, 0, PageType::Normal).unwrap();
    let ld = fw.snp_launch_digest(gctx).unwrap();
    let (id_key, author) = (
        EcKeyPair::generate().unwrap(),
        EcKeyPair::generate().unwrap(),
    );
    let finish = |block: &'_ ([u8; 96], [u8; 4096]), auth_key_en| {
        let (b, a) = block;
        (*b, *a, auth_key_en)
    };
    type Finish = ([u8; 96], [u8; 4096], bool);
    let cases: Vec<(Finish, Status)> = vec![
        (
            finish(&id_block_for([0; 48], POLICY, &id_key, None), false),
            Status::BadMeasurement,
        ),
        (
            finish(&id_block_for(ld, 0x70000, &id_key, None), false),
            Status::PolicyFailure,
        ),
        (
            {
                let (b, mut a) = id_block_for(ld, POLICY, &id_key, None);
                a[0] = 2;
                (b, a, false)
            },
            Status::InvalidParam,
        ),
        (
            {
                let (mut b, a) = id_block_for(ld, POLICY, &id_key, None);
                b[id_block::GUEST_SVN.start] ^= 1;
                (b, a, false)
            },
            Status::BadSignature,
        ),
        (
            {
                let (b, mut a) = id_block_for(ld, POLICY, &id_key, Some(&author));
                a[id_auth::ID_KEY_SIG.start] ^= 1;
                (b, a, true)
            },
            Status::BadSignature,
        ),
    ];
    for ((block, auth, auth_key_en), want) in cases {
        let f = SnpLaunchFinish {
            id_block: Some((&block, &auth)),
            auth_key_en,
            vcek_disabled: false,
            host_data: [1; 32],
        };
        assert_eq!(fw.snp_launch_finish(gctx, &f), Err(want));
        assert_eq!(
            fw.snp_guest_status(gctx).unwrap().state,
            SnpGuestState::Launch
        );
    }
    let (block, auth) = id_block_for(ld, POLICY, &id_key, Some(&author));
    fw.snp_launch_finish(
        gctx,
        &SnpLaunchFinish {
            id_block: Some((&block, &auth)),
            auth_key_en: true,
            vcek_disabled: false,
            host_data: [1; 32],
        },
    )
    .unwrap();
    let g = &fw.snp.guests[&gctx];
    let identity = g.identity.unwrap();
    assert_eq!(identity.guest_svn, 7);
    assert!(identity.author_key_digest.is_some());
    assert_eq!(g.host_data, [1; 32]);
    assert_eq!(
        fw.snp_guest_status(gctx).unwrap().state,
        SnpGuestState::Running
    );
    // No more updates once running.
    fw.rmp_assign(page(0x5000), ASID, 0x5000).unwrap();
    assert_eq!(
        fw.snp_launch_update(gctx, page(0x5000), PageType::Normal, &mem, GuestAddress(0)),
        Err(Status::InvalidGuestState)
    );
}

#[test]
fn decommission_frees_the_asid_and_the_keys() {
    let (mut fw, gctx) = launching();
    fw.snp_decommission(gctx).unwrap();
    assert_eq!(fw.snp_guest_status(gctx), Err(Status::InvalidGuest));
    assert!(!fw.memctl.has_key(ASID));
    assert_eq!(
        fw.asid_states()[ASID as usize],
        crate::firmware::AsidState::Dirty
    );
    assert_eq!({ fw.snp_platform_status().unwrap().guest_count }, 0);
}

/// A launched guest with its secrets page at GPA 0x1000: the firmware, the context, the
/// guest's view of the page.
fn running_with_secrets() -> (Firmware, u32, Vec<u8>) {
    let (mut fw, gctx) = launching();
    let mem = memory(0x2000);
    update(&mut fw, gctx, &mem, 0, PageType::Normal).unwrap();
    update(&mut fw, gctx, &mem, 0x1000, PageType::Secrets).unwrap();
    let finish = SnpLaunchFinish {
        id_block: None,
        auth_key_en: false,
        vcek_disabled: false,
        host_data: [0x42; 32],
    };
    fw.snp_launch_finish(gctx, &finish).unwrap();
    let mut secrets = vec![0u8; 4096];
    fw.memctl
        .guest_read(ASID, &mem, GuestAddress(0x1000), &mut secrets)
        .unwrap();
    (fw, gctx, secrets)
}

#[test]
fn a_guest_gets_a_report_signed_by_the_vcek_at_the_reported_tcb() {
    use crate::guest::GuestChannel;
    use uapi::snp::report;
    let (mut fw, gctx, secrets) = running_with_secrets();
    let mut channel = GuestChannel::from_secrets_page(&secrets, 0).unwrap();
    let rsp = channel
        .report(&[0x5a; 64], 1, |req| {
            fw.snp_guest_request(gctx, req)
                .map_err(|s| crate::guest::GuestRequestError::Refused(s as u64))
        })
        .unwrap();
    assert_eq!(rsp.status, 0);
    let r = &rsp.report;
    assert_eq!(report::u32_at(r, report::VERSION_AT), 3);
    assert_eq!(report::u64_at(r, report::POLICY_AT), POLICY);
    assert_eq!(report::u32_at(r, report::VMPL_AT), 1);
    assert_eq!(r[report::REPORT_DATA], [0x5a; 64]);
    assert_eq!(rsp.measurement(), fw.snp_launch_digest(gctx).unwrap());
    assert_eq!(r[report::HOST_DATA], [0x42; 32]);
    assert_eq!(r[report::REPORT_ID_MA], [0xff; 32]);
    assert_eq!(r[0x188..0x18b], [0x19, 0x01, 0x01]);
    assert_eq!(r[report::CHIP_ID], fw.chip.id().unwrap());
    let tcb = crate::firmware::chip::DEFAULT_TCB.to_u64();
    for at in [
        report::CURRENT_TCB_AT,
        report::REPORTED_TCB_AT,
        report::COMMITTED_TCB_AT,
        report::LAUNCH_TCB_AT,
    ] {
        assert_eq!(report::u64_at(r, at), tcb);
    }
    let vcek = fw
        .chip
        .vcek(crate::firmware::chip::DEFAULT_TCB)
        .unwrap()
        .public()
        .unwrap();
    let sig: &[u8; 512] = r[report::SIGNATURE.start..].try_into().unwrap();
    assert!(vcek.verify(uapi::cert::algo::ECDSA_SHA384, &r[report::SIGNED], sig));
    // The VCEK depends on the TCB.
    let other = fw
        .chip
        .vcek("3:0:8:114".parse().unwrap())
        .unwrap()
        .public()
        .unwrap();
    assert!(!other.verify(uapi::cert::algo::ECDSA_SHA384, &r[report::SIGNED], sig));

    // A VMPL below the key's, and an unknown key, are statuses inside the answer.
    let rsp = channel
        .report(&[0; 64], 0, |req| {
            Ok(fw.snp_guest_request(gctx, req).unwrap())
        })
        .unwrap();
    assert_eq!(rsp.status, 0, "VMPCK0 may ask for VMPL 0");
}

#[test]
fn guest_requests_are_checked_as_the_firmware_does() {
    use uapi::snp::guest_msg::*;
    let (mut fw, gctx, secrets) = running_with_secrets();
    let mut channel = crate::guest::GuestChannel::from_secrets_page(&secrets, 0).unwrap();
    let mut sent = vec![];
    channel
        .report(&[0; 64], 0, |req| {
            sent = req.to_vec();
            Ok(fw.snp_guest_request(gctx, req).unwrap())
        })
        .unwrap();
    // Replayed: the sequence number is behind the firmware's.
    assert_eq!(fw.snp_guest_request(gctx, &sent), Err(Status::AeadOflow));
    // A flipped byte of the payload: the tag fails first.
    let mut bad = sent.clone();
    bad[HDR_LEN] ^= 1;
    assert_eq!(
        fw.snp_guest_request(gctx, &bad),
        Err(Status::BadMeasurement)
    );
    for (at, v) in [
        (HDR_VERSION_AT, 2u8),
        (ALGO_AT, 2),
        (MSG_VMPCK_AT, 4),
        (MSG_SZ_AT, 0x61),
    ] {
        let mut bad = sent.clone();
        bad[at] = v;
        assert_eq!(
            fw.snp_guest_request(gctx, &bad),
            Err(Status::InvalidParam),
            "byte {at:#x}"
        );
    }
    assert_eq!(
        fw.snp_guest_request(gctx + 1, &sent),
        Err(Status::InvalidGuest)
    );
    // Another guest's key cannot open it.
    let (mut launching_fw, other) = launching();
    assert_eq!(
        launching_fw.snp_guest_request(other, &sent),
        Err(Status::InvalidGuestState)
    );
}

#[test]
fn unknown_message_types_and_other_vmpcks_get_the_firmwares_answers() {
    use crate::guest::{GuestChannel, GuestRequestError};
    use uapi::snp::guest_msg::msg_type;
    let (mut fw, gctx, secrets) = running_with_secrets();
    // Well sealed, but of a type this firmware does not serve (CPUID, EXPORT, TSC_INFO are
    // real types it lacks; 0 and 0xff are none) or a response type: INVALID_PARAM, and the
    // sequence number is not used up.
    for ty in [0u8, msg_type::REPORT_REQ + 1, 1, 7, 0x11, 0x13, 0xff] {
        let mut channel = GuestChannel::from_secrets_page(&secrets, 0).unwrap();
        let r = channel.exchange(ty, 1, &[0u8; 32], |req| {
            fw.snp_guest_request(gctx, req)
                .map_err(|s| GuestRequestError::Refused(s as u64))
        });
        assert!(
            matches!(r, Err(GuestRequestError::Refused(v)) if v == Status::InvalidParam as u64),
            "type {ty:#x}: {r:?}"
        );
    }
    // A request too short for its type is refused the same way.
    let mut channel = GuestChannel::from_secrets_page(&secrets, 0).unwrap();
    let r = channel.exchange(msg_type::REPORT_REQ, 1, &[0u8; 16], |req| {
        fw.snp_guest_request(gctx, req)
            .map_err(|s| GuestRequestError::Refused(s as u64))
    });
    assert!(matches!(r, Err(GuestRequestError::Refused(0x16))), "{r:?}");

    // VMPCK1 keeps its own sequence numbers; it may not ask for VMPL 0 (a status in the
    // answer), and may for VMPL 1.
    let mut vmpck1 = GuestChannel::from_secrets_page(&secrets, 1).unwrap();
    fn send(
        fw: &mut Firmware,
        gctx: u32,
    ) -> impl FnOnce(&[u8]) -> Result<Vec<u8>, GuestRequestError> + '_ {
        move |req| {
            fw.snp_guest_request(gctx, req)
                .map_err(|s| GuestRequestError::Refused(s as u64))
        }
    }
    let rsp = vmpck1.report(&[0; 64], 0, send(&mut fw, gctx)).unwrap();
    assert_eq!(rsp.status, Status::InvalidParam as u32);
    let rsp = vmpck1.report(&[0; 64], 1, send(&mut fw, gctx)).unwrap();
    assert_eq!(rsp.status, 0);
    // VMPCK0's count was never moved by any of the refusals above.
    let mut channel = GuestChannel::from_secrets_page(&secrets, 0).unwrap();
    assert_eq!(
        channel
            .report(&[0; 64], 0, send(&mut fw, gctx))
            .unwrap()
            .status,
        0
    );
}

#[test]
fn many_pages_at_once_are_many_updates() {
    let code: Vec<u8> = (0..8 * 4096u32).map(|i| (i * 13 % 251) as u8).collect();
    // One page at a time.
    let (mut one, g1) = launching();
    let m1 = memory(0x8000);
    m1.write(GuestAddress(0), &code).unwrap();
    for i in 0..8u64 {
        update(&mut one, g1, &m1, i * 4096, PageType::Normal).unwrap();
    }
    // All at once, on the parallel path.
    let (mut all, g2) = launching();
    let m2 = memory(0x8000);
    m2.write(GuestAddress(0), &code).unwrap();
    let pages: Vec<_> = (0..8u64)
        .map(|i| (page(i * 4096), GuestAddress(i * 4096)))
        .collect();
    for (p, at) in &pages {
        all.rmp_assign(*p, ASID, at.0).unwrap();
    }
    let (done, r) = all.snp_launch_update_pages(g2, &pages, PageType::Normal, &m2);
    assert_eq!((done, r), (8, Ok(())));
    assert_eq!(all.snp_launch_digest(g2), one.snp_launch_digest(g1));
    let mut seen = vec![0u8; code.len()];
    all.memctl
        .guest_read(ASID, &m2, GuestAddress(0), &mut seen)
        .unwrap();
    assert_eq!(seen, code, "the guest sees its pages");

    // A page in the middle that is not assigned: the pages before it are done, it fails.
    let (mut fw, g3) = launching();
    let m3 = memory(0x8000);
    for (p, at) in &pages {
        if at.0 != 0x5000 {
            fw.rmp_assign(*p, ASID, at.0).unwrap();
        }
    }
    let (done, r) = fw.snp_launch_update_pages(g3, &pages, PageType::Normal, &m3);
    assert_eq!((done, r), (5, Err(Status::InvalidPageState)));
    assert_eq!(fw.rmp_entry(page(0x6000)).state, PageState::PreGuest);
}

#[test]
fn derived_keys_are_bound_to_what_the_guest_selects() {
    use crate::guest::{GuestChannel, GuestRequestError, KeyRequest};
    let (mut fw, gctx, secrets) = running_with_secrets();
    let mut channel = GuestChannel::from_secrets_page(&secrets, 0).unwrap();
    let mut key = |fw: &mut Firmware, r: KeyRequest| {
        channel
            .derived_key(&r, |req| {
                fw.snp_guest_request(gctx, req)
                    .map_err(|s| GuestRequestError::Refused(s as u64))
            })
            .unwrap()
    };
    let base = KeyRequest {
        guest_field_select: 0b1001, // policy and measurement
        ..Default::default()
    };
    let (s1, k1) = key(&mut fw, base);
    let (s2, k2) = key(&mut fw, base);
    assert_eq!((s1, s2), (0, 0));
    assert_eq!(*k1, *k2, "deterministic");
    let (_, k3) = key(
        &mut fw,
        KeyRequest {
            guest_field_select: 0b1000,
            ..base
        },
    );
    assert_ne!(*k1, *k3, "the selected fields are mixed in");
    let (_, vmrk) = key(
        &mut fw,
        KeyRequest {
            root_key_select: 1,
            ..base
        },
    );
    assert_ne!(*k1, *vmrk, "the VMRK is another root");
    let older = "3:0:8:100"
        .parse::<uapi::snp::TcbVersion>()
        .unwrap()
        .to_u64();
    let (s, _) = key(
        &mut fw,
        KeyRequest {
            tcb_version: older,
            guest_field_select: 0b100000,
            ..base
        },
    );
    assert_eq!(s, 0, "a TCB below the committed one");
    // Statuses inside the answer, as the firmware gives them.
    let too_new = "3:0:9:115"
        .parse::<uapi::snp::TcbVersion>()
        .unwrap()
        .to_u64();
    for (r, want) in [
        (
            KeyRequest {
                tcb_version: too_new,
                ..base
            },
            Status::InvalidParam,
        ),
        (
            KeyRequest {
                guest_field_select: 1 << 6,
                ..base
            },
            Status::InvalidParam,
        ),
        (
            KeyRequest {
                guest_svn: 1,
                ..base
            },
            Status::InvalidParam,
        ),
        (KeyRequest { vmpl: 4, ..base }, Status::InvalidParam),
        (
            KeyRequest {
                root_key_select: 2 << 1,
                ..base
            },
            Status::InvalidKey,
        ),
        // virtee's guest_fw_error: version 2, fields 48, VMPL, SVN and TCB all ones.
        (
            KeyRequest {
                guest_field_select: 48,
                vmpl: u32::MAX,
                guest_svn: u32::MAX,
                tcb_version: u64::MAX,
                launch_mit_vector: Some(0),
                ..base
            },
            Status::InvalidParam,
        ),
    ] {
        let (s, k) = key(&mut fw, r);
        assert_eq!(s, want as u32, "{r:?}");
        assert_eq!(*k, [0; 32]);
    }
}

#[test]
fn mask_chip_id_and_mask_chip_key_take_effect() {
    use uapi::snp::report;
    let (mut fw, gctx, secrets) = running_with_secrets();
    let mut config = [0u8; 64];
    config[8] = 0b11; // MASK_CHIP_ID, MASK_CHIP_KEY
    fw.snp_config(&config).unwrap();
    let mut channel = crate::guest::GuestChannel::from_secrets_page(&secrets, 0).unwrap();
    let rsp = channel
        .report(&[0; 64], 0, |req| {
            Ok(fw.snp_guest_request(gctx, req).unwrap())
        })
        .unwrap();
    let r = &rsp.report;
    assert_eq!(rsp.status, 0);
    assert!(r[report::CHIP_ID].iter().all(|b| *b == 0), "CHIP_ID masked");
    assert!(r[report::SIGNATURE].iter().all(|b| *b == 0), "not signed");
    let key_info = report::u32_at(r, report::KEY_INFO_AT);
    assert_eq!((key_info >> 1) & 1, 1, "MASK_CHIP_KEY");
    assert_eq!((key_info >> 2) & 7, report::SIGNING_KEY_NONE);
    // No VCEK-rooted derived keys while the chip key is masked.
    let (status, _) = channel
        .derived_key(&crate::guest::KeyRequest::default(), |req| {
            Ok(fw.snp_guest_request(gctx, req).unwrap())
        })
        .unwrap();
    assert_eq!(status, Status::InvalidKey as u32);
}

#[test]
fn a_report_after_snp_config_is_signed_by_the_vcek_of_the_new_tcb() {
    use uapi::snp::report;
    let (mut fw, gctx, secrets) = running_with_secrets();
    let mut channel = crate::guest::GuestChannel::from_secrets_page(&secrets, 0).unwrap();
    let signed_by = |fw: &mut Firmware, channel: &mut crate::guest::GuestChannel| {
        let rsp = channel
            .report(&[0; 64], 0, |req| {
                Ok(fw.snp_guest_request(gctx, req).unwrap())
            })
            .unwrap();
        let r = rsp.report;
        let sig: [u8; 512] = r[report::SIGNATURE.start..].try_into().unwrap();
        let tcb = fw
            .chip
            .product
            .tcb(report::u64_at(&r, report::REPORTED_TCB_AT))
            .unwrap();
        let key = fw.chip.vcek(tcb).unwrap().public().unwrap();
        assert!(key.verify(uapi::cert::algo::ECDSA_SHA384, &r[report::SIGNED], &sig));
        tcb
    };
    let before = signed_by(&mut fw, &mut channel);
    assert_eq!(before, crate::firmware::chip::DEFAULT_TCB);
    let lower: TcbVersion = "3:0:8:100".parse().unwrap();
    let mut config = [0u8; 64];
    config[..8].copy_from_slice(&lower.to_u64().to_le_bytes());
    fw.snp_config(&config).unwrap();
    assert_eq!(signed_by(&mut fw, &mut channel), lower);
}
