//! Steering jobs that have not finished: cancel one (`DELETE /v1/jobs/{id}`, the console) or a
//! batch of one queue, start a waiting one now, and find the jobs a bulk cancel covers.
//!
//! Each change is one script over one queue (`lua/cancel.lua`, `lua/run_now.lua`), atomic per
//! job. A cancelled queued job's id stays in the ready list (an `LREM` is O(length)); the
//! queue's `ready_cancelled` counter keeps its depth truthful, and `fetch.lua` skips the id.
//! A running job gets a cancellation request instead: see [`CancelOutcome::CancelRequested`].

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::Script;
use serde::{Deserialize, Serialize};

use crate::keys::QueueKeys;
use crate::record::with_records;
use crate::redis_conn::Conn;
use crate::{JobStatus, Keys, Kind, Priority, StoreError};

static CANCEL: LazyLock<Script> = LazyLock::new(|| with_records(include_str!("../lua/cancel.lua")));
static RUN_NOW: LazyLock<Script> = LazyLock::new(|| with_records(include_str!("../lua/run_now.lua")));
static BULK_MATCH: LazyLock<Script> = LazyLock::new(|| with_records(include_str!("../lua/bulk_match.lua")));

/// The most ids one `cancel.lua` call takes: bounds the script's work.
pub const MAX_CANCEL_BATCH: usize = 500;
/// The most jobs one bulk cancel covers; a filter matching more is refused, to be narrowed.
pub const MAX_BULK: usize = 100_000;
/// The most positions of a list or set a bulk walk reads.
pub const MAX_WALK: usize = 1_000_000;
/// Ids read per round trip of a walk.
const WALK_PAGE: usize = 1000;

/// Why an operator may not cancel an audit event, as the console says it.
pub const PROTECTED: &str =
    "audit events (kind audit_log) are never cancelled by an operator: the operator audit log travels as such jobs";

/// Whether an operator (the console, its CLI) may cancel jobs of `kind`: every kind but
/// `audit_log`, whose jobs carry the operator audit log itself (see [`CancelOutcome::Protected`]).
pub fn operator_may_cancel(kind: Kind) -> bool {
    kind != Kind::AuditLog
}

/// What a cancel did to one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued, scheduled or retrying: it is `cancelled` and never runs.
    Cancelled,
    /// It was cancelled before: the same answer as the first time.
    AlreadyCancelled,
    /// It is running: the request is on its record. A retry outcome, a lost lease or a release
    /// at worker shutdown (its delivery never started) ends it `cancelled`; a success stays
    /// `succeeded`, a dead letter `dead`. The final status tells what happened.
    CancelRequested,
    /// It had finished (succeeded, dead or expired): nothing changed.
    Finished(JobStatus),
    /// No such job, or another producer's.
    NotFound,
    /// An audit event (kind `audit_log`) an operator asked to cancel: refused, nothing changed.
    /// The operator audit log travels as such jobs until a worker writes them to PostgreSQL; an
    /// operator who could cancel them could erase the record of their own actions.
    Protected,
}

impl CancelOutcome {
    fn parse(reply: &str) -> Result<Self, StoreError> {
        Ok(match reply {
            "cancelled" => CancelOutcome::Cancelled,
            "was_cancelled" => CancelOutcome::AlreadyCancelled,
            "cancel_requested" => CancelOutcome::CancelRequested,
            "missing" => CancelOutcome::NotFound,
            other => CancelOutcome::Finished(
                JobStatus::from_str(other)
                    .map_err(|e| StoreError::Protocol(format!("cancel.lua answered: {e}").into()))?,
            ),
        })
    }
}

/// What "run now" did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunNowOutcome {
    /// It waits at the popping end of the ready list: it starts as soon as a worker is free.
    Queued,
    /// It was not waiting (queued already, running, or finished): nothing changed.
    NotWaiting(JobStatus),
    NotFound,
}

/// The states a bulk cancel selects from: the jobs that have not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitingState {
    Queued,
    Scheduled,
    Retrying,
}

impl WaitingState {
    pub const ALL: [WaitingState; 3] = [WaitingState::Queued, WaitingState::Scheduled, WaitingState::Retrying];

    pub fn as_str(self) -> &'static str {
        match self {
            WaitingState::Queued => "queued",
            WaitingState::Scheduled => "scheduled",
            WaitingState::Retrying => "retrying",
        }
    }
}

impl FromStr for WaitingState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WaitingState::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| "must be queued, scheduled or retrying".into())
    }
}

/// The jobs a bulk cancel covers: of one kind and state, optionally of one producer, created
/// at or before `until` (the confirmation freezes it, so jobs enqueued after the operator saw
/// the count are not part of what they confirmed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelFilter {
    pub kind: Kind,
    pub state: WaitingState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

impl CancelFilter {
    /// The field that breaks a rule, and the rule.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !operator_may_cancel(self.kind) {
            return Err(("kind", PROTECTED.into()));
        }
        match &self.producer {
            Some(p) if p.is_empty() || p.len() > 128 || p.contains(':') => {
                Err(("producer", "must be 1 to 128 characters without `:`".into()))
            }
            _ => Ok(()),
        }
    }
}

/// The handle on cancel and run-now, for every queue of one namespace.
#[derive(Debug, Clone)]
pub struct Control {
    conn: Conn,
    keys: Keys,
    /// How long a cancelled job stays readable, per kind (`settings::finished_retention`).
    retention: Arc<BTreeMap<Kind, Duration>>,
    call_timeout: Duration,
}

impl Control {
    pub fn new(conn: Conn, keys: Keys, retention: BTreeMap<Kind, Duration>, call_timeout: Duration) -> Self {
        Self { conn, keys, retention: Arc::new(retention), call_timeout }
    }

    async fn bounded<T>(&self, f: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        tokio::time::timeout(self.call_timeout, f).await.map_err(|_| {
            StoreError::Unavailable(format!("no answer within {} ms", self.call_timeout.as_millis()).into())
        })?
    }

    /// The kind of job `id`, found in whichever queue holds it.
    async fn kind_of(&self, id: &str) -> Result<Option<Kind>, StoreError> {
        Ok(crate::record::find(&self.conn, &self.keys, id).await?.map(|(kind, _)| kind))
    }

    /// Cancels job `id`; `producer`: only if that producer enqueued it (`None`: an operator).
    pub async fn cancel(&self, id: &str, producer: Option<&str>) -> Result<(Option<Kind>, CancelOutcome), StoreError> {
        self.bounded(async {
            let Some(kind) = self.kind_of(id).await? else { return Ok((None, CancelOutcome::NotFound)) };
            if producer.is_none() && !operator_may_cancel(kind) {
                return Ok((Some(kind), CancelOutcome::Protected));
            }
            let outcome = self.cancel_batch(kind, &[id.to_owned()], producer).await?;
            Ok((Some(kind), outcome.first().copied().unwrap_or(CancelOutcome::NotFound)))
        })
        .await
    }

    /// Cancels jobs `ids` of `kind`, [`MAX_CANCEL_BATCH`] per script call; one outcome per id.
    pub async fn cancel_many(
        &self,
        kind: Kind,
        ids: &[String],
        producer: Option<&str>,
    ) -> Result<Vec<CancelOutcome>, StoreError> {
        if producer.is_none() && !operator_may_cancel(kind) {
            return Ok(vec![CancelOutcome::Protected; ids.len()]);
        }
        let mut outcomes = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_CANCEL_BATCH) {
            outcomes.extend(self.bounded(self.cancel_batch(kind, chunk, producer)).await?);
        }
        Ok(outcomes)
    }

    async fn cancel_batch(
        &self,
        kind: Kind,
        ids: &[String],
        producer: Option<&str>,
    ) -> Result<Vec<CancelOutcome>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let q = self.keys.queue(kind);
        let retention = self.retention.get(&kind).copied().unwrap_or(Duration::from_hours(24));
        let mut call = CANCEL.prepare_invoke();
        call.key(q.ready()).key(q.scheduled()).key(q.retry()).key(q.cancelled()).key(q.ready_cancelled());
        call.arg(q.job_prefix())
            .arg(q.idempotency_prefix())
            .arg(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX))
            .arg(producer.unwrap_or(""))
            .arg(ids);
        let replies: Vec<String> = call.invoke_async(&mut self.conn.clone()).await?;
        replies.iter().map(|r| CancelOutcome::parse(r)).collect()
    }

    /// Moves a scheduled or retrying job to the popping end of the ready list, due now, and
    /// wakes an idle worker.
    pub async fn run_now(&self, id: &str) -> Result<(Option<Kind>, RunNowOutcome), StoreError> {
        self.bounded(async {
            let Some(kind) = self.kind_of(id).await? else { return Ok((None, RunNowOutcome::NotFound)) };
            let q = self.keys.queue(kind);
            let mut call = RUN_NOW.prepare_invoke();
            call.key(q.ready()).key(q.scheduled()).key(q.retry()).key(q.wake());
            call.arg(q.job_prefix()).arg(id);
            let reply: String = call.invoke_async(&mut self.conn.clone()).await?;
            let outcome = match reply.as_str() {
                "moved" => RunNowOutcome::Queued,
                "missing" => RunNowOutcome::NotFound,
                other => RunNowOutcome::NotWaiting(
                    JobStatus::from_str(other)
                        .map_err(|e| StoreError::Protocol(format!("run_now.lua answered: {e}").into()))?,
                ),
            };
            Ok((Some(kind), outcome))
        })
        .await
    }

    /// The ids `filter` selects; the walk stops at `max + 1` of them, so a caller can tell
    /// "more than `max`" and refuse. Reads the
    /// ready lists ([`QueuedWalk`]: every lane, then every group's list) from their pushing end (`LRANGE` pages: a job pushed meanwhile shifts the
    /// positions forward, so a page may repeat ids, which are skipped, but none is missed) or
    /// the set by `ZSCAN`, [`WALK_PAGE`] per round trip, at most [`MAX_WALK`] positions, and
    /// filters each page on Redis's side (`lua/bulk_match.lua`, [`MAX_CANCEL_BATCH`] ids a
    /// call): only ids come back, never a record and its payload.
    pub async fn matching(&self, filter: &CancelFilter, max: usize) -> Result<Vec<String>, StoreError> {
        let q = self.keys.queue(filter.kind);
        let mut conn = self.conn.clone();
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        let mut walked = 0;
        let mut cursor = 0u64;
        let mut queued = QueuedWalk::new(&q);
        let mut queued_done = false;
        let walk_key = match filter.state {
            WaitingState::Queued => q.ready(),
            WaitingState::Scheduled => q.scheduled(),
            WaitingState::Retrying => q.retry(),
        };
        loop {
            let page: Vec<String> = match filter.state {
                WaitingState::Queued => {
                    let (page, exhausted) = self.bounded(queued.next_page(&mut conn)).await?;
                    queued_done = exhausted;
                    page
                }
                WaitingState::Scheduled | WaitingState::Retrying => {
                    let set = if filter.state == WaitingState::Scheduled { q.scheduled() } else { q.retry() };
                    let (next, page): (u64, Vec<String>) = self
                        .bounded(async {
                            Ok(redis::cmd("ZSCAN")
                                .arg(&set)
                                .arg(cursor)
                                .arg("COUNT")
                                .arg(WALK_PAGE)
                                .query_async(&mut conn.clone())
                                .await?)
                        })
                        .await?;
                    cursor = next;
                    // ZSCAN answers member, score, member, score, ...
                    page.into_iter().step_by(2).collect()
                }
            };
            let done = match filter.state {
                WaitingState::Queued => queued_done,
                _ => cursor == 0,
            };
            walked += page.len().max(1);
            let fresh: Vec<String> = page.into_iter().filter(|id| seen.insert(id.clone())).collect();
            for chunk in fresh.chunks(MAX_CANCEL_BATCH) {
                // Filtered on Redis's side: the records (payloads up to 256 KiB) stay there.
                let mut call = BULK_MATCH.prepare_invoke();
                call.key(&walk_key)
                    .arg(q.job_prefix())
                    .arg(filter.state.as_str())
                    .arg(filter.producer.as_deref().unwrap_or(""))
                    .arg(filter.until.map(|u| u.timestamp_millis().to_string()).unwrap_or_default())
                    .arg(chunk);
                let selected: Vec<String> = self.bounded(async { Ok(call.invoke_async(&mut conn).await?) }).await?;
                for id in selected {
                    found.push(id);
                    if found.len() > max {
                        return Ok(found);
                    }
                }
            }
            if done || walked >= MAX_WALK {
                return Ok(found);
            }
        }
    }
}

/// A walk over every ready list of a queue, in [`WALK_PAGE`] pages: the ungrouped list of each
/// lane, then each lane's rotation, whose members name the group lists walked after it.
struct QueuedWalk {
    /// Lists still to read: a list of ids, or a lane's rotation (its priority).
    lists: std::collections::VecDeque<(String, Option<Priority>)>,
    offset: usize,
    keys: QueueKeys,
}

impl QueuedWalk {
    fn new(q: &QueueKeys) -> Self {
        let mut lists: std::collections::VecDeque<_> = Priority::ALL.map(|p| (q.lane(p), None)).into();
        lists.extend(Priority::ALL.map(|p| (q.rotation(p), Some(p))));
        Self { lists, offset: 0, keys: q.clone() }
    }

    /// The next page of ids (empty after a page of a rotation), and whether the walk is over.
    async fn next_page(&mut self, conn: &mut Conn) -> Result<(Vec<String>, bool), StoreError> {
        let Some((key, rotation)) = self.lists.front().cloned() else { return Ok((Vec::new(), true)) };
        let page: Vec<String> =
            redis::cmd("LRANGE").arg(&key).arg(self.offset).arg(self.offset + WALK_PAGE - 1).query_async(conn).await?;
        if page.len() < WALK_PAGE {
            self.lists.pop_front();
            self.offset = 0;
        } else {
            self.offset += WALK_PAGE;
        }
        let Some(priority) = rotation else { return Ok((page, self.lists.is_empty())) };
        for group in page.iter().filter(|m| !m.is_empty()) {
            self.lists.push_back((self.keys.group_list(priority, group), None));
        }
        Ok((Vec::new(), self.lists.is_empty()))
    }
}
