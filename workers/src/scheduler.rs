//! Recurring schedules, fired by every worker that runs this loop (`WORKER_SCHEDULER`, on by
//! default) with no leader. Redis keeps each schedule's next fire time in a sorted set; a pass
//! claims only the schedules that are due (a short lease keeps other workers off them), fires
//! each due tick's job under the idempotency key `schedule:<name>:<tick>`, which `enqueue.lua`
//! admits once per queue, atomically, and records the tick and the next fire time (a
//! compare-and-set on the definition). The due schedules of a pass are fired concurrently, so
//! one producer's thousands of schedules do not hold up another's tick, and a pass costs the
//! same however many schedules are not due. Any worker can stop at any moment: when its lease
//! ends, the others, or itself on restart, carry on from the last fired tick.
//!
//! The loop wakes at the earliest next fire time, and at least every second. Ticks are
//! judged by Redis's clock (the claim reads it), so a worker whose own clock is skewed fires
//! neither early nor late.
//!
//! A paused schedule is never claimed; a tick claimed just before a pause is enqueued with
//! the claim's time, and `enqueue.lua` refuses it if the pause came at or after it
//! ([`jobs::Store::enqueue_tick`]), so once a pause has answered no tick of it fires.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use jobs::schedule::{Claimed, Due, Schedule, ScheduleStore, Source, Timetable, due};
use jobs::store::TickClaim;
use jobs::{EnqueueOutcome, Store};

/// Every second at least, the loop looks for due schedules.
const POLL: Duration = Duration::from_secs(1);

/// How long a claimed schedule stays this worker's before another may take it: well under
/// `catch_up: none`'s grace, so a worker dying mid-pass does not make a tick count as missed.
const LEASE: chrono::Duration = chrono::Duration::seconds(5);

/// The most schedules one claim takes; a full claim is followed by another at once.
const CLAIM_BATCH: usize = 1000;

/// Due schedules fired at the same time (their Redis calls are pipelined on one connection).
const CONCURRENCY: usize = 128;

/// Timetables kept by a worker, by expression and zone.
pub const TIMETABLE_CACHE: usize = 1024;

/// Parsed timetables by (cron, time zone), at most `capacity` of them: full, it starts over,
/// so distinct expressions cannot grow a worker without end.
#[derive(Debug)]
pub struct TimetableCache {
    tables: HashMap<(String, String), Option<Timetable>>,
    capacity: usize,
}

impl TimetableCache {
    pub fn new(capacity: usize) -> Self {
        Self { tables: HashMap::new(), capacity: capacity.max(1) }
    }

    /// The schedule's timetable; `None` if its stored expression no longer reads.
    pub fn get(&mut self, schedule: &Schedule) -> Option<Timetable> {
        let key = (schedule.cron.clone(), schedule.timezone.clone());
        if let Some(table) = self.tables.get(&key) {
            return table.clone();
        }
        if self.tables.len() >= self.capacity {
            self.tables.clear();
        }
        self.tables.entry(key).or_insert_with(|| schedule.timetable()).clone()
    }

    pub fn len(&self) -> usize {
        self.tables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

/// Schedules from `SCHEDULES_FILE`: a TOML file of `[[schedule]]` tables, each as
/// `POST /v1/schedules` takes it (`name`, `cron`, `timezone`, `catch_up`, `[schedule.job]`).
pub fn read_file(path: &str, now: DateTime<Utc>) -> Result<Vec<Schedule>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        schedule: Vec<toml::Value>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let file: File =
        toml::from_str(&text).map_err(|e| format!("{path} is not a TOML file of [[schedule]] tables: {e}"))?;
    let mut names = std::collections::BTreeSet::new();
    file.schedule
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let value = serde_json::to_value(entry).map_err(|e| format!("{path}: schedule {}: {e}", i + 1))?;
            let (schedule, _) =
                Schedule::parse(value, &format!("/schedule/{i}"), Source::File, "file", now).map_err(|errors| {
                    let list: Vec<String> = errors.iter().map(|e| format!("{} {}", e.field, e.message)).collect();
                    format!("{path}: {}", list.join("; "))
                })?;
            if !names.insert(schedule.name.clone()) {
                return Err(format!("{path}: schedule `{}` is defined twice", schedule.name));
            }
            Ok(schedule)
        })
        .collect()
}

/// Stores the file's schedules: new or changed ones are written (their ticks count from now),
/// unchanged ones are left alone so a restart neither re-fires nor forgets their missed ticks,
/// and file schedules no longer in the file are deleted. An operator's pause survives both:
/// the definition is replaced, the pause kept. Every worker should be given the same
/// file: the last one to start wins.
pub async fn load(store: &ScheduleStore, schedules: &[Schedule]) -> Result<(), jobs::StoreError> {
    let existing: HashMap<String, Schedule> =
        store.list().await?.into_iter().map(|l| (l.schedule.name.clone(), l.schedule)).collect();
    for old in existing.values().filter(|s| s.source == Source::File) {
        if !schedules.iter().any(|s| s.name == old.name) {
            store.delete_from_file(&old.name).await?;
            tracing::info!(schedule = %old.name, "schedule no longer in SCHEDULES_FILE; deleted");
        }
    }
    for schedule in schedules {
        let same = existing.get(&schedule.name).is_some_and(|old| {
            (old.source, &old.cron, &old.timezone, old.catch_up, &old.job)
                == (schedule.source, &schedule.cron, &schedule.timezone, schedule.catch_up, &schedule.job)
        });
        if !same {
            store.put(schedule).await?;
            tracing::info!(schedule = %schedule.name, "schedule loaded from SCHEDULES_FILE");
        }
    }
    Ok(())
}

/// Runs until the process ends.
pub async fn run(schedules: ScheduleStore, queue: Store) {
    let mut tables = TimetableCache::new(TIMETABLE_CACHE);
    match schedules.reconcile().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(schedules = n, "next fire times brought forward to their stored definitions"),
        Err(e) => {
            tracing::warn!(error = %e, "next fire times not reconciled; the first pass indexes what is not");
        }
    }
    loop {
        let pass = std::time::Instant::now();
        // Until a claim answers, this host's clock; then Redis's, which every scheduler shares.
        let mut now = Utc::now();
        let mut wake = now + chrono::Duration::from_std(POLL).unwrap_or_default();
        match schedules.claim(LEASE, CLAIM_BATCH).await {
            Ok(claim) => {
                now = claim.now;
                wake = now + chrono::Duration::from_std(POLL).unwrap_or_default();
                let full = claim.due.len() == CLAIM_BATCH;
                let work: Vec<(Schedule, Option<Timetable>, Option<DateTime<Utc>>)> = claim
                    .due
                    .into_iter()
                    .filter_map(|c| read(&c))
                    .map(|(schedule, last)| {
                        let table = tables.get(&schedule);
                        (schedule, table, last)
                    })
                    .collect();
                let nexts: Vec<Option<DateTime<Utc>>> = futures::stream::iter(work)
                    .map(|(schedule, table, last)| look(&schedules, &queue, schedule, table, last, now))
                    .buffer_unordered(CONCURRENCY)
                    .collect()
                    .await;
                if full {
                    continue;
                }
                wake = nexts.into_iter().flatten().chain(claim.next).fold(wake, DateTime::min);
            }
            Err(e) => tracing::warn!(error = %e, "due schedules not read; retrying"),
        }
        // How long until `wake` by the clock `now` was read from, less the time this pass took.
        let sleep = (wake - now).to_std().unwrap_or_default().saturating_sub(pass.elapsed());
        tokio::time::sleep(sleep).await;
    }
}

/// A claimed schedule's definition; one that no longer reads (a foreign writer) is logged and
/// left to its lease.
fn read(claimed: &Claimed) -> Option<(Schedule, Option<DateTime<Utc>>)> {
    match serde_json::from_str::<Schedule>(&claimed.definition) {
        Ok(schedule) => Some((schedule, claimed.last)),
        Err(e) => {
            tracing::error!(schedule = %claimed.name, error = %e, "a stored schedule does not read; ignored");
            None
        }
    }
}

/// Fires or skips the schedule's due tick, if any, and records when to look at it next,
/// which it returns.
async fn look(
    schedules: &ScheduleStore,
    queue: &Store,
    schedule: Schedule,
    table: Option<Timetable>,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let Some(table) = table else {
        tracing::error!(schedule = %schedule.name, cron = %schedule.cron, "a stored cron expression no longer reads; looked at again in an hour");
        let _ = schedules.settle(&schedule, None, now + chrono::Duration::hours(1)).await;
        return None;
    };
    // A tick recorded before the schedule was replaced does not count for it.
    let since = last.map_or(schedule.updated_at, |l| l.max(schedule.updated_at));
    let mut next = table.next_after(now).unwrap_or(now + chrono::Duration::days(1));
    let tick = match due(&table, since, now, schedule.catch_up) {
        Due::Fire(tick) => match fire(queue, &schedule, tick, now).await {
            Fired::Done => Some(tick),
            Fired::Retry => {
                // Not enqueued: looked at again in a second (the job's key keeps it single).
                next = now + chrono::Duration::seconds(1);
                None
            }
            Fired::Paused => {
                // Paused since the claim: the tick is owed (or not) as the resume's catch_up
                // says; the settle leaves a paused schedule parked, and looks again at once
                // should it have been resumed meanwhile.
                next = now;
                None
            }
        },
        Due::Skip(tick) => {
            tracing::info!(schedule = %schedule.name, %tick, "tick missed while no worker ran; skipped (catch_up: none)");
            Some(tick)
        }
        Due::Nothing => None,
    };
    if let Err(e) = schedules.settle(&schedule, tick, next).await {
        tracing::warn!(schedule = %schedule.name, error = %e, "next fire time not recorded; the schedule comes due again when its lease ends");
    }
    Some(next)
}

/// What became of a due tick.
enum Fired {
    /// Enqueued, already there, or refused for good.
    Done,
    /// Not enqueued (Redis full or unreachable): try again.
    Retry,
    /// Refused: the schedule was paused after the claim.
    Paused,
}

/// Enqueues the tick's job, unless the schedule was paused since `now` (the claim's time).
async fn fire(queue: &Store, schedule: &Schedule, tick: DateTime<Utc>, now: DateTime<Utc>) -> Fired {
    let name = schedule.name.as_str();
    let job = match schedule.job_for(tick, now) {
        Ok(job) => job,
        Err(errors) => {
            // The job no longer passes the rules (a rule added since): nothing to send.
            let list: Vec<String> = errors.iter().map(|e| format!("{} {}", e.field, e.message)).collect();
            tracing::error!(schedule = name, %tick, errors = list.join("; "), "scheduled job refused; tick skipped");
            return Fired::Done;
        }
    };
    let claim = TickClaim { schedule: name.to_owned(), claimed: now };
    match queue.enqueue_tick(&job, &claim).await {
        Ok(EnqueueOutcome::Created { id, .. }) => {
            tracing::info!(schedule = name, %tick, job_id = %id, kind = %job.kind, "schedule fired");
            metrics::counter!("jobplane_schedule_fired_total", "kind" => job.kind.as_str()).increment(1);
            let late = (Utc::now() - tick).to_std().unwrap_or_default();
            metrics::histogram!("jobplane_schedule_lateness_seconds").record(late.as_secs_f64());
            Fired::Done
        }
        // Another worker enqueued this tick first.
        Ok(EnqueueOutcome::Replayed { .. } | EnqueueOutcome::Conflict { .. }) => Fired::Done,
        // The only refusal of a lone tick: the schedule's pause, taken after the claim.
        Ok(EnqueueOutcome::NotWritten) => {
            tracing::info!(schedule = name, %tick, "schedule paused after the tick was claimed; not fired");
            Fired::Paused
        }
        Ok(other) => {
            tracing::warn!(schedule = name, %tick, outcome = ?other, "scheduled job not enqueued");
            Fired::Done
        }
        // A full Redis is logged once per interval where it is found, not once per schedule.
        Err(jobs::StoreError::Full(_)) => Fired::Retry,
        Err(e) => {
            tracing::warn!(schedule = name, %tick, error = %e, "scheduled job not enqueued; retrying");
            Fired::Retry
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str) -> Schedule {
        let body = serde_json::json!({"name": "n", "cron": cron,
            "job": {"kind": "webhook", "payload": {"url": "https://example.com/h", "event": "e"}}});
        Schedule::parse(body, "", Source::Api, "shop", Utc::now()).unwrap().0
    }

    #[test]
    fn the_timetable_cache_stays_bounded() {
        let mut cache = TimetableCache::new(8);
        for minute in 0..60 {
            assert!(cache.get(&schedule(&format!("{minute} 9 * * *"))).is_some());
            assert!(cache.len() <= 8, "{} timetables kept", cache.len());
        }
        let again = schedule("59 9 * * *");
        assert!(cache.get(&again).is_some());
    }
}
