//! The emulated part: which EPYC the software firmware is, and what a program on its host
//! sees of it through CPUID, the MSRs and `kvm_amd`'s parameters. Everything that names the
//! part (CPUID, the MSRs, the reports' CPUID fields, the VCEK's product name) reads it here.

use serde::{Deserialize, Serialize};
use uapi::snp::{TcbLayout, TcbVersion};

use crate::firmware::FirmwareConfig;

/// An EPYC generation with SEV-SNP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    /// Third generation (Zen 3), family 19h model 01h.
    Milan,
    /// Fourth generation (Zen 4), family 19h model 11h.
    Genoa,
    /// Fifth generation (Zen 5), family 1Ah model 02h: its TCB has an FMC.
    Turin,
}

impl Product {
    /// The part a platform is unless told otherwise.
    pub const DEFAULT: Product = Product::Milan;

    /// Every product, in the order of their codes in the chip file.
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    /// AMD's name of the generation, as its certificates and key server URLs carry it
    /// (`ARK-Milan`, `/vcek/v1/Milan/`).
    pub const fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// The product named `name` (AMD's spelling).
    pub fn from_name(name: &str) -> Option<Product> {
        Product::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Its code in the chip file.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The product of a chip file's code.
    pub fn from_code(code: u8) -> Option<Product> {
        Product::ALL.get(usize::from(code)).copied()
    }

    /// The VCEK's productName: the generation and stepping; Turin's VCEKs name no
    /// stepping (AMD's, in virtee/sev's `tests/certs_data/vcek_turin.der`).
    pub const fn stepping_name(self) -> &'static str {
        match self {
            Product::Milan => "Milan-B0",
            Product::Genoa => "Genoa-B1",
            Product::Turin => "Turin",
        }
    }

    /// CPUID Fn0000_0001_EAX (and Fn8000_0001_EAX), stepping 1: family 19h model 01h
    /// (Milan) or 11h (Genoa), family 1Ah model 02h (Turin), the exact models every
    /// report verifier maps to the product (reference/snp.md §6).
    pub const fn signature(self) -> u32 {
        match self {
            Product::Milan => 0x00a0_0f11,
            Product::Genoa => 0x00a1_0f11,
            Product::Turin => 0x00b0_0f21,
        }
    }

    /// The product of a CPUID Fn0000_0001_EAX, by the model ranges virtee's `sev` crate
    /// and snpguest use (snp.md §6): family 19h models 00h-0Fh Milan, 10h-1Fh and
    /// A0h-AFh Genoa; family 1Ah models 00h-11h Turin.
    pub fn from_signature(eax: u32) -> Option<Product> {
        let [family, model, _] = fms(eax);
        Product::from_family_model(family.into(), model.into())
    }

    /// Its family, model and stepping, as reports (CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP)
    /// and /proc/cpuinfo show them.
    pub const fn fms(self) -> [u8; 3] {
        fms(self.signature())
    }

    /// The product a report of version 3 or later names in CPUID_FAM_ID and CPUID_MOD_ID.
    pub fn of_report(report: &[u8]) -> Option<Product> {
        use uapi::snp::report::{CPUID_FAM_ID_AT, VERSION_AT};
        let version = report.get(VERSION_AT..VERSION_AT + 4)?;
        if u32::from_le_bytes(version.try_into().ok()?) < 3 {
            return None;
        }
        let fms = report.get(CPUID_FAM_ID_AT..CPUID_FAM_ID_AT + 2)?;
        Product::from_family_model(u32::from(fms[0]), u32::from(fms[1]))
    }

    /// The TCB at `at` in a report, in the layout of the product it names (Milan's for a
    /// report that names none).
    pub fn report_tcb(report: &[u8], at: usize) -> Option<TcbVersion> {
        let layout = Product::of_report(report).map_or(TcbLayout::Legacy, |p| p.tcb_layout());
        let v = report.get(at..at + 8)?;
        TcbVersion::from_u64(u64::from_le_bytes(v.try_into().ok()?), layout)
    }

    fn from_family_model(family: u32, model: u32) -> Option<Product> {
        match (family, model) {
            (0x19, 0x00..=0x0f) => Some(Product::Milan),
            (0x19, 0x10..=0x1f | 0xa0..=0xaf) => Some(Product::Genoa),
            (0x1a, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }

    /// The product of the CPU this runs on, if it is an EPYC with SNP.
    pub fn of_host() -> Option<Product> {
        #[cfg(target_arch = "x86_64")]
        {
            let vendor = core::arch::x86_64::__cpuid(0);
            if (vendor.ebx, vendor.edx, vendor.ecx) != (0x6874_7541, 0x6974_6e65, 0x444d_4163) {
                return None;
            }
            Product::from_signature(core::arch::x86_64::__cpuid(1).eax)
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    }

    /// How its TCB_VERSION is laid out.
    pub const fn tcb_layout(self) -> TcbLayout {
        match self {
            Product::Milan | Product::Genoa => TcbLayout::Legacy,
            Product::Turin => TcbLayout::Fmc,
        }
    }

    /// The TCB a new chip gets unless told otherwise: the levels of AMD's VCEKs in
    /// virtee/sev's `tests/certs_data` (Milan boot loader 3, TEE 0, SNP 8, microcode 115;
    /// Turin all 0 but microcode 9). Genoa takes Milan's.
    pub const fn default_tcb(self) -> TcbVersion {
        match self {
            Product::Milan | Product::Genoa => TcbVersion {
                fmc: None,
                bootloader: 3,
                tee: 0,
                snp: 8,
                microcode: 115,
            },
            Product::Turin => TcbVersion {
                fmc: Some(0),
                bootloader: 0,
                tee: 0,
                snp: 0,
                microcode: 9,
            },
        }
    }

    /// `tcb`, if this product can have it: an FMC level exactly where the part has an
    /// FMC.
    pub fn check_tcb(self, tcb: TcbVersion) -> Result<TcbVersion, String> {
        match (self.tcb_layout(), tcb.fmc) {
            (TcbLayout::Fmc, None) => Err(format!(
                "a {}'s TCB has an FMC level: FMC:BOOTLOADER:TEE:SNP:MICROCODE, not {tcb}",
                self.name()
            )),
            (TcbLayout::Legacy, Some(_)) => Err(format!(
                "a {} has no FMC: its TCB is BOOTLOADER:TEE:SNP:MICROCODE, not {tcb}",
                self.name()
            )),
            _ => Ok(tcb),
        }
    }

    /// The TCB of a u64 this product's firmware reports or is given.
    pub fn tcb(self, v: u64) -> Option<TcbVersion> {
        TcbVersion::from_u64(v, self.tcb_layout())
    }

    /// How many bytes of its 64-byte CHIP_ID identify it: Turin uses only the first 8
    /// and leaves the rest zero (snp.md §6; the key server's URL and the VCEK's hwID
    /// carry those 8).
    pub const fn chip_id_len(self) -> usize {
        match self {
            Product::Milan | Product::Genoa => 64,
            Product::Turin => 8,
        }
    }

    /// The brand string of CPUID Fn8000_0002..4, as QEMU names this model.
    pub const fn brand(self) -> &'static str {
        match self {
            Product::Milan => "AMD EPYC-Milan Processor",
            Product::Genoa => "AMD EPYC-Genoa Processor",
            Product::Turin => "AMD EPYC-Turin Processor",
        }
    }

    /// The first SEV firmware that checks DRAM for aliases at SNP_INIT and reports it
    /// (ALIAS_CHECK_COMPLETE, AMD-SB-3015: Milan 1.55.22, Genoa 1.55.38). The bulletin
    /// names no Turin fix; this emulation takes every Turin firmware to check.
    pub const fn alias_check_firmware(self) -> (u8, u8, u8) {
        match self {
            Product::Milan => (1, 55, 22),
            Product::Genoa => (1, 55, 38),
            Product::Turin => (0, 0, 0),
        }
    }

    /// The microcode patch level's bits above its SPL (Milan's patches are 0x0A0011xx,
    /// Genoa's 0x0A1011xx, Turin's 0x0B0021xx).
    const fn patch_base(self) -> u32 {
        match self {
            Product::Milan => 0x0a00_1100,
            Product::Genoa => 0x0a10_1100,
            Product::Turin => 0x0b00_2100,
        }
    }
}

/// The family (base plus extended), model (extended ‖ base) and stepping of a CPUID
/// Fn0000_0001_EAX.
const fn fms(eax: u32) -> [u8; 3] {
    let family = ((eax >> 8) & 0xf) + ((eax >> 20) & 0xff);
    let model = ((eax >> 16) & 0xf) << 4 | ((eax >> 4) & 0xf);
    [family as u8, model as u8, (eax & 0xf) as u8]
}

/// MSRs (AMD64 APM vol. 2, §15.34 and §15.36; AMD's PPR for family 19h).
pub mod msr {
    /// MSR_AMD64_PATCH_LEVEL: the microcode patch level in bits 31:0.
    pub const PATCH_LEVEL: u32 = 0x0000_008b;
    /// SYSCFG.
    pub const SYSCFG: u32 = 0xc001_0010;
    /// RMP_BASE: the RMP's first byte.
    pub const RMP_BASE: u32 = 0xc001_0132;
    /// RMP_END: the RMP's last byte.
    pub const RMP_END: u32 = 0xc001_0133;

    /// SYSCFG bits: MtrrFixDramEn, MtrrTom2En, Tom2ForceMemTypeWB, FWB, as the BIOS of an
    /// EPYC host leaves them.
    pub const SYSCFG_BIOS: u64 = 1 << 18 | 1 << 20 | 1 << 21 | 1 << 22;
    /// SYSCFG.MemEncryptionModEn: SME and SEV usable.
    pub const SYSCFG_SMEE: u64 = 1 << 23;
    /// SYSCFG.SecureNestedPagingEn.
    pub const SYSCFG_SNP_EN: u64 = 1 << 24;
    /// SYSCFG.VMPLEn.
    pub const SYSCFG_VMPL_EN: u64 = 1 << 25;
}

/// CPUID Fn8000_001F EAX bits (APM vol. 3, appendix E.4.17).
pub mod sev_leaf {
    /// Secure Memory Encryption.
    pub const SME: u32 = 1 << 0;
    /// Secure Encrypted Virtualization.
    pub const SEV: u32 = 1 << 1;
    /// The page flush MSR.
    pub const PAGE_FLUSH_MSR: u32 = 1 << 2;
    /// SEV-ES.
    pub const SEV_ES: u32 = 1 << 3;
    /// SEV-SNP.
    pub const SEV_SNP: u32 = 1 << 4;
    /// VM permission levels.
    pub const VMPL: u32 = 1 << 5;
    /// The C-bit's position in a page table entry (EBX 5:0).
    pub const C_BIT: u32 = 51;
    /// How many physical address bits the C-bit costs (EBX 11:6).
    pub const PHYS_ADDR_REDUCTION: u32 = 1;
    /// VMPLs with SNP (EBX 15:12).
    pub const VMPLS: u32 = 4;
}

/// A CPUID leaf the part answers itself; `None` registers are the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidLeaf {
    /// EAX at CPUID.
    pub leaf: u32,
    /// EAX, EBX, ECX, EDX.
    pub regs: [Option<u32>; 4],
}

/// Where the emulated RMP lies in the part's physical memory: above 4 GiB, covering 1 TiB
/// (16 bytes per 4 KiB page and the 16 KiB header), as a BIOS reserves it.
const RMP_AT: u64 = 0x1_0000_0000;
const RMP_COVERS: u64 = 1 << 40;

/// The emulated part, as the firmware's configuration and its installed TCB make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The generation.
    pub product: Product,
    /// Highest ASID (CPUID Fn8000_001F ECX).
    pub max_asid: u32,
    /// First plain-SEV ASID (CPUID Fn8000_001F EDX).
    pub min_sev_asid: u32,
    /// Whether the host enabled SNP (SYSCFG.SNP_EN, an RMP).
    pub snp: bool,
    /// The installed microcode's SPL (the TCB's microcode field, the patch level's low byte).
    pub microcode: u8,
}

impl Part {
    /// The part a firmware of `config` on a chip of `product` is, with `microcode`
    /// installed.
    pub fn of(config: &FirmwareConfig, product: Product, microcode: u8) -> Part {
        Part {
            product,
            max_asid: config.max_asid,
            min_sev_asid: config.min_sev_asid,
            snp: config.snp,
            microcode,
        }
    }

    /// The leaves a program on this part's host sees differently from the host it runs on:
    /// the vendor, the signature, the brand and the memory-encryption leaf. The highest
    /// extended leaf is at least [`Part::MAX_EXTENDED`].
    pub fn cpuid(&self) -> Vec<CpuidLeaf> {
        let word = |s: &[u8], i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
        let v = b"AuthenticAMD";
        let (vb, vd, vc) = (word(v, 0), word(v, 4), word(v, 8));
        let sig = self.product.signature();
        let mut out = vec![
            CpuidLeaf {
                leaf: 0,
                regs: [None, Some(vb), Some(vc), Some(vd)],
            },
            CpuidLeaf {
                leaf: 1,
                regs: [Some(sig), None, None, None],
            },
            CpuidLeaf {
                leaf: 0x8000_0000,
                regs: [None, Some(vb), Some(vc), Some(vd)],
            },
            CpuidLeaf {
                leaf: 0x8000_0001,
                regs: [Some(sig), None, None, None],
            },
        ];
        let mut brand = [0u8; 48];
        let name = self.product.brand().as_bytes();
        brand[..name.len()].copy_from_slice(name);
        for (i, leaf) in (0x8000_0002u32..=0x8000_0004).enumerate() {
            let at = |r: usize| Some(word(&brand, 16 * i + 4 * r));
            out.push(CpuidLeaf {
                leaf,
                regs: [at(0), at(1), at(2), at(3)],
            });
        }
        use sev_leaf::*;
        let mut eax = SME | SEV | PAGE_FLUSH_MSR | SEV_ES;
        let mut ebx = C_BIT | PHYS_ADDR_REDUCTION << 6;
        if self.snp {
            eax |= SEV_SNP | VMPL;
            ebx |= VMPLS << 12;
        }
        out.push(CpuidLeaf {
            leaf: 0x8000_001f,
            regs: [
                Some(eax),
                Some(ebx),
                Some(self.max_asid),
                Some(self.min_sev_asid),
            ],
        });
        out
    }

    /// The highest extended leaf the part has.
    pub const MAX_EXTENDED: u32 = 0x8000_001f;

    /// The MSRs the host tools read (`sevctl ok`, `snphost ok`), with this part's values.
    pub fn msrs(&self) -> Vec<(u32, u64)> {
        use msr::*;
        let mut syscfg = SYSCFG_BIOS | SYSCFG_SMEE;
        let (mut base, mut end) = (0, 0);
        if self.snp {
            syscfg |= SYSCFG_SNP_EN | SYSCFG_VMPL_EN;
            base = RMP_AT;
            end = RMP_AT + 0x4000 + RMP_COVERS / 4096 * 16 - 1;
        }
        let patch = self.product.patch_base() | u32::from(self.microcode);
        vec![
            (PATCH_LEVEL, u64::from(patch)),
            (SYSCFG, syscfg),
            (RMP_BASE, base),
            (RMP_END, end),
        ]
    }

    /// `kvm_amd`'s parameters for the features the part has, as the module shows them.
    pub fn kvm_amd(&self) -> [(&'static str, bool); 3] {
        [("sev", true), ("sev_es", true), ("sev_snp", self.snp)]
    }

    /// The microcode patch level (`microcode` in /proc/cpuinfo).
    pub fn patch_level(&self) -> u32 {
        self.product.patch_base() | u32::from(self.microcode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milan(snp: bool) -> Part {
        Part {
            product: Product::Milan,
            max_asid: 509,
            min_sev_asid: 100,
            snp,
            microcode: 0xd1,
        }
    }

    fn leaf(p: &Part, l: u32) -> [Option<u32>; 4] {
        p.cpuid().into_iter().find(|c| c.leaf == l).unwrap().regs
    }

    #[test]
    fn the_sev_leaf_follows_the_configuration() {
        // A Milan with SNP: 0x8000001F as AMD's parts report it, ASIDs from the flags.
        assert_eq!(
            leaf(&milan(true), 0x8000_001f),
            [Some(0x3f), Some(0x4000 | 1 << 6 | 51), Some(509), Some(100)]
        );
        assert_eq!(leaf(&milan(false), 0x8000_001f)[0], Some(0xf));
        assert_eq!(leaf(&milan(false), 0x8000_001f)[1], Some(1 << 6 | 51));
    }

    #[test]
    fn the_vendor_signature_and_brand_are_the_products() {
        let p = milan(true);
        let [_, b, c, d] = leaf(&p, 0).map(|r| r.unwrap_or(0).to_le_bytes());
        assert_eq!([b, d, c].concat(), b"AuthenticAMD");
        assert_eq!(leaf(&p, 1)[0], Some(0x00a0_0f11));
        assert_eq!(leaf(&p, 0x8000_0001)[0], Some(0x00a0_0f11));
        let brand: Vec<u8> = (0x8000_0002..=0x8000_0004)
            .flat_map(|l| leaf(&p, l).map(|r| r.unwrap().to_le_bytes()).concat())
            .collect();
        assert!(brand.starts_with(b"AMD EPYC-Milan Processor\0"));
    }

    #[test]
    fn genoa_and_turin_are_their_models_with_their_own_names() {
        let p = Part {
            product: Product::Genoa,
            ..milan(true)
        };
        assert_eq!(leaf(&p, 1)[0], Some(0x00a1_0f11));
        assert_eq!(p.patch_level(), 0x0a10_11d1);
        let t = Part {
            product: Product::Turin,
            ..milan(true)
        };
        // /proc/cpuinfo's "cpu family 26, model 2" (go-sev-guest's exact Turin match).
        assert_eq!(leaf(&t, 1)[0], Some(0x00b0_0f21));
        assert_eq!(t.patch_level(), 0x0b00_21d1);
        // The reports' CPUID_FAM_ID, CPUID_MOD_ID and CPUID_STEP.
        assert_eq!(Product::Milan.fms(), [0x19, 0x01, 1]);
        assert_eq!(Product::Genoa.fms(), [0x19, 0x11, 1]);
        assert_eq!(Product::Turin.fms(), [0x1a, 0x02, 1]);
        for product in Product::ALL {
            assert_eq!(Product::from_signature(product.signature()), Some(product));
            assert_eq!(
                product.check_tcb(product.default_tcb()),
                Ok(product.default_tcb())
            );
            assert_eq!(Product::from_code(product.code()), Some(product));
            assert_eq!(Product::from_name(product.name()), Some(product));
        }
    }

    #[test]
    fn the_msrs_show_snp_and_the_microcode() {
        let get = |p: &Part, m: u32| p.msrs().into_iter().find(|(i, _)| *i == m).unwrap().1;
        let p = milan(true);
        assert_eq!(get(&p, msr::SYSCFG), 0x03f4_0000);
        assert_eq!(get(&milan(false), msr::SYSCFG), 0x00f4_0000);
        assert_eq!(get(&p, msr::PATCH_LEVEL), 0x0a00_11d1);
        assert!(get(&p, msr::RMP_END) > get(&p, msr::RMP_BASE));
        assert_eq!(get(&milan(false), msr::RMP_BASE), 0);
    }
}
