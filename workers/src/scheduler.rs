//! Recurring schedules, fired by every worker that runs this loop (`WORKER_SCHEDULER`, on by
//! default) with no leader: each computes the due tick of each schedule and enqueues its job
//! under the idempotency key `schedule:<name>:<tick>`, which `enqueue.lua` admits once per
//! queue, atomically; then the schedule's last fired tick moves forward (a compare-and-set),
//! so the tick is not computed again. Any worker can stop at any moment: the others, or itself
//! on restart, carry on from the last fired tick.
//!
//! The loop wakes at the next tick of any schedule, and at least every second to notice new,
//! replaced or deleted schedules. Ticks are computed on this host's clock; a skewed clock fires
//! early or late, never twice.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::schedule::{Due, Schedule, ScheduleStore, Source, Timetable, due};
use jobs::{EnqueueOutcome, Store};

/// Every second at least, the loop reads the schedules again.
const POLL: Duration = Duration::from_secs(1);

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
/// and file schedules no longer in the file are deleted. Every worker should be given the same
/// file: the last one to start wins.
pub async fn load(store: &ScheduleStore, schedules: &[Schedule]) -> Result<(), jobs::StoreError> {
    let existing: HashMap<String, Schedule> =
        store.list().await?.into_iter().map(|(s, _)| (s.name.clone(), s)).collect();
    for old in existing.values().filter(|s| s.source == Source::File) {
        if !schedules.iter().any(|s| s.name == old.name) {
            store.delete(&old.name).await?;
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
    let mut tables: HashMap<(String, String), Option<Timetable>> = HashMap::new();
    loop {
        let now = Utc::now();
        let mut wake = now + chrono::Duration::from_std(POLL).unwrap_or_default();
        match schedules.list().await {
            Ok(list) => {
                for (schedule, last) in list {
                    let key = (schedule.cron.clone(), schedule.timezone.clone());
                    let Some(table) = tables.entry(key).or_insert_with(|| schedule.timetable()).clone() else {
                        continue;
                    };
                    // A tick recorded before the schedule was replaced does not count for it.
                    let since = last.map_or(schedule.updated_at, |l| l.max(schedule.updated_at));
                    match due(&table, since, now, schedule.catch_up) {
                        Due::Fire(tick) => fire(&schedules, &queue, &schedule, tick, now).await,
                        Due::Skip(tick) => {
                            tracing::info!(schedule = %schedule.name, %tick, "tick missed while no worker ran; skipped (catch_up: none)");
                            let _ = schedules.advance(&schedule, tick).await;
                        }
                        Due::Nothing => {}
                    }
                    if let Some(next) = table.next_after(now) {
                        wake = wake.min(next);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "schedules not read; retrying"),
        }
        let sleep = (wake - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(sleep).await;
    }
}

async fn fire(schedules: &ScheduleStore, queue: &Store, schedule: &Schedule, tick: DateTime<Utc>, now: DateTime<Utc>) {
    let name = schedule.name.as_str();
    let job = match schedule.job_for(tick, now) {
        Ok(job) => job,
        Err(errors) => {
            // The job no longer passes the rules (a template removed since): nothing to send.
            let list: Vec<String> = errors.iter().map(|e| format!("{} {}", e.field, e.message)).collect();
            tracing::error!(schedule = name, %tick, errors = list.join("; "), "scheduled job refused; tick skipped");
            let _ = schedules.advance(schedule, tick).await;
            return;
        }
    };
    match queue.enqueue(std::slice::from_ref(&job)).await.map(|mut o| o.pop()) {
        Ok(Some(EnqueueOutcome::Created { id, .. })) => {
            tracing::info!(schedule = name, %tick, job_id = %id, kind = %job.kind, "schedule fired");
            metrics::counter!("jobplane_schedule_fired_total", "kind" => job.kind.as_str()).increment(1);
        }
        // Another worker enqueued this tick first.
        Ok(Some(EnqueueOutcome::Replayed { .. } | EnqueueOutcome::Conflict { .. })) => {}
        Ok(other) => tracing::warn!(schedule = name, %tick, outcome = ?other, "scheduled job not enqueued"),
        // A full Redis is logged once per interval where it is found, not once per schedule.
        Err(jobs::StoreError::Full(_)) => return,
        Err(e) => {
            tracing::warn!(schedule = name, %tick, error = %e, "scheduled job not enqueued; retrying");
            return;
        }
    }
    if let Err(e) = schedules.advance(schedule, tick).await {
        tracing::warn!(schedule = name, error = %e, "last fired tick not recorded; the next pass finds the job already there");
    }
}
