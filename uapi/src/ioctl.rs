//! Every ioctl request number this project serves or issues, in one place.
//!
//! Encoded by the `ioctl-sys` crate as `include/uapi/asm-generic/ioctl.h` encodes them (x86
//! uses the generic layout): `dir << 30 | size << 16 | type << 8 | nr`. `tests/layout.rs`
//! compares each with the C compiler's value of the header's macro.

use crate::kvm::{
    KvmRegs, KvmSevCmd, KvmSregs, KvmUserspaceMemoryRegion, SevdGuestAccess, SevdPages,
    SevdSnpGuestRequest, SevdVmsa, SevdVmsaPacket,
};
use crate::psp_sev::SevIssueCmd;

/// `_IOC_NONE`.
pub const IOC_NONE: u32 = ioctl_sys::NONE as u32;
/// `_IOC_WRITE`: user space writes, the driver reads.
pub const IOC_WRITE: u32 = ioctl_sys::WRITE as u32;
/// `_IOC_READ`: the driver writes back.
pub const IOC_READ: u32 = ioctl_sys::READ as u32;

/// `_IOC(dir, type, nr, size)`, encoded by `ioctl-sys`; a size that does not fit the field
/// stops the build.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    assert!(
        size < (1 << ioctl_sys::SIZEBITS),
        "the size must fit _IOC_SIZE's field"
    );
    ioctl_sys::ioc!(dir, ty, nr, size)
}

/// `_IO(type, nr)`.
pub const fn io(ty: u8, nr: u8) -> u32 {
    ioc(IOC_NONE, ty, nr, 0)
}

/// `_IOR(type, nr, size)`.
pub const fn ior(ty: u8, nr: u8, size: usize) -> u32 {
    ioc(IOC_READ, ty, nr, size)
}

/// `_IOW(type, nr, size)`.
pub const fn iow(ty: u8, nr: u8, size: usize) -> u32 {
    ioc(IOC_WRITE, ty, nr, size)
}

/// `_IOWR(type, nr, size)`.
pub const fn iowr(ty: u8, nr: u8, size: usize) -> u32 {
    ioc(IOC_READ | IOC_WRITE, ty, nr, size)
}

/// `_IOC_SIZE(nr)`.
pub const fn ioc_size(request: u32) -> usize {
    ((request >> ioctl_sys::SIZESHIFT) & ioctl_sys::SIZEMASK) as usize
}

/// `_IOC_DIR(nr)`.
pub const fn ioc_dir(request: u32) -> u32 {
    (request >> ioctl_sys::DIRSHIFT) & ioctl_sys::DIRMASK
}

/// `SEV_IOC_TYPE`, `'S'` (psp-sev.h).
pub const SEV_IOC_TYPE: u8 = b'S';
/// `KVMIO` (kvm.h).
pub const KVMIO: u8 = 0xAE;

/// `SEV_ISSUE_CMD = _IOWR('S', 0x0, struct sev_issue_cmd)` (psp-sev.h): 0xC0105300.
pub const SEV_ISSUE_CMD: u32 = iowr(SEV_IOC_TYPE, 0, size_of::<SevIssueCmd>());

/// `KVM_CREATE_VM = _IO(KVMIO, 0x01)`.
pub const KVM_CREATE_VM: u32 = io(KVMIO, 0x01);
/// `KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03)`.
pub const KVM_CHECK_EXTENSION: u32 = io(KVMIO, 0x03);
/// `KVM_GET_API_VERSION = _IO(KVMIO, 0x00)`.
pub const KVM_GET_API_VERSION: u32 = io(KVMIO, 0x00);
/// `KVM_GET_REGS = _IOR(KVMIO, 0x81, struct kvm_regs)`.
pub const KVM_GET_REGS: u32 = ior(KVMIO, 0x81, size_of::<KvmRegs>());
/// `KVM_SET_REGS = _IOW(KVMIO, 0x82, struct kvm_regs)`.
pub const KVM_SET_REGS: u32 = iow(KVMIO, 0x82, size_of::<KvmRegs>());
/// `KVM_GET_SREGS = _IOR(KVMIO, 0x83, struct kvm_sregs)`.
pub const KVM_GET_SREGS: u32 = ior(KVMIO, 0x83, size_of::<KvmSregs>());
/// `KVM_SET_SREGS = _IOW(KVMIO, 0x84, struct kvm_sregs)`.
pub const KVM_SET_SREGS: u32 = iow(KVMIO, 0x84, size_of::<KvmSregs>());
/// `KVM_CREATE_VCPU = _IO(KVMIO, 0x41)`.
pub const KVM_CREATE_VCPU: u32 = io(KVMIO, 0x41);
/// `KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)`.
pub const KVM_SET_USER_MEMORY_REGION: u32 = iow(KVMIO, 0x46, size_of::<KvmUserspaceMemoryRegion>());
/// `KVM_MEMORY_ENCRYPT_OP = _IOWR(KVMIO, 0xba, unsigned long)`: its size field is 8, not the
/// size of `struct kvm_sev_cmd`, which is why the `sev-vm` node has its own number.
pub const KVM_MEMORY_ENCRYPT_OP: u32 = iowr(KVMIO, 0xba, size_of::<u64>());
/// `KVM_MEMORY_ENCRYPT_REG_REGION = _IOR(KVMIO, 0xbb, struct kvm_enc_region)`.
pub const KVM_MEMORY_ENCRYPT_REG_REGION: u32 = ior(KVMIO, 0xbb, 16);
/// `KVM_MEMORY_ENCRYPT_UNREG_REGION = _IOR(KVMIO, 0xbc, struct kvm_enc_region)`.
pub const KVM_MEMORY_ENCRYPT_UNREG_REGION: u32 = ior(KVMIO, 0xbc, 16);

/// `SEVD_VM_ENCRYPT_OP = _IOWR('S', 0x80, struct kvm_sev_cmd)`: KVM_MEMORY_ENCRYPT_OP on the
/// `sev-vm` node, with a size field that lets FUSE carry the 24-byte struct both ways.
pub const SEVD_VM_ENCRYPT_OP: u32 = iowr(SEV_IOC_TYPE, 0x80, size_of::<KvmSevCmd>());
/// `SEVD_VM_SET_VMSA = _IOW('S', 0x81, struct sevd_vmsa)`: a vCPU's initial save area.
pub const SEVD_VM_SET_VMSA: u32 = iow(SEV_IOC_TYPE, 0x81, size_of::<SevdVmsa>());
/// `SEVD_VM_GUEST_ACCESS = _IOWR('S', 0x82, struct sevd_guest_access)`: guest-view access.
pub const SEVD_VM_GUEST_ACCESS: u32 = iowr(SEV_IOC_TYPE, 0x82, size_of::<SevdGuestAccess>());
/// `SEVD_VM_SET_TYPE = _IOW('S', 0x83, __u64)`: the VM type `KVM_CREATE_VM` takes
/// (`KVM_X86_*_VM`), before any other ioctl on the VM.
pub const SEVD_VM_SET_TYPE: u32 = iow(SEV_IOC_TYPE, 0x83, size_of::<u64>());
/// `SEVD_VM_SNP_GUEST_REQUEST = _IOWR('S', 0x84, struct sevd_snp_guest_request)`: the VMM's
/// half of an SNP guest request (KVM handles it inside the VMGEXIT; there is no KVM ioctl).
pub const SEVD_VM_SNP_GUEST_REQUEST: u32 =
    iowr(SEV_IOC_TYPE, 0x84, size_of::<SevdSnpGuestRequest>());
/// `SEVD_VM_SEND_VMSA = _IOWR('S', 0x85, struct sevd_vmsa_packet)`: SEND_UPDATE_VMSA of one
/// vCPU's save area, for SEV-ES migration, which KVM does not offer.
pub const SEVD_VM_SEND_VMSA: u32 = iowr(SEV_IOC_TYPE, 0x85, size_of::<SevdVmsaPacket>());
/// `SEVD_VM_RECEIVE_VMSA = _IOWR('S', 0x86, struct sevd_vmsa_packet)`: RECEIVE_UPDATE_VMSA
/// of one vCPU's save area.
pub const SEVD_VM_RECEIVE_VMSA: u32 = iowr(SEV_IOC_TYPE, 0x86, size_of::<SevdVmsaPacket>());
/// `SEVD_VM_SEND_PAGES = _IOWR('S', 0x87, struct sevd_pages)`: SEND_UPDATE_DATA of a run of
/// pages, one packet each, in one round trip.
pub const SEVD_VM_SEND_PAGES: u32 = iowr(SEV_IOC_TYPE, 0x87, size_of::<SevdPages>());
/// `SEVD_VM_RECEIVE_PAGES = _IOWR('S', 0x88, struct sevd_pages)`: RECEIVE_UPDATE_DATA of a
/// run of packets into consecutive pages.
pub const SEVD_VM_RECEIVE_PAGES: u32 = iowr(SEV_IOC_TYPE, 0x88, size_of::<SevdPages>());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_kernel() {
        // Values from linux-abi.md §1.1 and §3.1.
        assert_eq!(SEV_ISSUE_CMD, 0xC010_5300);
        assert_eq!(KVM_MEMORY_ENCRYPT_OP, 0xC008_AEBA);
        assert_eq!(KVM_MEMORY_ENCRYPT_REG_REGION, 0x8010_AEBB);
        assert_eq!(KVM_MEMORY_ENCRYPT_UNREG_REGION, 0x8010_AEBC);
        assert_eq!(KVM_CREATE_VM, 0xAE01);
        assert_eq!(KVM_SET_USER_MEMORY_REGION, 0x4020_AE46);
        assert_eq!(SEVD_VM_ENCRYPT_OP, 0xC018_5380);
        // DESIGN.md's number for the VM type.
        assert_eq!(SEVD_VM_SET_TYPE, 0x4008_5383);
        assert_eq!(SEVD_VM_SNP_GUEST_REQUEST, 0xC018_5384);
        assert_eq!(SEVD_VM_SEND_VMSA, 0xC028_5385);
        assert_eq!(SEVD_VM_RECEIVE_VMSA, 0xC028_5386);
        assert_eq!(SEVD_VM_SEND_PAGES, 0xC028_5387);
        assert_eq!(SEVD_VM_RECEIVE_PAGES, 0xC028_5388);
        assert_eq!(ioc_size(SEV_ISSUE_CMD), 16);
        assert_eq!(ioc_dir(SEV_ISSUE_CMD), IOC_READ | IOC_WRITE);
    }
}
