//! Copy once, work on the copy: a command's caller memory read before any lock is taken,
//! and its writes kept until every lock is released (what `copy_from_user` into a kernel
//! buffer gives the kernel, and more: the caller's memory is never touched while the
//! firmware or the device is busy, so a caller whose pages never arrive stalls no one else).

use std::sync::Mutex;

use uapi::psp_sev::SevCmd;
use uapi::psp_sev_cmds::Dir;
use vfs::{CallerMemory, Errno, MemError, UserAddr};

/// A range of the caller's memory as it was read.
#[derive(Debug)]
enum Region {
    /// Read whole.
    Read { addr: u64, bytes: Vec<u8> },
    /// The read failed: the handler gets EFAULT when it gets here, as the kernel would.
    Fault { addr: u64, len: u64 },
}

impl Region {
    fn covers(&self, addr: u64, len: u64) -> bool {
        let (base, n) = match self {
            Region::Read { addr, bytes } => (*addr, bytes.len() as u64),
            Region::Fault { addr, len } => (*addr, *len),
        };
        addr >= base
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= base.saturating_add(n))
    }
}

/// A command's view of its caller's memory: what was staged, and the writes to make.
#[derive(Debug, Default)]
pub struct Staged {
    regions: Vec<Region>,
    writes: Mutex<Vec<(u64, Vec<u8>)>>,
}

impl Staged {
    fn add(&mut self, mem: &dyn CallerMemory, addr: u64, len: usize) {
        let region = match mem.read_vec(UserAddr(addr), len) {
            Ok(bytes) => Region::Read { addr, bytes },
            Err(_) => Region::Fault {
                addr,
                len: len as u64,
            },
        };
        self.regions.push(region);
    }

    /// Reads `cmd`'s struct at `data` and the buffers it points at that the driver reads,
    /// each once, as the table describes them. Lengths above their cap, and null or empty
    /// buffers, are not read: the handler refuses them before it would.
    pub fn stage(mem: &dyn CallerMemory, cmd: SevCmd, data: u64) -> Staged {
        let info = cmd.info();
        let mut staged = Staged::default();
        if !info.reads_struct() {
            return staged;
        }
        staged.add(mem, data, info.size);
        let Some(Region::Read { bytes, .. }) = staged.regions.first() else {
            return staged;
        };
        let inputs: Vec<(u64, u32)> = info
            .bufs
            .iter()
            .filter(|b| b.dir == Dir::In)
            .filter_map(|b| {
                b.locate(bytes)
                    .filter(|&(a, l)| a != 0 && l != 0 && l <= b.cap)
            })
            .collect();
        for (addr, len) in inputs {
            staged.add(mem, addr, len as usize);
        }
        staged
    }

    /// Writes what the handler wrote, in its order; the first failure is EFAULT, as the
    /// kernel's handler would have returned at that `copy_to_user`.
    pub fn flush(self, mem: &dyn CallerMemory) -> Result<(), Errno> {
        for (addr, bytes) in self.writes.into_inner().unwrap_or_else(|e| e.into_inner()) {
            mem.write(UserAddr(addr), &bytes)
                .map_err(|_| Errno::EFAULT)?;
        }
        Ok(())
    }

    /// Runs one command: `f` sees this staged memory, the writes follow once it returned
    /// (and released whatever lock it held). A failed write turns the result into EFAULT.
    pub fn run<T>(
        mem: &dyn CallerMemory,
        cmd: SevCmd,
        data: u64,
        f: impl FnOnce(&Staged) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let staged = Staged::stage(mem, cmd, data);
        let r = f(&staged);
        staged.flush(mem)?;
        r
    }
}

impl CallerMemory for Staged {
    fn read(&self, addr: UserAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let err = MemError {
            addr: addr.0,
            len: buf.len(),
        };
        let len = buf.len() as u64;
        match self.regions.iter().find(|r| r.covers(addr.0, len)) {
            Some(Region::Read { addr: base, bytes }) => {
                let off = (addr.0 - base) as usize;
                buf.copy_from_slice(&bytes[off..off + buf.len()]);
                Ok(())
            }
            Some(Region::Fault { .. }) => Err(err),
            None => {
                // The table does not describe this read: a driver bug, never caller input.
                log::error!("read of {:#x}+{} was not staged", addr.0, buf.len());
                Err(err)
            }
        }
    }

    fn write(&self, addr: UserAddr, data: &[u8]) -> Result<(), MemError> {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((addr.0, data.to_vec()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uapi::psp_sev::SevUserDataPekCertImport;
    use uapi::ByteValued;
    use vfs::VecMemory;

    #[test]
    fn reads_once_and_defers_writes() {
        let mem = VecMemory::new(0x1000, 0x3000);
        let s = SevUserDataPekCertImport {
            pek_cert_address: 0x2000,
            pek_cert_len: 4,
            oca_cert_address: 0x2100,
            oca_cert_len: 2,
        };
        mem.write(UserAddr(0x1000), s.as_bytes()).unwrap();
        mem.write(UserAddr(0x2000), b"PEK!").unwrap();
        mem.write(UserAddr(0x2100), b"OC").unwrap();
        let staged = Staged::stage(&mem, SevCmd::PekCertImport, 0x1000);
        // The caller changes everything afterwards: the command sees none of it.
        mem.write(UserAddr(0x1000), &[0xff; 24]).unwrap();
        mem.write(UserAddr(0x2000), b"XXXX").unwrap();
        let mut pek = [0u8; 4];
        staged.read(UserAddr(0x2000), &mut pek).unwrap();
        assert_eq!(&pek, b"PEK!");
        let again: SevUserDataPekCertImport = crate::driver::read_obj(&staged, 0x1000).unwrap();
        assert_eq!(again, s);
        assert!(
            staged.read(UserAddr(0x2100), &mut [0u8; 3]).is_err(),
            "past the staged blob"
        );
        staged.write(UserAddr(0x2800), b"out").unwrap();
        assert_eq!(
            &mem.snapshot()[0x1800..0x1803],
            &[0, 0, 0],
            "not written yet"
        );
        staged.flush(&mem).unwrap();
        assert_eq!(&mem.snapshot()[0x1800..0x1803], b"out");
    }

    #[test]
    fn faults_surface_where_the_handler_reads() {
        let mem = VecMemory::new(0x1000, 0x1000);
        let s = SevUserDataPekCertImport {
            pek_cert_address: 0x1100,
            pek_cert_len: 4,
            oca_cert_address: 0x9000,
            oca_cert_len: 4,
        };
        mem.write(UserAddr(0x1000), s.as_bytes()).unwrap();
        let staged = Staged::stage(&mem, SevCmd::PekCertImport, 0x1000);
        assert!(staged.read(UserAddr(0x1100), &mut [0u8; 4]).is_ok());
        assert!(staged.read(UserAddr(0x9000), &mut [0u8; 4]).is_err());
        let over = SevUserDataPekCertImport {
            pek_cert_len: uapi::psp_sev::SEV_FW_BLOB_MAX_SIZE + 1,
            ..s
        };
        mem.write(UserAddr(0x1000), over.as_bytes()).unwrap();
        let staged = Staged::stage(&mem, SevCmd::PekCertImport, 0x1000);
        assert_eq!(staged.regions.len(), 2, "an over-cap blob is never read");
        staged.write(UserAddr(0x9000), b"x").unwrap();
        assert_eq!(staged.flush(&mem), Err(Errno::EFAULT));
    }
}
