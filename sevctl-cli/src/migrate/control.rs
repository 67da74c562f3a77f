//! A kept guest that can still be moved: `launch --keep --control PATH` and `receive --keep
//! --control PATH` wait on a Unix socket as well as for Ctrl-C, and `sevctl migrate PATH --to
//! ADDR` asks the process that holds the guest to send it. Only that process can: the guest's
//! memory is its own, and the VM lives as long as its file does.
//!
//! The exchange is one JSON line each way. The order: `{"to": ADDR, "timeout": SECONDS}`.
//! The answer, once the move has succeeded or failed: `{"ok", "exit", "error", "steps",
//! "migration"}`, `exit` being the code the keeper's own `--migrate-to` would have ended with.
//! After a move the keeper ends; after a failure the guest runs on and the keeper waits again.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use sevd::platform::Platform;

use super::send::{send, Source};
use super::{Addr, Listener};
use crate::error::{CliError, Result};
use crate::steps::Log;

/// The longest order a keeper reads.
const ORDER_MAX: u64 = 4096;
/// How long a keeper waits for an order once a client has connected.
const ORDER_WAIT: Duration = Duration::from_secs(10);
/// The longest answer `sevctl migrate` reads (the steps and the report).
const ANSWER_MAX: u64 = 1 << 20;

/// A guest this VMM holds: its VM, its SEV-ES save areas (0 for SEV) and its secret area.
pub struct Guest {
    /// The RUNNING guest's VM.
    pub vm: sevd::platform::Vm,
    /// SEV-ES vCPUs whose save areas go with it.
    pub vcpus: u32,
    /// Where the secrets were injected, if they were.
    pub secret: Option<(u64, u32)>,
}

impl Guest {
    /// The guest as a migration's source on `platform`.
    pub fn source<'a>(&'a self, platform: &'a Platform) -> Source<'a> {
        Source {
            platform,
            vm: &self.vm,
            vcpus: self.vcpus,
            secret: self.secret,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Order {
    to: String,
    timeout: u64,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    ok: bool,
    exit: u8,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    steps: Vec<serde_json::Value>,
    #[serde(default)]
    migration: Option<serde_json::Value>,
}

enum Event {
    Interrupted,
    Order(UnixStream),
}

/// Waits until SIGINT or SIGTERM (`signals`, blocked in this thread) or, with `control`,
/// until a `sevctl migrate` has moved the guest away. Orders that fail leave the guest
/// RUNNING here and are answered with why.
pub fn keep(
    json: bool,
    signals: Option<nix::sys::signal::SigSet>,
    control: Option<&Path>,
    source: Option<Source<'_>>,
) -> Result<()> {
    let (tx, rx) = mpsc::channel();
    // Bound first, so the socket exists when the note says so.
    let listener = match control {
        Some(path) => Some(bind(path)?),
        None => None,
    };
    let waiting = match &listener {
        Some(l) => format!(
            "guest kept; `sevctl migrate {} --to ADDR` moves it, interrupt (Ctrl-C) ends it",
            l.local().trim_start_matches("unix:")
        ),
        None => "guest kept; interrupt (Ctrl-C) to end it".into(),
    };
    crate::steps::note(waiting);
    if let Some(set) = signals {
        let tx = tx.clone();
        // Spawned with the signals blocked, so only `wait` takes them.
        std::thread::spawn(move || {
            let _ = set.wait();
            let _ = tx.send(Event::Interrupted);
        });
    } else {
        return Ok(());
    }
    if let Some(Listener::Unix(l, _)) = &listener {
        let l = l.try_clone().map_err(|e| CliError::Other(e.to_string()))?;
        std::thread::spawn(move || {
            for conn in l.incoming() {
                match conn {
                    Ok(conn) => {
                        if tx.send(Event::Order(conn)).is_err() {
                            break;
                        }
                    }
                    // Out of descriptors, say: wait rather than spin.
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
    }
    while let Ok(event) = rx.recv() {
        let Event::Order(conn) = event else {
            return Ok(());
        };
        if obey(json, conn, source.as_ref()) {
            crate::steps::note("the guest has moved; nothing is kept here any more");
            return Ok(());
        }
    }
    Ok(())
}

/// The control socket at `path`, for this user only (a stale one replaced, as `receive`
/// replaces its own); its file goes when the listener is dropped.
fn bind(path: &Path) -> Result<Listener> {
    Listener::bind_private(path)
}

/// Serves one order; whether the guest has moved.
fn obey(json: bool, mut conn: UnixStream, source: Option<&Source<'_>>) -> bool {
    let answer = match (order(&conn), source) {
        (Err(e), _) => refusal(&e, vec![]),
        (Ok(_), None) => refusal(
            &crate::error::input(
                "this guest is SEV-SNP, which does not migrate through SEND/RECEIVE",
            ),
            vec![],
        ),
        (Ok((to, timeout)), Some(src)) => {
            let mut log = Log::new(json);
            match send(&mut log, src, &to, timeout) {
                Ok(report) => {
                    if json {
                        println!("{}", json!({ "migration": report, "steps": log.steps }));
                    }
                    Answer {
                        ok: true,
                        exit: 0,
                        error: None,
                        steps: log.steps,
                        migration: Some(report),
                    }
                }
                Err(e) => refusal(&e, log.steps),
            }
        }
    };
    let moved = answer.ok;
    if let Ok(mut line) = serde_json::to_vec(&answer) {
        line.push(b'\n');
        // The client may have gone; the guest's fate does not depend on it.
        let _ = conn.write_all(&line);
    }
    moved
}

fn refusal(e: &CliError, steps: Vec<serde_json::Value>) -> Answer {
    crate::steps::note(format_args!("a migrate order failed: {e}"));
    Answer {
        ok: false,
        exit: e.exit_code(),
        error: Some(e.to_string()),
        steps,
        migration: None,
    }
}

/// Reads the order of a client of this user (or root).
fn order(conn: &UnixStream) -> Result<(Addr, Duration)> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let cred = getsockopt(conn, PeerCredentials).map_err(|e| CliError::Other(e.to_string()))?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() != me && cred.uid() != 0 {
        return Err(CliError::Other(format!(
            "uid {} may not move a guest of uid {me}",
            cred.uid()
        )));
    }
    conn.set_read_timeout(Some(ORDER_WAIT))
        .map_err(|e| CliError::Other(e.to_string()))?;
    let mut line = String::new();
    BufReader::new(conn.take(ORDER_MAX))
        .read_line(&mut line)
        .map_err(|e| crate::error::input(format!("no order came: {e}")))?;
    let o: Order = serde_json::from_str(&line)
        .map_err(|e| crate::error::input(format!("not a migrate order: {e}")))?;
    let to = o.to.parse().map_err(crate::error::input)?;
    Ok((to, Duration::from_secs(o.timeout)))
}

/// `sevctl migrate CONTROL --to ADDR`: orders the keeper at `control` to send its guest to
/// `to`, then shows the steps it took, or its report with `--json`.
pub fn migrate(control: &Path, to: &Addr, timeout: Duration, json: bool) -> Result<()> {
    let reach = |e: std::io::Error| {
        CliError::Other(format!(
            "cannot reach a kept guest at {}: {e}",
            control.display()
        ))
    };
    let mut conn = UnixStream::connect(control).map_err(reach)?;
    let mut line = serde_json::to_vec(&Order {
        to: to.to_string(),
        timeout: timeout.as_secs(),
    })
    .map_err(|e| CliError::Other(e.to_string()))?;
    line.push(b'\n');
    conn.write_all(&line).map_err(reach)?;
    let mut answer = String::new();
    BufReader::new((&conn).take(ANSWER_MAX))
        .read_line(&mut answer)
        .map_err(reach)?;
    if answer.is_empty() {
        return Err(CliError::Other(format!(
            "the process keeping the guest at {} ended without answering",
            control.display()
        )));
    }
    let a: Answer = serde_json::from_str(&answer)
        .map_err(|e| CliError::Other(format!("the keeper's answer: {e}")))?;
    let mut log = Log::new(json);
    for s in &a.steps {
        log.replay(s);
    }
    if !a.ok {
        return Err(CliError::Relayed {
            code: a.exit,
            message: a.error.unwrap_or_else(|| "the move failed".into()),
        });
    }
    let moved = a.migration.unwrap_or_default();
    if json {
        println!("{}", json!({ "migration": moved, "steps": log.steps }));
    } else {
        crate::steps::say(format_args!(
            "guest moved to {}: {} MiB in {:.0} ms ({:.0} MiB/s); the keeper has ended",
            moved["to"].as_str().unwrap_or("?"),
            moved["bytes"].as_u64().unwrap_or(0) >> 20,
            moved["seconds"].as_f64().unwrap_or(0.0) * 1e3,
            moved["mib_per_s"].as_f64().unwrap_or(0.0),
        ));
    }
    Ok(())
}
