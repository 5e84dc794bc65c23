//! Every job of a kind in one state, read only, in cursor pages whose cost does not grow with
//! the queue: the console's "jobs" view (asynq's `inspect.go` `ListPending`/`ListScheduled`...).
//!
//! Each state is read from the structure that already holds it, so nothing is written to list:
//! - `queued`: the ready LIST, oldest first (the right end, where workers pop). A page is one
//!   `LRANGE` by index counted from the right; the cursor is `<index>:<id>` of the last id read.
//!   Pops at the right shift indexes down, so a resume looks for the id around its index (the
//!   same `LRANGE`), then, if it moved further, with an `LPOS` over at most [`LPOS_SCAN`] ids
//!   from the right; an id not found was popped (and with it every older one) or lies deeper
//!   than that scan, so the page starts at the current oldest: it may show again jobs that are
//!   still waiting, never skip one. Ids whose record is finished (a cancelled job's id may
//!   linger in the list) are skipped.
//! - `scheduled`, `retrying`, `running`: the ZSETs `scheduled`, `retry`, `active`, lowest score
//!   first (next due, next attempt, nearest lease deadline). The cursor is `<score>:<id>`; a
//!   resume is `lua/browse_after.lua` (`ZRANK` when the id is still at its score, else by score
//!   and a binary search among equal scores): O(log N + page).
//! - `succeeded`, `cancelled`: the STREAM indexes, newest first. Each entry holds many ids as
//!   its fields; the cursor is `<entry id>:<ids of that entry already shown>`, and a page reads
//!   entries with `XREVRANGE ... COUNT`, never the whole stream.
//!
//! The records of a page are read with one `MGET` (one queue, one slot).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use redis::Script;
use serde::Serialize;
use serde_json::Value;

use crate::dead::DeadLetters;
use crate::inspect::Attempt;
use crate::keys::QueueKeys;
use crate::record::{DeadReason, JobRecord, millis};
use crate::redact::{redact, redact_text};
use crate::redis_conn::Conn;
use crate::{JobStatus, Keys, Kind, Priority, StoreError};

/// Jobs per page when none is asked for.
pub const DEFAULT_LIMIT: usize = 50;
/// The most jobs one page holds.
pub const MAX_LIMIT: usize = 500;
/// The most ids an `LPOS` compares to find a queued cursor's job that moved by more than a
/// page (about 1 ms of Redis time): the bound that keeps a resume's cost flat at any depth.
pub const LPOS_SCAN: u64 = 10_000;
/// The longest id a cursor may carry (job ids are UUIDs, 36 characters).
const MAX_CURSOR_ID: usize = 128;

static AFTER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/browse_after.lua")));

/// The states a kind's jobs can be listed in: where each is held decides how it is paged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Scheduled,
    Retrying,
    Running,
    Succeeded,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Scheduled,
        JobState::Retrying,
        JobState::Running,
        JobState::Succeeded,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Scheduled => "scheduled",
            JobState::Retrying => "retrying",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether an operator may cancel a job in this state.
    pub fn cancellable(self) -> bool {
        matches!(self, JobState::Queued | JobState::Scheduled | JobState::Retrying)
    }

    /// Whether "run now" applies: a job waiting for its time.
    pub fn runnable_now(self) -> bool {
        matches!(self, JobState::Scheduled | JobState::Retrying)
    }

    /// The state a job of this status is listed in, if any.
    pub fn of(status: JobStatus) -> Option<Self> {
        Some(match status {
            JobStatus::Queued => JobState::Queued,
            JobStatus::Scheduled => JobState::Scheduled,
            JobStatus::Retrying => JobState::Retrying,
            JobStatus::Running => JobState::Running,
            JobStatus::Succeeded => JobState::Succeeded,
            JobStatus::Cancelled => JobState::Cancelled,
            JobStatus::Dead | JobStatus::Expired => return None,
        })
    }
}

impl std::str::FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("must be one of {}", JobState::ALL.map(JobState::as_str).join(", ")))
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a page resumes: the last item of the previous page, in the form its state needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Cursor {
    /// The ready list (the normal lane's): the last id read and its index counted from the
    /// right (oldest = 0).
    List { index: u64, id: String },
    /// The high or low lane's ready list, as [`Cursor::List`]; written `h<index>:<id>`, `l<index>:<id>`.
    Lane { lane: Priority, index: u64, id: String },
    /// A ZSET: the last member read and its score.
    Sorted { score: f64, id: String },
    /// A stream index: the entry of the last id read and how many of its ids were read.
    Stream { entry: String, read: usize },
}

impl Cursor {
    /// Reads a cursor for `state`; the error says what is wrong with it.
    pub fn parse(state: JobState, text: &str) -> Result<Self, String> {
        let invalid = || format!("is not a cursor of the {state} list (this API returns them as next_cursor)");
        let (head, tail) = text.split_once(':').ok_or_else(invalid)?;
        match state {
            JobState::Queued => {
                let id = cursor_id(tail).ok_or_else(invalid)?;
                let lane = match head.as_bytes().first() {
                    Some(b'h') => Some(Priority::High),
                    Some(b'l') => Some(Priority::Low),
                    _ => None,
                };
                let index = head[usize::from(lane.is_some())..].parse().map_err(|_| invalid())?;
                Ok(match lane {
                    Some(lane) => Cursor::Lane { lane, index, id },
                    None => Cursor::List { index, id },
                })
            }
            JobState::Scheduled | JobState::Retrying | JobState::Running => {
                let score: f64 = head.parse().map_err(|_| invalid())?;
                if !score.is_finite() {
                    return Err(invalid());
                }
                Ok(Cursor::Sorted { score, id: cursor_id(tail).ok_or_else(invalid)? })
            }
            JobState::Succeeded | JobState::Cancelled => {
                let (ms, seq) = head.split_once('-').ok_or_else(invalid)?;
                ms.parse::<u64>().map_err(|_| invalid())?;
                seq.parse::<u64>().map_err(|_| invalid())?;
                let read = tail.parse::<usize>().ok().filter(|n| (1..=1_000_000).contains(n)).ok_or_else(invalid)?;
                Ok(Cursor::Stream { entry: head.to_owned(), read })
            }
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cursor::List { index, id } => write!(f, "{index}:{id}"),
            Cursor::Lane { lane, index, id } => write!(f, "{}{index}:{id}", &lane.as_str()[..1]),
            Cursor::Sorted { score, id } => write!(f, "{score}:{id}"),
            Cursor::Stream { entry, read } => write!(f, "{entry}:{read}"),
        }
    }
}

/// A job id as a cursor carries it: 1 to 128 visible ASCII characters.
fn cursor_id(text: &str) -> Option<String> {
    let ok = !text.is_empty() && text.len() <= MAX_CURSOR_ID && text.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| text.to_owned())
}

/// A page size: 1 to [`MAX_LIMIT`].
pub fn check_limit(limit: usize) -> Result<usize, String> {
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(format!("must be a whole number from 1 to {MAX_LIMIT}"))
    }
}

/// One job of a list: never its payload.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub id: String,
    pub kind: Kind,
    pub status: JobStatus,
    pub producer: String,
    pub attempts: u32,
    pub max_attempts: u32,
    pub created_at: DateTime<Utc>,
    pub run_at: DateTime<Utc>,
    /// As operators see it: redacted.
    pub last_error: Option<String>,
    /// The worker running it, or that ran its last attempt.
    pub worker: Option<String>,
    /// Start of the current or last attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// When the running attempt's lease ends unless the worker renews it (running jobs only).
    pub lease_deadline: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobSummary {
    fn read(id: &str, kind: Kind, record: &JobRecord, lease_deadline: Option<i64>) -> Self {
        JobSummary {
            id: id.to_owned(),
            kind,
            status: record.status,
            producer: record.producer.clone(),
            attempts: record.attempts,
            max_attempts: record.max_attempts,
            created_at: millis(record.created_at),
            run_at: millis(record.run_at),
            last_error: record.last_error.as_deref().filter(|e| !e.is_empty()).map(redact_text),
            worker: record.worker.clone().filter(|w| !w.is_empty()),
            started_at: record.started_at.map(millis),
            lease_deadline: lease_deadline.map(millis),
            finished_at: record.finished_at.map(millis),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobPage {
    pub items: Vec<JobSummary>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// One job in full, shown as a dead letter is: payload and errors redacted.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub idempotency_key: Option<String>,
    /// Its priority; absent for `normal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Its group; absent when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Why it died, for a dead letter.
    pub reason: Option<DeadReason>,
    pub dead_at: Option<DateTime<Utc>>,
    /// Secrets and OTP codes replaced by `[redacted]`; absent once the job has succeeded.
    pub payload: Option<Value>,
    /// Every finished attempt, oldest first.
    pub history: Vec<Attempt>,
    /// Operator actions on this job so far.
    pub notes: Vec<String>,
    /// The provider's delivery report, once one came ([`crate::delivery`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<crate::delivery::Delivery>,
}

/// How many jobs of a kind are in each state that can be counted in O(1): the stream indexes
/// hold several ids per entry, so they have no count.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StateCounts {
    pub queued: u64,
    pub scheduled: u64,
    pub retrying: u64,
    pub running: u64,
}

impl StateCounts {
    pub fn of(&self, state: JobState) -> Option<u64> {
        match state {
            JobState::Queued => Some(self.queued),
            JobState::Scheduled => Some(self.scheduled),
            JobState::Retrying => Some(self.retrying),
            JobState::Running => Some(self.running),
            JobState::Succeeded | JobState::Cancelled => None,
        }
    }
}

/// Ids read, in page order, with what the next cursor needs of each.
type Read = Vec<(String, Option<i64>, Cursor)>;

/// Reads every job of every queue of one namespace.
#[derive(Debug, Clone)]
pub struct JobBrowser {
    conn: Conn,
    keys: Keys,
}

impl DeadLetters {
    /// The live jobs of the same namespace, through the same connection.
    pub fn browser(&self) -> JobBrowser {
        JobBrowser::new(self.conn.clone(), self.keys.clone())
    }
}

impl JobBrowser {
    pub fn new(conn: Conn, keys: Keys) -> Self {
        Self { conn, keys }
    }

    /// One page of `kind`'s jobs in `state`, after `cursor`. `limit` is checked by
    /// [`check_limit`]; a cursor of another state reads as a first page.
    pub async fn list(
        &self,
        kind: Kind,
        state: JobState,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<JobPage, StoreError> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let q = self.keys.queue(kind);
        let read = match state {
            JobState::Queued => self.read_ready(&q, cursor, limit).await?,
            JobState::Scheduled => self.read_sorted(&q.scheduled(), cursor, limit).await?,
            JobState::Retrying => self.read_sorted(&q.retry(), cursor, limit).await?,
            JobState::Running => self.read_sorted(&q.active(), cursor, limit).await?,
            JobState::Succeeded => self.read_stream(&q.succeeded(), cursor, limit).await?,
            JobState::Cancelled => self.read_stream(&q.cancelled(), cursor, limit).await?,
        };
        let more = read.len() > limit;
        let mut read = read;
        read.truncate(limit);
        let next_cursor = if more { read.last().map(|(_, _, c)| c.to_string()) } else { None };
        let records = self.records(&q, read.iter().map(|(id, _, _)| id.as_str())).await?;
        let items = read
            .iter()
            .zip(records)
            .filter_map(|((id, score, _), record)| {
                let record = record?;
                shown_in(state, record.status).then(|| {
                    let lease = if state == JobState::Running { *score } else { None };
                    JobSummary::read(id, kind, &record, lease)
                })
            })
            .collect();
        Ok(JobPage { items, next_cursor })
    }

    /// The records of `ids`, one `MGET`; `None` for a missing or unreadable one.
    async fn records<'a>(
        &self,
        q: &QueueKeys,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<Option<JobRecord>>, StoreError> {
        let keys: Vec<String> = ids.map(|id| q.job(id)).collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let raws: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query_async(&mut self.conn.clone()).await?;
        Ok(raws.into_iter().map(|raw| raw.and_then(|raw| JobRecord::decode(&raw).ok())).collect())
    }

    /// The ids at right-indexes `from..=to` of the ready list `list`, oldest first.
    /// Indexes past an i64 (a cursor is a caller's text) name no position of any list: empty,
    /// never a range Redis would clamp to the whole list.
    async fn ready_range(&self, list: &str, from: u64, to: u64) -> Result<Vec<String>, StoreError> {
        let (Ok(from), Ok(to)) = (i64::try_from(from), i64::try_from(to)) else { return Ok(Vec::new()) };
        let (start, stop) = (-to - 1, -from - 1);
        let mut ids: Vec<String> =
            redis::cmd("LRANGE").arg(list).arg(start).arg(stop).query_async(&mut self.conn.clone()).await?;
        ids.reverse();
        Ok(ids)
    }

    /// Up to `limit + 1` ids of the ready lists after the cursor: the ungrouped list of each
    /// lane in the order fetches serve them (high, normal, low), each oldest first. Jobs
    /// waiting in a group's list are counted but not listed here.
    async fn read_ready(&self, q: &QueueKeys, cursor: Option<&Cursor>, limit: usize) -> Result<Read, StoreError> {
        let (first, mut at) = match cursor {
            Some(Cursor::List { index, id }) => (Priority::Normal, Some((*index, id.as_str()))),
            Some(Cursor::Lane { lane, index, id }) => (*lane, Some((*index, id.as_str()))),
            _ => (Priority::High, None),
        };
        let mut out: Read = Vec::new();
        for lane in Priority::ALL.into_iter().skip_while(|p| *p != first) {
            let want = limit + 1 - out.len();
            let (start, ids) = self.read_lane(&q.lane(lane), at.take(), want - 1).await?;
            out.extend(ids.into_iter().take(want).enumerate().map(|(i, id)| {
                let index = start.saturating_add(i as u64);
                let cursor = match lane {
                    Priority::Normal => Cursor::List { index, id: id.clone() },
                    _ => Cursor::Lane { lane, index, id: id.clone() },
                };
                (id, None, cursor)
            }));
            if out.len() > limit {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `limit + 1` ids of one ready list after `at` (a right-index and the id there when
    /// the cursor was made), oldest first, with the right-index of the first.
    async fn read_lane(
        &self,
        list: &str,
        at: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let page = limit as u64 + 1;
        Ok(match at {
            Some((index, id)) => {
                // One read around the id's index and past it: it is there unless jobs were
                // popped meanwhile, which moves it towards the right end.
                let from = index.saturating_sub(limit as u64);
                let window = self.ready_range(list, from, index.saturating_add(page)).await?;
                let at = usize::try_from(index - from).unwrap_or(usize::MAX).min(window.len());
                if let Some(found) = window[..at.saturating_add(1).min(window.len())].iter().rposition(|w| w == id) {
                    let start = from + found as u64 + 1;
                    (start, window.into_iter().skip(found + 1).take(limit + 1).collect())
                } else {
                    let start = self.ready_position(list, id, index).await?.map_or(0, |found| found + 1);
                    (start, self.ready_range(list, start, start.saturating_add(limit as u64)).await?)
                }
            }
            None => (0, self.ready_range(list, 0, limit as u64).await?),
        })
    }

    /// The right-index of `id` in the ready list `list`, looking at most `index + 1` ids from the
    /// right (where it was when the cursor was made: it can only have moved right) and never
    /// more than [`LPOS_SCAN`]; `None` once it was popped, or when it lies deeper.
    async fn ready_position(&self, list: &str, id: &str, index: u64) -> Result<Option<u64>, StoreError> {
        let (len, at): (u64, Option<u64>) = redis::pipe()
            .atomic()
            .llen(list)
            .cmd("LPOS")
            .arg(list)
            .arg(id)
            .arg("RANK")
            .arg(-1)
            .arg("MAXLEN")
            .arg(index.saturating_add(1).min(LPOS_SCAN))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(at.map(|head_index| len.saturating_sub(head_index + 1)))
    }

    /// Up to `limit + 1` members of a ZSET after the cursor, lowest score first.
    async fn read_sorted(&self, key: &str, cursor: Option<&Cursor>, limit: usize) -> Result<Read, StoreError> {
        let mut conn = self.conn.clone();
        let rows: Vec<(String, f64)> = match cursor {
            Some(Cursor::Sorted { score, id }) => {
                let mut call = AFTER.prepare_invoke();
                call.key(key).arg(score.to_string()).arg(id).arg(limit + 1);
                call.invoke_async(&mut conn).await?
            }
            _ => redis::cmd("ZRANGE").arg(key).arg(0).arg(limit).arg("WITHSCORES").query_async(&mut conn).await?,
        };
        Ok(rows
            .into_iter()
            .map(|(id, score)| {
                #[expect(clippy::cast_possible_truncation, reason = "scores are ms since the epoch, exact in an f64")]
                let ms = score as i64;
                let cursor = Cursor::Sorted { score, id: id.clone() };
                (id, Some(ms), cursor)
            })
            .collect())
    }

    /// Up to `limit + 1` ids of a stream index after the cursor, newest first, reading entries
    /// a few at a time (each entry holds one or more ids).
    async fn read_stream(&self, key: &str, cursor: Option<&Cursor>, limit: usize) -> Result<Read, StoreError> {
        let mut conn = self.conn.clone();
        let (mut end, mut skip_in, mut skip) = match cursor {
            Some(Cursor::Stream { entry, read }) => (entry.clone(), Some(entry.clone()), *read),
            _ => ("+".to_owned(), None, 0),
        };
        let mut out: Read = Vec::new();
        while out.len() <= limit {
            let count = (limit + 1 - out.len()).min(100);
            let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XREVRANGE")
                .arg(key)
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(count)
                .query_async(&mut conn)
                .await?;
            let got = entries.len();
            for (entry, fields) in entries {
                let from = if skip_in.as_deref() == Some(entry.as_str()) { skip } else { 0 };
                let ids = fields.iter().step_by(2).map(|f| String::from_utf8_lossy(f).into_owned());
                for (n, id) in ids.enumerate().skip(from) {
                    out.push((id, None, Cursor::Stream { entry: entry.clone(), read: n + 1 }));
                }
                end = format!("({entry}");
            }
            (skip_in, skip) = (None, 0);
            if got < count {
                break;
            }
        }
        Ok(out)
    }

    /// How many of `kind`'s jobs are queued, scheduled, retrying and running.
    pub async fn counts(&self, kind: Kind) -> Result<StateCounts, StoreError> {
        let q = self.keys.queue(kind);
        let (queued, [scheduled, retrying, running]) =
            crate::lanes::queued_and_sizes(&self.conn, &q, [q.scheduled(), q.retry(), q.active()]).await?;
        Ok(StateCounts { queued, scheduled, retrying, running })
    }

    /// Since when the oldest queued job of `kind` has been ready (its due time): the queue's
    /// latency is the time since. The same reading as the latency gauge
    /// ([`crate::pause::oldest_ready`]): the ids next out, finished ones skipped, the earliest
    /// taken, as due delayed jobs and retries are pushed in front of older ones.
    pub async fn oldest_queued(&self, kind: Kind) -> Result<Option<DateTime<Utc>>, StoreError> {
        let (oldest, _) = crate::pause::oldest_ready(&self.conn, &self.keys, kind).await?;
        Ok(oldest.map(millis))
    }

    /// One job by id, whatever its state, with its attempts; `None` when unknown or expired.
    pub async fn job(&self, id: &str) -> Result<Option<JobDetail>, StoreError> {
        let Some((kind, record)) = crate::record::find(&self.conn, &self.keys, id).await? else { return Ok(None) };
        let lease = if record.status == JobStatus::Running {
            redis::cmd("ZSCORE")
                .arg(self.keys.queue(kind).active())
                .arg(id)
                .query_async::<Option<f64>>(&mut self.conn.clone())
                .await?
        } else {
            None
        };
        #[expect(clippy::cast_possible_truncation, reason = "scores are ms since the epoch, exact in an f64")]
        let lease = lease.map(|s| s as i64);
        let payload = record.payload.as_deref().map(|p| redact(kind, serde_json::from_str(p).unwrap_or(Value::Null)));
        Ok(Some(JobDetail {
            summary: JobSummary::read(id, kind, &record, lease),
            idempotency_key: record.idempotency_key.clone().filter(|k| !k.is_empty()),
            delivery: record.delivery.as_ref().map(crate::delivery::StoredDelivery::shown),
            priority: (!record.priority.is_normal()).then_some(record.priority),
            group: record.group.clone(),
            reason: record.reason,
            dead_at: record.dead_at.map(millis),
            payload,
            history: record
                .history
                .iter()
                .map(|a| Attempt {
                    attempt: a.attempt,
                    started_at: a.started_at,
                    finished_at: a.finished_at,
                    error: a.error.as_deref().map(redact_text),
                    worker: a.worker.clone(),
                })
                .collect(),
            notes: record.notes,
        }))
    }
}

/// Whether a record of `status` belongs in the list of `state`: a live list skips ids whose
/// job finished meanwhile (a cancelled id lingering in the ready list), an index skips ids
/// whose record changed since (a replayed job).
fn shown_in(state: JobState, status: JobStatus) -> bool {
    match state {
        JobState::Queued | JobState::Scheduled | JobState::Retrying | JobState::Running => {
            !matches!(status, JobStatus::Succeeded | JobStatus::Cancelled | JobStatus::Dead | JobStatus::Expired)
        }
        JobState::Succeeded => status == JobStatus::Succeeded,
        JobState::Cancelled => status == JobStatus::Cancelled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        for (state, text) in [
            (JobState::Queued, "12:0190a-b"),
            (JobState::Scheduled, "1764254806000:0190a-b"),
            (JobState::Running, "1764254806000.5:x"),
            (JobState::Succeeded, "1764254806000-3:7"),
        ] {
            assert_eq!(Cursor::parse(state, text).unwrap().to_string(), text, "{state}");
        }
        for (state, text) in [
            (JobState::Queued, "x:id"),
            (JobState::Queued, "-1:id"),
            (JobState::Queued, "3:"),
            (JobState::Queued, "3"),
            (JobState::Scheduled, "NaN:id"),
            (JobState::Scheduled, "inf:id"),
            (JobState::Scheduled, "1:a b"),
            (JobState::Retrying, &format!("1:{}", "a".repeat(129))),
            (JobState::Succeeded, "17:3"),
            (JobState::Cancelled, "17-0:0"),
            (JobState::Cancelled, "17-0:x"),
        ] {
            let error = Cursor::parse(state, text).unwrap_err();
            assert!(error.contains(state.as_str()), "{error}");
        }
    }

    #[test]
    fn states_and_limits_name_their_rule() {
        assert_eq!("retrying".parse::<JobState>().unwrap(), JobState::Retrying);
        assert!("dead".parse::<JobState>().unwrap_err().contains("queued, scheduled"));
        assert_eq!(check_limit(500), Ok(500));
        assert!(check_limit(0).is_err() && check_limit(501).is_err());
    }
}
