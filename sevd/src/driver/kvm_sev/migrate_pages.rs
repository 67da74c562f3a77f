//! `SEVD_VM_SEND_PAGES` and `SEVD_VM_RECEIVE_PAGES`, this node's extension for a VMM that
//! moves a whole guest: a run of up to `SEVD_PAGES_MAX` pages, each its own
//! SEND_UPDATE_DATA or RECEIVE_UPDATE_DATA of 4096 bytes exactly as KVM's ids 9 and 13 issue
//! them, in one round trip instead of one per page. The caller's memory is read before the
//! firmware is taken and written after it is let go.

use uapi::kvm::{SevdPages, SEVD_PAGES_MAX};
use vfs::{CallerMemory, Errno, UserAddr};

use super::{KvmSev, Vm, PAGE};
use crate::driver::write_bytes;
use crate::firmware::migration::PACKET_HEADER_LEN;
use crate::memctl::{GuestAddress, GuestMemory};

/// A run's pages and headers, reused from run to run.
#[derive(Default)]
pub(super) struct RunBuffers {
    pages: Vec<u8>,
    headers: Vec<u8>,
}

impl RunBuffers {
    /// Both, sized for `n` pages (their old contents are overwritten before use).
    fn sized(&mut self, n: usize) -> (Vec<u8>, Vec<u8>) {
        let mut pages = std::mem::take(&mut self.pages);
        let mut headers = std::mem::take(&mut self.headers);
        pages.resize(n * PAGE as usize, 0);
        headers.resize(n * PACKET_HEADER_LEN, 0);
        (pages, headers)
    }
}

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
        self.run(vm, Errno::ENOTTY, arg, |run, arg| {
            // The guest's memory as the VMM holds it: ciphertext, which becomes the packets.
            run.slots
                .memory(mem)
                .read(GuestAddress(run.gpa), &mut run.pages)
                .map_err(|_| Errno::EFAULT)?;
            self.check_fd(pid, run.fd)?;
            run.headers.clear();
            let r = self.dev().firmware_mut().send_update_run(
                run.handle,
                GuestAddress(run.gpa),
                &mut run.pages,
                &mut run.headers,
            );
            let done = r.map_or_else(|stop| stop.done, |()| run.n);
            write_bytes(mem, arg.hdr_uaddr, &run.headers)?;
            write_bytes(mem, arg.trans_uaddr, &run.pages[..done * PAGE as usize])?;
            arg.done = done as u32;
            run_end(arg, error, r.err().map(|stop| stop.status))
        })
    }

    /// `SEVD_VM_RECEIVE_PAGES`: each packet of the run checked and written into its page
    /// under this guest's key. A packet the firmware refuses (a MAC that fails:
    /// BAD_MEASUREMENT) stops the run there, with the pages before it written and the rest
    /// of the VMM's memory untouched.
    pub(super) fn receive_pages(
        &self,
        vm: &mut Vm,
        mem: &dyn CallerMemory,
        pid: u32,
        arg: &mut SevdPages,
        error: &mut u32,
    ) -> Result<(), Errno> {
        // KVM answers EINVAL here, not ENOTTY, for a VM that is not an SEV guest.
        self.run(vm, Errno::EINVAL, arg, |run, arg| {
            let read =
                |at: u64, into: &mut [u8]| mem.read(UserAddr(at), into).map_err(|_| Errno::EFAULT);
            read(arg.hdr_uaddr, &mut run.headers)?;
            read(arg.trans_uaddr, &mut run.pages)?;
            self.check_fd(pid, run.fd)?;
            let r = self.dev().firmware_mut().receive_update_run(
                run.handle,
                GuestAddress(run.gpa),
                &run.headers,
                &mut run.pages,
            );
            let done = r.map_or_else(|stop| stop.done, |()| run.n);
            if done > 0 {
                run.slots
                    .memory(mem)
                    .write(GuestAddress(run.gpa), &run.pages[..done * PAGE as usize])
                    .map_err(|_| Errno::EFAULT)?;
            }
            arg.done = done as u32;
            run_end(arg, error, r.err().map(|stop| stop.status))
        })
    }

    /// Runs `work` on a run of an SEV or SEV-ES VM (`not_sev` otherwise), in the VM's run
    /// buffers, which it keeps for the next run.
    fn run(
        &self,
        vm: &mut Vm,
        not_sev: Errno,
        arg: &mut SevdPages,
        work: impl FnOnce(&mut Run<'_>, &mut SevdPages) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        let sev = Self::sev(vm).ok().filter(|s| !s.snp).ok_or(not_sev)?;
        let (handle, fd) = (sev.handle, sev.fd);
        let gpa = run_gpa(vm, arg)?;
        let n = arg.npages as usize;
        let (pages, headers) = vm.run.sized(n);
        let mut run = Run {
            slots: &vm.slots,
            handle,
            fd,
            gpa,
            n,
            pages,
            headers,
        };
        let r = work(&mut run, arg);
        vm.run = RunBuffers {
            pages: run.pages,
            headers: run.headers,
        };
        r
    }
}

/// One run in progress: the VM's slots and guest, where it starts, and its buffers.
struct Run<'a> {
    slots: &'a super::Slots,
    handle: u32,
    fd: u32,
    gpa: u64,
    n: usize,
    pages: Vec<u8>,
    headers: Vec<u8>,
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
