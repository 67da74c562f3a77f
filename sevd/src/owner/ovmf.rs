//! OVMF's GUIDed footer table (as QEMU and sev-snp-measure read it): a list of entries
//! `data ‖ u16 size ‖ GUID` ending 32 bytes before the end of the image, the last entry
//! being the table's own footer.

use std::collections::HashMap;

use super::guid::guid_le;

/// A malformed footer table or SEV metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("OVMF footer table: {0}")]
pub struct OvmfError(pub String);

type Result<T> = std::result::Result<T, OvmfError>;

/// GUIDs here are constants; one that did not parse would be a typo caught by the tests.
fn guid(s: &str) -> [u8; 16] {
    guid_le(s).unwrap_or_default()
}

/// `96b582de-1fb2-45f7-baea-a366c55a082d`: the table's footer.
const FOOTER: &str = "96b582de-1fb2-45f7-baea-a366c55a082d";
/// `00f771de-1a7e-4fcb-890e-68c77e2fb44e`: SEV-ES reset block (AP reset vector).
pub const SEV_ES_RESET_BLOCK: &str = "00f771de-1a7e-4fcb-890e-68c77e2fb44e";
/// `7255371f-3a3b-4b04-927b-1da6efa8d454`: where the kernel hashes table goes.
pub const SEV_HASH_TABLE: &str = "7255371f-3a3b-4b04-927b-1da6efa8d454";
/// `4c2eb361-7d9b-4cc3-8081-127c90d3d294`: the launch secret area.
pub const SEV_SECRET: &str = "4c2eb361-7d9b-4cc3-8081-127c90d3d294";
/// `dc886566-984a-4798-a75e-5585a7bf67cc`: the SEV metadata (offset from the image's end).
pub const SEV_METADATA: &str = "dc886566-984a-4798-a75e-5585a7bf67cc";

/// What an SEV metadata section asks the VMM to do before an SNP launch (snp.md §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// Memory the firmware zeroes and validates (SNP_SEC_MEM).
    SecMem,
    /// The secrets page.
    Secrets,
    /// The CPUID page.
    Cpuid,
    /// The SVSM calling area.
    SvsmCaa,
    /// Where the kernel hashes table goes (SNP_KERNEL_HASHES).
    KernelHashes,
}

/// One SEV metadata section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// Guest physical address.
    pub gpa: u32,
    /// Size in bytes.
    pub size: u32,
    /// What it is.
    pub kind: SectionKind,
}

/// The sections of the SEV metadata of `image`, in table order: `"ASEV"`, size, version 1,
/// count, then `{gpa, size, type}` each.
fn parse_metadata(image: &[u8], from_end: u32) -> Result<Vec<Section>> {
    let bad = |why: &str| OvmfError(format!("SEV metadata: {why}"));
    let start = image
        .len()
        .checked_sub(from_end as usize)
        .ok_or_else(|| bad("offset outside the image"))?;
    let header = image
        .get(start..start + 16)
        .ok_or_else(|| bad("header outside the image"))?;
    if &header[..4] != b"ASEV" {
        return Err(bad("no ASEV signature"));
    }
    let field = |i: usize| u32_at(header, i * 4).unwrap_or(0) as usize;
    let (size, version, count) = (field(1), field(2), field(3));
    if version != 1 {
        return Err(bad(&format!("version {version}, expected 1")));
    }
    if size < 16 + 12 * count {
        return Err(bad("its size does not hold its sections"));
    }
    let items = image
        .get(start + 16..start + 16 + 12 * count)
        .ok_or_else(|| bad("sections outside the image"))?;
    items
        .chunks_exact(12)
        .map(|item| {
            let v = |i: usize| u32_at(item, i * 4).unwrap_or(0);
            let kind = match v(2) {
                1 => SectionKind::SecMem,
                2 => SectionKind::Secrets,
                3 => SectionKind::Cpuid,
                4 => SectionKind::SvsmCaa,
                0x10 => SectionKind::KernelHashes,
                other => return Err(bad(&format!("unknown section type {other:#x}"))),
            };
            Ok(Section {
                gpa: v(0),
                size: v(1),
                kind,
            })
        })
        .collect()
}

const ENTRY_HEADER: usize = 18;

/// A parsed OVMF image.
#[derive(Debug, Clone)]
pub struct Ovmf {
    entries: HashMap<[u8; 16], Vec<u8>>,
    metadata: Vec<Section>,
}

fn u32_at(data: &[u8], off: usize) -> Option<u32> {
    data.get(off..off + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl Ovmf {
    /// Parses the footer table of `image`; an image without one has no entries.
    pub fn parse(image: &[u8]) -> Result<Ovmf> {
        let mut entries = HashMap::new();
        let bad = |why: &str| OvmfError(why.to_string());
        if image.len() < 32 + ENTRY_HEADER {
            return Ok(Ovmf {
                entries,
                metadata: vec![],
            });
        }
        let footer_at = image.len() - 32 - ENTRY_HEADER;
        let size = u16::from_le_bytes([image[footer_at], image[footer_at + 1]]) as usize;
        if image[footer_at + 2..footer_at + ENTRY_HEADER] != guid(FOOTER) {
            return Ok(Ovmf {
                entries,
                metadata: vec![],
            });
        }
        let table_len = size
            .checked_sub(ENTRY_HEADER)
            .ok_or_else(|| bad("footer size too small"))?;
        let start = footer_at
            .checked_sub(table_len)
            .ok_or_else(|| bad("table larger than the image"))?;
        let mut table = &image[start..footer_at];
        while table.len() >= ENTRY_HEADER {
            let h = table.len() - ENTRY_HEADER;
            let size = u16::from_le_bytes([table[h], table[h + 1]]) as usize;
            if size < ENTRY_HEADER || size > table.len() {
                return Err(bad("an entry's size is out of range"));
            }
            let mut guid = [0u8; 16];
            guid.copy_from_slice(&table[h + 2..h + ENTRY_HEADER]);
            entries.insert(guid, table[table.len() - size..h].to_vec());
            table = &table[..table.len() - size];
        }
        let metadata = match entries.get(&guid(SEV_METADATA)).and_then(|d| u32_at(d, 0)) {
            Some(from_end) => parse_metadata(image, from_end)?,
            None => vec![],
        };
        Ok(Ovmf { entries, metadata })
    }

    /// The SEV metadata's sections, in table order (empty without metadata).
    pub fn sev_metadata(&self) -> &[Section] {
        &self.metadata
    }

    fn entry(&self, name: &str) -> Option<&[u8]> {
        self.entries.get(&guid(name)).map(|v| &v[..])
    }

    /// The SEV-ES reset vector of the APs.
    pub fn sev_es_reset_eip(&self) -> Option<u32> {
        self.entry(SEV_ES_RESET_BLOCK).and_then(|d| u32_at(d, 0))
    }

    /// (base, size) of the kernel hashes table area.
    pub fn hashes_table_area(&self) -> Option<(u32, u32)> {
        let d = self.entry(SEV_HASH_TABLE)?;
        Some((u32_at(d, 0)?, u32_at(d, 4)?))
    }

    /// (base, size) of the launch secret area.
    pub fn secret_area(&self) -> Option<(u32, u32)> {
        let d = self.entry(SEV_SECRET)?;
        Some((u32_at(d, 0)?, u32_at(d, 4)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_images_footer_and_metadata() {
        let image = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/firmware/OVMF.amdsev.suffix.fd"
        ))
        .unwrap();
        let o = Ovmf::parse(&image).unwrap();
        assert_eq!(o.sev_es_reset_eip(), Some(0x80b004));
        assert_eq!(o.hashes_table_area().map(|a| a.0), Some(0x810c00));
        let kinds: Vec<_> = o
            .sev_metadata()
            .iter()
            .map(|s| (s.gpa, s.size, s.kind))
            .collect();
        use SectionKind::*;
        assert_eq!(
            kinds,
            [
                (0x80_0000, 0x9000, SecMem),
                (0x80_a000, 0x3000, SecMem),
                (0x80_d000, 0x1000, Secrets),
                (0x80_e000, 0x1000, Cpuid),
                (0x80_f000, 0x1000, SvsmCaa),
                (0x81_0000, 0x1000, KernelHashes),
                (0x81_1000, 0xf000, SecMem),
            ]
        );
        // A corrupt section type is refused, not skipped.
        let from_end = u32_at(o.entry(SEV_METADATA).unwrap(), 0).unwrap() as usize;
        let mut bad = image.clone();
        let at = image.len() - from_end + 16 + 8;
        bad[at] = 9;
        assert!(Ovmf::parse(&bad).is_err());
        // No footer: no entries, no metadata.
        assert!(Ovmf::parse(&[0u8; 4096]).unwrap().sev_metadata().is_empty());
    }
}
