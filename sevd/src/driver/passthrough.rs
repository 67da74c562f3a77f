//! The hardware backend: every `SEV_ISSUE_CMD` forwarded to a real SEV device node (the
//! kernel's `/dev/sev`, or another sevd's node). The caller's nested buffers are copied into
//! this process, the pointers rewritten, the ioctl issued on our own file (opened read-only
//! or read-write as the caller opened ours), and whatever the device wrote copied back.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use uapi::ioctl::SEV_ISSUE_CMD;
use uapi::psp_sev::*;
use uapi::psp_sev_cmds::{Dir, OverCap, Writable};
use uapi::ByteValued;
use vfs::{CallerMemory, Errno, UserAddr};

use super::sev_dev::SevBackend;
use super::staged::Staged;
use super::{read_obj, write_bytes};

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

fn over_cap(e: OverCap) -> Errno {
    match e {
        OverCap::Efault => Errno::EFAULT,
        OverCap::Einval => Errno::EINVAL,
        OverCap::Enomem => Errno::ENOMEM,
    }
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

    /// Forwards a command as the table describes it. `mem` is the command's staged copy of
    /// the caller's memory, so the struct is read once: the lengths that size the local
    /// buffers are the lengths the device is given. Input buffers are copied in; output
    /// buffers go back after a successful call, as much as the length the device wrote
    /// back says and never more than was allocated. The struct goes back only if the
    /// device changed it.
    fn forward(
        &self,
        files: &mut Option<Files>,
        cmd: SevCmd,
        writable: bool,
        mem: &dyn CallerMemory,
        data: u64,
        error: &mut u32,
    ) -> Result<(), Errno> {
        let info = cmd.info();
        if info.size == 0 {
            return self.raw(files, writable, cmd, 0, error);
        }
        // The status queries' structs are output only: the kernel never reads them.
        let out_only = !info.reads_struct();
        let user = if out_only {
            vec![0u8; info.size]
        } else {
            mem.read_vec(UserAddr(data), info.size)
                .map_err(|_| Errno::EFAULT)?
        };
        let mut local = user.clone();
        let mut shadows = vec![];
        for b in info.bufs {
            let Some((addr, len)) = b.locate(&user) else {
                return Err(Errno::EFAULT);
            };
            if addr == 0 {
                continue;
            }
            if len > b.cap {
                return Err(over_cap(b.over_cap));
            }
            let mut buf = vec![0u8; len as usize];
            if b.dir == Dir::In {
                mem.read(UserAddr(addr), &mut buf)
                    .map_err(|_| Errno::EFAULT)?;
            }
            local[b.addr_at..b.addr_at + 8]
                .copy_from_slice(&(buf.as_mut_ptr() as u64).to_le_bytes());
            shadows.push((b, addr, buf));
        }
        let sent = local.clone();
        let r = self.raw(files, writable, cmd, local.as_mut_ptr() as u64, error);
        if r == Err(Errno::ENODEV) && files.is_none() {
            return r;
        }
        let mut back = local.clone();
        for (b, addr, _) in &shadows {
            back[b.addr_at..b.addr_at + 8].copy_from_slice(&addr.to_le_bytes());
        }
        if (out_only && r.is_ok()) || local != sent {
            write_bytes(mem, data, &back)?;
        }
        if r.is_ok() {
            for (b, addr, buf) in &shadows {
                if b.dir == Dir::Out {
                    let said = b.locate(&back).map_or(0, |(_, l)| l as usize);
                    write_bytes(mem, *addr, &buf[..said.min(buf.len())])?;
                }
            }
        }
        r
    }

    /// The kernel's checks that come before the device sees a command, then the command.
    fn issue_locked(
        &self,
        files: &mut Option<Files>,
        cmd: SevCmd,
        writable: bool,
        mem: &dyn CallerMemory,
        data: u64,
        error: &mut u32,
    ) -> Result<(), Errno> {
        match cmd {
            SevCmd::GetId => {
                // The firmware writes one socket's 64 bytes and the kernel copies just those.
                let mut id = SevUserDataGetId::default();
                let r = self.raw(files, writable, cmd, &mut id as *mut _ as u64, error);
                if r.is_ok() {
                    write_bytes(mem, data, &id.socket1)?;
                }
                r
            }
            SevCmd::PekCertImport => {
                // psp_copy_user_blob: a null or empty blob is EINVAL.
                let s: SevUserDataPekCertImport = read_obj(mem, data)?;
                if s.pek_cert_address == 0
                    || s.pek_cert_len == 0
                    || s.oca_cert_address == 0
                    || s.oca_cert_len == 0
                {
                    return Err(Errno::EINVAL);
                }
                self.forward(files, cmd, writable, mem, data, error)
            }
            SevCmd::SnpVlekLoad => {
                // The kernel checks these before it reads the hashstick.
                let s: SevUserDataSnpVlekLoad = read_obj(mem, data)?;
                if s.len != size_of::<SevUserDataSnpVlekLoad>() as u32
                    || s.vlek_wrapped_version != 0
                {
                    return Err(Errno::EINVAL);
                }
                self.forward(files, cmd, writable, mem, data, error)
            }
            _ => self.forward(files, cmd, writable, mem, data, error),
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
        if cmd.info().writable == Writable::Yes
            && !writable
            && !matches!(cmd, SevCmd::SnpSetConfig | SevCmd::SnpVlekLoad)
        {
            return Err(Errno::EPERM);
        }
        Staged::run(mem, cmd, data, |staged| {
            let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            self.issue_locked(&mut files, cmd, writable, staged, data, error)
        })
    }

    fn barrier(&self) {
        drop(self.files.lock().unwrap_or_else(|e| e.into_inner()));
    }
}
