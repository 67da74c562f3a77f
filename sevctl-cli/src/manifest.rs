//! Launch manifests: one YAML document describing a guest and its owner (schema
//! `apiVersion: sevctl/v1`, documented in the README). Paths are relative to the manifest.
//! Wrong documents are refused with the line and what was expected.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{input, Result};
use crate::util::guid_le;
use crate::vmsa::{cpu_model_signature, Vmm, CPU_MODELS};

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
    api_version: String,
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
    platform: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawOwner {
    #[serde(default)]
    session: Option<RawSession>,
    #[serde(default)]
    ca: Option<PathBuf>,
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
    mode: String,
    #[serde(default)]
    vcpu_type: Option<String>,
    #[serde(default)]
    policy: Option<RawPolicy>,
    #[serde(default)]
    legacy_vm_type: Option<bool>,
    #[serde(default)]
    vmm: Option<String>,
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

/// SEV or SEV-ES.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain SEV.
    Sev,
    /// SEV-ES: encrypted register state, VMSAs measured.
    SevEs,
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
}

/// The 1-based line of the first line of `text` containing `needle`, for messages about
/// values (serde reports positions only for syntax and type errors).
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or(1)
}

fn parse_number(what: &str, n: &Number) -> std::result::Result<u64, String> {
    match n {
        Number::Int(v) => Ok(*v),
        Number::Text(s) => {
            let t = s.trim().to_ascii_lowercase();
            let r = match t.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
                None => t.replace('_', "").parse(),
            };
            r.map_err(|_| format!("{what}: expected a number (decimal or 0x hex), got {s:?}"))
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
                .ok_or_else(|| {
                    format!("memory: expected bytes or a number with K, M or G, got {t:?}")
                })
        }
    }
}

/// Policy flag names (firmware-semantics.md §3).
fn policy_bit(name: &str) -> Option<u32> {
    Some(match name.to_ascii_lowercase().as_str() {
        "nodbg" => 1 << 0,
        "noks" => 1 << 1,
        "es" => 1 << 2,
        "nosend" => 1 << 3,
        "domain" => 1 << 4,
        "sev" => 1 << 5,
        _ => return None,
    })
}

impl Manifest {
    /// Reads, parses and checks a manifest; every file it names must exist.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text =
            std::fs::read_to_string(path).map_err(|e| input(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| input(format!("{}:{e}", path.display())))
    }

    /// Parses `text`; relative paths are taken from `base`. Errors read "LINE: what".
    pub fn parse(text: &str, base: &Path) -> std::result::Result<Manifest, String> {
        let raw: Raw = serde_yaml::from_str(text).map_err(|e| match e.location() {
            Some(l) => format!("{}: {}", l.line(), strip_location(&e.to_string())),
            None => format!("1: {e}"),
        })?;
        let at = |needle: &str, msg: String| format!("{}: {msg}", line_of(text, needle));
        if raw.api_version != API_VERSION {
            return Err(at(
                "apiVersion",
                format!(
                    "apiVersion: expected {API_VERSION:?}, got {:?}",
                    raw.api_version
                ),
            ));
        }
        let g = &raw.guest;
        let memory = parse_size(&g.memory).map_err(|m| at("memory", m))?;
        if memory < 1 << 20 || memory % 4096 != 0 || memory > 64 << 30 {
            return Err(at(
                "memory",
                format!("memory: expected a multiple of 4 KiB between 1M and 64G, got {memory}"),
            ));
        }
        let mode = match g.mode.as_str() {
            "sev" => Mode::Sev,
            "sev-es" => Mode::SevEs,
            other => {
                return Err(at(
                    "mode",
                    format!("mode: expected sev or sev-es, got {other:?}"),
                ))
            }
        };
        let vcpus = g.vcpus.unwrap_or(1);
        if vcpus == 0 || vcpus > 4096 {
            return Err(at(
                "vcpus",
                format!("vcpus: expected 1 to 4096, got {vcpus}"),
            ));
        }
        let vcpu_type = g.vcpu_type.as_deref().unwrap_or("EPYC-v4");
        let cpu_signature = cpu_model_signature(vcpu_type).ok_or_else(|| {
            let names: Vec<&str> = CPU_MODELS.iter().map(|(n, _)| *n).collect();
            at(
                "vcpuType",
                format!(
                    "vcpuType: expected one of {}, got {vcpu_type:?}",
                    names.join(", ")
                ),
            )
        })?;
        let vmm = match g.vmm.as_deref() {
            None => Vmm::Qemu,
            Some(v) => <Vmm as clap::ValueEnum>::from_str(v, true).map_err(|_| {
                at(
                    "vmm",
                    format!("vmm: expected one of {}, got {v:?}", Vmm::NAMES),
                )
            })?,
        };
        if g.legacy_vm_type.is_some() && mode == Mode::Sev {
            return Err(at(
                "legacyVmType",
                "legacyVmType: only for sev-es; a plain SEV guest has no save area, so both inits measure it alike".into(),
            ));
        }
        let legacy_vm_type = g.legacy_vm_type.unwrap_or(false);
        let mut policy = 0u32;
        if let Some(p) = &g.policy {
            if let Some(raw_policy) = &p.raw {
                if !p.flags.is_empty() || p.api_major.is_some() || p.api_minor.is_some() {
                    return Err(at(
                        "raw",
                        "policy: give either raw or flags/apiMajor/apiMinor, not both".into(),
                    ));
                }
                let v = parse_number("policy.raw", raw_policy).map_err(|m| at("raw", m))?;
                policy = u32::try_from(v)
                    .map_err(|_| at("raw", format!("policy.raw: {v:#x} does not fit 32 bits")))?;
            } else {
                for f in &p.flags {
                    policy |= policy_bit(f).ok_or_else(|| at(f, format!("policy.flags: unknown flag {f:?} (nodbg, noks, es, nosend, domain, sev)")))?;
                }
                policy |= (p.api_major.unwrap_or(0) as u32) << 16
                    | (p.api_minor.unwrap_or(0) as u32) << 24;
            }
        }
        if mode == Mode::SevEs {
            policy |= 1 << 2;
        } else if policy & (1 << 2) != 0 {
            return Err(at(
                "mode",
                "mode: sev, but the policy has the es flag".into(),
            ));
        }

        let file = |p: &PathBuf| -> std::result::Result<PathBuf, String> {
            let full = if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            };
            if full.is_file() {
                Ok(full)
            } else {
                Err(at(
                    &p.to_string_lossy(),
                    format!("{}: no such file", full.display()),
                ))
            }
        };
        let im = &raw.images;
        let ovmf = im.ovmf.as_ref().map(file).transpose()?;
        let kernel = match (&im.kernel, &im.initrd, &im.cmdline) {
            (None, None, None) => None,
            (Some(k), Some(i), Some(c)) => {
                if ovmf.is_none() {
                    return Err(at("kernel", "images.kernel: measured through OVMF's hashes table, so images.ovmf is needed".into()));
                }
                Some((file(k)?, file(i)?, c.clone()))
            }
            _ => {
                return Err(at(
                    "kernel",
                    "images: kernel, initrd and cmdline go together".into(),
                ))
            }
        };
        let mut regions = vec![];
        for r in &im.regions {
            let address =
                parse_number("regions.address", &r.address).map_err(|m| at("address", m))?;
            if address % 16 != 0 {
                return Err(at(
                    "address",
                    format!("regions.address: {address:#x} is not 16-byte aligned"),
                ));
            }
            regions.push(Region {
                address,
                file: file(&r.file)?,
            });
        }
        if ovmf.is_none() && regions.is_empty() {
            return Err(at(
                "images",
                "images: expected ovmf or at least one region".into(),
            ));
        }
        if mode == Mode::SevEs && ovmf.is_none() && vcpus > 1 {
            return Err(at(
                "mode",
                "mode: sev-es with more than one vCPU needs images.ovmf for the APs' reset vector"
                    .into(),
            ));
        }

        let expected_digest = match raw.measurement.as_deref() {
            None | Some("auto") => None,
            Some(hex_digest) => {
                let d = hex::decode(hex_digest.trim())
                    .ok()
                    .and_then(|v| <[u8; 32]>::try_from(v).ok());
                Some(d.ok_or_else(|| at("measurement", format!("measurement: expected auto or 64 hex digits (the launch digest), got {hex_digest:?}")))?)
            }
        };

        let (mut secrets, mut placement) = (vec![], Placement::Ovmf);
        if let Some(s) = &raw.secrets {
            let explicit = match &s.placement {
                Some(Number::Text(t)) if t == "ovmf" => None,
                other => other.as_ref(),
            };
            if let Some(p) = explicit {
                let addr = parse_number("secrets.placement", p)
                    .map_err(|m| at("placement", format!("{m} or ovmf")))?;
                if addr % 16 != 0 {
                    return Err(at(
                        "placement",
                        format!("secrets.placement: {addr:#x} is not 16-byte aligned"),
                    ));
                }
                placement = Placement::Address(addr);
            } else if ovmf.is_none() {
                return Err(at(
                    "secrets",
                    "secrets.placement: needed when there is no OVMF secret area".into(),
                ));
            }
            for e in &s.entries {
                guid_le(&e.guid).map_err(|_| {
                    at(
                        &e.guid,
                        format!("secrets.entries.guid: {:?} is not a GUID", e.guid),
                    )
                })?;
                let data = match (&e.file, &e.value) {
                    (Some(f), None) => std::fs::read(file(f)?)
                        .map(zeroize::Zeroizing::new)
                        .map_err(|err| at(&f.to_string_lossy(), err.to_string()))?,
                    (None, Some(v)) => zeroize::Zeroizing::new(v.as_bytes().to_vec()),
                    _ => {
                        return Err(at(
                            &e.guid,
                            "secrets.entries: give exactly one of file or value".into(),
                        ))
                    }
                };
                secrets.push(Secret {
                    guid: e.guid.clone(),
                    data,
                });
            }
        }
        let (mut session, mut ca) = (None, None);
        if let Some(o) = &raw.owner {
            if let Some(sf) = &o.session {
                session = Some(SessionFiles {
                    godh: file(&sf.godh)?,
                    session: file(&sf.session)?,
                    tek: file(&sf.tek)?,
                    tik: file(&sf.tik)?,
                });
            }
            ca = o.ca.as_ref().map(file).transpose()?;
        }
        let kvm = match raw.platform.as_deref() {
            None | Some("sevd") => false,
            Some("kvm") => true,
            Some(other) => {
                return Err(at(
                    "platform",
                    format!("platform: expected sevd or kvm, got {other:?}"),
                ))
            }
        };
        Ok(Manifest {
            kvm,
            session,
            ca,
            name: raw.name.unwrap_or_else(|| "guest".into()),
            memory,
            vcpus,
            mode,
            cpu_signature,
            vmm,
            legacy_vm_type,
            policy,
            ovmf,
            kernel,
            regions,
            expected_digest,
            secrets,
            placement,
        })
    }
}

/// serde_yaml appends " at line L column C"; the line is already in front.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}
