//! SEV-SNP launch formats (SEV-SNP firmware ABI, pub. 56860, §8.17 "SNP_LAUNCH_UPDATE";
//! snp.md §5.1): the page types of a launch update and the PAGE_INFO structure whose
//! SHA-384 extends the launch digest.

/// A page's type in `SNP_LAUNCH_UPDATE` (the firmware's numbering, which
/// `kvm_sev_snp_launch_update.type` uses too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PageType {
    /// Measured contents.
    Normal = 1,
    /// A vCPU save area (measured, with its TSC fields zeroed first).
    Vmsa = 2,
    /// Zero-filled by the firmware; measured as zero contents.
    Zero = 3,
    /// Encrypted but not measured.
    Unmeasured = 4,
    /// The secrets page, filled by the firmware.
    Secrets = 5,
    /// The CPUID page, checked by the firmware.
    Cpuid = 6,
}

impl PageType {
    /// The type for a raw value, if it is one.
    pub fn from_u8(v: u8) -> Option<Self> {
        use PageType::*;
        [Normal, Vmsa, Zero, Unmeasured, Secrets, Cpuid]
            .into_iter()
            .find(|t| *t as u8 == v)
    }

    /// Whether the page's contents are hashed into PAGE_INFO (else 48 zero bytes stand in).
    pub fn is_measured(self) -> bool {
        matches!(self, PageType::Normal | PageType::Vmsa)
    }
}

/// Size of a launch digest (SHA-384).
pub const DIGEST_LEN: usize = 48;
/// Size of PAGE_INFO.
pub const PAGE_INFO_LEN: usize = 0x70;
/// The GPA KVM gives every VMSA page (GPA −1, page-aligned, bits above 51 cleared).
pub const VMSA_GPA: u64 = 0xffff_ffff_f000;
/// GUEST_TSC_SCALE and GUEST_TSC_OFFSET in a VMSA, which the firmware zeroes before hashing.
pub const VMSA_TSC_FIELDS: std::ops::Range<usize> = 0x2f0..0x300;

/// PAGE_INFO: what the firmware hashes for each 4 KiB page of a launch update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageInfo {
    /// The launch digest so far.
    pub digest_cur: [u8; DIGEST_LEN],
    /// SHA-384 of the page for measured types, zero otherwise.
    pub contents: [u8; DIGEST_LEN],
    /// The page's type.
    pub page_type: PageType,
    /// Whether the page is an IMI page (a second digest chain; migration agents).
    pub imi_page: bool,
    /// VMPL3, VMPL2, VMPL1 permissions, in that order (upstream KVM leaves them 0).
    pub vmpl_perms: [u8; 3],
    /// The page's guest physical address.
    pub gpa: u64,
}

impl PageInfo {
    /// The 112 bytes the firmware hashes.
    pub fn encode(&self) -> [u8; PAGE_INFO_LEN] {
        let mut b = [0u8; PAGE_INFO_LEN];
        b[..0x30].copy_from_slice(&self.digest_cur);
        b[0x30..0x60].copy_from_slice(&self.contents);
        b[0x60..0x62].copy_from_slice(&(PAGE_INFO_LEN as u16).to_le_bytes());
        b[0x62] = self.page_type as u8;
        b[0x63] = self.imi_page as u8;
        b[0x64..0x67].copy_from_slice(&self.vmpl_perms);
        b[0x68..0x70].copy_from_slice(&self.gpa.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_info_layout() {
        let info = PageInfo {
            digest_cur: [1; 48],
            contents: [2; 48],
            page_type: PageType::Cpuid,
            imi_page: true,
            vmpl_perms: [3, 4, 5],
            gpa: 0x1122_3344_5566_7000,
        };
        let b = info.encode();
        assert_eq!(b[0x2f], 1);
        assert_eq!(b[0x30], 2);
        assert_eq!(b[0x60..0x68], [0x70, 0, 6, 1, 3, 4, 5, 0]);
        assert_eq!(b[0x68..], 0x1122_3344_5566_7000u64.to_le_bytes());
        assert_eq!(PageType::from_u8(6), Some(PageType::Cpuid));
        assert_eq!(PageType::from_u8(7), None);
        assert!(PageType::Vmsa.is_measured() && !PageType::Zero.is_measured());
    }
}
