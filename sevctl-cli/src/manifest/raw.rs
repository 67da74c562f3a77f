//! The manifest as YAML writes it, before the checks ([`super::check`]): serde's view of
//! the document, and the forms of its numbers and sizes.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Mode, PlatformKind};
use crate::vmsa::Vmm;

/// A size: bytes, or a number with K, M, G or T (binary units, either case).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum Size {
    Bytes(u64),
    Text(String),
}

/// A number written as decimal or `0x…` hex.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum Number {
    Int(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Raw {
    /// Checked before the schema is applied ([`Manifest::parse`]).
    #[serde(rename = "apiVersion")]
    pub(super) _api_version: String,
    #[serde(default)]
    pub(super) name: Option<String>,
    pub(super) guest: RawGuest,
    pub(super) images: RawImages,
    #[serde(default)]
    pub(super) measurement: Option<String>,
    #[serde(default)]
    pub(super) secrets: Option<RawSecrets>,
    #[serde(default)]
    pub(super) owner: Option<RawOwner>,
    #[serde(default)]
    pub(super) platform: Option<PlatformKind>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawOwner {
    #[serde(default)]
    pub(super) session: Option<RawSession>,
    #[serde(default)]
    pub(super) ca: Option<PathBuf>,
    #[serde(default)]
    pub(super) ark: Option<PathBuf>,
    #[serde(default)]
    pub(super) id_block: Option<RawIdBlock>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawIdBlock {
    pub(super) id_key: PathBuf,
    #[serde(default)]
    pub(super) author_key: Option<PathBuf>,
    #[serde(default)]
    pub(super) family_id: Option<String>,
    #[serde(default)]
    pub(super) image_id: Option<String>,
    #[serde(default)]
    pub(super) guest_svn: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawSession {
    pub(super) godh: PathBuf,
    pub(super) session: PathBuf,
    pub(super) tek: PathBuf,
    pub(super) tik: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawGuest {
    pub(super) memory: Size,
    #[serde(default)]
    pub(super) vcpus: Option<u32>,
    pub(super) mode: Mode,
    #[serde(default)]
    pub(super) vcpu_type: Option<String>,
    #[serde(default)]
    pub(super) policy: Option<RawPolicy>,
    #[serde(default)]
    pub(super) legacy_vm_type: Option<bool>,
    #[serde(default)]
    pub(super) vmm: Option<Vmm>,
    #[serde(default)]
    pub(super) host_data: Option<String>,
    #[serde(default)]
    pub(super) guest_features: Option<Number>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawPolicy {
    #[serde(default)]
    pub(super) flags: Vec<String>,
    #[serde(default)]
    pub(super) api_major: Option<u8>,
    #[serde(default)]
    pub(super) api_minor: Option<u8>,
    #[serde(default)]
    pub(super) raw: Option<Number>,
    // SNP's named fields (SEV-SNP ABI, guest policy).
    #[serde(default)]
    pub(super) smt: Option<bool>,
    #[serde(default)]
    pub(super) debug: Option<bool>,
    #[serde(default)]
    pub(super) migrate_ma: Option<bool>,
    #[serde(default)]
    pub(super) single_socket: Option<bool>,
    #[serde(default)]
    pub(super) cxl_allow: Option<bool>,
    #[serde(default)]
    pub(super) mem_aes256_xts: Option<bool>,
    #[serde(default)]
    pub(super) rapl_dis: Option<bool>,
    #[serde(default)]
    pub(super) ciphertext_hiding_dram: Option<bool>,
    #[serde(default)]
    pub(super) page_swap_disable: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawImages {
    #[serde(default)]
    pub(super) ovmf: Option<PathBuf>,
    #[serde(default)]
    pub(super) kernel: Option<PathBuf>,
    #[serde(default)]
    pub(super) initrd: Option<PathBuf>,
    #[serde(default)]
    pub(super) cmdline: Option<String>,
    #[serde(default)]
    pub(super) regions: Vec<RawRegion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawRegion {
    pub(super) address: Number,
    pub(super) file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawSecrets {
    #[serde(default)]
    pub(super) placement: Option<Number>,
    pub(super) entries: Vec<RawSecret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawSecret {
    pub(super) guid: String,
    #[serde(default)]
    pub(super) file: Option<PathBuf>,
    #[serde(default)]
    pub(super) value: Option<String>,
}

pub(super) fn parse_number(n: &Number) -> std::result::Result<u64, String> {
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

pub(super) fn parse_size(s: &Size) -> std::result::Result<u64, String> {
    match s {
        Size::Bytes(b) => Ok(*b),
        Size::Text(t) => {
            let t = t.trim();
            let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
                Some('K') => (&t[..t.len() - 1], 1 << 10),
                Some('M') => (&t[..t.len() - 1], 1 << 20),
                Some('G') => (&t[..t.len() - 1], 1 << 30),
                Some('T') => (&t[..t.len() - 1], 1 << 40),
                _ => (t, 1),
            };
            num.trim()
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(mult))
                .ok_or_else(|| format!("expected bytes or a number with K, M, G or T, got {t:?}"))
        }
    }
}
