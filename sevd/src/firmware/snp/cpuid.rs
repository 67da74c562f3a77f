//! The firmware's check of a CPUID page (snp.md §4.7; ASPFW `sanitize_cpuid_list`). The
//! real firmware compares every entry with what the hardware allows; this part's rules are
//! the page's own format (count, reserved fields) and the one leaf the memory controller
//! defines, 0x8000001F, whose C-bit position (EBX[5:0]) must be the part's.

use uapi::snp::cpuid_page::*;

/// CPUID 0x8000001F EBX[5:0]: the C-bit is bit 51 of a guest physical address.
pub const C_BIT_POSITION: u32 = 51;
const LEAF_SEV: u32 = 0x8000_001f;

/// `Ok` if the firmware accepts `page`; else the page as the firmware corrects it.
pub fn check_cpuid_page(page: &[u8]) -> Result<(), Vec<u8>> {
    let mut fixed = page.to_vec();
    let mut ok = true;
    let count = u32::from_le_bytes(page[COUNT_AT..COUNT_AT + 4].try_into().unwrap_or_default());
    if page[RESERVED].iter().any(|b| *b != 0) {
        fixed[RESERVED].fill(0);
        ok = false;
    }
    if count as usize > MAX_ENTRIES {
        fixed[COUNT_AT..COUNT_AT + 4].copy_from_slice(&(MAX_ENTRIES as u32).to_le_bytes());
        ok = false;
    }
    for i in 0..(count as usize).min(MAX_ENTRIES) {
        let at = ENTRIES_AT + i * ENTRY_LEN;
        let entry = &mut fixed[at..at + ENTRY_LEN];
        if entry[ENTRY_RESERVED].iter().any(|b| *b != 0) {
            entry[ENTRY_RESERVED].fill(0);
            ok = false;
        }
        let leaf = u32::from_le_bytes(entry[EAX_IN..EAX_IN + 4].try_into().unwrap_or_default());
        if leaf == LEAF_SEV {
            let ebx = u32::from_le_bytes(entry[EBX..EBX + 4].try_into().unwrap_or_default());
            if ebx & 0x3f != C_BIT_POSITION {
                let ebx = (ebx & !0x3f) | C_BIT_POSITION;
                entry[EBX..EBX + 4].copy_from_slice(&ebx.to_le_bytes());
                ok = false;
            }
        }
    }
    if ok {
        Ok(())
    } else {
        Err(fixed)
    }
}
