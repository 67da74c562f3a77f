//! The threads that read a FUSE connection, each serving what it read, as libfuse's
//! multithreaded loop does: no hand-off between a reader and a worker, so a command costs
//! its read, its reply and the caller's memory, nothing more.
//!
//! A driver may block on its caller (a caller whose memory stalls `process_vm_readv`); that
//! must hold up that caller alone. So a reader that is about to serve an ioctl first makes
//! sure another thread is waiting to read, starting one when none is; idle threads beyond
//! one end after a while.
//!
//! Order: the kernel queues requests first in, first out, and a driver sees a `close` before
//! whatever its caller does next (crate::fence). Threads wait for work in their own epoll
//! (EPOLLEXCLUSIVE: one wakes per request), then read under one lock, and serve every
//! request but IOCTL before letting go of it: a RELEASE is served before anything queued
//! after it is even read. An ioctl lets go once it is admitted.

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
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
/// An idle reader beyond the first ends after this long without work.
const IDLE_MS: u16 = 30_000;

const _: () = assert!(BUFFER >= abi::MIN_READ_BUFFER);

/// One connection and its file system.
struct Server {
    /// The connection (`/dev/fuse`), non-blocking: readers wait in epoll.
    fd: OwnedFd,
    fs: DeviceFs,
    /// Held from a read until the request may be overtaken.
    order: Mutex<()>,
    /// Threads waiting for a request (or started to).
    idle: AtomicUsize,
}

/// Serves `fs` on the connection `fd` from now on, on threads of its own, until the
/// connection ends.
pub(crate) fn serve(fd: OwnedFd, fs: DeviceFs) -> std::io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFL)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    let server = Arc::new(Server {
        fd,
        fs,
        order: Mutex::new(()),
        idle: AtomicUsize::new(0),
    });
    server.start_reader()
}

impl Server {
    fn start_reader(self: &Arc<Self>) -> std::io::Result<()> {
        // Idle from now: another reader about to serve an ioctl need not start one more.
        self.idle.fetch_add(1, Ordering::AcqRel);
        let server = self.clone();
        std::thread::Builder::new()
            .name("fuse".into())
            .spawn(move || server.read_loop())
            .map(drop)
            .inspect_err(|_| {
                self.idle.fetch_sub(1, Ordering::AcqRel);
            })
    }

    fn wait_set(&self) -> nix::Result<Epoll> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let events = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
        epoll.add(self.fd.as_fd(), EpollEvent::new(events, 0))?;
        Ok(epoll)
    }

    /// Ends an idle reader if another is idle.
    fn retire(&self) -> bool {
        self.idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > 1).then(|| n - 1)
            })
            .is_ok()
    }

    fn read_loop(self: Arc<Self>) {
        let epoll = match self.wait_set() {
            Ok(e) => e,
            Err(e) => {
                log::error!("fuse reader: epoll: {e}");
                self.idle.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        };
        let mut buf = vec![0u8; BUFFER];
        loop {
            let mut events = [EpollEvent::empty()];
            match epoll.wait(&mut events, EpollTimeout::from(IDLE_MS)) {
                Ok(0) if self.retire() => return,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    log::error!("fuse reader: epoll_wait: {e}");
                    self.idle.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
            }
            let order = self.order.lock().unwrap_or_else(|e| e.into_inner());
            let n = match nix::unistd::read(&self.fd, &mut buf) {
                Ok(n) => n,
                // Taken by another reader, or withdrawn by its caller.
                Err(Errno::EAGAIN | Errno::EINTR | Errno::ENOENT) => continue,
                // The connection is gone: unmounted, or aborted.
                Err(Errno::ENODEV) => {
                    self.idle.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
                Err(e) => {
                    log::error!("fuse reader: read: {e}");
                    self.idle.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
            };
            let Ok((header, body)) = InHeader::read_from_prefix(&buf[..n]) else {
                log::error!("fuse reader: a request of {n} bytes");
                continue;
            };
            self.idle.fetch_sub(1, Ordering::AcqRel);
            let req = Request { header, body };
            if header.opcode == opcode::IOCTL {
                match ops::ioctl_begin(&self.fs, &req) {
                    Err(e) => {
                        self.reply(header.unique, Reply::Err(e));
                        drop(order);
                    }
                    Ok(ioctl) => {
                        drop(order);
                        if self.idle.load(Ordering::Acquire) == 0 {
                            if let Err(e) = self.start_reader() {
                                // Served still; only a stalled caller could now hold others up.
                                log::error!("cannot start a fuse reader: {e}");
                            }
                        }
                        self.reply(header.unique, ioctl.run());
                    }
                }
            } else {
                let reply = match ops::handler(header.opcode) {
                    Some(handler) => handler(&self.fs, &req).into(),
                    None => Reply::Err(Errno::ENOSYS),
                };
                self.reply(header.unique, reply);
                drop(order);
            }
            self.idle.fetch_add(1, Ordering::AcqRel);
        }
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
