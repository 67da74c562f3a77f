//! `linux/sev-guest.h`: the guest's `/dev/sev-guest` (snp.md §7.1): one struct for every
//! request, `snp_guest_request_ioctl`, pointing at the request and response structs.

use crate::bytes::byte_valued;
use crate::ioctl::iowr;

/// `struct snp_guest_request_ioctl` (32 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SnpGuestRequestIoctl {
    /// The message version (must not be 0).
    pub msg_version: u8,
    /// Padding.
    pub pad: [u8; 7],
    /// The request struct.
    pub req_data: u64,
    /// The response struct.
    pub resp_data: u64,
    /// Bits 31:0 the firmware's status, 63:32 the VMM's error.
    pub exitinfo2: u64,
}

/// `struct snp_report_req` (96 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct SnpReportReq {
    /// REPORT_DATA.
    pub user_data: [u8; 64],
    /// VMPL.
    pub vmpl: u32,
    /// Must be zero.
    pub rsvd: [u8; 28],
}

impl Default for SnpReportReq {
    fn default() -> Self {
        SnpReportReq {
            user_data: [0; 64],
            vmpl: 0,
            rsvd: [0; 28],
        }
    }
}

/// `struct snp_derived_key_req` (32 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SnpDerivedKeyReq {
    /// ROOT_KEY_SELECT.
    pub root_key_select: u32,
    /// Reserved.
    pub rsvd: u32,
    /// GUEST_FIELD_SELECT.
    pub guest_field_select: u64,
    /// VMPL.
    pub vmpl: u32,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// TCB_VERSION.
    pub tcb_version: u64,
}

/// `struct snp_ext_report_req` (112 bytes with its padding).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SnpExtReportReq {
    /// The report request.
    pub data: SnpReportReq,
    /// Where the certificate blob goes.
    pub certs_address: u64,
    /// Its length (in: the buffer's; out, on INVALID_LEN: what is needed).
    pub certs_len: u32,
    /// Padding.
    pub pad: u32,
}

/// `struct snp_report_resp`'s size.
pub const SNP_REPORT_RESP_LEN: usize = 4000;
/// `struct snp_derived_key_resp`'s size.
pub const SNP_DERIVED_KEY_RESP_LEN: usize = 64;

/// `SNP_GET_REPORT = _IOWR('S', 0x0, struct snp_guest_request_ioctl)`.
pub const SNP_GET_REPORT: u32 = iowr(b'S', 0x0, core::mem::size_of::<SnpGuestRequestIoctl>());
/// `SNP_GET_DERIVED_KEY`.
pub const SNP_GET_DERIVED_KEY: u32 = iowr(b'S', 0x1, core::mem::size_of::<SnpGuestRequestIoctl>());
/// `SNP_GET_EXT_REPORT`.
pub const SNP_GET_EXT_REPORT: u32 = iowr(b'S', 0x2, core::mem::size_of::<SnpGuestRequestIoctl>());

/// `SNP_GUEST_VMM_ERR_INVALID_LEN`: the certificate buffer is too small.
pub const SNP_GUEST_VMM_ERR_INVALID_LEN: u64 = 1;
/// `SNP_GUEST_VMM_ERR_SHIFT`.
pub const SNP_GUEST_VMM_ERR_SHIFT: u32 = 32;

/// The GUIDs of the extended report's certificate table (GHCB spec; snp.md §8.3), in the
/// RFC 4122 byte order of their string forms, as the tools read them.
pub mod cert_guid {
    /// The ARK.
    pub const ARK: &str = "c0b406a4-a803-4952-9743-3fb6014cd0ae";
    /// The ASK (or ASVK).
    pub const ASK: &str = "4ab7b379-bbac-4fe4-a02f-05aef327c782";
    /// The VCEK.
    pub const VCEK: &str = "63da758d-e664-4564-adc5-f4b93be8accd";
}

byte_valued! {
    SnpGuestRequestIoctl = 32,
    SnpReportReq = 96,
    SnpDerivedKeyReq = 32,
    SnpExtReportReq = 112,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_kernel() {
        // snp.md §7.1.
        assert_eq!(SNP_GET_REPORT, 0xC020_5300);
        assert_eq!(SNP_GET_DERIVED_KEY, 0xC020_5301);
        assert_eq!(SNP_GET_EXT_REPORT, 0xC020_5302);
    }
}
