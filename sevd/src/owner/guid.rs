//! GUIDs as the firmware tables store them: EFI's byte order (the first three fields
//! little-endian).

/// A string that is not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")]
pub struct BadGuid(pub String);

/// The 16 bytes of `s` in EFI byte order.
pub fn guid_le(s: &str) -> Result<[u8; 16], BadGuid> {
    let err = || BadGuid(s.to_string());
    let parts: Vec<&str> = s.split('-').collect();
    if parts.iter().map(|p| p.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
        return Err(err());
    }
    let raw = hex::decode(parts.concat()).map_err(|_| err())?;
    let mut out = [0u8; 16];
    out.copy_from_slice(&raw);
    out[..4].reverse();
    out[4..6].reverse();
    out[6..8].reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efi_byte_order() {
        let g = guid_le("1e74f542-71dd-4d66-963e-ef4287ff173b").unwrap();
        assert_eq!(hex::encode(g), "42f5741edd71664d963eef4287ff173b");
        assert!(guid_le("1e74f542-71dd-4d66-963e-ef4287ff173").is_err());
        assert!(guid_le("1e74f542-71dd-4d66-963e-ef4287ff17zz").is_err());
    }
}
