//! `sevctl launch MANIFEST`: both roles of a launch, in order, saying what each step does.
//! The owner verifies the platform and makes the session ([`owner`]); the host starts the
//! guest and loads and measures it ([`host`]); the owner checks the measurement and only then
//! releases the secrets; the host injects them and finishes; the guest's and the
//! hypervisor's views of the secret are shown side by side ([`report`]).

mod host;
mod owner;
mod report;
mod snp;

pub use snp::{read_cert_table, serve_guest_device};

use sevd::crypto::Digest;
use sevd::platform::{Platform, Vm};

use crate::error::Result;
use crate::manifest::Manifest;
use crate::migrate::control::Guest;
use crate::select::Target;
pub(crate) use crate::steps::{progress, Log};

/// LAUNCH_UPDATE_DATA is issued in pieces of this size, so progress can be shown.
const PIECE: usize = 8 << 20;

/// Where `--migrate-to` sends the launched guest.
#[derive(Debug, Clone)]
pub struct MigrateTo {
    /// The listening `sevctl receive`.
    pub addr: crate::migrate::Addr,
    /// How long to wait for it.
    pub timeout: std::time::Duration,
}

/// What follows a launch, when asked.
#[derive(Debug, Clone, Copy, Default)]
pub struct After<'a> {
    /// `--attestation-report FILE`.
    pub attestation_report: Option<&'a std::path::Path>,
    /// `--migrate-to ADDR`.
    pub migrate_to: Option<&'a MigrateTo>,
}

/// Runs the launch described by `m` on `p`, then what `after` asks. Returns the guest (for
/// `--keep`).
pub fn launch(
    m: &Manifest,
    target: &Target,
    p: &Platform,
    ca: Option<&std::path::Path>,
    json_out: bool,
    show_secrets: bool,
    after: &After<'_>,
) -> Result<Guest> {
    let migrate = after.migrate_to;
    if m.mode == crate::manifest::Mode::Snp {
        if after.attestation_report.is_some() {
            return Err(crate::error::input(
                "--attestation-report writes SEV's ATTESTATION report; an SEV-SNP guest asks for its own report (SNP_GET_REPORT, --guest-device)",
            ));
        }
        if migrate.is_some() {
            return Err(crate::error::input(
                "SEV-SNP guests do not migrate through SEND/RECEIVE (SNP moves a guest with a migration agent inside it); --migrate-to takes SEV and SEV-ES manifests",
            ));
        }
        let vm = snp::launch(m, target, p, json_out, show_secrets)?;
        return Ok(Guest {
            vm,
            vcpus: 0,
            secret: None,
        });
    }
    let mut log = Log::new(json_out);
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
    let mut secret_area = None;
    let secret = match owner::secret(&mut log, m, ovmf.as_ref(), &session, &blob)? {
        Some(s) => {
            host::inject(&mut log, &vm, &s)?;
            secret_area = Some((s.gpa, s.table.len() as u32));
            report::secret_views(&mut log, &vm, (s.gpa, &s.table), &m.secrets, show_secrets)?
        }
        None => {
            vm.launch_finish()?;
            log.step("host", "LAUNCH_FINISH", "guest RUNNING (no secrets)".into());
            serde_json::Value::Null
        }
    };
    let attestation = match after.attestation_report {
        Some(file) => Some(attest(&mut log, &vm, file)?),
        None => None,
    };
    let guest = Guest {
        vm,
        vcpus: if m.mode == crate::manifest::Mode::SevEs {
            m.vcpus
        } else {
            0
        },
        secret: secret_area,
    };
    let migration = match migrate {
        Some(to) => Some(crate::migrate::send::send(
            &mut log,
            &guest.source(p),
            &to.addr,
            to.timeout,
        )?),
        None => None,
    };
    let vm = &guest.vm;
    report::print(
        &log,
        m,
        p,
        vm,
        &digest,
        &blob,
        secret,
        attestation,
        migration,
    )?;
    Ok(guest)
}

/// ATTESTATION of the running guest over a fresh random MNONCE, written to `file`.
fn attest(log: &mut Log, vm: &Vm, file: &std::path::Path) -> Result<serde_json::Value> {
    let mnonce: [u8; 16] = sevd::crypto::random_bytes()?;
    let report = vm.attestation_report(mnonce)?;
    crate::util::write(file, &report, false)?;
    log.step(
        "host",
        "ATTESTATION",
        format!(
            "report over mnonce {} signed by the PEK, written to {}",
            hex::encode(mnonce),
            file.display()
        ),
    );
    Ok(
        serde_json::json!({ "mnonce": hex::encode(mnonce), "file": file, "report": hex::encode(report) }),
    )
}
