//! What operators read, never change: the dead letters (listed with filters and a total,
//! one in full with its payload redacted and every attempt) and each queue's counts and
//! per-minute outcomes. The changes (replay, delete) are `dead`'s; as asynq splits
//! `inspect.go` from `rdb.go`.
//!
//! Listing walks each queue's dead set newest first in chunks of [`CHUNK`] ids, one pipelined
//! read of their records per chunk, filtering in this process, so Redis never runs a long
//! script for a search.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dead::DeadLetters;
use crate::keys::QueueKeys;
use crate::record::{AttemptRecord, DeadReason, JobRecord, millis};
use crate::redact::{redact, redact_text};
use crate::{JobStatus, Kind, StoreError};

/// Ids read per round trip while listing or searching.
pub const CHUNK: usize = 1000;

/// Which dead letters: every field narrows; none means all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadFilter {
    #[serde(default)]
    pub kind: Option<Kind>,
    /// `exhausted`, `permanent`, `expired`, `panicked` or `suppressed`.
    #[serde(default)]
    pub reason: Option<String>,
    /// Case-insensitive text in the last error or the payload, both as shown (redacted): a
    /// secret cannot be found by probing for it.
    #[serde(default)]
    pub q: Option<String>,
    /// Died at or after.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Died before.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

impl DeadFilter {
    /// The rule each field must pass, as `(field, message)`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(reason) = &self.reason
            && let Err(rule) = reason.parse::<DeadReason>()
        {
            return Err(("reason", rule));
        }
        if let Some(q) = &self.q
            && (q.is_empty() || q.len() > 256)
        {
            return Err(("q", "must be 1 to 256 characters".into()));
        }
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since >= until
        {
            return Err(("until", "must be later than since".into()));
        }
        Ok(())
    }

    fn kinds(&self) -> Vec<Kind> {
        self.kind.map_or_else(|| Kind::ALL.to_vec(), |k| vec![k])
    }

    /// Whether only the time range narrows (a count needs no scan).
    fn by_time_only(&self) -> bool {
        self.reason.is_none() && self.q.is_none()
    }

    fn matches(&self, letter: &Letter) -> bool {
        if self.reason.as_ref().is_some_and(|r| r != letter.reason.as_str()) {
            return false;
        }
        match &self.q {
            None => true,
            Some(q) => {
                let q = q.to_lowercase();
                letter.last_error.as_deref().is_some_and(|e| redact_text(e).to_lowercase().contains(&q))
                    || letter.redacted_payload().to_string().to_lowercase().contains(&q)
            }
        }
    }
}

/// One line of the list.
#[derive(Debug, Clone, Serialize)]
pub struct DeadSummary {
    pub id: String,
    pub kind: Kind,
    pub dead_at: DateTime<Utc>,
    pub attempts: u32,
    pub reason: DeadReason,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadPage {
    pub items: Vec<DeadSummary>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
    /// How many letters match the filter in all.
    pub total: u64,
}

/// One attempt, as the worker recorded it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    pub started_at: i64,
    pub finished_at: i64,
    pub error: Option<String>,
    pub worker: String,
}

impl Attempt {
    /// As operators see it: the error redacted.
    fn shown(record: &AttemptRecord) -> Self {
        Attempt {
            attempt: record.attempt,
            started_at: record.started_at,
            finished_at: record.finished_at,
            error: record.error.as_deref().map(redact_text),
            worker: record.worker.clone(),
        }
    }
}

/// A dead letter in full.
#[derive(Debug, Clone, Serialize)]
pub struct DeadRecord {
    #[serde(flatten)]
    pub summary: DeadSummary,
    /// `dead` or `expired`.
    pub status: JobStatus,
    pub producer: String,
    pub created_at: Option<DateTime<Utc>>,
    pub max_attempts: u32,
    pub idempotency_key: Option<String>,
    /// Secrets and OTP codes replaced by `[redacted]`.
    pub payload: Value,
    /// Every attempt, oldest first (replays included).
    pub history: Vec<Attempt>,
    /// Operator actions on this job so far (`replayed by ops at ...`).
    pub notes: Vec<String>,
}

/// A dead letter as read from its record.
#[derive(Debug, Clone)]
pub(crate) struct Letter {
    pub(crate) id: String,
    pub(crate) kind: Kind,
    pub(crate) status: JobStatus,
    pub(crate) reason: DeadReason,
    pub(crate) dead_at: DateTime<Utc>,
    pub(crate) attempts: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) payload: String,
    pub(crate) producer: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) max_attempts: u32,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) notes: Vec<String>,
    pub(crate) history: Vec<AttemptRecord>,
}

impl Letter {
    /// `None` unless the record is a dead letter.
    fn read(id: &str, kind: Kind, record: JobRecord) -> Option<Self> {
        if !record.is_dead_letter() {
            return None;
        }
        Some(Self {
            id: id.to_owned(),
            kind,
            status: record.status,
            reason: record.reason.unwrap_or(DeadReason::Exhausted),
            dead_at: millis(record.dead_at.unwrap_or_default()),
            attempts: record.attempts,
            last_error: record.last_error.filter(|e| !e.is_empty()),
            payload: record.payload.unwrap_or_default(),
            producer: record.producer,
            created_at: millis(record.created_at),
            max_attempts: record.max_attempts,
            idempotency_key: record.idempotency_key.filter(|k| !k.is_empty()),
            notes: record.notes,
            history: record.history,
        })
    }

    fn redacted_payload(&self) -> Value {
        redact(self.kind, serde_json::from_str(&self.payload).unwrap_or(Value::Null))
    }

    fn summary(&self) -> DeadSummary {
        DeadSummary {
            id: self.id.clone(),
            kind: self.kind,
            dead_at: self.dead_at,
            attempts: self.attempts,
            reason: self.reason,
            last_error: self.last_error.as_deref().map(redact_text),
        }
    }
}

/// Where a listing resumes: after `(dead_at ms, id)`, newest first.
fn encode_cursor(dead_at: DateTime<Utc>, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", dead_at.timestamp_millis()))
}

pub fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (ms, id) = text.split_once(':')?;
    Some((ms.parse().ok()?, id.to_owned()))
}

impl DeadLetters {
    /// One chunk of a queue's dead set, newest first, from `max` (ms, inclusive) down to `min`,
    /// skipping the first `skip` ids at score `max`: each id with its score and its letter
    /// (`None` for an id whose hash is no longer a dead letter).
    async fn chunk(
        &self,
        q: &QueueKeys,
        kind: Kind,
        max: i64,
        skip: usize,
        min: i64,
    ) -> Result<Vec<(i64, Option<Letter>)>, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<(String, i64)> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(q.dead())
            .arg(max)
            .arg(min)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(skip)
            .arg(CHUNK)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, _) in &ids {
            pipe.get(q.job(id));
        }
        let rows: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
        // An unreadable record (a foreign writer's) is skipped like a vanished one, so one bad
        // key never hides every other letter from operators.
        Ok(ids
            .into_iter()
            .zip(rows)
            .map(|((id, score), raw)| {
                let letter = raw.and_then(|raw| JobRecord::decode(&raw).ok()).and_then(|r| Letter::read(&id, kind, r));
                (score, letter)
            })
            .collect())
    }

    /// Walks the letters of `kind` matching `filter`, newest first, from the cursor on, calling
    /// `visit` for each; stops when `visit` returns false.
    async fn walk(
        &self,
        kind: Kind,
        filter: &DeadFilter,
        after: Option<&(i64, String)>,
        mut visit: impl FnMut(Letter) -> bool,
    ) -> Result<(), StoreError> {
        let q = self.keys.queue(kind);
        let min = filter.since.map_or(i64::MIN, |t| t.timestamp_millis());
        let mut max = filter.until.map_or(i64::MAX, |t| t.timestamp_millis() - 1);
        let mut skip = 0;
        if let Some((ms, id)) = after
            && *ms <= max
        {
            max = *ms;
            // Ids at the cursor's own time that sort at or above it were shown already.
            let same: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(q.dead())
                .arg(*ms)
                .arg(*ms)
                .query_async(&mut self.conn.clone())
                .await?;
            skip = same.iter().filter(|m| m.as_str() >= id.as_str()).count();
        }
        loop {
            let chunk = self.chunk(&q, kind, max, skip, min).await?;
            let Some(&(last_score, _)) = chunk.last() else { return Ok(()) };
            let read = chunk.len();
            let at_last = chunk.iter().filter(|(s, _)| *s == last_score).count();
            for letter in chunk.into_iter().filter_map(|(_, l)| l) {
                if filter.matches(&letter) && !visit(letter) {
                    return Ok(());
                }
            }
            if read < CHUNK {
                return Ok(());
            }
            skip = if last_score == max { skip + at_last } else { at_last };
            max = last_score;
        }
    }

    /// A page of letters matching `filter`, newest first, and how many match in all.
    pub async fn list(&self, filter: &DeadFilter, limit: usize, cursor: Option<&str>) -> Result<DeadPage, StoreError> {
        let limit = limit.max(1);
        let after = cursor.and_then(decode_cursor);
        // A first page of a filter that reads the letters counts them in the same walk.
        let counting = after.is_none() && !filter.by_time_only();
        let mut found: Vec<Letter> = Vec::new();
        let mut total = 0u64;
        for kind in filter.kinds() {
            let mut mine = Vec::new();
            self.walk(kind, filter, after.as_ref(), |letter| {
                total += 1;
                if mine.len() <= limit {
                    mine.push(letter);
                }
                counting || mine.len() <= limit
            })
            .await?;
            found.extend(mine);
        }
        if !counting {
            total = self.count(filter).await?;
        }
        found.sort_by(|a, b| (b.dead_at, &b.id).cmp(&(a.dead_at, &a.id)));
        let next_cursor = (found.len() > limit).then(|| {
            let last = &found[limit - 1];
            encode_cursor(last.dead_at, &last.id)
        });
        found.truncate(limit);
        Ok(DeadPage { items: found.iter().map(Letter::summary).collect(), next_cursor, total })
    }

    async fn count_by_time(&self, kind: Kind, filter: &DeadFilter) -> Result<u64, StoreError> {
        let min = filter.since.map_or_else(|| "-inf".to_owned(), |t| t.timestamp_millis().to_string());
        let max = filter.until.map_or_else(|| "+inf".to_owned(), |t| format!("({}", t.timestamp_millis()));
        let mut conn = self.conn.clone();
        Ok(redis::cmd("ZCOUNT").arg(self.keys.queue(kind).dead()).arg(min).arg(max).query_async(&mut conn).await?)
    }

    /// How many letters match `filter`.
    pub async fn count(&self, filter: &DeadFilter) -> Result<u64, StoreError> {
        let mut total = 0;
        for kind in filter.kinds() {
            if filter.by_time_only() {
                total += self.count_by_time(kind, filter).await?;
            } else {
                self.walk(kind, filter, None, |_| {
                    total += 1;
                    true
                })
                .await?;
            }
        }
        Ok(total)
    }

    /// The ids (with their kinds) of every letter matching `filter`, newest first per kind.
    pub async fn matching(&self, filter: &DeadFilter) -> Result<Vec<(Kind, String)>, StoreError> {
        let mut ids = Vec::new();
        for kind in filter.kinds() {
            self.walk(kind, filter, None, |letter| {
                ids.push((kind, letter.id));
                true
            })
            .await?;
        }
        Ok(ids)
    }

    pub(crate) async fn letter(&self, id: &str) -> Result<Option<Letter>, StoreError> {
        let found = crate::record::find(&self.conn, &self.keys, id).await?;
        Ok(found.and_then(|(kind, record)| Letter::read(id, kind, record)))
    }

    /// One dead letter in full, or `None`.
    pub async fn get(&self, id: &str) -> Result<Option<DeadRecord>, StoreError> {
        let Some(letter) = self.letter(id).await? else { return Ok(None) };
        Ok(Some(DeadRecord {
            summary: letter.summary(),
            payload: letter.redacted_payload(),
            status: letter.status,
            producer: letter.producer,
            created_at: Some(letter.created_at),
            max_attempts: letter.max_attempts,
            idempotency_key: letter.idempotency_key,
            history: letter.history.iter().map(Attempt::shown).collect(),
            notes: letter.notes,
        }))
    }

    /// The kind and the stored payload (unredacted) of a dead letter, for an edit.
    pub async fn payload(&self, id: &str) -> Result<Option<(Kind, String)>, StoreError> {
        Ok(self.letter(id).await?.map(|l| (l.kind, l.payload)))
    }
    /// Per-minute outcomes of `kind` over the last `minutes` minutes, oldest first:
    /// `(minute start, succeeded, failed)`.
    pub async fn throughput(
        &self,
        kind: Kind,
        now: DateTime<Utc>,
        minutes: i64,
    ) -> Result<Vec<(DateTime<Utc>, u64, u64)>, StoreError> {
        let q = self.keys.queue(kind);
        let current = now.timestamp() / 60;
        let mut pipe = redis::pipe();
        for m in (current - minutes + 1)..=current {
            pipe.cmd("HMGET").arg(q.stats(m)).arg("succeeded").arg("failed");
        }
        let rows: Vec<(Option<u64>, Option<u64>)> = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(((current - minutes + 1)..=current)
            .zip(rows)
            .map(|(m, (ok, failed))| {
                (DateTime::from_timestamp(m * 60, 0).unwrap_or_default(), ok.unwrap_or(0), failed.unwrap_or(0))
            })
            .collect())
    }

    /// How many of `kind`'s jobs wait out a retry backoff.
    pub async fn retrying(&self, kind: Kind) -> Result<u64, StoreError> {
        Ok(redis::cmd("ZCARD").arg(self.keys.queue(kind).retry()).query_async(&mut self.conn.clone()).await?)
    }

    /// Jobs per state of `kind`: queued, scheduled (waiting for their time or a retry),
    /// running, retrying (among scheduled), dead.
    pub async fn depths(&self, kind: Kind) -> Result<Depths, StoreError> {
        let q = self.keys.queue(kind);
        let (queued, [delayed, retrying, running, dead]) =
            crate::lanes::queued_and_sizes(&self.conn, &q, [q.scheduled(), q.retry(), q.active(), q.dead()]).await?;
        Ok(Depths { queued, scheduled: delayed + retrying, running, dead })
    }
}

/// A queue's counts.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Depths {
    pub queued: u64,
    /// Waiting for their time: delayed jobs and retries.
    pub scheduled: u64,
    pub running: u64,
    pub dead: u64,
}

impl Depths {
    /// Jobs not finished yet: queued, waiting (delayed or retrying) and running.
    pub fn unfinished(&self) -> u64 {
        self.queued + self.scheduled + self.running
    }
}
