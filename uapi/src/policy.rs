//! The SEV guest policy (AMD SEV API, pub. 55766, §3 "Guest Policy"; firmware-semantics.md §3):
//! one table of the named bits, read by the firmware and by the manifest parser alike.

/// Debugging (DBG_DECRYPT, DBG_ENCRYPT) is disallowed.
pub const NODBG: u32 = 1 << 0;
/// Key sharing with other guests is disallowed.
pub const NOKS: u32 = 1 << 1;
/// SEV-ES is required.
pub const ES: u32 = 1 << 2;
/// Sending the guest to another platform is disallowed.
pub const NOSEND: u32 = 1 << 3;
/// The guest may be sent only within the domain (same OCA).
pub const DOMAIN: u32 = 1 << 4;
/// The guest may be sent only to SEV-capable platforms.
pub const SEV: u32 = 1 << 5;
/// Bits 15:6, which must be zero.
pub const RESERVED: u32 = 0xffc0;

/// The named bits, by their lower-case names (the manifest's `policy.flags`).
pub const FLAGS: &[(&str, u32)] = &[
    ("nodbg", NODBG),
    ("noks", NOKS),
    ("es", ES),
    ("nosend", NOSEND),
    ("domain", DOMAIN),
    ("sev", SEV),
];

/// The bit named `name` (any case).
pub fn flag(name: &str) -> Option<u32> {
    FLAGS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, b)| *b)
}

/// The names, in bit order.
pub fn names() -> Vec<&'static str> {
    FLAGS.iter().map(|(n, _)| *n).collect()
}

/// The minimum firmware API a policy asks for: (major, minor) from bits 23:16 and 31:24.
pub fn api(policy: u32) -> (u8, u8) {
    ((policy >> 16) as u8, (policy >> 24) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_the_bits_in_order() {
        for (i, (_, bit)) in FLAGS.iter().enumerate() {
            assert_eq!(*bit, 1 << i);
        }
        assert_eq!(FLAGS.iter().fold(0, |a, (_, b)| a | b) & RESERVED, 0);
        assert_eq!(flag("NoDbg"), Some(NODBG));
        assert_eq!(flag("es2"), None);
        assert_eq!(api(0x0203_0005), (3, 2));
    }
}
