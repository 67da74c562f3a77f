//! Mounting, finding and detaching FUSE mounts (reference/fuse-notes.md §6, §7, §9).
//!
//! fuser mounts and negotiates the protocol (INIT); the requests after it are served by
//! crate::serve. fuser's own unmount paths leave stale mounts behind when a file is still
//! open, or hang; so mounts are detached here with `umount2(MNT_DETACH)`, which always
//! succeeds at once.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use fuser::{Config, KernelConfig, MountOption, SessionACL};
use nix::mount::{umount2, MntFlags};

use crate::fence::{Member, MAX_BACKGROUND};
use crate::DeviceFs;

/// What fuser is given to mount with: it answers INIT, and nothing after.
struct Handshake;

impl fuser::Filesystem for Handshake {
    fn init(&mut self, _req: &fuser::Request, config: &mut KernelConfig) -> io::Result<()> {
        // RELEASEs straight onto the connection's queue, never held back (crate::fence).
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_max_write(crate::serve::MAX_WRITE);
        Ok(())
    }
}

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// The mount's source name, which identifies this program's mounts in mountinfo.
    pub fsname: String,
    /// Let other users open the files (`allow_other`); the kernel then checks the file mode
    /// (`default_permissions`), as for a device node.
    pub allow_other: bool,
}

/// A live mount. Dropping it detaches the mount.
pub struct MountHandle {
    path: PathBuf,
    mounted: bool,
    fence: Option<Member>,
}

impl std::fmt::Debug for MountHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountHandle")
            .field("path", &self.path)
            .finish()
    }
}

impl MountHandle {
    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Detaches the mount now. Open files get ENOTCONN; the serving threads end when the
    /// kernel drops the connection.
    pub fn detach(mut self) -> io::Result<()> {
        self.leave_fence();
        self.mounted = false;
        detach(&self.path)
    }
}

impl MountHandle {
    fn leave_fence(&mut self) {
        if let Some(member) = self.fence.take() {
            member.fence.leave(member.id);
        }
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        self.leave_fence();
        if self.mounted {
            let _ = detach(&self.path);
        }
    }
}

/// Mounts `fs` at `path` (a directory, or a regular file for [`DeviceFs::file`]) and serves
/// it from threads of its own (crate::serve).
pub fn mount(fs: DeviceFs, path: &Path, options: &MountOptions) -> io::Result<MountHandle> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(options.fsname.clone()),
        MountOption::DefaultPermissions,
        MountOption::NoSuid,
        MountOption::NoExec,
    ];
    if options.allow_other {
        config.acl = SessionACL::All;
    }
    let fence = fs.fence_member();
    let session = fuser::Session::new(Handshake, path, &config)?;
    let mut handle = MountHandle {
        path: path.to_path_buf(),
        mounted: true,
        fence: None,
    };
    let fd = session.as_fd().try_clone_to_owned();
    // Never dropped: dropping it would unmount by path, which may by then name another
    // mount. Its descriptor stays open with it; the connection still ends at unmount.
    std::mem::forget(session);
    crate::serve::serve(fd?, fs)?;
    if let Some(member) = fence {
        member.fence.join(&member, path)?;
        handle.fence = Some(member);
    }
    Ok(handle)
}

/// Detaches whatever is mounted at `path` (lazily: it vanishes from the tree at once).
pub fn detach(path: &Path) -> io::Result<()> {
    umount2(path, MntFlags::MNT_DETACH).map_err(io::Error::from)
}

/// One FUSE mount of a mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseMount {
    /// The mount id (mountinfo's first field, `mnt_id` in fdinfo).
    pub id: u64,
    /// The connection's device number, `major:minor`: one per FUSE session, shared by the
    /// binds of its mounts.
    pub dev: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Its source.
    pub source: String,
}

fn own_fuse_mounts() -> io::Result<Vec<FuseMount>> {
    Ok(parse_fuse_mounts(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// The source of the FUSE mount at `path` (the last one mounted there), from
/// `/proc/self/mountinfo`.
pub fn fuse_source(path: &Path) -> io::Result<Option<String>> {
    Ok(own_fuse_mounts()?
        .into_iter()
        .rfind(|m| m.mount_point == path)
        .map(|m| m.source))
}

/// Mount points of FUSE mounts whose source is `fsname`, or `fsname:` and more, from
/// `/proc/self/mountinfo`.
pub fn find_mounts(fsname: &str) -> io::Result<Vec<PathBuf>> {
    Ok(named(own_fuse_mounts()?, fsname)
        .map(|m| m.mount_point)
        .collect())
}

/// The FUSE mount of `fsname` at `path` (the last one mounted there).
pub fn fuse_mount(fsname: &str, path: &Path) -> io::Result<Option<FuseMount>> {
    Ok(named(own_fuse_mounts()?, fsname).rfind(|m| m.mount_point == path))
}

/// The connection's device of mount `id` as the process `pid` sees its mounts (its
/// `/proc/<pid>/mountinfo`, in whatever mount namespace it is), if it is a FUSE mount.
pub fn fuse_dev_of(pid: u32, id: u64) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    parse_fuse_mounts(&info)
        .into_iter()
        .find(|m| m.id == id)
        .map(|m| m.dev)
}

fn named(mounts: Vec<FuseMount>, fsname: &str) -> impl DoubleEndedIterator<Item = FuseMount> + '_ {
    mounts.into_iter().filter(move |m| {
        m.source == fsname
            || m.source
                .strip_prefix(fsname)
                .is_some_and(|rest| rest.starts_with(':'))
    })
}

/// Every FUSE mount of a mountinfo.
fn parse_fuse_mounts(info: &str) -> Vec<FuseMount> {
    let mut out = vec![];
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split(' ');
        let (Some(fstype), Some(source)) = (right.next(), right.next()) else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let (Some(id), Some(dev), Some(mount_point)) =
            (fields.first(), fields.get(2), fields.get(4))
        else {
            continue;
        };
        let Ok(id) = id.parse() else {
            continue;
        };
        if fstype == "fuse" || fstype.starts_with("fuse.") {
            out.push(FuseMount {
                id,
                dev: dev.to_string(),
                mount_point: PathBuf::from(unescape(mount_point)),
                source: unescape(source),
            });
        }
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_fuse_mounts_only() {
        let info = "\
36 25 0:32 / /run/sevd rw,nosuid,nodev,relatime shared:1 - fuse sevd rw,user_id=0,group_id=0
37 25 0:33 / /dev/sev rw,nosuid - fuse sevd:/run/sevd rw,user_id=0
38 25 0:34 / /tmp/a\\040b rw - fuse sevd rw
39 25 0:35 / /mnt/other rw - fuse other rw
40 25 0:36 / /sys rw - sysfs sevd rw
41 25 0:37 / /mnt/x rw - fuse sevdx rw
42 25 0:33 /sev /tmp/n rw - fuse sevd:/tmp/m\\040n rw
";
        let found: Vec<PathBuf> = named(parse_fuse_mounts(info), "sevd")
            .map(|m| m.mount_point)
            .collect();
        assert_eq!(
            found,
            vec![
                PathBuf::from("/run/sevd"),
                PathBuf::from("/dev/sev"),
                PathBuf::from("/tmp/a b"),
                PathBuf::from("/tmp/n"),
            ]
        );
        let all = parse_fuse_mounts(info);
        assert_eq!(all[1].source, "sevd:/run/sevd");
        assert_eq!(all[5].source, "sevd:/tmp/m n");
        // A bind of a node shares its connection's device.
        assert_eq!((all[5].id, all[5].dev.as_str()), (42, "0:33"));
    }
}
