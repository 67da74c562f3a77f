//! `sevctl launch MANIFEST`: both roles of a launch, in order, saying what each step does.
//! The owner verifies the platform and makes the session ([`owner`]); the host starts the
//! guest and loads and measures it ([`host`]); the owner checks the measurement and only then
//! releases the secrets; the host injects them and finishes; the guest's and the
//! hypervisor's views of the secret are shown side by side ([`report`]).

mod host;
mod owner;
mod report;
mod snp;

pub use snp::serve_guest_device;

use std::io::{IsTerminal, Write};
use std::time::Instant;

use serde_json::json;

use sevd::crypto::Digest;
use sevd::platform::{Platform, Vm};

use crate::error::Result;
use crate::manifest::Manifest;
use crate::select::Target;

/// LAUNCH_UPDATE_DATA is issued in pieces of this size, so progress can be shown.
const PIECE: usize = 8 << 20;

/// Prints steps; silent with `--json`, which prints one report at the end.
struct Log {
    json: bool,
    steps: Vec<serde_json::Value>,
    start: Instant,
}

impl Log {
    fn step(&mut self, role: &str, what: &str, detail: String) {
        let ms = self.start.elapsed().as_secs_f64() * 1e3;
        if !self.json {
            println!("[{role:>5}] {what:<20} {detail}");
        }
        self.steps
            .push(json!({ "role": role, "step": what, "detail": detail, "ms": ms }));
    }
}

/// A progress bar on a terminal, nothing when stderr is piped.
fn progress(label: &str, done: usize, total: usize) {
    let mut err = std::io::stderr();
    if !err.is_terminal() || total < 2 * PIECE {
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

/// Runs the launch described by `m` on `p`. Returns the running VM (for `--keep`).
pub fn launch(
    m: &Manifest,
    target: &Target,
    p: &Platform,
    ca: Option<&std::path::Path>,
    json_out: bool,
    show_secrets: bool,
) -> Result<Vm> {
    if m.mode == crate::manifest::Mode::Snp {
        return snp::launch(m, target, p, json_out, show_secrets);
    }
    let mut log = Log {
        json: json_out,
        steps: vec![],
        start: Instant::now(),
    };
    let status = p.status()?;
    log.step(
        "host",
        "platform",
        format!(
            "{} (API {}.{} build {})",
            p.describe(),
            status.api_major,
            status.api_minor,
            status.build
        ),
    );
    let pdh = owner::verify_platform(&mut log, m, target, p, ca)?;
    let session = owner::session(&mut log, m, &pdh)?;
    let ovmf = host::read_ovmf(m)?;
    let (mut vm, init) = host::start(&mut log, m, p, ovmf.as_ref(), &session)?;
    let mut measured = sevd::crypto::Sha256::new();
    host::load_images(&mut log, m, &mut vm, ovmf.as_ref(), &mut measured)?;
    host::load_vmsas(&mut log, m, &vm, init, ovmf.as_ref(), &mut measured)?;
    let blob = vm.launch_measure()?;
    log.step(
        "host",
        "LAUNCH_MEASURE",
        format!(
            "measure {}, mnonce {}",
            hex::encode(&blob[..32]),
            hex::encode(&blob[32..])
        ),
    );
    let auto: [u8; 32] = measured.finalize().into();
    let digest = owner::check_measurement(&mut log, m, &status, &session, auto, &blob)?;
    let secret = match owner::secret(&mut log, m, ovmf.as_ref(), &session, &blob)? {
        Some(s) => {
            host::inject(&mut log, &vm, &s)?;
            report::secret_views(&mut log, &vm, (s.gpa, &s.table), &m.secrets, show_secrets)?
        }
        None => {
            vm.launch_finish()?;
            log.step("host", "LAUNCH_FINISH", "guest RUNNING (no secrets)".into());
            serde_json::Value::Null
        }
    };
    report::print(&log, m, p, &vm, &digest, &blob, secret)?;
    Ok(vm)
}
