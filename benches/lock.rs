//! Lock benchmarks: uncontended acquire+release and re-entrant nesting, beside raw
//! flock measured in the same run. (The cross-process handoff is measured by
//! `spatialzarr bench --only lock_handoff`.)
//!
//! Run: `cargo bench --bench lock`.

use std::fs::{File, OpenOptions};
use std::path::Path;

use criterion::{Criterion, criterion_group};
use spatialzarr::lock::{DatasetLock, LockOptions};

fn open_raw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open raw lock file")
}

fn uncontended(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let lock = DatasetLock::open(dir.path(), LockOptions::default()).unwrap();
    let raw = open_raw(&dir.path().join("raw"));
    let mut group = c.benchmark_group("uncontended");
    group.bench_function("raw_flock_exclusive", |b| {
        b.iter(|| {
            raw.lock().unwrap();
            raw.unlock().unwrap();
        })
    });
    group.bench_function("write", |b| b.iter(|| drop(lock.write(None).unwrap())));
    group.bench_function("raw_flock_shared", |b| {
        b.iter(|| {
            raw.lock_shared().unwrap();
            raw.unlock().unwrap();
        })
    });
    group.bench_function("read", |b| b.iter(|| drop(lock.read(None).unwrap())));
    let _outer = lock.write(None).unwrap();
    group.bench_function("nested_write_under_write", |b| {
        b.iter(|| drop(lock.write(None).unwrap()))
    });
    group.bench_function("nested_read_under_write", |b| {
        b.iter(|| drop(lock.read(None).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, uncontended);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
