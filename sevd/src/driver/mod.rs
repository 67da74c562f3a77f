//! The kernel-driver mirror: what `drivers/crypto/ccp/sev-dev.c` does between the ioctl and
//! the firmware (user structs in and out, writable checks, implicit INIT, length
//! negotiation, errno and `error`).

pub mod sev_dev;
pub mod sev_guest;
mod stage_pipe;
pub mod staged;

use uapi::{ByteValued, Status};
use vfs::{CallerMemory, Errno, UserAddr};

use crate::firmware::FwResult;

/// `__sev_do_cmd_locked`'s result: `error` gets the firmware status (0 on success), and a
/// failure is EIO.
pub(crate) fn fw_result<T>(error: &mut u32, r: FwResult<T>) -> Result<T, Errno> {
    match r {
        Ok(v) => {
            *error = Status::Success as u32;
            Ok(v)
        }
        Err(status) => {
            *error = status as u32;
            Err(Errno::EIO)
        }
    }
}

/// `copy_from_user` of a struct: EFAULT when the caller's memory is not there.
pub(crate) fn read_obj<T: ByteValued>(mem: &dyn CallerMemory, addr: u64) -> Result<T, Errno> {
    let mut value = T::default();
    mem.read(UserAddr(addr), value.as_bytes_mut())
        .map_err(|_| Errno::EFAULT)?;
    Ok(value)
}

/// `copy_to_user` of a struct.
pub(crate) fn write_obj<T: ByteValued>(
    mem: &dyn CallerMemory,
    addr: u64,
    value: &T,
) -> Result<(), Errno> {
    mem.write(UserAddr(addr), value.as_bytes())
        .map_err(|_| Errno::EFAULT)
}

/// `copy_to_user` of bytes.
pub(crate) fn write_bytes(mem: &dyn CallerMemory, addr: u64, bytes: &[u8]) -> Result<(), Errno> {
    mem.write(UserAddr(addr), bytes).map_err(|_| Errno::EFAULT)
}
pub mod kvm_asids;
pub mod kvm_sev;
pub mod passthrough;
pub mod vm_memory;
