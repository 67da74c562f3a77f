//! The platform owner's commands: show, export, verify, generate, provision, reset, rotate,
//! status.

use std::path::Path;

use serde_json::json;
use uapi::ca::CaCertificate;
use uapi::cert::{algo, usage, Certificate, CERT_LEN};
use uapi::psp_sev::{SevUserDataSnpStatus, SEV_STATUS_FLAGS_CONFIG_ES, SEV_STATUS_FLAGS_OWNER};

use sevd::certs::{verify_ca, verify_cek, verify_sev, CaChain, CertError};
use sevd::crypto::ecc::EcKeyPair;
use sevd::platform::Platform;

use crate::error::{input, CliError, Result};
use crate::select::Target;
use crate::util;

/// What `show` shows.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum Show {
    /// The platform flags (owned, es).
    Flags,
    /// The number of guests.
    Guests,
    /// The platform identifier.
    Identifier,
    /// The firmware version.
    Version,
    /// The SEV-SNP TCB: the SPLs installed (current) and those reports claim (reported).
    Tcb,
}

/// A TCB as `[fmc:]bootloader:tee:snp:microcode`.
fn tcb(p: &Platform, v: u64) -> String {
    match p.tcb(v) {
        Some(t) => t.to_string(),
        None => format!("{v:#018x}"),
    }
}

/// The SNP part of `status` and `show tcb`: state, TCBs and flags.
fn snp_json(p: &Platform, st: &SevUserDataSnpStatus) -> serde_json::Value {
    let (bits, guests) = (st.feature_bits, st.guest_count);
    json!({
        "state": if st.state == 1 { "INIT" } else { "UNINIT" },
        "current_tcb": tcb(p, st.current_tcb_version),
        "reported_tcb": tcb(p, st.reported_tcb_version),
        "guests": guests,
        "mask_chip_id": bits & 1 != 0,
        "mask_chip_key": bits & 2 != 0,
        "vlek": bits & 4 != 0,
    })
}

/// `show`.
pub fn show(p: &Platform, what: Show, json: bool) -> Result<()> {
    let st = p.status()?;
    let flags = st.flags;
    let guests = st.guest_count;
    match what {
        Show::Flags => {
            let mut names = vec![];
            if flags & SEV_STATUS_FLAGS_OWNER != 0 {
                names.push("owned");
            }
            if flags & SEV_STATUS_FLAGS_CONFIG_ES != 0 {
                names.push("es");
            }
            if json {
                println!("{}", json!({ "flags": names }));
            } else {
                for n in names {
                    println!("{n}");
                }
            }
        }
        Show::Guests if json => println!("{}", json!({ "guests": guests })),
        Show::Guests => println!("{guests}"),
        Show::Identifier => {
            let id = hex::encode_upper(p.get_id()?);
            if json {
                println!("{}", json!({ "identifier": id }));
            } else {
                println!("{id}");
            }
        }
        Show::Version => {
            let v = format!("{}.{}.{}", st.api_major, st.api_minor, st.build);
            if json {
                println!("{}", json!({ "version": v }));
            } else {
                println!("{v}");
            }
        }
        Show::Tcb => {
            let snp = p.snp_status()?.ok_or_else(|| {
                CliError::Other(
                    "this platform does not offer SEV-SNP (start sevd with --snp)".into(),
                )
            })?;
            if json {
                println!("{}", snp_json(p, &snp));
            } else {
                println!("current:  {}", tcb(p, snp.current_tcb_version));
                println!("reported: {}", tcb(p, snp.reported_tcb_version));
            }
        }
    }
    Ok(())
}

/// `status`: everything at once.
pub fn status(p: &Platform, json: bool) -> Result<()> {
    let st = p.status()?;
    let (flags, guests, build) = (st.flags, st.guest_count, st.build);
    let (api_major, api_minor) = (st.api_major, st.api_minor);
    let state = match st.state {
        0 => "UNINIT",
        1 => "INIT",
        2 => "WORKING",
        _ => "unknown",
    };
    let owner = if flags & SEV_STATUS_FLAGS_OWNER != 0 {
        "external"
    } else {
        "self"
    };
    let es = flags & SEV_STATUS_FLAGS_CONFIG_ES != 0;
    let id = hex::encode_upper(p.get_id()?);
    let snp = p.snp_status()?;
    if json {
        println!(
            "{}",
            json!({
                "snp": snp.as_ref().map(|s| snp_json(p, s)),
                "platform": p.describe(),
                "api": format!("{api_major}.{api_minor}"),
                "build": build,
                "state": state,
                "owner": owner,
                "es": es,
                "guests": guests,
                "identifier": id,
            })
        );
    } else {
        println!("platform:   {}", p.describe());
        println!("firmware:   API {api_major}.{api_minor} build {build}");
        println!(
            "state:      {state}{}",
            if es { ", SEV-ES initialised" } else { "" }
        );
        println!("owner:      {owner}-owned");
        println!("guests:     {guests}");
        println!("identifier: {id}");
        match snp {
            Some(snp) => println!(
                "snp:        {}, TCB {} (reports {})",
                if snp.state == 1 { "INIT" } else { "UNINIT" },
                tcb(p, snp.current_tcb_version),
                tcb(p, snp.reported_tcb_version)
            ),
            None => println!("snp:        not offered"),
        }
    }
    Ok(())
}

/// The platform's chain file: PDH ‖ PEK ‖ OCA ‖ CEK.
fn sev_chain(p: &Platform) -> Result<Vec<u8>> {
    let (pdh, chain) = p.pdh_cert_export()?;
    Ok([pdh, chain].concat())
}

/// `export [--full] FILE`.
pub fn export(
    p: &Platform,
    target: &Target,
    full: bool,
    ca: Option<&Path>,
    dest: &Path,
) -> Result<()> {
    let mut out = sev_chain(p)?;
    if full {
        let ca = target.ca_file(ca).ok_or_else(|| {
            input("--full needs AMD's part of the chain: give --ca ASK_ARK_FILE (sevd writes it to <state-dir>/ask_ark.cert)")
        })?;
        out.extend(util::read("--ca", &ca)?);
    }
    util::write(dest, &out, false)
}

fn decode_cert(what: &str, bytes: &[u8]) -> Result<Certificate> {
    Certificate::decode(bytes).map_err(|e| input(format!("{what}: {e}")))
}

/// `verify [--sev FILE] [--ca FILE] [--oca FILE]`: checks each link and prints the tree.
pub fn verify(
    p: Option<&Platform>,
    target: &Target,
    sev: Option<&Path>,
    oca: Option<&Path>,
    ca: Option<&Path>,
    quiet: bool,
) -> Result<()> {
    let chain = match (sev, p) {
        (Some(f), _) => util::read("--sev", f)?,
        (None, Some(p)) => sev_chain(p)?,
        (None, None) => return Err(input("no chain: give --sev FILE")),
    };
    if chain.len() < 4 * CERT_LEN {
        return Err(input(format!(
            "the chain has {} bytes; a SEV chain (PDH ‖ PEK ‖ OCA ‖ CEK) has {}",
            chain.len(),
            4 * CERT_LEN
        )));
    }
    let cert = |i: usize, what| decode_cert(what, &chain[i * CERT_LEN..(i + 1) * CERT_LEN]);
    let (pdh, pek, mut oca_cert, cek) = (
        cert(0, "PDH")?,
        cert(1, "PEK")?,
        cert(2, "OCA")?,
        cert(3, "CEK")?,
    );
    if let Some(f) = oca {
        oca_cert = decode_cert("--oca", &util::read("--oca", f)?)?;
    }
    // AMD's part: in the chain file (export --full), or --ca, or the platform's.
    let ca_bytes = if chain.len() > 4 * CERT_LEN {
        chain[4 * CERT_LEN..].to_vec()
    } else {
        let f = target
            .ca_file(ca)
            .ok_or_else(|| input("no ASK and ARK: give --ca ASK_ARK_FILE"))?;
        util::read("--ca", &f)?
    };
    let (ask, ark) =
        uapi::ca::decode_ask_ark(&ca_bytes).map_err(|e| input(format!("ASK ‖ ARK: {e}")))?;

    let links: Vec<(&str, std::result::Result<(), CertError>)> = vec![
        ("PEK ⬑ PDH", verify_sev(&pek, "PEK", &pdh, "PDH")),
        ("OCA • ", verify_sev(&oca_cert, "OCA", &oca_cert, "OCA")),
        ("OCA ⬑ PEK", verify_sev(&oca_cert, "OCA", &pek, "PEK")),
        ("CEK ⬑ PEK", verify_sev(&cek, "CEK", &pek, "PEK")),
        ("ASK ⬑ CEK", verify_cek(&ask, &cek)),
        ("ARK ⬑ ASK", verify_ca(&ark, "ARK", &ask, "ASK")),
        (
            "ARK •",
            CaChain {
                ask: ask.clone(),
                ark: ark.clone(),
            }
            .verify(),
        ),
    ];
    let mut failed = vec![];
    for (name, r) in &links {
        if !quiet {
            println!("{} {name}", if r.is_ok() { "✓" } else { "✗" });
        }
        if let Err(e) = r {
            failed.push(e.to_string());
        }
    }
    check_usage(&pdh, usage::PDH, algo::ECDH_SHA256, &mut failed);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Attestation(format!(
            "SEV/CA certificate verification failed: {}",
            failed.join("; ")
        )))
    }
}

fn check_usage(cert: &Certificate, want_usage: u32, want_algo: u32, failed: &mut Vec<String>) {
    if cert.usage != want_usage || cert.algo != want_algo {
        failed.push(format!(
            "certificate usage {:#x}/algo {:#x} is not {want_usage:#x}/{want_algo:#x}",
            cert.usage, cert.algo
        ));
    }
}

/// `generate CERT KEY`: a self-signed OCA and its private key (DER, mode 0600), as sevctl.
pub fn generate(cert: &Path, key: &Path) -> Result<()> {
    let k = EcKeyPair::generate()?;
    let mut oca = k.certificate((0, 0), usage::OCA, algo::ECDSA_SHA256)?;
    k.sign_certificate(&mut oca, usage::OCA, algo::ECDSA_SHA256)?;
    util::write(cert, &oca.encode(), false)?;
    util::write(key, &k.to_der()?, true)
}

/// `provision CERT KEY`: signs the platform's PEK CSR with the OCA key and imports it.
pub fn provision(p: &Platform, cert: &Path, key: &Path) -> Result<()> {
    let oca_bytes = util::read("OCA certificate", cert)?;
    let oca = decode_cert("OCA certificate", &oca_bytes)?;
    let k = EcKeyPair::from_der(&util::read_secret("OCA key", key)?)
        .map_err(|_| input(format!("{}: not a P-384 private key (DER)", key.display())))?;
    let (qx, qy) = k.public()?.coordinates_le()?;
    if oca.ecc_pubkey().map(|(_, x, y)| (x.to_vec(), y.to_vec())) != Some((qx, qy)) {
        return Err(input("the OCA key does not belong to the OCA certificate"));
    }
    let mut pek = decode_cert("PEK CSR", &p.pek_csr()?)?;
    k.sign_certificate(&mut pek, usage::OCA, algo::ECDSA_SHA256)?;
    p.pek_cert_import(&pek.encode(), &oca_bytes)?;
    Ok(())
}

/// Reads an `ask_ark` file.
pub fn read_ca(path: &Path) -> Result<(CaCertificate, CaCertificate)> {
    uapi::ca::decode_ask_ark(&util::read("--ca", path)?)
        .map_err(|e| input(format!("{}: {e}", path.display())))
}
