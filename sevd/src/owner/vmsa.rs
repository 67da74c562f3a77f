//! SEV-ES initial save areas (VMSAs) as a VMM and KVM set up a vCPU at reset, laid out as
//! the VMCB save area of AMD's APM vol. 2, table B-4. The values are the architectural
//! reset state (APM vol. 2 §14.1.3), what KVM adds (EFER.SVME, CR4.MCE, the PAT) and the
//! VMM's own (segment attributes, RDX, FPU state); an AP starts at OVMF's SEV-ES reset
//! vector. Two worlds measure them: KVM's legacy init (no FPU state, SEV_FEATURES 0, what
//! virtee sevctl 0.6.2 and libvirt's validator build) and KVM_SEV_INIT2 (the vCPU's FPU state
//! synced in, what QEMU 9.1+ on Linux 6.10+ runs and sev-snp-measure computes).

use serde::Serialize;

/// Size of a VMSA page.
pub const VMSA_LEN: usize = 4096;

/// The VMMs whose reset state is known (sev-snp-measure's `--vmm-type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vmm {
    /// QEMU.
    #[default]
    Qemu,
    /// Amazon EC2's VMM.
    Ec2,
    /// Google Compute Engine's VMM.
    Gce,
}

/// How the VM was initialised, which decides what KVM puts in the save area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// KVM_SEV_INIT / KVM_SEV_ES_INIT on the default VM type.
    Legacy,
    /// KVM_SEV_INIT2 on an SEV VM type: the vCPU's FPU state is synced in.
    Init2,
}

/// The CPU models sev-snp-measure knows (its `vcpu_types.py`): QEMU's `-cpu` names with
/// their family, model and stepping, for CPUID 1 EAX in RDX.
pub const CPU_MODELS: &[(&str, (u32, u32, u32))] = &[
    ("EPYC", (23, 1, 2)),
    ("EPYC-v1", (23, 1, 2)),
    ("EPYC-v2", (23, 1, 2)),
    ("EPYC-IBPB", (23, 1, 2)),
    ("EPYC-v3", (23, 1, 2)),
    ("EPYC-v4", (23, 1, 2)),
    ("EPYC-Rome", (23, 49, 0)),
    ("EPYC-Rome-v1", (23, 49, 0)),
    ("EPYC-Rome-v2", (23, 49, 0)),
    ("EPYC-Rome-v3", (23, 49, 0)),
    ("EPYC-Milan", (25, 1, 1)),
    ("EPYC-Milan-v1", (25, 1, 1)),
    ("EPYC-Milan-v2", (25, 1, 1)),
    ("EPYC-Genoa", (25, 17, 0)),
    ("EPYC-Genoa-v1", (25, 17, 0)),
    ("EPYC-Turin", (26, 0, 0)),
];

/// CPUID 1 EAX of a CPU model in [`CPU_MODELS`] (names compared without case).
pub fn cpu_model_signature(name: &str) -> Option<u32> {
    CPU_MODELS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, (f, m, s))| Vmsa::signature(*f, *m, *s))
}

/// One segment register: selector, attributes, limit, base (16 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Attributes.
    pub attrib: u16,
    /// Limit.
    pub limit: u32,
    /// Base.
    pub base: u64,
}

/// The fields of the save area that a reset state sets; everything else is zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Vmsa {
    /// ES, CS, SS, DS, FS, GS, GDTR, LDTR, IDTR, TR, at 0x00..0xa0.
    pub es: Segment,
    /// Code segment.
    pub cs: Segment,
    /// Stack segment.
    pub ss: Segment,
    /// Data segment.
    pub ds: Segment,
    /// FS.
    pub fs: Segment,
    /// GS.
    pub gs: Segment,
    /// GDTR.
    pub gdtr: Segment,
    /// LDTR.
    pub ldtr: Segment,
    /// IDTR.
    pub idtr: Segment,
    /// TR.
    pub tr: Segment,
    /// EFER (0xd0).
    pub efer: u64,
    /// CR4 (0x148).
    pub cr4: u64,
    /// CR0 (0x158).
    pub cr0: u64,
    /// DR7 (0x160).
    pub dr7: u64,
    /// DR6 (0x168).
    pub dr6: u64,
    /// RFLAGS (0x170).
    pub rflags: u64,
    /// RIP (0x178).
    pub rip: u64,
    /// G_PAT (0x268).
    pub g_pat: u64,
    /// RDX (0x310): the CPU signature at reset.
    pub rdx: u64,
    /// XCR0 (0x3e8).
    pub xcr0: u64,
    /// SEV_FEATURES (0x3b0).
    pub sev_features: u64,
    /// MXCSR (0x408).
    pub mxcsr: u32,
    /// x87 control word (0x410).
    pub x87_fcw: u16,
}

const SEGMENTS: usize = 10;
const OFF: [(&str, usize); 10] = [
    ("efer", 0xd0),
    ("cr4", 0x148),
    ("cr0", 0x158),
    ("dr7", 0x160),
    ("dr6", 0x168),
    ("rflags", 0x170),
    ("rip", 0x178),
    ("g_pat", 0x268),
    ("rdx", 0x310),
    ("xcr0", 0x3e8),
];

/// QEMU's data-segment attributes (present, S, writable, accessed).
const ATTR_DATA: u16 = 0x93;
/// QEMU's code-segment attributes (present, S, code, readable, accessed).
const ATTR_CODE: u16 = 0x9b;

/// The BSP's reset vector, and an AP's when the firmware gives none.
const RESET_EIP: u32 = 0xffff_fff0;

impl Vmsa {
    /// vCPU `cpu` of a guest of `vmm` at reset, as KVM measures it after `init`. An AP
    /// (cpu > 0) starts at `ap_reset_eip` (OVMF's SEV-ES reset block) when given.
    /// `signature` is CPUID 1 EAX; EC2 and GCE put 0x600 in RDX whatever the CPU.
    pub fn reset(
        vmm: Vmm,
        init: Init,
        cpu: u64,
        ap_reset_eip: Option<u32>,
        signature: u32,
    ) -> Vmsa {
        let mut v = Vmsa::qemu(cpu, ap_reset_eip, signature);
        let eip = ((v.cs.base as u32) & 0xffff_0000) | (v.rip as u32 & 0xffff);
        let (mxcsr, fcw) = match vmm {
            Vmm::Qemu => (0x1f80, 0x037f),
            Vmm::Ec2 => {
                v.cs.attrib = if eip == RESET_EIP { 0x9a } else { 0x9b };
                v.ss.attrib = 0x92;
                v.tr.attrib = 0x83;
                v.rdx = 0x600;
                (0, 0)
            }
            Vmm::Gce => {
                v.g_pat = 0x0007_0106;
                v.rdx = 0x600;
                (0, 0)
            }
        };
        if init == Init::Init2 {
            v.mxcsr = mxcsr;
            v.x87_fcw = fcw;
        }
        v
    }

    /// vCPU `cpu` of a QEMU/KVM guest at reset, as the legacy init measures it (virtee
    /// sevctl 0.6.2's `vmsa build`). An AP (cpu > 0) starts at `ap_reset_eip` (OVMF's SEV-ES
    /// reset block) when given. `signature` is CPUID 1 EAX.
    pub fn qemu(cpu: u64, ap_reset_eip: Option<u32>, signature: u32) -> Vmsa {
        let data = Segment {
            selector: 0,
            attrib: ATTR_DATA,
            limit: 0xffff,
            base: 0,
        };
        let table = Segment {
            selector: 0,
            attrib: 0,
            limit: 0xffff,
            base: 0,
        };
        let mut v = Vmsa {
            es: data,
            cs: Segment {
                selector: 0xf000,
                attrib: ATTR_CODE,
                limit: 0xffff,
                base: 0xffff_0000,
            },
            ss: data,
            ds: data,
            fs: data,
            gs: data,
            gdtr: table,
            idtr: table,
            ldtr: Segment {
                attrib: 0x82,
                ..table
            },
            tr: Segment {
                attrib: 0x8b,
                ..table
            },
            efer: 0x1000,
            cr4: 0x40,
            cr0: 0x10,
            dr7: 0x400,
            dr6: 0xffff_0ff0,
            rflags: 0x2,
            rip: 0xfff0,
            g_pat: 0x0007_0406_0007_0406,
            rdx: signature as u64,
            xcr0: 0x1,
            sev_features: 0,
            mxcsr: 0,
            x87_fcw: 0,
        };
        if let (true, Some(eip)) = (cpu > 0, ap_reset_eip) {
            v.rip = (eip & 0xffff) as u64;
            v.cs.base = (eip & 0xffff_0000) as u64;
        }
        v
    }

    /// CPUID 1 EAX for a family, model and stepping (extended family and model encoded as
    /// the CPUID instruction reports them).
    pub fn signature(family: u32, model: u32, stepping: u32) -> u32 {
        let (family, model, stepping) = (family & 0xfff, model & 0xff, stepping & 0xf);
        let mut sig = stepping;
        sig |= if family > 0xf {
            0xf00 | ((family - 0xf) << 20)
        } else {
            family << 8
        };
        sig | ((model & 0xf) << 4) | ((model >> 4) << 16)
    }

    fn segments(&self) -> [Segment; SEGMENTS] {
        [
            self.es, self.cs, self.ss, self.ds, self.fs, self.gs, self.gdtr, self.ldtr, self.idtr,
            self.tr,
        ]
    }

    fn scalars(&self) -> [u64; 10] {
        [
            self.efer,
            self.cr4,
            self.cr0,
            self.dr7,
            self.dr6,
            self.rflags,
            self.rip,
            self.g_pat,
            self.rdx,
            self.xcr0,
        ]
    }

    /// The 4096-byte page.
    pub fn encode(&self) -> [u8; VMSA_LEN] {
        let mut page = [0u8; VMSA_LEN];
        for (i, s) in self.segments().iter().enumerate() {
            let o = i * 16;
            page[o..o + 2].copy_from_slice(&s.selector.to_le_bytes());
            page[o + 2..o + 4].copy_from_slice(&s.attrib.to_le_bytes());
            page[o + 4..o + 8].copy_from_slice(&s.limit.to_le_bytes());
            page[o + 8..o + 16].copy_from_slice(&s.base.to_le_bytes());
        }
        for ((_, off), v) in OFF.iter().zip(self.scalars()) {
            page[*off..off + 8].copy_from_slice(&v.to_le_bytes());
        }
        page[0x3b0..0x3b8].copy_from_slice(&self.sev_features.to_le_bytes());
        page[0x408..0x40c].copy_from_slice(&self.mxcsr.to_le_bytes());
        page[0x410..0x412].copy_from_slice(&self.x87_fcw.to_le_bytes());
        page
    }
}
