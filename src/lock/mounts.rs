//! Detects mounts whose file locks are node-local or absent.
//!
//! Linux NFS clients send flock to the server unless the mount says `nolock`,
//! `local_lock=flock` or `local_lock=all` (`local_lock=posix` keeps only POSIX locks
//! local); Lustre shares flock across nodes only with `-o flock`. On those options a
//! lock taken on one node is invisible on another, with no error. sshfs (`fuse.sshfs`)
//! has no such option: SFTP carries no locks, so the kernel keeps them on the node.

use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo`, reduced to what the check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where the filesystem is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type, such as `ext4`, `nfs4` or `lustre`.
    pub fstype: String,
    /// The device, as `major:minor`.
    pub device: String,
    /// Per-mount and per-superblock options together.
    pub options: Vec<String>,
}

/// Undoes the octal escapes (`\040` for a space) that mountinfo uses in paths.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let value = field
                .get(i + 1..i + 4)
                .and_then(|octal| u8::from_str_radix(octal, 8).ok());
            if let Some(value) = value {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one mountinfo line; `None` for a line that does not have the expected shape.
fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let separator = fields.iter().position(|f| *f == "-")?;
    if separator < 6 || fields.len() < separator + 3 {
        return None;
    }
    let mut options: Vec<String> = fields[5].split(',').map(str::to_owned).collect();
    if let Some(super_options) = fields.get(separator + 3) {
        options.extend(super_options.split(',').map(str::to_owned));
    }
    Some(MountEntry {
        mount_point: PathBuf::from(unescape(fields[4])),
        fstype: fields[separator + 1].to_owned(),
        device: fields[2].to_owned(),
        options,
    })
}

/// The mount that holds `path` (already canonical): the longest mount point that is a
/// prefix of it, the later line winning among equal ones (it is mounted on top).
pub fn find_mount(mountinfo: &str, path: &Path) -> Option<MountEntry> {
    let mut best: Option<MountEntry> = None;
    for entry in mountinfo.lines().filter_map(parse_line) {
        if !path.starts_with(&entry.mount_point) {
            continue;
        }
        let longer = best
            .as_ref()
            .is_none_or(|b| entry.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len());
        if longer {
            best = Some(entry);
        }
    }
    best
}

/// The option of `entry` that makes its locks node-local or absent, if any (for a
/// filesystem whose locks are always node-local, its type).
pub fn node_local_option(entry: &MountEntry) -> Option<String> {
    if entry.fstype == "fuse.sshfs" {
        return Some(entry.fstype.clone());
    }
    let is_nfs = entry.fstype.starts_with("nfs");
    let is_lustre = entry.fstype == "lustre";
    entry
        .options
        .iter()
        .find(|option| {
            // `local_lock=posix` keeps flock going to the server; `flock` and `all`
            // keep it on the node.
            (is_nfs
                && matches!(
                    option.as_str(),
                    "nolock" | "local_lock=flock" | "local_lock=all"
                ))
                || (is_lustre && (option.as_str() == "localflock" || option.as_str() == "noflock"))
        })
        .cloned()
}

/// The mount that holds `path` (resolved first), from `/proc/self/mountinfo`; `None`
/// when the table cannot be read or `path` cannot be resolved.
pub fn mount_of(path: &Path) -> Option<MountEntry> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_of_in(&mountinfo, path)
}

/// As [`mount_of`], with the mount table given as mountinfo text.
pub fn mount_of_in(mountinfo: &str, path: &Path) -> Option<MountEntry> {
    find_mount(mountinfo, &path.canonicalize().ok()?)
}

/// `(fstype, option)` when the mount holding `path` has node-local or absent locks.
/// Unreadable mountinfo yields `None`.
pub fn node_local_locks(path: &Path) -> Option<(String, String)> {
    node_local(mount_of(path)?)
}

/// As [`node_local_locks`], with the mount table given as mountinfo text.
pub fn node_local_locks_in(mountinfo: &str, path: &Path) -> Option<(String, String)> {
    node_local(mount_of_in(mountinfo, path)?)
}

fn node_local(entry: MountEntry) -> Option<(String, String)> {
    node_local_option(&entry).map(|option| (entry.fstype, option))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:50 / /shared rw,relatime shared:30 - nfs4 server:/export rw,vers=4.2,local_lock=none,addr=10.0.0.1
41 22 0:51 / /scratch rw,relatime shared:31 - nfs server:/scratch rw,vers=3,nolock,addr=10.0.0.1
42 22 0:52 / /lustre rw shared:32 - lustre mds@tcp:/fs rw,localflock
43 22 0:53 / /lustre2 rw shared:33 - lustre mds@tcp:/fs rw,flock
44 22 0:54 / /with\\040space rw shared:34 - nfs4 server:/x rw,local_lock=all
45 40 0:55 / /shared/inner rw - nfs4 server:/y rw,local_lock=flock
46 22 0:56 / /posix rw - nfs4 server:/z rw,local_lock=posix
47 22 0:57 / /noflock rw - lustre mds@tcp:/fs rw,noflock
48 22 0:39 / /gluster rw,relatime - fuse.glusterfs vm:gv0 rw,user_id=0,group_id=0,default_permissions,allow_other,max_read=131072
49 22 0:58 / /moose rw,nosuid,nodev,relatime - fuse mfs#10.0.0.2:9421 rw,user_id=0,group_id=0,allow_other
50 22 0:59 / /sshfs rw,nosuid,nodev,relatime - fuse.sshfs user@host:/data rw,user_id=0,group_id=0
";

    fn option_for(path: &str) -> Option<String> {
        let entry = find_mount(SAMPLE, Path::new(path)).expect("a mount holds every path");
        node_local_option(&entry)
    }

    #[test]
    fn coherent_mounts_pass() {
        assert_eq!(option_for("/home/user/data.zarr"), None);
        assert_eq!(option_for("/shared/data.zarr"), None);
        assert_eq!(option_for("/lustre2/data.zarr"), None);
        // POSIX locks stay local, flock still reaches the server.
        assert_eq!(option_for("/posix/data.zarr"), None);
        // GlusterFS and MooseFS send locks to their servers.
        assert_eq!(option_for("/gluster/data.zarr"), None);
        assert_eq!(option_for("/moose/data.zarr"), None);
    }

    #[test]
    fn node_local_mounts_are_named() {
        assert_eq!(option_for("/scratch/d.zarr").as_deref(), Some("nolock"));
        assert_eq!(option_for("/lustre/d.zarr").as_deref(), Some("localflock"));
        assert_eq!(option_for("/noflock/d.zarr").as_deref(), Some("noflock"));
        assert_eq!(option_for("/sshfs/d.zarr").as_deref(), Some("fuse.sshfs"));
        assert_eq!(
            option_for("/with space/d.zarr").as_deref(),
            Some("local_lock=all")
        );
        assert_eq!(
            option_for("/shared/inner/d.zarr").as_deref(),
            Some("local_lock=flock")
        );
    }

    #[test]
    fn prefix_must_be_a_whole_component() {
        let entry = find_mount(SAMPLE, Path::new("/sharedx/d.zarr")).unwrap();
        assert_eq!(entry.mount_point, PathBuf::from("/"));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = "garbage\n1 2 3\n22 1 8:1 / / rw - ext4 /dev/sda1 rw\n";
        let entry = find_mount(text, Path::new("/x")).unwrap();
        assert_eq!(entry.fstype, "ext4");
        assert_eq!(entry.device, "8:1");
    }
}
