//! SEND_* and RECEIVE_* against migration.md §2, §4 and §7: two firmwares of the suite's
//! chip, each with its own flash (so its own OCA, PEK and PDH), a guest moved between them.

use uapi::Status;

use super::*;
use crate::firmware::test_support::firmware;
use crate::firmware::{AsidState, Firmware, GuestState, Policy, INIT_FLAGS_ES};
use crate::memctl::{GuestAddress, GuestMemory, VecGuestMemory};

const PAGE: u32 = 4096;

/// A platform in INIT with SEV-ES and flushed ASIDs, and 64 KiB of guest memory at 0.
pub(crate) fn platform() -> (Firmware, VecGuestMemory) {
    let mut fw = firmware();
    fw.init(INIT_FLAGS_ES).unwrap();
    fw.df_flush().unwrap();
    let mem = VecGuestMemory::new();
    mem.add_region(GuestAddress(0), 0x10000);
    (fw, mem)
}

/// What a target hands the source: PDH, PEK ‖ OCA ‖ CEK, ASK ‖ ARK.
pub(crate) fn target_certs(fw: &mut Firmware) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (pdh, chain) = fw.pdh_cert_export(&mut 0x824, &mut 0x186C).unwrap();
    let ca = fw.ca_chain();
    (pdh, chain, [ca.ask.encode(), ca.ark.encode()].concat())
}

/// A RUNNING guest with `image` at 0x1000 (plaintext to it), on ASID `asid`.
pub(crate) fn running_guest(
    fw: &mut Firmware,
    mem: &VecGuestMemory,
    policy: u32,
    image: &[u8],
) -> u32 {
    let h = fw.launch_start(0, policy, None).unwrap();
    fw.activate(h, free_asid(fw, policy & Policy::ES != 0))
        .unwrap();
    mem.write(GuestAddress(0x1000), image).unwrap();
    fw.launch_update_data(h, GuestAddress(0x1000), image.len() as u32, mem)
        .unwrap();
    fw.launch_measure(h, &mut 48).unwrap();
    fw.launch_finish(h).unwrap();
    h
}

/// The first clean ASID of the ES or the SEV range.
fn free_asid(fw: &Firmware, es: bool) -> u32 {
    let c = fw.config();
    let range = if es {
        1..c.min_sev_asid
    } else {
        c.min_sev_asid..c.max_asid + 1
    };
    range
        .into_iter()
        .find(|&a| fw.asid_states()[a as usize] == AsidState::Clean)
        .expect("a free ASID")
}

pub(crate) fn image() -> Vec<u8> {
    (0..2 * PAGE).map(|i| (i * 13 + 5) as u8).collect()
}

pub(crate) fn send_start(src: &mut Firmware, h: u32, dst: &mut Firmware) -> FwResult<SendStarted> {
    let (pdh, chain, amd) = target_certs(dst);
    let target = Target {
        pdh: &pdh,
        plat_certs: &chain,
        amd_certs: &amd,
    };
    src.send_start(h, &target, &mut 128)
}

/// SEND_START on `src`, RECEIVE_START and ACTIVATE on `dst`: (source handle's session
/// policy, target handle).
pub(crate) fn start_both(src: &mut Firmware, h: u32, dst: &mut Firmware) -> u32 {
    let started = send_start(src, h, dst).unwrap();
    let (src_pdh, _) = src.pdh_cert_export(&mut 0x824, &mut 0x186C).unwrap();
    let t = dst
        .receive_start(0, started.policy, &src_pdh, &started.session)
        .unwrap();
    let es = started.policy & Policy::ES != 0;
    dst.activate(t, free_asid(dst, es)).unwrap();
    t
}

pub(crate) fn send_page(src: &mut Firmware, h: u32, mem: &VecGuestMemory, gpa: u64) -> Packet {
    src.send_update_data(h, &mut 52, GuestAddress(gpa), PAGE, PAGE, mem)
        .unwrap()
}

pub(crate) fn view(fw: &Firmware, h: u32, mem: &VecGuestMemory, gpa: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fw.guest_view(h, GuestAddress(gpa), &mut out, mem).unwrap();
    out
}

pub(crate) fn host(mem: &VecGuestMemory, gpa: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    mem.read(GuestAddress(gpa), &mut out).unwrap();
    out
}

#[test]
fn the_packet_format_matches_the_references_vector() {
    // migration.md §4.7: TEK 00..0f, TIK 10..1f, IV 20..2f, plaintext 00..3f.
    let mut keys = TransportKeys::zero();
    keys.tek
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = i as u8);
    keys.tik
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = 0x10 + i as u8);
    let iv: [u8; 16] = std::array::from_fn(|i| 0x20 + i as u8);
    let plain: Vec<u8> = (0..64).collect();
    let p = seal_packet(&keys, iv, &plain).unwrap();
    assert_eq!(
        hex::encode(&p.trans),
        "5be97c2d5f417a934328c3a47b5bced75bb50e31369b2ebf1a7a24e36c82d6e8\
         54aef836007640376f2419fadad27cd41f656229edef0c7b538b76309a35f756"
    );
    assert_eq!(
        hex::encode(&p.header[20..]),
        "dbe8e705eb4b84439bc965b5598a499f4fc4f5fbe92a15c9952e659b4c9f39fa"
    );
    assert_eq!(&p.header[..4], &[0; 4]);
    assert_eq!(&p.header[4..20], &iv);
    assert_eq!(
        &*open_packet(&keys, &p.header, &p.trans).unwrap(),
        &plain[..]
    );
}

#[test]
fn a_guest_moves_with_its_memory_under_a_new_key() {
    let (mut src, src_mem) = platform();
    let (mut dst, dst_mem) = platform();
    let img = image();
    let h = running_guest(&mut src, &src_mem, 0, &img);
    let t = start_both(&mut src, h, &mut dst);
    assert_eq!(src.guest_status(h).unwrap().state, GuestState::Supdate);
    assert_eq!(dst.guest_status(t).unwrap().state, GuestState::Rupdate);
    for gpa in [0x1000, 0x2000] {
        let p = send_page(&mut src, h, &src_mem, gpa);
        assert_ne!(p.trans, img, "the host never sees plaintext");
        dst.receive_update_data(t, &p.header, GuestAddress(gpa), PAGE, &p.trans, &dst_mem)
            .unwrap();
    }
    src.send_finish(h).unwrap();
    dst.receive_finish(t).unwrap();
    assert_eq!(src.guest_status(h).unwrap().state, GuestState::Sent);
    assert_eq!(dst.guest_status(t).unwrap().state, GuestState::Running);
    let len = img.len();
    assert_eq!(
        view(&dst, t, &dst_mem, 0x1000, len),
        img,
        "the guest's view"
    );
    assert_ne!(
        host(&dst_mem, 0x1000, len),
        host(&src_mem, 0x1000, len),
        "the target's key is not the source's"
    );
    assert_ne!(host(&dst_mem, 0x1000, len), img);
    // A SENT guest keeps its ASID until the hypervisor lets it go; it cannot be sent again.
    assert_eq!(
        send_start(&mut src, h, &mut dst).unwrap_err(),
        Status::InvalidGuestState
    );
    src.deactivate(h).unwrap();
    src.decommission(h).unwrap();
    // A received guest may move on.
    let (mut third, _) = platform();
    send_start(&mut dst, t, &mut third).unwrap();
}

#[test]
fn length_probes_come_first_and_write_the_length_back() {
    let (mut src, mem) = platform();
    let (mut dst, _) = platform();
    let h = running_guest(&mut src, &mem, 0, &image());
    let (pdh, chain, amd) = target_certs(&mut dst);
    let target = Target {
        pdh: &pdh,
        plat_certs: &chain,
        amd_certs: &amd,
    };
    let mut len = 0;
    assert_eq!(
        src.send_start(h, &target, &mut len).unwrap_err(),
        Status::InvalidLength
    );
    assert_eq!(len, 128);
    // SEND_UPDATE_DATA's header probe comes before the handle and the guest's state.
    let mut hdr = 0;
    assert_eq!(
        src.send_update_data(999, &mut hdr, GuestAddress(0), PAGE, PAGE, &mem)
            .unwrap_err(),
        Status::InvalidLength
    );
    assert_eq!(hdr, 52);
    assert_eq!(
        src.send_update_data(h, &mut 52, GuestAddress(0), PAGE, PAGE, &mem)
            .unwrap_err(),
        Status::InvalidGuestState,
        "not in SUPDATE yet"
    );
    src.send_start(h, &target, &mut 128).unwrap();
    let bad = |src: &mut Firmware, gpa: u64, glen: u32, tlen: u32| {
        src.send_update_data(h, &mut 52, GuestAddress(gpa), glen, tlen, &mem)
            .unwrap_err()
    };
    assert_eq!(bad(&mut src, 0, 0, PAGE), Status::InvalidLength);
    assert_eq!(bad(&mut src, 0, 0x5010, 0x5010), Status::InvalidLength);
    assert_eq!(bad(&mut src, 0, 24, 24), Status::InvalidLength);
    assert_eq!(bad(&mut src, 0, PAGE, PAGE - 16), Status::InvalidLength);
    assert_eq!(bad(&mut src, 8, PAGE, PAGE), Status::InvalidAddress);
    // 0x5000 at once is the firmware's limit (KVM's one page is the node's).
    src.send_update_data(h, &mut 52, GuestAddress(0), 0x5000, 0x5000, &mem)
        .unwrap();
}

#[test]
fn a_flipped_bit_is_refused_and_changes_nothing() {
    let (mut src, src_mem) = platform();
    let (mut dst, dst_mem) = platform();
    let h = running_guest(&mut src, &src_mem, 0, &image());
    let t = start_both(&mut src, h, &mut dst);
    let p = send_page(&mut src, h, &src_mem, 0x1000);
    let before = host(&dst_mem, 0, 0x10000);
    for at in [0, 5, 30, 52 + 100] {
        let mut header = p.header;
        let mut trans = p.trans.clone();
        if at == 0 {
            header[0] ^= 1; // COMPRESSED
        } else if at < 52 {
            header[at] ^= 0x10;
        } else {
            trans[at - 52] ^= 0x10;
        }
        let want = if at == 0 {
            Status::Unsupported // the COMPRESSED flag: refused before the MAC
        } else {
            Status::BadMeasurement
        };
        assert_eq!(
            dst.receive_update_data(t, &header, GuestAddress(0x1000), PAGE, &trans, &dst_mem)
                .unwrap_err(),
            want,
            "bit flipped at byte {at}"
        );
        assert_eq!(host(&dst_mem, 0, 0x10000), before, "nothing written");
    }
    // A packet of another session is no better.
    let (mut other, other_mem) = platform();
    let h2 = running_guest(&mut other, &other_mem, 0, &image());
    send_start(&mut other, h2, &mut dst).unwrap();
    let foreign = send_page(&mut other, h2, &other_mem, 0x1000);
    assert_eq!(
        dst.receive_update_data(
            t,
            &foreign.header,
            GuestAddress(0x1000),
            PAGE,
            &foreign.trans,
            &dst_mem
        )
        .unwrap_err(),
        Status::BadMeasurement
    );
    // After SEND_CANCEL the guest runs on the source and may be sent again.
    src.send_cancel(h).unwrap();
    assert_eq!(src.guest_status(h).unwrap().state, GuestState::Running);
    send_start(&mut src, h, &mut dst).unwrap();
}

#[test]
fn packets_replay_and_reorder_within_a_session_as_on_real_firmware() {
    // migration.md §4.5: no sequence number, no binding to the address.
    let (mut src, src_mem) = platform();
    let (mut dst, dst_mem) = platform();
    let img = image();
    let h = running_guest(&mut src, &src_mem, 0, &img);
    let t = start_both(&mut src, h, &mut dst);
    let first = send_page(&mut src, h, &src_mem, 0x1000);
    let second = send_page(&mut src, h, &src_mem, 0x2000);
    let put = |dst: &mut Firmware, p: &Packet, gpa: u64| {
        dst.receive_update_data(t, &p.header, GuestAddress(gpa), PAGE, &p.trans, &dst_mem)
    };
    put(&mut dst, &second, 0x2000).unwrap();
    put(&mut dst, &first, 0x1000).unwrap();
    put(&mut dst, &first, 0x1000).unwrap();
    // Replayed at another address, the first page lands there too.
    put(&mut dst, &first, 0x3000).unwrap();
    dst.receive_finish(t).unwrap();
    assert_eq!(view(&dst, t, &dst_mem, 0x1000, 2 * PAGE as usize), img);
    assert_eq!(
        view(&dst, t, &dst_mem, 0x3000, PAGE as usize),
        img[..PAGE as usize]
    );
    assert_eq!(
        put(&mut dst, &first, 0x1000).unwrap_err(),
        Status::InvalidGuestState,
        "after RECEIVE_FINISH the session is gone"
    );
}

#[test]
fn nosend_refuses_before_anything_else_and_the_guest_keeps_running() {
    let (mut src, mem) = platform();
    let (mut dst, _) = platform();
    let h = running_guest(&mut src, &mem, Policy::NOSEND, &image());
    assert_eq!(
        send_start(&mut src, h, &mut dst).unwrap_err(),
        Status::PolicyFailure
    );
    assert_eq!(src.guest_status(h).unwrap().state, GuestState::Running);
}

#[test]
fn the_sev_bit_wants_a_chain_to_this_ark_and_a_recent_enough_api() {
    let (mut src, mem) = platform();
    let (mut dst, _) = platform();
    let h = running_guest(&mut src, &mem, Policy::SEV, &image());
    let (pdh, chain, amd) = target_certs(&mut dst);
    let send = |src: &mut Firmware, pdh: &[u8], chain: &[u8], amd: &[u8]| {
        let target = Target {
            pdh,
            plat_certs: chain,
            amd_certs: amd,
        };
        src.send_start(h, &target, &mut 128)
    };
    // Another root: the ARK's modulus is not this chip's.
    let mut foreign = amd.clone();
    let last = foreign.len() - 600;
    foreign[last] ^= 1;
    assert_eq!(
        send(&mut src, &pdh, &chain, &foreign).unwrap_err(),
        Status::InvalidCertificate
    );
    assert_eq!(
        send(&mut src, &pdh, &chain, &amd[..amd.len() - 16]).unwrap_err(),
        Status::InvalidLength
    );
    // A PDH its PEK did not sign.
    let mut forged = pdh.clone();
    forged[0x20] ^= 1;
    assert_eq!(
        send(&mut src, &forged, &chain, &amd).unwrap_err(),
        Status::BadSignature
    );
    // A policy asking for an API above the target's.
    let h2 = running_guest(&mut src, &mem, Policy::SEV | 0x7f << 16, &image());
    let target = Target {
        pdh: &pdh,
        plat_certs: &chain,
        amd_certs: &amd,
    };
    assert_eq!(
        src.send_start(h2, &target, &mut 128).unwrap_err(),
        Status::PolicyFailure
    );
    send(&mut src, &pdh, &chain, &amd).expect("a chain to our ARK");
}

#[test]
fn the_domain_bit_wants_the_same_owner() {
    let (mut src, mem) = platform();
    let (mut dst, _) = platform();
    let h = running_guest(&mut src, &mem, Policy::DOMAIN, &image());
    // Two self-owned platforms have their own OCAs.
    assert_eq!(
        send_start(&mut src, h, &mut dst).unwrap_err(),
        Status::PolicyFailure
    );
    // To itself, the OCA is the same.
    let (pdh, chain, amd) = target_certs(&mut src);
    let target = Target {
        pdh: &pdh,
        plat_certs: &chain,
        amd_certs: &amd,
    };
    src.send_start(h, &target, &mut 128).unwrap();
}

#[test]
fn receive_start_checks_lengths_session_and_policy() {
    let (mut src, mem) = platform();
    let (mut dst, _) = platform();
    let h = running_guest(&mut src, &mem, 0, &image());
    let started = send_start(&mut src, h, &mut dst).unwrap();
    let (src_pdh, _) = src.pdh_cert_export(&mut 0x824, &mut 0x186C).unwrap();
    assert_eq!(
        dst.receive_start(0, 0, &src_pdh, &started.session[..127])
            .unwrap_err(),
        Status::InvalidLength
    );
    assert_eq!(
        dst.receive_start(0, 0, &src_pdh[..100], &started.session)
            .unwrap_err(),
        Status::InvalidLength
    );
    // The policy travels in clear but is bound by POLICY_MAC.
    assert_eq!(
        dst.receive_start(0, Policy::NODBG, &src_pdh, &started.session)
            .unwrap_err(),
        Status::BadMeasurement
    );
    let mut session = started.session;
    session[20] ^= 1;
    assert_eq!(
        dst.receive_start(0, 0, &src_pdh, &session).unwrap_err(),
        Status::BadMeasurement,
        "WRAP_MAC"
    );
    assert_eq!({ dst.platform_status().unwrap().guest_count }, 0);
    let t = dst.receive_start(0, 0, &src_pdh, &started.session).unwrap();
    assert_eq!(dst.guest_status(t).unwrap().state, GuestState::Rupdate);
    // Not active yet: nothing can land.
    let p = send_page(&mut src, h, &mem, 0x1000);
    let dst_mem = VecGuestMemory::new();
    dst_mem.add_region(GuestAddress(0), 0x10000);
    assert_eq!(
        dst.receive_update_data(t, &p.header, GuestAddress(0x1000), PAGE, &p.trans, &dst_mem)
            .unwrap_err(),
        Status::Inactive
    );
    assert_eq!(
        dst.receive_update_data(
            t,
            &p.header,
            GuestAddress(0x1000),
            PAGE,
            &p.trans[..16],
            &dst_mem
        )
        .unwrap_err(),
        Status::Inactive,
        "the activation check comes before the lengths"
    );
}

#[test]
fn an_es_guest_needs_an_es_platform_to_land_on() {
    let (mut src, mem) = platform();
    let mut dst = firmware();
    dst.init(0).unwrap();
    let h = running_guest(&mut src, &mem, Policy::ES, &image());
    let started = send_start(&mut src, h, &mut dst).unwrap();
    let (src_pdh, _) = src.pdh_cert_export(&mut 0x824, &mut 0x186C).unwrap();
    assert_eq!(
        dst.receive_start(0, started.policy, &src_pdh, &started.session)
            .unwrap_err(),
        Status::Unsupported
    );
}

#[test]
fn an_es_guests_save_areas_move_only_as_the_firmware_protected_them() {
    let (mut src, src_mem) = platform();
    let (mut dst, dst_mem) = platform();
    let img = image();
    // An SEV-ES guest with one save area at 0x8000.
    let h = src.launch_start(0, Policy::ES, None).unwrap();
    src.activate(h, free_asid(&src, true)).unwrap();
    let vmsa: Vec<u8> = (0..PAGE).map(|i| (i * 3 + 1) as u8).collect();
    src_mem.write(GuestAddress(0x8000), &vmsa).unwrap();
    src.launch_update_vmsa(h, GuestAddress(0x8000), PAGE, &src_mem)
        .unwrap();
    src_mem.write(GuestAddress(0x1000), &img).unwrap();
    src.launch_update_data(h, GuestAddress(0x1000), img.len() as u32, &src_mem)
        .unwrap();
    src.launch_measure(h, &mut 48).unwrap();
    src.launch_finish(h).unwrap();

    let t = start_both(&mut src, h, &mut dst);
    let send_vmsa = |src: &mut Firmware, gpa: u64, len: u32| {
        src.send_update_vmsa(h, &mut 52, GuestAddress(gpa), len, len, &src_mem)
    };
    // Not a save area the firmware protected, or too short to be one.
    assert_eq!(
        send_vmsa(&mut src, 0x1000, PAGE).unwrap_err(),
        Status::InvalidParam
    );
    assert_eq!(
        send_vmsa(&mut src, 0x8000, 16).unwrap_err(),
        Status::InvalidParam
    );
    let p = send_vmsa(&mut src, 0x8000, PAGE).unwrap();
    // A data packet is no save area: refused after its MAC checks out.
    let short = send_page_len(&mut src, h, &src_mem, 0x1000, 16);
    assert_eq!(
        dst.receive_update_vmsa(
            t,
            &short.header,
            GuestAddress(0x9000),
            16,
            &short.trans,
            &dst_mem
        )
        .unwrap_err(),
        Status::InvalidLength
    );
    dst.receive_update_vmsa(t, &p.header, GuestAddress(0x8000), PAGE, &p.trans, &dst_mem)
        .unwrap();
    src.send_finish(h).unwrap();
    dst.receive_finish(t).unwrap();
    assert_eq!(view(&dst, t, &dst_mem, 0x8000, PAGE as usize), vmsa);

    // Received, it is protected on the target too, and may move on; once the host has
    // changed it, it may not.
    let (mut third, _) = platform();
    send_start(&mut dst, t, &mut third).unwrap();
    dst.send_update_vmsa(t, &mut 52, GuestAddress(0x8000), PAGE, PAGE, &dst_mem)
        .unwrap();
    let mut page = host(&dst_mem, 0x8000, 16);
    page[3] ^= 1;
    dst_mem.write(GuestAddress(0x8000), &page).unwrap();
    assert_eq!(
        dst.send_update_vmsa(t, &mut 52, GuestAddress(0x8000), PAGE, PAGE, &dst_mem)
            .unwrap_err(),
        Status::InvalidParam
    );
}

#[test]
fn save_areas_are_for_es_guests_only() {
    let (mut src, mem) = platform();
    let (mut dst, dst_mem) = platform();
    let h = running_guest(&mut src, &mem, 0, &image());
    let t = start_both(&mut src, h, &mut dst);
    assert_eq!(
        src.send_update_vmsa(h, &mut 52, GuestAddress(0x1000), PAGE, PAGE, &mem)
            .unwrap_err(),
        Status::Unsupported
    );
    let p = send_page(&mut src, h, &mem, 0x1000);
    assert_eq!(
        dst.receive_update_vmsa(t, &p.header, GuestAddress(0x1000), PAGE, &p.trans, &dst_mem)
            .unwrap_err(),
        Status::Unsupported
    );
}

fn send_page_len(src: &mut Firmware, h: u32, mem: &VecGuestMemory, gpa: u64, len: u32) -> Packet {
    src.send_update_data(h, &mut 52, GuestAddress(gpa), len, len, mem)
        .unwrap()
}
