//! A job's priority and group name: the part of lanes that is only data, with no Redis in it.
//!
//! Also compiled into the producers' Rust client (`clients/rust/src/lib.rs`, `#[path]`), without
//! the rest of this crate: use nothing of this crate here, and only the dependencies
//! `clients/rust/Cargo.toml` lists (`cargo build -p jobplane-client` checks).

use serde::{Deserialize, Serialize};

/// The longest group name, in bytes (visible ASCII: one byte a character).
pub const MAX_GROUP_LEN: usize = 128;

/// How soon a job runs against the other ready jobs of its kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// The record's `pi`: absent for normal, so a normal job's record is as before lanes.
    pub fn code(self) -> Option<&'static str> {
        match self {
            Priority::High => Some("h"),
            Priority::Normal => None,
            Priority::Low => Some("l"),
        }
    }

    pub fn is_normal(&self) -> bool {
        *self == Priority::Normal
    }
}

impl std::str::FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("must be one of {}", Priority::ALL.map(Priority::as_str).join(", ")))
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A group name is 1 to [`MAX_GROUP_LEN`] visible ASCII characters (0x21 to 0x7e): it becomes
/// part of a Redis key, and no space or control character makes it ambiguous in a log line.
pub fn valid_group(group: &str) -> bool {
    (1..=MAX_GROUP_LEN).contains(&group.len()) && group.bytes().all(|b| b.is_ascii_graphic())
}
