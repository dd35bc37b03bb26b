//! Replays every file of the fuzz corpora (`fuzz/corpus/<target>/`) and of the
//! regressions the fuzzers found (`fuzz/regressions/<target>/`) through the fuzz
//! targets' bodies: an ordinary `cargo test` guards what fuzzing established.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

fn replay(folder: &str) -> usize {
    let mut count = 0;
    for target in harness::TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz")
            .join(folder)
            .join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).expect("read a corpus file");
            harness::run(target, &data);
            count += 1;
        }
    }
    count
}

/// One test, so that no other thread uses the targets' scratch folder when it is
/// removed at the end.
#[test]
fn every_corpus_file_and_regression_runs_without_panicking() {
    let corpus = replay("corpus");
    // Every target has a seed corpus; an empty replay means the files went missing.
    assert!(
        corpus >= harness::TARGETS.len(),
        "only {corpus} corpus files"
    );
    replay("regressions");
    harness::remove_scratch();
}
