//! `FolderSync::Auto` on real filesystems: small ext4 images mounted through loop
//! devices, one made with a journal and one without, and the journaled one again
//! without write barriers. Only the first lets commits leave folders to the
//! filesystem's order (spec/commit-protocol.md §11.1).
//!
//! Mounting needs root, `mkfs.ext4` and loop devices. Where they are missing the test
//! prints `SKIP` (on stderr) and returns; under CI (`CI=true`) it fails instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use spatialzarr::{Dataset, DatasetOptions, FolderSync};

/// A filesystem image mounted through a loop device; unmounted when dropped.
struct Mounted {
    point: PathBuf,
}

impl Mounted {
    /// Makes an ext4 image of 32 MiB with `mkfs_args` and mounts it with `options`.
    fn ext4(dir: &Path, name: &str, mkfs_args: &[&str], options: &str) -> Result<Self, String> {
        let image = dir.join(format!("{name}.img"));
        let point = dir.join(name);
        std::fs::create_dir_all(&point).map_err(|e| e.to_string())?;
        let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(32 << 20).map_err(|e| e.to_string())?;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .args(mkfs_args)
            .arg(&image))?;
        run(Command::new("mount")
            .args(["-o", &format!("loop,{options}")])
            .arg(&image)
            .arg(&point))?;
        Ok(Self { point })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.point).status();
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    match command.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("{command:?} could not start: {e}")),
    }
}

/// Whether a new dataset on `mount`, opened with `FolderSync::Auto` (whatever the
/// environment says), leaves folders to the filesystem's order.
fn auto_orders(mount: &Mounted) -> bool {
    let root = mount.point.join("d.zarr");
    let options = DatasetOptions {
        folder_sync: Some(FolderSync::Auto),
        ..DatasetOptions::default()
    };
    let ds = Dataset::create(&root, options).expect("create a dataset");
    assert_eq!(
        ds.trusts_folder_order(),
        FolderSync::Auto.orders_at(&root),
        "the dataset and FolderSync::orders_at disagree on {}",
        root.display()
    );
    ds.trusts_folder_order()
}

/// Whether this run is CI's (`CI=true` or `CI=1`), where a test that cannot run fails.
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Mounts each image in turn, unmounting the one before, so that the loop devices'
/// numbers are reused: what `auto` learnt of one filesystem must not stick to the
/// next one on the same device number.
#[test]
fn auto_orders_only_a_journaled_ext4_mounted_with_barriers() {
    let dir = tempfile::tempdir().expect("a scratch folder");
    let cases: [(&str, &[&str], &str, bool); 4] = [
        ("journaled", &[], "rw", true),
        ("bare", &["-O", "^has_journal"], "rw", false),
        ("unbarriered", &[], "nobarrier", false),
        ("journaled_again", &[], "rw", true),
    ];
    for (name, mkfs_args, options, ordered) in cases {
        let mount = match Mounted::ext4(dir.path(), name, mkfs_args, options) {
            Ok(mount) => mount,
            Err(reason) if under_ci() => {
                panic!("cannot mount the test filesystems under CI: {reason}")
            }
            Err(reason) => {
                // Straight to the process's stderr: the harness captures the print
                // macros, and a skip must be seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIP auto_orders_only_a_journaled_ext4_mounted_with_barriers: {reason}"
                );
                return;
            }
        };
        assert_eq!(auto_orders(&mount), ordered, "{name} ({options})");
        // An explicit mode wins over what the mount says.
        assert!(FolderSync::Ordered.orders_at(&mount.point), "{name}");
        assert!(!FolderSync::Strict.orders_at(&mount.point), "{name}");
    }
}
