//! Priorities and groups: which ready list a job waits in (`lua/lanes.lua` is the Redis side).
//!
//! Each priority is a lane of its own, served strictly before the lower ones; within a lane,
//! the jobs of each group (a tenant, a customer) wait in a list of their own and the groups
//! are served round-robin, so one group's flood cannot starve the others.

use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::keys::QueueKeys;
use crate::redis_conn::Conn;

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

/// How many jobs of a queue are queued, and the sizes (`ZCARD`) of `sets`, in one round trip.
/// Queued: its lanes' ungrouped lists (`LLEN` each) and the ids in its group lists
/// (`QueueKeys::ready_grouped`), less the cancelled ids still lying in them
/// (`QueueKeys::ready_cancelled`: fetch drops them as it pops them). O(1) whatever the groups.
pub(crate) async fn queued_and_sizes<const N: usize>(
    conn: &Conn,
    q: &QueueKeys,
    sets: [String; N],
) -> Result<(u64, [u64; N]), StoreError> {
    let mut pipe = redis::pipe();
    for priority in Priority::ALL {
        pipe.llen(q.lane(priority));
    }
    pipe.get(q.ready_grouped()).get(q.ready_cancelled());
    for set in &sets {
        pipe.zcard(set);
    }
    let values: Vec<Option<i64>> = pipe.query_async(&mut conn.clone()).await?;
    let count = |i: usize| values.get(i).copied().flatten().and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
    let queued = (0..4).map(count).sum::<u64>().saturating_sub(count(4));
    Ok((queued, std::array::from_fn(|i| count(5 + i))))
}

/// The record's `pi` codec: the priority's short code, absent for normal.
pub(crate) mod priority_code {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Priority;

    #[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's `with` hands a reference")]
    pub fn serialize<S: Serializer>(priority: &Priority, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(priority.code().unwrap_or("n"))
    }

    /// An unknown code reads as normal: a newer writer's lane is served, never lost.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Priority, D::Error> {
        Ok(match String::deserialize(deserializer)?.as_str() {
            "h" => Priority::High,
            "l" => Priority::Low,
            _ => Priority::Normal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_visible_ascii_up_to_128() {
        assert!(valid_group("tenant-7"));
        assert!(valid_group(&"a".repeat(128)));
        assert!(!valid_group(&"a".repeat(129)));
        assert!(!valid_group(""));
        assert!(!valid_group("a b"));
        assert!(!valid_group("é"));
    }

    #[test]
    fn the_record_keeps_a_short_code_and_nothing_for_normal() {
        let mut record = crate::record::tests::dead_record();
        record.priority = Priority::High;
        record.group = Some("tenant-7".into());
        let bytes = record.encode();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("pi") && text.contains("tenant-7") && !text.contains("high"), "{text}");
        assert_eq!(crate::record::JobRecord::decode(&bytes).unwrap(), record);
        record.priority = Priority::Normal;
        record.group = None;
        let text = String::from_utf8_lossy(&record.encode()).into_owned();
        assert!(!text.contains("pi") && !text.contains("gr"), "{text}");
    }

    #[test]
    fn priorities_parse_by_name() {
        assert_eq!("high".parse::<Priority>().unwrap(), Priority::High);
        assert!("urgent".parse::<Priority>().unwrap_err().contains("high, normal, low"));
    }
}
