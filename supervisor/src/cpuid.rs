//! The CPUID a supervised program sees: the host's, with the leaves a [`CpuidTable`] names
//! replaced.

use std::collections::BTreeMap;

/// The four registers CPUID writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Regs {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// What a table puts in a leaf's registers; `None` keeps the host's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Patch {
    /// EAX.
    pub eax: Option<u32>,
    /// EBX.
    pub ebx: Option<u32>,
    /// ECX.
    pub ecx: Option<u32>,
    /// EDX.
    pub edx: Option<u32>,
}

impl Patch {
    /// All four registers.
    pub fn all(r: Regs) -> Patch {
        Patch {
            eax: Some(r.eax),
            ebx: Some(r.ebx),
            ecx: Some(r.ecx),
            edx: Some(r.edx),
        }
    }

    fn apply(&self, r: Regs) -> Regs {
        Regs {
            eax: self.eax.unwrap_or(r.eax),
            ebx: self.ebx.unwrap_or(r.ebx),
            ecx: self.ecx.unwrap_or(r.ecx),
            edx: self.edx.unwrap_or(r.edx),
        }
    }
}

/// Where the host's answers come from: the CPU itself, or a fixed table in tests.
pub trait CpuidSource {
    /// CPUID with EAX = `leaf`, ECX = `subleaf`.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> Regs;
}

/// The CPU this process runs on (the supervisor itself is never faulted).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostCpu;

impl CpuidSource for HostCpu {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> Regs {
        #[cfg(target_arch = "x86_64")]
        {
            let r = std::arch::x86_64::__cpuid_count(leaf, subleaf);
            Regs {
                eax: r.eax,
                ebx: r.ebx,
                ecx: r.ecx,
                edx: r.edx,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (leaf, subleaf);
            Regs::default()
        }
    }
}

/// The first extended leaf.
pub const EXTENDED: u32 = 0x8000_0000;

/// The leaves a program sees differently from the host.
///
/// A leaf is looked up with its sub-leaf first, then for any sub-leaf. Extended leaves above
/// the host's highest (CPUID 0x8000_0000 EAX) but within the table's are zero unless the
/// table fills them, as on a part that has them and left them empty: an Intel host answers
/// such leaves with its highest basic leaf instead, which no AMD part does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuidTable {
    leaves: BTreeMap<(u32, Option<u32>), Patch>,
    max_extended: u32,
}

impl CpuidTable {
    /// A table that changes nothing.
    pub fn new() -> CpuidTable {
        CpuidTable::default()
    }

    /// Sets `leaf` (for `subleaf`, or every sub-leaf with `None`).
    pub fn set(&mut self, leaf: u32, subleaf: Option<u32>, patch: Patch) -> &mut Self {
        self.leaves.insert((leaf, subleaf), patch);
        self
    }

    /// Raises the highest extended leaf to at least `leaf`.
    pub fn extend_to(&mut self, leaf: u32) -> &mut Self {
        self.max_extended = self.max_extended.max(leaf);
        self
    }

    /// What CPUID returns in the view, given the host's answers.
    pub fn answer(&self, host: &dyn CpuidSource, leaf: u32, subleaf: u32) -> Regs {
        // Only an extended leaf needs the host's highest (each CPUID may trap to a
        // hypervisor: microseconds).
        let beyond_host =
            leaf >= EXTENDED && leaf <= self.max_extended && leaf > host.cpuid(EXTENDED, 0).eax;
        let mut r = if beyond_host {
            Regs::default()
        } else {
            host.cpuid(leaf, subleaf)
        };
        if leaf == EXTENDED {
            r.eax = r.eax.max(self.max_extended);
        }
        let patch = self
            .leaves
            .get(&(leaf, Some(subleaf)))
            .or_else(|| self.leaves.get(&(leaf, None)));
        match patch {
            Some(p) => p.apply(r),
            None => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Intel-like host: highest extended leaf 0x8000_0008, and out-of-range leaves
    /// answered with its highest basic leaf (0x1b here), as Intel's parts do.
    struct Intel;
    impl CpuidSource for Intel {
        fn cpuid(&self, leaf: u32, subleaf: u32) -> Regs {
            match leaf {
                0 => Regs {
                    eax: 0x1b,
                    ebx: u32::from_le_bytes(*b"Genu"),
                    edx: u32::from_le_bytes(*b"ineI"),
                    ecx: u32::from_le_bytes(*b"ntel"),
                },
                EXTENDED => Regs {
                    eax: 0x8000_0008,
                    ..Regs::default()
                },
                0x8000_0001..=0x8000_0008 => Regs {
                    eax: leaf,
                    ..Regs::default()
                },
                _ => Regs {
                    eax: 0x1b00 + subleaf,
                    ebx: 1,
                    ecx: 2,
                    edx: 3,
                },
            }
        }
    }

    #[test]
    fn unpatched_leaves_are_the_hosts() {
        let t = CpuidTable::new();
        assert_eq!(t.answer(&Intel, 0, 0), Intel.cpuid(0, 0));
        assert_eq!(t.answer(&Intel, 7, 1), Intel.cpuid(7, 1));
        assert_eq!(
            t.answer(&Intel, 0x8000_001f, 0),
            Intel.cpuid(0x8000_001f, 0)
        );
    }

    #[test]
    fn a_patch_replaces_only_its_registers() {
        let mut t = CpuidTable::new();
        t.set(
            0,
            None,
            Patch {
                ebx: Some(1),
                ..Patch::default()
            },
        );
        let r = t.answer(&Intel, 0, 0);
        assert_eq!((r.eax, r.ebx, r.ecx), (0x1b, 1, Intel.cpuid(0, 0).ecx));
    }

    #[test]
    fn a_subleaf_patch_wins_over_the_any_subleaf_one() {
        let mut t = CpuidTable::new();
        t.set(7, None, Patch::all(Regs::default()));
        t.set(
            7,
            Some(1),
            Patch::all(Regs {
                eax: 9,
                ..Regs::default()
            }),
        );
        assert_eq!(t.answer(&Intel, 7, 0), Regs::default());
        assert_eq!(t.answer(&Intel, 7, 1).eax, 9);
    }

    #[test]
    fn extended_leaves_above_the_hosts_are_empty_up_to_the_tables() {
        let mut t = CpuidTable::new();
        t.extend_to(0x8000_001f).set(
            0x8000_001f,
            None,
            Patch::all(Regs {
                eax: 0x1b,
                ..Regs::default()
            }),
        );
        assert_eq!(t.answer(&Intel, EXTENDED, 0).eax, 0x8000_001f);
        assert_eq!(t.answer(&Intel, 0x8000_000a, 0), Regs::default());
        assert_eq!(t.answer(&Intel, 0x8000_001f, 0).eax, 0x1b);
        // Beyond the table's highest leaf the host answers, as it would.
        assert_eq!(
            t.answer(&Intel, 0x8000_0020, 0),
            Intel.cpuid(0x8000_0020, 0)
        );
        // The host's own extended leaves stay.
        assert_eq!(t.answer(&Intel, 0x8000_0008, 0).eax, 0x8000_0008);
    }

    #[test]
    fn a_host_with_more_extended_leaves_keeps_its_highest() {
        let t = {
            let mut t = CpuidTable::new();
            t.extend_to(0x8000_0004);
            t
        };
        assert_eq!(t.answer(&Intel, EXTENDED, 0).eax, 0x8000_0008);
    }
}
