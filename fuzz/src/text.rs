//! The text files an operator or a guest owner writes: sevctl's YAML manifest and sevd's
//! access policy. Malformed text gets an error, never a panic.

use std::path::Path;

/// `Manifest::parse` on arbitrary text; files it names are looked up under a directory that
/// does not exist, so the parser's own checks are what is exercised.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = sevctl_cli::manifest::Manifest::parse(text, Path::new("/nonexistent/sev-fuzz"));
}

/// The daemon's policy file (`sevd --policy`), as a SIGHUP reload reads it.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = sevd::access::Policy::parse(text, Path::new("policy.yaml"));
}
