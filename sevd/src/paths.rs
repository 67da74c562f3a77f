//! The names the daemon, the embedded platform and `sevctl` agree on: the files of a state
//! directory, and where the VM node of a `sev` node is (DESIGN.md).

use std::path::{Path, PathBuf};

/// The chip identity (seed, ARK, ASK, CEK).
pub const CHIP_FILE: &str = "chip.bin";
/// The firmware's non-volatile store.
pub const NV_FILE: &str = "nv.bin";
/// The SNP half of the store: committed TCB and version, SNP_CONFIG.
pub const SNP_NV_FILE: &str = "snp_nv.bin";
/// The key server's ARK and ASK with their private keys (this project's stand-in for AMD's).
pub const KDS_FILE: &str = "kds.bin";
/// The public ASK ‖ ARK, for `sevctl verify --ca` and other owner tools. The daemon also
/// publishes it beside its nodes.
pub const CA_FILE: &str = "ask_ark.cert";
/// Beside the nodes: one line saying what answers them (`sevctl ok` reads it).
pub const BACKEND_FILE: &str = "backend";
/// Beside the nodes: the emulated part (`crate::part::Part`) as JSON, which `sevctl exec`
/// shows programs as their CPU.
pub const PART_FILE: &str = "part";
/// The daemon's state directory unless `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/sevd";

/// The VM node beside a `sev` node: `/dev/sev` → `/dev/sev-vm`, `<mount>/sev` →
/// `<mount>/sev-vm`.
pub fn vm_node(sev: &Path) -> PathBuf {
    let name = sev
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sev".into());
    sev.with_file_name(format!("{name}-vm"))
}

/// The source of every mount a daemon whose nodes and files are in `dir` makes: `sevd:DIR`.
/// A node mounted elsewhere (a drop-in such as `/dev/sev`, or a bind of one) keeps it, so
/// a client that reaches any node finds the files.
pub fn mount_source(dir: &Path) -> String {
    format!("{}:{}", crate::daemon::FSNAME, dir.display())
}

/// The directory a daemon publishes its files in (ask_ark.cert, backend, part, the VCEK
/// chain), asked of the node at `sev` itself: the one its mount source names, else the
/// directory the node is in.
pub fn published_dir(sev: &Path) -> PathBuf {
    let node = std::fs::canonicalize(sev).unwrap_or_else(|_| sev.to_path_buf());
    let named = vfs::fuse_source(&node).ok().flatten().and_then(|source| {
        let dir = source
            .strip_prefix(crate::daemon::FSNAME)?
            .strip_prefix(':')?;
        Some(PathBuf::from(dir))
    });
    named.unwrap_or_else(|| {
        node.parent()
            .map_or_else(|| node.clone(), Path::to_path_buf)
    })
}

/// The ASK ‖ ARK a daemon publishes beside its `sev` node.
pub fn published_ca(sev: &Path) -> PathBuf {
    published_dir(sev).join(CA_FILE)
}
