//! The step log of a launch or a migration: one line per step, as `[role] STEP detail`, or
//! with `--json` nothing until the command's report, which carries the steps.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::json;

/// `-q/--quiet`: only errors and the data asked for are printed.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Sets `-q/--quiet` for the process.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `-q/--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A status line on stdout, unless quiet.
pub fn say(line: impl std::fmt::Display) {
    if !quiet() {
        println!("{line}");
    }
}

/// A note on stderr (`sevctl: ...`), unless quiet.
pub fn note(line: impl std::fmt::Display) {
    if !quiet() {
        eprintln!("sevctl: {line}");
    }
}

/// Prints steps; silent with `--json`, which prints one report at the end.
pub struct Log {
    /// Whether output is JSON.
    pub json: bool,
    /// The steps so far.
    pub steps: Vec<serde_json::Value>,
    /// When the command began.
    pub start: Instant,
    /// When the last step ended.
    last: Instant,
}

impl Log {
    /// An empty log, starting now.
    pub fn new(json: bool) -> Log {
        let now = Instant::now();
        Log {
            json,
            steps: vec![],
            start: now,
            last: now,
        }
    }

    /// A step of `role`, just done: `ms` is when it ended (since the command began),
    /// `duration_ms` how long it took (since the step before ended: the firmware command and
    /// the host's work for it, such as loading the image it measures).
    pub fn step(&mut self, role: &str, what: &str, detail: String) {
        let now = Instant::now();
        let ms = (now - self.start).as_secs_f64() * 1e3;
        let duration_ms = (now - self.last).as_secs_f64() * 1e3;
        self.last = now;
        self.push(json!({
            "role": role,
            "step": what,
            "detail": detail,
            "ms": ms,
            "duration_ms": duration_ms,
        }));
    }

    /// A step another process took and recorded (its `role`, `step` and `detail`), shown as
    /// if this one had.
    pub fn replay(&mut self, step: &serde_json::Value) {
        self.push(step.clone());
    }

    fn push(&mut self, step: serde_json::Value) {
        if !self.json && !quiet() {
            let field = |k: &str| step[k].as_str().unwrap_or("?").to_string();
            let (role, what, detail) = (field("role"), field("step"), field("detail"));
            println!("[{role:>5}] {what:<20} {detail}");
        }
        self.steps.push(step);
    }
}

/// A progress bar on a terminal, for work of 16 MiB and more; nothing when stderr is piped.
pub fn progress(label: &str, done: usize, total: usize) {
    let mut err = std::io::stderr();
    if !err.is_terminal() || total < 16 << 20 {
        return;
    }
    let width = 30;
    let filled = width * done / total.max(1);
    let _ = write!(
        err,
        "\r        {label:<20} [{}{}] {:>3}%",
        "#".repeat(filled),
        ".".repeat(width - filled),
        100 * done / total.max(1)
    );
    if done == total {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}
