//! A FUSE file whose pages never arrive: every READ is held, never answered. A process that
//! maps it and hands the mapping to a driver makes the driver's `process_vm_readv` wait until
//! this server dies. Mounted at DIR (file DIR/stall, 1 MiB) until SIGTERM or SIGKILL.

use std::ffi::OsStr;
use std::sync::Mutex;

use fuser::{
    Config, FileAttr, FileHandle, Filesystem, FopenFlags, INodeNo, LockOwner, MountOption,
    ReplyAttr, ReplyData, ReplyEntry, ReplyOpen, Request,
};

const SIZE: u64 = 1 << 20;

struct Stall {
    /// READ replies held forever (a dropped reply would answer EIO).
    held: Mutex<Vec<ReplyData>>,
}

fn attr(ino: INodeNo) -> FileAttr {
    tests::fuse_file::attr(ino, SIZE, 0o666)
}

impl Filesystem for Stall {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        tests::fuse_file::lookup(parent, name, "stall", attr(tests::fuse_file::FILE), reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&tests::fuse_file::TTL, &attr(ino));
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: fuser::OpenFlags, reply: ReplyOpen) {
        // Keep the page cache on open: otherwise a second open waits for the held page.
        reply.opened(FileHandle(1), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(reply);
    }
}

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: stall-fuse DIR");
        std::process::exit(2);
    };
    let mut config = Config::default();
    config.mount_options = vec![MountOption::FSName("sevd-test-stall".into())];
    config.acl = fuser::SessionACL::All;
    let fs = Stall {
        held: Mutex::new(vec![]),
    };
    let session = match fuser::Session::new(fs, std::path::Path::new(&dir), &config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("stall-fuse: mount: {e}");
            std::process::exit(1);
        }
    };
    println!("mounted");
    let _ = session.run();
}
