//! The client side of the same ABI: issuing an ioctl whose argument is a byte buffer of
//! exactly the request's `_IOC_SIZE`, as the kernel copies it in and out.

use std::os::fd::AsFd;
use std::os::fd::AsRawFd;

use crate::Errno;

/// `_IOC_SIZE(request)`.
fn ioc_size(request: u32) -> usize {
    ((request >> ioctl_sys::SIZESHIFT) & ioctl_sys::SIZEMASK) as usize
}

/// `ioctl(fd, request, arg)` where `arg` holds the request's argument struct. Refuses
/// (EINVAL) a buffer whose length is not the request's `_IOC_SIZE`, so the kernel never
/// reads or writes past it. Addresses inside the struct are the kernel's to check.
pub fn ioctl_bytes(fd: impl AsFd, request: u32, arg: &mut [u8]) -> Result<i32, Errno> {
    if arg.len() != ioc_size(request) {
        return Err(Errno::EINVAL);
    }
    ioctl_bytes_sized(fd, request, arg, arg.len())
}

/// `ioctl(fd, request, value)` for `_IO` requests that take an integer, not a pointer.
pub fn ioctl_value(fd: impl AsFd, request: u32, value: u64) -> Result<i32, Errno> {
    if ioc_size(request) != 0 {
        return Err(Errno::EINVAL);
    }
    // SAFETY: an `_IO` request carries no pointer; the kernel takes `value` as a number.
    let r = unsafe { ioctl_sys::ioctl(fd.as_fd().as_raw_fd(), request.into(), value) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// `ioctl(fd, request, arg)` for requests whose size field does not describe their argument,
/// such as KVM's `KVM_MEMORY_ENCRYPT_OP` (size 8, argument a 24-byte `struct kvm_sev_cmd`).
/// `kernel_len` is how many bytes the kernel reads and writes; `arg` must hold at least that.
pub fn ioctl_bytes_sized(
    fd: impl AsFd,
    request: u32,
    arg: &mut [u8],
    kernel_len: usize,
) -> Result<i32, Errno> {
    if arg.len() < kernel_len {
        return Err(Errno::EINVAL);
    }
    // SAFETY: `arg` is a live, writable buffer of at least `kernel_len` bytes, which the
    // caller states is all the kernel copies in and out for this request.
    let r = unsafe { ioctl_sys::ioctl(fd.as_fd().as_raw_fd(), request.into(), arg.as_mut_ptr()) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// An `_IO` request that returns a new file descriptor (KVM_CREATE_VM, KVM_CREATE_VCPU),
/// which the returned `File` then owns.
pub fn ioctl_new_fd(fd: impl AsFd, request: u32, value: u64) -> Result<std::fs::File, Errno> {
    let new = ioctl_value(fd, request, value)?;
    // SAFETY: these requests return a new descriptor on success, which nothing else owns.
    Ok(std::fs::File::from(unsafe {
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(new)
    }))
}
