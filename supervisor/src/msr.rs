//! `/dev/cpu/N/msr` with the MSRs of a table, as the msr driver serves them
//! (arch/x86/kernel/msr.c, `msr_read`): a read at the file position N returns MSR N, 8 bytes
//! at a time and the same MSR each time; a count that is not a multiple of 8 is EINVAL; an
//! MSR the part lacks is EIO, as `rdmsr_safe` reports its #GP. Writes are refused (EINVAL).

use std::collections::BTreeMap;

use vfs::{Caller, CharDevice, Errno, IoctlReply, IoctlRequest, OpenFile};

/// MSR number to value.
pub type MsrTable = BTreeMap<u32, u64>;

/// One CPU's msr file (every CPU shows the same table).
#[derive(Debug, Clone, Default)]
pub struct MsrDevice {
    table: MsrTable,
}

impl MsrDevice {
    /// A device that answers `table`.
    pub fn new(table: MsrTable) -> MsrDevice {
        MsrDevice { table }
    }
}

impl CharDevice for MsrDevice {
    fn ioctl(
        &self,
        _caller: &Caller,
        _file: &OpenFile,
        _request: IoctlRequest<'_>,
    ) -> Result<IoctlReply, Errno> {
        // X86_IOC_RDMSR_REGS and its sibling need CAP_SYS_RAWIO and are not served.
        Err(Errno::ENOTTY)
    }

    fn read(&self, _file: &OpenFile, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        if size % 8 != 0 {
            return Err(Errno::EINVAL);
        }
        // The driver takes the position's low 32 bits as the MSR number.
        let value = self.table.get(&(offset as u32)).ok_or(Errno::EIO)?;
        Ok(value.to_le_bytes().repeat(size as usize / 8))
    }

    fn seekable(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> OpenFile {
        OpenFile {
            fh: 1,
            flags: vfs::OpenFlags(libc::O_RDONLY),
            opener: vfs::Pid(1),
        }
    }

    #[test]
    fn reads_as_the_msr_driver_does() {
        let d = MsrDevice::new(MsrTable::from([(0xc001_0132, 1), (0xc001_0133, 2)]));
        // Adjacent MSRs do not overlap: each position is one MSR.
        assert_eq!(
            d.read(&file(), 0xc001_0132, 8),
            Ok(1u64.to_le_bytes().to_vec())
        );
        assert_eq!(
            d.read(&file(), 0xc001_0133, 8),
            Ok(2u64.to_le_bytes().to_vec())
        );
        assert_eq!(d.read(&file(), 0xc001_0133, 16).unwrap().len(), 16);
        assert_eq!(d.read(&file(), 0xc001_0133, 4), Err(Errno::EINVAL));
        assert_eq!(d.read(&file(), 0x10, 8), Err(Errno::EIO));
    }
}
