//! Signals sent to the supervisor reach the program, as they would a program run by env(1).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

use crate::Error;

/// What the supervisor passes on. Job control (SIGTSTP, SIGCONT, ...) is left alone: it
/// acts on the supervisor and the program alike, as on any process group.
pub const FORWARDED: [Signal; 8] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGWINCH,
];

/// `si_code` of a signal the kernel sent, as a terminal sends SIGINT to its foreground
/// process group: the program, in that group too, has its own.
const SI_KERNEL: i32 = 0x80;

fn set() -> SigSet {
    let mut s = SigSet::empty();
    for sig in FORWARDED {
        s.add(sig);
    }
    s
}

/// Blocks the forwarded signals in the calling thread, and so in every thread it starts
/// afterwards; call it before any other thread exists, so none of them takes a signal meant
/// for the program. The program itself starts with none blocked.
pub fn block() -> Result<(), Error> {
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set()), None)
        .map_err(|e| Error::Spawn(e.into()))
}

/// The thread that passes signals on, until stopped.
#[derive(Debug)]
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Stops passing signals on.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Passes every forwarded signal a process sends this one on to `pid`, through a pidfd so
/// that a recycled pid is never signalled.
pub fn forward_to(pid: Pid) -> Result<Forwarder, Error> {
    // SAFETY: pidfd_open takes a pid and flags, and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(Error::Spawn(std::io::Error::last_os_error()));
    }
    // SAFETY: pidfd_open returned a descriptor this process now owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = set();
            let timeout = libc::timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            };
            while !flag.load(Ordering::Relaxed) {
                // SAFETY: a zeroed siginfo_t is a valid output buffer.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                // SAFETY: the set, the buffer and the timeout outlive the call.
                let sig = unsafe { libc::sigtimedwait(set.as_ref(), &mut info, &timeout) };
                if sig <= 0 || info.si_code == SI_KERNEL {
                    continue;
                }
                // SAFETY: pidfd_send_signal takes a pidfd, a signal number, no siginfo and
                // no flags.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd.as_raw_fd(),
                        sig,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    );
                }
            }
        })
        .map_err(Error::Spawn)?;
    Ok(Forwarder {
        stop,
        thread: Some(thread),
    })
}
