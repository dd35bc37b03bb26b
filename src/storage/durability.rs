//! Durability levels: what a commit survives once it is acknowledged.
//!
//! [`Durability::Full`] fsyncs every file and folder a commit depends on before the
//! commit returns: the commit survives a power loss. [`Durability::Process`] makes no
//! fsync at all: the commit survives the crash or `kill -9` of any process at any
//! instant (the kernel's page cache outlives processes, and the commit protocol
//! leaves the old state or the new one at every instant), but a power loss or a
//! kernel crash may lose the commits of the last seconds and leave torn or empty
//! files (spec/commit-protocol.md §11).

use std::fmt;
use std::str::FromStr;

/// What [`Durability::Process`] guarantees and what it risks, as the documentation
/// and the CLI help state it.
pub const PROCESS_GUARANTEE: &str = "A commit survives the crash or kill -9 of any process at any instant (the dataset is left in the state before it or after it, never a mix), but a power loss or a kernel crash may lose the commits of the last seconds and leave the dataset inconsistent, with torn or empty files: after one, run `spatialzarr check` and write again what it reports.";

/// The environment variable that chooses the level when the options do not.
pub const DURABILITY_ENV: &str = "SPATIALZARR_DURABILITY";

/// What an acknowledged commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Durability {
    /// Every file and folder a commit depends on is fsynced before it returns: it
    /// survives a power loss or a kernel crash (the default).
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
        match std::env::var(DURABILITY_ENV) {
            Ok(value) if value.trim().is_empty() => Ok(None),
            Ok(value) => value.parse().map(Some).map_err(|e: UnknownDurability| {
                crate::Error::InvalidInput(format!(
                    "{DURABILITY_ENV}={}: {e} (or unset it for full)",
                    e.0
                ))
            }),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(crate::Error::InvalidInput(format!(
                "{DURABILITY_ENV} is not valid UTF-8: use full or process"
            ))),
        }
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

#[cfg(test)]
mod tests {
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
}
