//! The Reverse Map Table (SEV-SNP): one entry per page of system memory, saying who owns it
//! (snp.md §4.2). It is hardware, beside the memory controller: the hypervisor changes
//! entries with the RMPUPDATE instruction ([`Rmp::assign`], [`Rmp::make_shared`]), the
//! firmware with its own transitions, and every access is checked against it.
//!
//! Pages are named by [`HostPage`]: the hypervisor's memory object that backs a VM (KVM's
//! guest_memfd, here one per VM) and the page's offset in it.

use std::collections::HashMap;

/// A page of host memory: what backs it and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPage {
    /// The memory object (one per VM).
    pub object: u64,
    /// The page's address in it (4 KiB aligned).
    pub addr: u64,
}

/// RMP page states (ASPFW `sev_rmp.h`; the states an emulator meets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PageState {
    /// The hypervisor's: not assigned.
    Hypervisor = 0x2,
    /// The firmware's.
    Firmware = 0x4,
    /// A guest context page.
    Context = 0x7,
    /// Assigned to a guest for its launch, immutable, not yet validated.
    PreGuest = 0x9,
    /// Assigned to a guest, not validated.
    GuestInvalid = 0xb,
    /// Assigned to a guest and validated: private memory in use.
    GuestValid = 0xc,
}

/// One entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RmpEntry {
    /// The page's state.
    pub state: PageState,
    /// The owning guest's ASID (0 for the hypervisor and the firmware).
    pub asid: u32,
    /// The guest physical address the page is assigned at.
    pub gpa: u64,
    /// The page holds a vCPU save area (RMP.VMSA).
    pub vmsa: bool,
}

impl RmpEntry {
    const HYPERVISOR: RmpEntry = RmpEntry {
        state: PageState::Hypervisor,
        asid: 0,
        gpa: 0,
        vmsa: false,
    };

    /// Whether the page belongs to a guest (RMP.ASSIGNED with an ASID).
    pub fn is_guest(&self) -> bool {
        matches!(
            self.state,
            PageState::PreGuest | PageState::GuestInvalid | PageState::GuestValid
        )
    }
}

/// Why RMPUPDATE refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RmpError {
    /// The page is already assigned.
    #[error("the page is already assigned in the RMP")]
    Assigned,
    /// Only 4 KiB pages exist here.
    #[error("the page address is not 4 KiB aligned")]
    Unaligned,
}

/// The table. Pages without an entry are the hypervisor's.
#[derive(Debug, Default)]
pub struct Rmp {
    entries: HashMap<HostPage, RmpEntry>,
}

impl Rmp {
    /// A page's entry.
    pub fn entry(&self, page: HostPage) -> RmpEntry {
        self.entries
            .get(&page)
            .copied()
            .unwrap_or(RmpEntry::HYPERVISOR)
    }

    /// RMPUPDATE to a guest's pre-launch state (KVM's `rmp_make_private` with immutable
    /// set): the page is assigned to `asid` at `gpa`. An assigned page is refused.
    pub fn assign(&mut self, page: HostPage, asid: u32, gpa: u64) -> Result<(), RmpError> {
        if page.addr % 4096 != 0 || gpa % 4096 != 0 {
            return Err(RmpError::Unaligned);
        }
        if self.entry(page).state != PageState::Hypervisor {
            return Err(RmpError::Assigned);
        }
        self.entries.insert(
            page,
            RmpEntry {
                state: PageState::PreGuest,
                asid,
                gpa,
                vmsa: false,
            },
        );
        Ok(())
    }

    /// RMPUPDATE back to the hypervisor (KVM's `rmp_make_shared`, and page reclaim).
    pub fn make_shared(&mut self, page: HostPage) {
        self.entries.remove(&page);
    }

    /// The firmware's own transitions.
    pub(crate) fn set(&mut self, page: HostPage, entry: RmpEntry) {
        if entry.state == PageState::Hypervisor {
            self.entries.remove(&page);
        } else {
            self.entries.insert(page, entry);
        }
    }

    /// Every page of `object` that is not the hypervisor's.
    pub fn owned_pages(&self, object: u64) -> Vec<(HostPage, RmpEntry)> {
        let mut pages: Vec<_> = self
            .entries
            .iter()
            .filter(|(p, _)| p.object == object)
            .map(|(p, e)| (*p, *e))
            .collect();
        pages.sort_by_key(|(p, _)| *p);
        pages
    }

    /// How many pages are assigned to guests.
    pub fn assigned(&self) -> usize {
        self.entries.values().filter(|e| e.is_guest()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assign_once_then_give_back() {
        let mut rmp = Rmp::default();
        let page = HostPage {
            object: 1,
            addr: 0x2000,
        };
        assert_eq!(rmp.entry(page).state, PageState::Hypervisor);
        rmp.assign(page, 5, 0x8000).unwrap();
        assert_eq!(rmp.entry(page).state, PageState::PreGuest);
        assert_eq!(rmp.assign(page, 6, 0x8000), Err(RmpError::Assigned));
        assert_eq!(rmp.assigned(), 1);
        assert_eq!(
            rmp.assign(
                HostPage {
                    object: 1,
                    addr: 0x2001
                },
                5,
                0
            ),
            Err(RmpError::Unaligned)
        );
        rmp.make_shared(page);
        assert_eq!(rmp.assigned(), 0);
        assert!(rmp.owned_pages(1).is_empty());
    }
}
