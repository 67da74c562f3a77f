//! A device node served at a path of the caller's choosing (`/dev/sev-guest`, say): a FUSE
//! mount directly on a placeholder regular file (reference/fuse-notes.md §5, §9), detached
//! and the placeholder removed when dropped.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vfs::{CharDevice, DeviceFs, FileMode, MountHandle, MountOptions};

/// Why a node could not be served.
#[derive(Debug, thiserror::Error)]
pub enum DropInError {
    /// A real device, a directory or a non-empty file is there.
    #[error("{0}: exists and is not an empty regular file; refusing to mount over it")]
    Occupied(PathBuf),
    /// The placeholder could not be made.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The mount failed (root or a setuid fusermount3 is needed).
    #[error("{path}: cannot mount: {why}")]
    Mount {
        /// The path.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// Makes the empty, root-only regular file a node is mounted on; refuses to replace anything.
pub fn create_placeholder(path: &Path) -> io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
}

/// A node served at a path.
#[derive(Debug)]
pub struct DropIn {
    mount: Option<MountHandle>,
    placeholder: Option<PathBuf>,
}

/// Serves `dev` at `path`, root-only (0600), under the file-system name `fsname`.
pub fn serve(dev: Arc<dyn CharDevice>, path: &Path, fsname: &str) -> Result<DropIn, DropInError> {
    let made = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() && m.len() == 0 => false,
        Ok(m) if m.file_type().is_char_device() || !m.file_type().is_file() || m.len() != 0 => {
            return Err(DropInError::Occupied(path.into()))
        }
        Ok(_) => false,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_placeholder(path).map_err(|source| DropInError::Io {
                path: path.into(),
                source,
            })?;
            true
        }
        Err(source) => {
            return Err(DropInError::Io {
                path: path.into(),
                source,
            })
        }
    };
    let mode = FileMode {
        perm: 0o600,
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    };
    let options = MountOptions {
        fsname: fsname.into(),
        allow_other: nix::unistd::geteuid().is_root(),
    };
    match vfs::mount(DeviceFs::file(dev, mode), path, &options) {
        Ok(mount) => Ok(DropIn {
            mount: Some(mount),
            placeholder: made.then(|| path.to_path_buf()),
        }),
        Err(e) => {
            if made {
                let _ = fs::remove_file(path);
            }
            Err(DropInError::Mount {
                path: path.into(),
                why: e.to_string(),
            })
        }
    }
}

impl Drop for DropIn {
    fn drop(&mut self) {
        if let Some(mount) = self.mount.take() {
            let path = mount.path().to_path_buf();
            if let Err(e) = mount.detach() {
                log::warn!("detaching {}: {e}", path.display());
            }
        }
        if let Some(p) = self.placeholder.take() {
            let _ = fs::remove_file(p);
        }
    }
}
