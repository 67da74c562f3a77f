//! Long guest-memory updates, staged a piece at a time outside the firmware's lock: while
//! the firmware works on piece k, piece k+1 is read from the VMM and piece k-1 written back,
//! each on its own thread, so the copies overlap the hashing and the cipher.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use vfs::{CallerMemory, Errno};

use super::vm_memory::Slots;
use crate::memctl::{GuestAddress, GuestMemory, VecGuestMemory};

/// Staged pieces alive at once: one being read, one worked on, one being written back.
const DEPTH: usize = 3;

/// Copies `len` bytes of guest memory at `gpa` out of the VMM's memory into `buf`, for the
/// firmware to work on without touching the VMM's.
pub(super) fn stage_into(
    mut buf: Vec<u8>,
    slots: &Slots,
    mem: &dyn CallerMemory,
    gpa: u64,
    len: u64,
) -> Result<VecGuestMemory, Errno> {
    buf.resize(len as usize, 0);
    slots
        .memory(mem)
        .read(GuestAddress(gpa), &mut buf)
        .map_err(|_| Errno::EFAULT)?;
    Ok(VecGuestMemory::from_region(GuestAddress(gpa), buf))
}

/// Writes a staged span back into the VMM's memory; gives the buffer back for reuse.
pub(super) fn unstage(
    slots: &Slots,
    mem: &dyn CallerMemory,
    gpa: u64,
    staged: VecGuestMemory,
) -> Result<Vec<u8>, Errno> {
    let bytes = staged.into_first_region();
    slots
        .memory(mem)
        .write(GuestAddress(gpa), &bytes)
        .map_err(|_| Errno::EFAULT)?;
    Ok(bytes)
}

/// Runs `work(gpa, len, staged)` on each of `pieces` (guest address, length), in order, each staged and then
/// written back. Stops at the first error, after the pieces before it were written back, as
/// one piece after another would: a piece that cannot be read or written gives EFAULT.
pub(super) fn each_staged(
    slots: &Slots,
    mem: &dyn CallerMemory,
    pieces: &[(u64, u64)],
    mut work: impl FnMut(u64, u64, &VecGuestMemory) -> Result<(), Errno>,
) -> Result<(), Errno> {
    if let [(gpa, len)] = *pieces {
        let staged = stage_into(Vec::new(), slots, mem, gpa, len)?;
        work(gpa, len, &staged)?;
        return unstage(slots, mem, gpa, staged).map(drop);
    }
    let write_failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (free_tx, free_rx) = mpsc::sync_channel::<Vec<u8>>(DEPTH);
        let (staged_tx, staged_rx) = mpsc::sync_channel(DEPTH);
        let (done_tx, done_rx) = mpsc::sync_channel::<(u64, VecGuestMemory)>(DEPTH);
        for _ in 0..DEPTH {
            let _ = free_tx.send(Vec::new());
        }
        s.spawn(move || {
            for &(gpa, len) in pieces {
                let Ok(buf) = free_rx.recv() else { break };
                let staged = stage_into(buf, slots, mem, gpa, len).map(|m| (gpa, len, m));
                let failed = staged.is_err();
                if staged_tx.send(staged).is_err() || failed {
                    break;
                }
            }
        });
        let write_failed = &write_failed;
        let writer = s.spawn(move || {
            for (gpa, staged) in done_rx {
                match unstage(slots, mem, gpa, staged) {
                    // The reader may be gone; the buffer is then simply dropped.
                    Ok(buf) => drop(free_tx.try_send(buf)),
                    Err(e) => {
                        write_failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            Ok(())
        });
        let mut result = Ok(());
        for staged in staged_rx.iter().take(pieces.len()) {
            if write_failed.load(Ordering::Relaxed) {
                break;
            }
            let step = staged.and_then(|(gpa, len, m)| work(gpa, len, &m).map(|()| (gpa, m)));
            match step {
                Ok(done) => {
                    if done_tx.send(done).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        drop(done_tx);
        drop(staged_rx);
        let written = writer.join().unwrap_or(Err(Errno::EFAULT));
        result.and(written)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uapi::kvm::KvmUserspaceMemoryRegion;
    use vfs::{UserAddr, VecMemory};

    const BASE: u64 = 0x10_0000;

    /// A VMM with `pages` pages at user address BASE, mapped at guest address 0, of which
    /// the slot covers only `slot_pages` (the rest is memory the guest does not have).
    fn vmm(pages: u64, slot_pages: u64) -> (Slots, VecMemory) {
        let mem = VecMemory::new(BASE, (pages * 4096) as usize);
        let bytes: Vec<u8> = (0..pages * 4096).map(|i| (i % 251) as u8).collect();
        mem.write(UserAddr(BASE), &bytes).unwrap();
        let mut slots = Slots::default();
        slots
            .set(&KvmUserspaceMemoryRegion {
                slot: 0,
                flags: 0,
                guest_phys_addr: 0,
                memory_size: slot_pages * 4096,
                userspace_addr: BASE,
            })
            .unwrap();
        (slots, mem)
    }

    /// Work that flips every byte of its piece, recording the order it ran in.
    fn flip(
        seen: &mut Vec<u64>,
    ) -> impl FnMut(u64, u64, &VecGuestMemory) -> Result<(), Errno> + '_ {
        |gpa, len, m| {
            seen.push(gpa);
            let mut b = vec![0u8; len as usize];
            m.read(GuestAddress(gpa), &mut b).map_err(|_| Errno::EIO)?;
            b.iter_mut().for_each(|x| *x = !*x);
            m.write(GuestAddress(gpa), &b).map_err(|_| Errno::EIO)
        }
    }

    fn pieces(n: u64) -> Vec<(u64, u64)> {
        (0..n).map(|i| (i * 4096, 4096)).collect()
    }

    #[test]
    fn every_piece_is_worked_on_in_order_and_written_back() {
        for n in [1, 2, 3, 7] {
            let (slots, mem) = vmm(8, 8);
            let before = mem.snapshot();
            let mut seen = vec![];
            each_staged(&slots, &mem, &pieces(n), flip(&mut seen)).unwrap();
            assert_eq!(seen, (0..n).map(|i| i * 4096).collect::<Vec<_>>());
            let after = mem.snapshot();
            let done = (n * 4096) as usize;
            assert!(after[..done].iter().zip(&before).all(|(a, b)| *a == !*b));
            assert_eq!(
                after[done..],
                before[done..],
                "{n} pieces: the rest untouched"
            );
        }
    }

    #[test]
    fn a_piece_outside_guest_memory_stops_after_the_ones_before_it() {
        let (slots, mem) = vmm(8, 3);
        let before = mem.snapshot();
        let mut seen = vec![];
        let r = each_staged(&slots, &mem, &pieces(6), flip(&mut seen));
        assert_eq!(r, Err(Errno::EFAULT));
        assert_eq!(seen, [0, 4096, 8192]);
        let after = mem.snapshot();
        assert!(after[..3 * 4096]
            .iter()
            .zip(&before)
            .all(|(a, b)| *a == !*b));
        assert_eq!(after[3 * 4096..], before[3 * 4096..]);
    }

    #[test]
    fn a_failing_piece_stops_the_rest_and_keeps_what_went_through() {
        let (slots, mem) = vmm(8, 8);
        let before = mem.snapshot();
        let mut seen = vec![];
        let mut inner = flip(&mut seen);
        let r = each_staged(&slots, &mem, &pieces(6), |gpa, len, m| {
            if gpa == 2 * 4096 {
                return Err(Errno::EIO);
            }
            inner(gpa, len, m)
        });
        assert_eq!(r, Err(Errno::EIO));
        let after = mem.snapshot();
        assert!(after[..2 * 4096]
            .iter()
            .zip(&before)
            .all(|(a, b)| *a == !*b));
        assert_eq!(after[2 * 4096..], before[2 * 4096..]);
    }
}
