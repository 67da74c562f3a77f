//! Where a guest's RAM lies, as QEMU's q35 machine lays it out (`pc_q35_init` in
//! hw/i386/pc_q35.c): below 4 GiB up to the PCI hole, the rest from 4 GiB, and the
//! firmware's flash at the top of the first 4 GiB, above both.

/// Where RAM above the PCI hole starts.
pub const HIGH_RAM_BASE: u64 = 1 << 32;
/// Guests with at least this much RAM keep only [`LOW_RAM_SPLIT`] below 4 GiB (q35's
/// `lowmem` with gigabyte alignment); smaller ones have all of it there.
const SPLIT_AT: u64 = 0xb000_0000;
/// RAM below 4 GiB in a guest that is split.
const LOW_RAM_SPLIT: u64 = 0x8000_0000;

/// The highest guest physical address an EPYC guest can have, plus one: 48 physical
/// address bits (CPUID Fn8000_0008 EAX on Milan, Genoa and Turin) less the one memory
/// encryption costs (Fn8000_001F EBX[11:6]).
pub const GPA_LIMIT: u64 = 1 << 47;

/// Guest RAM of `memory` bytes as (guest address, size) slots: one at 0, and one at 4 GiB
/// when the guest is split.
pub fn ram_slots(memory: u64) -> Vec<(u64, u64)> {
    let low = if memory >= SPLIT_AT {
        LOW_RAM_SPLIT
    } else {
        memory
    };
    let mut slots = vec![(0, low)];
    if memory > low {
        slots.push((HIGH_RAM_BASE, memory - low));
    }
    slots
}

/// Whether `memory` bytes of RAM fit the guest physical address space.
pub fn addressable(memory: u64) -> bool {
    ram_slots(memory)
        .last()
        .and_then(|&(gpa, size)| gpa.checked_add(size))
        .is_some_and(|end| end <= GPA_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guests_are_below_4g_and_large_ones_split_at_2g() {
        assert_eq!(ram_slots(2 << 30), [(0, 2 << 30)]);
        assert_eq!(ram_slots(0xafff_f000), [(0, 0xafff_f000)]);
        assert_eq!(
            ram_slots(0xb000_0000),
            [(0, 2 << 30), (HIGH_RAM_BASE, 0x3000_0000)]
        );
        assert_eq!(
            ram_slots(64 << 30),
            [(0, 2 << 30), (HIGH_RAM_BASE, 62 << 30)]
        );
        assert!(addressable(1 << 40));
        assert!(addressable(GPA_LIMIT - HIGH_RAM_BASE + LOW_RAM_SPLIT));
        assert!(!addressable(
            GPA_LIMIT - HIGH_RAM_BASE + LOW_RAM_SPLIT + 4096
        ));
        assert!(!addressable(u64::MAX));
    }
}
