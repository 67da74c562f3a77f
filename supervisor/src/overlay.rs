//! A private mount namespace in which a few directories (`/dev`, `/sys/module`) hold files of
//! the caller's beside everything the host has there, and a few host files (`/proc/cpuinfo`)
//! are covered by the caller's.
//!
//! Each shadowed directory is rebuilt on a tmpfs: every host entry is there again (a
//! directory or file bind-mounted from the host, with what is mounted below it; a symlink
//! copied), except where an added file lies, and the added files are there; then the tmpfs
//! is moved over the directory. A covered file is a file on a tmpfs bind-mounted over the
//! host's. The host's mounts are untouched and see none of it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// What an added path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A regular file with these bytes.
    Bytes(Vec<u8>),
    /// The host file or directory at this path, bind-mounted.
    Bind(PathBuf),
    /// Nothing: the host's entry is not there.
    Absent,
}

/// An added path: its content and, for files, its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    content: Content,
    mode: u32,
}

/// Why the overlay could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// No privilege for a mount namespace.
    #[error("a private mount namespace needs root (CAP_SYS_ADMIN): {0}")]
    Namespace(nix::Error),
    /// A path that is neither below a shadowed directory nor an existing file to cover.
    #[error("{0}: neither below a shadowed directory nor a host file to cover")]
    Outside(PathBuf),
    /// A step on a path.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: io::Error,
    },
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> OverlayError + 'a {
    move |source| OverlayError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

fn nix_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(nix::Error) -> OverlayError + 'a {
    move |e| OverlayError::Io {
        path: path.to_path_buf(),
        what,
        source: e.into(),
    }
}

/// Directories to shadow and what to add in them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    roots: Vec<PathBuf>,
    entries: BTreeMap<PathBuf, Entry>,
}

impl Overlay {
    /// An overlay that shadows nothing.
    pub fn new() -> Overlay {
        Overlay::default()
    }

    /// Shadows the directory `root` (absolute): the paths added below it appear there.
    pub fn shadow(&mut self, root: impl Into<PathBuf>) -> &mut Self {
        self.roots.push(root.into());
        self
    }

    /// Adds `path` with `content`; a file gets `mode`.
    pub fn add(&mut self, path: impl Into<PathBuf>, content: Content, mode: u32) -> &mut Self {
        self.entries.insert(path.into(), Entry { content, mode });
        self
    }

    /// Covers the existing host file `path` with `bytes`, with `mode`.
    pub fn cover(&mut self, path: impl Into<PathBuf>, bytes: Vec<u8>, mode: u32) -> &mut Self {
        self.add(path, Content::Bytes(bytes), mode)
    }

    /// What the overlay holds at `path`, if it adds it.
    pub fn get(&self, path: &Path) -> Option<&Content> {
        self.entries.get(path).map(|e| &e.content)
    }

    /// Mounts the overlay in this process's mount namespace (one of its own, from
    /// [`private_namespace`]). `scratch` is an empty directory the tmpfs are built on.
    pub fn mount(&self, scratch: &Path) -> Result<(), OverlayError> {
        let mut per_root: BTreeMap<&Path, Vec<(PathBuf, &Entry)>> = BTreeMap::new();
        for root in &self.roots {
            per_root.insert(root, vec![]);
        }
        let mut covers = vec![];
        for (path, entry) in &self.entries {
            if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
                return Err(OverlayError::Outside(path.clone()));
            }
            let root = self
                .roots
                .iter()
                .filter(|r| path.starts_with(r) && path != *r)
                .max_by_key(|r| r.components().count());
            match root {
                Some(root) => {
                    let rel = path.strip_prefix(root).unwrap_or(path).to_path_buf();
                    per_root.entry(root).or_default().push((rel, entry));
                }
                None => covers.push((path.as_path(), entry)),
            }
        }
        for (root, entries) in per_root {
            shadow(root, &entries, scratch)?;
        }
        if !covers.is_empty() {
            cover(&covers, scratch)?;
        }
        Ok(())
    }
}

/// Moves this process into a mount namespace of its own, where the host's later mounts still
/// show and none of its own go back. Call it while the process has one thread
/// (unshare(CLONE_NEWNS) refuses otherwise); threads and processes started afterwards share
/// it.
pub fn private_namespace() -> Result<(), OverlayError> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(OverlayError::Namespace)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(nix_err(Path::new("/"), "making mounts private"))
}

/// Each covered host file gets a file of a tmpfs at `scratch` bind-mounted over it; the
/// tmpfs then leaves `scratch`, held by those binds alone.
fn cover(covers: &[(&Path, &Entry)], scratch: &Path) -> Result<(), OverlayError> {
    mount(
        Some("tmpfs"),
        scratch,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    )
    .map_err(nix_err(scratch, "mounting a tmpfs"))?;
    let done = covers
        .iter()
        .enumerate()
        .try_for_each(|(i, (path, entry))| {
            if !path.is_file() || entry.content == Content::Absent {
                return Err(OverlayError::Outside(path.to_path_buf()));
            }
            let staged = scratch.join(i.to_string());
            place(&staged, entry)?;
            mount(
                Some(&staged),
                *path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(nix_err(path, "covering"))
        });
    let _ = umount2(scratch, MntFlags::MNT_DETACH);
    done
}

/// Builds `root`'s copy with `entries` on a tmpfs at `scratch` and moves it over `root`.
fn shadow(root: &Path, entries: &[(PathBuf, &Entry)], scratch: &Path) -> Result<(), OverlayError> {
    let mode = fs::metadata(root)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o755);
    mount(
        Some("tmpfs"),
        scratch,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some(format!("mode={mode:o}").as_str()),
    )
    .map_err(nix_err(scratch, "mounting a tmpfs"))?;
    let built = build(Some(root), scratch, entries).and_then(|()| {
        mount(
            Some(scratch),
            root,
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(nix_err(root, "moving the shadow over it"))
    });
    if built.is_err() {
        let _ = umount2(scratch, MntFlags::MNT_DETACH);
    }
    built
}

/// Fills `dst` with what `src` has (if it exists) and the entries below it.
fn build(
    src: Option<&Path>,
    dst: &Path,
    entries: &[(PathBuf, &Entry)],
) -> Result<(), OverlayError> {
    // The entries by their first component: a leaf here, or a directory to build.
    let mut here: BTreeMap<std::ffi::OsString, Vec<(PathBuf, &Entry)>> = BTreeMap::new();
    for (rel, entry) in entries {
        let mut c = rel.components();
        let Some(Component::Normal(first)) = c.next() else {
            continue;
        };
        here.entry(first.to_os_string())
            .or_default()
            .push((c.as_path().to_path_buf(), entry));
    }
    if let Some(src) = src.filter(|s| s.is_dir()) {
        for de in fs::read_dir(src).map_err(io_err(src, "reading"))? {
            let de = de.map_err(io_err(src, "reading"))?;
            if here.contains_key(&de.file_name()) {
                continue;
            }
            mirror(&de.path(), &dst.join(de.file_name()))?;
        }
    }
    for (name, subs) in here {
        let at = dst.join(&name);
        if let Some((_, leaf)) = subs.iter().find(|(rel, _)| rel.as_os_str().is_empty()) {
            place(&at, leaf)?;
            continue;
        }
        let from = src.map(|s| s.join(&name));
        let mode = from
            .as_ref()
            .and_then(|f| fs::metadata(f).ok())
            .filter(|m| m.is_dir())
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o755);
        fs::DirBuilder::new()
            .mode(mode)
            .create(&at)
            .map_err(io_err(&at, "making a directory"))?;
        build(from.as_deref(), &at, &subs)?;
    }
    Ok(())
}

/// The host's entry `src` again at `dst`.
fn mirror(src: &Path, dst: &Path) -> Result<(), OverlayError> {
    let meta = match fs::symlink_metadata(src) {
        Ok(m) => m,
        // Gone since it was listed.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(src, "reading")(e)),
    };
    if meta.file_type().is_symlink() {
        let target = fs::read_link(src).map_err(io_err(src, "reading the link"))?;
        return std::os::unix::fs::symlink(target, dst).map_err(io_err(dst, "making a link"));
    }
    bind(src, dst, meta.is_dir())
}

/// Bind-mounts `src` (with what is mounted below it) on a new placeholder at `dst`.
fn bind(src: &Path, dst: &Path, dir: bool) -> Result<(), OverlayError> {
    if dir {
        fs::create_dir(dst).map_err(io_err(dst, "making a directory"))?;
    } else {
        fs::File::create(dst).map_err(io_err(dst, "making a placeholder"))?;
    }
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(nix_err(src, "bind-mounting"))
}

/// An added entry at `at`.
fn place(at: &Path, entry: &Entry) -> Result<(), OverlayError> {
    let write = |bytes: &[u8]| -> Result<(), OverlayError> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(entry.mode)
            .open(at)
            .map_err(io_err(at, "making a file"))?;
        f.write_all(bytes).map_err(io_err(at, "writing"))?;
        // The mode exactly, whatever the umask.
        f.set_permissions(fs::Permissions::from_mode(entry.mode))
            .map_err(io_err(at, "setting the mode"))
    };
    match &entry.content {
        Content::Bytes(b) => write(b),
        Content::Bind(src) => {
            let dir = fs::metadata(src).map_err(io_err(src, "reading"))?.is_dir();
            bind(src, at, dir)
        }
        Content::Absent => Ok(()),
    }
}
