//! A FUSE shim that serves device-like files.
//!
//! A [`CharDevice`] gets `open`, `release` and `ioctl`, with the caller's identity
//! ([`Caller`]), the file's open flags ([`OpenFile`]) and access to the caller's memory
//! ([`CallerMemory`]) so it can follow the pointers inside ioctl arguments. [`DeviceFs`] puts
//! devices in a directory, or one device directly on a file ([`mount`]). Nothing here knows
//! about SEV.
#![deny(missing_docs)]

mod abi;
mod admission;
mod client;
mod fence;
mod fs;
mod memory;
mod mount;
mod ops;
mod serve;

pub use client::{ioctl_bytes, ioctl_bytes_sized, ioctl_new_fd, ioctl_value};
pub use fence::ReleaseFence;
pub use fs::tgid;
pub use fs::{DeviceFs, FileMode, SharedFile};
pub use memory::{CallerMemory, MemError, ProcessMemory, UserAddr, VecMemory};
pub use mount::{
    detach, find_mounts, fuse_dev_of, fuse_mount, fuse_source, mount, FuseMount, MountHandle,
    MountOptions,
};
pub use nix::errno::Errno;

/// The thread that issued a request (FUSE gives the thread id, which
/// `process_vm_readv` accepts as well as a process id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pid(pub u32);

/// Who issued a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Calling thread.
    pub pid: Pid,
    /// Its file-system uid.
    pub uid: u32,
    /// Its file-system gid.
    pub gid: u32,
}

impl Caller {
    /// The caller's memory.
    pub fn memory(&self) -> ProcessMemory {
        ProcessMemory::new(self.pid)
    }
}

/// `open(2)` flags as the kernel passed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFlags(pub i32);

impl OpenFlags {
    /// Whether the file was opened for writing (the kernel's `FMODE_WRITE`).
    pub fn writable(self) -> bool {
        matches!(self.0 & libc::O_ACCMODE, libc::O_WRONLY | libc::O_RDWR)
    }
}

/// One open file description of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFile {
    /// Handle, unique across every mount of this process for its whole life.
    pub fh: u64,
    /// Its open flags.
    pub flags: OpenFlags,
    /// The process that opened it (thread group of the opening thread, when known).
    pub opener: Pid,
}

/// An ioctl as the kernel forwarded it. FUSE regular files get restricted ioctls: the kernel
/// copied `_IOC_SIZE(cmd)` bytes in (for `_IOC_WRITE`) and will copy the reply out (for
/// `_IOC_READ`).
#[derive(Debug, Clone, Copy)]
pub struct IoctlRequest<'a> {
    /// The request number.
    pub cmd: u32,
    /// The argument's bytes, copied in by the kernel.
    pub in_data: &'a [u8],
    /// How many bytes the kernel will copy back.
    pub out_size: u32,
    /// A 32-bit caller on a 64-bit kernel (`FUSE_IOCTL_COMPAT`).
    pub compat: bool,
}

/// A completed ioctl: the return value (0 or a negative errno) and the bytes the kernel
/// copies back to the argument whatever the return value, as a driver's copy-back does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoctlReply {
    /// 0, or `-errno`.
    pub result: i32,
    /// Bytes for the caller's argument.
    pub data: Vec<u8>,
}

impl IoctlReply {
    /// Success with `data` copied back.
    pub fn ok(data: Vec<u8>) -> Self {
        IoctlReply { result: 0, data }
    }

    /// Failure with `errno`, `data` still copied back.
    pub fn failed(errno: Errno, data: Vec<u8>) -> Self {
        IoctlReply {
            result: -(errno as i32),
            data,
        }
    }
}

/// A device-like file. Handlers never panic on what callers send.
pub trait CharDevice: Send + Sync {
    /// `open(2)`. An error is returned to the caller.
    fn open(&self, _caller: &Caller, _file: &OpenFile) -> Result<(), Errno> {
        Ok(())
    }

    /// The last close of an open file description.
    fn release(&self, _file: &OpenFile) {}

    /// Whether a release changes what other nodes report (a VM's guest and ASID), so that a
    /// command on another connection must not be served before it ([`ReleaseFence`]).
    fn release_is_shared(&self) -> bool {
        false
    }

    /// `ioctl(2)`. `Err(errno)` fails the call without copying anything back (as a driver's
    /// early return does); `Ok(reply)` copies `reply.data` back and returns `reply.result`.
    fn ioctl(
        &self,
        caller: &Caller,
        file: &OpenFile,
        request: IoctlRequest<'_>,
    ) -> Result<IoctlReply, Errno>;

    /// `read(2)` or `pread(2)` of `size` bytes at `offset` (the file position, for a
    /// [`seekable`](CharDevice::seekable) device). Served before the next request is read
    /// (as `open` and `release` are), so it must not block. By default EINVAL, as `/dev/sev` answers.
    fn read(&self, _file: &OpenFile, _offset: u64, _size: u32) -> Result<Vec<u8>, Errno> {
        Err(Errno::EINVAL)
    }

    /// Whether the file has a position (lseek, pread), as the msr driver's files do;
    /// otherwise they are opened non-seekable.
    fn seekable(&self) -> bool {
        false
    }
}
