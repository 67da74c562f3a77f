//! The requests a device file system answers, in a table from opcode to handler (as a
//! driver's `file_operations`). Every handler here is quick and never waits on a caller, so
//! it is served in the order the kernel queued it (crate::serve); IOCTL, which may wait on
//! its caller's memory, is served in two steps: [`ioctl_begin`] in that order, the rest
//! after ([`Ioctl::run`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::abi::{self, opcode, InHeader};
use crate::admission::Permit;
use crate::fence::Member;
use crate::fs::{DeviceFs, NEXT_FH};
use crate::{Caller, CharDevice, Errno, IoctlRequest, OpenFile, OpenFlags, Pid};

/// A request as read: its header and the bytes after it.
pub(crate) struct Request<'a> {
    pub(crate) header: InHeader,
    pub(crate) body: &'a [u8],
}

impl Request<'_> {
    fn caller(&self) -> Caller {
        Caller {
            pid: Pid(self.header.pid),
            uid: self.header.uid,
            gid: self.header.gid,
        }
    }

    /// The fixed-size argument at the start of the body.
    fn arg<T: FromBytes>(&self) -> Result<T, Errno> {
        T::read_from_prefix(self.body)
            .map(|(arg, _)| arg)
            .map_err(|_| Errno::EINVAL)
    }
}

/// What a request is answered with.
pub(crate) enum Reply {
    /// Success, with these bytes after the header.
    Ok(Vec<u8>),
    /// Failure.
    Err(Errno),
    /// Nothing: FORGET and BATCH_FORGET are never answered.
    None,
}

impl Reply {
    fn of<T: IntoBytes + Immutable>(value: &T) -> Reply {
        Reply::Ok(value.as_bytes().to_vec())
    }
}

impl From<Result<Reply, Errno>> for Reply {
    fn from(r: Result<Reply, Errno>) -> Reply {
        r.unwrap_or_else(Reply::Err)
    }
}

type Handler = fn(&DeviceFs, &Request<'_>) -> Result<Reply, Errno>;

/// The handler of every request but IOCTL; `None` is ENOSYS (the kernel then stops sending
/// the optional ones, such as GETXATTR).
pub(crate) fn handler(op: u32) -> Option<Handler> {
    Some(match op {
        opcode::LOOKUP => lookup,
        opcode::FORGET | opcode::BATCH_FORGET => |_, _| Ok(Reply::None),
        opcode::GETATTR => getattr,
        opcode::OPEN => open,
        opcode::READ => read,
        opcode::WRITE => |_, _| Err(Errno::EINVAL),
        opcode::STATFS => statfs,
        opcode::RELEASE => release,
        opcode::FLUSH | opcode::RELEASEDIR | opcode::DESTROY => |_, _| Ok(Reply::Ok(vec![])),
        opcode::OPENDIR => opendir,
        opcode::READDIR => readdir,
        // Interrupts are not served: ENOSYS tells the kernel to send no more.
        opcode::INTERRUPT => |_, _| Err(Errno::ENOSYS),
        _ => return None,
    })
}

fn split(d: Duration) -> (u64, u32) {
    (d.as_secs(), d.subsec_nanos())
}

fn lookup(fs: &DeviceFs, req: &Request<'_>) -> Result<Reply, Errno> {
    let name = req.body.split(|&b| b == 0).next().unwrap_or_default();
    if req.header.nodeid != abi::ROOT_ID {
        return Err(Errno::ENOENT);
    }
    let (ino, _) = fs
        .entries()
        .into_iter()
        .find(|(_, n)| n.as_bytes() == name)
        .ok_or(Errno::ENOENT)?;
    let attr = fs.attr(ino).ok_or(Errno::ENOENT)?;
    let (secs, nsecs) = split(fs.ttl(ino));
    Ok(Reply::of(&abi::EntryOut {
        nodeid: ino,
        generation: 0,
        entry_valid: secs,
        attr_valid: secs,
        entry_valid_nsec: nsecs,
        attr_valid_nsec: nsecs,
        attr,
    }))
}

fn getattr(fs: &DeviceFs, req: &Request<'_>) -> Result<Reply, Errno> {
    let ino = req.header.nodeid;
    let attr = fs.attr(ino).ok_or(Errno::ENOENT)?;
    let (secs, nsecs) = split(fs.ttl(ino));
    Ok(Reply::of(&abi::AttrOut {
        attr_valid: secs,
        attr_valid_nsec: nsecs,
        dummy: 0,
        attr,
    }))
}

fn opened(fh: u64, open_flags: u32) -> Reply {
    Reply::of(&abi::OpenOut {
        fh,
        open_flags,
        padding: 0,
    })
}

fn open(fs: &DeviceFs, req: &Request<'_>) -> Result<Reply, Errno> {
    let arg: abi::OpenIn = req.arg()?;
    let ino = req.header.nodeid;
    if fs.data(ino).is_some() {
        // Read-only, whoever asks; no per-file state. Not from the page cache: the bytes may
        // have been replaced.
        if arg.flags as i32 & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(Errno::EACCES);
        }
        return Ok(opened(0, abi::FOPEN_DIRECT_IO));
    }
    let dev = fs.device(ino).ok_or(Errno::EISDIR)?;
    let file = OpenFile {
        fh: NEXT_FH.fetch_add(1, Ordering::Relaxed),
        flags: OpenFlags(arg.flags as i32),
        opener: Pid(crate::fs::tgid(req.header.pid)),
    };
    dev.open(&req.caller(), &file)?;
    fs.open
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(file.fh, (ino, file));
    if let (Some(fence), true) = (&fs.fence, dev.release_is_shared()) {
        fence.open.fetch_add(1, Ordering::AcqRel);
    }
    // Direct I/O: no page cache, as for a character device.
    let mut flags = abi::FOPEN_DIRECT_IO;
    if !dev.seekable() {
        flags |= abi::FOPEN_NONSEEKABLE;
    }
    Ok(opened(file.fh, flags))
}

fn release(fs: &DeviceFs, req: &Request<'_>) -> Result<Reply, Errno> {
    let arg: abi::ReleaseIn = req.arg()?;
    let entry = fs
        .open
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&arg.fh);
    if let Some((ino, file)) = entry {
        if let Some(dev) = fs.device(ino) {
            dev.release(&file);
            if let (Some(fence), true) = (&fs.fence, dev.release_is_shared()) {
                fence.open.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
    Ok(Reply::Ok(vec![]))
}

fn read(fs: &DeviceFs, req: &Request<'_>) -> Result<Reply, Errno> {
    let arg: abi::ReadIn = req.arg()?;
    let size = arg.size as usize;
    let ino = req.header.nodeid;
    if let Some(d) = fs.data(ino) {
        let start = usize::try_from(arg.offset).map_or(d.len(), |o| o.min(d.len()));
        let end = start.saturating_add(size).min(d.len());
        return Ok(Reply::Ok(d[start..end].to_vec()));
    }
    match (fs.device(ino), fs.file_for(arg.fh)) {
        (Some(dev), Some((_, file))) => {
            let mut bytes = dev.read(&file, arg.offset, arg.size)?;
            bytes.truncate(size);
            Ok(Reply::Ok(bytes))
        }
        _ => Err(Errno::EINVAL),
    }
}

fn statfs(_: &DeviceFs, _: &Request<'_>) -> Result<Reply, Errno> {
    // What fuser answered by default, and a STATFS must be answered: the release fence
    // (crate::fence) orders connections by it.
    Ok(Reply::of(&abi::StatfsOut {
        bsize: 512,
        namelen: 255,
        ..Default::default()
    }))
}

fn opendir(fs: &DeviceFs, req: &Request<'_>) -> Result<Reply, Errno> {
    if !fs.is_dir(req.header.nodeid) {
        return Err(Errno::ENOTDIR);
    }
    Ok(opened(0, 0))
}

fn readdir(fs: &DeviceFs, req: &Request<'_>) -> Result<Reply, Errno> {
    let arg: abi::ReadIn = req.arg()?;
    if !fs.is_dir(req.header.nodeid) {
        return Err(Errno::ENOTDIR);
    }
    let dir = (abi::ROOT_ID, libc::DT_DIR);
    let mut entries = vec![(dir, ".".to_string()), (dir, "..".to_string())];
    entries.extend(
        fs.entries()
            .into_iter()
            .map(|(ino, name)| ((ino, libc::DT_REG), name)),
    );
    let mut out = Vec::new();
    let skip = usize::try_from(arg.offset).unwrap_or(usize::MAX);
    for (i, ((ino, kind), name)) in entries.into_iter().enumerate().skip(skip) {
        let dirent = abi::Dirent {
            ino,
            off: i as u64 + 1,
            namelen: name.len() as u32,
            kind: u32::from(kind),
        };
        // Records are padded to 8 bytes (FUSE_DIRENT_ALIGN).
        let len = (size_of::<abi::Dirent>() + name.len()).next_multiple_of(8);
        if out.len() + len > arg.size as usize {
            break;
        }
        out.extend_from_slice(dirent.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.resize(out.len().next_multiple_of(8), 0);
    }
    Ok(Reply::Ok(out))
}

/// An ioctl admitted and decoded, to be served once the next request may be read.
pub(crate) struct Ioctl<'a> {
    dev: &'a Arc<dyn CharDevice>,
    caller: Caller,
    file: OpenFile,
    request: IoctlRequest<'a>,
    fence: Option<&'a Member>,
    _permit: Permit,
}

/// The first step of an IOCTL: what must be seen in the kernel's order (the file, the
/// caller's share of requests in flight). `Err` is the reply.
pub(crate) fn ioctl_begin<'a>(fs: &'a DeviceFs, req: &Request<'a>) -> Result<Ioctl<'a>, Errno> {
    let (arg, data) = abi::IoctlIn::read_from_prefix(req.body).map_err(|_| Errno::EINVAL)?;
    let ino = req.header.nodeid;
    if fs.data(ino).is_some() {
        return Err(Errno::ENOTTY);
    }
    let (Some(dev), Some((_, file))) = (fs.device(ino), fs.file_for(arg.fh)) else {
        return Err(Errno::EBADF);
    };
    // A caller outside the daemon's pid namespace arrives as pid 0: its memory is
    // unreachable.
    if req.header.pid == 0 {
        return Err(Errno::EIO);
    }
    let in_data = data.get(..arg.in_size as usize).ok_or(Errno::EINVAL)?;
    let caller = req.caller();
    let Some(permit) = fs.admission.admit(caller.uid) else {
        log::warn!(
            "uid {} has too many ioctls in flight; this one gets EAGAIN",
            caller.uid
        );
        return Err(Errno::EAGAIN);
    };
    Ok(Ioctl {
        dev,
        caller,
        file,
        request: IoctlRequest {
            cmd: arg.cmd,
            in_data,
            out_size: arg.out_size,
            compat: arg.flags & abi::FUSE_IOCTL_COMPAT != 0,
        },
        fence: fs.fence.as_ref(),
        _permit: permit,
    })
}

impl Ioctl<'_> {
    /// The rest: the driver, which may wait on its caller.
    pub(crate) fn run(self) -> Reply {
        // Releases already queued on other connections go first, as they would in a driver
        // (crate::fence).
        if let Some(f) = self.fence {
            f.fence.wait(f.id);
        }
        match self.dev.ioctl(&self.caller, &self.file, self.request) {
            Ok(out) => {
                let len = out.data.len().min(self.request.out_size as usize);
                let head = abi::IoctlOut {
                    result: out.result,
                    ..Default::default()
                };
                let mut bytes = Vec::with_capacity(size_of::<abi::IoctlOut>() + len);
                bytes.extend_from_slice(head.as_bytes());
                bytes.extend_from_slice(&out.data[..len]);
                Reply::Ok(bytes)
            }
            // Never ENOSYS: older kernels then disable ioctls for the whole connection.
            Err(Errno::ENOSYS) => Reply::Err(Errno::ENOTTY),
            Err(e) => Reply::Err(e),
        }
    }
}
