//! The soak (scripts/soak.sh): a real sevd under load and faults for a given time, then a
//! table of what held. Run as root.
//!
//! `soak <seconds> <workdir>` is the driver: it starts sevd (software backend, a policy and
//! an audit log), keeps eight clients running (re-executions of this program, `soak client
//! <kind> ...`, and `sevctl launch` processes), and meanwhile SIGKILLs clients, sends SIGHUP,
//! SIGKILLs and restarts the daemon, and now and then stops it cleanly. Every few seconds it
//! kills every client and checks that nothing they held is left. It exits non-zero when any
//! check failed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod client;
mod driver;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("client") => client::run(&args[2..]),
        Some(secs) => match (secs.parse::<u64>(), args.get(2)) {
            (Ok(secs), Some(dir)) => driver::run(Duration::from_secs(secs), Path::new(dir)),
            _ => usage(),
        },
        None => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: soak SECONDS WORKDIR   (or: soak client KIND DEVICE_DIR SEED)");
    ExitCode::from(2)
}

/// A line a client prints for the driver.
#[derive(Debug, Clone, PartialEq)]
enum Report {
    /// A command answered by the daemon: its audit name, the errno (0 for success) and the
    /// time it took.
    Done(String, i32, Duration),
    /// A key-changing command is about to be issued.
    Changing,
    /// The platform's PDH ‖ PEK as exported after the last key change, hex SHA-256.
    Keys(String),
}

impl Report {
    fn parse(line: &str) -> Option<Report> {
        let mut f = line.split_whitespace();
        match f.next()? {
            "done" => Some(Report::Done(
                f.next()?.to_string(),
                f.next()?.parse().ok()?,
                Duration::from_micros(f.next()?.parse().ok()?),
            )),
            "changing" => Some(Report::Changing),
            "keys" => Some(Report::Keys(f.next()?.to_string())),
            _ => None,
        }
    }
}

/// A running client and its reports.
struct Client {
    kind: &'static str,
    child: Child,
    /// When it started (a launch's duration is its lifetime).
    started: Instant,
}

/// Reads a client's stdout into the driver's channel as (pid, report).
fn forward(child: &mut Child, tx: &mpsc::Sender<(u32, Report)>) {
    let pid = child.id();
    let Some(out) = child.stdout.take() else {
        return;
    };
    let tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(r) = Report::parse(&line) {
                if tx.send((pid, r)).is_err() {
                    return;
                }
            }
        }
    });
}

fn sibling(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("own path");
    me.parent().expect("bin dir").join(name)
}

fn spawn_client(
    kind: &'static str,
    dev_dir: &Path,
    seed: u64,
    manifest: &Path,
    tx: &mpsc::Sender<(u32, Report)>,
) -> Client {
    let mut cmd = if kind == "launch" {
        let mut c = Command::new(sibling("sevctl"));
        c.arg("--device")
            .arg(dev_dir.join("sev"))
            .arg("launch")
            .arg(manifest);
        c.stdout(Stdio::null());
        c
    } else {
        let mut c = Command::new(std::env::current_exe().expect("own path"));
        c.args(["client", kind]).arg(dev_dir).arg(seed.to_string());
        c.stdout(Stdio::piped());
        c
    };
    cmd.stdin(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn a client");
    forward(&mut child, tx);
    Client {
        kind,
        child,
        started: Instant::now(),
    }
}

/// `p`-th percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Counts per (pid, "command errno") of the audit log's lines.
fn audit_counts(path: &Path) -> HashMap<(u32, String), u64> {
    let mut counts = HashMap::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(pid), Some(cmd), Some(errno)) = (
            v["pid"].as_u64(),
            v["command"].as_str(),
            v["errno"].as_i64(),
        ) {
            *counts
                .entry((pid as u32, format!("{cmd} {errno}")))
                .or_insert(0) += 1;
        }
    }
    counts
}

/// What identifies the platform's keys: SHA-256 of PDH ‖ PEK, in hex.
fn key_digest(pdh: &[u8], chain: &[u8]) -> String {
    let pek = &chain[..chain.len().min(0x824)];
    hex::encode(sevd::crypto::sha256(&[pdh, pek].concat()))
}
