//! Releases seen in order across FUSE connections, as a driver's `release` is.
//!
//! KVM destroys a VM when the last reference to its file goes, before that `close(2)`
//! returns. Under FUSE the RELEASE is *queued* before `close` returns (the final `fput`
//! runs on the way back to user space, and `fuse_release` sends it as a background request),
//! but the server answers it later. Within one connection that is harmless: the kernel's
//! queue is FIFO and the session loop serves RELEASE inline, so a request sent after the
//! `close` is read after the RELEASE has been served. A request on *another* connection (the
//! `sev` node mounted on its own, as a drop-in is) may be served first, and would see the
//! closed VM.
//!
//! A fence restores the order: before a command is served, it sends a STATFS (which the
//! kernel never caches) on every other connection that has such files open, and waits for
//! the answer. The answer comes after every request queued on that connection before it,
//! the RELEASE included. The background queue is made deep enough
//! ([`MAX_BACKGROUND`]) that a RELEASE goes to that queue at once instead of waiting behind
//! other background requests.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Background requests (RELEASEs here) the kernel may have queued to a connection before it
/// holds further ones back (its default is 12): more than there will ever be files.
pub(crate) const MAX_BACKGROUND: u16 = 4096;

/// The connections whose releases a command must not overtake.
#[derive(Debug, Default)]
pub struct ReleaseFence {
    conns: Mutex<Vec<Conn>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    /// The mount's root, opened `O_PATH` (no FUSE open, so no FLUSH or RELEASE of its own).
    root: Arc<OwnedFd>,
    /// Open files on it whose release others must see.
    open: Arc<AtomicUsize>,
}

/// One connection's membership: its id and its count of open files.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) fence: Arc<ReleaseFence>,
    pub(crate) id: u64,
    pub(crate) open: Arc<AtomicUsize>,
}

impl ReleaseFence {
    /// A fence with no connections yet; file systems join it with
    /// [`crate::DeviceFs::with_fence`].
    pub fn new() -> Arc<Self> {
        Arc::new(ReleaseFence::default())
    }

    pub(crate) fn member(self: &Arc<Self>) -> Member {
        Member {
            fence: self.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Adds the connection mounted at `path` once it serves.
    pub(crate) fn join(&self, member: &Member, path: &Path) -> std::io::Result<()> {
        let root = nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Conn {
                id: member.id,
                root: Arc::new(root),
                open: member.open.clone(),
            });
        Ok(())
    }

    /// Removes a connection (its mount is going away).
    pub(crate) fn leave(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| c.id != id);
    }

    /// Waits until every other connection with files open has served what was queued on it
    /// before now. Never called with a lock held: a connection's loop may be waiting for one.
    pub(crate) fn wait(&self, from: u64) {
        let roots: Vec<Arc<OwnedFd>> = self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|c| c.id != from && c.open.load(Ordering::Acquire) > 0)
            .map(|c| c.root.clone())
            .collect();
        for root in roots {
            // A connection already gone (ENOTCONN) has nothing left to serve.
            let _ = nix::sys::statfs::fstatfs(root.as_fd());
        }
    }
}
