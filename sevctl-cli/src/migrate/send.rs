//! The source VMM: the target's certificates in, SEND_START for them, then the session, the
//! layout, every page and save area as the firmware seals them, and END. Only when the
//! target has checked everything does the source SEND_FINISH and commit; on any failure
//! after SEND_START it SEND_CANCELs, so the guest runs here again and may be sent again.
//!
//! Pages are sealed on this thread while a second one writes the runs before them to the
//! socket: at most `WINDOW` runs (1 MiB each) wait between the two.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use sevd::platform::{Platform, TargetCerts, Vm};

use super::stream::{self, PageRun, Record, StreamError, Tally, PAGE, RUN_MAX};
use super::{stream_error, Addr, Conn};
use crate::error::{CliError, Result};
use crate::steps::Log;

/// Runs sealed but not yet written.
const WINDOW: usize = 2;

/// The guest to send.
pub struct Source<'a> {
    /// The platform it runs on.
    pub platform: &'a Platform,
    /// Its VM, RUNNING.
    pub vm: &'a Vm,
    /// SEV-ES save areas to send (0 for SEV).
    pub vcpus: u32,
    /// The secret area, if secrets were injected (shown by the target).
    pub secret: Option<(u64, u32)>,
}

/// Sends `src` to the receiver at `to`. Returns the migration's report.
pub fn send(
    log: &mut Log,
    src: &Source<'_>,
    to: &Addr,
    timeout: Duration,
) -> Result<serde_json::Value> {
    let err = |e: StreamError| stream_error(e, timeout);
    let mut conn = Conn::connect(to, timeout)?;
    stream::write_hello(&mut conn).map_err(|e| err(StreamError::Io(e)))?;
    stream::read_hello(&mut conn).map_err(err)?;
    let (target, _) = Record::read_from(&mut conn).map_err(err)?;
    let Record::Platform {
        pdh,
        plat_certs,
        amd_certs,
    } = target
    else {
        return Err(unexpected(&target, "PLATFORM"));
    };
    log.step(
        "source",
        "connect",
        format!(
            "to {to}: the target's PDH and PEK, OCA, CEK{}",
            if amd_certs.is_empty() {
                ""
            } else {
                ", ASK, ARK"
            }
        ),
    );
    let certs = TargetCerts {
        pdh: &pdh,
        plat_certs: &plat_certs,
        amd_certs: &amd_certs,
    };
    let (policy, session) = match src.vm.send_start(&certs) {
        Ok(s) => s,
        Err(e) => {
            let _ = Record::Abort(e.to_string()).write_to(&mut conn);
            log.step(
                "source",
                "SEND_START",
                format!("refused; the guest stays RUNNING here: {e}"),
            );
            return Err(e.into());
        }
    };
    log.step(
        "source",
        "SEND_START",
        format!("policy {policy:#x}, a session for the target's PDH; guest SUPDATE"),
    );
    let start = Instant::now();
    match stream_out(log, src, &mut conn, policy, session, timeout) {
        Ok(tally) => {
            let secs = start.elapsed().as_secs_f64();
            let bytes = tally.pages * PAGE as u64;
            Ok(json!({
                "to": to.to_string(),
                "policy": policy,
                "pages": tally.pages,
                "bytes": bytes,
                "vmsas": tally.vmsas,
                "seconds": secs,
                "mib_per_s": bytes as f64 / (1 << 20) as f64 / secs.max(1e-9),
            }))
        }
        Err(e) => {
            let _ = Record::Abort(e.reason()).write_to(&mut conn);
            conn.shutdown();
            match src.vm.send_cancel() {
                Ok(()) => log.step("source", "SEND_CANCEL", "guest RUNNING here again".into()),
                Err(c) => log.step("source", "SEND_CANCEL", format!("failed: {c}")),
            }
            Err(e)
        }
    }
}

fn unexpected(r: &Record, wanted: &str) -> CliError {
    match r {
        Record::Abort(why) => CliError::Migration(format!("the target refused: {why}")),
        r => CliError::Migration(format!(
            "the target sent {} where {wanted} belongs",
            r.name()
        )),
    }
}

/// Everything after SEND_START, up to the target's RUNNING.
fn stream_out(
    log: &mut Log,
    src: &Source<'_>,
    conn: &mut Conn,
    policy: u32,
    session: Vec<u8>,
    timeout: Duration,
) -> Result<Tally> {
    let err = |e: StreamError| stream_error(e, timeout);
    let (pdh, _) = src.platform.pdh_cert_export()?;
    let slots = src.vm.slots();
    let runs = src
        .vm
        .touched()
        .map_err(|e| CliError::Other(format!("which guest pages were touched: {e}")))?;
    let total: usize = runs.iter().map(|s| s.1).sum();
    let writer = conn.try_clone().map_err(|e| err(StreamError::Io(e)))?;
    let sent = std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<Record>(WINDOW);
        let (spare_tx, spare_rx) = mpsc::sync_channel::<Vec<u8>>(WINDOW + 2);
        let out = s.spawn(move || write_all(writer, rx, spare_tx));
        let memory = (slots.as_slice(), runs.as_slice(), total);
        let sealed = seal_all(src, memory, (policy, pdh, session), tx, spare_rx);
        let written = out.join().unwrap_or(Err(StreamError::Closed));
        (sealed, written)
    });
    let tally = match sent {
        (Ok(()), Ok(t)) => t,
        // The writer stopped: the target hung up, and may have said why.
        (_, Err(e)) => {
            return Err(match Record::read_from(conn) {
                Ok((r @ Record::Abort(_), _)) => unexpected(&r, "nothing"),
                _ => err(e),
            })
        }
        (Err(e), Ok(_)) => return Err(e),
    };
    tally
        .end()
        .write_to(conn)
        .map_err(|e| err(StreamError::Io(e)))?;
    log.step(
        "source",
        "SEND_UPDATE_DATA",
        format!(
            "{} pages ({} MiB) and {} save areas sealed and sent",
            tally.pages,
            (tally.pages * PAGE as u64) >> 20,
            tally.vmsas
        ),
    );
    let (reply, _) = Record::read_from(conn).map_err(err)?;
    if reply != Record::Ready {
        return Err(unexpected(&reply, "READY"));
    }
    log.step(
        "target",
        "READY",
        "every packet checked, the tally matches".into(),
    );
    src.vm.send_finish()?;
    log.step("source", "SEND_FINISH", "guest SENT here".into());
    Record::Commit
        .write_to(conn)
        .map_err(|e| err(StreamError::Io(e)))?;
    match Record::read_from(conn) {
        Ok((Record::Running, _)) => {
            log.step("target", "RECEIVE_FINISH", "guest RUNNING there".into())
        }
        Ok((r, _)) => return Err(unexpected(&r, "RUNNING")),
        Err(e) => {
            // SENT cannot be undone: say where the guest is.
            return Err(CliError::Migration(format!(
                "the guest was sent and this side finished, but the target did not confirm it runs: {}",
                err(e)
            )));
        }
    }
    Ok(tally)
}

/// Guest memory as sent: its slots, the runs of pages touched in them, and their bytes; each
/// span is (guest address, bytes).
type Memory<'a> = (&'a [(u64, usize)], &'a [(u64, usize)], usize);

/// START, LAYOUT (every slot), the touched pages and the save areas, sealed in order and
/// handed to the writer, which hands the runs' buffers back.
fn seal_all(
    src: &Source<'_>,
    (slots, runs, total): Memory<'_>,
    (policy, pdh, session): (u32, Vec<u8>, Vec<u8>),
    tx: mpsc::SyncSender<Record>,
    spare: mpsc::Receiver<Vec<u8>>,
) -> Result<()> {
    // A send fails only when the writer stopped; its error says why.
    let gone = || CliError::Migration("the connection failed".into());
    tx.send(Record::Start {
        policy,
        pdh,
        session,
    })
    .map_err(|_| gone())?;
    tx.send(Record::Layout(stream::Layout {
        vcpus: src.vcpus,
        slots: slots.iter().map(|&(g, s)| (g, s as u64)).collect(),
        secret: src.secret,
    }))
    .map_err(|_| gone())?;
    let mut done = 0;
    for &(base, size) in runs {
        let pages = (size / PAGE) as u64;
        let mut page = 0;
        while page < pages {
            let n = (pages - page).min(RUN_MAX as u64) as u32;
            let gpa = base + page * PAGE as u64;
            let mut run = PageRun::in_buffer(spare.try_recv().unwrap_or_default(), gpa, n);
            let (headers, trans) = run.parts_mut();
            src.vm.send_pages(gpa, headers, trans).map_err(|e| {
                let at = gpa + e.done as u64 * PAGE as u64;
                CliError::Other(format!("the page at {at:#x}: {}", e.error))
            })?;
            tx.send(Record::Pages(run)).map_err(|_| gone())?;
            page += n as u64;
            done += n as usize * PAGE;
            crate::steps::progress("SEND_UPDATE_DATA", done, total);
        }
    }
    for vcpu in 0..src.vcpus {
        let (header, trans) = src.vm.send_vmsa(vcpu)?;
        tx.send(Record::Vmsa {
            vcpu,
            header,
            trans,
        })
        .map_err(|_| gone())?;
    }
    Ok(())
}

/// The writer: each record as it comes, tallied, until the sealer is done; a run's buffer
/// goes back to the sealer once written.
fn write_all(
    mut conn: Conn,
    rx: mpsc::Receiver<Record>,
    spare: mpsc::SyncSender<Vec<u8>>,
) -> std::result::Result<Tally, StreamError> {
    let mut tally = Tally::default();
    for record in rx {
        let digest = record.write_to(&mut conn).map_err(StreamError::Io)?;
        tally.add(&record, &digest);
        if let Record::Pages(run) = record {
            let _ = spare.try_send(run.into_buffer());
        }
    }
    Ok(tally)
}
