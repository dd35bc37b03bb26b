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

#[test]
fn every_corpus_file_runs_without_panicking() {
    let count = replay("corpus");
    // Every target has a seed corpus; an empty replay means the files went missing.
    assert!(count >= harness::TARGETS.len(), "only {count} corpus files");
}

#[test]
fn every_regression_runs_without_panicking() {
    replay("regressions");
}
