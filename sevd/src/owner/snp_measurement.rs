//! The SNP launch digest (snp.md §5.1; SEV-SNP ABI §8.17): 48 bytes, zero at first, extended
//! for each 4 KiB page of each launch update with SHA-384 of the page's PAGE_INFO. The
//! firmware keeps it in the guest context and reports it as MEASUREMENT; a guest owner
//! recomputes it from the same pages in the same order.

use sha2::{Digest, Sha384};
use uapi::snp::{PageInfo, PageType, DIGEST_LEN, VMSA_TSC_FIELDS};

use super::ovmf::{Ovmf, SectionKind};
use super::vmsa::{Init, Vmm, Vmsa};

/// 4 KiB: the unit of a launch update.
pub const PAGE: usize = 4096;

/// Why a launch update cannot be measured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnpMeasureError {
    /// Contents of a measured page must be whole pages.
    #[error("{len} bytes at {gpa:#x} are not whole 4 KiB pages")]
    NotPages {
        /// Start.
        gpa: u64,
        /// Length.
        len: usize,
    },
    /// Pages start on 4 KiB boundaries.
    #[error("guest address {0:#x} is not 4 KiB aligned")]
    Unaligned(u64),
    /// The firmware image cannot be launched as asked.
    #[error("{0}")]
    Image(String),
}

/// A launch digest being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchDigest([u8; DIGEST_LEN]);

impl Default for LaunchDigest {
    /// The digest of an empty launch: 48 zero bytes.
    fn default() -> Self {
        LaunchDigest([0; DIGEST_LEN])
    }
}

impl LaunchDigest {
    /// The digest of an empty launch: 48 zero bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// A digest reached earlier (sev-snp-measure's `--snp-ovmf-hash`).
    pub fn from_bytes(ld: [u8; DIGEST_LEN]) -> Self {
        LaunchDigest(ld)
    }

    /// The digest so far.
    pub fn bytes(&self) -> [u8; DIGEST_LEN] {
        self.0
    }

    /// PAGE_INFO's CONTENTS for a page of type `ty`: SHA-384 of the page for the measured
    /// types (a VMSA with its TSC fields zeroed first, as the firmware hashes it), zero for
    /// the others.
    pub fn page_contents(ty: PageType, page: &[u8]) -> [u8; DIGEST_LEN] {
        match ty {
            PageType::Vmsa => {
                let mut vmsa = [0u8; PAGE];
                vmsa.copy_from_slice(page);
                vmsa[VMSA_TSC_FIELDS].fill(0);
                Sha384::digest(vmsa).into()
            }
            PageType::Normal => Sha384::digest(page).into(),
            _ => [0u8; DIGEST_LEN],
        }
    }

    /// Extends the digest with one page of type `ty` at `gpa` whose CONTENTS field is
    /// `contents` ([`LaunchDigest::page_contents`]).
    pub fn extend_contents(&mut self, ty: PageType, gpa: u64, contents: [u8; DIGEST_LEN]) {
        let info = PageInfo {
            digest_cur: self.0,
            contents,
            page_type: ty,
            imi_page: false,
            vmpl_perms: [0; 3],
            gpa,
        };
        self.0 = Sha384::digest(info.encode()).into();
    }

    /// Extends the digest with one page of type `ty` at `gpa`. `page` is its contents for
    /// the measured types (NORMAL, VMSA) and ignored for the others.
    fn extend_page(&mut self, ty: PageType, gpa: u64, page: &[u8]) {
        self.extend_contents(ty, gpa, Self::page_contents(ty, page));
    }

    /// One launch update of `len` bytes at `gpa`: each 4 KiB page in ascending order, its
    /// contents taken from `data` for the measured types (`data` may be empty for the
    /// others).
    pub fn update(
        &mut self,
        ty: PageType,
        gpa: u64,
        len: usize,
        data: &[u8],
    ) -> Result<(), SnpMeasureError> {
        if gpa % PAGE as u64 != 0 {
            return Err(SnpMeasureError::Unaligned(gpa));
        }
        if len % PAGE != 0 || (ty.is_measured() && data.len() != len) {
            return Err(SnpMeasureError::NotPages { gpa, len });
        }
        for i in 0..len / PAGE {
            let page = if ty.is_measured() {
                &data[i * PAGE..(i + 1) * PAGE]
            } else {
                &[]
            };
            self.extend_page(ty, gpa + (i * PAGE) as u64, page);
        }
        Ok(())
    }

    /// One VMSA page, at the GPA KVM gives every save area.
    pub fn update_vmsa(&mut self, vmsa: &[u8; PAGE]) {
        self.extend_page(PageType::Vmsa, uapi::snp::VMSA_GPA, vmsa);
    }
}

/// An SNP launch of an OVMF guest as QEMU (or EC2's or GCE's VMM) makes it, the sequence
/// sev-snp-measure reproduces (snp.md §5.2): the image's pages, then its SEV metadata
/// sections in table order, then one save area per vCPU.
#[derive(Debug, Clone)]
pub struct OvmfLaunch<'a> {
    /// The firmware image, mapped to end at 4 GiB.
    pub image: &'a [u8],
    /// Its parsed footer table and metadata.
    pub ovmf: &'a Ovmf,
    /// The kernel hashes table (`tables::kernel_hashes`), for a measured direct boot.
    pub kernel_hashes: Option<&'a [u8]>,
    /// Whose reset state the save areas hold, and the VMM's own page sequence.
    pub vmm: Vmm,
    /// vCPUs.
    pub vcpus: u32,
    /// CPUID 1 EAX (QEMU's RDX at reset).
    pub signature: u32,
    /// SEV_FEATURES of the save areas (sev-snp-measure's `--guest-features`; 0x1 is SNP
    /// active alone).
    pub guest_features: u64,
}

/// One step of a launch: a launch update, or a vCPU's save area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchStep {
    /// SNP_LAUNCH_UPDATE of `len` bytes at `gpa` as pages of type `ty`.
    Update {
        /// The pages' type.
        ty: PageType,
        /// First guest address.
        gpa: u64,
        /// Bytes (whole pages).
        len: usize,
        /// What the pages hold before the update.
        data: StepData,
    },
    /// A vCPU's save area, measured at the VMSA GPA.
    Vmsa {
        /// vCPU index.
        cpu: u32,
        /// The save area.
        page: Box<[u8; PAGE]>,
    },
}

/// What a launch update's pages hold before the update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepData {
    /// The firmware image itself (`OvmfLaunch::image`).
    Image,
    /// This page (the kernel hashes page).
    Page(Box<[u8; PAGE]>),
    /// Nothing that is measured: ZERO, SECRETS, CPUID and UNMEASURED pages.
    Unmeasured,
}

impl OvmfLaunch<'_> {
    /// The launch digest this launch ends with.
    pub fn digest(&self) -> Result<LaunchDigest, SnpMeasureError> {
        let mut ld = LaunchDigest::new();
        for step in self.steps()? {
            match step {
                LaunchStep::Update { ty, gpa, len, data } => {
                    let bytes: &[u8] = match &data {
                        StepData::Image => self.image,
                        StepData::Page(p) => &p[..],
                        StepData::Unmeasured => &[],
                    };
                    ld.update(ty, gpa, len, bytes)?
                }
                LaunchStep::Vmsa { page, .. } => ld.update_vmsa(&page),
            }
        }
        Ok(ld)
    }

    /// Where the image goes: its last byte just below 4 GiB.
    pub fn image_gpa(&self) -> Result<u64, SnpMeasureError> {
        let len = self.image.len();
        if len % PAGE != 0 {
            return Err(SnpMeasureError::NotPages { gpa: 0, len });
        }
        (1u64 << 32).checked_sub(len as u64).ok_or_else(|| {
            SnpMeasureError::Image(format!("a {len}-byte image does not fit below 4 GiB"))
        })
    }

    /// The launch, step by step, in the order the VMM issues it.
    pub fn steps(&self) -> Result<Vec<LaunchStep>, SnpMeasureError> {
        let bad = |why: String| SnpMeasureError::Image(why);
        let update = |ty, gpa, len, data| LaunchStep::Update { ty, gpa, len, data };
        let mut steps = vec![update(
            PageType::Normal,
            self.image_gpa()?,
            self.image.len(),
            StepData::Image,
        )];
        let sections = self.ovmf.sev_metadata();
        if sections.is_empty() {
            return Err(bad(
                "the OVMF image has no SEV metadata; it cannot start an SNP guest".into(),
            ));
        }
        for s in sections {
            let (gpa, size) = (s.gpa as u64, s.size as usize);
            let none = StepData::Unmeasured;
            steps.push(match s.kind {
                SectionKind::SecMem if self.vmm == Vmm::Gce => {
                    update(PageType::Unmeasured, gpa, size, none)
                }
                SectionKind::SecMem | SectionKind::SvsmCaa => {
                    update(PageType::Zero, gpa, size, none)
                }
                SectionKind::Secrets => update(PageType::Secrets, gpa, PAGE, none),
                // EC2's VMM adds the CPUID pages after the whole table.
                SectionKind::Cpuid if self.vmm == Vmm::Ec2 => continue,
                SectionKind::Cpuid => update(PageType::Cpuid, gpa, PAGE, none),
                SectionKind::KernelHashes => match self.kernel_hashes {
                    Some(table) => {
                        let page = Box::new(self.hashes_page(table, size)?);
                        update(PageType::Normal, gpa, PAGE, StepData::Page(page))
                    }
                    None => update(PageType::Zero, gpa, size, none),
                },
            });
        }
        if self.vmm == Vmm::Ec2 {
            for s in sections.iter().filter(|s| s.kind == SectionKind::Cpuid) {
                steps.push(update(
                    PageType::Cpuid,
                    s.gpa as u64,
                    PAGE,
                    StepData::Unmeasured,
                ));
            }
        }
        if self.kernel_hashes.is_some()
            && !sections.iter().any(|s| s.kind == SectionKind::KernelHashes)
        {
            return Err(bad(
                "a kernel is given, but the OVMF metadata has no SNP_KERNEL_HASHES section".into(),
            ));
        }
        let reset = self.ovmf.sev_es_reset_eip();
        if self.vcpus > 1 && reset.is_none() {
            return Err(bad(
                "the OVMF image has no SEV-ES reset block for the APs".into()
            ));
        }
        for cpu in 0..self.vcpus {
            let mut vmsa = Vmsa::reset(self.vmm, Init::Init2, cpu as u64, reset, self.signature);
            vmsa.sev_features = self.guest_features;
            steps.push(LaunchStep::Vmsa {
                cpu,
                page: Box::new(vmsa.encode()),
            });
        }
        Ok(steps)
    }

    /// The kernel hashes page: 4 KiB of zeros with the table where OVMF's footer says,
    /// within the page.
    fn hashes_page(&self, table: &[u8], size: usize) -> Result<[u8; PAGE], SnpMeasureError> {
        let bad = |why: &str| SnpMeasureError::Image(why.to_string());
        if size != PAGE {
            return Err(bad("the SNP_KERNEL_HASHES section is not one page"));
        }
        let (at, _) = self
            .ovmf
            .hashes_table_area()
            .ok_or_else(|| bad("the OVMF image has no hashes table entry"))?;
        let off = at as usize & (PAGE - 1);
        let mut page = [0u8; PAGE];
        page.get_mut(off..off + table.len())
            .ok_or_else(|| bad("the kernel hashes table does not fit its page"))?
            .copy_from_slice(table);
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from snp.md §5.1 (computed with sev-snp-measure's gctx.py).
    const NORMAL_ZERO_PAGE_AT_0: &str = "9d13634b6014bb21cf059b2dc694e7bff01a8a7137041100cd2b695f3d10fb687267b97808b27f8f471d943bc6f53a20";
    const ZERO_PAGE_AT_8M: &str = "4472405c6dbc65e5629805f2be1b3df74eb119841eff12466c24f43e67083c23df5e645b2742b6d9aa0f943e095cebaa";

    #[test]
    fn one_page_of_each_kind_matches_the_reference() {
        let mut ld = LaunchDigest::new();
        ld.update(PageType::Normal, 0, PAGE, &[0; PAGE]).unwrap();
        assert_eq!(hex::encode(ld.bytes()), NORMAL_ZERO_PAGE_AT_0);
        let mut ld = LaunchDigest::new();
        ld.update(PageType::Zero, 0x80_0000, PAGE, &[]).unwrap();
        assert_eq!(hex::encode(ld.bytes()), ZERO_PAGE_AT_8M);
    }

    #[test]
    fn updates_are_whole_aligned_pages() {
        let mut ld = LaunchDigest::new();
        assert_eq!(
            ld.update(PageType::Normal, 0x800, PAGE, &[0; PAGE]),
            Err(SnpMeasureError::Unaligned(0x800))
        );
        assert!(ld.update(PageType::Normal, 0, PAGE, &[0; 100]).is_err());
        assert!(ld.update(PageType::Zero, 0, 100, &[]).is_err());
        assert_eq!(ld, LaunchDigest::new(), "a refused update changes nothing");
    }

    #[test]
    fn vmsa_tsc_fields_do_not_count() {
        let (mut a, mut b) = (LaunchDigest::new(), LaunchDigest::new());
        let mut page = [7u8; PAGE];
        a.update_vmsa(&page);
        page[0x2f0..0x300].fill(0x55);
        b.update_vmsa(&page);
        assert_eq!(a, b);
    }

    /// QEMU's SNP save area of the BSP (snp.md §5.2): segments, control registers, RDX the
    /// CPU signature, SEV_FEATURES, XCR0, MXCSR and the x87 control word.
    fn qemu_bsp_vmsa(signature: u64, sev_features: u64) -> [u8; PAGE] {
        let mut p = [0u8; PAGE];
        let seg = |p: &mut [u8; PAGE], off: usize, sel: u16, attr: u16, base: u64| {
            p[off..off + 2].copy_from_slice(&sel.to_le_bytes());
            p[off + 2..off + 4].copy_from_slice(&attr.to_le_bytes());
            p[off + 4..off + 8].copy_from_slice(&0xffffu32.to_le_bytes());
            p[off + 8..off + 16].copy_from_slice(&base.to_le_bytes());
        };
        seg(&mut p, 0x00, 0, 0x93, 0); // ES
        seg(&mut p, 0x10, 0xf000, 0x9b, 0xffff_0000); // CS
        for off in [0x20, 0x30, 0x40, 0x50] {
            seg(&mut p, off, 0, 0x93, 0); // SS, DS, FS, GS
        }
        seg(&mut p, 0x60, 0, 0, 0); // GDTR
        seg(&mut p, 0x70, 0, 0x82, 0); // LDTR
        seg(&mut p, 0x80, 0, 0, 0); // IDTR
        seg(&mut p, 0x90, 0, 0x8b, 0); // TR
        let q = |p: &mut [u8; PAGE], off: usize, v: u64| {
            p[off..off + 8].copy_from_slice(&v.to_le_bytes())
        };
        q(&mut p, 0xd0, 0x1000); // EFER
        q(&mut p, 0x148, 0x40); // CR4
        q(&mut p, 0x158, 0x10); // CR0
        q(&mut p, 0x160, 0x400); // DR7
        q(&mut p, 0x168, 0xffff_0ff0); // DR6
        q(&mut p, 0x170, 0x2); // RFLAGS
        q(&mut p, 0x178, 0xfff0); // RIP
        q(&mut p, 0x268, 0x0007_0406_0007_0406); // G_PAT
        q(&mut p, 0x310, signature); // RDX
        q(&mut p, 0x3b0, sev_features);
        q(&mut p, 0x3e8, 0x1); // XCR0
        p[0x408..0x40c].copy_from_slice(&0x1f80u32.to_le_bytes()); // MXCSR
        p[0x410..0x412].copy_from_slice(&0x037fu16.to_le_bytes()); // FCW
        p
    }

    /// virtee's published vector (snp.md §5.2): `ovmf_AmdSev_suffix.bin`, one EPYC-v4 vCPU,
    /// guest features 0x1, no kernel. The image's SEV metadata, in table order: SEC_MEM
    /// 0x800000+0x9000 and 0x80A000+0x3000, SECRETS 0x80D000, CPUID 0x80E000, SVSM_CAA
    /// 0x80F000, KERNEL_HASHES 0x810000 (zero pages without a kernel), SEC_MEM 0x811000+0xF000.
    #[test]
    fn the_published_ovmf_vector() {
        let ovmf = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/ovmf_AmdSev_suffix.bin"
        ))
        .unwrap();
        let mut ld = LaunchDigest::new();
        let gpa = (1u64 << 32) - ovmf.len() as u64;
        ld.update(PageType::Normal, gpa, ovmf.len(), &ovmf).unwrap();
        for (ty, gpa, len) in [
            (PageType::Zero, 0x80_0000, 0x9000),
            (PageType::Zero, 0x80_a000, 0x3000),
            (PageType::Secrets, 0x80_d000, 0x1000),
            (PageType::Cpuid, 0x80_e000, 0x1000),
            (PageType::Zero, 0x80_f000, 0x1000),
            (PageType::Zero, 0x81_0000, 0x1000),
            (PageType::Zero, 0x81_1000, 0xf000),
        ] {
            ld.update(ty, gpa, len, &[]).unwrap();
        }
        // EPYC-v4: family 23, model 1, stepping 2.
        ld.update_vmsa(&qemu_bsp_vmsa(0x80_0f12, 0x1));
        assert_eq!(hex::encode(ld.bytes()), PUBLISHED);
        // The same through the sequence a launch of the image makes.
        let launch = OvmfLaunch {
            image: &ovmf,
            ovmf: &Ovmf::parse(&ovmf).unwrap(),
            kernel_hashes: None,
            vmm: Vmm::Qemu,
            vcpus: 1,
            signature: 0x80_0f12,
            guest_features: 0x1,
        };
        assert_eq!(hex::encode(launch.digest().unwrap().bytes()), PUBLISHED);
    }

    const PUBLISHED: &str = "19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d";
}
