//! The FUSE file system: a directory of devices, or one device as the mount's root file.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, IoctlFlags, LockOwner,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen,
    ReplyWrite, Request, WriteFlags,
};

use crate::fence::{Member, ReleaseFence, MAX_BACKGROUND};
use crate::workers::Workers;
use crate::{Caller, CharDevice, Errno, IoctlRequest, OpenFile, OpenFlags, Pid};

/// File handles come from one counter for the whole process, not one per mount: a device
/// mounted at several paths (`<mountpoint>/sev-vm` and a `--link` drop-in) keys its per-file
/// state by handle, and two mounts numbering from 1 would hand one caller another's file.
static NEXT_FH: AtomicU64 = AtomicU64::new(1);

/// Attributes never change while mounted; let the kernel cache them.
const TTL: Duration = Duration::from_secs(3600);

/// The bytes of a served read-only file, replaceable while it is served.
#[derive(Debug)]
pub struct SharedFile(std::sync::RwLock<Arc<[u8]>>);

impl SharedFile {
    /// A file holding `data`.
    pub fn new(data: Vec<u8>) -> Arc<Self> {
        Arc::new(SharedFile(std::sync::RwLock::new(data.into())))
    }

    /// Replaces the bytes.
    pub fn set(&self, data: Vec<u8>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = data.into();
    }

    /// The bytes now.
    pub fn get(&self) -> Arc<[u8]> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Owner, group and permission bits of the device files (as a udev rule sets them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode {
    /// Permission bits, e.g. 0o600.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Default for FileMode {
    /// root:root 0600, as devtmpfs creates `/dev/sev`.
    fn default() -> Self {
        FileMode {
            perm: 0o600,
            uid: 0,
            gid: 0,
        }
    }
}

enum Layout {
    /// Root is a directory holding the devices as inodes 2, 3, ..., then read-only data
    /// files.
    Dir(
        Vec<(String, Arc<dyn CharDevice>)>,
        Vec<(String, Arc<SharedFile>)>,
    ),
    /// Root is the device itself (a mount on a regular file).
    File(Arc<dyn CharDevice>),
}

/// A FUSE file system serving devices.
pub struct DeviceFs {
    layout: Layout,
    mode: FileMode,
    workers: Workers,
    open: Mutex<HashMap<u64, (u64, OpenFile)>>,
    fence: Option<Member>,
}

impl DeviceFs {
    /// A directory holding `devices` by name.
    pub fn dir(devices: Vec<(String, Arc<dyn CharDevice>)>, mode: FileMode) -> Self {
        Self::new(Layout::Dir(devices, vec![]), mode)
    }

    /// Adds a read-only file `name` holding `data` (root's, mode 0444) beside the devices of
    /// a directory; a mount whose root is a device has no room for one and ignores it.
    pub fn with_file(self, name: &str, data: Vec<u8>) -> Self {
        self.with_shared_file(name, SharedFile::new(data))
    }

    /// A read-only file in the root directory whose bytes the server may replace while it is
    /// served (`SharedFile::set`); readers always see the current bytes.
    pub fn with_shared_file(mut self, name: &str, file: Arc<SharedFile>) -> Self {
        if let Layout::Dir(_, files) = &mut self.layout {
            files.push((name.to_string(), file));
        }
        self
    }

    /// One device that is the mount's root, for mounting directly on a regular file.
    pub fn file(device: Arc<dyn CharDevice>, mode: FileMode) -> Self {
        Self::new(Layout::File(device), mode)
    }

    fn new(layout: Layout, mode: FileMode) -> Self {
        DeviceFs {
            layout,
            mode,
            workers: Workers::default(),
            open: Mutex::new(HashMap::new()),
            fence: None,
        }
    }

    /// Joins `fence`: commands here wait for releases queued on the fence's other
    /// connections, and theirs for the releases here (see [`ReleaseFence`]).
    pub fn with_fence(mut self, fence: &Arc<ReleaseFence>) -> Self {
        self.fence = Some(fence.member());
        self
    }

    pub(crate) fn fence_member(&self) -> Option<Member> {
        self.fence.clone()
    }

    /// Whether the mount's root is a regular file.
    pub fn is_file(&self) -> bool {
        matches!(self.layout, Layout::File(_))
    }

    fn device(&self, ino: INodeNo) -> Option<&Arc<dyn CharDevice>> {
        match &self.layout {
            Layout::File(dev) if ino == INodeNo::ROOT => Some(dev),
            Layout::Dir(devs, _) => ino
                .0
                .checked_sub(2)
                .and_then(|i| devs.get(i as usize))
                .map(|(_, d)| d),
            _ => None,
        }
    }

    /// The data file at `ino`.
    fn data(&self, ino: INodeNo) -> Option<Arc<[u8]>> {
        let Layout::Dir(devs, files) = &self.layout else {
            return None;
        };
        ino.0
            .checked_sub(2 + devs.len() as u64)
            .and_then(|i| files.get(i as usize))
            .map(|(_, d)| d.get())
    }

    /// How long the kernel may keep an inode's attributes: files whose bytes may change are
    /// asked again each time.
    fn ttl(&self, ino: INodeNo) -> Duration {
        if self.data(ino).is_some() {
            Duration::ZERO
        } else {
            TTL
        }
    }

    /// Every name in the root directory with its inode, devices first.
    fn entries(&self) -> Vec<(INodeNo, String)> {
        let Layout::Dir(devs, files) = &self.layout else {
            return vec![];
        };
        devs.iter()
            .map(|(n, _)| n)
            .chain(files.iter().map(|(n, _)| n))
            .enumerate()
            .map(|(i, n)| (INodeNo(i as u64 + 2), n.clone()))
            .collect()
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let now = SystemTime::UNIX_EPOCH;
        let dir = matches!(self.layout, Layout::Dir(..)) && ino == INodeNo::ROOT;
        let data = self.data(ino);
        if !dir && data.is_none() && self.device(ino).is_none() {
            return None;
        }
        let (perm, uid, gid) = match (dir, &data) {
            (true, _) => (0o755, 0, 0),
            (false, Some(_)) => (0o444, 0, 0),
            (false, None) => (self.mode.perm, self.mode.uid, self.mode.gid),
        };
        Some(FileAttr {
            ino,
            size: data.map_or(0, |d| d.len() as u64),
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm,
            nlink: if dir { 2 } else { 1 },
            uid,
            gid,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        })
    }

    fn file_for(&self, fh: FileHandle) -> Option<(u64, OpenFile)> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh.0)
            .copied()
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        pid: Pid(req.pid()),
        uid: req.uid(),
        gid: req.gid(),
    }
}

/// The thread-group id (process id) of a thread, from `/proc/<tid>/status`.
pub fn tgid(tid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(tid)
}

fn errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e as i32)
}

impl Filesystem for DeviceFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        // RELEASEs straight onto the connection's queue, never held back (crate::fence).
        let _ = config.set_max_background(MAX_BACKGROUND);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT {
            let found = self
                .entries()
                .into_iter()
                .find(|(_, n)| OsStr::new(n) == name);
            if let Some(attr) = found.and_then(|(ino, _)| self.attr(ino)) {
                reply.entry(&self.ttl(attr.ino), &attr, fuser::Generation(0));
                return;
            }
        }
        reply.error(fuser::Errno::ENOENT);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&self.ttl(ino), &attr),
            None => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if !matches!(self.layout, Layout::Dir(..)) || ino != INodeNo::ROOT {
            reply.error(fuser::Errno::ENOTDIR);
            return;
        }
        let mut entries = vec![
            (INodeNo::ROOT, FileType::Directory, ".".to_string()),
            (INodeNo::ROOT, FileType::Directory, "..".to_string()),
        ];
        for (ino, name) in self.entries() {
            entries.push((ino, FileType::RegularFile, name));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: fuser::OpenFlags, reply: ReplyOpen) {
        if self.data(ino).is_some() {
            // Read-only, whoever asks; no per-file state.
            if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
                reply.error(fuser::Errno::EACCES);
            } else {
                // Not from the page cache: the bytes may have been replaced.
                reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
            }
            return;
        }
        let Some(dev) = self.device(ino) else {
            reply.error(fuser::Errno::EISDIR);
            return;
        };
        let file = OpenFile {
            fh: NEXT_FH.fetch_add(1, Ordering::Relaxed),
            flags: OpenFlags(flags.0),
            opener: Pid(tgid(req.pid())),
        };
        match dev.open(&caller(req), &file) {
            Ok(()) => {
                self.open
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(file.fh, (ino.0, file));
                if let (Some(fence), true) = (&self.fence, dev.release_is_shared()) {
                    fence.open.fetch_add(1, Ordering::AcqRel);
                }
                // Direct I/O: no page cache, as for a character device.
                let mut fopen = FopenFlags::FOPEN_DIRECT_IO;
                if !dev.seekable() {
                    fopen |= FopenFlags::FOPEN_NONSEEKABLE;
                }
                reply.opened(FileHandle(file.fh), fopen);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let entry = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        if let Some((ino, file)) = entry {
            if let Some(dev) = self.device(INodeNo(ino)) {
                dev.release(&file);
                if let (Some(fence), true) = (&self.fence, dev.release_is_shared()) {
                    fence.open.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if let Some(d) = self.data(ino) {
            let start = (offset as usize).min(d.len());
            let end = start.saturating_add(size as usize).min(d.len());
            return reply.data(&d[start..end]);
        }
        match (self.device(ino), self.file_for(fh)) {
            (Some(dev), Some((_, file))) => match dev.read(&file, offset, size) {
                Ok(bytes) => reply.data(&bytes[..bytes.len().min(size as usize)]),
                Err(e) => reply.error(errno(e)),
            },
            _ => reply.error(fuser::Errno::EINVAL),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(fuser::Errno::EINVAL);
    }

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        if self.data(ino).is_some() {
            reply.error(fuser::Errno::ENOTTY);
            return;
        }
        let (Some(dev), Some((_, file))) = (self.device(ino), self.file_for(fh)) else {
            reply.error(fuser::Errno::EBADF);
            return;
        };
        // A caller outside the daemon's pid namespace arrives as pid 0: its memory is
        // unreachable.
        if req.pid() == 0 {
            reply.error(fuser::Errno::EIO);
            return;
        }
        let caller = caller(req);
        let Some(permit) = self.workers.admit(caller.uid) else {
            log::warn!(
                "uid {} has too many ioctls in flight; this one gets EAGAIN",
                caller.uid
            );
            reply.error(fuser::Errno::EAGAIN);
            return;
        };
        // On a worker: the driver may wait on its caller, the FUSE loop must not.
        let dev = dev.clone();
        let in_data = in_data.to_vec();
        let compat = flags.contains(IoctlFlags::FUSE_IOCTL_COMPAT);
        let fence = self.fence.clone();
        self.workers.run(permit, move || {
            // Releases already queued on other connections go first, as they would in a
            // driver (crate::fence). Here, on the worker: the loop must not wait.
            if let Some(f) = &fence {
                f.fence.wait(f.id);
            }
            let request = IoctlRequest {
                cmd,
                in_data: &in_data,
                out_size,
                compat,
            };
            match dev.ioctl(&caller, &file, request) {
                Ok(out) => {
                    let len = out.data.len().min(out_size as usize);
                    reply.ioctl(out.result, &out.data[..len]);
                }
                // Never ENOSYS: older kernels then disable ioctls for the whole connection.
                Err(Errno::ENOSYS) => reply.error(fuser::Errno::ENOTTY),
                Err(e) => reply.error(errno(e)),
            }
        });
    }
}
