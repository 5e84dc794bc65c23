//! Pausing a kind: a STRING per queue ([`crate::keys::QueueKeys::paused`]) that `fetch.lua`
//! reads inside the same script that leases, so no fetch after the pause leases a job of the
//! kind, whichever worker runs it. Producers still enqueue; due delayed jobs are still promoted
//! and expired leases still recovered, so the queue is ready to run the moment it resumes.
//! The marker has no expiry: a pause outlives every process until an operator resumes.
//!
//! Also here, as the other half of "is this queue moving": its latency, the age of the oldest
//! ready job.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use redis::Script;
use serde::{Deserialize, Serialize};

use crate::record::{millis, with_records};
use crate::redis_conn::Conn;
use crate::{Keys, Kind, StoreError};

static RESUME: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/resume.lua")));
static OLDEST_READY: LazyLock<Script> = LazyLock::new(|| with_records(include_str!("../lua/oldest_ready.lua")));

/// Ids at the popping end of a ready list read to find the oldest job still to run: the
/// bound on the work of one latency reading.
pub const LATENCY_PROBE: isize = 32;

/// A pause in force: since when, and which operator paused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub since: DateTime<Utc>,
    pub by: String,
}

/// The stored value: `{"since": <ms>, "by": "<operator>"}`.
#[derive(Serialize, Deserialize)]
struct Stored {
    since: i64,
    by: String,
}

/// Pauses and resumes queues; reads their pause state and latency.
#[derive(Debug, Clone)]
pub struct Pauses {
    conn: Conn,
    keys: Keys,
}

impl Pauses {
    pub fn new(conn: Conn, keys: Keys) -> Self {
        Self { conn, keys }
    }

    /// Pauses `kind` (`by`: the operator): the pause in force, and whether this call made it.
    /// A queue paused already keeps its first pause: pausing twice is one pause.
    pub async fn pause(&self, kind: Kind, by: &str, now: DateTime<Utc>) -> Result<(Pause, bool), StoreError> {
        let value = serde_json::to_string(&Stored { since: now.timestamp_millis(), by: by.to_owned() })
            .map_err(|e| StoreError::Protocol(crate::store::Cause::new("the pause did not encode", e)))?;
        let key = self.keys.queue(kind).paused();
        let set: Option<String> =
            redis::cmd("SET").arg(&key).arg(value).arg("NX").query_async(&mut self.conn.clone()).await?;
        let pause = self.paused(kind).await?.unwrap_or(Pause { since: now, by: by.to_owned() });
        Ok((pause, set.is_some()))
    }

    /// Resumes `kind` and wakes its idle workers; whether it was paused.
    pub async fn resume(&self, kind: Kind) -> Result<bool, StoreError> {
        let q = self.keys.queue(kind);
        let mut call = RESUME.prepare_invoke();
        call.key(q.paused()).key(q.wake()).arg(16);
        let was: i64 = call.invoke_async(&mut self.conn.clone()).await?;
        Ok(was == 1)
    }

    /// The pause in force on `kind`, if any. A marker that does not read (written by hand)
    /// still pauses (`fetch.lua` only asks whether it exists), shown as paused by nobody known.
    pub async fn paused(&self, kind: Kind) -> Result<Option<Pause>, StoreError> {
        let raw: Option<String> =
            redis::cmd("GET").arg(self.keys.queue(kind).paused()).query_async(&mut self.conn.clone()).await?;
        Ok(raw.map(|raw| match serde_json::from_str::<Stored>(&raw) {
            Ok(stored) => Pause { since: millis(stored.since), by: stored.by },
            Err(_) => Pause { since: millis(0), by: "?".to_owned() },
        }))
    }

    /// The queue's latency: how long the oldest ready job has waited, since it became due
    /// (the later of its creation and its run-at, so a delayed job counts from its time).
    /// Zero when no job is ready.
    ///
    /// Bounded: only the [`LATENCY_PROBE`] ids at the popping end are read (`LINDEX -1` is the
    /// next job out), and the oldest of them counts: the next one out is not always the
    /// oldest, since due delayed jobs, due retries and recovered leases are pushed to the
    /// popping end, in front of the jobs that waited longer. A finished job may still lie there
    /// (cancelled while queued: fetch drops it when it pops it); such ids and ids without a
    /// record are passed over. When every id read is finished or gone, the youngest of those
    /// still holding a record counts: the jobs behind it came later, so the real latency is no
    /// greater.
    pub async fn latency(&self, kind: Kind, now: DateTime<Utc>) -> Result<std::time::Duration, StoreError> {
        let (oldest_live, youngest_finished) = oldest_ready(&self.conn, &self.keys, kind).await?;
        Ok(oldest_live.or(youngest_finished).map_or(std::time::Duration::ZERO, |due| age(now, due)))
    }
}

/// When the oldest job still to run among the [`LATENCY_PROBE`] ids at the popping end of
/// `kind`'s ready list became due, and when the youngest finished one among them did (ms since
/// the epoch): one read-only script that returns these two numbers, never a record.
pub async fn oldest_ready(conn: &Conn, keys: &Keys, kind: Kind) -> Result<(Option<i64>, Option<i64>), StoreError> {
    let q = keys.queue(kind);
    let (oldest, youngest_finished): (i64, i64) =
        OLDEST_READY.key(q.ready()).arg(LATENCY_PROBE).arg(q.job_prefix()).invoke_async(&mut conn.clone()).await?;
    let known = |ms: i64| (ms >= 0).then_some(ms);
    Ok((known(oldest), known(youngest_finished)))
}

fn age(now: DateTime<Utc>, due_ms: i64) -> std::time::Duration {
    u64::try_from(now.timestamp_millis() - due_ms).map_or(std::time::Duration::ZERO, std::time::Duration::from_millis)
}
