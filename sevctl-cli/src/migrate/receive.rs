//! The destination VMM: this platform's PDH and chain out, then the source's session, the
//! layout (a VM of the same memory slots, initialised for SEV or SEV-ES as the policy says),
//! RECEIVE_START, every packet into its page under the new guest's own key, and END's check.
//! The guest is finished (RECEIVE_FINISH) only once the source has committed; a failure
//! before that discards it here (its VM goes, and with it the handle and the ASID), and the
//! source cancels.
//!
//! A second thread reads records while this one hands the last to the firmware: at most
//! `WINDOW` runs (1 MiB each) wait between the two.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use sevd::owner::tables::read_secret_table;
use sevd::platform::{Platform, Vm};
use uapi::kvm::{KVM_X86_DEFAULT_VM, KVM_X86_SEV_ES_VM, KVM_X86_SEV_VM};

use super::control::Guest;
use super::stream::{self, Layout, Record, StreamError, Tally, PAGE};
use super::{stream_error, Addr, Conn, Listener};
use crate::error::{CliError, Result};
use crate::select::Target;
use crate::steps::Log;

/// Runs read but not yet received.
const WINDOW: usize = 2;
/// SEV-ES save areas a stream may bring (KVM_MAX_VCPUS).
const VCPUS_MAX: u32 = 4096;
/// The ES bit of the guest policy.
const POLICY_ES: u32 = uapi::policy::ES;

/// What `sevctl receive` was asked.
pub struct Options {
    /// Where to listen.
    pub listen: Addr,
    /// How long to wait for the source once it is connected.
    pub timeout: Duration,
    /// Show the secrets' plaintext.
    pub show_secrets: bool,
    /// AMD's ASK ‖ ARK for this platform (default: the one it publishes).
    pub ca: Option<std::path::PathBuf>,
}

/// Receives one guest on `p`, prints what happened (or the `--json` report), and returns
/// the RUNNING guest.
pub fn receive(log: &mut Log, target: &Target, p: &Platform, opts: &Options) -> Result<Guest> {
    let err = |e: StreamError| stream_error(e, opts.timeout);
    // KVM's SEND_START takes the target's AMD chain always, whatever the policy.
    let ca = target.ca_file(opts.ca.as_deref()).ok_or_else(|| {
        crate::error::input(
            "cannot find this platform's ASK ‖ ARK, which the source's SEND_START needs; give --ca FILE",
        )
    })?;
    let amd_certs = crate::util::read("ASK ‖ ARK", &ca)?;
    let listener = Listener::bind(&opts.listen)?;
    // Said on stderr at once, so a script knows when to start the source.
    crate::steps::note(format_args!("listening on {}", listener.local()));
    log.step(
        "target",
        "listen",
        format!("on {}, {}", listener.local(), p.describe()),
    );
    let (mut conn, peer) = listener.accept(opts.timeout)?;
    drop(listener);
    let (pdh, plat_certs) = p.pdh_cert_export()?;
    stream::write_hello(&mut conn).map_err(|e| err(StreamError::Io(e)))?;
    Record::Platform {
        pdh,
        plat_certs,
        amd_certs,
    }
    .write_to(&mut conn)
    .map_err(|e| err(StreamError::Io(e)))?;
    let begun = Instant::now();
    let r = stream::read_hello(&mut conn).map_err(err).and_then(|()| {
        log.step(
            "target",
            "connected",
            format!("from {peer}; sent this platform's PDH and chain"),
        );
        receive_guest(log, p, &mut conn, opts)
    });
    match r {
        Ok(Received {
            vm,
            vcpus,
            secret,
            report,
        }) => {
            finish_report(log, p, &vm, secret, report, opts, begun)?;
            Ok(Guest { vm, vcpus, secret })
        }
        Err(e) => {
            let _ = Record::Abort(e.reason()).write_to(&mut conn);
            conn.shutdown();
            log.step(
                "target",
                "discarded",
                format!("the guest is not kept here: {e}"),
            );
            Err(e)
        }
    }
}

/// START and LAYOUT, the VM, RECEIVE_START, the packets, END, and the commit.
fn receive_guest(log: &mut Log, p: &Platform, conn: &mut Conn, opts: &Options) -> Result<Received> {
    let err = |e: StreamError| stream_error(e, opts.timeout);
    let mut tally = Tally::default();
    let (policy, pdh, session) = match next(conn, &mut tally, opts.timeout)? {
        Record::Start {
            policy,
            pdh,
            session,
        } => (policy, pdh, session),
        r => return Err(misplaced(&r, "START")),
    };
    let layout = match next(conn, &mut tally, opts.timeout)? {
        Record::Layout(l) => l,
        r => return Err(misplaced(&r, "LAYOUT")),
    };
    check_layout(&layout, policy)?;
    // Its memory is reserved, not committed: only the pages the source sends are touched.
    let vm = make_vm(p, &layout, policy)?;
    let handle = vm.receive_start(policy, &pdh, &session)?;
    log.step(
        "target",
        "RECEIVE_START",
        format!(
            "handle {handle}, {} guest, policy {policy:#x}; memory {} MiB in {} slots",
            if policy & POLICY_ES != 0 {
                "SEV-ES"
            } else {
                "SEV"
            },
            layout.slots.iter().map(|s| s.1).sum::<u64>() >> 20,
            layout.slots.len()
        ),
    );
    let start = Instant::now();
    let sent = receive_packets(&vm, conn, &layout, &mut tally, opts.timeout)?;
    let secs = start.elapsed().as_secs_f64();
    if (tally.pages, tally.vmsas) != (sent.pages, sent.vmsas) {
        return Err(CliError::Migration(format!(
            "the stream does not add up: {} pages and {} save areas arrived; the source sent {} and {}",
            tally.pages, tally.vmsas, sent.pages, sent.vmsas,
        )));
    }
    if sent != tally {
        return Err(CliError::Migration(
            "the records differ from what the source sent (END's tally does not match)".into(),
        ));
    }
    if tally.vmsas != layout.vcpus {
        return Err(CliError::Migration(format!(
            "{} save areas arrived for a guest of {} vCPUs",
            tally.vmsas, layout.vcpus
        )));
    }
    log.step(
        "target",
        "RECEIVE_UPDATE_DATA",
        format!(
            "{} pages ({} MiB) and {} save areas, every MAC checked, in {:.0} ms",
            tally.pages,
            (tally.pages * PAGE as u64) >> 20,
            tally.vmsas,
            secs * 1e3
        ),
    );
    Record::Ready
        .write_to(conn)
        .map_err(|e| err(StreamError::Io(e)))?;
    match next(conn, &mut Tally::default(), opts.timeout)? {
        Record::Commit => {}
        r => return Err(misplaced(&r, "COMMIT")),
    }
    log.step(
        "source",
        "COMMIT",
        "the source has finished (SEND_FINISH)".into(),
    );
    vm.receive_finish()?;
    Record::Running
        .write_to(conn)
        .map_err(|e| err(StreamError::Io(e)))?;
    log.step("target", "RECEIVE_FINISH", "guest RUNNING".into());
    let report = json!({
        "handle": handle,
        "policy": policy,
        "pages": tally.pages,
        "bytes": tally.pages * PAGE as u64,
        "vmsas": tally.vmsas,
        "seconds": secs,
        "layout": {
            "slots": layout.slots.iter().map(|(g, s)| json!({"gpa": g, "size": s})).collect::<Vec<_>>(),
            "secret": layout.secret.map(|(g, l)| json!({"gpa": g, "len": l})),
        },
    });
    Ok(Received {
        vm,
        vcpus: layout.vcpus,
        secret: layout.secret,
        report,
    })
}

/// A guest received and RUNNING, where its secret area is, and what its move was.
struct Received {
    vm: Vm,
    vcpus: u32,
    secret: Option<(u64, u32)>,
    report: serde_json::Value,
}

/// The next record, tallied; the source's ABORT as an error with its reason.
fn next(conn: &mut Conn, tally: &mut Tally, timeout: Duration) -> Result<Record> {
    let (r, digest) = Record::read_from(conn).map_err(|e| stream_error(e, timeout))?;
    if let Record::Abort(why) = r {
        return Err(CliError::Migration(format!("the source aborted: {why}")));
    }
    tally.add(&r, &digest);
    Ok(r)
}

fn misplaced(r: &Record, wanted: &str) -> CliError {
    CliError::Migration(format!(
        "the source sent {} where {wanted} belongs",
        r.name()
    ))
}

/// A layout this side can build: slot 0 at guest address 0, whole pages, the secret area
/// inside guest memory, save areas only for SEV-ES.
fn check_layout(l: &Layout, policy: u32) -> Result<()> {
    let bad = |why: String| Err(CliError::Migration(format!("the guest's layout: {why}")));
    match l.slots.first() {
        Some(&(0, _)) => {}
        _ => return bad("the first memory slot must start at guest address 0".into()),
    }
    for &(gpa, size) in &l.slots {
        if size == 0 || size % PAGE as u64 != 0 || gpa % PAGE as u64 != 0 {
            return bad(format!(
                "a slot of {size:#x} bytes at {gpa:#x} is not whole pages"
            ));
        }
        if gpa.checked_add(size).is_none() {
            return bad(format!("a slot of {size:#x} bytes at {gpa:#x} wraps"));
        }
    }
    let es = policy & POLICY_ES != 0;
    if (!es && l.vcpus != 0) || l.vcpus > VCPUS_MAX {
        return bad(format!(
            "{} save areas for {} guest",
            l.vcpus,
            if es { "an SEV-ES" } else { "an SEV" }
        ));
    }
    if let Some((gpa, len)) = l.secret {
        let inside = l
            .slots
            .iter()
            .any(|&(g, s)| gpa >= g && gpa.saturating_add(len as u64) <= g + s);
        if !inside {
            return bad(format!(
                "the secret area at {gpa:#x} is outside guest memory"
            ));
        }
    }
    Ok(())
}

/// A VM with the layout's slots, initialised as the policy's ES bit says (INIT2 on the SEV
/// or SEV-ES type, or the legacy init where the platform has no VM types).
fn make_vm(p: &Platform, l: &Layout, policy: u32) -> Result<Vm> {
    let es = policy & POLICY_ES != 0;
    let vm_type = if !p.offers_vm_types() {
        KVM_X86_DEFAULT_VM
    } else if es {
        KVM_X86_SEV_ES_VM
    } else {
        KVM_X86_SEV_VM
    };
    let vm = p.create_vm_with(vm_type, &l.slots)?;
    if p.offers_vm_types() {
        vm.sev_init2(0, 0)?;
    } else {
        vm.sev_init(es)?;
    }
    Ok(vm)
}

/// PAGES and VMSA records until END, each handed to the firmware as it arrives; returns
/// what END says was sent.
fn receive_packets(
    vm: &Vm,
    conn: &mut Conn,
    layout: &Layout,
    tally: &mut Tally,
    timeout: Duration,
) -> Result<Tally> {
    let err = |e: StreamError| stream_error(e, timeout);
    let reader = conn.try_clone().map_err(|e| err(StreamError::Io(e)))?;
    let r = std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel(WINDOW);
        let (spare_tx, spare_rx) = mpsc::sync_channel::<Vec<u8>>(WINDOW + 2);
        s.spawn(move || read_until_end(reader, tx, spare_rx));
        let r = (|| {
            for item in rx.iter() {
                let (record, digest) = item.map_err(err)?;
                match &record {
                    Record::Pages(run) => {
                        let (headers, trans) = run.parts();
                        if vm.memory(run.gpa, trans.len()).is_none() {
                            return Err(CliError::Migration(format!(
                                "{} pages at {:#x} are outside the guest's layout",
                                run.pages(),
                                run.gpa
                            )));
                        }
                        vm.receive_pages(run.gpa, headers, trans).map_err(|e| {
                            let at = run.gpa + e.done as u64 * PAGE as u64;
                            CliError::Migration(format!("the page at {at:#x}: {}", e.error))
                        })?;
                    }
                    &Record::Vmsa {
                        vcpu,
                        ref header,
                        ref trans,
                    } => {
                        if vcpu >= layout.vcpus {
                            return Err(CliError::Migration(format!(
                                "a save area for vCPU {vcpu} of a guest with {}",
                                layout.vcpus
                            )));
                        }
                        vm.receive_vmsa(vcpu, header, trans)
                            .map_err(|e| CliError::Migration(format!("vCPU {vcpu}: {e}")))?;
                    }
                    &Record::End {
                        pages,
                        vmsas,
                        tally,
                    } => {
                        return Ok(Tally {
                            pages,
                            vmsas,
                            sum: tally,
                        })
                    }
                    Record::Abort(why) => {
                        return Err(CliError::Migration(format!("the source aborted: {why}")))
                    }
                    r => return Err(misplaced(r, "PAGES, VMSA or END")),
                }
                tally.add(&record, &digest);
                if let Record::Pages(run) = record {
                    let _ = spare_tx.try_send(run.into_buffer());
                }
            }
            Err(err(StreamError::Closed))
        })();
        if r.is_err() {
            // Wakes the reader if it waits on the socket.
            conn.shutdown_read();
        }
        r
    });
    r
}

/// The reader: records until END, ABORT or a failure, each with its digest, read into the
/// buffers of runs already received.
fn read_until_end(
    mut conn: Conn,
    tx: mpsc::SyncSender<std::result::Result<(Record, [u8; 32]), StreamError>>,
    spare: mpsc::Receiver<Vec<u8>>,
) {
    loop {
        let r = Record::read_into(&mut conn, spare.try_recv().unwrap_or_default());
        let last = !matches!(r, Ok((Record::Pages(_) | Record::Vmsa { .. }, _)));
        if tx.send(r).is_err() || last {
            return;
        }
    }
}

/// The guest's view of its secret area, and the closing line or the `--json` report.
fn finish_report(
    log: &mut Log,
    p: &Platform,
    vm: &Vm,
    secret: Option<(u64, u32)>,
    mut report: serde_json::Value,
    opts: &Options,
    begun: Instant,
) -> Result<()> {
    report["platform"] = json!(p.describe());
    report["listen"] = json!(opts.listen.to_string());
    report["secret"] = match secret {
        Some((gpa, len)) => secret_view(log, vm, gpa, len as usize, opts.show_secrets)?,
        None => serde_json::Value::Null,
    };
    let st = vm.guest_status()?;
    report["state"] = json!(st.state);
    if log.json {
        report["steps"] = json!(log.steps);
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| CliError::Other(e.to_string()))?;
        println!("{text}");
    } else {
        crate::steps::say(format_args!(
            "guest received: handle {}, state RUNNING, {} pages, {} ms",
            st.handle,
            report["pages"],
            begun.elapsed().as_millis()
        ));
    }
    Ok(())
}

/// The secret table as the received guest reads it: each entry's GUID and length, the
/// plaintext only with `show_secrets`; and the ciphertext the hypervisor sees.
fn secret_view(
    log: &mut Log,
    vm: &Vm,
    gpa: u64,
    len: usize,
    show_secrets: bool,
) -> Result<serde_json::Value> {
    let guest = zeroize::Zeroizing::new(vm.guest_read(gpa, len)?);
    let host = vm.memory(gpa, len).map(hex::encode).unwrap_or_default();
    let Some(entries) = read_secret_table(&guest) else {
        log.step(
            "guest",
            "reads secret",
            "no secret table at the secret area".into(),
        );
        return Ok(json!({ "gpa": gpa, "entries": null, "hypervisor_view": host }));
    };
    let mut out = vec![];
    for (guid, data) in &entries {
        let mut entry = json!({ "guid": guid, "length": data.len() });
        let said = if show_secrets {
            entry["data"] = json!(hex::encode(data));
            match std::str::from_utf8(data) {
                Ok(t) if t.chars().all(|c| !c.is_control()) => format!("{guid} = {t:?}"),
                _ => format!("{guid} = {}", hex::encode(data)),
            }
        } else {
            format!("{guid}: {} bytes", data.len())
        };
        log.step("guest", "secret entry", said);
        out.push(entry);
    }
    log.step(
        "guest",
        "reads secret",
        format!("plaintext table ({} entries) at {gpa:#x}", entries.len()),
    );
    log.step(
        "host",
        "sees",
        format!("ciphertext {}", &host[..host.len().min(64)]),
    );
    let guest_view = show_secrets.then(|| hex::encode(&*guest));
    Ok(json!({ "gpa": gpa, "entries": out, "guest_view": guest_view, "hypervisor_view": host }))
}
