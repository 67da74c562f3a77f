//! `SEVD_VM_SEND_PAGES` and `SEVD_VM_RECEIVE_PAGES`, this node's extension for a VMM that
//! moves a whole guest: a run of up to `SEVD_PAGES_MAX` pages, each its own
//! SEND_UPDATE_DATA or RECEIVE_UPDATE_DATA of 4096 bytes exactly as KVM's ids 9 and 13 issue
//! them, in one round trip instead of one per page. The caller's memory is read before the
//! firmware is taken and written after it is let go.

use uapi::kvm::{SevdPages, SEVD_PAGES_MAX};
use vfs::{CallerMemory, Errno, UserAddr};

use super::{stage, KvmSev, Vm, PAGE};
use crate::driver::stage_pipe::unstage;
use crate::driver::write_bytes;
use crate::firmware::migration::PACKET_HEADER_LEN;
use crate::memctl::GuestAddress;

/// The run's guest address, or EINVAL for an empty or too long run, an unaligned address, or
/// null buffers; EFAULT for a run not wholly in one memory slot.
fn run_gpa(vm: &Vm, arg: &SevdPages) -> Result<u64, Errno> {
    if arg.npages == 0
        || arg.npages > SEVD_PAGES_MAX
        || arg.guest_uaddr % PAGE != 0
        || arg.hdr_uaddr == 0
        || arg.trans_uaddr == 0
    {
        return Err(Errno::EINVAL);
    }
    match vm
        .slots
        .translate(arg.guest_uaddr, arg.npages as u64 * PAGE)?[..]
    {
        [(gpa, _)] => Ok(gpa.0),
        _ => Err(Errno::EFAULT),
    }
}

impl KvmSev {
    /// `SEVD_VM_SEND_PAGES`: every page of the run sealed for the target, headers and
    /// transport buffers written out for the pages done. A page the firmware refuses stops
    /// the run there: EIO, its status in `error`, the pages before it in `done`.
    pub(super) fn send_pages(
        &self,
        vm: &mut Vm,
        mem: &dyn CallerMemory,
        pid: u32,
        arg: &mut SevdPages,
        error: &mut u32,
    ) -> Result<(), Errno> {
        let sev = Self::sev(vm).ok().filter(|s| !s.snp).ok_or(Errno::ENOTTY)?;
        let gpa = run_gpa(vm, arg)?;
        let n = arg.npages as usize;
        let staged = stage(&vm.slots, mem, gpa, n as u64 * PAGE)?;
        self.check_fd(pid, sev.fd)?;
        let mut headers = Vec::with_capacity(n * PACKET_HEADER_LEN);
        let mut trans = Vec::with_capacity(n * PAGE as usize);
        let mut failed = None;
        {
            let mut dev = self.dev();
            let fw = dev.firmware_mut();
            for i in 0..n {
                let mut hdr_len = PACKET_HEADER_LEN as u32;
                let at = GuestAddress(gpa + i as u64 * PAGE);
                match fw.send_update_data(sev.handle, &mut hdr_len, at, 4096, 4096, &staged) {
                    Ok(packet) => {
                        headers.extend_from_slice(&packet.header);
                        trans.extend_from_slice(&packet.trans);
                    }
                    Err(status) => {
                        failed = Some(status);
                        break;
                    }
                }
            }
        }
        write_bytes(mem, arg.hdr_uaddr, &headers)?;
        write_bytes(mem, arg.trans_uaddr, &trans)?;
        arg.done = (headers.len() / PACKET_HEADER_LEN) as u32;
        run_end(arg, error, failed)
    }

    /// `SEVD_VM_RECEIVE_PAGES`: each packet of the run checked and written into its page
    /// under this guest's key. A packet the firmware refuses (a MAC that fails:
    /// BAD_MEASUREMENT) stops the run there, with the pages before it written.
    pub(super) fn receive_pages(
        &self,
        vm: &mut Vm,
        mem: &dyn CallerMemory,
        pid: u32,
        arg: &mut SevdPages,
        error: &mut u32,
    ) -> Result<(), Errno> {
        let sev = Self::sev(vm).ok().filter(|s| !s.snp).ok_or(Errno::EINVAL)?;
        let gpa = run_gpa(vm, arg)?;
        let n = arg.npages as usize;
        let read = |at: u64, len: usize| mem.read_vec(UserAddr(at), len).map_err(|_| Errno::EFAULT);
        let headers = read(arg.hdr_uaddr, n * PACKET_HEADER_LEN)?;
        let trans = read(arg.trans_uaddr, n * PAGE as usize)?;
        let staged = stage(&vm.slots, mem, gpa, n as u64 * PAGE)?;
        self.check_fd(pid, sev.fd)?;
        let mut failed = None;
        let mut done = 0;
        {
            let mut dev = self.dev();
            let fw = dev.firmware_mut();
            let packets = headers
                .chunks_exact(PACKET_HEADER_LEN)
                .zip(trans.chunks_exact(PAGE as usize));
            for (i, (header, page)) in packets.enumerate() {
                let at = GuestAddress(gpa + i as u64 * PAGE);
                if let Err(status) =
                    fw.receive_update_data(sev.handle, header, at, 4096, page, &staged)
                {
                    failed = Some(status);
                    break;
                }
                done += 1;
            }
        }
        // The pages not reached are written back as they were read.
        unstage(&vm.slots, mem, gpa, staged)?;
        arg.done = done;
        run_end(arg, error, failed)
    }
}

/// A run's outcome: SUCCESS, or the status of the page that stopped it (EIO).
fn run_end(
    arg: &mut SevdPages,
    error: &mut u32,
    failed: Option<uapi::Status>,
) -> Result<(), Errno> {
    let r = crate::driver::fw_result(error, failed.map_or(Ok(()), Err));
    arg.error = *error;
    r
}

#[cfg(test)]
#[path = "migrate_pages_tests.rs"]
mod tests;
