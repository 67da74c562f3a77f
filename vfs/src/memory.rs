//! The caller's memory: how a driver follows user pointers (`copy_from_user`/`copy_to_user`).

use std::io::{IoSlice, IoSliceMut};
use std::sync::Mutex;

use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid as NixPid;

use crate::Pid;

/// An address in the caller's address space. Not a guest physical address and not a pointer
/// in this process: it is only ever handed to [`CallerMemory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserAddr(pub u64);

impl UserAddr {
    /// `self + offset`, `None` on overflow.
    pub fn checked_add(self, offset: u64) -> Option<UserAddr> {
        self.0.checked_add(offset).map(UserAddr)
    }

    /// Whether this is the null pointer.
    pub fn is_null(self) -> bool {
        self.0 == 0
    }
}

/// A failed access to caller memory; drivers return EFAULT for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad address {addr:#x} (+{len} bytes) in the caller's memory")]
pub struct MemError {
    /// Start of the access.
    pub addr: u64,
    /// Its length.
    pub len: usize,
}

/// Reads and writes the memory of the process that issued a request. `Sync`, so one request
/// may copy on several threads (a long guest-memory update reads ahead while it works).
pub trait CallerMemory: Sync {
    /// Fills `buf` from `addr`; all or an error.
    fn read(&self, addr: UserAddr, buf: &mut [u8]) -> Result<(), MemError>;

    /// Writes `data` at `addr`; all or an error (a failed write may have written a prefix,
    /// as a faulting `copy_to_user` may).
    fn write(&self, addr: UserAddr, data: &[u8]) -> Result<(), MemError>;

    /// Reads `len` bytes into a new buffer. Callers cap `len` first.
    fn read_vec(&self, addr: UserAddr, len: usize) -> Result<Vec<u8>, MemError> {
        let mut buf = vec![0u8; len];
        self.read(addr, &mut buf)?;
        Ok(buf)
    }
}

/// Another process's memory, through `process_vm_readv`/`process_vm_writev`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessMemory {
    pid: Pid,
}

impl ProcessMemory {
    /// The memory of thread `pid`.
    pub fn new(pid: Pid) -> Self {
        ProcessMemory { pid }
    }

    fn range(addr: UserAddr, len: usize) -> Result<(), MemError> {
        let err = MemError { addr: addr.0, len };
        let end = addr.0.checked_add(len as u64).ok_or(err)?;
        // User addresses end below the non-canonical hole; anything above is a bad pointer.
        if end > 0x0000_8000_0000_0000 {
            return Err(err);
        }
        Ok(())
    }
}

impl CallerMemory for ProcessMemory {
    fn read(&self, addr: UserAddr, buf: &mut [u8]) -> Result<(), MemError> {
        if buf.is_empty() {
            return Ok(());
        }
        Self::range(addr, buf.len())?;
        let pid = NixPid::from_raw(self.pid.0 as i32);
        let mut done = 0;
        while done < buf.len() {
            let remote = [RemoteIoVec {
                base: (addr.0 + done as u64) as usize,
                len: buf.len() - done,
            }];
            let mut local = [IoSliceMut::new(&mut buf[done..])];
            match process_vm_readv(pid, &mut local, &remote) {
                Ok(0) | Err(_) => {
                    return Err(MemError {
                        addr: addr.0,
                        len: buf.len(),
                    })
                }
                Ok(n) => done += n,
            }
        }
        Ok(())
    }

    fn write(&self, addr: UserAddr, data: &[u8]) -> Result<(), MemError> {
        if data.is_empty() {
            return Ok(());
        }
        Self::range(addr, data.len())?;
        let pid = NixPid::from_raw(self.pid.0 as i32);
        let mut done = 0;
        while done < data.len() {
            let remote = [RemoteIoVec {
                base: (addr.0 + done as u64) as usize,
                len: data.len() - done,
            }];
            let local = [IoSlice::new(&data[done..])];
            match process_vm_writev(pid, &local, &remote) {
                Ok(0) | Err(_) => {
                    return Err(MemError {
                        addr: addr.0,
                        len: data.len(),
                    })
                }
                Ok(n) => done += n,
            }
        }
        Ok(())
    }
}

/// A caller address space made of one buffer at `base`, for tests and in-process use.
#[derive(Debug)]
pub struct VecMemory {
    base: u64,
    data: Mutex<Vec<u8>>,
}

impl VecMemory {
    /// `len` zero bytes mapped at `base`.
    pub fn new(base: u64, len: usize) -> Self {
        VecMemory {
            base,
            data: Mutex::new(vec![0; len]),
        }
    }

    /// The first mapped address.
    pub fn base(&self) -> UserAddr {
        UserAddr(self.base)
    }

    /// A copy of the whole buffer.
    pub fn snapshot(&self) -> Vec<u8> {
        self.data.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn offset(&self, addr: UserAddr, len: usize, have: usize) -> Result<usize, MemError> {
        let err = MemError { addr: addr.0, len };
        let off = addr.0.checked_sub(self.base).ok_or(err)?;
        let end = off.checked_add(len as u64).ok_or(err)?;
        if end > have as u64 {
            return Err(err);
        }
        Ok(off as usize)
    }
}

impl CallerMemory for VecMemory {
    fn read(&self, addr: UserAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let off = self.offset(addr, buf.len(), data.len())?;
        buf.copy_from_slice(&data[off..off + buf.len()]);
        Ok(())
    }

    fn write(&self, addr: UserAddr, bytes: &[u8]) -> Result<(), MemError> {
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let off = self.offset(addr, bytes.len(), data.len())?;
        data[off..off + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_memory_bounds() {
        let m = VecMemory::new(0x1000, 16);
        m.write(UserAddr(0x1008), &[1, 2, 3]).unwrap();
        assert_eq!(m.read_vec(UserAddr(0x1008), 3).unwrap(), [1, 2, 3]);
        assert!(m.read_vec(UserAddr(0x1008), 9).is_err());
        assert!(m.read_vec(UserAddr(0xfff), 1).is_err());
        assert!(m.read_vec(UserAddr(u64::MAX), 2).is_err());
    }

    #[test]
    fn own_process_memory_round_trips_and_faults() {
        let me = ProcessMemory::new(Pid(std::process::id()));
        let src = *b"hello, caller";
        let mut dst = [0u8; 13];
        me.read(UserAddr(src.as_ptr() as u64), &mut dst).unwrap();
        assert_eq!(dst, src);
        me.write(UserAddr(dst.as_mut_ptr() as u64), b"HELLO")
            .unwrap();
        // The write went around the compiler's view of `dst`.
        let dst = std::hint::black_box(dst);
        assert_eq!(&dst[..5], b"HELLO");
        assert!(
            me.read_vec(UserAddr(8), 8).is_err(),
            "page zero is unmapped"
        );
        assert!(me.read_vec(UserAddr(u64::MAX - 4), 8).is_err());
        assert!(me.read_vec(UserAddr(0x7fff_ffff_f000), 0x2000).is_err());
    }
}
