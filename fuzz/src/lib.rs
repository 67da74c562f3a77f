//! The fuzz targets: one function per target, each taking the fuzzer's bytes. The binaries in
//! `fuzz_targets/` hand them to libFuzzer (`scripts/fuzz.sh`); `tests/replay.rs` runs the
//! committed corpus through them as a plain test (`scripts/test.sh`).
//!
//! A target panics only when an oracle finds a defect; every refusal of bad input is an `Err`
//! the target expects.

mod bytes;
mod firmware;
mod nodes;
mod stream;
mod text;
mod wire;

pub use firmware::firmware;
pub use nodes::{sev_node, vm_node};
pub use stream::migration_stream;
pub use text::{manifest, policy};
pub use wire::uapi_wire;

/// A fuzz target.
pub type Target = fn(&[u8]);

/// Every target by name, as `scripts/fuzz.sh` and the corpus directories name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("uapi_wire", uapi_wire),
    ("manifest", manifest),
    ("policy", policy),
    ("firmware", firmware),
    ("sev_node", sev_node),
    ("vm_node", vm_node),
    ("migration_stream", migration_stream),
];

mod chip {
    use std::path::PathBuf;
    use std::sync::OnceLock;
    use std::time::Duration;

    use sevd::firmware::chip::Chip;
    use sevd::firmware::nv::MemStorage;
    use sevd::firmware::random::OsRandom;
    use sevd::firmware::{Firmware, FirmwareConfig};
    use sevd::state::StateDir;

    use crate::firmware::SharedNv;

    /// The chip every target's firmware runs on, made once (RSA-4096 generation takes
    /// seconds) in `SEV_FUZZ_STATE`, else `fuzz/target/chip-fixture`; the test suite points
    /// it at the suite's shared chip.
    pub fn chip() -> Chip {
        static CHIP: OnceLock<Vec<u8>> = OnceLock::new();
        let bytes = CHIP.get_or_init(|| {
            let dir = std::env::var_os("SEV_FUZZ_STATE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/chip-fixture"))
                });
            let state = StateDir::open_waiting(&dir, Duration::from_secs(300))
                .unwrap_or_else(|e| panic!("fuzz chip state {}: {e}", dir.display()));
            state
                .load_or_create_chip((1, 55), None, None)
                .expect("the fuzz chip")
                .encode()
                .to_vec()
        });
        Chip::decode(bytes).expect("the fuzz chip decodes")
    }

    /// A flash holding this chip's platform keys, as after a first INIT. Starting from it
    /// spares every input three key generations that would slow the fuzzer tenfold; PEK_GEN,
    /// PDH_GEN and PLATFORM_RESET still reach the generating paths.
    pub fn stored_nv() -> MemStorage {
        static NV: OnceLock<Vec<u8>> = OnceLock::new();
        let data = NV.get_or_init(|| {
            let nv = SharedNv::default();
            let mut fw = Firmware::new(
                chip(),
                Box::new(nv.clone()),
                FirmwareConfig::default(),
                Box::new(OsRandom),
            )
            .expect("firmware");
            fw.init(0).expect("INIT");
            nv.bytes().expect("INIT stored the keys")
        });
        MemStorage {
            data: Some(data.clone()),
            quarantined: None,
        }
    }
}
