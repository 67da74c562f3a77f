//! A VM's memory slots (`KVM_SET_USER_MEMORY_REGION`) and guest memory seen through them:
//! guest physical addresses map to the VMM's own memory, reached with the caller's
//! [`CallerMemory`].

use std::collections::BTreeMap;

use uapi::kvm::KvmUserspaceMemoryRegion;
use vfs::{CallerMemory, Errno, UserAddr};

use crate::memctl::{GuestAddress, GuestMemory, GuestMemoryError};

/// Page size; slots are page-granular, as in KVM.
const PAGE: u64 = 4096;
/// Slots a VM may have.
const MAX_SLOTS: u32 = 512;

/// One memory slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// First guest physical address.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// The VMM's address of the first byte.
    pub uaddr: u64,
}

/// A VM's memory slots.
#[derive(Debug, Default, Clone)]
pub struct Slots {
    slots: BTreeMap<u32, Slot>,
}

impl Slots {
    /// `KVM_SET_USER_MEMORY_REGION`: adds, replaces or (size 0) deletes a slot, with KVM's
    /// checks: EINVAL for unaligned or overflowing ranges, flags and slot ids it does not
    /// take; EEXIST for a range overlapping another slot.
    pub fn set(&mut self, r: &KvmUserspaceMemoryRegion) -> Result<(), Errno> {
        if r.flags != 0 || r.slot >= MAX_SLOTS {
            return Err(Errno::EINVAL);
        }
        if r.memory_size % PAGE != 0
            || r.guest_phys_addr % PAGE != 0
            || r.userspace_addr % PAGE != 0
        {
            return Err(Errno::EINVAL);
        }
        if r.memory_size == 0 {
            self.slots.remove(&r.slot);
            return Ok(());
        }
        let gpa_end = r
            .guest_phys_addr
            .checked_add(r.memory_size)
            .ok_or(Errno::EINVAL)?;
        r.userspace_addr
            .checked_add(r.memory_size)
            .ok_or(Errno::EINVAL)?;
        let overlaps = self
            .slots
            .iter()
            .any(|(&id, s)| id != r.slot && r.guest_phys_addr < s.gpa + s.size && s.gpa < gpa_end);
        if overlaps {
            return Err(Errno::EEXIST);
        }
        self.slots.insert(
            r.slot,
            Slot {
                gpa: r.guest_phys_addr,
                size: r.memory_size,
                uaddr: r.userspace_addr,
            },
        );
        Ok(())
    }

    /// The bytes the slots would hold with `r` applied (for the per-VM memory limit).
    pub fn size_with(&self, r: &KvmUserspaceMemoryRegion) -> u64 {
        self.slots
            .iter()
            .filter(|(&id, _)| id != r.slot)
            .map(|(_, s)| s.size)
            .fold(r.memory_size, u64::saturating_add)
    }

    /// The slot holding guest address `gpa`.
    pub(crate) fn by_gpa(&self, gpa: u64) -> Option<&Slot> {
        self.slots
            .values()
            .find(|s| gpa >= s.gpa && gpa - s.gpa < s.size)
    }

    /// The slot holding user address `uaddr`.
    fn by_uaddr(&self, uaddr: u64) -> Option<&Slot> {
        self.slots
            .values()
            .find(|s| uaddr >= s.uaddr && uaddr - s.uaddr < s.size)
    }

    /// Splits the user range `uaddr`+`len` into guest-physically contiguous pieces
    /// (what KVM's pinning and `get_num_contig_pages` do): EINVAL for an empty or
    /// overflowing range, EFAULT where it is not guest memory.
    pub fn translate(&self, uaddr: u64, len: u64) -> Result<Vec<(GuestAddress, u64)>, Errno> {
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let end = uaddr.checked_add(len).ok_or(Errno::EINVAL)?;
        let mut out: Vec<(GuestAddress, u64)> = vec![];
        let mut at = uaddr;
        while at < end {
            let s = self.by_uaddr(at).ok_or(Errno::EFAULT)?;
            let n = (s.uaddr + s.size).min(end) - at;
            let gpa = s.gpa + (at - s.uaddr);
            match out.last_mut() {
                Some((g, l)) if g.0 + *l == gpa => *l += n,
                _ => out.push((GuestAddress(gpa), n)),
            }
            at += n;
        }
        Ok(out)
    }

    /// Guest memory through these slots and the caller's memory.
    pub fn memory<'a>(&'a self, caller: &'a dyn CallerMemory) -> VmMemory<'a> {
        VmMemory {
            slots: self,
            caller,
        }
    }
}

/// Guest memory of a VM whose VMM is the caller.
pub struct VmMemory<'a> {
    slots: &'a Slots,
    caller: &'a dyn CallerMemory,
}

impl VmMemory<'_> {
    /// Runs `f` on each (user address, offset, length) piece of `gpa`+`len`.
    fn each(
        &self,
        gpa: GuestAddress,
        len: usize,
        mut f: impl FnMut(u64, usize, usize) -> Result<(), ()>,
    ) -> Result<(), GuestMemoryError> {
        let err = GuestMemoryError { gpa: gpa.0, len };
        let end = gpa.0.checked_add(len as u64).ok_or(err)?;
        let mut at = gpa.0;
        while at < end {
            let s = self.slots.by_gpa(at).ok_or(err)?;
            let n = ((s.gpa + s.size).min(end) - at) as usize;
            f(s.uaddr + (at - s.gpa), (at - gpa.0) as usize, n).map_err(|_| err)?;
            at += n as u64;
        }
        Ok(())
    }
}

impl GuestMemory for VmMemory<'_> {
    fn read(&self, gpa: GuestAddress, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        let len = buf.len();
        self.each(gpa, len, |uaddr, off, n| {
            self.caller
                .read(UserAddr(uaddr), &mut buf[off..off + n])
                .map_err(drop)
        })
    }

    fn write(&self, gpa: GuestAddress, data: &[u8]) -> Result<(), GuestMemoryError> {
        self.each(gpa, data.len(), |uaddr, off, n| {
            self.caller
                .write(UserAddr(uaddr), &data[off..off + n])
                .map_err(drop)
        })
    }

    fn check_range(&self, gpa: GuestAddress, len: u64) -> Result<(), GuestMemoryError> {
        self.each(gpa, len as usize, |_, _, _| Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfs::VecMemory;

    fn region(slot: u32, gpa: u64, size: u64, uaddr: u64) -> KvmUserspaceMemoryRegion {
        KvmUserspaceMemoryRegion {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: uaddr,
        }
    }

    #[test]
    fn kvm_checks_on_slots() {
        let mut s = Slots::default();
        assert_eq!(s.set(&region(0, 0, 0x1000, 0x10_0000)), Ok(()));
        assert_eq!(
            s.set(&region(1, 0x800, 0x1000, 0x20_0000)),
            Err(Errno::EINVAL),
            "unaligned"
        );
        assert_eq!(
            s.set(&region(1, 0, 0x1000, 0x20_0000)),
            Err(Errno::EEXIST),
            "overlap"
        );
        assert_eq!(s.set(&region(1, 0x1000, 0x1000, 0x20_0000)), Ok(()));
        assert_eq!(s.set(&region(9999, 0x5000, 0x1000, 0)), Err(Errno::EINVAL));
        assert_eq!(s.set(&region(1, 0, 0, 0)), Ok(()), "size 0 deletes");
        assert_eq!(s.translate(0x20_0000, 16), Err(Errno::EFAULT));
    }

    #[test]
    fn translation_and_access_across_slots() {
        let mut s = Slots::default();
        // Guest 0..0x2000 backed by two user ranges that are not adjacent.
        s.set(&region(0, 0, 0x1000, 0x10_0000)).unwrap();
        s.set(&region(1, 0x1000, 0x1000, 0x10_2000)).unwrap();
        assert_eq!(
            s.translate(0x10_0ff0, 0x10),
            Ok(vec![(GuestAddress(0xff0), 0x10)])
        );
        assert_eq!(
            s.translate(0x10_0ff0, 0x20),
            Err(Errno::EFAULT),
            "runs into unmapped user memory"
        );
        assert_eq!(s.translate(0x10_0000, 0), Err(Errno::EINVAL));
        let caller = VecMemory::new(0x10_0000, 0x3000);
        let mem = s.memory(&caller);
        mem.write(GuestAddress(0xffc), b"12345678").unwrap();
        let raw = caller.snapshot();
        assert_eq!(&raw[0xffc..0x1000], b"1234");
        assert_eq!(&raw[0x2000..0x2004], b"5678");
        let mut back = [0u8; 8];
        mem.read(GuestAddress(0xffc), &mut back).unwrap();
        assert_eq!(&back, b"12345678");
        assert!(mem.check_range(GuestAddress(0x1ff0), 0x20).is_err());
    }
}
