//! `sevctl snp …`: SEV-SNP's platform side. `certificates DIR` writes the ARK, ASK and VCEK
//! of the platform's reported TCB, as a person fetches them from AMD's key server: the
//! embedded platform makes them; a daemon publishes them beside its nodes.

use std::path::Path;

use serde_json::json;

use sevd::certs::x509;
use sevd::kds::{VcekChain, NAMES};
use sevd::owner::snp_report::{self, Expected};
use sevd::paths::DEFAULT_STATE_DIR;
use sevd::platform::Platform;

use crate::error::{input, CliError, Result};
use crate::select::Target;
use crate::util;

/// What `snp` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SnpCmd {
    /// Write the ARK, ASK and VCEK (PEM and DER) of the platform's reported TCB into DIR.
    Certificates {
        /// The directory (made if missing).
        dir: std::path::PathBuf,
    },
    /// Verify an attestation report as its owner: the chain to DIR's ARK, the VCEK's
    /// signature, the TCB, and the fields given.
    Verify(VerifyArgs),
}

/// `snp verify`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The report (1184 bytes, as snpguest and `launch --json` give it).
    pub report: std::path::PathBuf,
    /// A directory with ark, ask and vcek (.der or .pem), as `snp certificates` writes them.
    #[arg(long)]
    pub certs: std::path::PathBuf,
    /// The expected MEASUREMENT (96 hex digits).
    #[arg(long)]
    pub measurement: Option<String>,
    /// The expected POLICY (hex or decimal).
    #[arg(long)]
    pub policy: Option<String>,
    /// The expected HOST_DATA (64 hex digits).
    #[arg(long)]
    pub host_data: Option<String>,
    /// The expected REPORT_DATA (128 hex digits).
    #[arg(long)]
    pub report_data: Option<String>,
}

/// A certificate of `dir`: `name.der`, else `name.pem`.
fn load_cert(dir: &Path, name: &str) -> Result<x509::Certificate> {
    let der = dir.join(format!("{name}.der"));
    let path = if der.is_file() {
        der
    } else {
        dir.join(format!("{name}.pem"))
    };
    read_cert(name, &path)
}

/// A certificate in PEM or DER.
pub fn read_cert(what: &str, path: &Path) -> Result<x509::Certificate> {
    let bytes = util::read(what, path)?;
    let bad = |e: String| input(format!("{what}: {}: {e}", path.display()));
    let der = if bytes.starts_with(b"-----BEGIN") {
        der::pem::decode_vec(&bytes)
            .map_err(|e| bad(e.to_string()))?
            .1
    } else {
        bytes
    };
    x509::from_der(&der).map_err(|e| bad(e.to_string()))
}

/// `--name`'s hex value, exactly `N` bytes.
fn hex_arg<const N: usize>(name: &str, given: &Option<String>) -> Result<Option<[u8; N]>> {
    let Some(given) = given else { return Ok(None) };
    hex::decode(given.trim().trim_start_matches("0x"))
        .ok()
        .and_then(|v| v.try_into().ok())
        .map(Some)
        .ok_or_else(|| input(format!("--{name}: {} hex digits expected", 2 * N)))
}

/// `snp verify`: each check said, the first failure exit code 3.
pub fn verify(args: &VerifyArgs, json: bool) -> Result<()> {
    let report = util::read("report", &args.report)?;
    if report.len() < uapi::snp::report::LEN {
        return Err(input(format!(
            "{}: {} bytes, not a report ({} bytes)",
            args.report.display(),
            report.len(),
            uapi::snp::report::LEN
        )));
    }
    let expected = Expected {
        measurement: hex_arg("measurement", &args.measurement)?,
        host_data: hex_arg("host-data", &args.host_data)?,
        report_data: hex_arg("report-data", &args.report_data)?,
        policy: args
            .policy
            .as_deref()
            .map(|p| util::hex_or_int64("--policy", p))
            .transpose()?,
    };
    let chain = VcekChain {
        ark: load_cert(&args.certs, "ark")?,
        ask: load_cert(&args.certs, "ask")?,
        vcek: load_cert(&args.certs, "vcek")?,
    };
    let checks = snp_report::verify(&report, &chain, &expected)
        .map_err(|e| CliError::Attestation(e.to_string()))?;
    if json {
        println!("{}", json!({ "verified": true, "checks": checks }));
    } else {
        for c in &checks {
            crate::steps::say(format_args!("ok  {c}"));
        }
        crate::steps::say("the report verifies");
    }
    Ok(())
}

/// A daemon's published chain: where the sevd behind `--device` publishes its files, else
/// in its default state directory.
pub fn published(target: &Target) -> Result<VcekChain> {
    let beside = sevd::paths::published_dir(&target.device);
    let dir = [beside.clone(), Path::new(DEFAULT_STATE_DIR).to_path_buf()]
        .into_iter()
        .find(|d| NAMES.iter().all(|n| d.join(format!("{n}.der")).is_file()))
        .ok_or_else(|| {
            CliError::Other(format!(
                "no certificates published in {} or in {DEFAULT_STATE_DIR} (sevd publishes them when started with --snp)",
                beside.display()
            ))
        })?;
    let read = |name: &str| -> Result<x509::Certificate> {
        let path = dir.join(format!("{name}.der"));
        x509::from_der(&util::read(name, &path)?)
            .map_err(|e| input(format!("{}: {e}", path.display())))
    };
    Ok(VcekChain {
        ark: read("ark")?,
        ask: read("ask")?,
        vcek: read("vcek")?,
    })
}

/// `snp certificates DIR`.
pub fn certificates(target: &Target, p: &Platform, dir: &Path, json: bool) -> Result<()> {
    let snp = p.snp_status()?.ok_or_else(|| {
        CliError::Other(format!(
            "{} does not offer SEV-SNP (start sevd with --snp)",
            p.describe()
        ))
    })?;
    let reported = p
        .tcb(snp.reported_tcb_version)
        .ok_or_else(|| CliError::Other("the platform reports a TCB with reserved bits".into()))?;
    let chain = match p.vcek_chain() {
        Some(chain) => chain?,
        None => published(target)?,
    };
    chain
        .verify()
        .map_err(|e| CliError::Attestation(e.to_string()))?;
    if chain.vcek_tcb() != Some(reported) {
        return Err(CliError::Other(format!(
            "the published VCEK is for TCB {}, but the platform reports {reported}; restart sevd to publish the current one",
            chain.vcek_tcb().map_or_else(|| "?".into(), |t| t.to_string())
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| input(format!("{}: {e}", dir.display())))?;
    let mut written = vec![];
    for (name, cert) in NAMES.iter().zip([&chain.ark, &chain.ask, &chain.vcek]) {
        let fail = |e: x509::X509Error| CliError::Other(e.to_string());
        let pem = dir.join(format!("{name}.pem"));
        let der = dir.join(format!("{name}.der"));
        util::write(&pem, x509::to_pem(cert).map_err(fail)?.as_bytes(), false)?;
        util::write(&der, &x509::to_der(cert).map_err(fail)?, false)?;
        written.push(pem.display().to_string());
        written.push(der.display().to_string());
    }
    if json {
        println!(
            "{}",
            json!({ "reported_tcb": reported.to_string(), "files": written })
        );
    } else {
        println!(
            "ARK, ASK and the VCEK at TCB {reported} (chain verified) written to {}",
            dir.display()
        );
    }
    Ok(())
}
