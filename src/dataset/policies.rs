//! The text forms of the listing-document policies, as the command line and the
//! Python package spell them: `keep`, `keep-unbounded`, `drop` for the consolidated
//! metadata; `N`, `always`, `never` for the `ome.labels` list.

use std::fmt;
use std::str::FromStr;

use super::{ConsolidatedMetadata, LabelsList};

/// A policy given as text that names none of the accepted values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not {expected}")]
pub struct UnknownPolicy {
    /// The text given.
    pub given: String,
    /// What would have been accepted, for the message.
    pub expected: &'static str,
}

impl FromStr for ConsolidatedMetadata {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "keep" => Ok(Self::KeepCurrent),
            "keep-unbounded" => Ok(Self::KeepUnbounded),
            "drop" => Ok(Self::Drop),
            _ => Err(UnknownPolicy {
                given: s.to_owned(),
                expected: "a consolidated metadata policy: keep, keep-unbounded or drop",
            }),
        }
    }
}

impl fmt::Display for ConsolidatedMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::KeepCurrent => "keep",
            Self::KeepUnbounded => "keep-unbounded",
            Self::Drop => "drop",
        })
    }
}

impl FromStr for LabelsList {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            n => n.parse().map(Self::Bounded).map_err(|_| UnknownPolicy {
                given: s.to_owned(),
                expected: "a number of labels, always or never",
            }),
        }
    }
}

impl fmt::Display for LabelsList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bounded(n) => write!(f, "{n}"),
            Self::Always => f.write_str("always"),
            Self::Never => f.write_str("never"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_reads_back_from_its_text() {
        for c in [
            ConsolidatedMetadata::KeepCurrent,
            ConsolidatedMetadata::KeepUnbounded,
            ConsolidatedMetadata::Drop,
        ] {
            assert_eq!(c.to_string().parse::<ConsolidatedMetadata>(), Ok(c));
        }
        for l in [
            LabelsList::Bounded(7),
            LabelsList::Always,
            LabelsList::Never,
        ] {
            assert_eq!(l.to_string().parse::<LabelsList>(), Ok(l));
        }
    }

    #[test]
    fn unknown_text_is_refused_with_what_is_accepted() {
        let e = "sometimes".parse::<LabelsList>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"sometimes\" is not a number of labels, always or never"
        );
        let e = "keep-current".parse::<ConsolidatedMetadata>().unwrap_err();
        assert!(
            e.to_string().contains("keep, keep-unbounded or drop"),
            "{e}"
        );
        assert!("-1".parse::<LabelsList>().is_err());
    }
}
