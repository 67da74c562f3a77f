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

const ENTRY_HEADER: usize = 18;

/// A parsed OVMF image.
#[derive(Debug, Clone)]
pub struct Ovmf {
    entries: HashMap<[u8; 16], Vec<u8>>,
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
            return Ok(Ovmf { entries });
        }
        let footer_at = image.len() - 32 - ENTRY_HEADER;
        let size = u16::from_le_bytes([image[footer_at], image[footer_at + 1]]) as usize;
        if image[footer_at + 2..footer_at + ENTRY_HEADER] != guid(FOOTER) {
            return Ok(Ovmf { entries });
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
        Ok(Ovmf { entries })
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
