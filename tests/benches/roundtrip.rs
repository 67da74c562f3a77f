//! Median round trip of SEV_PLATFORM_STATUS through sevd, against a no-op ioctl on a
//! minimal FUSE file (tests/src/bin/fuse-noop.rs) measured in the same run. Target: the
//! firmware and driver add at most 50% to FUSE's own cost.
//!
//! Run as root: `cargo bench -p tests --bench roundtrip`.

use std::fs::{File, OpenOptions};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::{can_mount, sev_issue, Sevd};

fn sample(file: &File, data: u64, n: usize) -> Vec<u64> {
    let mut ns = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (r, _) = sev_issue(file, 1, data, 0);
        ns.push(t.elapsed().as_nanos() as u64);
        assert!(r.is_ok(), "ioctl failed: {r:?}");
    }
    ns
}

fn stats(mut v: Vec<u64>) -> (u64, u64) {
    v.sort_unstable();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn main() {
    if !can_mount() {
        eprintln!("roundtrip: needs root and /dev/fuse");
        return;
    }
    let sevd = Sevd::start();
    let dir = tempfile::tempdir().unwrap();
    let noop_bin = tests::sevd_bin().with_file_name("fuse-noop");
    let mut noop = Command::new(noop_bin)
        .arg(dir.path())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let noop_node = dir.path().join("sev");
    let deadline = Instant::now() + Duration::from_secs(10);
    while OpenOptions::new()
        .read(true)
        .write(true)
        .open(&noop_node)
        .is_err()
    {
        assert!(Instant::now() < deadline, "fuse-noop did not mount");
        std::thread::sleep(Duration::from_millis(10));
    }
    let noop_file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&noop_node)
        .unwrap();
    let sev_file = sevd.open();
    let mut status = [0u8; 12];
    let data = status.as_mut_ptr() as u64;

    let (n, rounds) = (20_000, 5);
    sample(&noop_file, data, 2_000);
    sample(&sev_file, data, 2_000);
    let (mut base, mut sev) = (vec![], vec![]);
    for _ in 0..rounds {
        // Alternate so drift in the machine's load hits both alike.
        base.extend(sample(&noop_file, data, n));
        sev.extend(sample(&sev_file, data, n));
    }
    let (base_med, base_p99) = stats(base);
    let (sev_med, sev_p99) = stats(sev);
    println!("fuse no-op ioctl:           median {base_med} ns, p99 {base_p99} ns");
    println!("sevd SEV_PLATFORM_STATUS:   median {sev_med} ns, p99 {sev_p99} ns");
    println!(
        "ratio (sevd / fuse no-op):  {:.2} (target at most 1.50)",
        sev_med as f64 / base_med as f64
    );
    drop(noop_file);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(noop.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = noop.wait();
}
