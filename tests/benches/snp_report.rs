//! Median round trip of SNP_GET_REPORT through a kept guest's served `/dev/sev-guest`
//! (guest AES-GCM, the VMM's guest-request ioctl on sevd's `sev-vm` node, the firmware's
//! report and VCEK signature, and back), against SEV_PLATFORM_STATUS through the same sevd,
//! measured in the same run; and the P-384 signature alone, which bounds the report from
//! below. Target (issue 13): median ≤ 3× PLATFORM_STATUS. Then reports from 4 guests at
//! once against 1 guest's, pinned to one CPU (what concurrency costs) and unpinned (what it
//! gains). Everything but the last is pinned to one CPU.
//!
//! Run as root: `cargo bench -p tests --bench snp_report` (after `cargo build --release -p
//! sevd -p sevctl-cli -p tests --bins`).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use tests::bench::{aggregate_rate, median, pin_to_one_cpu, time, unpin};
use tests::{can_mount, sev_issue, KeptGuest, Options, Sevd};
use uapi::sev_guest::{SnpGuestRequestIoctl, SnpReportReq, SNP_GET_REPORT, SNP_REPORT_RESP_LEN};
use uapi::ByteValued;

fn get_report(dev: &File, req: &SnpReportReq, resp: &mut [u8]) {
    let mut io = SnpGuestRequestIoctl {
        msg_version: 1,
        req_data: req.as_bytes().as_ptr() as u64,
        resp_data: resp.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: `io` points at a request and a response buffer of the lengths the driver takes, live for the call.
    let r = unsafe { tests::sev_guest_ioctl(dev, SNP_GET_REPORT, &mut io) };
    assert_eq!(r, 0, "SNP_GET_REPORT: exitinfo2 {:#x}", { io.exitinfo2 });
}

fn snp_sevd() -> Sevd {
    Sevd::start_with(Options {
        args: vec!["--snp".into()],
        ..Options::default()
    })
}

fn manifest() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/snp.yaml"))
}

fn open(device: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .unwrap()
}

fn request() -> SnpReportReq {
    SnpReportReq {
        user_data: [0x5a; 64],
        ..Default::default()
    }
}

/// `guests` guests kept on `sevd`, their devices under `dir`.
fn keep(sevd: &Sevd, dir: &Path, guests: usize) -> (Vec<KeptGuest>, Vec<PathBuf>) {
    (0..guests)
        .map(|i| {
            let device = dir.join(format!("sev-guest{i}"));
            (KeptGuest::serve_at(sevd, manifest(), &device), device)
        })
        .unzip()
}

/// Reports per second from `clients` of `devices` at once (client i on device i mod len).
fn report_rate(devices: &[PathBuf], clients: usize, n: usize) -> f64 {
    aggregate_rate(clients, n, |i| {
        let dev = open(&devices[i % devices.len()]);
        let (req, mut resp) = (request(), vec![0u8; SNP_REPORT_RESP_LEN]);
        move || get_report(&dev, &req, &mut resp)
    })
}

/// 4 guests' reports at once against 1 guest's, as medians of alternating rounds.
fn one_and_four(devices: &[PathBuf], n: usize) -> (u64, u64) {
    report_rate(devices, 4, n / 4);
    let (mut one, mut four) = (vec![], vec![]);
    for _ in 0..5 {
        one.push(report_rate(&devices[..1], 1, n) as u64);
        four.push(report_rate(devices, 4, n) as u64);
    }
    (median(one), median(four))
}

fn main() {
    if !can_mount() {
        eprintln!("snp_report: needs root and /dev/fuse");
        std::process::exit(1);
    }
    let all = pin_to_one_cpu();
    let sevd = snp_sevd();
    let dir = tempfile::tempdir().unwrap();
    let (guests, devices) = keep(&sevd, dir.path(), 4);
    let dev = open(&devices[0]);
    let req = request();
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
    println!("pinned to one CPU:");
    println!("  sevd SEV_PLATFORM_STATUS:         median {platform} ns");
    println!("  guest SNP_GET_REPORT:             median {report} ns");
    println!("  P-384 ECDSA sign alone:           median {sign} ns");
    println!(
        "  ratio (report / PLATFORM_STATUS): {:.1} (target at most 3.0)",
        report as f64 / platform as f64
    );
    println!(
        "  the signature's share:            {:.0}% of the report; the rest is {:.1}x PLATFORM_STATUS",
        100.0 * sign as f64 / report as f64,
        report.saturating_sub(sign) as f64 / platform as f64
    );
    let (one, four) = one_and_four(&devices, n);
    println!("  1 guest:                          {one} reports/s");
    println!("  4 guests at once:                 {four} reports/s in all");
    println!(
        "  ratio (4 guests / 1):             {:.2} (1.00: concurrency costs nothing)",
        four as f64 / one as f64
    );
    drop((dev, sev, guests, sevd));

    unpin(&all);
    let sevd = snp_sevd();
    let dir = tempfile::tempdir().unwrap();
    let (_guests, devices) = keep(&sevd, dir.path(), 4);
    let (one, four) = one_and_four(&devices, n);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("unpinned, {cpus} CPUs:");
    println!("  1 guest:                          {one} reports/s");
    println!("  4 guests at once:                 {four} reports/s in all");
    println!(
        "  ratio (4 guests / 1):             {:.2}",
        four as f64 / one as f64
    );
}
