//! The GUIDed tables owners build, byte for byte as sevctl builds them: the kernel hashes
//! table QEMU puts in the guest (measured with OVMF) and the efi_secret table a launch
//! secret carries (firmware-semantics.md §6, §8.3).

use zeroize::Zeroizing;

use super::guid::{guid_le, BadGuid};

type Result<T> = std::result::Result<T, BadGuid>;

/// The hashes table and its entries (QEMU's `SEV_HASH_TABLE_*` GUIDs).
const HASH_TABLE: &str = "9438d606-4f22-4cc9-b479-a793d411fd21";
const HASH_KERNEL: &str = "4de79437-abd2-427f-b835-d5b172d2045b";
const HASH_INITRD: &str = "44baf731-3a2f-4bd7-9af1-41e29169781d";
const HASH_CMDLINE: &str = "97d02dd8-bd20-4c94-aa78-e7714d36ab2a";
/// Linux's efi_secret table header GUID.
const SECRET_TABLE: &str = "1e74f542-71dd-4d66-963e-ef4287ff173b";

/// `GUID ‖ length ‖ payload`, the length (GUID + length field + payload) in `len_size` bytes.
fn entry(guid: &str, payload: &[u8], len_size: usize) -> Result<Vec<u8>> {
    let mut out = guid_le(guid)?.to_vec();
    let len = 16 + len_size + payload.len();
    out.extend_from_slice(&len.to_le_bytes()[..len_size]);
    out.extend_from_slice(payload);
    Ok(out)
}

/// A table: an entry of the table GUID around `payload`, zero-padded to 16 bytes.
fn table(guid: &str, payload: &[u8], len_size: usize) -> Result<Vec<u8>> {
    let mut t = entry(guid, payload, len_size)?;
    t.resize(t.len().div_ceil(16) * 16, 0);
    Ok(t)
}

/// The kernel hashes table for a kernel, initrd and command line (the command line is
/// hashed with its terminating NUL).
pub fn kernel_hashes(kernel: &[u8], initrd: &[u8], cmdline: &str) -> Result<Vec<u8>> {
    let sha = crate::crypto::sha256;
    let mut cmdline = cmdline.as_bytes().to_vec();
    cmdline.push(0);
    let mut payload = entry(HASH_CMDLINE, &sha(&cmdline), 2)?;
    payload.extend(entry(HASH_INITRD, &sha(initrd), 2)?);
    payload.extend(entry(HASH_KERNEL, &sha(kernel), 2)?);
    table(HASH_TABLE, &payload, 2)
}

/// The efi_secret table of `(GUID, secret)` pairs. It holds the secrets' plaintext: wiped
/// when dropped.
pub fn secret_table<S: AsRef<[u8]>>(secrets: &[(String, S)]) -> Result<Zeroizing<Vec<u8>>> {
    let mut payload = Zeroizing::new(vec![]);
    for (guid, data) in secrets {
        payload.extend(entry(guid, data.as_ref(), 4)?);
    }
    table(SECRET_TABLE, &payload, 4).map(Zeroizing::new)
}

/// The entries of an efi_secret table as a guest reads it: (GUID, secret) in order, or
/// `None` when `table` does not start with the table's GUID or its lengths do not hold.
pub fn read_secret_table(table: &[u8]) -> Option<Vec<(String, &[u8])>> {
    let head = guid_le(SECRET_TABLE).ok()?;
    let word = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(table.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    if table.get(..16)? != head {
        return None;
    }
    let total = word(16)?;
    if total < 20 || total > table.len() {
        return None;
    }
    let mut entries = vec![];
    let mut at = 20;
    while at + 20 <= total {
        let len = word(at + 16)?;
        if len < 20 || at + len > total {
            return None;
        }
        let guid: [u8; 16] = table[at..at + 16].try_into().ok()?;
        entries.push((super::guid::guid_string(&guid), &table[at + 20..at + len]));
        at += len;
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_table_layout() {
        // One 18-byte secret gives a 64-byte table with header length 0x3a (sevctl).
        let t = secret_table(&[(
            "736869e5-84f0-4973-92ec-06879ce3da0b".into(),
            b"MY-LUKS-PASSPHRASE".to_vec(),
        )])
        .unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(u32::from_le_bytes(t[16..20].try_into().unwrap()), 0x3a);
        assert_eq!(u32::from_le_bytes(t[36..40].try_into().unwrap()), 38);
        let entries = read_secret_table(&t).unwrap();
        assert_eq!(
            entries,
            [(
                "736869e5-84f0-4973-92ec-06879ce3da0b".to_string(),
                &b"MY-LUKS-PASSPHRASE"[..]
            )]
        );
        assert_eq!(read_secret_table(&t[..40]), None);
        assert_eq!(read_secret_table(&[0u8; 64]), None);
    }

    #[test]
    fn hashes_table_layout() {
        // 16 + 2 + 3 × 50 = 168, padded to 176 (QEMU's layout).
        let t = kernel_hashes(b"k", b"i", "c").unwrap();
        assert_eq!(t.len(), 176);
        assert_eq!(u16::from_le_bytes(t[16..18].try_into().unwrap()), 168);
    }
}
