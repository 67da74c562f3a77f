//! Launch manifests: one YAML document describing a guest and its owner (schema
//! `apiVersion: sevctl/v1`, documented in the README). Paths are relative to the manifest.
//! Wrong documents are refused with the line and column of the value at fault (serde_yaml's
//! own positions for syntax and type errors, [`spans`] for the checks after parsing) and what
//! was expected.

mod check;
mod raw;
mod spans;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{input, Result};
use crate::vmsa::Vmm;
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
        let raw: raw::Raw =
            serde_yaml::from_str(text).map_err(|e| ManifestError::from_serde(&e))?;
        check::Checker {
            spans: &spans,
            base,
        }
        .check(raw)
    }
}

/// serde_yaml appends " at line L column C"; the line is already in front.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}
