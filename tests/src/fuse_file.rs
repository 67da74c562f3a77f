//! What the tests' own small fuser servers (src/bin/fuse-noop.rs, src/bin/stall-fuse.rs)
//! share: a root directory holding one file.

use std::time::SystemTime;

use fuser::{FileAttr, FileType, INodeNo};

/// The one file's inode.
pub const FILE: INodeNo = INodeNo(2);

/// The attributes of the root (a directory, 0755) or the file (`size` bytes, `perm`).
pub fn attr(ino: INodeNo, size: u64, perm: u16) -> FileAttr {
    let dir = ino == INodeNo::ROOT;
    FileAttr {
        ino,
        size: if dir { 0 } else { size },
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
        perm: if dir { 0o755 } else { perm },
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

/// Answers a LOOKUP: `name` in the root is the file, anything else ENOENT.
pub fn lookup(
    parent: INodeNo,
    asked: &std::ffi::OsStr,
    name: &str,
    file: FileAttr,
    reply: fuser::ReplyEntry,
) {
    if parent == INodeNo::ROOT && asked == name {
        reply.entry(&TTL, &file, fuser::Generation(0));
    } else {
        reply.error(fuser::Errno::ENOENT);
    }
}

/// How long the kernel may keep what it was told.
pub const TTL: std::time::Duration = std::time::Duration::from_secs(60);
