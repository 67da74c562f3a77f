//! `sevctl launch` of the SEV-ES example (four vCPUs, two secrets), on the embedded firmware
//! and through the daemon: median wall time of whole runs of the binary. And a manifest with
//! a 1 GiB region: the whole embedded run against the raw cost of its cryptography (OpenSSL's
//! single-threaded SHA-256 plus two AES-128 passes over the same bytes, measured in the same
//! run; target ≥ 0.6, issue 10), and the peak memory of sevctl (embedded) and of the daemon
//! against the guest size (target ≤ 1.1).
//!
//! Run as root: scripts/bench.sh.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};
use tests::{can_mount, Sevd};

const GIB: usize = 1 << 30;

fn sevctl() -> PathBuf {
    tests::sevd_bin().with_file_name("sevctl")
}

fn run(args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new(sevctl()).args(args).output().unwrap();
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "sevctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

/// The raw figure: OpenSSL's single-threaded SHA-256 of `size` bytes plus two AES-128-ECB
/// passes over them (`openssl speed -evp sha256` and `-evp aes-128-ecb`), on warm memory.
fn raw_crypto(size: usize) -> Duration {
    use openssl::symm::{Cipher, Crypter, Mode};
    let buf: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut out = vec![0u8; (1 << 20) + 16];
    let t = Instant::now();
    let mut sha = openssl::sha::Sha256::new();
    for chunk in buf.chunks(1 << 20) {
        sha.update(chunk);
    }
    for key in [[1u8; 16], [2u8; 16]] {
        let mut c = Crypter::new(Cipher::aes_128_ecb(), Mode::Encrypt, &key, None).unwrap();
        c.pad(false);
        for chunk in buf.chunks(1 << 20) {
            c.update(chunk, &mut out).unwrap();
        }
    }
    std::hint::black_box((sha.finish(), &out));
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn vm_hwm_mib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn main() {
    if !can_mount() {
        eprintln!("cli bench: needs root and /dev/fuse");
        return;
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let example = examples.join("sev-es.yaml");
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("chip.bin"), tests::shared_chip()).unwrap();
    let st = state.path().to_str().unwrap();

    // 1 GiB region, embedded, first: RUSAGE_CHILDREN's peak is this child's.
    let big = tempfile::tempdir().unwrap();
    let blob = big.path().join("region.bin");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&blob).unwrap();
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        for _ in 0..1024 {
            f.write_all(&chunk).unwrap();
        }
        // An image at rest, not one still being written back while it is launched.
        f.sync_all().unwrap();
    }
    let manifest = big.path().join("big.yaml");
    std::fs::write(&manifest, "apiVersion: sevctl/v1\nguest:\n  memory: 1100M\n  mode: sev\nimages:\n  regions:\n    - address: 0x1000000\n      file: region.bin\nsecrets:\n  placement: 0x10000\n  entries:\n    - guid: 736869e5-84f0-4973-92ec-06879ce3da0b\n      value: hello\n").unwrap();
    let big_run = || {
        run(&[
            "--emulated",
            "--state-dir",
            st,
            "launch",
            manifest.to_str().unwrap(),
        ])
    };
    let runs: Vec<Duration> = (0..5).map(|_| big_run()).collect();
    let peak_kib = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss();
    let raw = (0..3).map(|_| raw_crypto(GIB)).min().unwrap();
    let whole = median(runs.clone()) / 1e3;
    println!(
        "1 GiB region, embedded: runs {:?} s, median {whole:.2} s; raw SHA-256 + 2 AES-128 passes {:.2} s; ratio {:.2} (target 0.6)",
        runs.iter().map(|d| (d.as_secs_f64() * 100.0).round() / 100.0).collect::<Vec<_>>(),
        raw.as_secs_f64(),
        raw.as_secs_f64() / whole,
    );
    let guest = 1100.0 * (1 << 20) as f64;
    println!(
        "1 GiB region, embedded: sevctl peak RSS {} MiB = {:.2} of the guest's 1100 MiB (target 1.1)",
        peak_kib / 1024,
        (peak_kib as f64 * 1024.0) / guest
    );

    let sevd = Sevd::start();
    let node = sevd.node();
    let ca = sevd.state_dir.join("ask_ark.cert");
    let device = ["--device", node.to_str().unwrap()];
    let t = run(&[
        &device[..],
        &[
            "launch",
            manifest.to_str().unwrap(),
            "--ca",
            ca.to_str().unwrap(),
        ],
    ]
    .concat());
    println!(
        "1 GiB region, through the daemon: {:.1} s, sevd peak RSS {} MiB",
        t.as_secs_f64(),
        vm_hwm_mib(sevd.pid())
    );

    let n = 11;
    let embedded: Vec<Duration> = (0..n)
        .map(|_| {
            run(&[
                "--emulated",
                "--state-dir",
                st,
                "launch",
                example.to_str().unwrap(),
            ])
        })
        .collect();
    let daemon: Vec<Duration> = (0..n)
        .map(|_| {
            run(&[
                &device[..],
                &[
                    "launch",
                    example.to_str().unwrap(),
                    "--ca",
                    ca.to_str().unwrap(),
                ],
            ]
            .concat())
        })
        .collect();
    let (e, d) = (median(embedded), median(daemon));
    println!("sevctl launch examples/sev-es.yaml, median of {n} runs: embedded {e:.1} ms, through the daemon {d:.1} ms (ratio {:.2})", d / e);
}
