//! Small parsers and file helpers shared by the commands, with sevctl's conventions.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use base64::Engine;

use crate::error::{input, Result};

/// Standard base64.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard base64.
pub fn unb64(what: &str, s: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| input(format!("{what}: not base64: {e}")))
}

/// sevctl's `parse_base64_or_path`: a path if one exists, else base64.
pub fn base64_or_path(what: &str, val: &str) -> Result<Vec<u8>> {
    if Path::new(val).exists() {
        std::fs::read(val).map_err(|e| input(format!("{what}: {val}: {e}")))
    } else {
        unb64(what, val)
    }
}

/// sevctl's `parse_hex_or_int`: `0x…` hex or decimal.
pub fn hex_or_int(what: &str, val: &str) -> Result<u32> {
    let r = match val.to_ascii_lowercase().strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => val.parse(),
    };
    r.map_err(|_| input(format!("{what}={val}: value must be int or hex")))
}

/// Reads a file the user named.
pub fn read(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| input(format!("{what}: {}: {e}", path.display())))
}

/// A 64-bit number written as hex (with 0x) or decimal.
pub fn hex_or_int64(what: &str, val: &str) -> Result<u64> {
    let v = val.trim();
    let r = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    r.map_err(|_| {
        input(format!(
            "{what}: expected a number (decimal or 0x hex), got {val:?}"
        ))
    })
}

/// Reads a file holding key material (a key, a TEK or TIK, a secret): the buffer is wiped
/// when dropped.
pub fn read_secret(what: &str, path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    read(what, path).map(zeroize::Zeroizing::new)
}

/// Writes an output file; secrets (keys) get mode 0600. Outputs are regular files only, each
/// replaced atomically, so an existing file never holds half an output nor keeps a laxer
/// mode. A symlink, FIFO, device or directory at the destination is refused, never written
/// through: a key must not land where a link points or leak into a pipe.
pub fn write(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    let mode = if secret { 0o600 } else { 0o644 };
    let fail = |e: std::io::Error| input(format!("{}: {e}", path.display()));
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        let t = meta.file_type();
        let kind = if t.is_symlink() {
            Some("a symbolic link")
        } else if t.is_fifo() {
            Some("a FIFO")
        } else if t.is_char_device() || t.is_block_device() {
            Some("a device")
        } else if t.is_dir() {
            Some("a directory")
        } else if t.is_socket() {
            Some("a socket")
        } else {
            None
        };
        if let Some(kind) = kind {
            return Err(input(format!(
                "{}: is {kind}; sevctl writes its output files only as regular files",
                path.display()
            )));
        }
    }
    sevd::files::write_atomic(path, bytes, mode).map_err(fail)
}

/// A 16-byte value from a file, or base64.
pub fn key16(what: &str, val: &str) -> Result<zeroize::Zeroizing<[u8; 16]>> {
    let bytes = zeroize::Zeroizing::new(base64_or_path(what, val)?);
    let key: [u8; 16] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| input(format!("{what}: {} bytes, expected 16", bytes.len())))?;
    Ok(zeroize::Zeroizing::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_sevctl_reads_them() {
        assert_eq!(hex_or_int("--policy", "0x05").unwrap(), 5);
        assert_eq!(hex_or_int("--policy", "40").unwrap(), 40);
        assert!(hex_or_int("--policy", "five").is_err());
    }

    #[test]
    fn a_key_written_over_an_open_file_gets_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("tek.bin");
        std::fs::write(&key, b"old contents, longer than the key").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&key, &[7; 16], true).unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), [7; 16]);
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn outputs_are_never_written_through_links_pipes_or_devices() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"precious").unwrap();
        let link = dir.path().join("tek.bin");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for (path, kind) in [
            (link.as_path(), "symbolic link"),
            (fifo.as_path(), "FIFO"),
            (Path::new("/dev/null"), "device"),
            (dir.path(), "directory"),
        ] {
            let e = write(path, &[7; 16], true).unwrap_err().to_string();
            assert!(e.contains(kind) && e.contains("regular files"), "{e}");
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
