//! The guest owner's steps: verify the platform's chain, make (or take) the session, check
//! the launch measurement, and only then build the secret packet.

use uapi::cert::{decode_chain, Certificate};

use sevd::certs::{CaChain, FullChain, PlatformChain};
use sevd::owner::measurement::{measure, MeasuredPlatform};
use sevd::platform::Platform;
use uapi::psp_sev::SevUserDataStatus;

use super::Log;
use crate::error::{input, CliError, Result};
use crate::manifest::{Manifest, Placement};
use crate::owner_cmds::{new_session, secret_packet, OwnerSession};
use crate::select::Target;
use crate::util;
use sevd::owner::ovmf::Ovmf;
use sevd::owner::tables;

/// The platform's chain, up to AMD's part, must verify; returns the PDH to make the session
/// for.
pub(super) fn verify_platform(
    log: &mut Log,
    m: &Manifest,
    target: &Target,
    p: &Platform,
    ca: Option<&std::path::Path>,
) -> Result<Certificate> {
    let (pdh_bytes, chain) = p.pdh_cert_export()?;
    let certs = decode_chain(&chain, 3).map_err(|e| CliError::Attestation(e.to_string()))?;
    let pdh = Certificate::decode(&pdh_bytes).map_err(|e| CliError::Attestation(e.to_string()))?;
    let ca_file = target.ca_file(ca.or(m.ca.as_deref())).ok_or_else(|| {
        CliError::Attestation(
            "no ASK ‖ ARK to verify the platform with (sevd publishes <mountpoint>/ask_ark.cert and <state-dir>/ask_ark.cert); give --ca"
                .into(),
        )
    })?;
    let (ask, ark) = crate::platform_cmds::read_ca(&ca_file)?;
    let full = FullChain {
        ca: CaChain { ask, ark },
        platform: PlatformChain {
            pdh: pdh.clone(),
            pek: certs[0].clone(),
            oca: certs[1].clone(),
            cek: certs[2].clone(),
        },
    };
    full.verify().map_err(|e| {
        CliError::Attestation(format!(
            "the platform's certificate chain does not verify: {e}"
        ))
    })?;
    log.step(
        "owner",
        "verify chain",
        format!(
            "ARK → ASK → CEK → PEK ← OCA, PEK → PDH: valid ({})",
            ca_file.display()
        ),
    );
    Ok(pdh)
}

/// The manifest's session files, or a fresh session wrapped for the PDH.
pub(super) fn session(log: &mut Log, m: &Manifest, pdh: &Certificate) -> Result<OwnerSession> {
    match &m.session {
        Some(files) => {
            let s = session_from_files(files)?;
            let from = files.session.display().to_string();
            log.step(
                "owner",
                "session",
                format!("policy {:#x}, from {from}", m.policy),
            );
            Ok(s)
        }
        None => {
            let s = new_session(pdh, m.policy)?;
            let what = format!("policy {:#x}, fresh TEK/TIK wrapped for the PDH", m.policy);
            log.step("owner", "session", what);
            Ok(s)
        }
    }
}

/// A session made beforehand by `sevctl session` (ours or virtee's).
fn session_from_files(f: &crate::manifest::SessionFiles) -> Result<OwnerSession> {
    let text = |p: &std::path::Path| -> Result<Vec<u8>> {
        let t = std::fs::read_to_string(p).map_err(|e| input(format!("{}: {e}", p.display())))?;
        util::unb64(&p.display().to_string(), &t)
    };
    let key = |p: &std::path::Path| -> Result<zeroize::Zeroizing<[u8; 16]>> {
        let b = util::read_secret("session key", p)?;
        let k: [u8; 16] = b
            .as_slice()
            .try_into()
            .map_err(|_| input(format!("{}: not 16 bytes", p.display())))?;
        Ok(zeroize::Zeroizing::new(k))
    };
    Ok(OwnerSession {
        godh: text(&f.godh)?,
        session: text(&f.session)?,
        keys: sevd::owner::session::TransportKeys {
            tek: key(&f.tek)?,
            tik: key(&f.tik)?,
        },
    })
}

/// The measurement must be the expected one before any secret leaves: MEASURE is recomputed
/// from the expected launch digest (the manifest's, or `auto` as measured alongside) with the
/// session's TIK. Returns the digest.
pub(super) fn check_measurement(
    log: &mut Log,
    m: &Manifest,
    status: &SevUserDataStatus,
    session: &OwnerSession,
    auto: [u8; 32],
    blob: &[u8; 48],
) -> Result<[u8; 32]> {
    let digest = m.expected_digest.unwrap_or(auto);
    let platform = MeasuredPlatform {
        api_major: status.api_major,
        api_minor: status.api_minor,
        build: status.build,
    };
    let mnonce: [u8; 16] = blob[32..]
        .try_into()
        .map_err(|_| CliError::Other("short measurement".into()))?;
    let expected = measure(&session.keys.tik, platform, m.policy, &digest, &mnonce)?;
    if !sevd::crypto::mac_eq(&expected, &blob[..32]) {
        return Err(CliError::Attestation(format!(
            "the launch measurement does not match: expected launch digest {} gives measure {}, the platform reported {}; no secret was released",
            hex::encode(digest),
            hex::encode(expected),
            hex::encode(&blob[..32])
        )));
    }
    log.step(
        "owner",
        "verify measurement",
        format!(
            "launch digest {} ({}) matches",
            hex::encode(digest),
            if m.expected_digest.is_some() {
                "given"
            } else {
                "auto"
            }
        ),
    );
    Ok(digest)
}

/// A secret table on its way into the guest: where it goes, and the owner's packet.
pub(super) struct SecretPacket {
    /// Guest address of the table.
    pub gpa: u64,
    /// The plaintext table (to compare with what the guest reads).
    pub table: zeroize::Zeroizing<Vec<u8>>,
    /// LAUNCH_SECRET's header.
    pub header: Vec<u8>,
    /// The encrypted table.
    pub payload: Vec<u8>,
}

/// The manifest's secret table and the guest address it goes to.
pub(super) fn secret_table(
    m: &Manifest,
    ovmf: Option<&Ovmf>,
) -> Result<(u64, zeroize::Zeroizing<Vec<u8>>)> {
    let entries: Vec<(String, &[u8])> = m
        .secrets
        .iter()
        .map(|s| (s.guid.clone(), s.data.as_slice()))
        .collect();
    let table = tables::secret_table(&entries)?;
    let gpa = match m.placement {
        Placement::Address(a) => a,
        Placement::Ovmf => {
            let (base, size) = ovmf
                .and_then(|t| t.secret_area())
                .ok_or_else(|| input("the OVMF image has no secret area; set secrets.placement"))?;
            if table.len() > size as usize {
                return Err(input(format!(
                    "the secret table ({} bytes) does not fit OVMF's secret area ({size} bytes)",
                    table.len()
                )));
            }
            base as u64
        }
    };
    Ok((gpa, table))
}

/// The secret table and its packet, bound to the measurement; `None` without secrets.
pub(super) fn secret(
    log: &mut Log,
    m: &Manifest,
    ovmf: Option<&(Vec<u8>, Ovmf)>,
    session: &OwnerSession,
    blob: &[u8; 48],
) -> Result<Option<SecretPacket>> {
    if m.secrets.is_empty() {
        return Ok(None);
    }
    let (gpa, table) = secret_table(m, ovmf.map(|(_, t)| t))?;
    let measure_out: [u8; 32] = blob[..32]
        .try_into()
        .map_err(|_| CliError::Other("short measurement".into()))?;
    let (header, payload) = secret_packet(
        &session.keys.tek,
        &session.keys.tik,
        &measure_out,
        sevd::crypto::random_bytes()?,
        &table,
    )?;
    log.step(
        "owner",
        "secret",
        format!(
            "{} entries, {} bytes, packet MAC bound to the measurement",
            m.secrets.len(),
            table.len()
        ),
    );
    Ok(Some(SecretPacket {
        gpa,
        table,
        header,
        payload,
    }))
}
