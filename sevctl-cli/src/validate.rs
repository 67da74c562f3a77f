//! `sevctl validate CHAIN REPORT [--measurement HEX] [--policy N]`: whether the PEK of a
//! platform's chain signed an ATTESTATION report, in virtee sevctl's formats (the chain as
//! `export` writes it, PDH ‖ PEK ‖ OCA ‖ CEK with or without ASK ‖ ARK; the 208-byte report
//! `launch --attestation-report` writes), and whether the report carries the launch digest
//! and the policy the owner expects. The chain's own links are `verify --sev CHAIN`'s
//! business.

use std::path::PathBuf;

use serde_json::json;

use sevd::crypto::ecc::EcPublic;
use uapi::cert::{algo, usage, Certificate, CERT_LEN, SIG_LEN};
use uapi::launch::{AttestationReport, ATTESTATION_REPORT_LEN};

use crate::error::{input, CliError, Result};
use crate::util;

/// `validate`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The platform's chain (PDH ‖ PEK ‖ OCA ‖ CEK [‖ ASK ‖ ARK]), as `export` writes it.
    pub chain: PathBuf,
    /// The 208-byte attestation report.
    pub report: PathBuf,
    /// The launch digest the report must carry (64 hex digits).
    #[arg(long, value_name = "HEX")]
    pub measurement: Option<String>,
    /// The policy the report must carry (decimal or 0x hex).
    #[arg(long)]
    pub policy: Option<String>,
}

/// Checks the report; prints each check (nothing with `quiet`), or one JSON object.
pub fn validate(args: &ValidateArgs, json_out: bool, quiet: bool) -> Result<()> {
    let bytes = util::read("REPORT", &args.report)?;
    if bytes.len() != ATTESTATION_REPORT_LEN {
        return Err(input(format!(
            "{}: {} bytes; an attestation report is {ATTESTATION_REPORT_LEN}",
            args.report.display(),
            bytes.len()
        )));
    }
    let report = AttestationReport::decode(&bytes).map_err(|e| input(e.to_string()))?;
    let pek = chain_pek(args)?;
    let expected_digest = args
        .measurement
        .as_deref()
        .map(|m| {
            hex::decode(m.trim())
                .ok()
                .filter(|d| d.len() == 32)
                .ok_or_else(|| input(format!("--measurement {m:?}: not 64 hex digits")))
        })
        .transpose()?;
    let expected_policy = args
        .policy
        .as_deref()
        .map(|p| util::hex_or_int("--policy", p))
        .transpose()?;

    let mut slot = [0u8; SIG_LEN];
    slot[..report.sig.len()].copy_from_slice(&report.sig);
    let mut checks = vec![(
        "signature",
        report.sig_usage == usage::PEK
            && report.sig_algo == algo::ECDSA_SHA256
            && pek.verify(algo::ECDSA_SHA256, &report.signed_bytes(), &slot),
        "the chain's PEK signed the report".to_string(),
    )];
    if let Some(d) = &expected_digest {
        checks.push((
            "measurement",
            report.launch_digest[..] == d[..],
            format!("launch digest {}", hex::encode(report.launch_digest)),
        ));
    }
    if let Some(p) = expected_policy {
        checks.push((
            "policy",
            report.policy == p,
            format!("policy {:#x}", report.policy),
        ));
    }
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.1)
        .map(|(what, _, said)| match *what {
            "signature" => "the chain's PEK did not sign this report".to_string(),
            "measurement" => format!(
                "the report's {said}, not {}",
                hex::encode(expected_digest.as_deref().unwrap_or_default())
            ),
            _ => format!(
                "the report's {said}, not {:#x}",
                expected_policy.unwrap_or(0)
            ),
        })
        .collect();
    if json_out {
        println!(
            "{}",
            json!({
                "valid": failed.is_empty(),
                "mnonce": hex::encode(report.mnonce),
                "launch_digest": hex::encode(report.launch_digest),
                "policy": report.policy,
                "checks": checks.iter().map(|(what, ok, _)| json!({ "check": what, "ok": ok })).collect::<Vec<_>>(),
                "failures": failed,
            })
        );
    } else if !quiet {
        for (_, ok, said) in &checks {
            println!("{} {said}", if *ok { "✓" } else { "✗" });
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Attestation(failed.join("; ")))
    }
}

/// The chain's PEK key: the second certificate, which must be a PEK.
fn chain_pek(args: &ValidateArgs) -> Result<EcPublic> {
    let chain = util::read("CHAIN", &args.chain)?;
    if chain.len() < 4 * CERT_LEN {
        return Err(input(format!(
            "{}: {} bytes; a SEV chain (PDH ‖ PEK ‖ OCA ‖ CEK, as `export` writes it) has at least {}",
            args.chain.display(),
            chain.len(),
            4 * CERT_LEN
        )));
    }
    let pek = Certificate::decode(&chain[CERT_LEN..2 * CERT_LEN])
        .map_err(|e| input(format!("{}: the PEK: {e}", args.chain.display())))?;
    if pek.usage != usage::PEK {
        return Err(input(format!(
            "{}: the second certificate has usage {:#x}, not the PEK's {:#x}",
            args.chain.display(),
            pek.usage,
            usage::PEK
        )));
    }
    EcPublic::from_certificate(&pek).ok_or_else(|| {
        input(format!(
            "{}: the PEK has no P-384 key",
            args.chain.display()
        ))
    })
}
