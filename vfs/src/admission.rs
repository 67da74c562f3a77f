//! The bound on ioctls in flight. A driver may block on its caller (a caller whose memory is
//! backed by a file that never answers stalls `process_vm_readv`), and each such ioctl holds
//! a thread (crate::serve); so each uid may have a bounded number in flight, and the mount a
//! bounded number in all. Over either bound an ioctl gets EAGAIN.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Ioctls in flight at most, across all callers.
const MAX_IN_FLIGHT: usize = 256;
/// Ioctls in flight per uid (root included: a stuck root caller must not take them all).
const PER_UID: usize = 32;

/// The ioctls in flight, by uid.
#[derive(Clone, Default)]
pub(crate) struct Admission {
    in_flight: Arc<Mutex<HashMap<u32, usize>>>,
}

/// A place for one ioctl of one uid, given back when dropped.
pub(crate) struct Permit {
    in_flight: Arc<Mutex<HashMap<u32, usize>>>,
    uid: u32,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.uid);
            }
        }
    }
}

impl Admission {
    /// A place for an ioctl of `uid`, or `None` when it has too many in flight, or the mount
    /// does.
    pub(crate) fn admit(&self, uid: u32) -> Option<Permit> {
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let busy: usize = map.values().sum();
        let mine = map.get(&uid).copied().unwrap_or(0);
        if mine >= PER_UID || busy >= MAX_IN_FLIGHT {
            return None;
        }
        *map.entry(uid).or_default() += 1;
        Some(Permit {
            in_flight: self.in_flight.clone(),
            uid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_uid_has_a_bounded_share() {
        let admission = Admission::default();
        let permits: Vec<Permit> = (0..PER_UID).map(|_| admission.admit(7).unwrap()).collect();
        assert!(admission.admit(7).is_none(), "over its share");
        assert!(admission.admit(8).is_some(), "another uid is served");
        drop(permits);
        assert!(admission.admit(7).is_some(), "permits come back");
    }

    #[test]
    fn the_mount_has_a_bound_in_all() {
        let admission = Admission::default();
        let permits: Vec<Permit> = (0..MAX_IN_FLIGHT as u32)
            .map(|i| admission.admit(i / PER_UID as u32).unwrap())
            .collect();
        assert!(admission.admit(100_000).is_none());
        drop(permits);
        assert!(admission.admit(100_000).is_some());
    }
}
