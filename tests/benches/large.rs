//! Guests of real sizes: `sevctl launch` of each example (SEV, SEV-ES, SNP) at 1 TiB, on the
//! embedded firmware and through the daemon, against the same launch at 64 MiB in the same
//! run: wall time and peak RSS (sevctl's from wait4, the daemon's VmHWM) as ratios. Goal
//! (issue 26): a 1 TiB launch within 256 MiB of peak RSS in sevctl and in sevd, which is to
//! say it costs what the 64 MiB one does.
//!
//! Run as root: scripts/bench.sh.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tests::{can_mount, example_sized as sized, measured, vm_hwm_kib, Sevd};

const RUNS: usize = 5;

fn sevctl() -> PathBuf {
    tests::sevd_bin().with_file_name("sevctl")
}

/// One quiet launch: its wall time and sevctl's peak RSS in KiB.
fn launch(platform: &[String], manifest: &Path) -> (Duration, u64) {
    let t = Instant::now();
    let (out, rss) = measured(
        Command::new(sevctl())
            .args(platform)
            .args(["-q", "launch"])
            .arg(manifest),
    );
    assert!(out.status.success(), "sevctl launch {}", manifest.display());
    (t.elapsed(), rss)
}

/// Median wall time (ms) and the highest peak RSS (KiB) of [`RUNS`] launches.
fn runs(platform: &[String], manifest: &Path) -> (f64, u64) {
    let mut times = vec![];
    let mut rss = 0;
    for _ in 0..RUNS {
        let (t, r) = launch(platform, manifest);
        times.push(t);
        rss = rss.max(r);
    }
    times.sort();
    (times[RUNS / 2].as_secs_f64() * 1e3, rss)
}

fn rows(dir: &Path, name: &str, platform: &[String]) {
    for example in ["sev.yaml", "sev-es.yaml", "snp.yaml"] {
        let (small_ms, small_rss) = runs(platform, &sized(dir, example, "64M"));
        let (big_ms, big_rss) = runs(platform, &sized(dir, example, "1T"));
        println!(
            "{name:<9} {example:<12} 1 TiB {big_ms:>7.1} ms, peak RSS {:>4} MiB | 64 MiB {small_ms:>7.1} ms, {:>4} MiB | time {:.2}x, RSS {:.2}x",
            big_rss >> 10,
            small_rss >> 10,
            big_ms / small_ms,
            big_rss as f64 / small_rss as f64
        );
    }
}

fn main() {
    if !can_mount() {
        eprintln!("large bench: needs root and /dev/fuse");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("chip.bin"), tests::shared_chip()).unwrap();
    std::fs::write(state.join("kds.bin"), tests::shared_kds()).unwrap();
    let embedded = [
        "--emulated".to_string(),
        "--state-dir".to_string(),
        state.display().to_string(),
    ];
    println!("launches of 1 TiB against 64 MiB, median of {RUNS} (goal: peak RSS within 256 MiB)");
    rows(dir.path(), "embedded", &embedded);
    let sevd = Sevd::start_with(tests::Options {
        args: vec!["--snp".into()],
        ..tests::Options::default()
    });
    let node = ["--device".to_string(), sevd.node().display().to_string()];
    rows(dir.path(), "daemon", &node);
    println!(
        "daemon    sevd's peak RSS over every launch: {} MiB",
        vm_hwm_kib(sevd.pid()) >> 10
    );
}
