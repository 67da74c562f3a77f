//! Replays each target's committed corpus (`corpus/<target>/`) through it, as a plain test on
//! stable without libFuzzer: every input the fuzzer kept, and every regression input of a
//! fixed defect, must pass the target's oracle.

use std::path::Path;

fn replay(name: &str) {
    let (_, target) = sev_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a target of that name");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{name}: empty corpus");
    for input in &inputs {
        let data = std::fs::read(input).expect("corpus input");
        let run = std::panic::catch_unwind(|| target(&data));
        assert!(run.is_ok(), "{name}: {} fails", input.display());
    }
    println!("{name}: {} inputs", inputs.len());
}

macro_rules! replay_tests {
    ($($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name));
            }
        )*
        #[test]
        fn every_target_has_a_replay() {
            let mine = [$(stringify!($name)),*];
            for (name, _) in sev_fuzz::TARGETS {
                assert!(mine.contains(name), "{name} has no replay test");
            }
        }
    };
}

replay_tests!(
    uapi_wire,
    manifest,
    policy,
    firmware,
    sev_node,
    vm_node,
    migration_stream
);
