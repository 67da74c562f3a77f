//! The benchmarks' baseline: FUSE's own cost of an ioctl. A plain fuser server, one thread,
//! whose file DIR/sev answers every ioctl at once with its own argument; nothing of vfs or
//! sevd. Mounted at DIR until SIGTERM or SIGINT, then detached.

use std::ffi::OsStr;
use std::path::PathBuf;

use fuser::{
    Config, FileAttr, FileHandle, Filesystem, FopenFlags, INodeNo, IoctlFlags, MountOption,
    ReplyAttr, ReplyEntry, ReplyIoctl, ReplyOpen, Request,
};
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{SigSet, Signal};

struct Noop;

fn attr(ino: INodeNo) -> FileAttr {
    tests::fuse_file::attr(ino, 0, 0o600)
}

impl Filesystem for Noop {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        tests::fuse_file::lookup(parent, name, "sev", attr(tests::fuse_file::FILE), reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&tests::fuse_file::TTL, &attr(ino));
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: fuser::OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(1), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.ioctl(0, in_data);
    }
}

fn main() {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fuse-noop DIR");
        std::process::exit(2);
    };
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if signals.thread_block().is_err() {
        std::process::exit(1);
    }
    let mut config = Config::default();
    config.mount_options = vec![MountOption::FSName("sevd-noop".into())];
    let session = match fuser::Session::new(Noop, &dir, &config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fuse-noop: mount: {e}");
            std::process::exit(1);
        }
    };
    std::thread::spawn(move || session.run());
    let _ = signals.wait();
    // Detached here, not by the session: fuser's unmount may wait on open files.
    let _ = umount2(&dir, MntFlags::MNT_DETACH);
    std::process::exit(0);
}
