//! The benchmarks' baseline: FUSE's own cost of an ioctl. A plain fuser server, one thread,
//! whose file DIR/sev answers every ioctl at once with its own argument; nothing of vfs or
//! sevd. Mounted at DIR until SIGTERM or SIGINT, then detached.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use fuser::{
    Config, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, IoctlFlags,
    MountOption, ReplyAttr, ReplyEntry, ReplyIoctl, ReplyOpen, Request,
};
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{SigSet, Signal};

const FILE: INodeNo = INodeNo(2);

struct Noop;

fn attr(ino: INodeNo) -> FileAttr {
    let dir = ino == INodeNo::ROOT;
    FileAttr {
        ino,
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: if dir { 0o755 } else { 0o600 },
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

impl Filesystem for Noop {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == "sev" {
            reply.entry(&Duration::from_secs(60), &attr(FILE), fuser::Generation(0));
        } else {
            reply.error(fuser::Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&Duration::from_secs(60), &attr(ino));
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
