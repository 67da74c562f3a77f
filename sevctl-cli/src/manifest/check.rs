//! The checks after parsing: each value of the document against what a launch can use,
//! every error at the value it is about.

use std::path::{Path, PathBuf};

use super::raw::*;
use super::spans::Spans;
use super::*;
use crate::vmsa::{cpu_model_signature, CPU_MODELS};

/// The checks after parsing, each error at the value it is about.
pub(super) struct Checker<'a> {
    pub(super) spans: &'a Spans,
    pub(super) base: &'a Path,
}

type Checked<T> = std::result::Result<T, ManifestError>;

impl Checker<'_> {
    fn err(&self, path: &str, message: impl Into<String>) -> ManifestError {
        ManifestError::at(self.spans.report_pos(path), path, message)
    }

    fn number(&self, path: &str, n: &Number) -> Checked<u64> {
        parse_number(n).map_err(|m| self.err(path, m))
    }

    /// A file the manifest names at `path`, relative to the manifest.
    fn file(&self, path: &str, p: &Path) -> Checked<PathBuf> {
        let full = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        };
        if full.is_file() {
            Ok(full)
        } else {
            Err(self.err(path, format!("{}: no such file", full.display())))
        }
    }

    pub(super) fn check(&self, raw: Raw) -> Checked<Manifest> {
        let g = &raw.guest;
        let memory = parse_size(&g.memory).map_err(|m| self.err("guest.memory", m))?;
        if memory < 1 << 20 || memory % 4096 != 0 {
            return Err(self.err(
                "guest.memory",
                format!("expected a multiple of 4 KiB, at least 1M, got {memory}"),
            ));
        }
        if !sevd::platform::layout::addressable(memory) {
            return Err(self.err(
                "guest.memory",
                format!(
                    "{memory} bytes do not fit a guest's {} TiB of physical addresses (RAM above 2 GiB starts at 4 GiB)",
                    sevd::platform::layout::GPA_LIMIT >> 40
                ),
            ));
        }
        let mode = g.mode;
        let vcpus = g.vcpus.unwrap_or(1);
        if vcpus == 0 || vcpus > 4096 {
            return Err(self.err("guest.vcpus", format!("expected 1 to 4096, got {vcpus}")));
        }
        let vcpu_type = g.vcpu_type.as_deref().unwrap_or("EPYC-v4");
        let cpu_signature = cpu_model_signature(vcpu_type).ok_or_else(|| {
            let names: Vec<&str> = CPU_MODELS.iter().map(|(n, _)| *n).collect();
            self.err(
                "guest.vcpuType",
                format!("expected one of {}, got {vcpu_type:?}", names.join(", ")),
            )
        })?;
        if g.legacy_vm_type.is_some() && mode == Mode::Snp {
            return Err(self.err(
                "guest.legacyVmType",
                "only for sev-es; an SNP guest exists only as a KVM_X86_SNP_VM, with KVM_SEV_INIT2",
            ));
        }
        if g.legacy_vm_type.is_some() && mode == Mode::Sev {
            return Err(self.err(
                "guest.legacyVmType",
                "only for sev-es; a plain SEV guest has no save area, so both inits measure it alike",
            ));
        }
        let policy = if mode == Mode::Snp {
            0
        } else {
            self.policy(g.policy.as_ref(), mode)?
        };
        let im = &raw.images;
        let ovmf = im
            .ovmf
            .as_ref()
            .map(|p| self.file("images.ovmf", p))
            .transpose()?;
        let kernel = match (&im.kernel, &im.initrd, &im.cmdline) {
            (None, None, None) => None,
            (Some(k), Some(i), Some(c)) => {
                if ovmf.is_none() {
                    return Err(self.err(
                        "images.kernel",
                        "measured through OVMF's hashes table, so images.ovmf is needed",
                    ));
                }
                Some((
                    self.file("images.kernel", k)?,
                    self.file("images.initrd", i)?,
                    c.clone(),
                ))
            }
            _ => {
                let given = ["kernel", "initrd", "cmdline"]
                    .into_iter()
                    .zip([
                        im.kernel.is_some(),
                        im.initrd.is_some(),
                        im.cmdline.is_some(),
                    ])
                    .find(|(_, g)| *g)
                    .map_or("kernel", |(n, _)| n);
                return Err(self.err(
                    &format!("images.{given}"),
                    "kernel, initrd and cmdline go together",
                ));
            }
        };
        let mut regions = vec![];
        for (i, r) in im.regions.iter().enumerate() {
            let at = format!("images.regions.{i}.address");
            let address = self.number(&at, &r.address)?;
            if address % 16 != 0 {
                return Err(self.err(&at, format!("{address:#x} is not 16-byte aligned")));
            }
            regions.push(Region {
                address,
                file: self.file(&format!("images.regions.{i}.file"), &r.file)?,
            });
        }
        if ovmf.is_none() && regions.is_empty() {
            return Err(self.err("images", "expected ovmf or at least one region"));
        }
        if mode == Mode::Snp && ovmf.is_none() {
            return Err(self.err(
                "images",
                "an SNP launch follows OVMF's SEV metadata, so images.ovmf is needed",
            ));
        }
        if mode == Mode::Snp && !regions.is_empty() {
            return Err(self.err(
                "images.regions",
                "raw regions are for sev and sev-es; an SNP guest's pages come from OVMF's metadata",
            ));
        }
        if mode == Mode::SevEs && ovmf.is_none() && vcpus > 1 {
            return Err(self.err(
                "guest.mode",
                "sev-es with more than one vCPU needs images.ovmf for the APs' reset vector",
            ));
        }
        let snp = if mode == Mode::Snp {
            Some(self.snp(&raw)?)
        } else {
            for (given, field) in [
                (g.host_data.is_some(), "guest.hostData"),
                (g.guest_features.is_some(), "guest.guestFeatures"),
                (
                    raw.owner.as_ref().is_some_and(|o| o.id_block.is_some()),
                    "owner.idBlock",
                ),
                (
                    raw.owner.as_ref().is_some_and(|o| o.ark.is_some()),
                    "owner.ark",
                ),
            ] {
                if given {
                    return Err(self.err(field, "only for mode snp"));
                }
            }
            None
        };
        let expected_digest = match raw.measurement.as_deref() {
            _ if mode == Mode::Snp => None,
            None | Some("auto") => None,
            Some(hex_digest) => {
                let d = hex::decode(hex_digest.trim())
                    .ok()
                    .and_then(|v| <[u8; 32]>::try_from(v).ok());
                Some(d.ok_or_else(|| {
                    self.err(
                        "measurement",
                        format!("expected auto or 64 hex digits (the launch digest), got {hex_digest:?}"),
                    )
                })?)
            }
        };
        let (secrets, placement) = self.secrets(raw.secrets.as_ref(), ovmf.is_some())?;
        let (mut session, mut ca) = (None, None);
        if let Some(o) = &raw.owner {
            if let Some(sf) = &o.session {
                session = Some(SessionFiles {
                    godh: self.file("owner.session.godh", &sf.godh)?,
                    session: self.file("owner.session.session", &sf.session)?,
                    tek: self.file("owner.session.tek", &sf.tek)?,
                    tik: self.file("owner.session.tik", &sf.tik)?,
                });
            }
            ca =
                o.ca.as_ref()
                    .map(|p| self.file("owner.ca", p))
                    .transpose()?;
        }
        Ok(Manifest {
            snp,
            kvm: raw.platform.unwrap_or_default() == PlatformKind::Kvm,
            session,
            ca,
            name: raw.name.unwrap_or_else(|| "guest".into()),
            memory,
            vcpus,
            mode,
            cpu_signature,
            vmm: g.vmm.unwrap_or_default(),
            legacy_vm_type: g.legacy_vm_type.unwrap_or(false),
            policy,
            ovmf,
            kernel,
            regions,
            expected_digest,
            secrets,
            placement,
        })
    }

    /// The policy: raw, or named flags with a minimum API; SEV-ES adds the ES bit.
    fn policy(&self, p: Option<&RawPolicy>, mode: Mode) -> Checked<u32> {
        let mut policy = 0u32;
        if let Some(p) = p {
            if let Some(raw_policy) = &p.raw {
                if !p.flags.is_empty() || p.api_major.is_some() || p.api_minor.is_some() {
                    return Err(self.err(
                        "guest.policy.raw",
                        "give either raw or flags/apiMajor/apiMinor, not both",
                    ));
                }
                let v = self.number("guest.policy.raw", raw_policy)?;
                policy = u32::try_from(v).map_err(|_| {
                    self.err("guest.policy.raw", format!("{v:#x} does not fit 32 bits"))
                })?;
            } else {
                for (i, f) in p.flags.iter().enumerate() {
                    policy |= uapi::policy::flag(f).ok_or_else(|| {
                        self.err(
                            &format!("guest.policy.flags.{i}"),
                            format!(
                                "unknown flag {f:?} (expected one of {})",
                                uapi::policy::names().join(", ")
                            ),
                        )
                    })?;
                }
                policy |= (p.api_major.unwrap_or(0) as u32) << 16
                    | (p.api_minor.unwrap_or(0) as u32) << 24;
            }
        }
        if mode == Mode::SevEs {
            policy |= uapi::policy::ES;
        } else if policy & uapi::policy::ES != 0 {
            return Err(self.err("guest.mode", "sev, but the policy has the es flag"));
        }
        Ok(policy)
    }

    /// An SNP guest's policy, HOST_DATA, guest features, expected digest and ID block.
    fn snp(&self, raw: &Raw) -> Checked<SnpSpec> {
        let g = &raw.guest;
        let policy = self.snp_policy(g.policy.as_ref())?;
        let host_data = match &g.host_data {
            None => [0u8; 32],
            Some(h) => self.hex_bytes::<32>("guest.hostData", h)?,
        };
        let guest_features = match &g.guest_features {
            None => SNP_ACTIVE,
            Some(n) => self.number("guest.guestFeatures", n)? | SNP_ACTIVE,
        };
        if guest_features & !(SNP_ACTIVE | DEBUG_SWAP) != 0 {
            return Err(self.err(
                "guest.guestFeatures",
                format!("KVM offers SNPActive (0x1) and DebugSwap (0x20), not {guest_features:#x}"),
            ));
        }
        let expected_digest = match raw.measurement.as_deref() {
            None | Some("auto") => None,
            Some(h) => Some(self.hex_bytes::<48>("measurement", h).map_err(|_| {
                self.err(
                    "measurement",
                    format!("expected auto or 96 hex digits (the SNP launch digest), got {h:?}"),
                )
            })?),
        };
        let id_block = match raw.owner.as_ref().and_then(|o| o.id_block.as_ref()) {
            None => None,
            Some(b) => Some(IdBlockSpec {
                id_key: self.file("owner.idBlock.idKey", &b.id_key)?,
                author_key: b
                    .author_key
                    .as_ref()
                    .map(|p| self.file("owner.idBlock.authorKey", p))
                    .transpose()?,
                family_id: match &b.family_id {
                    Some(h) => self.hex_bytes::<16>("owner.idBlock.familyId", h)?,
                    None => [0; 16],
                },
                image_id: match &b.image_id {
                    Some(h) => self.hex_bytes::<16>("owner.idBlock.imageId", h)?,
                    None => [0; 16],
                },
                guest_svn: b.guest_svn.unwrap_or(0),
            }),
        };
        let owner = raw.owner.as_ref();
        for (given, field, why) in [
            (
                owner.is_some_and(|o| o.session.is_some()),
                "owner.session",
                "an SNP launch has no session: secrets follow attestation",
            ),
            (
                owner.is_some_and(|o| o.ca.is_some()),
                "owner.ca",
                "SNP reports chain to an ARK: give owner.ark",
            ),
        ] {
            if given {
                return Err(self.err(field, why));
            }
        }
        let ark = owner
            .and_then(|o| o.ark.as_ref())
            .map(|p| self.file("owner.ark", p))
            .transpose()?;
        Ok(SnpSpec {
            policy,
            host_data,
            guest_features,
            expected_digest,
            id_block,
            ark,
        })
    }

    /// `N` bytes written as 2N hex digits.
    fn hex_bytes<const N: usize>(&self, path: &str, h: &str) -> Checked<[u8; N]> {
        hex::decode(h.trim())
            .ok()
            .and_then(|v| <[u8; N]>::try_from(v).ok())
            .ok_or_else(|| self.err(path, format!("expected {} hex digits, got {h:?}", 2 * N)))
    }

    /// SNP's policy: raw, or named flags (a `flags` list or one field each) with a minimum
    /// ABI; SMT is allowed unless said otherwise, and the must-be-one bit is always set.
    fn snp_policy(&self, p: Option<&RawPolicy>) -> Checked<u64> {
        use uapi::snp::policy as sp;
        let Some(p) = p else {
            return Ok(sp::compose(sp::SMT, 0, 0));
        };
        let named = [
            (p.smt, sp::SMT),
            (p.debug, sp::DEBUG),
            (p.migrate_ma, sp::MIGRATE_MA),
            (p.single_socket, sp::SINGLE_SOCKET),
            (p.cxl_allow, sp::CXL_ALLOW),
            (p.mem_aes256_xts, sp::MEM_AES_256_XTS),
            (p.rapl_dis, sp::RAPL_DIS),
            (p.ciphertext_hiding_dram, sp::CIPHERTEXT_HIDING_DRAM),
            (p.page_swap_disable, sp::PAGE_SWAP_DISABLE),
        ];
        if let Some(raw_policy) = &p.raw {
            if !p.flags.is_empty()
                || p.api_major.is_some()
                || p.api_minor.is_some()
                || named.iter().any(|(v, _)| v.is_some())
            {
                return Err(self.err(
                    "guest.policy.raw",
                    "give either raw or named fields, not both",
                ));
            }
            let v = self.number("guest.policy.raw", raw_policy)?;
            if v & sp::MBZ != 0 || v & sp::RSVD_MBO == 0 {
                return Err(self.err(
                    "guest.policy.raw",
                    format!("{v:#x} is not an SNP policy: bit 17 must be set and bits 26-63 clear"),
                ));
            }
            return Ok(v);
        }
        let mut bits = sp::SMT;
        for (i, f) in p.flags.iter().enumerate() {
            let bit = sp::FLAGS
                .iter()
                .find(|(n, _)| *n == f.as_str())
                .map(|(_, b)| *b)
                .ok_or_else(|| {
                    let names: Vec<&str> = sp::FLAGS.iter().map(|(n, _)| *n).collect();
                    self.err(
                        &format!("guest.policy.flags.{i}"),
                        format!(
                            "unknown SNP policy flag {f:?} (expected one of {})",
                            names.join(", ")
                        ),
                    )
                })?;
            bits |= bit;
        }
        for (value, bit) in named {
            match value {
                Some(true) => bits |= bit,
                Some(false) => bits &= !bit,
                None => {}
            }
        }
        Ok(sp::compose(
            bits,
            p.api_major.unwrap_or(0),
            p.api_minor.unwrap_or(0),
        ))
    }

    /// The secrets and where their table goes.
    fn secrets(&self, s: Option<&RawSecrets>, has_ovmf: bool) -> Checked<(Vec<Secret>, Placement)> {
        let (mut secrets, mut placement) = (vec![], Placement::Ovmf);
        let Some(s) = s else {
            return Ok((secrets, placement));
        };
        let explicit = match &s.placement {
            Some(Number::Text(t)) if t == "ovmf" => None,
            other => other.as_ref(),
        };
        if let Some(p) = explicit {
            let addr = parse_number(p)
                .map_err(|m| self.err("secrets.placement", format!("{m}, or ovmf")))?;
            if addr % 16 != 0 {
                return Err(self.err(
                    "secrets.placement",
                    format!("{addr:#x} is not 16-byte aligned"),
                ));
            }
            placement = Placement::Address(addr);
        } else if !has_ovmf {
            return Err(self.err(
                "secrets.placement",
                "needed when there is no OVMF secret area",
            ));
        }
        for (i, e) in s.entries.iter().enumerate() {
            let at = |f: &str| format!("secrets.entries.{i}.{f}");
            guid_le(&e.guid)
                .map_err(|_| self.err(&at("guid"), format!("{:?} is not a GUID", e.guid)))?;
            let data = match (&e.file, &e.value) {
                (Some(f), None) => {
                    let path = self.file(&at("file"), f)?;
                    std::fs::read(&path)
                        .map(zeroize::Zeroizing::new)
                        .map_err(|err| self.err(&at("file"), err.to_string()))?
                }
                (None, Some(v)) => zeroize::Zeroizing::new(v.as_bytes().to_vec()),
                _ => {
                    return Err(self.err(
                        &format!("secrets.entries.{i}"),
                        "give exactly one of file or value",
                    ))
                }
            };
            secrets.push(Secret {
                guid: e.guid.clone(),
                data,
            });
        }
        Ok((secrets, placement))
    }
}
