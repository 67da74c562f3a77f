//! The threads that read a FUSE connection, each serving what it read, as libfuse's
//! multithreaded loop does: no hand-off between a reader and a worker, so a command costs
//! its read, its reply and the caller's memory, and little more.
//!
//! One thread at a time reads (it holds `order`), with a blocking read, as a one-thread
//! server would. The kernel queues requests first in, first out, and a driver must see a
//! `close` before whatever its caller does next (crate::fence): so the reader serves every
//! request but IOCTL before it reads the next. It lets go of `order` to serve an ioctl and
//! takes it back before it answers, so its caller's next request finds it reading.
//!
//! An ioctl may wait on its caller (memory that stalls `process_vm_readv`), which must not
//! hold up others. A watchdog looks every [`TICK`] while ioctls are being served: when none
//! has finished for a whole tick, it arms a standby, an idle thread (started if there is
//! none) whose epoll watches the connection; a request then wakes it and it reads next.
//! When the last ioctl is done and the standby never woke, it is disarmed. So a stalled
//! caller holds up others for at most a tick or two, once, and a quick ioctl costs no
//! system call beyond its own (arming one per ioctl would cost `epoll_ctl` twice, 1.5 µs,
//! about a fifth of FUSE's own round trip).
//!
//! A standby watches without EPOLLEXCLUSIVE: a blocked read is an exclusive waiter, and an
//! exclusive standby could take the one wake-up a request brings from the reader and then
//! find it has nothing to do.

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use zerocopy::{FromBytes, IntoBytes};

use crate::abi::{self, opcode, InHeader, OutHeader};
use crate::fs::DeviceFs;
use crate::ops::{self, Reply, Request};
use crate::Errno;

/// The largest WRITE the kernel may send (negotiated at INIT); requests are read whole into
/// a buffer of this and a page more. A restricted ioctl's argument is at most 16 KiB.
pub(crate) const MAX_WRITE: u32 = 64 * 1024;
const BUFFER: usize = MAX_WRITE as usize + 4096;
/// Idle threads kept for bursts of ioctls; one more that goes idle ends.
const MAX_IDLE: usize = 4;
/// How long ioctls may go without one finishing before a standby is armed.
pub(crate) const TICK: Duration = Duration::from_millis(1);
/// Ticks with no ioctl after which the watchdog sleeps until the next ioctl.
const QUIET_TICKS: u32 = 200;

const _: () = assert!(BUFFER >= abi::MIN_READ_BUFFER);

/// One connection and its file system.
struct Server {
    /// The connection (`/dev/fuse`).
    fd: OwnedFd,
    fs: DeviceFs,
    /// Held by the thread that reads, until what it read may be overtaken.
    order: Mutex<()>,
    /// Threads with nothing to do, each waiting in its disarmed standby.
    idle: Mutex<Vec<Arc<Standby>>>,
    /// The ioctls being served and the standby armed for them.
    cover: Mutex<Cover>,
    /// Wakes the watchdog when it sleeps (`Cover::asleep`).
    watch: Condvar,
    /// The connection is gone; set under `idle`'s lock.
    ended: AtomicBool,
}

/// A thread's wait for requests while another reads: its own epoll, which watches the
/// connection only while armed.
struct Standby {
    epoll: Epoll,
    /// Armed and not yet claimed: by the standby when it wakes, or by whoever armed it to
    /// take it back.
    armed: AtomicBool,
}

#[derive(Default)]
struct Cover {
    /// Being served, without `order`.
    ioctls: usize,
    /// Finished, ever.
    done: u64,
    standby: Option<Arc<Standby>>,
    /// The watchdog waits for an ioctl, not for a tick.
    asleep: bool,
}

enum Flow {
    /// Another thread reads now: wait as a standby.
    Park,
    /// The connection ended.
    End,
}

/// Serves `fs` on the connection `fd` from now on, on threads of its own, until the
/// connection ends.
pub(crate) fn serve(fd: OwnedFd, fs: DeviceFs) -> std::io::Result<()> {
    let server = Arc::new(Server {
        fd,
        fs,
        order: Mutex::new(()),
        idle: Mutex::new(vec![]),
        cover: Mutex::default(),
        watch: Condvar::new(),
        ended: AtomicBool::new(false),
    });
    let me = Arc::new(Standby::new()?);
    server.spawn(me, true)?;
    let watchdog = server.clone();
    std::thread::Builder::new()
        .name("fuse-watch".into())
        .spawn(move || watchdog.watch())
        .map(drop)
}

impl Standby {
    fn new() -> nix::Result<Standby> {
        Ok(Standby {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            armed: AtomicBool::new(false),
        })
    }

    /// Watches `fd`: a request there (one already queued included) wakes this standby's
    /// thread, once (edge-triggered).
    fn arm(&self, fd: &OwnedFd) -> nix::Result<()> {
        self.armed.store(true, Ordering::Release);
        let events = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
        self.epoll
            .add(fd.as_fd(), EpollEvent::new(events, 0))
            .inspect_err(|_| self.armed.store(false, Ordering::Release))
    }

    /// Takes the arming back, or finds it taken (by the standby, now awake).
    fn claim(&self) -> bool {
        self.armed
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn disarm(&self, fd: &OwnedFd) {
        let _ = self.epoll.delete(fd.as_fd());
    }

    /// Waits until armed and woken.
    fn wait(&self) {
        let mut events = [EpollEvent::empty()];
        while let Err(Errno::EINTR) = self.epoll.wait(&mut events, EpollTimeout::NONE) {}
    }
}

impl Server {
    fn spawn(self: &Arc<Self>, me: Arc<Standby>, reader: bool) -> std::io::Result<()> {
        let server = self.clone();
        std::thread::Builder::new()
            .name("fuse".into())
            .spawn(move || server.run(me, reader))
            .map(drop)
    }

    fn run(self: Arc<Self>, me: Arc<Standby>, mut reader: bool) {
        let mut buf = vec![0u8; BUFFER];
        loop {
            if !reader {
                me.wait();
                if self.ended.load(Ordering::Acquire) {
                    return;
                }
                if !me.claim() {
                    continue; // taken back: no ioctl is left, and the reader reads
                }
                me.disarm(&self.fd);
                self.uncover(&me);
            }
            reader = false;
            // Blocking: a standby woken for a request reads next, whoever reads now.
            let order = self.order.lock().unwrap_or_else(|e| e.into_inner());
            match self.read_and_serve(&mut buf, order) {
                Flow::Park if self.park(&me) => {}
                Flow::Park => return,
                Flow::End => return self.end(),
            }
        }
    }

    /// Reads and serves requests while this thread holds `order`.
    fn read_and_serve<'s>(
        self: &'s Arc<Self>,
        buf: &mut [u8],
        mut order: MutexGuard<'s, ()>,
    ) -> Flow {
        loop {
            let n = match nix::unistd::read(&self.fd, buf) {
                Ok(n) => n,
                // Withdrawn by its caller, or a signal.
                Err(Errno::EINTR | Errno::ENOENT | Errno::EAGAIN) => continue,
                // The connection is gone: unmounted, or aborted.
                Err(Errno::ENODEV) => return Flow::End,
                Err(e) => {
                    log::error!("fuse reader: read: {e}");
                    return Flow::End;
                }
            };
            let Ok((header, body)) = InHeader::read_from_prefix(&buf[..n]) else {
                log::error!("fuse reader: a request of {n} bytes");
                continue;
            };
            let req = Request { header, body };
            if header.opcode != opcode::IOCTL {
                let reply = match ops::handler(header.opcode) {
                    Some(handler) => handler(&self.fs, &req).into(),
                    None => Reply::Err(Errno::ENOSYS),
                };
                self.reply(header.unique, reply);
                continue;
            }
            let ioctl = match ops::ioctl_begin(&self.fs, &req) {
                Ok(ioctl) => ioctl,
                Err(e) => {
                    self.reply(header.unique, Reply::Err(e));
                    continue;
                }
            };
            self.cover();
            drop(order);
            let reply = ioctl.run();
            self.covered();
            // Reading on before answering: once answered, the caller's next request must
            // find this thread, not wake another.
            order = match self.order.try_lock() {
                Ok(o) => o,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    self.reply(header.unique, reply);
                    return Flow::Park;
                }
            };
            self.reply(header.unique, reply);
        }
    }

    /// Counts an ioctl about to be served without `order`.
    fn cover(&self) {
        let mut cover = self.cover.lock().unwrap_or_else(|e| e.into_inner());
        cover.ioctls += 1;
        if cover.asleep {
            cover.asleep = false;
            self.watch.notify_one();
        }
    }

    /// The watchdog: arms a standby when ioctls go a whole tick without one finishing.
    fn watch(self: Arc<Self>) {
        let (mut quiet, mut last_done) = (0, None);
        loop {
            std::thread::sleep(TICK);
            let mut cover = self.cover.lock().unwrap_or_else(|e| e.into_inner());
            if self.ended.load(Ordering::Acquire) {
                return;
            }
            if cover.ioctls == 0 {
                last_done = None;
                quiet += 1;
                if quiet >= QUIET_TICKS {
                    cover.asleep = true;
                    let cover = self
                        .watch
                        .wait_while(cover, |c| c.asleep && !self.ended.load(Ordering::Acquire))
                        .unwrap_or_else(|e| e.into_inner());
                    drop(cover);
                    quiet = 0;
                }
                continue;
            }
            quiet = 0;
            // Stalled, and no one reads (a thread that holds `order` is reading).
            if cover.standby.is_none()
                && last_done == Some(cover.done)
                && self.order.try_lock().is_ok()
            {
                cover.standby = self.arm_standby();
            }
            last_done = Some(cover.done);
        }
    }

    fn arm_standby(self: &Arc<Self>) -> Option<Arc<Standby>> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let fresh = idle.is_none();
        let standby = match idle {
            Some(s) => s,
            None => Arc::new(
                Standby::new()
                    .inspect_err(|e| log::error!("epoll: {e}"))
                    .ok()?,
            ),
        };
        if let Err(e) = standby.arm(&self.fd) {
            log::error!("cannot arm a fuse standby: {e}");
            return None;
        }
        if fresh {
            if let Err(e) = self.spawn(standby.clone(), false) {
                log::error!("cannot start a fuse reader: {e}");
                return None;
            }
        }
        Some(standby)
    }

    /// An ioctl is done: after the last, the standby is disarmed and idle again unless it
    /// woke.
    fn covered(&self) {
        let mut cover = self.cover.lock().unwrap_or_else(|e| e.into_inner());
        cover.ioctls -= 1;
        cover.done += 1;
        if cover.ioctls > 0 {
            return;
        }
        if let Some(standby) = cover.standby.take_if(|s| s.claim()) {
            standby.disarm(&self.fd);
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(standby);
        }
    }

    /// The armed standby `me` woke: it reads next, and the next ioctl arms another.
    fn uncover(&self, me: &Arc<Standby>) {
        let mut cover = self.cover.lock().unwrap_or_else(|e| e.into_inner());
        cover.standby.take_if(|s| Arc::ptr_eq(s, me));
    }

    /// Makes this thread idle; `false` if it should end instead.
    fn park(&self, me: &Arc<Standby>) -> bool {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if self.ended.load(Ordering::Acquire) || idle.len() >= MAX_IDLE {
            return false;
        }
        idle.push(me.clone());
        true
    }

    /// The connection is gone: every idle thread wakes (an armed standby sees the dead
    /// connection at once) and ends.
    fn end(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        self.ended.store(true, Ordering::Release);
        for s in idle.drain(..) {
            let _ = s.arm(&self.fd);
        }
        drop(idle);
        let _cover = self.cover.lock().unwrap_or_else(|e| e.into_inner());
        self.watch.notify_one();
    }

    fn reply(&self, unique: u64, reply: Reply) {
        let (error, body) = match reply {
            Reply::Ok(body) => (0, body),
            Reply::Err(e) => (-(e as i32), vec![]),
            Reply::None => return,
        };
        let header = OutHeader {
            len: (size_of::<OutHeader>() + body.len()) as u32,
            error,
            unique,
        };
        let iov = [IoSlice::new(header.as_bytes()), IoSlice::new(&body)];
        match nix::sys::uio::writev(&self.fd, &iov) {
            // ENOENT: the caller was interrupted and no one waits for this answer any more.
            Ok(_) | Err(Errno::ENOENT) => {}
            Err(e) => log::debug!("fuse reply to {unique}: {e}"),
        }
    }
}
