//! The fleet registry: each worker process writes a heartbeat every few seconds into one HASH
//! ([`Keys::workers`]) and removes it when it stops gracefully; the console reads it whole.
//!
//! A worker is *alive* while its last heartbeat is younger than its own lease
//! (`WORKER_LEASE_SECONDS`, carried in the heartbeat): past that, the jobs it held are being
//! recovered by other workers, so it is gone for the queue too. Entries unseen for an hour
//! ([`GONE_AFTER`]) are pruned, by every heartbeat (a bounded sample) and by every read, and
//! the hash never holds more than [`CAP`] entries, however often workers crash and restart.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::Script;
use serde::{Deserialize, Serialize};

use crate::record::millis;
use crate::redis_conn::Conn;
use crate::{Keys, Kind, StoreError};

static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/heartbeat.lua")));

/// The most entries the registry keeps: far above any fleet, and a bound on what one read costs.
pub const CAP: usize = 1000;
/// An entry not seen for this long is removed.
pub const GONE_AFTER: Duration = Duration::from_hours(1);
/// Entries each heartbeat looks at for pruning.
const SAMPLE: usize = 20;

/// One worker process's heartbeat, as stored (times: ms since the epoch, Redis's clock for
/// `last_seen_at`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub kinds: Vec<Kind>,
    /// Jobs each kind may run at once.
    pub concurrency: BTreeMap<Kind, usize>,
    /// Jobs of each kind held right now (leased: running, or about to).
    pub in_flight: BTreeMap<Kind, usize>,
    pub started_at: i64,
    /// Its `WORKER_LEASE_SECONDS`, in ms: how long it may stay silent and still be alive.
    pub lease_ms: u64,
    /// Stamped by `heartbeat.lua`; absent in what the worker sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<i64>,
}

/// A worker as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub kinds: Vec<Kind>,
    pub concurrency: BTreeMap<Kind, usize>,
    pub in_flight: BTreeMap<Kind, usize>,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// Seen within its lease (`WORKER_LEASE_SECONDS`); false: gone.
    pub alive: bool,
}

/// The registry of one namespace.
#[derive(Debug, Clone)]
pub struct Fleet {
    conn: Conn,
    keys: Keys,
}

impl Fleet {
    pub fn new(conn: Conn, keys: Keys) -> Self {
        Self { conn, keys }
    }

    /// Writes `beat` (stamped with Redis's time) and prunes a bounded sample of the others.
    pub async fn beat(&self, beat: &Heartbeat) -> Result<(), StoreError> {
        let json = serde_json::to_string(&Heartbeat { last_seen_at: None, ..beat.clone() })
            .map_err(|e| StoreError::Protocol(crate::store::Cause::new("the heartbeat did not encode", e)))?;
        let mut call = HEARTBEAT.prepare_invoke();
        call.key(self.keys.workers()).arg(&beat.id).arg(json).arg(CAP).arg(ms(GONE_AFTER)).arg(SAMPLE);
        let _removed: i64 = call.invoke_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Removes a worker's entry: it stopped gracefully.
    pub async fn leave(&self, id: &str) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("HDEL").arg(self.keys.workers()).arg(id).query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Every worker seen within [`GONE_AFTER`], alive ones first, then the most recently seen
    /// first; older entries (and unreadable ones) are removed on the way. One read of at most
    /// [`CAP`] entries.
    pub async fn list(&self) -> Result<Vec<WorkerView>, StoreError> {
        let mut conn = self.conn.clone();
        let (entries, (secs, micros)): (BTreeMap<String, String>, (i64, i64)) =
            redis::pipe().cmd("HGETALL").arg(self.keys.workers()).cmd("TIME").query_async(&mut conn).await?;
        let now = secs * 1000 + micros / 1000;
        let gone_before = now - i64::try_from(ms(GONE_AFTER)).unwrap_or(i64::MAX);
        let (mut workers, mut stale) = (Vec::new(), Vec::new());
        for (field, value) in entries {
            match serde_json::from_str::<Heartbeat>(&value) {
                Ok(beat) if beat.last_seen_at.is_some_and(|seen| seen >= gone_before) => {
                    workers.push(view(beat, now));
                }
                _ => stale.push(field),
            }
        }
        if !stale.is_empty() {
            let _: i64 = redis::cmd("HDEL").arg(self.keys.workers()).arg(&stale).query_async(&mut conn).await?;
        }
        workers.sort_by(|a, b| b.alive.cmp(&a.alive).then(b.last_seen_at.cmp(&a.last_seen_at)));
        Ok(workers)
    }

    /// Live workers serving each kind (every kind present, zero included).
    pub async fn live_per_kind(&self) -> Result<BTreeMap<Kind, u64>, StoreError> {
        let mut counts: BTreeMap<Kind, u64> = Kind::ALL.into_iter().map(|k| (k, 0)).collect();
        for worker in self.list().await?.into_iter().filter(|w| w.alive) {
            for kind in worker.kinds {
                *counts.entry(kind).or_default() += 1;
            }
        }
        Ok(counts)
    }
}

fn view(beat: Heartbeat, now: i64) -> WorkerView {
    let seen = beat.last_seen_at.unwrap_or(0);
    WorkerView {
        alive: now - seen <= i64::try_from(beat.lease_ms).unwrap_or(i64::MAX),
        id: beat.id,
        host: beat.host,
        pid: beat.pid,
        version: beat.version,
        kinds: beat.kinds,
        concurrency: beat.concurrency,
        in_flight: beat.in_flight,
        started_at: millis(beat.started_at),
        last_seen_at: millis(seen),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
