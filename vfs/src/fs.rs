//! The FUSE file system: a directory of devices, or one device as the mount's root file.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::abi::{self, ROOT_ID};
use crate::admission::Admission;
use crate::fence::{Member, ReleaseFence};
use crate::{CharDevice, OpenFile};

/// File handles come from one counter for the whole process, not one per mount: a device
/// mounted at several paths (`<mountpoint>/sev-vm` and a `--link` drop-in) keys its per-file
/// state by handle, and two mounts numbering from 1 would hand one caller another's file.
pub(crate) static NEXT_FH: AtomicU64 = AtomicU64::new(1);

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
    pub(crate) admission: Admission,
    /// Open device files by handle: their inode and the file.
    pub(crate) open: Mutex<HashMap<u64, (u64, OpenFile)>>,
    pub(crate) fence: Option<Member>,
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
            admission: Admission::default(),
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

    pub(crate) fn device(&self, ino: u64) -> Option<&Arc<dyn CharDevice>> {
        match &self.layout {
            Layout::File(dev) if ino == ROOT_ID => Some(dev),
            Layout::Dir(devs, _) => ino
                .checked_sub(2)
                .and_then(|i| devs.get(i as usize))
                .map(|(_, d)| d),
            _ => None,
        }
    }

    /// The data file at `ino`.
    pub(crate) fn data(&self, ino: u64) -> Option<Arc<[u8]>> {
        let Layout::Dir(devs, files) = &self.layout else {
            return None;
        };
        ino.checked_sub(2 + devs.len() as u64)
            .and_then(|i| files.get(i as usize))
            .map(|(_, d)| d.get())
    }

    /// Whether the root is a directory.
    pub(crate) fn is_dir(&self, ino: u64) -> bool {
        matches!(self.layout, Layout::Dir(..)) && ino == ROOT_ID
    }

    /// How long the kernel may keep an inode's attributes: files whose bytes may change are
    /// asked again each time.
    pub(crate) fn ttl(&self, ino: u64) -> Duration {
        if self.data(ino).is_some() {
            Duration::ZERO
        } else {
            TTL
        }
    }

    /// Every name in the root directory with its inode, devices first.
    pub(crate) fn entries(&self) -> Vec<(u64, String)> {
        let Layout::Dir(devs, files) = &self.layout else {
            return vec![];
        };
        devs.iter()
            .map(|(n, _)| n)
            .chain(files.iter().map(|(n, _)| n))
            .enumerate()
            .map(|(i, n)| (i as u64 + 2, n.clone()))
            .collect()
    }

    /// An inode's attributes (all times the epoch: nothing here is ever modified).
    pub(crate) fn attr(&self, ino: u64) -> Option<abi::Attr> {
        let dir = self.is_dir(ino);
        let data = self.data(ino);
        if !dir && data.is_none() && self.device(ino).is_none() {
            return None;
        }
        let (perm, uid, gid) = match (dir, &data) {
            (true, _) => (0o755, 0, 0),
            (false, Some(_)) => (0o444, 0, 0),
            (false, None) => (u32::from(self.mode.perm), self.mode.uid, self.mode.gid),
        };
        Some(abi::Attr {
            ino,
            size: data.map_or(0, |d| d.len() as u64),
            mode: perm | if dir { libc::S_IFDIR } else { libc::S_IFREG },
            nlink: if dir { 2 } else { 1 },
            uid,
            gid,
            blksize: 4096,
            ..Default::default()
        })
    }

    pub(crate) fn file_for(&self, fh: u64) -> Option<(u64, OpenFile)> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .copied()
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
