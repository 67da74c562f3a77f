//! The certificate buffer of an extended guest request (GHCB spec; snp.md §8.3): a table of
//! 24-byte `{GUID, offset, length}` entries ended by an all-zero entry, then the
//! certificates, each entry's offset counted from the start of the buffer. It is the file
//! `snphost import` writes (the kernel's format) and what `/dev/sev-guest` hands a guest.

/// `SEV_FW_BLOB_MAX_SIZE`: the largest certificate buffer the guest's driver takes.
pub const MAX_LEN: usize = 0x4000;
/// One entry.
pub const ENTRY_LEN: usize = 24;

/// One entry of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The GUID, in the RFC 4122 byte order of its string (as the tools read it).
    pub guid: [u8; 16],
    /// Where the certificate starts in the buffer.
    pub offset: u32,
    /// Its length.
    pub length: u32,
}

impl Entry {
    /// The certificate's bytes in `buf`, the buffer the entry was read from.
    pub fn bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.offset as usize..self.offset as usize + self.length as usize]
    }
}

/// Why a buffer is not a certificate table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertTableError {
    /// Longer than any guest could take.
    #[error("{0} bytes: a guest takes at most {MAX_LEN} (SEV_FW_BLOB_MAX_SIZE)")]
    TooLong(usize),
    /// No all-zero entry ends the table.
    #[error("no all-zero entry ends the table")]
    Unterminated,
    /// The table holds no certificate.
    #[error("the table holds no certificate")]
    Empty,
    /// An entry's certificate overlaps the table or runs past the buffer's end.
    #[error("entry {index}: {length} bytes at {offset} are not after the table and within the {len} bytes")]
    Outside {
        /// The entry's place in the table, from 0.
        index: usize,
        /// Its offset.
        offset: u32,
        /// Its length.
        length: u32,
        /// The buffer's length.
        len: usize,
    },
    /// An entry with a certificate of no bytes, or with the null GUID and a certificate.
    #[error("entry {0} is empty or has the null GUID")]
    BadEntry(usize),
}

/// The entries of the table at the start of `buf`, each checked to point at bytes after the
/// table and within `buf` (as go-sev-guest requires; Linux looks only for the end).
pub fn entries(buf: &[u8]) -> Result<Vec<Entry>, CertTableError> {
    if buf.len() > MAX_LEN {
        return Err(CertTableError::TooLong(buf.len()));
    }
    let mut out = Vec::new();
    for (index, raw) in buf.chunks(ENTRY_LEN).enumerate() {
        if raw.len() < ENTRY_LEN {
            break;
        }
        let u32_at =
            |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&raw[..16]);
        let entry = Entry {
            guid,
            offset: u32_at(16),
            length: u32_at(20),
        };
        if raw.iter().all(|b| *b == 0) {
            let table = (index + 1) * ENTRY_LEN;
            for (i, e) in out.iter().enumerate() {
                let Entry { offset, length, .. } = *e;
                let end = offset as usize + length as usize;
                if (offset as usize) < table || end > buf.len() {
                    return Err(CertTableError::Outside {
                        index: i,
                        offset,
                        length,
                        len: buf.len(),
                    });
                }
            }
            return if out.is_empty() {
                Err(CertTableError::Empty)
            } else {
                Ok(out)
            };
        }
        if entry.length == 0 || entry.guid == [0; 16] {
            return Err(CertTableError::BadEntry(index));
        }
        out.push(entry);
    }
    Err(CertTableError::Unterminated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[([u8; 16], u32, u32)], tail: usize) -> Vec<u8> {
        let mut out = vec![];
        for (guid, offset, length) in entries {
            out.extend_from_slice(guid);
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&length.to_le_bytes());
        }
        out.extend_from_slice(&[0; ENTRY_LEN]);
        out.resize(out.len() + tail, 0xaa);
        out
    }

    #[test]
    fn a_good_table_reads_back() {
        let buf = table(&[([1; 16], 72, 10), ([2; 16], 82, 5)], 15);
        let e = entries(&buf).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].bytes(&buf), &[0xaa; 5]);
    }

    #[test]
    fn bad_tables_are_refused() {
        assert_eq!(
            entries(&table(&[([1; 16], 24, 10)], 10)),
            Err(CertTableError::Outside {
                index: 0,
                offset: 24,
                length: 10,
                len: 58
            })
        );
        assert!(matches!(
            entries(&table(&[([1; 16], 48, 11)], 10)),
            Err(CertTableError::Outside { .. })
        ));
        assert_eq!(entries(&table(&[], 0)), Err(CertTableError::Empty));
        assert_eq!(
            entries(&table(&[([1; 16], 48, 0)], 0)),
            Err(CertTableError::BadEntry(0))
        );
        assert_eq!(entries(&[1; 30]), Err(CertTableError::Unterminated));
        assert_eq!(entries(b"-----BEGIN"), Err(CertTableError::Unterminated));
        assert_eq!(
            entries(&vec![0; MAX_LEN + 1]),
            Err(CertTableError::TooLong(MAX_LEN + 1))
        );
    }
}
