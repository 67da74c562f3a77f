//! The messages of SNP_GUEST_REQUEST (SEV-SNP ABI "Guest Messages"; snp.md §7.3): a 96-byte
//! header and a payload AES-256-GCM-sealed under one of the guest's VMPCKs, in one page.

use core::ops::Range;

/// The header's size.
pub const HDR_LEN: usize = 0x60;
/// AUTHTAG (the GCM tag in the first 16 bytes).
pub const AUTHTAG: Range<usize> = 0x00..0x20;
/// The GCM tag within AUTHTAG.
pub const TAG: Range<usize> = 0x00..0x10;
/// MSG_SEQNO u64.
pub const SEQNO_AT: usize = 0x20;
/// What the tag authenticates besides the payload: bytes 0x30..0x60 of the header.
pub const AAD: Range<usize> = 0x30..0x60;
/// ALGO u8 (1: AES-256-GCM).
pub const ALGO_AT: usize = 0x30;
/// HDR_VERSION u8 (1).
pub const HDR_VERSION_AT: usize = 0x31;
/// HDR_SZ u16 (0x60).
pub const HDR_SZ_AT: usize = 0x32;
/// MSG_TYPE u8.
pub const MSG_TYPE_AT: usize = 0x34;
/// MSG_VERSION u8.
pub const MSG_VERSION_AT: usize = 0x35;
/// MSG_SZ u16: the payload's length.
pub const MSG_SZ_AT: usize = 0x36;
/// MSG_VMPCK u8: which VMPCK sealed it.
pub const MSG_VMPCK_AT: usize = 0x3c;
/// AES-256-GCM.
pub const ALGO_AES_256_GCM: u8 = 1;

/// Message types.
pub mod msg_type {
    /// CPUID_REQ.
    pub const CPUID_REQ: u8 = 1;
    /// KEY_REQ: a derived key.
    pub const KEY_REQ: u8 = 3;
    /// KEY_RSP.
    pub const KEY_RSP: u8 = 4;
    /// REPORT_REQ: an attestation report.
    pub const REPORT_REQ: u8 = 5;
    /// REPORT_RSP.
    pub const REPORT_RSP: u8 = 6;
}

/// MSG_REPORT_REQ's payload: REPORT_DATA, VMPL, key select and reserved (96 bytes).
pub mod report_req {
    /// Its size.
    pub const LEN: usize = 96;
    /// REPORT_DATA.
    pub const REPORT_DATA: core::ops::Range<usize> = 0..64;
    /// VMPL u32.
    pub const VMPL_AT: usize = 64;
    /// bits 1:0 KEY_SEL; the rest reserved.
    pub const KEY_SEL_AT: usize = 68;
}

/// MSG_REPORT_RSP's payload: STATUS, REPORT_SIZE, reserved, the report (0x4C0 bytes).
pub mod report_rsp {
    /// Its size.
    pub const LEN: usize = 0x20 + super::super::report::LEN;
    /// STATUS u32.
    pub const STATUS_AT: usize = 0;
    /// REPORT_SIZE u32.
    pub const REPORT_SIZE_AT: usize = 4;
    /// The report.
    pub const REPORT_AT: usize = 0x20;
}
