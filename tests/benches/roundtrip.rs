//! SEV_PLATFORM_STATUS through sevd, in one run:
//! - its median round trip against a no-op ioctl on a plain one-thread fuser file
//!   (tests/src/bin/fuse-noop.rs), FUSE's own cost, everything pinned to one CPU. Goal
//!   (issue 26): at most 1.3×;
//! - 4 concurrent clients' aggregate rate against one client's, unpinned. Goal: at least 1.5×
//!   on 2 cores.
//!
//! Run as root: `cargo bench -p tests --bench roundtrip` (after `cargo build --release -p
//! sevd -p tests --bins`).

use std::fs::{File, OpenOptions};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tests::bench::{aggregate_rate, median, p99, pin_to_one_cpu, time, unpin};
use tests::{can_mount, sev_issue, Sevd};

fn status(file: &File, buf: &mut [u8; 12]) {
    let (r, _) = sev_issue(file, 1, buf.as_mut_ptr() as u64, 0);
    assert!(r.is_ok(), "ioctl failed: {r:?}");
}

/// The baseline server, mounted at `dir`, and its file opened.
fn start_noop(dir: &std::path::Path) -> (Child, File) {
    let mut child = Command::new(tests::sevd_bin().with_file_name("fuse-noop"))
        .arg(dir)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let node = dir.join("sev");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(f) = OpenOptions::new().read(true).write(true).open(&node) {
            return (child, f);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("fuse-noop did not mount");
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

fn pinned() {
    let all = pin_to_one_cpu();
    let sevd = Sevd::start();
    let dir = tempfile::tempdir().unwrap();
    let (noop, noop_file) = start_noop(dir.path());
    let sev_file = sevd.open();
    let mut buf = [0u8; 12];

    let (n, rounds) = (20_000, 5);
    time(2_000, || status(&noop_file, &mut buf));
    time(2_000, || status(&sev_file, &mut buf));
    let (mut base, mut sev) = (vec![], vec![]);
    for _ in 0..rounds {
        // Alternate so drift in the machine's load hits both alike.
        base.extend(time(n, || status(&noop_file, &mut buf)));
        sev.extend(time(n, || status(&sev_file, &mut buf)));
    }
    let (base_med, base_p99) = (median(base.clone()), p99(base));
    let (sev_med, sev_p99) = (median(sev.clone()), p99(sev));
    println!("pinned to one CPU:");
    println!("  fuse no-op ioctl (fuser, 1 thread): median {base_med} ns, p99 {base_p99} ns");
    println!("  sevd SEV_PLATFORM_STATUS:           median {sev_med} ns, p99 {sev_p99} ns");
    println!(
        "  ratio (sevd / fuse no-op):          {:.2} (goal at most 1.30)",
        sev_med as f64 / base_med as f64
    );
    drop(noop_file);
    stop(noop);
    drop(sevd);
    unpin(&all);
}

fn concurrent() {
    let sevd = Sevd::start();
    let client = |_| {
        let file = sevd.open();
        let mut buf = [0u8; 12];
        move || status(&file, &mut buf)
    };
    let (n, rounds) = (20_000, 5);
    aggregate_rate(4, 2_000, client);
    let (mut one, mut four) = (vec![], vec![]);
    for _ in 0..rounds {
        one.push(aggregate_rate(1, n, client) as u64);
        four.push(aggregate_rate(4, n, client) as u64);
    }
    let (one, four) = (median(one), median(four));
    // FUSE's own one-client rate unpinned: a round trip between two CPUs costs more than
    // on one (each side's wake-up of the other), for any server.
    let dir = tempfile::tempdir().unwrap();
    let (noop, noop_file) = start_noop(dir.path());
    let noop_one = median(
        (0..rounds)
            .map(|_| {
                aggregate_rate(1, n, |_| {
                    let (file, mut buf) = (&noop_file, [0u8; 12]);
                    move || status(file, &mut buf)
                }) as u64
            })
            .collect(),
    );
    drop(noop_file);
    stop(noop);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("unpinned, {cpus} CPUs:");
    println!("  fuse no-op ioctl, 1 client:         {noop_one} commands/s");
    println!("  1 client:                           {one} commands/s");
    println!("  4 clients at once:                  {four} commands/s in all");
    println!(
        "  ratio (4 clients / 1):              {:.2} (goal at least 1.50 on 2 cores)",
        four as f64 / one as f64
    );
}

fn main() {
    if !can_mount() {
        eprintln!("roundtrip: needs root and /dev/fuse");
        std::process::exit(1);
    }
    pinned();
    concurrent();
}
