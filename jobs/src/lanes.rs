//! Priorities and groups: which ready list a job waits in (`lua/lanes.lua` is the Redis side).
//!
//! Each priority is a lane of its own, served strictly before the lower ones; within a lane,
//! the jobs of each group (a tenant, a customer) wait in a list of their own and the groups
//! are served round-robin, so one group's flood cannot starve the others.

use crate::StoreError;
use crate::keys::QueueKeys;
use crate::redis_conn::Conn;

pub use crate::priority::{MAX_GROUP_LEN, Priority, valid_group};

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
