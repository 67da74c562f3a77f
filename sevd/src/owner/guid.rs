//! GUIDs as the firmware tables store them: EFI's byte order (the first three fields
//! little-endian).

/// A string that is not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")]
pub struct BadGuid(pub String);

/// The 16 bytes of `s` (hyphenated, 36 characters) in EFI byte order.
pub fn guid_le(s: &str) -> Result<[u8; 16], BadGuid> {
    // uuid also reads other spellings (braces, URNs, no hyphens); the tables take one.
    if s.len() != 36 {
        return Err(BadGuid(s.to_string()));
    }
    uuid::Uuid::try_parse(s)
        .map(|u| u.to_bytes_le())
        .map_err(|_| BadGuid(s.to_string()))
}

/// The hyphenated spelling of 16 bytes in EFI byte order.
pub fn guid_string(bytes: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes_le(*bytes).hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efi_byte_order() {
        // The efi_secret table's GUID and its bytes as the table stores them.
        let g = guid_le("1e74f542-71dd-4d66-963e-ef4287ff173b").unwrap();
        assert_eq!(hex::encode(g), "42f5741edd71664d963eef4287ff173b");
        assert_eq!(guid_string(&g), "1e74f542-71dd-4d66-963e-ef4287ff173b");
        assert!(guid_le("1e74f542-71dd-4d66-963e-ef4287ff173").is_err());
        assert!(guid_le("1e74f542-71dd-4d66-963e-ef4287ff17zz").is_err());
        assert!(guid_le("{1e74f542-71dd-4d66-963e-ef4287ff173b}").is_err());
    }
}
