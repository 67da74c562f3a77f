//! `sevctl exec`: the cost of one emulated CPUID (a trap, the supervisor's answer under
//! ptrace, and back) against the CPU's own CPUID, and the whole-process cost of running
//! virtee's `sevctl ok` under `sevctl exec` (a daemon's node, and the embedded firmware
//! started for it) against running it directly, all measured in the same run.
//!
//! Run as root: scripts/bench.sh.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tests::{can_mount, Sevd};

fn sevctl() -> PathBuf {
    tests::sevd_bin().with_file_name("sevctl")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Nanoseconds per CPUID reported by the probe run as `cmd`.
fn per_cpuid(cmd: &mut Command) -> f64 {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Median wall time of 11 runs of `cmd` (each must succeed), in ms.
fn timed(mut cmd: impl FnMut() -> Command) -> f64 {
    let runs = (0..11)
        .map(|_| {
            let t = Instant::now();
            let out = cmd().output().unwrap();
            let d = t.elapsed();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            d
        })
        .collect::<Vec<Duration>>();
    median(runs.iter().map(|d| d.as_secs_f64() * 1e3).collect())
}

fn main() {
    if !can_mount() {
        eprintln!("exec bench: needs root and /dev/fuse");
        std::process::exit(1);
    }
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../supervisor/tests/probe.c");
    assert!(Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&probe)
        .arg(&src)
        .status()
        .unwrap()
        .success());
    let sevd = Sevd::start_with(tests::Options {
        args: vec!["--snp".into()],
        ..tests::Options::default()
    });
    let node = sevd.node().display().to_string();
    let under = |program: &[&str]| {
        let mut c = Command::new(sevctl());
        c.args(["--device", &node, "exec", "--"]).args(program);
        c
    };
    let probe_s = probe.display().to_string();
    let native = median(
        (0..5)
            .map(|_| per_cpuid(Command::new(&probe).args(["--loop", "1000000"])))
            .collect(),
    );
    let emulated = median(
        (0..5)
            .map(|_| per_cpuid(&mut under(&[&probe_s, "--loop", "20000"])))
            .collect(),
    );
    println!(
        "one CPUID: native {native:.1} ns, under sevctl exec {:.2} us = {:.0}x",
        emulated / 1e3,
        emulated / native
    );
    let virtee = std::env::var("SEVCTL_BIN").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/sevctl-0.6.2/bin/sevctl"
        )
        .into()
    });
    // Directly it may fail on this host (that is the point); its time is what counts.
    let direct = {
        let runs = (0..11)
            .map(|_| {
                let t = Instant::now();
                let _ = Command::new(&virtee).arg("ok").output().unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        median(runs)
    };
    let via_node = timed(|| under(&[&virtee, "ok"]));
    let state = dir.path().join("embedded");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join(sevd::paths::CHIP_FILE), tests::shared_chip()).unwrap();
    let kds = state.join(sevd::paths::KDS_FILE);
    std::fs::write(&kds, tests::shared_kds()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&kds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let state_s = state.display().to_string();
    let embedded = timed(|| {
        let mut c = Command::new(sevctl());
        c.args([
            "--emulated",
            "--state-dir",
            &state_s,
            "exec",
            "--",
            &virtee,
            "ok",
        ]);
        c
    });
    println!(
        "virtee sevctl ok, median of 11: directly {direct:.1} ms; under sevctl exec on a daemon's node {via_node:.1} ms = {:.2}x; with the embedded firmware started for it {embedded:.1} ms = {:.2}x",
        via_node / direct,
        embedded / direct
    );
}
