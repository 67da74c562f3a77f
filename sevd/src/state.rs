//! The state directory: the chip identity and the firmware's flash, each a file written
//! atomically (temporary file, fsync, rename, fsync of the directory) with mode 0600.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::firmware::chip::{Chip, ChipError};
use crate::firmware::nv::NvStorage;

use crate::files::{parent_dir, write_atomic};
use crate::kds::{KeyServer, VcekChain};
use crate::part::Product;
use crate::paths::{CA_FILE, CHIP_FILE, KDS_FILE, NV_FILE, SNP_NV_FILE};
use uapi::snp::TcbVersion;

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Another process uses the directory.
    #[error("{path}: in use by another sevd or embedded firmware ({source})")]
    Busy {
        /// The directory.
        path: PathBuf,
        /// The lock error.
        source: io::Error,
    },
    /// The directory could be changed by someone other than its owner, or belongs to another
    /// user: the firmware's secrets cannot live there.
    #[error("{path}: {why}; the state directory must be owned by the daemon's user and writable by it alone (chmod 0700)")]
    Insecure {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The key server's store is corrupt, or its certificates could not be made.
    #[error("{path}: {source}")]
    KeyServer {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: crate::certs::x509::X509Error,
    },
    /// The chip file is corrupt.
    #[error(
        "{path}: {source}; move it away to make a new chip (its platform keys are lost with it)"
    )]
    Chip {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: ChipError,
    },
    /// A chip or key server of another product than the one asked for.
    #[error("{path}: {why}")]
    Product {
        /// The file.
        path: PathBuf,
        /// What differs.
        why: String,
    },
}

impl StateError {
    /// Something the user must fix (a directory others may write, one that is not ours,
    /// corrupt files), as against a passing failure: another process holding the
    /// directory, or I/O.
    pub fn is_config(&self) -> bool {
        !matches!(self, StateError::Busy { .. } | StateError::Io { .. })
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Refuses a state directory that another user owns, or that its group or others may write.
fn check_private(path: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let insecure = |why: String| StateError::Insecure {
        path: path.to_path_buf(),
        why,
    };
    if !meta.is_dir() {
        return Err(insecure("is not a directory".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(insecure(format!(
            "is owned by uid {}, not {me}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(insecure(format!(
            "has mode {:04o}: group or others may write it",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Whether a file name is one of [`write_atomic`]'s temporaries.
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Removes the temporaries of writes a crash interrupted (the directory is locked: no
/// write of ours is under way).
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if is_temporary(&name.to_string_lossy()) {
            match fs::remove_file(entry.path()) {
                Ok(()) => log::warn!(
                    "removed {}, left by an interrupted write",
                    entry.path().display()
                ),
                Err(e) => log::warn!("could not remove {}: {e}", entry.path().display()),
            }
        }
    }
}

/// The lock file: one firmware per state directory, as one PSP per flash.
pub const LOCK_FILE: &str = "lock";

/// The daemon's state directory, locked for as long as this value lives.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

impl StateDir {
    /// Opens (creating with mode 0700) and locks the directory; refuses one that another
    /// process (a daemon, or the CLI's embedded firmware) holds, and one that another user
    /// owns or could write. Temporary files a crash left behind are removed.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io_err(path))?;
        check_private(path)?;
        let lock_path = path.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| StateError::Busy {
                path: path.to_path_buf(),
                source: e.into(),
            })?;
        remove_stale_temporaries(path);
        Ok(StateDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// Opens the directory, waiting up to `patience` for another process to let it go.
    pub fn open_waiting(path: &Path, patience: std::time::Duration) -> Result<Self, StateError> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match Self::open(path) {
                Err(StateError::Busy { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                r => return r,
            }
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The chip in `chip.bin`, made (seconds: two RSA-4096 keys) and stored on first use.
    /// `tcb` is the SPLs of the firmware and microcode installed on it: a new chip gets them
    /// (else its product's [`Product::default_tcb`]); an existing chip with other SPLs is
    /// updated to them, as installing a firmware or microcode update does on a real part
    /// (the firmware refuses to initialise SNP below its committed TCB). A TCB without an
    /// FMC level for a Turin, or with one for a Milan or Genoa, is refused.
    pub fn load_or_create_chip(
        &self,
        api: (u8, u8),
        tcb: Option<TcbVersion>,
        product: Option<Product>,
    ) -> Result<Chip, StateError> {
        let path = self.path.join(CHIP_FILE);
        let checked = |product: Product, tcb: TcbVersion| {
            product.check_tcb(tcb).map_err(|why| StateError::Product {
                path: path.clone(),
                why,
            })
        };
        match fs::read(&path).map(zeroize::Zeroizing::new) {
            Ok(bytes) => {
                let mut chip = Chip::decode(&bytes).map_err(|source| StateError::Chip {
                    path: path.clone(),
                    source,
                })?;
                if let Some(asked) = product.filter(|p| *p != chip.product) {
                    return Err(StateError::Product {
                        path,
                        why: format!(
                            "this chip is a {}; a part cannot become a {} (use another state directory)",
                            chip.product.name(),
                            asked.name()
                        ),
                    });
                }
                let tcb = tcb.map(|t| checked(chip.product, t)).transpose()?;
                if let Some(tcb) = tcb.filter(|t| *t != chip.tcb) {
                    log::info!(
                        "installing firmware and microcode of TCB {tcb} (was {})",
                        chip.tcb
                    );
                    chip.tcb = tcb;
                    write_atomic(&path, &chip.encode(), 0o600).map_err(io_err(&path))?;
                }
                Ok(chip)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::info!(
                    "making a new chip identity (RSA-4096 ARK and ASK); this takes a few seconds"
                );
                let product = product.unwrap_or(Product::DEFAULT);
                let tcb = checked(product, tcb.unwrap_or(product.default_tcb()))?;
                let chip = Chip::generate(api, tcb, product).map_err(|e| StateError::Chip {
                    path: path.clone(),
                    source: e.into(),
                })?;
                write_atomic(&path, &chip.encode(), 0o600).map_err(io_err(&path))?;
                Ok(chip)
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// The key server of `product` in `kds.bin`: made (seconds: two RSA-4096 keys) and
    /// stored when `create` and there is none yet; `None` when there is none and not
    /// `create`. One of another product is refused.
    pub fn key_server(
        &self,
        product: Product,
        create: bool,
    ) -> Result<Option<KeyServer>, StateError> {
        let path = self.path.join(KDS_FILE);
        let ks_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::KeyServer { path, source }
        };
        match fs::read(&path).map(zeroize::Zeroizing::new) {
            Ok(bytes) => {
                let ks = KeyServer::decode(&bytes).map_err(ks_err(&path))?;
                if ks.product() != Some(product) {
                    return Err(StateError::Product {
                        path,
                        why: format!(
                            "the key server's ARK is not a {}'s; move it away to make one",
                            product.name()
                        ),
                    });
                }
                Ok(Some(ks))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                log::info!("making the key server's ARK and ASK (RSA-4096); this takes a few seconds, once");
                let ks = KeyServer::generate(product).map_err(ks_err(&path))?;
                let bytes = ks.encode().map_err(ks_err(&path))?;
                write_atomic(&path, &bytes, 0o600).map_err(io_err(&path))?;
                Ok(Some(ks))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Publishes `chain` as `ark`, `ask` and `vcek`, each `.pem` and `.der` (mode 0644).
    pub fn publish_vcek_chain(&self, chain: &VcekChain) -> Result<(), StateError> {
        for (name, cert) in chain.named() {
            let ks_err = |path: PathBuf| move |source| StateError::KeyServer { path, source };
            let pem_path = self.path.join(format!("{name}.pem"));
            let der_path = self.path.join(format!("{name}.der"));
            let pem = crate::certs::x509::to_pem(cert).map_err(ks_err(pem_path.clone()))?;
            let der = crate::certs::x509::to_der(cert).map_err(ks_err(der_path.clone()))?;
            write_atomic(&pem_path, pem.as_bytes(), 0o644).map_err(io_err(&pem_path))?;
            write_atomic(&der_path, &der, 0o644).map_err(io_err(&der_path))?;
        }
        Ok(())
    }

    /// Writes the public ASK ‖ ARK file (mode 0644).
    pub fn write_ca_file(&self, ask_ark: &[u8]) -> Result<PathBuf, StateError> {
        let path = self.path.join(CA_FILE);
        write_atomic(&path, ask_ark, 0o644).map_err(io_err(&path))?;
        Ok(path)
    }

    /// The firmware's flash, in `nv.bin`.
    pub fn nv_storage(&self) -> FileStorage {
        FileStorage {
            path: self.path.join(NV_FILE),
        }
    }

    /// The SNP half of the firmware's flash (committed TCB and SNP_CONFIG), in `snp_nv.bin`:
    /// apart from `nv.bin`, because FACTORY_RESET erases the SEV keys but never the
    /// anti-rollback state.
    pub fn snp_nv_storage(&self) -> FileStorage {
        FileStorage {
            path: self.path.join(SNP_NV_FILE),
        }
    }
}

/// [`NvStorage`] in a file.
#[derive(Debug, Clone)]
pub struct FileStorage {
    path: PathBuf,
}

impl NvStorage for FileStorage {
    fn read(&self) -> io::Result<Option<Vec<u8>>> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        write_atomic(&self.path, data, 0o600)
    }

    fn erase(&mut self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        File::open(parent_dir(&self.path))?.sync_all()
    }

    fn quarantine(&mut self) -> io::Result<()> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // A name no other quarantined store has: linking fails rather than replace one.
        let mut n = 0u32;
        let aside = loop {
            let suffix = if n == 0 {
                format!("bin.corrupt-{secs}")
            } else {
                format!("bin.corrupt-{secs}-{n}")
            };
            let aside = self.path.with_extension(suffix);
            match fs::hard_link(&self.path, &aside) {
                Ok(()) => break aside,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(e),
            }
        };
        fs::remove_file(&self.path)?;
        log::error!("the corrupt store was kept as {}", aside.display());
        File::open(parent_dir(&self.path))?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_replaces_with_mode_0600_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nv.bin");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_write_takes_a_bare_file_name() {
        assert_eq!(parent_dir(Path::new("nv.bin")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/nv.bin")), Path::new("/"));
        assert_eq!(parent_dir(Path::new("a/nv.bin")), Path::new("a"));
    }

    #[test]
    fn a_state_dir_is_used_by_one_firmware_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateDir::open(dir.path()).unwrap();
        assert!(matches!(
            StateDir::open(dir.path()),
            Err(StateError::Busy { .. })
        ));
        drop(first);
        StateDir::open(dir.path()).unwrap();
    }

    #[test]
    fn a_state_dir_others_could_write_is_refused_and_stale_temporaries_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
        let e = StateDir::open(&state).unwrap_err();
        assert!(matches!(e, StateError::Insecure { .. }), "{e}");
        assert!(e.to_string().contains("group or others may write"), "{e}");
        fs::set_permissions(&state, fs::Permissions::from_mode(0o750)).unwrap();
        let stale = state.join(".nv.bin.tmp-123-4");
        fs::write(&stale, b"half").unwrap();
        fs::write(state.join("keep.me"), b"x").unwrap();
        let _open = StateDir::open(&state).unwrap();
        assert!(!stale.exists());
        assert!(state.join("keep.me").exists());
        if nix::unistd::geteuid().is_root() {
            let other = dir.path().join("other");
            fs::create_dir(&other).unwrap();
            nix::unistd::chown(&other, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            let e = StateDir::open(&other).unwrap_err();
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }
    }

    #[test]
    fn two_quarantined_stores_never_overwrite_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let mut nv = state.nv_storage();
        for what in [&b"first"[..], b"second", b"third"] {
            nv.write(what).unwrap();
            nv.quarantine().unwrap();
        }
        let mut kept: Vec<Vec<u8>> = fs::read_dir(state.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().contains("corrupt"))
            .map(|e| fs::read(e.path()).unwrap())
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            [b"first".to_vec(), b"second".to_vec(), b"third".to_vec()]
        );
    }

    #[test]
    fn file_storage_erase_and_quarantine() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        assert_eq!(
            fs::metadata(state.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let mut nv = state.nv_storage();
        assert_eq!(nv.read().unwrap(), None);
        nv.write(b"sealed").unwrap();
        assert_eq!(nv.read().unwrap().as_deref(), Some(&b"sealed"[..]));
        nv.quarantine().unwrap();
        assert_eq!(nv.read().unwrap(), None);
        let kept: Vec<_> = fs::read_dir(state.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != LOCK_FILE)
            .collect();
        assert_eq!(kept.len(), 1);
        nv.write(b"x").unwrap();
        nv.erase().unwrap();
        nv.erase().unwrap();
        assert_eq!(nv.read().unwrap(), None);
    }
}
