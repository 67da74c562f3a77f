//! Runs an unmodified program, and every process and thread it starts, so that it sees a
//! CPU and a few files of the caller's choosing instead of the host's:
//!
//! - CPUID: from a [`CpuidTable`] over the host's answers, through CPUID faulting
//!   (`arch_prctl(ARCH_SET_CPUID, 0)`, armed again after every execve) under a ptrace
//!   supervisor that answers each faulting CPUID ([`trace`]);
//! - files: an [`Overlay`] of a private mount namespace, which adds files to directories
//!   such as `/dev` and `/sys/module` and leaves the rest of the host as it is.
//!
//! It knows nothing of what the tables mean: the caller builds them.

#![deny(missing_docs)]

pub mod cpuid;
pub mod msr;
pub mod overlay;
pub mod program;
pub mod signals;
pub mod trace;

use std::path::PathBuf;

pub use cpuid::{CpuidTable, Patch, Regs};
pub use msr::{MsrDevice, MsrTable};
pub use overlay::{private_namespace, Content, Overlay, OverlayError};
pub use program::Program;
pub use trace::{cpuid_faulting, run, Outcome, Stats};

/// Why a program could not be run as asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such program.
    #[error("{}: No such file or directory", .0.display())]
    NotFound(PathBuf),
    /// The program exists but cannot be run.
    #[error("{}: {source}", path.display())]
    CannotRun {
        /// The program.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// This CPU or kernel cannot make CPUID fault.
    #[error("this host cannot make CPUID fault (no cpuid_fault in /proc/cpuinfo's flags, or a kernel without ARCH_SET_CPUID), so a program's view of the CPU cannot be changed")]
    NoCpuidFaulting,
    /// The overlay.
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    /// Starting the program.
    #[error("starting the program: {0}")]
    Spawn(std::io::Error),
    /// Tracing it.
    #[error("supervising the program: {0}")]
    Trace(String),
}

impl Error {
    /// The exit status env(1) gives for it: 127 for a program not found, 126 for one that
    /// cannot be run, 125 for a failure of the supervisor itself.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotFound(_) => 127,
            Error::CannotRun { .. } => 126,
            _ => 125,
        }
    }
}

/// Ends this process as the program ended: with its exit status, or killed by its signal
/// (without a core file of the supervisor's own).
pub fn exit_like(outcome: Outcome) -> ! {
    match outcome {
        Outcome::Exited(code) => std::process::exit(code),
        Outcome::Signaled(sig) => {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: setrlimit, signal, sigprocmask and raise act on this process only,
            // with valid arguments.
            unsafe {
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                libc::signal(sig as libc::c_int, libc::SIG_DFL);
                let mut only: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut only);
                libc::sigaddset(&mut only, sig as libc::c_int);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
                libc::raise(sig as libc::c_int);
            }
            // A signal whose default is not to end a process.
            std::process::exit(128 + sig as i32)
        }
    }
}
