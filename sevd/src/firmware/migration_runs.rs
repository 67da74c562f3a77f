//! Runs of whole pages, for a VMM that moves a guest (the node's `SEVD_VM_SEND_PAGES` and
//! `SEVD_VM_RECEIVE_PAGES`). Each page is exactly one SEND_UPDATE_DATA or RECEIVE_UPDATE_DATA
//! of 4096 bytes: the same checks, the same packet, the same status. The work is done in
//! place on one buffer, so a page's plaintext exists only between the two ciphers that
//! replace it, and the transport keys are prepared once per run instead of once per page.

use zeroize::{Zeroize, Zeroizing};

use uapi::Status;

use super::super::cores::{per_page, Stopped};
use super::super::guest::GuestState;
use super::super::{internal, Firmware};
use super::{FLAG_COMPRESSED, PACKET_HEADER_LEN};
use crate::crypto::{aes128_ctr_in_place, mac_eq, HmacKey};
use crate::memctl::GuestAddress;

/// A page.
const PAGE: usize = 4096;

/// A run that stopped: the pages done before the one that failed, and its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunStop {
    /// Pages done, in order.
    pub done: usize,
    /// Why the next page failed.
    pub status: Status,
}

fn at_start(status: Status) -> RunStop {
    RunStop { done: 0, status }
}

/// The run's keys: the TEK, and the TIK ready for HMAC.
struct RunKeys {
    tek: Zeroizing<[u8; 16]>,
    mac: HmacKey,
}

/// The packet MAC of §4.3 with a prepared key.
fn mac(key: &HmacKey, flags: u32, iv: &[u8], trans: &[u8]) -> [u8; 32] {
    let len = (trans.len() as u32).to_le_bytes();
    key.mac(&[
        &[super::CTX_DATA],
        &flags.to_le_bytes(),
        iv,
        &len,
        &len,
        trans,
    ])
}

impl Firmware {
    /// The guest's ASID and keys if `handle` is in `state`, as each page would find them.
    fn run_guest(&self, handle: u32, state: GuestState) -> Result<(u32, RunKeys), Status> {
        let guest = self.guest(handle)?;
        if guest.state != state {
            return Err(Status::InvalidGuestState);
        }
        let asid = guest.asid.ok_or(Status::Inactive)?;
        let keys = guest.keys.as_ref().ok_or(Status::InvalidGuestState)?;
        let mac = HmacKey::new(&keys.tik[..]).map_err(|e| internal("TIK", e))?;
        Ok((
            asid,
            RunKeys {
                tek: keys.tek.clone(),
                mac,
            },
        ))
    }

    /// SEND_UPDATE_DATA of each page of `buf`, which holds guest memory from `gpa` as the
    /// hypervisor sees it and leaves holding the transport bytes; the headers are appended
    /// to `headers`. Pages are spread over the cores; the run stops at the lowest page that
    /// fails, and only the pages before it count (later ones may have been sealed too).
    pub fn send_update_run(
        &mut self,
        handle: u32,
        gpa: GuestAddress,
        buf: &mut [u8],
        headers: &mut Vec<u8>,
    ) -> Result<(), RunStop> {
        self.require_working().map_err(at_start)?;
        let (asid, keys) = self
            .run_guest(handle, GuestState::Supdate)
            .map_err(at_start)?;
        if buf.len() % PAGE != 0 {
            return Err(at_start(Status::InvalidLength));
        }
        if gpa.0 % 16 != 0 {
            return Err(at_start(Status::InvalidAddress));
        }
        let n = buf.len() / PAGE;
        let mut ivs = vec![[0u8; 16]; n];
        self.rng
            .fill(ivs.as_flattened_mut())
            .map_err(|e| at_start(internal("TRNG", e)))?;
        let mut out = vec![[0u8; PACKET_HEADER_LEN]; n];
        let memctl = &self.memctl;
        let sealed = per_page(buf, &mut out, |i, page, header| {
            let at = GuestAddress(gpa.0 + (i * PAGE) as u64);
            if let Err(e) = memctl.decrypt(asid, at, page) {
                page.zeroize();
                return Err(internal("SEND_UPDATE_DATA", e));
            }
            aes128_ctr_in_place(&keys.tek, &ivs[i], page);
            header[4..20].copy_from_slice(&ivs[i]);
            header[20..].copy_from_slice(&mac(&keys.mac, 0, &ivs[i], page));
            Ok(())
        });
        let done = sealed.as_ref().map_or_else(|s| s.page, |()| n);
        headers.extend_from_slice(out[..done].as_flattened());
        sealed.map_err(|s| run_stop(s, "SEND_UPDATE_DATA"))
    }

    /// RECEIVE_UPDATE_DATA of each packet of a run: `headers` holds one 52-byte header per
    /// page, `buf` the transport bytes, and leaves holding the pages from `gpa` under this
    /// guest's key, as far as the run went. A packet whose MAC fails stops the run with its
    /// page untouched; pages after it, which other cores may have opened, do not count.
    pub fn receive_update_run(
        &mut self,
        handle: u32,
        gpa: GuestAddress,
        headers: &[u8],
        buf: &mut [u8],
    ) -> Result<(), RunStop> {
        let (asid, keys) = self
            .run_guest(handle, GuestState::Rupdate)
            .map_err(at_start)?;
        let n = buf.len() / PAGE;
        if buf.len() % PAGE != 0 || headers.len() < n * PACKET_HEADER_LEN {
            return Err(at_start(Status::InvalidLength));
        }
        if gpa.0 % 16 != 0 {
            return Err(at_start(Status::InvalidAddress));
        }
        let mut packets: Vec<&[u8]> = headers.chunks_exact(PACKET_HEADER_LEN).take(n).collect();
        let opened = per_page(buf, &mut packets, |i, page, header| {
            let flags = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            if flags & FLAG_COMPRESSED != 0 {
                return Err(Status::Unsupported);
            }
            let iv: &[u8; 16] = header[4..20].try_into().unwrap_or(&[0; 16]);
            if !mac_eq(&mac(&keys.mac, flags, iv, page), &header[20..]) {
                return Err(Status::BadMeasurement);
            }
            aes128_ctr_in_place(&keys.tek, iv, page);
            let at = GuestAddress(gpa.0 + (i * PAGE) as u64);
            self.memctl.encrypt(asid, at, page).map_err(|e| {
                page.zeroize();
                internal("RECEIVE_UPDATE_DATA", e)
            })
        });
        opened.map_err(|s| run_stop(s, "RECEIVE_UPDATE_DATA"))
    }
}

/// A run stopped at a page: its status, or an internal error if its thread panicked.
fn run_stop(s: Stopped<Status>, command: &str) -> RunStop {
    RunStop {
        done: s.page,
        status: s
            .error
            .unwrap_or_else(|| internal(command, "a worker thread panicked")),
    }
}

#[cfg(test)]
#[path = "migration_runs_tests.rs"]
mod tests;
