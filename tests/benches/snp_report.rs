//! Median round trip of SNP_GET_REPORT through a kept guest's served `/dev/sev-guest`
//! (guest AES-GCM, the VMM's guest-request ioctl on sevd's `sev-vm` node, the firmware's
//! report and VCEK signature, and back), against SEV_PLATFORM_STATUS through the same sevd,
//! measured in the same run; and the P-384 signature alone, which bounds the report from
//! below. Target (issue 13): median ≤ 3× PLATFORM_STATUS.
//!
//! Run as root: `cargo bench -p tests --bench snp_report` (after `cargo build --release -p
//! sevd -p sevctl-cli -p tests --bins`).

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::Instant;

use tests::{can_mount, sev_issue, KeptGuest, Options, Sevd};
use uapi::sev_guest::{SnpGuestRequestIoctl, SnpReportReq, SNP_GET_REPORT, SNP_REPORT_RESP_LEN};
use uapi::ByteValued;

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn time(n: usize, mut f: impl FnMut()) -> Vec<u64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as u64
        })
        .collect()
}

fn get_report(dev: &File, req: &SnpReportReq, resp: &mut [u8]) {
    let mut io = SnpGuestRequestIoctl {
        msg_version: 1,
        req_data: req.as_bytes().as_ptr() as u64,
        resp_data: resp.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: `io` points at a live request and a response buffer of the length Linux's
    // driver expects; the call writes only those and `io`.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(dev),
            SNP_GET_REPORT as _,
            &mut io as *mut SnpGuestRequestIoctl,
        )
    };
    assert_eq!(r, 0, "SNP_GET_REPORT: exitinfo2 {:#x}", { io.exitinfo2 });
}

fn main() {
    if !can_mount() {
        eprintln!("snp_report: needs root and /dev/fuse");
        return;
    }
    let sevd = Sevd::start_with(Options {
        args: vec!["--snp".into()],
        ..Options::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("sev-guest");
    let manifest = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/snp.yaml"));
    let _guest = KeptGuest::serve_at(&sevd, manifest, &device);
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&device)
        .unwrap();
    let req = SnpReportReq {
        user_data: [0x5a; 64],
        ..Default::default()
    };
    let mut resp = vec![0u8; SNP_REPORT_RESP_LEN];
    let sev = sevd.open();
    let mut status = [0u8; 12];
    let data = status.as_mut_ptr() as u64;
    let key = sevd::crypto::ecc::EcKeyPair::generate().unwrap();
    let body = [0x11u8; 0x2a0];

    let (n, rounds) = (200, 5);
    get_report(&dev, &req, &mut resp);
    let (mut platform, mut report, mut sign) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        // Alternate so drift in the machine's load hits all alike.
        platform.extend(time(50 * n, || {
            assert!(sev_issue(&sev, 1, data, 0).0.is_ok())
        }));
        report.extend(time(n, || get_report(&dev, &req, &mut resp)));
        sign.extend(time(n, || {
            key.sign_sha384(&body).unwrap();
        }));
    }
    let (platform, report, sign) = (median(platform), median(report), median(sign));
    println!("sevd SEV_PLATFORM_STATUS:        median {platform} ns");
    println!("guest SNP_GET_REPORT:            median {report} ns");
    println!("P-384 ECDSA sign alone:          median {sign} ns");
    println!(
        "ratio (report / PLATFORM_STATUS): {:.1} (target at most 3.0)",
        report as f64 / platform as f64
    );
    println!(
        "the signature's share:            {:.0}% of the report; the rest is {:.1}x PLATFORM_STATUS",
        100.0 * sign as f64 / report as f64,
        report.saturating_sub(sign) as f64 / platform as f64
    );
}
