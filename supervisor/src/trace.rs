//! The ptrace supervisor: every process and thread of the program is traced; CPUID faults
//! in each of them (armed again after every execve, which disarms it) and the supervisor
//! answers from the table, as rr does.
//!
//! What the kernel gives (arch/x86/kernel/process.c, `arch_setup_new_exec`; man 2
//! arch_prctl): `ARCH_SET_CPUID` 0 makes CPUID raise #GP, delivered as SIGSEGV with
//! `si_code` SI_KERNEL; the setting is inherited by fork and clone and reset by execve.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::ptrace::{self, AddressType, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cpuid::{CpuidTable, HostCpu};
use crate::program::Program;
use crate::signals;
use crate::Error;

/// `arch_prctl` codes (asm/prctl.h).
const ARCH_GET_CPUID: libc::c_int = 0x1011;
const ARCH_SET_CPUID: libc::c_int = 0x1012;
/// `syscall` and `cpuid` as they lie in memory.
const SYSCALL_INSN: u64 = 0x050f;
const CPUID_INSN: u64 = 0xa20f;
/// `si_code` of a signal the kernel raised for a fault.
const SI_KERNEL: i32 = 0x80;

/// How the program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with this status.
    Exited(i32),
    /// A signal killed it.
    Signaled(Signal),
}

/// What the supervisor did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// CPUID instructions answered from the table.
    pub cpuids: u64,
    /// Successful execve calls (each armed CPUID faulting again).
    pub execs: u64,
    /// Processes and threads traced, the first included.
    pub tasks: u64,
}

/// Whether this CPU and kernel can make CPUID fault (the `cpuid_fault` flag): tried on the
/// calling thread, which is left as it was.
pub fn cpuid_faulting() -> bool {
    // SAFETY: arch_prctl with these codes reads or sets a flag of the calling thread only;
    // nothing between the two calls executes CPUID.
    unsafe {
        if libc::syscall(libc::SYS_arch_prctl, ARCH_GET_CPUID, 0) != 1 {
            return false;
        }
        if libc::syscall(libc::SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0 {
            return false;
        }
        libc::syscall(libc::SYS_arch_prctl, ARCH_SET_CPUID, 1) == 0
    }
}

/// Where a tracee is in being armed after an execve.
#[derive(Debug)]
enum Phase {
    /// Running with CPUID faulting armed (or between stops).
    Armed,
    /// Stopped at its PTRACE_EVENT_EXEC; next comes execve's syscall-exit-stop.
    ExecReturning,
    /// Executing the `arch_prctl` put at its entry point; the registers and the code word to
    /// put back.
    Arming {
        regs: Box<libc::user_regs_struct>,
        word: i64,
        entered: bool,
    },
}

#[derive(Debug)]
struct Tracee {
    phase: Phase,
    /// Whether it has passed the stop every new tracee starts with.
    started: bool,
    /// Signals that arrived while it was being armed, delivered after.
    pending: Vec<Signal>,
}

impl Tracee {
    fn new(started: bool) -> Tracee {
        Tracee {
            phase: Phase::Armed,
            started,
            pending: vec![],
        }
    }
}

struct Tracer<'a> {
    table: &'a CpuidTable,
    main: Pid,
    tracees: HashMap<Pid, Tracee>,
    outcome: Option<Outcome>,
    stats: Stats,
}

/// Runs `program` under the supervisor until it ends; then ends every process it left.
///
/// The forwarded signals must already be blocked in every thread of this process
/// ([`signals::block`]); this thread must be the only one that waits for children.
pub fn run(program: &Program, table: &CpuidTable) -> Result<(Outcome, Stats), Error> {
    if !cpuid_faulting() {
        return Err(Error::NoCpuidFaulting);
    }
    let (go_read, go_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let argv = program.argv_ptrs();
    let envp = program.envp_ptrs();
    // SAFETY: the child only makes async-signal-safe calls (sigprocmask, read, write,
    // execve, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::Spawn(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: as above; this never returns.
        unsafe {
            child(
                go_read.as_raw_fd(),
                err_write.as_raw_fd(),
                &program.path,
                &argv,
                &envp,
            )
        }
    }
    drop(go_read);
    drop(err_write);
    let main = Pid::from_raw(pid);
    let options = Options::PTRACE_O_TRACESYSGOOD
        | Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_EXITKILL;
    if let Err(e) = ptrace::seize(main, options) {
        let _ = nix::sys::signal::kill(main, Signal::SIGKILL);
        let _ = waitpid(main, None);
        return Err(Error::Trace(format!("PTRACE_SEIZE of {main}: {e}")));
    }
    let forwarder = signals::forward_to(main)?;
    // Seized: let it exec.
    let go = nix::unistd::write(&go_write, &[1]);
    drop(go_write);
    if let Err(e) = go {
        let _ = nix::sys::signal::kill(main, Signal::SIGKILL);
        return Err(Error::Trace(format!("starting {main}: {e}")));
    }
    let mut tracer = Tracer {
        table,
        main,
        tracees: HashMap::from([(main, Tracee::new(true))]),
        outcome: None,
        stats: Stats {
            tasks: 1,
            ..Stats::default()
        },
    };
    let result = tracer.run();
    forwarder.stop();
    let outcome = result?;
    // An execve that failed left its errno in the pipe (CLOEXEC closed it on success).
    let mut errno = [0u8; 4];
    if let Ok(4) = nix::unistd::read(&err_read, &mut errno) {
        let e = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
        return Err(program.exec_error(e));
    }
    Ok((outcome, tracer.stats))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::Spawn(std::io::Error::from(e)))
}

/// The child between fork and execve.
///
/// # Safety
/// Called in a freshly forked child only; the pointers stay valid (the parent's memory).
unsafe fn child(
    go: RawFd,
    err: RawFd,
    path: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // SAFETY: async-signal-safe calls on memory made before the fork.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // Wait until the supervisor has seized this process.
        let mut b = 0u8;
        if libc::read(go, (&mut b as *mut u8).cast(), 1) != 1 {
            libc::_exit(125);
        }
        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        let e = *libc::__errno_location();
        libc::write(err, (&e as *const i32).cast(), 4);
        libc::_exit(if e == libc::ENOENT { 127 } else { 126 });
    }
}

/// The errno of a ptrace request on a tracee that may have died meanwhile: ESRCH means its
/// exit is on its way and is not an error.
fn gone_ok(r: nix::Result<()>) -> Result<(), Errno> {
    match r {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Tracer<'_> {
    fn run(&mut self) -> Result<Outcome, Error> {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::__WALL | WaitPidFlag::__WNOTHREAD)) {
                Ok(s) => s,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => break,
                Err(e) => return Err(Error::Trace(format!("waitpid: {e}"))),
            };
            if let Err(e) = self.event(status) {
                self.kill_all();
                return Err(e);
            }
            if self.outcome.is_some() && self.tracees.is_empty() {
                break;
            }
        }
        self.outcome
            .ok_or_else(|| Error::Trace("the program vanished without an exit status".into()))
    }

    fn event(&mut self, status: WaitStatus) -> Result<(), Error> {
        let trace = |what: &str, pid: Pid, e: Errno| Error::Trace(format!("{what} of {pid}: {e}"));
        match status {
            WaitStatus::Exited(pid, code) => self.gone(pid, Outcome::Exited(code)),
            WaitStatus::Signaled(pid, sig, _) => self.gone(pid, Outcome::Signaled(sig)),
            WaitStatus::PtraceEvent(pid, _, libc::PTRACE_EVENT_EXEC) => {
                self.stats.execs += 1;
                // An execve by another thread gives the process its leader's id.
                if let Ok(former) = ptrace::getevent(pid) {
                    let former = Pid::from_raw(former as i32);
                    if former != pid {
                        self.tracees.remove(&former);
                    }
                }
                self.tracee(pid).phase = Phase::ExecReturning;
                gone_ok(ptrace::syscall(pid, None)).map_err(|e| trace("PTRACE_SYSCALL", pid, e))
            }
            WaitStatus::PtraceEvent(
                pid,
                _,
                libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE,
            ) => {
                if let Ok(new) = ptrace::getevent(pid) {
                    let new = Pid::from_raw(new as i32);
                    // Its first stop may have come first: then it may already be running,
                    // even be arming after an execve, and what is known of it stays.
                    if let std::collections::hash_map::Entry::Vacant(e) = self.tracees.entry(new) {
                        e.insert(Tracee::new(false));
                        self.stats.tasks += 1;
                    }
                }
                gone_ok(ptrace::cont(pid, None)).map_err(|e| trace("PTRACE_CONT", pid, e))
            }
            WaitStatus::PtraceEvent(pid, sig, libc::PTRACE_EVENT_STOP) => {
                let known = self.tracees.contains_key(&pid);
                let t = self.tracee(pid);
                if !known {
                    // Its stop came before its parent's fork event.
                    t.started = false;
                }
                if !t.started {
                    t.started = true;
                    return self.resume(pid);
                }
                if matches!(
                    sig,
                    Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
                ) {
                    // A group-stop: stay stopped until SIGCONT, as without a tracer.
                    return gone_ok(listen(pid)).map_err(|e| trace("PTRACE_LISTEN", pid, e));
                }
                self.resume(pid)
            }
            WaitStatus::PtraceEvent(pid, _, _) => self.resume(pid),
            WaitStatus::PtraceSyscall(pid) => self.arming(pid),
            WaitStatus::Stopped(pid, sig) => self.signal(pid, sig),
            WaitStatus::Continued(_) | WaitStatus::StillAlive => Ok(()),
        }
    }

    /// Resumes a tracee after a stop of no concern to arming: to its next syscall stop while
    /// it is being armed (a PTRACE_CONT then would let it run on unarmed), else freely.
    fn resume(&mut self, pid: Pid) -> Result<(), Error> {
        let (r, how) = if matches!(self.tracee(pid).phase, Phase::Armed) {
            (ptrace::cont(pid, None), "PTRACE_CONT")
        } else {
            (ptrace::syscall(pid, None), "PTRACE_SYSCALL")
        };
        gone_ok(r).map_err(|e| Error::Trace(format!("{how} of {pid}: {e}")))
    }

    fn tracee(&mut self, pid: Pid) -> &mut Tracee {
        let stats = &mut self.stats;
        self.tracees.entry(pid).or_insert_with(|| {
            stats.tasks += 1;
            Tracee::new(true)
        })
    }

    /// A tracee ended; once the program has, nothing it started may go on.
    fn gone(&mut self, pid: Pid, how: Outcome) -> Result<(), Error> {
        self.tracees.remove(&pid);
        if pid == self.main {
            self.outcome = Some(how);
            self.kill_all();
        }
        Ok(())
    }

    fn kill_all(&mut self) {
        for pid in self.tracees.keys() {
            let _ = nix::sys::signal::kill(*pid, Signal::SIGKILL);
        }
    }

    /// A signal-delivery-stop: a CPUID that faulted is answered and the signal dropped;
    /// anything else is delivered.
    fn signal(&mut self, pid: Pid, sig: Signal) -> Result<(), Error> {
        let t = self.tracee(pid);
        if !matches!(t.phase, Phase::Armed) {
            // Being armed: deliver it once the tracee is back in its own code.
            t.pending.push(sig);
            return gone_ok(ptrace::syscall(pid, None))
                .map_err(|e| Error::Trace(format!("PTRACE_SYSCALL of {pid}: {e}")));
        }
        if sig == Signal::SIGSEGV {
            match self.emulate_cpuid(pid) {
                Ok(true) => {
                    self.stats.cpuids += 1;
                    return gone_ok(ptrace::cont(pid, None))
                        .map_err(|e| Error::Trace(format!("PTRACE_CONT of {pid}: {e}")));
                }
                Ok(false) | Err(Errno::ESRCH) => {}
                Err(e) => return Err(Error::Trace(format!("emulating CPUID in {pid}: {e}"))),
            }
        }
        gone_ok(ptrace::cont(pid, sig))
            .map_err(|e| Error::Trace(format!("PTRACE_CONT of {pid}: {e}")))
    }

    /// Answers the CPUID that raised this SIGSEGV, if one did.
    fn emulate_cpuid(&self, pid: Pid) -> nix::Result<bool> {
        if ptrace::getsiginfo(pid)?.si_code != SI_KERNEL {
            return Ok(false);
        }
        let mut regs = ptrace::getregs(pid)?;
        let word = ptrace::read(pid, regs.rip as AddressType)? as u64;
        if word & 0xffff != CPUID_INSN {
            return Ok(false);
        }
        let r = self
            .table
            .answer(&HostCpu, regs.rax as u32, regs.rcx as u32);
        // CPUID writes 32 bits and clears the upper halves.
        regs.rax = r.eax.into();
        regs.rbx = r.ebx.into();
        regs.rcx = r.ecx.into();
        regs.rdx = r.edx.into();
        regs.rip += 2;
        ptrace::setregs(pid, regs)?;
        Ok(true)
    }

    /// The syscall stops of arming: execve's return, then the `arch_prctl(ARCH_SET_CPUID,
    /// 0)` put at the new program's entry point, then the program's own first instruction
    /// with its own registers and code.
    fn arming(&mut self, pid: Pid) -> Result<(), Error> {
        let fail = |e: Errno| Error::Trace(format!("arming CPUID faulting in {pid}: {e}"));
        let phase = std::mem::replace(&mut self.tracee(pid).phase, Phase::Armed);
        match phase {
            Phase::ExecReturning => {
                let regs = ptrace::getregs(pid).map_err(fail)?;
                let at = regs.rip as AddressType;
                let word = ptrace::read(pid, at).map_err(fail)?;
                let stub = (word as u64 & !0xffff) | SYSCALL_INSN;
                ptrace::write(pid, at, stub as i64).map_err(fail)?;
                let mut call = regs;
                call.rax = libc::SYS_arch_prctl as u64;
                call.rdi = ARCH_SET_CPUID as u64;
                call.rsi = 0;
                ptrace::setregs(pid, call).map_err(fail)?;
                self.tracee(pid).phase = Phase::Arming {
                    regs: Box::new(regs),
                    word,
                    entered: false,
                };
                gone_ok(ptrace::syscall(pid, None)).map_err(fail)
            }
            Phase::Arming {
                regs,
                word,
                entered: false,
            } => {
                self.tracee(pid).phase = Phase::Arming {
                    regs,
                    word,
                    entered: true,
                };
                gone_ok(ptrace::syscall(pid, None)).map_err(fail)
            }
            Phase::Arming {
                regs,
                word,
                entered: true,
            } => {
                let done = ptrace::getregs(pid).map_err(fail)?.rax as i64;
                ptrace::write(pid, regs.rip as AddressType, word).map_err(fail)?;
                ptrace::setregs(pid, *regs).map_err(fail)?;
                if done != 0 {
                    return Err(Error::Trace(format!(
                        "arch_prctl(ARCH_SET_CPUID, 0) in {pid}: {}",
                        Errno::from_raw(-done as i32)
                    )));
                }
                let t = self.tracee(pid);
                let pending = std::mem::take(&mut t.pending);
                // Signals that waited: one now, the rest raised again (standard signals
                // coalesce anyway).
                let mut pending = pending.into_iter();
                let first = pending.next();
                for sig in pending {
                    let _ = nix::sys::signal::kill(pid, sig);
                }
                gone_ok(ptrace::cont(pid, first)).map_err(fail)
            }
            // A syscall stop nobody asked for (PTRACE_SYSCALL is only used to arm).
            Phase::Armed => gone_ok(ptrace::cont(pid, None)).map_err(fail),
        }
    }
}

/// PTRACE_LISTEN, which nix does not wrap.
fn listen(pid: Pid) -> nix::Result<()> {
    // SAFETY: PTRACE_LISTEN takes no pointers.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_LISTEN,
            pid.as_raw(),
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    Errno::result(r).map(drop)
}
