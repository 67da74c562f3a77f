//! The threads that run ioctls, so the FUSE loop never waits on one. A driver may block on
//! its caller (a caller whose memory is backed by a file that never answers stalls
//! `process_vm_readv`); that must hold up that caller alone, never the mount. Each uid may
//! have a bounded number of ioctls in flight, and the pool a bounded number of threads.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A job for a worker.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Threads at most, across all callers.
const MAX_THREADS: usize = 256;
/// Ioctls in flight per uid (root included: a stuck root caller must not take the pool).
const PER_UID: usize = 32;
/// An idle thread ends after this long without work.
const IDLE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    idle: usize,
    threads: usize,
    in_flight: HashMap<u32, usize>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    work: Condvar,
}

/// The pool.
#[derive(Clone, Default)]
pub(crate) struct Workers {
    inner: Arc<Inner>,
}

/// A place in the pool for one ioctl of one uid, given back when dropped.
pub(crate) struct Permit {
    inner: Arc<Inner>,
    uid: u32,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = st.in_flight.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                st.in_flight.remove(&self.uid);
            }
        }
    }
}

impl Workers {
    /// A place for an ioctl of `uid`, or `None` when it has too many in flight, or the pool
    /// is full (the caller gets EAGAIN).
    pub(crate) fn admit(&self, uid: u32) -> Option<Permit> {
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let busy: usize = st.in_flight.values().sum();
        let mine = st.in_flight.get(&uid).copied().unwrap_or(0);
        if mine >= PER_UID || busy >= MAX_THREADS {
            return None;
        }
        *st.in_flight.entry(uid).or_default() += 1;
        Some(Permit {
            inner: self.inner.clone(),
            uid,
        })
    }

    /// Runs `job` on an idle thread, or a new one; the permit is given back when it ends.
    pub(crate) fn run(&self, permit: Permit, job: impl FnOnce() + Send + 'static) {
        let job: Job = Box::new(move || {
            job();
            drop(permit);
        });
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        st.queue.push_back(job);
        // Enough idle threads for every queued job: wake one. Otherwise start another.
        if st.idle >= st.queue.len() {
            drop(st);
            self.inner.work.notify_one();
            return;
        }
        st.threads += 1;
        drop(st);
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("ioctl".into())
            .spawn(move || worker(inner));
        if let Err(e) = spawned {
            // The queued job waits for a thread that is already running.
            log::error!("cannot start an ioctl thread: {e}");
            let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            st.threads -= 1;
        }
    }
}

fn worker(inner: Arc<Inner>) {
    let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(job) = st.queue.pop_front() {
            drop(st);
            job();
            st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        st.idle += 1;
        let (next, timeout) = inner
            .work
            .wait_timeout_while(st, IDLE, |s| s.queue.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        st = next;
        st.idle -= 1;
        if timeout.timed_out() && st.queue.is_empty() {
            st.threads -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_stuck_job_does_not_stop_others() {
        let pool = Workers::default();
        let (block_tx, block_rx) = mpsc::channel::<()>();
        let p = pool.admit(1000).unwrap();
        pool.run(p, move || {
            let _ = block_rx.recv();
        });
        let (tx, rx) = mpsc::channel();
        for i in 0..10 {
            let tx = tx.clone();
            let p = pool.admit(1001).unwrap();
            pool.run(p, move || tx.send(i).unwrap());
        }
        let mut got: Vec<i32> = (0..10)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        drop(block_tx);
    }

    #[test]
    fn each_uid_has_a_bounded_share() {
        let pool = Workers::default();
        let permits: Vec<Permit> = (0..PER_UID).map(|_| pool.admit(7).unwrap()).collect();
        assert!(pool.admit(7).is_none(), "over its share");
        assert!(pool.admit(8).is_some(), "another uid is served");
        drop(permits);
        assert!(pool.admit(7).is_some(), "permits come back");
    }
}
