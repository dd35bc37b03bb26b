//! What [`FolderSync::Auto`](super::FolderSync::Auto) decides by: whether the
//! filesystem holding a dataset makes creates, renames and removals durable in the
//! order they were made, each fsync of a file making every earlier change durable
//! (property O1 of spec/commit-protocol.md §11.1).
//!
//! Only a journal gives that order: xfs always logs its metadata; ext3 and ext4 do
//! when made with a journal, which the kernel tells in
//! `/sys/fs/ext4/<device>/journal_task` (`<none>` without one) and by a
//! `/proc/fs/jbd2/<device>-<inode>` folder. A mount with write barriers turned off
//! (`nobarrier`, `barrier=0`) lets the disk reorder the journal's writes. Anything
//! not known to order is taken not to.

use std::path::Path;

use crate::lock::mounts::MountEntry;

/// Filesystem types whose metadata journal, when present, commits every namespace
/// change in order.
const JOURNALED_TYPES: [&str; 3] = ["ext3", "ext4", "xfs"];

/// What the kernel says of an ext3/ext4 filesystem's journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journal {
    /// The filesystem has a journal.
    Present,
    /// The filesystem was made (or mounted) without a journal.
    Absent,
    /// Neither sysfs nor procfs answered.
    Unknown,
}

/// The facts `auto` decides by, of the mount holding a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOrder {
    /// Filesystem type, such as `ext4`, `xfs` or `nfs4`.
    pub fstype: String,
    /// Whether the mount turns write barriers off (`nobarrier`, `barrier=0`).
    pub no_barriers: bool,
    /// The journal of an ext3/ext4 filesystem ([`Journal::Unknown`] for other types).
    pub journal: Journal,
}

impl MountOrder {
    /// The facts of the mount `entry`, asking the kernel about its journal.
    pub fn of(entry: &MountEntry) -> Self {
        let ext = matches!(entry.fstype.as_str(), "ext3" | "ext4");
        Self {
            fstype: entry.fstype.clone(),
            no_barriers: entry
                .options
                .iter()
                .any(|o| o == "nobarrier" || o == "barrier=0"),
            journal: if ext {
                ext_journal(&entry.device)
            } else {
                Journal::Unknown
            },
        }
    }

    /// The facts of the mount holding `root`; `None` when the mount table cannot be
    /// read or `root` cannot be resolved.
    pub fn at(root: &Path) -> Option<Self> {
        crate::lock::mounts::mount_of(root).map(|entry| Self::of(&entry))
    }

    /// Whether namespace changes are durable in order here (O1).
    pub fn orders(&self) -> bool {
        if self.no_barriers || !JOURNALED_TYPES.contains(&self.fstype.as_str()) {
            return false;
        }
        self.fstype == "xfs" || self.journal == Journal::Present
    }
}

/// Whether the ext3/ext4 filesystem on block device `device` (`major:minor`) has a
/// journal. Asked anew each time: after an unmount the same device number can hold
/// another filesystem (loop devices reuse theirs), or the same one changed by
/// `tune2fs`.
fn ext_journal(device: &str) -> Journal {
    let Some(name) = block_device_name(device) else {
        return Journal::Unknown;
    };
    let task = std::fs::read_to_string(format!("/sys/fs/ext4/{name}/journal_task")).ok();
    journal_from(&name, task.as_deref(), || {
        std::fs::read_dir("/proc/fs/jbd2")
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// The kernel's name of block device `device` (`major:minor`), as sysfs and procfs
/// name the filesystem on it: the last component of `/sys/dev/block/<device>`.
fn block_device_name(device: &str) -> Option<String> {
    let link = std::fs::read_link(format!("/sys/dev/block/{device}")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// Decides the journal of device `name` from the text of its `journal_task` (if
/// readable): `<none>` or a process id; anything else, or no text, is settled by the
/// folder names under `/proc/fs/jbd2` (a `<name>-<inode>` folder: a journal).
/// The folder names are listed (`jbd2`) only when `journal_task` does not settle it.
fn journal_from(
    name: &str,
    journal_task: Option<&str>,
    jbd2: impl FnOnce() -> Vec<String>,
) -> Journal {
    match journal_task.map(str::trim) {
        Some("<none>") => Journal::Absent,
        Some(pid) if pid.parse::<u64>().is_ok() => Journal::Present,
        _ => {
            let prefix = format!("{name}-");
            if jbd2().iter().any(|entry| entry.starts_with(&prefix)) {
                Journal::Present
            } else {
                Journal::Unknown
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(fstype: &str, no_barriers: bool, journal: Journal) -> MountOrder {
        MountOrder {
            fstype: fstype.to_owned(),
            no_barriers,
            journal,
        }
    }

    #[test]
    fn only_a_journal_with_barriers_orders() {
        assert!(facts("ext4", false, Journal::Present).orders());
        assert!(facts("ext3", false, Journal::Present).orders());
        assert!(facts("xfs", false, Journal::Unknown).orders());
        assert!(!facts("ext4", false, Journal::Absent).orders());
        assert!(!facts("ext4", false, Journal::Unknown).orders());
        assert!(!facts("ext4", true, Journal::Present).orders());
        assert!(!facts("xfs", true, Journal::Unknown).orders());
        for other in ["btrfs", "nfs4", "lustre", "fuse.glusterfs", "tmpfs", "ext2"] {
            assert!(!facts(other, false, Journal::Present).orders(), "{other}");
        }
    }

    #[test]
    fn the_journal_is_read_from_sysfs_then_procfs() {
        let none = Vec::new;
        assert_eq!(journal_from("vda", Some("<none>\n"), none), Journal::Absent);
        assert_eq!(journal_from("vda", Some("412\n"), none), Journal::Present);
        let jbd2 = || vec!["sda1-8".to_owned(), "dm-0-8".to_owned()];
        assert_eq!(journal_from("dm-0", None, jbd2), Journal::Present);
        assert_eq!(
            journal_from("sda1", Some("garbled"), jbd2),
            Journal::Present
        );
        // `sda` is not `sda1`: a prefix must end at the dash.
        assert_eq!(journal_from("sda", None, jbd2), Journal::Unknown);
        assert_eq!(journal_from("vda", None, none), Journal::Unknown);
    }

    #[test]
    fn barrier_options_are_read_from_the_mount() {
        let entry = |options: &[&str]| MountEntry {
            mount_point: "/data".into(),
            fstype: "xfs".to_owned(),
            device: "0:0".to_owned(),
            options: options.iter().map(|o| (*o).to_owned()).collect(),
        };
        assert!(MountOrder::of(&entry(&["rw", "relatime"])).orders());
        assert!(!MountOrder::of(&entry(&["rw", "nobarrier"])).orders());
        assert!(!MountOrder::of(&entry(&["rw", "barrier=0"])).orders());
    }
}
