//! Launch manifests: one YAML document describing a guest and its owner (schema
//! `apiVersion: sevctl/v1`, documented in the README). Paths are relative to the manifest.
//! Wrong documents are refused with the line and column of the value at fault (serde_yaml's
//! own positions for syntax and type errors, [`spans`] for the checks after parsing) and what
//! was expected.

mod spans;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{input, Result};
use crate::vmsa::{cpu_model_signature, Vmm, CPU_MODELS};
use sevd::owner::guid::guid_le;
use spans::{Pos, Spans};

/// What is wrong with a manifest, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct ManifestError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The value's path (`guest.memory`, `images.regions.0.file`); empty for syntax errors.
    pub field: String,
    /// What was expected.
    pub message: String,
}

impl ManifestError {
    fn at(pos: Pos, field: &str, message: impl Into<String>) -> Self {
        ManifestError {
            line: pos.line,
            column: pos.column,
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// serde_yaml's error, at its own position.
    fn from_serde(e: &serde_yaml::Error) -> Self {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        ManifestError {
            line,
            column,
            field: String::new(),
            message: strip_location(&e.to_string()),
        }
    }
}

/// SEV_FEATURES bit 0, SNPActive: KVM sets it in every SNP save area.
const SNP_ACTIVE: u64 = 1;
/// SEV_FEATURES bit 5, DebugSwap: the one feature KVM offers through `vmsa_features`.
const DEBUG_SWAP: u64 = 1 << 5;

/// The schema version this CLI reads.
pub const API_VERSION: &str = "sevctl/v1";

/// A size: bytes, or a number with K, M or G.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

/// A number written as decimal or `0x…` hex.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Number {
    Int(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Raw {
    /// Checked before the schema is applied ([`Manifest::parse`]).
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(default)]
    name: Option<String>,
    guest: RawGuest,
    images: RawImages,
    #[serde(default)]
    measurement: Option<String>,
    #[serde(default)]
    secrets: Option<RawSecrets>,
    #[serde(default)]
    owner: Option<RawOwner>,
    #[serde(default)]
    platform: Option<PlatformKind>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawOwner {
    #[serde(default)]
    session: Option<RawSession>,
    #[serde(default)]
    ca: Option<PathBuf>,
    #[serde(default)]
    ark: Option<PathBuf>,
    #[serde(default)]
    id_block: Option<RawIdBlock>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawIdBlock {
    id_key: PathBuf,
    #[serde(default)]
    author_key: Option<PathBuf>,
    #[serde(default)]
    family_id: Option<String>,
    #[serde(default)]
    image_id: Option<String>,
    #[serde(default)]
    guest_svn: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSession {
    godh: PathBuf,
    session: PathBuf,
    tek: PathBuf,
    tik: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawGuest {
    memory: Size,
    #[serde(default)]
    vcpus: Option<u32>,
    mode: Mode,
    #[serde(default)]
    vcpu_type: Option<String>,
    #[serde(default)]
    policy: Option<RawPolicy>,
    #[serde(default)]
    legacy_vm_type: Option<bool>,
    #[serde(default)]
    vmm: Option<Vmm>,
    #[serde(default)]
    host_data: Option<String>,
    #[serde(default)]
    guest_features: Option<Number>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPolicy {
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    api_major: Option<u8>,
    #[serde(default)]
    api_minor: Option<u8>,
    #[serde(default)]
    raw: Option<Number>,
    // SNP's named fields (SEV-SNP ABI, guest policy).
    #[serde(default)]
    smt: Option<bool>,
    #[serde(default)]
    debug: Option<bool>,
    #[serde(default)]
    migrate_ma: Option<bool>,
    #[serde(default)]
    single_socket: Option<bool>,
    #[serde(default)]
    cxl_allow: Option<bool>,
    #[serde(default)]
    mem_aes256_xts: Option<bool>,
    #[serde(default)]
    rapl_dis: Option<bool>,
    #[serde(default)]
    ciphertext_hiding_dram: Option<bool>,
    #[serde(default)]
    page_swap_disable: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawImages {
    #[serde(default)]
    ovmf: Option<PathBuf>,
    #[serde(default)]
    kernel: Option<PathBuf>,
    #[serde(default)]
    initrd: Option<PathBuf>,
    #[serde(default)]
    cmdline: Option<String>,
    #[serde(default)]
    regions: Vec<RawRegion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRegion {
    address: Number,
    file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSecrets {
    #[serde(default)]
    placement: Option<Number>,
    entries: Vec<RawSecret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSecret {
    guid: String,
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    value: Option<String>,
}

/// SEV, SEV-ES or SEV-SNP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Plain SEV.
    Sev,
    /// SEV-ES: encrypted register state, VMSAs measured.
    SevEs,
    /// SEV-SNP: private memory in the RMP, a SHA-384 launch digest, attestation reports.
    Snp,
}

impl Mode {
    /// The name people know it by.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Sev => "SEV",
            Mode::SevEs => "SEV-ES",
            Mode::Snp => "SEV-SNP",
        }
    }
}

/// What an SNP guest's owner binds it to: the ID block they sign (SEV-SNP ABI "ID_BLOCK").
#[derive(Debug, Clone)]
pub struct IdBlockSpec {
    /// The ID key (P-384, PEM): it signs the ID block.
    pub id_key: PathBuf,
    /// The author key (P-384, PEM), which signs the ID key, if any.
    pub author_key: Option<PathBuf>,
    /// FAMILY_ID.
    pub family_id: [u8; 16],
    /// IMAGE_ID.
    pub image_id: [u8; 16],
    /// GUEST_SVN.
    pub guest_svn: u32,
}

/// An SNP guest's launch parameters.
#[derive(Debug, Clone)]
pub struct SnpSpec {
    /// The guest policy (u64; the must-be-one bit set).
    pub policy: u64,
    /// HOST_DATA, put in every report.
    pub host_data: [u8; 32],
    /// SEV_FEATURES of the save areas (SNPActive always set).
    pub guest_features: u64,
    /// The expected 48-byte launch digest; `None` for `auto`.
    pub expected_digest: Option<[u8; 48]>,
    /// The ID block to sign and give LAUNCH_FINISH, if any.
    pub id_block: Option<IdBlockSpec>,
    /// The ARK the owner trusts (PEM or DER); `None` trusts the platform's own.
    pub ark: Option<PathBuf>,
}

/// Where a guest runs (`platform:` and `launch --platform`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PlatformKind {
    /// sevd: the device node, or the embedded firmware.
    #[default]
    Sevd,
    /// KVM with the kernel's SEV device, on real hardware.
    Kvm,
}

/// A raw image at a guest address.
#[derive(Debug, Clone)]
pub struct Region {
    /// Guest physical address.
    pub address: u64,
    /// The file.
    pub file: PathBuf,
}

/// Where the secret table goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// OVMF's secret area, from its footer table.
    Ovmf,
    /// A guest physical address.
    Address(u64),
}

/// A secret: a GUID and its bytes.
#[derive(Debug, Clone)]
pub struct Secret {
    /// GUID, as written.
    pub guid: String,
    /// The secret.
    pub data: zeroize::Zeroizing<Vec<u8>>,
}

/// Session files made beforehand (`sevctl session`): the GODH and session as base64, TEK and
/// TIK raw.
#[derive(Debug, Clone)]
pub struct SessionFiles {
    /// `NAME_godh.b64`.
    pub godh: PathBuf,
    /// `NAME_session.b64`.
    pub session: PathBuf,
    /// `NAME_tek.bin`.
    pub tek: PathBuf,
    /// `NAME_tik.bin`.
    pub tik: PathBuf,
}

/// A checked manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Guest name, for messages.
    pub name: String,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// SEV or SEV-ES.
    pub mode: Mode,
    /// CPUID 1 EAX of the vCPUs (for VMSAs).
    pub cpu_signature: u32,
    /// The VMM whose reset state the VMSAs hold.
    pub vmm: Vmm,
    /// KVM's legacy init on the default VM type (QEMU's `legacy-vm-type`), instead of a VM
    /// type and KVM_SEV_INIT2.
    pub legacy_vm_type: bool,
    /// The policy, raw 32 bits.
    pub policy: u32,
    /// OVMF image.
    pub ovmf: Option<PathBuf>,
    /// Kernel, initrd, command line (measured through OVMF's hashes table).
    pub kernel: Option<(PathBuf, PathBuf, String)>,
    /// Raw regions.
    pub regions: Vec<Region>,
    /// Expected launch digest; `None` = `auto`.
    pub expected_digest: Option<[u8; 32]>,
    /// Secrets and where they go.
    pub secrets: Vec<Secret>,
    /// Where the secret table goes.
    pub placement: Placement,
    /// The owner's session, when made beforehand.
    pub session: Option<SessionFiles>,
    /// ASK ‖ ARK to verify the platform with.
    pub ca: Option<PathBuf>,
    /// Launch through KVM on real hardware (`platform: kvm`).
    pub kvm: bool,
    /// SNP's parameters (`mode: snp`).
    pub snp: Option<SnpSpec>,
}

fn parse_number(n: &Number) -> std::result::Result<u64, String> {
    match n {
        Number::Int(v) => Ok(*v),
        Number::Text(s) => {
            let t = s.trim().to_ascii_lowercase();
            let r = match t.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
                None => t.replace('_', "").parse(),
            };
            r.map_err(|_| format!("expected a number (decimal or 0x hex), got {s:?}"))
        }
    }
}

fn parse_size(s: &Size) -> std::result::Result<u64, String> {
    match s {
        Size::Bytes(b) => Ok(*b),
        Size::Text(t) => {
            let t = t.trim();
            let (num, mult) = match t.chars().last() {
                Some('K') | Some('k') => (&t[..t.len() - 1], 1 << 10),
                Some('M') | Some('m') => (&t[..t.len() - 1], 1 << 20),
                Some('G') | Some('g') => (&t[..t.len() - 1], 1 << 30),
                _ => (t, 1),
            };
            num.trim()
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(mult))
                .ok_or_else(|| format!("expected bytes or a number with K, M or G, got {t:?}"))
        }
    }
}

impl Manifest {
    /// Reads, parses and checks a manifest; every file it names must exist.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text =
            std::fs::read_to_string(path).map_err(|e| input(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| input(format!("{}:{e}", path.display())))
    }

    /// Parses `text`; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> std::result::Result<Manifest, ManifestError> {
        let spans = Spans::scan(text)?;
        // The version first: another version's schema is not this one's to judge.
        match spans.scalar("apiVersion") {
            Some(API_VERSION) => {}
            Some(other) => {
                return Err(ManifestError::at(
                    spans.pos("apiVersion"),
                    "apiVersion",
                    format!(
                        "{other:?} is not a version this sevctl reads (it reads {API_VERSION:?})"
                    ),
                ))
            }
            None => {
                return Err(ManifestError::at(
                    spans.pos(""),
                    "apiVersion",
                    format!("missing: expected apiVersion: {API_VERSION}"),
                ))
            }
        }
        let raw: Raw = serde_yaml::from_str(text).map_err(|e| ManifestError::from_serde(&e))?;
        Checker {
            spans: &spans,
            base,
        }
        .check(raw)
    }
}

/// The checks after parsing, each error at the value it is about.
struct Checker<'a> {
    spans: &'a Spans,
    base: &'a Path,
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

    fn check(&self, raw: Raw) -> Checked<Manifest> {
        let g = &raw.guest;
        let memory = parse_size(&g.memory).map_err(|m| self.err("guest.memory", m))?;
        if memory < 1 << 20 || memory % 4096 != 0 || memory > 64 << 30 {
            return Err(self.err(
                "guest.memory",
                format!("expected a multiple of 4 KiB between 1M and 64G, got {memory}"),
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

/// serde_yaml appends " at line L column C"; the line is already in front.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}
