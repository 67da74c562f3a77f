//! SEV-ES initial save areas (VMSAs) as QEMU and KVM set up a vCPU at reset, laid out as
//! the VMCB save area of AMD's APM vol. 2, table B-4. The values are the architectural
//! reset state (APM vol. 2 §14.1.3), what KVM adds (EFER.SVME, CR4.MCE, the PAT) and
//! QEMU's segment attributes; an AP starts at OVMF's SEV-ES reset vector.

use serde::Serialize;

/// Size of a VMSA page.
pub const VMSA_LEN: usize = 4096;

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

impl Vmsa {
    /// vCPU `cpu` of a QEMU/KVM guest at reset. An AP (cpu > 0) starts at `ap_reset_eip`
    /// (OVMF's SEV-ES reset block) when given. `signature` is CPUID 1 EAX.
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
        page
    }

    /// Reads the fields back from a page; other non-zero bytes are reported by offset.
    pub fn decode(page: &[u8]) -> Option<(Vmsa, Vec<usize>)> {
        if page.len() != VMSA_LEN {
            return None;
        }
        let seg = |i: usize| {
            let o = i * 16;
            Segment {
                selector: u16::from_le_bytes([page[o], page[o + 1]]),
                attrib: u16::from_le_bytes([page[o + 2], page[o + 3]]),
                limit: u32::from_le_bytes(page[o + 4..o + 8].try_into().unwrap_or_default()),
                base: u64::from_le_bytes(page[o + 8..o + 16].try_into().unwrap_or_default()),
            }
        };
        let q = |off: usize| u64::from_le_bytes(page[off..off + 8].try_into().unwrap_or_default());
        let v = Vmsa {
            es: seg(0),
            cs: seg(1),
            ss: seg(2),
            ds: seg(3),
            fs: seg(4),
            gs: seg(5),
            gdtr: seg(6),
            ldtr: seg(7),
            idtr: seg(8),
            tr: seg(9),
            efer: q(0xd0),
            cr4: q(0x148),
            cr0: q(0x158),
            dr7: q(0x160),
            dr6: q(0x168),
            rflags: q(0x170),
            rip: q(0x178),
            g_pat: q(0x268),
            rdx: q(0x310),
            xcr0: q(0x3e8),
        };
        let known = v.encode();
        let other = (0..VMSA_LEN).filter(|&i| page[i] != known[i]).collect();
        Some((v, other))
    }
}
