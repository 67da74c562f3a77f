//! ATTESTATION_REPORT (SEV-SNP ABI "ATTESTATION_REPORT Structure"; snp.md §6): 0x4A0 bytes,
//! signed with ECDSA P-384 over SHA-384 of bytes 0x000..0x2A0.

use core::ops::Range;

/// Its size.
pub const LEN: usize = 0x4a0;
/// The version this firmware writes (the CPUID fields are set from version 3).
pub const VERSION: u32 = 3;
/// What the signature covers.
pub const SIGNED: Range<usize> = 0x000..0x2a0;

/// VERSION u32.
pub const VERSION_AT: usize = 0x000;
/// GUEST_SVN u32.
pub const GUEST_SVN_AT: usize = 0x004;
/// POLICY u64.
pub const POLICY_AT: usize = 0x008;
/// FAMILY_ID.
pub const FAMILY_ID: Range<usize> = 0x010..0x020;
/// IMAGE_ID.
pub const IMAGE_ID: Range<usize> = 0x020..0x030;
/// VMPL u32.
pub const VMPL_AT: usize = 0x030;
/// SIGNATURE_ALGO u32 (1: ECDSA P-384 with SHA-384).
pub const SIGNATURE_ALGO_AT: usize = 0x034;
/// CURRENT_TCB u64.
pub const CURRENT_TCB_AT: usize = 0x038;
/// PLATFORM_INFO u64.
pub const PLATFORM_INFO_AT: usize = 0x040;
/// Key information u32: bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY, bits 4:2 SIGNING_KEY.
pub const KEY_INFO_AT: usize = 0x048;
/// REPORT_DATA.
pub const REPORT_DATA: Range<usize> = 0x050..0x090;
/// MEASUREMENT: the launch digest.
pub const MEASUREMENT: Range<usize> = 0x090..0x0c0;
/// HOST_DATA.
pub const HOST_DATA: Range<usize> = 0x0c0..0x0e0;
/// ID_KEY_DIGEST.
pub const ID_KEY_DIGEST: Range<usize> = 0x0e0..0x110;
/// AUTHOR_KEY_DIGEST.
pub const AUTHOR_KEY_DIGEST: Range<usize> = 0x110..0x140;
/// REPORT_ID.
pub const REPORT_ID: Range<usize> = 0x140..0x160;
/// REPORT_ID_MA.
pub const REPORT_ID_MA: Range<usize> = 0x160..0x180;
/// REPORTED_TCB u64.
pub const REPORTED_TCB_AT: usize = 0x180;
/// CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP (version 3).
pub const CPUID_FAM_ID_AT: usize = 0x188;
/// CHIP_ID.
pub const CHIP_ID: Range<usize> = 0x1a0..0x1e0;
/// COMMITTED_TCB u64.
pub const COMMITTED_TCB_AT: usize = 0x1e0;
/// CURRENT_BUILD, CURRENT_MINOR, CURRENT_MAJOR.
pub const CURRENT_VERSION_AT: usize = 0x1e8;
/// COMMITTED_BUILD, COMMITTED_MINOR, COMMITTED_MAJOR.
pub const COMMITTED_VERSION_AT: usize = 0x1ec;
/// LAUNCH_TCB u64.
pub const LAUNCH_TCB_AT: usize = 0x1f0;
/// SIGNATURE: R and S, 72-byte little-endian fields.
pub const SIGNATURE: Range<usize> = 0x2a0..0x330;

/// PLATFORM_INFO bit 0: SMT is enabled.
pub const PLATFORM_INFO_SMT_EN: u64 = 1 << 0;
/// PLATFORM_INFO bit 1: TSME is enabled.
pub const PLATFORM_INFO_TSME_EN: u64 = 1 << 1;
/// PLATFORM_INFO bit 5: alias detection completed since the last reset and found no aliasing
/// addresses (the CVE-2024-21944 mitigation, AMD-SB-3015).
pub const PLATFORM_INFO_ALIAS_CHECK_COMPLETE: u64 = 1 << 5;
/// KEY_INFO SIGNING_KEY values (bits 4:2).
pub const SIGNING_KEY_VCEK: u32 = 0;
/// Signed with the VLEK.
pub const SIGNING_KEY_VLEK: u32 = 1;
/// Not signed.
pub const SIGNING_KEY_NONE: u32 = 7;

/// A u32 of a report.
pub fn u32_at(report: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&report[at..at + 4]);
    u32::from_le_bytes(b)
}

/// A u64 of a report.
pub fn u64_at(report: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&report[at..at + 8]);
    u64::from_le_bytes(b)
}
