//! What a launch shows: the secrets as the guest reads them and as the hypervisor sees them,
//! and the closing line or the `--json` report.

use serde_json::json;

use sevd::platform::{Platform, Vm};

use super::Log;
use crate::error::{CliError, Result};
use crate::manifest::Manifest;

/// What the secrets look like to the guest and to the hypervisor. Each entry's GUID, length
/// and whether the guest reads what was sent are shown; its plaintext only with
/// `show_secrets` (`--show-secrets`), so a launch log never holds a secret by default.
pub(super) fn secret_views(
    log: &mut Log,
    vm: &Vm,
    (gpa, table): (u64, &[u8]),
    secrets: &[crate::manifest::Secret],
    show_secrets: bool,
) -> Result<serde_json::Value> {
    let guest = match vm.guest_read(gpa, table.len()) {
        Ok(g) => g,
        Err(sevd::platform::PlatformError::Kvm { why, .. }) => {
            log.step("guest", "reads secret", format!("not shown: {why}"));
            return Ok(json!({ "gpa": gpa, "guest_view": null }));
        }
        Err(e) => return Err(e.into()),
    };
    let host = vm
        .memory(gpa, table.len())
        .map(|m| m.to_vec())
        .unwrap_or_default();
    let mut entries = vec![];
    let mut at = 20usize;
    for s in secrets {
        let len = u32::from_le_bytes(
            guest
                .get(at + 16..at + 20)
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 4]),
        ) as usize;
        let data = guest.get(at + 20..at + len.max(20)).unwrap_or_default();
        let matches = data == s.data.as_slice();
        let mut entry = json!({ "guid": s.guid, "length": data.len(), "matches": matches });
        let said = if show_secrets {
            let shown = match std::str::from_utf8(data) {
                Ok(t) if t.chars().all(|c| !c.is_control()) => format!("{t:?}"),
                _ => hex::encode(data),
            };
            entry["data"] = json!(hex::encode(data));
            format!("{} = {shown}", s.guid)
        } else {
            format!(
                "{}: {} bytes, {}",
                s.guid,
                data.len(),
                if matches { "as sent" } else { "NOT as sent" }
            )
        };
        entries.push(entry);
        log.step("guest", "secret entry", said);
        at += len.max(20);
    }
    let show = |b: &[u8]| hex::encode(&b[..b.len().min(32)]);
    let what = if guest == table {
        "plaintext table"
    } else {
        "unexpected bytes"
    };
    let detail = if show_secrets {
        format!(", first 32 bytes {}", show(&guest))
    } else {
        String::new()
    };
    log.step(
        "guest",
        "reads secret",
        format!("{what} ({} entries{detail})", secrets.len()),
    );
    log.step("host", "sees", format!("ciphertext {}", show(&host)));
    if guest != table {
        return Err(CliError::Other(
            "the guest does not read the secret table that was sent".into(),
        ));
    }
    let guest_view = show_secrets.then(|| hex::encode(&guest));
    Ok(
        json!({ "gpa": gpa, "guest_view": guest_view, "hypervisor_view": hex::encode(&host), "entries": entries }),
    )
}

/// The closing line, or with `--json` the whole report (with `migration` when the guest was
/// sent on).
#[allow(clippy::too_many_arguments)]
pub(super) fn print(
    log: &Log,
    m: &Manifest,
    p: &Platform,
    vm: &Vm,
    digest: &[u8; 32],
    blob: &[u8; 48],
    secret_report: serde_json::Value,
    attestation: Option<serde_json::Value>,
    migration: Option<serde_json::Value>,
) -> Result<()> {
    let json_out = log.json;
    let st = vm.guest_status()?;
    if json_out {
        let report = json!({
            "guest": m.name,
            "platform": p.describe(),
            "handle": st.handle,
            "policy": st.policy,
            "state": st.state,
            "launch_digest": hex::encode(digest),
            "measurement": hex::encode(blob),
            "secret": secret_report,
            "attestation": attestation,
            "migration": migration,
            "steps": log.steps,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| CliError::Other(e.to_string()))?
        );
    } else if let Some(moved) = migration {
        crate::steps::say(format_args!(
            "guest {:?} launched and moved to {}: handle {} here is SENT; {} MiB in {:.0} ms ({:.0} MiB/s); {} ms in all",
            m.name,
            moved["to"].as_str().unwrap_or("?"),
            st.handle,
            moved["bytes"].as_u64().unwrap_or(0) >> 20,
            moved["seconds"].as_f64().unwrap_or(0.0) * 1e3,
            moved["mib_per_s"].as_f64().unwrap_or(0.0),
            log.start.elapsed().as_millis()
        ));
    } else {
        crate::steps::say(format_args!(
            "guest {:?} launched: handle {}, state RUNNING, {} ms",
            m.name,
            st.handle,
            log.start.elapsed().as_millis()
        ));
    }
    Ok(())
}
