//! The hardware backend: every `SEV_ISSUE_CMD` forwarded to a real SEV device node (the
//! kernel's `/dev/sev`, or another sevd's node). The caller's nested buffers are copied into
//! this process, the pointers rewritten, the ioctl issued on our own file (opened read-only
//! or read-write as the caller opened ours), and whatever the device wrote copied back.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use uapi::ioctl::SEV_ISSUE_CMD;
use uapi::psp_sev::*;
use uapi::ByteValued;
use vfs::{CallerMemory, Errno, UserAddr};

use super::sev_dev::{command_info, SevBackend, Writable};
use super::{read_obj, write_bytes};

/// The largest `kmalloc` (GET_ID2's buffer fails with ENOMEM above it).
const KMALLOC_MAX_SIZE: u32 = 4 << 20;
/// The hashstick SNP_VLEK_LOAD points at.
const VLEK_HASHSTICK_LEN: usize = 432;

/// Errors meaning the device itself went away (a stopped sevd, an unloaded driver).
fn gone(e: Errno) -> bool {
    matches!(
        e,
        Errno::ENOTCONN | Errno::ENODEV | Errno::ENXIO | Errno::ECONNABORTED
    )
}

struct Files {
    rw: File,
    ro: File,
}

/// A real SEV device, reopened on demand after it vanished.
pub struct Passthrough {
    path: PathBuf,
    files: Mutex<Option<Files>>,
}

impl std::fmt::Debug for Passthrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passthrough")
            .field("path", &self.path)
            .finish()
    }
}

fn open(path: &Path) -> std::io::Result<Files> {
    Ok(Files {
        rw: OpenOptions::new().read(true).write(true).open(path)?,
        ro: OpenOptions::new().read(true).open(path)?,
    })
}

/// A nested buffer of a command struct: where its address and length fields are, whether
/// the device writes it, and its size (or the errno the kernel gives for it).
struct Blob {
    addr_at: usize,
    len_at: usize,
    len: Result<usize, Errno>,
    out: bool,
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn set_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

impl Passthrough {
    /// Opens the device at `path` (read-write and read-only).
    pub fn open(path: &Path) -> std::io::Result<Passthrough> {
        let files = open(path)?;
        Ok(Passthrough {
            path: path.to_path_buf(),
            files: Mutex::new(Some(files)),
        })
    }

    /// `SEV_ISSUE_CMD` on the device with `data` (an address in this process).
    fn raw(
        &self,
        files: &mut Option<Files>,
        writable: bool,
        cmd: SevCmd,
        data: u64,
        error: &mut u32,
    ) -> Result<(), Errno> {
        if files.is_none() {
            match open(&self.path) {
                Ok(f) => {
                    log::info!("{}: the SEV device is back", self.path.display());
                    *files = Some(f);
                }
                Err(_) => return Err(Errno::ENODEV),
            }
        }
        let f = files.as_ref().ok_or(Errno::ENODEV)?;
        let mut arg = SevIssueCmd {
            cmd: cmd as u32,
            data,
            error: *error,
        };
        let file = if writable { &f.rw } else { &f.ro };
        let r = vfs::ioctl_bytes(file, SEV_ISSUE_CMD, arg.as_bytes_mut()).map(drop);
        if let Err(e) = r {
            if gone(e) {
                log::error!(
                    "{}: the SEV device is gone ({e}); callers get ENODEV until it returns",
                    self.path.display()
                );
                *files = None;
                return Err(Errno::ENODEV);
            }
        }
        *error = arg.error;
        r
    }

    /// Forwards a command whose struct is `T` at `data`, with its nested buffers copied
    /// through local ones: in before the call, out (as much as the length field then says)
    /// after a successful one. The struct goes back only if the device changed it.
    #[allow(clippy::too_many_arguments)]
    fn with_struct<T: ByteValued>(
        &self,
        files: &mut Option<Files>,
        writable: bool,
        cmd: SevCmd,
        mem: &dyn CallerMemory,
        data: u64,
        error: &mut u32,
        read_first: bool,
        blobs: Vec<Blob>,
    ) -> Result<(), Errno> {
        let user: T = if read_first {
            read_obj(mem, data)?
        } else {
            T::default()
        };
        let mut local = user;
        let mut shadows = vec![];
        for b in blobs {
            let addr = get_u64(user.as_bytes(), b.addr_at);
            if addr == 0 {
                continue;
            }
            let mut buf = vec![0u8; b.len?];
            if !b.out {
                mem.read(UserAddr(addr), &mut buf)
                    .map_err(|_| Errno::EFAULT)?;
            }
            set_u64(local.as_bytes_mut(), b.addr_at, buf.as_mut_ptr() as u64);
            shadows.push((b, addr, buf));
        }
        let sent = local;
        let ptr = if data == 0 {
            0
        } else {
            &mut local as *mut T as u64
        };
        let r = self.raw(files, writable, cmd, ptr, error);
        if r == Err(Errno::ENODEV) && files.is_none() {
            return r;
        }
        let mut back = local;
        for (b, addr, _) in &shadows {
            set_u64(back.as_bytes_mut(), b.addr_at, *addr);
        }
        if data != 0 && local.as_bytes() != sent.as_bytes() {
            write_bytes(mem, data, back.as_bytes())?;
        }
        if r.is_ok() {
            for (b, addr, buf) in &shadows {
                if b.out {
                    let n = (get_u32(back.as_bytes(), b.len_at) as usize).min(buf.len());
                    write_bytes(mem, *addr, &buf[..n])?;
                }
            }
        }
        r
    }

    fn forward(
        &self,
        cmd: SevCmd,
        writable: bool,
        mem: &dyn CallerMemory,
        data: u64,
        error: &mut u32,
    ) -> Result<(), Errno> {
        use std::mem::offset_of;
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let files = &mut *files;
        let capped = |len: u32, cap: u32, over: Errno| {
            if len > cap {
                Err(over)
            } else {
                Ok(len as usize)
            }
        };
        // The caller's struct, read once here to size its buffers.
        let peek = |n: usize| -> Result<Vec<u8>, Errno> {
            mem.read_vec(UserAddr(data), n).map_err(|_| Errno::EFAULT)
        };
        use SevCmd::*;
        macro_rules! fwd {
            ($t:ty, $read:expr, $blobs:expr) => {
                self.with_struct::<$t>(files, writable, cmd, mem, data, error, $read, $blobs)
            };
        }
        match cmd {
            FactoryReset | PekGen | PdhGen | SnpCommit => self.raw(files, writable, cmd, 0, error),
            PlatformStatus => fwd!(SevUserDataStatus, false, vec![]),
            GetId => {
                // The firmware writes one socket's 64 bytes and the kernel copies just those.
                let mut id = SevUserDataGetId::default();
                let r = self.raw(files, writable, cmd, &mut id as *mut _ as u64, error);
                if r.is_ok() {
                    write_bytes(mem, data, &id.socket1)?;
                }
                r
            }
            SnpPlatformStatus => fwd!(SevUserDataSnpStatus, false, vec![]),
            SnpSetConfig => fwd!(SevUserDataSnpConfig, true, vec![]),
            PekCsr | GetId2 => {
                let s = peek(12)?;
                let len = get_u32(&s, 8);
                let (cap, over) = if cmd == PekCsr {
                    (SEV_FW_BLOB_MAX_SIZE, Errno::EFAULT)
                } else {
                    (KMALLOC_MAX_SIZE, Errno::ENOMEM)
                };
                let blob = Blob {
                    addr_at: 0,
                    len_at: 8,
                    len: capped(len, cap, over),
                    out: true,
                };
                // GET_ID2's struct has PEK_CSR's layout: address, then length.
                fwd!(SevUserDataPekCsr, true, vec![blob])
            }
            PdhCertExport => {
                let s = peek(24)?;
                type T = SevUserDataPdhCertExport;
                let blob = |addr_at, len_at| Blob {
                    addr_at,
                    len_at,
                    len: capped(get_u32(&s, len_at), SEV_FW_BLOB_MAX_SIZE, Errno::EFAULT),
                    out: true,
                };
                fwd!(
                    T,
                    true,
                    vec![
                        blob(offset_of!(T, pdh_cert_address), offset_of!(T, pdh_cert_len)),
                        blob(
                            offset_of!(T, cert_chain_address),
                            offset_of!(T, cert_chain_len)
                        ),
                    ]
                )
            }
            PekCertImport => {
                let s = peek(24)?;
                type T = SevUserDataPekCertImport;
                // psp_copy_user_blob: EINVAL for a null or empty blob and above 16 KiB.
                let blob = |addr_at: usize, len_at: usize| {
                    let len = get_u32(&s, len_at);
                    let ok = get_u64(&s, addr_at) != 0 && len != 0;
                    Blob {
                        addr_at,
                        len_at,
                        len: if ok {
                            capped(len, SEV_FW_BLOB_MAX_SIZE, Errno::EINVAL)
                        } else {
                            Err(Errno::EINVAL)
                        },
                        out: false,
                    }
                };
                if get_u64(&s, 0) == 0 || get_u64(&s, 12) == 0 {
                    return Err(Errno::EINVAL);
                }
                fwd!(
                    T,
                    true,
                    vec![
                        blob(offset_of!(T, pek_cert_address), offset_of!(T, pek_cert_len)),
                        blob(offset_of!(T, oca_cert_address), offset_of!(T, oca_cert_len)),
                    ]
                )
            }
            SnpVlekLoad => {
                type T = SevUserDataSnpVlekLoad;
                // The kernel checks these before it reads the hashstick.
                let s = peek(16)?;
                if get_u32(&s, 0) != 16 || s[4] != 0 {
                    return Err(Errno::EINVAL);
                }
                let blob = Blob {
                    addr_at: offset_of!(T, vlek_wrapped_address),
                    len_at: 0,
                    len: Ok(VLEK_HASHSTICK_LEN),
                    out: false,
                };
                fwd!(T, true, vec![blob])
            }
        }
    }
}

impl SevBackend for Passthrough {
    fn issue(
        &self,
        cmd: SevCmd,
        writable: bool,
        mem: &dyn CallerMemory,
        data: u64,
        error: &mut u32,
    ) -> Result<(), Errno> {
        // The kernel refuses these before it touches the caller's memory.
        if command_info(cmd).0 == Writable::Yes
            && !writable
            && !matches!(cmd, SevCmd::SnpSetConfig | SevCmd::SnpVlekLoad)
        {
            return Err(Errno::EPERM);
        }
        self.forward(cmd, writable, mem, data, error)
    }

    fn barrier(&self) {
        drop(self.files.lock().unwrap_or_else(|e| e.into_inner()));
    }
}
