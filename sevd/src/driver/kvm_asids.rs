//! KVM's ASID allocator (`sev_asid_new`, `sev_asid_free`) and the misc cgroup's per-user
//! charge, for the `sev-vm` node.

use vfs::Errno;

use super::sev_dev::SevDev;

/// SEV-ES guests get 1..min_sev_asid, SEV guests min_sev_asid..=max_asid. Freed ASIDs wait
/// in `reclaim` until a shortage makes KVM flush (DF_FLUSH) and reuse them all.
#[derive(Debug)]
pub(crate) struct KvmAsids {
    /// The uid charged for each ASID in use (index = ASID).
    used: Vec<Option<u32>>,
    reclaim: Vec<bool>,
    min_sev: u32,
    max: u32,
    /// ASIDs one uid may hold at once (0: no limit), as the misc cgroup's `sev`/`sev_es` max.
    per_uid: u32,
}

/// Why an ASID could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AsidError {
    /// None free even after a flush (KVM: EBUSY).
    Exhausted,
    /// The uid holds its share already (the misc cgroup's charge fails: EBUSY).
    UidLimit,
}

impl AsidError {
    /// KVM's errno for it.
    pub(crate) fn errno(self) -> Errno {
        Errno::EBUSY
    }
}

impl KvmAsids {
    pub(crate) fn new(min_sev: u32, max: u32, per_uid: u32) -> Self {
        KvmAsids {
            used: vec![None; max as usize + 1],
            reclaim: vec![false; max as usize + 1],
            min_sev,
            max,
            per_uid,
        }
    }

    pub(crate) fn range(&self, es: bool) -> std::ops::RangeInclusive<u32> {
        if es {
            1..=self.min_sev.saturating_sub(1)
        } else {
            self.min_sev..=self.max
        }
    }

    /// An ASID for a guest of `uid`; may DF_FLUSH through `dev` to recycle freed ones.
    pub(crate) fn alloc(&mut self, es: bool, uid: u32, dev: &mut SevDev) -> Result<u32, AsidError> {
        if self.per_uid != 0
            && self.used.iter().filter(|u| **u == Some(uid)).count() >= self.per_uid as usize
        {
            return Err(AsidError::UidLimit);
        }
        for retry in [true, false] {
            if let Some(a) = self
                .range(es)
                .find(|&a| self.used[a as usize].is_none() && !self.reclaim[a as usize])
            {
                self.used[a as usize] = Some(uid);
                return Ok(a);
            }
            let reclaimable = self.range(es).any(|a| self.reclaim[a as usize]);
            if !(retry && reclaimable) {
                break;
            }
            // __sev_recycle_asids: WBINVD on all CPUs, DF_FLUSH, then every reclaimed ASID is free.
            if dev.firmware_mut().df_flush().is_err() {
                break;
            }
            self.reclaim.iter_mut().for_each(|r| *r = false);
        }
        Err(AsidError::Exhausted)
    }

    /// `sev_asid_free`: uncharged now, reusable after the next DF_FLUSH.
    pub(crate) fn free(&mut self, asid: u32) {
        if let Some(slot) = self.used.get_mut(asid as usize) {
            *slot = None;
            self.reclaim[asid as usize] = true;
        }
    }
}
