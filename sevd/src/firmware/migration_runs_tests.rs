//! Runs against single pages: a run's packets are the packets SEND_UPDATE_DATA makes, and
//! RECEIVE_UPDATE_DATA takes them, and the other way round; a run stops where a page fails.

use uapi::Status;

use super::super::tests::{host, image, platform, running_guest, send_page, start_both, view};
use super::RunStop;
use crate::firmware::Firmware;
use crate::memctl::{GuestAddress, GuestMemory, VecGuestMemory};

const PAGE: usize = 4096;
/// The run: 16 pages from 0, the image at 0x1000.
const RUN: usize = 16 * PAGE;

fn pair() -> (
    (Firmware, VecGuestMemory, u32),
    (Firmware, VecGuestMemory, u32),
) {
    let (mut src, src_mem) = platform();
    let (mut dst, dst_mem) = platform();
    let h = running_guest(&mut src, &src_mem, 0, &image());
    let t = start_both(&mut src, h, &mut dst);
    ((src, src_mem, h), (dst, dst_mem, t))
}

fn sealed_run(src: &mut Firmware, mem: &VecGuestMemory, h: u32) -> (Vec<u8>, Vec<u8>) {
    let mut buf = host(mem, 0, RUN);
    let mut headers = vec![];
    src.send_update_run(h, GuestAddress(0), &mut buf, &mut headers)
        .unwrap();
    assert_eq!(headers.len(), 16 * 52);
    (headers, buf)
}

#[test]
fn a_runs_packets_are_single_pages_packets() {
    let ((mut src, src_mem, h), (mut dst, dst_mem, t)) = pair();
    let (headers, trans) = sealed_run(&mut src, &src_mem, h);
    assert_ne!(trans[0x1000..0x1000 + 64], image()[..64], "ciphertext");
    for i in 0..16 {
        let gpa = GuestAddress((i * PAGE) as u64);
        dst.receive_update_data(
            t,
            &headers[i * 52..][..52],
            gpa,
            4096,
            &trans[i * PAGE..][..PAGE],
            &dst_mem,
        )
        .unwrap();
    }
    dst.receive_finish(t).unwrap();
    assert_eq!(view(&dst, t, &dst_mem, 0x1000, image().len()), image());
}

#[test]
fn single_pages_packets_go_into_a_run() {
    let ((mut src, src_mem, h), (mut dst, dst_mem, t)) = pair();
    let mut headers = vec![];
    let mut buf = vec![];
    for i in 0..16 {
        let p = send_page(&mut src, h, &src_mem, (i * PAGE) as u64);
        headers.extend_from_slice(&p.header);
        buf.extend_from_slice(&p.trans);
    }
    dst.receive_update_run(t, GuestAddress(0), &headers, &mut buf)
        .unwrap();
    dst_mem.write(GuestAddress(0), &buf).unwrap();
    dst.receive_finish(t).unwrap();
    assert_eq!(view(&dst, t, &dst_mem, 0x1000, image().len()), image());
}

#[test]
fn a_run_stops_at_the_page_that_fails_and_leaves_it_as_it_was() {
    let ((mut src, src_mem, h), (mut dst, _, t)) = pair();
    let (headers, mut trans) = sealed_run(&mut src, &src_mem, h);
    trans[5 * PAGE + 17] ^= 1;
    let sent = trans.clone();
    let stop = dst.receive_update_run(t, GuestAddress(0), &headers, &mut trans);
    assert_eq!(
        stop,
        Err(RunStop {
            done: 5,
            status: Status::BadMeasurement
        })
    );
    assert_ne!(trans[..5 * PAGE], sent[..5 * PAGE]);
    assert_eq!(
        trans[5 * PAGE..],
        sent[5 * PAGE..],
        "the failed page and after: untouched"
    );
    // A compressed packet is refused.
    let mut flagged = headers.clone();
    flagged[0] = 1;
    let stop = dst.receive_update_run(t, GuestAddress(0), &flagged, &mut sent.clone());
    assert_eq!(
        stop,
        Err(RunStop {
            done: 0,
            status: Status::Unsupported
        })
    );
}

#[test]
fn a_run_checks_what_each_page_would() {
    let ((mut src, src_mem, h), (mut dst, _, t)) = pair();
    let mut headers = vec![];
    let stop = |status| Err(RunStop { done: 0, status });
    let mut buf = host(&src_mem, 0, RUN);
    // Wrong handles and states: the target's guest is in RUPDATE, the source's in SUPDATE.
    assert_eq!(
        src.send_update_run(99, GuestAddress(0), &mut buf, &mut headers),
        stop(Status::InvalidGuest)
    );
    assert_eq!(
        dst.send_update_run(t, GuestAddress(0), &mut buf, &mut headers),
        stop(Status::InvalidGuestState)
    );
    assert_eq!(
        src.receive_update_run(h, GuestAddress(0), &[0; 16 * 52], &mut buf),
        stop(Status::InvalidGuestState)
    );
    assert_eq!(
        src.send_update_run(h, GuestAddress(8), &mut buf, &mut headers),
        stop(Status::InvalidAddress)
    );
    assert_eq!(
        src.send_update_run(h, GuestAddress(0), &mut buf[..100], &mut headers),
        stop(Status::InvalidLength)
    );
    assert_eq!(
        dst.receive_update_run(t, GuestAddress(0), &[0; 52], &mut buf),
        stop(Status::InvalidLength)
    );
    assert!(headers.is_empty());
    // After SEND_FINISH, nothing more goes out.
    src.send_finish(h).unwrap();
    assert_eq!(
        src.send_update_run(h, GuestAddress(0), &mut buf, &mut headers),
        stop(Status::InvalidGuestState)
    );
}

#[test]
fn a_long_run_spread_over_cores_stops_at_its_lowest_failing_page() {
    // 256 pages, more than one core's share: whatever ran where, the outcome is the
    // sequential one.
    let ((mut src, _, h), (mut dst, _, t)) = pair();
    let n = 256;
    let mut buf: Vec<u8> = (0..n * PAGE).map(|i| (i * 7 % 251) as u8).collect();
    let mut headers = vec![];
    src.send_update_run(h, GuestAddress(0), &mut buf, &mut headers)
        .unwrap();
    assert_eq!(headers.len(), n * 52);
    let mut whole = buf.clone();
    dst.receive_update_run(t, GuestAddress(0), &headers, &mut whole)
        .unwrap();
    // Page 7 alone opens to what the run made of it.
    let mut one = buf[7 * PAGE..8 * PAGE].to_vec();
    dst.receive_update_run(
        t,
        GuestAddress(7 * PAGE as u64),
        &headers[7 * 52..8 * 52],
        &mut one,
    )
    .unwrap();
    assert_eq!(one, whole[7 * PAGE..8 * PAGE]);
    // Two bad packets in different shares: the lower one stops the run.
    let mut bad = buf.clone();
    bad[200 * PAGE] ^= 1;
    bad[40 * PAGE + 9] ^= 1;
    let stop = dst.receive_update_run(t, GuestAddress(0), &headers, &mut bad);
    assert_eq!(
        stop,
        Err(RunStop {
            done: 40,
            status: Status::BadMeasurement
        })
    );
    assert_eq!(bad[..40 * PAGE], whole[..40 * PAGE]);
    assert_eq!(
        bad[40 * PAGE + 9],
        buf[40 * PAGE + 9] ^ 1,
        "the failed page untouched"
    );
}
