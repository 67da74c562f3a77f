//! `sevctl snp …`: SEV-SNP's platform side. `certificates DIR` writes the ARK, ASK and VCEK
//! of the platform's reported TCB, as a person fetches them from AMD's key server: the
//! embedded platform makes them; a daemon publishes them beside its nodes.

use std::path::Path;

use serde_json::json;

use sevd::certs::x509;
use sevd::kds::{VcekChain, NAMES};
use sevd::paths::DEFAULT_STATE_DIR;
use sevd::platform::Platform;
use uapi::snp::TcbVersion;

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
}

/// A daemon's published chain: beside the node `--device` resolves to, else in its default
/// state directory.
pub fn published(target: &Target) -> Result<VcekChain> {
    let node = std::fs::canonicalize(&target.device).unwrap_or_else(|_| target.device.clone());
    let dirs = [
        node.parent().map(Path::to_path_buf),
        Some(Path::new(DEFAULT_STATE_DIR).to_path_buf()),
    ];
    let dir = dirs
        .into_iter()
        .flatten()
        .find(|d| NAMES.iter().all(|n| d.join(format!("{n}.der")).is_file()))
        .ok_or_else(|| {
            CliError::Other(format!(
                "no certificates published beside {} or in {DEFAULT_STATE_DIR} (sevd publishes them when started with --snp)",
                node.display()
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
    let reported = TcbVersion::from_u64(snp.reported_tcb_version)
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
