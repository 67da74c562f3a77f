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

/// A message page with its header filled in (AUTHTAG left zero): sequence number `seqno`,
/// `msg_type` at `msg_version`, a payload of `msg_sz` bytes, sealed under VMPCK `vmpck`.
pub fn header_page(
    seqno: u64,
    msg_type: u8,
    msg_version: u8,
    msg_sz: u16,
    vmpck: u8,
) -> [u8; 4096] {
    let mut page = [0u8; 4096];
    page[SEQNO_AT..SEQNO_AT + 8].copy_from_slice(&seqno.to_le_bytes());
    page[ALGO_AT] = ALGO_AES_256_GCM;
    page[HDR_VERSION_AT] = 1;
    page[HDR_SZ_AT..HDR_SZ_AT + 2].copy_from_slice(&(HDR_LEN as u16).to_le_bytes());
    page[MSG_TYPE_AT] = msg_type;
    page[MSG_VERSION_AT] = msg_version;
    page[MSG_SZ_AT..MSG_SZ_AT + 2].copy_from_slice(&msg_sz.to_le_bytes());
    page[MSG_VMPCK_AT] = vmpck;
    page
}

/// The IV a message is sealed with: its sequence number, then four zero bytes.
pub fn iv(seqno: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv
}

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

/// MSG_KEY_REQ's payload (32 bytes at message version 1, 40 at version 2).
pub mod key_req {
    /// Its size at version 1.
    pub const LEN_V1: usize = 32;
    /// Its size at version 2.
    pub const LEN_V2: usize = 40;
    /// ROOT_KEY_SELECT u32: bit 0 the VMRK (else the VCEK or VLEK), bits 2:1 KEY_SEL.
    pub const ROOT_KEY_SELECT_AT: usize = 0x00;
    /// Reserved u32.
    pub const RESERVED_AT: usize = 0x04;
    /// GUEST_FIELD_SELECT u64.
    pub const GUEST_FIELD_SELECT_AT: usize = 0x08;
    /// VMPL u32.
    pub const VMPL_AT: usize = 0x10;
    /// GUEST_SVN u32.
    pub const GUEST_SVN_AT: usize = 0x14;
    /// TCB_VERSION u64.
    pub const TCB_VERSION_AT: usize = 0x18;
    /// LAUNCH_MIT_VECTOR u64 (version 2).
    pub const LAUNCH_MIT_VECTOR_AT: usize = 0x20;
}

/// MSG_KEY_RSP's payload: STATUS, reserved, the derived key (64 bytes).
pub mod key_rsp {
    /// Its size.
    pub const LEN: usize = 64;
    /// The key.
    pub const KEY: core::ops::Range<usize> = 0x20..0x40;
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
