//! SEV-SNP launch formats (SEV-SNP firmware ABI, pub. 56860, §8.17 "SNP_LAUNCH_UPDATE";
//! snp.md §5.1): the page types of a launch update and the PAGE_INFO structure whose
//! SHA-384 extends the launch digest; the TCB version and the guest policy.

pub mod cert_table;
pub mod guest_msg;
pub mod report;

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

/// How a generation lays its TCB_VERSION out in a u64 (linux-abi.md §1.4, snp.md §6;
/// virtee's `TcbVersion` encodes by the CPU's generation in the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcbLayout {
    /// Milan and Genoa: byte 0 boot loader, 1 TEE, 2..6 reserved, 6 SNP, 7 microcode.
    Legacy,
    /// Turin and later: byte 0 FMC, 1 boot loader, 2 TEE, 3 SNP, 4..7 reserved,
    /// 7 microcode.
    Fmc,
}

/// A TCB version: the security patch levels (SPLs) of the parts a report vouches for.
/// `fmc` is set exactly on the parts that have one (Turin on), and chooses the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TcbVersion {
    /// SPL of the PSP's first mutable code (FMC), on Turin and later only.
    pub fmc: Option<u8>,
    /// SPL of the PSP boot loader.
    pub bootloader: u8,
    /// SPL of the PSP operating system (TEE).
    pub tee: u8,
    /// SPL of the SNP firmware.
    pub snp: u8,
    /// SPL of the CPU microcode.
    pub microcode: u8,
}

impl TcbVersion {
    /// The layout its u64 has.
    pub fn layout(self) -> TcbLayout {
        match self.fmc {
            Some(_) => TcbLayout::Fmc,
            None => TcbLayout::Legacy,
        }
    }

    /// The u64 the firmware reports.
    pub fn to_u64(self) -> u64 {
        let b = match self.fmc {
            None => [
                self.bootloader,
                self.tee,
                0,
                0,
                0,
                0,
                self.snp,
                self.microcode,
            ],
            Some(fmc) => [
                fmc,
                self.bootloader,
                self.tee,
                self.snp,
                0,
                0,
                0,
                self.microcode,
            ],
        };
        u64::from_le_bytes(b)
    }

    /// The TCB of a u64 laid out as `layout`, or `None` when its reserved bytes are not
    /// zero.
    pub fn from_u64(v: u64, layout: TcbLayout) -> Option<Self> {
        let b = v.to_le_bytes();
        match layout {
            TcbLayout::Legacy => b[2..6].iter().all(|x| *x == 0).then_some(TcbVersion {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            }),
            TcbLayout::Fmc => b[4..7].iter().all(|x| *x == 0).then_some(TcbVersion {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            }),
        }
    }

    /// Whether any component of `self` is above `other`'s (the firmware's
    /// `tcb_compare_versions(self, other) > 0`).
    pub fn exceeds(self, other: TcbVersion) -> bool {
        self.fmc > other.fmc
            || self.bootloader > other.bootloader
            || self.tee > other.tee
            || self.snp > other.snp
            || self.microcode > other.microcode
    }
}

impl std::fmt::Display for TcbVersion {
    /// `bootloader:tee:snp:microcode`, with `fmc:` before it where there is one: the form
    /// `sevd --snp-tcb` takes, in the order of the u64's bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(fmc) = self.fmc {
            write!(f, "{fmc}:")?;
        }
        write!(
            f,
            "{}:{}:{}:{}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

impl std::str::FromStr for TcbVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let spl = |name: &str, v: &str| {
            v.parse::<u8>()
                .map_err(|_| format!("the {name} SPL must be a number 0-255, not {v:?}"))
        };
        let parts: Vec<&str> = s.split(':').collect();
        let (fmc, rest) = match parts[..] {
            [fmc, ref rest @ ..] if rest.len() == 4 => (Some(spl("FMC", fmc)?), rest),
            ref rest => (None, rest),
        };
        let [bl, tee, snp, ucode] = rest[..] else {
            return Err(format!(
                "a TCB is BOOTLOADER:TEE:SNP:MICROCODE, or FMC:BOOTLOADER:TEE:SNP:MICROCODE \
                 on Turin (numbers 0-255), not {s:?}"
            ));
        };
        Ok(TcbVersion {
            fmc,
            bootloader: spl("boot loader", bl)?,
            tee: spl("TEE", tee)?,
            snp: spl("SNP", snp)?,
            microcode: spl("microcode", ucode)?,
        })
    }
}

/// The ID block an owner may give LAUNCH_FINISH (SEV-SNP ABI "ID_BLOCK"; snp.md §4.4): the
/// expected launch digest, family and image ids, version, guest SVN and policy.
pub mod id_block {
    /// Its size (`KVM_SEV_SNP_ID_BLOCK_SIZE`).
    pub const LEN: usize = 96;
    /// The expected launch digest.
    pub const LD: core::ops::Range<usize> = 0x00..0x30;
    /// FAMILY_ID.
    pub const FAMILY_ID: core::ops::Range<usize> = 0x30..0x40;
    /// IMAGE_ID.
    pub const IMAGE_ID: core::ops::Range<usize> = 0x40..0x50;
    /// VERSION, which must be 1.
    pub const VERSION: core::ops::Range<usize> = 0x50..0x54;
    /// GUEST_SVN.
    pub const GUEST_SVN: core::ops::Range<usize> = 0x54..0x58;
    /// The expected policy.
    pub const POLICY: core::ops::Range<usize> = 0x58..0x60;
}

/// The ID authentication structure beside an ID block (snp.md §4.4): the ID key's signature
/// of the block, the ID key, and optionally the author key's signature of the ID key.
pub mod id_auth {
    /// Its size (`KVM_SEV_SNP_ID_AUTH_SIZE`).
    pub const LEN: usize = 4096;
    /// ID_KEY_ALGO (1: ECDSA P-384 with SHA-384).
    pub const ID_KEY_ALGO: core::ops::Range<usize> = 0x000..0x004;
    /// AUTH_KEY_ALGO.
    pub const AUTH_KEY_ALGO: core::ops::Range<usize> = 0x004..0x008;
    /// The ID key's signature of the ID block (AMD signature format, 512 bytes).
    pub const ID_BLOCK_SIG: core::ops::Range<usize> = 0x040..0x240;
    /// The ID key (AMD public key format, 0x404 bytes).
    pub const ID_KEY: core::ops::Range<usize> = 0x240..0x644;
    /// The author key's signature of the ID key.
    pub const ID_KEY_SIG: core::ops::Range<usize> = 0x680..0x880;
    /// The author key.
    pub const AUTHOR_KEY: core::ops::Range<usize> = 0x880..0xc84;
    /// The only algorithm: ECDSA P-384 with SHA-384.
    pub const ALGO_ECDSA_P384_SHA384: u32 = 1;
}

/// The secrets page the firmware writes at a SECRETS launch update (snp.md §4.6).
pub mod secrets_page {
    /// Its version in firmware 1.55.
    pub const VERSION: u32 = 3;
    /// `version` u32.
    pub const VERSION_AT: usize = 0x000;
    /// `imi_en` u32 (bit 0).
    pub const IMI_EN_AT: usize = 0x004;
    /// CPUID Fn0000_0001_EAX of the platform.
    pub const FMS_AT: usize = 0x008;
    /// GOSVW from LAUNCH_START (16 bytes).
    pub const GOSVW: core::ops::Range<usize> = 0x010..0x020;
    /// VMPCK0..3, 32 bytes each.
    pub const VMPCK: [core::ops::Range<usize>; 4] =
        [0x020..0x040, 0x040..0x060, 0x060..0x080, 0x080..0x0a0];
    /// The guest OS's area (message sequence numbers and more).
    pub const OS_AREA: core::ops::Range<usize> = 0x0a0..0x100;
    /// `tsc_factor` u32.
    pub const TSC_FACTOR_AT: usize = 0x160;
    /// Genoa's TSC factor: (100000 − 99600) / 2.
    pub const TSC_FACTOR: u32 = 200;
}

/// The CPUID page a CPUID launch update carries (snp.md §4.7).
pub mod cpuid_page {
    /// Most entries a page holds.
    pub const MAX_ENTRIES: usize = 64;
    /// `count` u32.
    pub const COUNT_AT: usize = 0x00;
    /// Reserved u32 and u64 after it, zero.
    pub const RESERVED: core::ops::Range<usize> = 0x04..0x10;
    /// The first entry.
    pub const ENTRIES_AT: usize = 0x10;
    /// One entry: `eax_in`, `ecx_in`, `xcr0_in` (u64), `xss_in` (u64), `eax`, `ebx`, `ecx`,
    /// `edx`, reserved (u64).
    pub const ENTRY_LEN: usize = 48;
    /// Offsets in an entry.
    pub const EAX_IN: usize = 0;
    /// `ebx` out.
    pub const EBX: usize = 28;
    /// The entry's reserved u64.
    pub const ENTRY_RESERVED: core::ops::Range<usize> = 40..48;
}

/// The SNP guest policy, a u64 (SEV-SNP ABI §4.3 "Guest Policy"; snp.md §6).
pub mod policy {
    /// Bits 7:0, the minimum ABI minor version.
    pub const ABI_MINOR_SHIFT: u32 = 0;
    /// Bits 15:8, the minimum ABI major version.
    pub const ABI_MAJOR_SHIFT: u32 = 8;
    /// SMT may be enabled on the platform.
    pub const SMT: u64 = 1 << 16;
    /// Reserved, must be 1.
    pub const RSVD_MBO: u64 = 1 << 17;
    /// A migration agent may be associated with the guest.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// Debugging is allowed.
    pub const DEBUG: u64 = 1 << 19;
    /// The guest may be activated on one socket only.
    pub const SINGLE_SOCKET: u64 = 1 << 20;
    /// CXL may be populated with devices or memory.
    pub const CXL_ALLOW: u64 = 1 << 21;
    /// AES-256-XTS is required for memory encryption.
    pub const MEM_AES_256_XTS: u64 = 1 << 22;
    /// Running Average Power Limit must be disabled.
    pub const RAPL_DIS: u64 = 1 << 23;
    /// Ciphertext hiding must be enabled for DRAM.
    pub const CIPHERTEXT_HIDING_DRAM: u64 = 1 << 24;
    /// Page swapping must be disabled.
    pub const PAGE_SWAP_DISABLE: u64 = 1 << 25;
    /// Bits 63:26, which must be zero.
    pub const MBZ: u64 = !((1 << 26) - 1);

    /// The named flags, lower-case (the manifest's names).
    pub const FLAGS: &[(&str, u64)] = &[
        ("smt", SMT),
        ("migrate-ma", MIGRATE_MA),
        ("debug", DEBUG),
        ("single-socket", SINGLE_SOCKET),
        ("cxl-allow", CXL_ALLOW),
        ("mem-aes-256-xts", MEM_AES_256_XTS),
        ("rapl-dis", RAPL_DIS),
        ("ciphertext-hiding-dram", CIPHERTEXT_HIDING_DRAM),
        ("page-swap-disable", PAGE_SWAP_DISABLE),
    ];

    /// A policy from its flags and minimum ABI, with the must-be-one bit set.
    pub fn compose(flags: u64, abi_major: u8, abi_minor: u8) -> u64 {
        flags
            | RSVD_MBO
            | (abi_major as u64) << ABI_MAJOR_SHIFT
            | (abi_minor as u64) << ABI_MINOR_SHIFT
    }

    /// The minimum ABI a policy asks for: (major, minor).
    pub fn abi(policy: u64) -> (u8, u8) {
        (
            (policy >> ABI_MAJOR_SHIFT) as u8,
            (policy >> ABI_MINOR_SHIFT) as u8,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snp_policy_bits() {
        // QEMU's and the tools' usual policy: SMT and the must-be-one bit.
        assert_eq!(policy::compose(policy::SMT, 0, 0), 0x30000);
        assert_eq!(policy::abi(policy::compose(0, 1, 55)), (1, 55));
        let all = policy::FLAGS
            .iter()
            .fold(policy::RSVD_MBO, |a, (_, b)| a | b);
        assert_eq!(all, 0x3ff_0000);
        assert_eq!(all & policy::MBZ, 0);
    }

    #[test]
    fn tcb_encoding() {
        let tcb: TcbVersion = "3:0:8:115".parse().unwrap();
        assert_eq!(tcb.to_u64(), 0x7308_0000_0000_0003);
        assert_eq!(
            TcbVersion::from_u64(tcb.to_u64(), TcbLayout::Legacy),
            Some(tcb)
        );
        assert_eq!(TcbVersion::from_u64(1 << 16, TcbLayout::Legacy), None);
        assert_eq!(tcb.to_string(), "3:0:8:115");
        assert!("3:0:8".parse::<TcbVersion>().is_err());
        assert!("1:3:0:8:115:0".parse::<TcbVersion>().is_err());
        // Turin's: FMC in byte 0, SNP in byte 3 (virtee's `to_turin_bytes`).
        let turin: TcbVersion = "1:3:0:8:115".parse().unwrap();
        assert_eq!(turin.fmc, Some(1));
        assert_eq!(turin.to_u64(), 0x7300_0000_0800_0301);
        assert_eq!(
            TcbVersion::from_u64(turin.to_u64(), TcbLayout::Fmc),
            Some(turin)
        );
        assert_eq!(TcbVersion::from_u64(1 << 48, TcbLayout::Fmc), None);
        assert_eq!(
            TcbVersion::from_u64(1 << 48, TcbLayout::Legacy).map(|t| t.snp),
            Some(1)
        );
        assert_eq!(turin.to_string(), "1:3:0:8:115");
        assert!(TcbVersion {
            fmc: Some(2),
            ..turin
        }
        .exceeds(turin));
        assert!("3:0:8:256".parse::<TcbVersion>().is_err());
        let lower = TcbVersion {
            microcode: 100,
            ..tcb
        };
        assert!(tcb.exceeds(lower) && !lower.exceeds(tcb) && !tcb.exceeds(tcb));
    }

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
