//! Durability levels: what a commit survives once it is acknowledged.
//!
//! [`Durability::Full`] fsyncs every file a commit depends on before the commit
//! returns, and the folders whose entries it changed unless the filesystem makes
//! those changes durable in order ([`FolderSync`], §11.1): the commit survives a
//! power loss. [`Durability::Process`] makes no
//! fsync at all: the commit survives the crash or `kill -9` of any process at any
//! instant (the kernel's page cache outlives processes, and the commit protocol
//! leaves the old state or the new one at every instant), but a power loss or a
//! kernel crash may lose the commits of the last seconds and leave torn or empty
//! files (spec/commit-protocol.md §11).

use std::fmt;
use std::str::FromStr;

use super::ordering::MountOrder;

/// What [`Durability::Process`] guarantees and what it risks, as the documentation
/// and the CLI help state it.
pub const PROCESS_GUARANTEE: &str = "A commit survives the crash or kill -9 of any process at any instant (the dataset is left in the state before it or after it, never a mix), but a power loss or a kernel crash may lose the commits of the last seconds and leave the dataset inconsistent, with torn or empty files: after one, run `spatialzarr check` and write again what it reports.";

/// The environment variable that chooses the level when the options do not.
pub const DURABILITY_ENV: &str = "SPATIALZARR_DURABILITY";

/// The value of the environment variable `var` parsed as a `T`: `None` when it is
/// unset or blank; an error naming the variable, the accepted `choices` and what
/// unsetting it gives (`unset`) when it holds anything else.
fn env_choice<T>(var: &str, choices: &str, unset: &str) -> Result<Option<T>, crate::Error>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match std::env::var(var) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => value.parse().map(Some).map_err(|e| {
            crate::Error::InvalidInput(format!("{var}={value}: {e} (or unset it for {unset})"))
        }),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(crate::Error::InvalidInput(format!(
            "{var} is not valid UTF-8: use {choices}"
        ))),
    }
}

/// What an acknowledged commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Durability {
    /// Every file a commit depends on is fsynced before it returns, and every folder
    /// unless the filesystem orders namespace changes ([`FolderSync`]): it survives a
    /// power loss or a kernel crash (the default).
    #[default]
    Full,
    /// No fsync anywhere: a commit survives the crash or `kill -9` of any process at
    /// any instant, but a power loss or a kernel crash may lose the commits of the
    /// last seconds and leave torn or empty files.
    Process,
}

/// A durability level that is not `full` or `process`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown durability level {0:?}: use full or process")]
pub struct UnknownDurability(pub String);

impl Durability {
    /// The level's name as the CLI and the environment spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Full => "full",
            Durability::Process => "process",
        }
    }

    /// Whether this level fsyncs.
    pub fn syncs(self) -> bool {
        self == Durability::Full
    }

    /// The level `SPATIALZARR_DURABILITY` asks for: `None` when it is unset or empty,
    /// an error naming the variable when it holds anything but `full` or `process`.
    pub fn from_env() -> Result<Option<Self>, crate::Error> {
        env_choice(DURABILITY_ENV, "full or process", "full")
    }

    /// The level to use: `explicit` when given, else the environment's, else
    /// [`Durability::Full`].
    pub fn resolve(explicit: Option<Self>) -> Result<Self, crate::Error> {
        match explicit {
            Some(level) => Ok(level),
            None => Ok(Self::from_env()?.unwrap_or_default()),
        }
    }
}

impl FromStr for Durability {
    type Err = UnknownDurability;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(Durability::Full),
            "process" => Ok(Durability::Process),
            _ => Err(UnknownDurability(s.to_owned())),
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The environment variable that chooses the folder-sync mode when the options do not.
pub const FOLDER_SYNC_ENV: &str = "SPATIALZARR_FOLDER_SYNC";

/// Whether a commit at [`Durability::Full`] fsyncs the folders whose entries it
/// changed, or relies on the filesystem making those changes durable in the order
/// they were made (spec/commit-protocol.md §11.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum FolderSync {
    /// [`FolderSync::Ordered`] on a local xfs, or ext3/ext4 with a journal, mounted
    /// with write barriers: their metadata journal commits every change in order;
    /// [`FolderSync::Strict`] anywhere else (ext4 without a journal, btrfs, NFS,
    /// Lustre, GPFS, FUSE, tmpfs) or when the kernel does not tell (the default).
    #[default]
    Auto,
    /// Every folder a commit changed is fsynced before the commit returns: no
    /// ordering is assumed of the filesystem (one more fsync round per commit).
    Strict,
    /// Folders are not fsynced by commits: the filesystem must make creates, renames
    /// and removals durable in the order they were made, each fsync of a new file
    /// making every earlier one durable. True of ext3/ext4 with a journal and of xfs;
    /// NOT of btrfs, network or FUSE filesystems, where a power loss could then lose
    /// acknowledged commits.
    Ordered,
}

/// A folder-sync mode that is not `auto`, `strict` or `ordered`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown folder-sync mode {0:?}: use auto, strict or ordered")]
pub struct UnknownFolderSync(pub String);

impl FolderSync {
    /// The mode's name as the environment spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FolderSync::Auto => "auto",
            FolderSync::Strict => "strict",
            FolderSync::Ordered => "ordered",
        }
    }

    /// The mode to use: `explicit` when given, else the one `SPATIALZARR_FOLDER_SYNC`
    /// names, else [`FolderSync::Auto`]; an error names the variable when it holds
    /// anything else.
    pub fn resolve(explicit: Option<Self>) -> Result<Self, crate::Error> {
        match explicit {
            Some(mode) => Ok(mode),
            None => Ok(
                env_choice(FOLDER_SYNC_ENV, "auto, strict or ordered", "auto")?.unwrap_or_default(),
            ),
        }
    }

    /// Whether commits on a filesystem with the facts `mount` skip folder fsyncs
    /// (`None`: nothing is known of it).
    pub fn orders(self, mount: Option<&MountOrder>) -> bool {
        match self {
            FolderSync::Strict => false,
            FolderSync::Ordered => true,
            FolderSync::Auto => mount.is_some_and(MountOrder::orders),
        }
    }

    /// The mode commits to the dataset at `root` use: [`FolderSync::Strict`] or
    /// [`FolderSync::Ordered`], with [`FolderSync::Auto`] decided by the mount that
    /// holds `root` (its type, its barriers and, for ext3/ext4, whether it has a
    /// journal).
    pub fn at(self, root: &std::path::Path) -> FolderSync {
        let ordered = match self {
            FolderSync::Auto => self.orders(MountOrder::at(root).as_ref()),
            other => other.orders(None),
        };
        if ordered {
            FolderSync::Ordered
        } else {
            FolderSync::Strict
        }
    }

    /// Whether commits to the dataset at `root` skip folder fsyncs
    /// ([`FolderSync::at`] is [`FolderSync::Ordered`]).
    pub fn orders_at(self, root: &std::path::Path) -> bool {
        self.at(root) == FolderSync::Ordered
    }
}

impl FromStr for FolderSync {
    type Err = UnknownFolderSync;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(FolderSync::Auto),
            "strict" => Ok(FolderSync::Strict),
            "ordered" => Ok(FolderSync::Ordered),
            _ => Err(UnknownFolderSync(s.to_owned())),
        }
    }
}

impl fmt::Display for FolderSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ordering::Journal;
    use super::*;

    #[test]
    fn levels_parse_and_print() {
        for level in [Durability::Full, Durability::Process] {
            assert_eq!(level.as_str().parse::<Durability>(), Ok(level));
        }
        assert_eq!(" Process ".parse::<Durability>(), Ok(Durability::Process));
        let err = "fast".parse::<Durability>().unwrap_err();
        assert!(err.to_string().contains("\"fast\""), "{err}");
        assert_eq!(
            Durability::resolve(Some(Durability::Process)).unwrap(),
            Durability::Process
        );
    }

    #[test]
    fn folder_sync_modes_parse_and_decide_by_filesystem() {
        for mode in [FolderSync::Auto, FolderSync::Strict, FolderSync::Ordered] {
            assert_eq!(mode.as_str().parse::<FolderSync>(), Ok(mode));
            assert_eq!(FolderSync::resolve(Some(mode)).unwrap(), mode);
        }
        let err = "lazy".parse::<FolderSync>().unwrap_err();
        assert!(err.to_string().contains("\"lazy\""), "{err}");
        let journaled = MountOrder {
            fstype: "ext4".to_owned(),
            no_barriers: false,
            journal: Journal::Present,
        };
        let bare = MountOrder {
            journal: Journal::Absent,
            ..journaled.clone()
        };
        assert!(FolderSync::Auto.orders(Some(&journaled)));
        assert!(!FolderSync::Strict.orders(Some(&journaled)));
        assert!(!FolderSync::Auto.orders(Some(&bare)));
        assert!(FolderSync::Ordered.orders(Some(&bare)));
        assert!(!FolderSync::Auto.orders(None));
    }
}
