//! `include/uapi/linux/psp-sev.h`: the `/dev/sev` ioctl ABI.
//!
//! Every struct is `__packed` in the header, so every struct here is `repr(C, packed)`.

use crate::bytes::byte_valued;

/// `SEV_FW_BLOB_MAX_SIZE` (include/linux/psp-sev.h): the kernel's cap on a blob it copies.
pub const SEV_FW_BLOB_MAX_SIZE: u32 = 0x4000;

/// `SEV_STATUS_FLAGS_CONFIG_ES`: bit 8 of `sev_user_data_status.flags`.
pub const SEV_STATUS_FLAGS_CONFIG_ES: u32 = 0x0100;
/// Bit 0 of `sev_user_data_status.flags`: the platform is externally owned.
pub const SEV_STATUS_FLAGS_OWNER: u32 = 0x0001;

/// Length of a SEV certificate (0x824), what PEK_CSR writes.
pub const SEV_CERT_LEN: u32 = 0x824;
/// Length of the PDH_CERT_EXPORT chain, PEK ‖ OCA ‖ CEK.
pub const SEV_CERT_CHAIN_LEN: u32 = 3 * SEV_CERT_LEN;
/// Length of one socket's chip id (GET_ID).
pub const SEV_ID_LEN: u32 = 64;

/// The `cmd` values of `struct sev_issue_cmd` (psp-sev.h's anonymous enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum SevCmd {
    /// `SEV_FACTORY_RESET`: firmware PLATFORM_RESET.
    FactoryReset = 0,
    /// `SEV_PLATFORM_STATUS`.
    PlatformStatus = 1,
    /// `SEV_PEK_GEN`.
    PekGen = 2,
    /// `SEV_PEK_CSR`.
    PekCsr = 3,
    /// `SEV_PDH_GEN`.
    PdhGen = 4,
    /// `SEV_PDH_CERT_EXPORT`.
    PdhCertExport = 5,
    /// `SEV_PEK_CERT_IMPORT`.
    PekCertImport = 6,
    /// `SEV_GET_ID` (deprecated; sev-tool still uses it).
    GetId = 7,
    /// `SEV_GET_ID2`.
    GetId2 = 8,
    /// `SNP_PLATFORM_STATUS`.
    SnpPlatformStatus = 9,
    /// `SNP_COMMIT`.
    SnpCommit = 10,
    /// `SNP_SET_CONFIG`.
    SnpSetConfig = 11,
    /// `SNP_VLEK_LOAD`.
    SnpVlekLoad = 12,
}

/// `SEV_MAX`: one past the last command id.
pub const SEV_MAX: u32 = 13;

impl SevCmd {
    /// Every command, in id order.
    pub const ALL: [SevCmd; SEV_MAX as usize] = [
        SevCmd::FactoryReset,
        SevCmd::PlatformStatus,
        SevCmd::PekGen,
        SevCmd::PekCsr,
        SevCmd::PdhGen,
        SevCmd::PdhCertExport,
        SevCmd::PekCertImport,
        SevCmd::GetId,
        SevCmd::GetId2,
        SevCmd::SnpPlatformStatus,
        SevCmd::SnpCommit,
        SevCmd::SnpSetConfig,
        SevCmd::SnpVlekLoad,
    ];

    /// The command for an id, `None` for ids at or past `SEV_MAX`.
    pub fn from_id(id: u32) -> Option<SevCmd> {
        Self::ALL.get(id as usize).copied()
    }

    /// The header's name for the command.
    pub fn name(self) -> &'static str {
        match self {
            SevCmd::FactoryReset => "SEV_FACTORY_RESET",
            SevCmd::PlatformStatus => "SEV_PLATFORM_STATUS",
            SevCmd::PekGen => "SEV_PEK_GEN",
            SevCmd::PekCsr => "SEV_PEK_CSR",
            SevCmd::PdhGen => "SEV_PDH_GEN",
            SevCmd::PdhCertExport => "SEV_PDH_CERT_EXPORT",
            SevCmd::PekCertImport => "SEV_PEK_CERT_IMPORT",
            SevCmd::GetId => "SEV_GET_ID",
            SevCmd::GetId2 => "SEV_GET_ID2",
            SevCmd::SnpPlatformStatus => "SNP_PLATFORM_STATUS",
            SevCmd::SnpCommit => "SNP_COMMIT",
            SevCmd::SnpSetConfig => "SNP_SET_CONFIG",
            SevCmd::SnpVlekLoad => "SNP_VLEK_LOAD",
        }
    }
}

/// `struct sev_issue_cmd`: the argument of `SEV_ISSUE_CMD`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, packed)]
pub struct SevIssueCmd {
    /// Command id ([`SevCmd`]).
    pub cmd: u32,
    /// User address of the command's struct.
    pub data: u64,
    /// Firmware status, written back by the driver.
    pub error: u32,
}

/// `struct sev_user_data_status`: PLATFORM_STATUS output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, packed)]
pub struct SevUserDataStatus {
    /// API major version.
    pub api_major: u8,
    /// API minor version.
    pub api_minor: u8,
    /// Platform state: 0 UNINIT, 1 INIT, 2 WORKING.
    pub state: u8,
    /// Bit 0 owner, bit 8 CONFIG_ES.
    pub flags: u32,
    /// Firmware build.
    pub build: u8,
    /// Number of guests.
    pub guest_count: u32,
}

/// `struct sev_user_data_pek_csr`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, packed)]
pub struct SevUserDataPekCsr {
    /// User buffer for the CSR.
    pub address: u64,
    /// Its length; the needed length is written back.
    pub length: u32,
}

/// `struct sev_user_data_pek_cert_import`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, packed)]
pub struct SevUserDataPekCertImport {
    /// The OCA-signed PEK certificate.
    pub pek_cert_address: u64,
    /// Its length.
    pub pek_cert_len: u32,
    /// The OCA certificate.
    pub oca_cert_address: u64,
    /// Its length.
    pub oca_cert_len: u32,
}

/// `struct sev_user_data_pdh_cert_export`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, packed)]
pub struct SevUserDataPdhCertExport {
    /// Buffer for the PDH certificate.
    pub pdh_cert_address: u64,
    /// Its length; the needed length is written back.
    pub pdh_cert_len: u32,
    /// Buffer for PEK ‖ OCA ‖ CEK.
    pub cert_chain_address: u64,
    /// Its length; the needed length is written back.
    pub cert_chain_len: u32,
}

/// `struct sev_user_data_get_id` (deprecated GET_ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
pub struct SevUserDataGetId {
    /// First socket's id.
    pub socket1: [u8; 64],
    /// Second socket's id.
    pub socket2: [u8; 64],
}

impl Default for SevUserDataGetId {
    fn default() -> Self {
        Self {
            socket1: [0; 64],
            socket2: [0; 64],
        }
    }
}

/// `struct sev_user_data_get_id2`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, packed)]
pub struct SevUserDataGetId2 {
    /// Buffer for the id.
    pub address: u64,
    /// Its length; the needed length is written back.
    pub length: u32,
}

/// `struct sev_user_data_snp_status` (SNP_PLATFORM_STATUS output, 32 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, packed)]
pub struct SevUserDataSnpStatus {
    /// API major version.
    pub api_major: u8,
    /// API minor version.
    pub api_minor: u8,
    /// SNP state.
    pub state: u8,
    /// Bit 0 `is_rmp_initialized`; bit 1 `alias_check_complete` (firmware with the
    /// CVE-2024-21944 mitigation; the uapi header calls it reserved).
    pub is_rmp_initialized: u8,
    /// Build id.
    pub build_id: u32,
    /// Bit field: mask_chip_id, mask_chip_key, vlek_en, ...
    pub feature_bits: u32,
    /// Number of guests.
    pub guest_count: u32,
    /// Current TCB.
    pub current_tcb_version: u64,
    /// Reported TCB.
    pub reported_tcb_version: u64,
}

/// `struct sev_user_data_snp_config` (SNP_SET_CONFIG input, 64 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
pub struct SevUserDataSnpConfig {
    /// Reported TCB.
    pub reported_tcb: u64,
    /// Bit 0 mask_chip_id, bit 1 mask_chip_key.
    pub mask_bits: u32,
    /// Reserved.
    pub rsvd1: [u8; 52],
}

impl Default for SevUserDataSnpConfig {
    fn default() -> Self {
        Self {
            reported_tcb: 0,
            mask_bits: 0,
            rsvd1: [0; 52],
        }
    }
}

/// `struct sev_user_data_snp_vlek_load` (16 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, packed)]
pub struct SevUserDataSnpVlekLoad {
    /// Must be 16.
    pub len: u32,
    /// Must be 0.
    pub vlek_wrapped_version: u8,
    /// Reserved.
    pub rsvd: [u8; 3],
    /// User address of the 432-byte wrapped VLEK hashstick.
    pub vlek_wrapped_address: u64,
}

byte_valued! {
    SevIssueCmd = 16,
    SevUserDataStatus = 12,
    SevUserDataPekCsr = 12,
    SevUserDataPekCertImport = 24,
    SevUserDataPdhCertExport = 24,
    SevUserDataGetId = 128,
    SevUserDataGetId2 = 12,
    SevUserDataSnpStatus = 32,
    SevUserDataSnpConfig = 64,
    SevUserDataSnpVlekLoad = 16,
}

// Offsets the header fixes (linux-abi.md §1.2, §1.4); the C-compiled comparison is in
// tests/layout.rs.
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(SevIssueCmd, data) == 4);
    assert!(offset_of!(SevIssueCmd, error) == 12);
    assert!(offset_of!(SevUserDataStatus, flags) == 3);
    assert!(offset_of!(SevUserDataStatus, build) == 7);
    assert!(offset_of!(SevUserDataStatus, guest_count) == 8);
    assert!(offset_of!(SevUserDataPekCertImport, oca_cert_address) == 12);
    assert!(offset_of!(SevUserDataPdhCertExport, cert_chain_address) == 12);
    assert!(offset_of!(SevUserDataPdhCertExport, cert_chain_len) == 20);
    assert!(offset_of!(SevUserDataSnpStatus, current_tcb_version) == 16);
    assert!(offset_of!(SevUserDataSnpVlekLoad, vlek_wrapped_address) == 8);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_ids_round_trip() {
        for id in 0..SEV_MAX {
            let cmd = SevCmd::from_id(id).unwrap();
            assert_eq!(cmd as u32, id);
        }
        assert_eq!(SevCmd::from_id(SEV_MAX), None);
        assert_eq!(SevCmd::from_id(u32::MAX), None);
    }
}
