//! Replays each target's committed corpus (`corpus/<target>/`) through it, as a plain test on
//! stable without libFuzzer: every input the fuzzer kept, and every regression input of a
//! fixed defect, must pass the target's oracle.

use std::path::Path;

#[test]
fn every_corpus_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut total = 0;
    for (name, target) in sev_fuzz::TARGETS {
        let dir = root.join(name);
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
        total += inputs.len();
    }
    println!("{total} inputs replayed");
}
