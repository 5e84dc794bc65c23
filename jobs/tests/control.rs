//! `cancel.lua` and `run_now.lua`, and how `fetch.lua`, `finish.lua` and `release.lua` end a
//! running job whose cancellation was asked, run against a real Redis (`REDIS_URL`) under a
//! namespace of their own; each test asserts the keys and values left behind.

#![expect(clippy::unwrap_used, reason = "a fixture that cannot be set up fails the test, loudly")]

mod lab;

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::control::{CancelFilter, CancelOutcome, Control, RunNowOutcome, WaitingState};
use jobs::keys::QueueKeys;
use jobs::queue::{Finished, Leased, Outcome, Queue, Retention};
use jobs::record::{DeadReason, JobRecord, millis};
use jobs::{EnqueueOutcome, JobStatus, Kind, NewJob};

use lab::Lab;

const LEASE: Duration = Duration::from_secs(30);
const DAY_MS: i64 = 24 * 3600 * 1000;
const HOUR_MS: i64 = 3600 * 1000;

impl Lab {
    /// Cancelled jobs kept two hours (beyond the one-hour floor).
    fn control(&self) -> Control {
        let retention = Kind::ALL.into_iter().map(|k| (k, Duration::from_hours(2))).collect();
        Control::new(self.conn.clone(), self.keys.clone(), retention, Duration::from_secs(5))
    }

    fn queue(&self) -> Queue {
        Queue::new(self.conn.clone(), &self.keys, Kind::Webhook, "w1")
    }

    fn q(&self) -> QueueKeys {
        self.keys.queue(Kind::Webhook)
    }

    #[expect(clippy::unused_self, reason = "read like the other fixtures")]
    fn job(&self, run_at: Option<DateTime<Utc>>, key: Option<&str>) -> NewJob {
        NewJob { run_at, idempotency: key.map(|k| (k.to_owned(), "fp1".to_owned())), ..lab::job(Kind::Webhook) }
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        cmd.query_async(&mut self.conn.clone()).await.unwrap()
    }

    async fn enqueue(&self, job: &NewJob) -> EnqueueOutcome {
        self.store().enqueue(std::slice::from_ref(job)).await.unwrap().remove(0)
    }

    async fn record(&self, id: &str) -> Option<JobRecord> {
        let raw: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(self.q().job(id))).await;
        raw.map(|r| JobRecord::decode(&r).unwrap())
    }

    async fn list(&self, key: String) -> Vec<String> {
        self.run(redis::cmd("LRANGE").arg(key).arg(0).arg(-1)).await
    }

    async fn zset(&self, key: String) -> Vec<String> {
        self.run(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1)).await
    }

    async fn counter(&self) -> Option<i64> {
        self.run(redis::cmd("GET").arg(self.q().ready_cancelled())).await
    }

    async fn pttl(&self, key: String) -> i64 {
        self.run(redis::cmd("PTTL").arg(key)).await
    }

    /// A stream's entries, each as its field names: the job ids.
    async fn stream(&self, key: String) -> Vec<Vec<String>> {
        let entries: Vec<(String, Vec<String>)> = self.run(redis::cmd("XRANGE").arg(key).arg("-").arg("+")).await;
        entries.into_iter().map(|(_, fields)| fields.into_iter().step_by(2).collect()).collect()
    }

    async fn depth(&self) -> u64 {
        jobs::dead::DeadLetters::new(self.conn.clone(), self.keys.clone()).depths(Kind::Webhook).await.unwrap().queued
    }

    async fn lease(&self) -> Vec<Leased> {
        self.queue().fetch(LEASE, 100, 100).await.unwrap().into_iter().map(|(l, _)| l).collect()
    }

    /// Enqueues `job`, leases it, and fails its attempt with a retry due at once: `retrying`.
    async fn retrying(&self, job: &NewJob) {
        self.enqueue(job).await;
        let leased = self.lease().await.remove(0);
        self.finish(leased, Outcome::Retry { at: Utc::now() + chrono::Duration::hours(1) }).await;
    }

    async fn finish(&self, job: Leased, outcome: Outcome) {
        let now = Utc::now();
        let done = Finished {
            job,
            outcome,
            error: Some("HTTP 503".into()),
            provider_id: None,
            started_at: now,
            finished_at: now,
        };
        let retention = Retention { finished: Duration::from_mins(1), ..Retention::default() };
        self.queue().finish(&[done], now, &retention).await.unwrap();
    }
}

fn assert_ttl(what: &str, ttl: i64, full: i64) {
    assert!((full - 5_000..=full).contains(&ttl), "{what}: ttl {ttl} ms, expected about {full}");
}

/// The compacted record every cancel leaves: no payload, no trace.
fn assert_cancelled(what: &str, record: &JobRecord) {
    assert_eq!(record.status, JobStatus::Cancelled, "{what}");
    assert_eq!(record.payload, None, "{what}: no payload");
    assert_eq!(record.traceparent, None, "{what}");
    assert!(record.finished_at.is_some(), "{what}: finished_at");
}

#[tokio::test]
async fn a_queued_job_is_cancelled_in_place_and_never_leased() {
    let lab = Lab::new();
    let (job, other) = (lab.job(None, None), lab.job(None, None));
    let id = job.id.to_string();
    lab.enqueue(&job).await;
    lab.enqueue(&other).await;
    assert_eq!(lab.depth().await, 2);

    let (kind, outcome) = lab.control().cancel(&id, Some("shop")).await.unwrap();
    assert_eq!((kind, outcome), (Some(Kind::Webhook), CancelOutcome::Cancelled));
    let record = lab.record(&id).await.unwrap();
    assert_cancelled("queued", &record);
    assert_ttl("kept for the retention", lab.pttl(lab.q().job(&id)).await, 2 * HOUR_MS);
    // The id stays in the list; the counter keeps the depth truthful.
    assert_eq!(lab.list(lab.q().ready()).await.len(), 2);
    assert_eq!(lab.counter().await, Some(1));
    assert_eq!(lab.depth().await, 1);
    assert_eq!(lab.stream(lab.q().cancelled()).await, vec![vec![id.clone()]]);

    // A second cancel: the same answer, nothing more written.
    assert_eq!(lab.control().cancel(&id, Some("shop")).await.unwrap().1, CancelOutcome::AlreadyCancelled);
    assert_eq!(lab.counter().await, Some(1));
    assert_eq!(lab.stream(lab.q().cancelled()).await.len(), 1);

    // Fetch skips it and takes it off the counter.
    let leased = lab.lease().await;
    assert_eq!(leased.iter().map(|l| l.id.clone()).collect::<Vec<_>>(), vec![other.id.to_string()]);
    assert_eq!(lab.counter().await, Some(0));
    assert_eq!(lab.list(lab.q().ready()).await, Vec::<String>::new());
    assert_eq!(lab.record(&id).await.unwrap().status, JobStatus::Cancelled);
}

#[tokio::test]
async fn another_producers_job_or_none_is_not_found_and_untouched() {
    let lab = Lab::new();
    let job = lab.job(None, None);
    let id = job.id.to_string();
    lab.enqueue(&job).await;
    assert_eq!(lab.control().cancel(&id, Some("other")).await.unwrap().1, CancelOutcome::NotFound);
    assert_eq!(lab.record(&id).await.unwrap().status, JobStatus::Queued);
    assert_eq!(lab.counter().await, None);
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(lab.control().cancel(&unknown, None).await.unwrap(), (None, CancelOutcome::NotFound));
}

#[tokio::test]
async fn scheduled_and_retrying_jobs_leave_their_sets() {
    let lab = Lab::new();
    let scheduled = lab.job(Some(Utc::now() + chrono::Duration::hours(1)), None);
    lab.enqueue(&scheduled).await;
    let retrying = lab.job(None, None);
    lab.retrying(&retrying).await;
    assert_eq!(lab.zset(lab.q().retry()).await, vec![retrying.id.to_string()]);

    let control = lab.control();
    let ids = [scheduled.id.to_string(), retrying.id.to_string()];
    let outcomes = control.cancel_many(Kind::Webhook, &ids, None).await.unwrap();
    assert_eq!(outcomes, vec![CancelOutcome::Cancelled, CancelOutcome::Cancelled]);
    assert_eq!(lab.zset(lab.q().scheduled()).await, Vec::<String>::new());
    assert_eq!(lab.zset(lab.q().retry()).await, Vec::<String>::new());
    // Neither lay in the ready list.
    assert_eq!(lab.counter().await, None);
    // One stream entry for the call, both ids its fields.
    assert_eq!(lab.stream(lab.q().cancelled()).await, vec![ids.to_vec()]);
    let retried = lab.record(&ids[1]).await.unwrap();
    assert_cancelled("retrying", &retried);
    assert_eq!(retried.history.len(), 1, "its attempt history is kept");
    assert_eq!(retried.last_error.as_deref(), Some("HTTP 503"));
}

#[tokio::test]
async fn a_promoted_delayed_job_is_counted_as_lying_in_the_ready_list() {
    let lab = Lab::new();
    let job = lab.job(Some(Utc::now() + chrono::Duration::hours(1)), None);
    let id = job.id.to_string();
    lab.enqueue(&job).await;
    // What fetch.lua's promotion does: the id moves, the record still says scheduled.
    let () = lab.run(redis::cmd("ZREM").arg(lab.q().scheduled()).arg(&id)).await;
    let () = lab.run(redis::cmd("RPUSH").arg(lab.q().ready()).arg(&id)).await;
    assert_eq!(lab.control().cancel(&id, None).await.unwrap().1, CancelOutcome::Cancelled);
    assert_eq!(lab.counter().await, Some(1));
    assert_eq!(lab.depth().await, 0);
    assert!(lab.lease().await.is_empty());
    assert_eq!(lab.counter().await, Some(0));
}

#[tokio::test]
async fn finished_jobs_report_their_status_and_stay_as_they_are() {
    let lab = Lab::new();
    let done = lab.job(None, None);
    lab.enqueue(&done).await;
    let leased = lab.lease().await.remove(0);
    lab.finish(leased, Outcome::Succeeded).await;
    let dead = lab.job(None, None);
    lab.enqueue(&dead).await;
    let leased = lab.lease().await.remove(0);
    lab.finish(leased, Outcome::Dead(DeadReason::Permanent)).await;
    let ids = [done.id.to_string(), dead.id.to_string()];
    let before = (lab.record(&ids[0]).await, lab.record(&ids[1]).await);
    let outcomes = lab.control().cancel_many(Kind::Webhook, &ids, None).await.unwrap();
    assert_eq!(outcomes, vec![CancelOutcome::Finished(JobStatus::Succeeded), CancelOutcome::Finished(JobStatus::Dead)]);
    assert_eq!((lab.record(&ids[0]).await, lab.record(&ids[1]).await), before);
    assert_eq!(lab.stream(lab.q().cancelled()).await, Vec::<Vec<String>>::new());
}

#[tokio::test]
async fn a_running_job_gets_a_request_and_a_retry_ends_it_cancelled() {
    let lab = Lab::new();
    let job = lab.job(None, None);
    let id = job.id.to_string();
    lab.enqueue(&job).await;
    let leased = lab.lease().await.remove(0);
    assert_eq!(lab.control().cancel(&id, Some("shop")).await.unwrap().1, CancelOutcome::CancelRequested);
    assert_eq!(lab.record(&id).await.unwrap().status, JobStatus::Running, "still running");
    assert_eq!(lab.control().cancel(&id, Some("shop")).await.unwrap().1, CancelOutcome::CancelRequested);

    lab.finish(leased, Outcome::Retry { at: Utc::now() }).await;
    let record = lab.record(&id).await.unwrap();
    assert_cancelled("retry after a request", &record);
    assert_eq!(record.history.len(), 1, "the failed attempt is on record");
    assert_eq!(lab.zset(lab.q().retry()).await, Vec::<String>::new(), "not retried");
    assert_eq!(lab.zset(lab.q().active()).await, Vec::<String>::new());
    assert_eq!(lab.stream(lab.q().cancelled()).await, vec![vec![id.clone()]]);
    assert_ttl("kept for the retention the cancel carried", lab.pttl(lab.q().job(&id)).await, 2 * HOUR_MS);
}

#[tokio::test]
async fn a_running_job_that_succeeds_or_dies_keeps_that_status() {
    for outcome in [Outcome::Succeeded, Outcome::Dead(DeadReason::Permanent)] {
        let lab = Lab::new();
        let job = lab.job(None, None);
        let id = job.id.to_string();
        lab.enqueue(&job).await;
        let leased = lab.lease().await.remove(0);
        lab.control().cancel(&id, None).await.unwrap();
        lab.finish(leased, outcome.clone()).await;
        let expected = if outcome == Outcome::Succeeded { JobStatus::Succeeded } else { JobStatus::Dead };
        assert_eq!(lab.record(&id).await.unwrap().status, expected, "{outcome:?}");
        assert_eq!(lab.stream(lab.q().cancelled()).await, Vec::<Vec<String>>::new(), "{outcome:?}");
    }
}

#[tokio::test]
async fn a_lost_lease_or_a_release_ends_a_requested_job_cancelled() {
    // Released at shutdown: its delivery never started.
    let lab = Lab::new();
    let job = lab.job(None, None);
    let id = job.id.to_string();
    lab.enqueue(&job).await;
    let leased = lab.lease().await.remove(0);
    lab.control().cancel(&id, None).await.unwrap();
    assert_eq!(lab.queue().release(&[(id.clone(), leased.token)]).await.unwrap(), 1);
    let record = lab.record(&id).await.unwrap();
    assert_cancelled("released", &record);
    assert_eq!(record.attempts, 0, "the attempt never started");
    assert_eq!(lab.list(lab.q().ready()).await, Vec::<String>::new(), "not put back");
    assert_eq!(lab.stream(lab.q().cancelled()).await, vec![vec![id.clone()]]);

    // Its worker died: the next fetch's recovery ends it instead of queueing it again.
    let lab = Lab::new();
    let job = lab.job(None, None);
    let id = job.id.to_string();
    lab.enqueue(&job).await;
    lab.lease().await;
    lab.control().cancel(&id, None).await.unwrap();
    let () = lab.run(redis::cmd("ZADD").arg(lab.q().active()).arg("XX").arg(1).arg(&id)).await;
    assert!(lab.lease().await.is_empty(), "not leased again");
    let record = lab.record(&id).await.unwrap();
    assert_cancelled("lease lost", &record);
    assert_eq!(record.history.len(), 1);
    assert_eq!(lab.list(lab.q().ready()).await, Vec::<String>::new());
    assert_eq!(lab.stream(lab.q().cancelled()).await, vec![vec![id]]);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_cancelled_job_until_it_expires() {
    let lab = Lab::new();
    let job = lab.job(None, Some("remind-7"));
    let id = job.id.to_string();
    lab.enqueue(&job).await;
    lab.control().cancel(&id, Some("shop")).await.unwrap();
    let idem = lab.q().idempotency("shop", "remind-7");
    assert_eq!(lab.run::<Option<String>>(redis::cmd("GET").arg(&idem)).await, Some(format!("fp1 {id}")));
    // The record lives as long as its key (a day here, beyond the two-hour retention).
    assert_ttl("as long as the key", lab.pttl(lab.q().job(&id)).await, DAY_MS);
    assert_eq!(lab.record(&id).await.unwrap().idempotency_key.as_deref(), Some("remind-7"));

    let again = lab.job(None, Some("remind-7"));
    match lab.enqueue(&again).await {
        EnqueueOutcome::Replayed { id: replayed, status, .. } => {
            assert_eq!((replayed, status), (id.clone(), JobStatus::Cancelled));
        }
        other => panic!("expected a replay, got {other:?}"),
    }
    assert_eq!(lab.record(&again.id.to_string()).await, None, "no second job");
    assert_eq!(lab.list(lab.q().ready()).await, vec![id.clone()], "nothing queued anew");

    // Another payload under the key: the existing conflict rule.
    let other = NewJob { idempotency: Some(("remind-7".into(), "fp2".into())), ..lab.job(None, None) };
    assert!(matches!(lab.enqueue(&other).await, EnqueueOutcome::Conflict { .. }));
}

#[tokio::test]
async fn run_now_moves_a_waiting_job_to_the_popping_end_and_wakes_a_worker() {
    let lab = Lab::new();
    let first = lab.job(None, None);
    lab.enqueue(&first).await;
    let () = lab.run(redis::cmd("DEL").arg(lab.q().wake())).await;
    let scheduled = lab.job(Some(Utc::now() + chrono::Duration::hours(5)), None);
    let id = scheduled.id.to_string();
    lab.enqueue(&scheduled).await;

    assert_eq!(lab.control().run_now(&id).await.unwrap(), (Some(Kind::Webhook), RunNowOutcome::Queued));
    assert_eq!(lab.zset(lab.q().scheduled()).await, Vec::<String>::new());
    // LPUSHed jobs enter on the left; it sits at the right, popped first.
    assert_eq!(lab.list(lab.q().ready()).await, vec![first.id.to_string(), id.clone()]);
    assert_eq!(lab.list(lab.q().wake()).await, vec!["1".to_owned()]);
    let record = lab.record(&id).await.unwrap();
    assert_eq!(record.status, JobStatus::Queued);
    assert!(millis(record.run_at) <= Utc::now());
    let leased = lab.queue().fetch(LEASE, 1, 10).await.unwrap();
    assert_eq!(leased[0].0.id, id);

    // Not waiting: nothing changes.
    assert_eq!(lab.control().run_now(&id).await.unwrap().1, RunNowOutcome::NotWaiting(JobStatus::Running));
    assert_eq!(
        lab.control().run_now(&first.id.to_string()).await.unwrap().1,
        RunNowOutcome::NotWaiting(JobStatus::Queued)
    );
    assert_eq!(lab.control().run_now("nope").await.unwrap(), (None, RunNowOutcome::NotFound));

    let lab = Lab::new();
    let retrying = lab.job(None, None);
    lab.retrying(&retrying).await;
    let rid = retrying.id.to_string();
    assert_eq!(lab.control().run_now(&rid).await.unwrap().1, RunNowOutcome::Queued);
    assert_eq!(lab.zset(lab.q().retry()).await, Vec::<String>::new());
    assert_eq!(lab.list(lab.q().ready()).await.last(), Some(&rid));
}

#[tokio::test]
async fn a_bulk_filter_selects_by_state_producer_and_creation_time() {
    let lab = Lab::new();
    let mut queued = Vec::new();
    for i in 0..5 {
        let job = NewJob { producer: if i == 0 { "other".into() } else { "shop".into() }, ..lab.job(None, None) };
        lab.enqueue(&job).await;
        queued.push(job.id.to_string());
    }
    let later = lab.job(Some(Utc::now() + chrono::Duration::hours(1)), None);
    lab.enqueue(&later).await;
    let control = lab.control();
    let filter = CancelFilter { kind: Kind::Webhook, state: WaitingState::Queued, producer: None, until: None };
    let mut found = control.matching(&filter, 100).await.unwrap();
    found.sort();
    assert_eq!(found, queued);
    let shop = CancelFilter { producer: Some("shop".into()), ..filter.clone() };
    assert_eq!(control.matching(&shop, 100).await.unwrap().len(), 4);
    assert_eq!(control.matching(&shop, 2).await.unwrap().len(), 3, "stops at max + 1");
    let frozen = CancelFilter { until: Some(Utc::now() - chrono::Duration::hours(1)), ..filter.clone() };
    assert!(control.matching(&frozen, 100).await.unwrap().is_empty());
    let scheduled = CancelFilter { state: WaitingState::Scheduled, ..filter.clone() };
    assert_eq!(control.matching(&scheduled, 100).await.unwrap(), vec![later.id.to_string()]);

    // Cancelled ones no longer match.
    control.cancel_many(Kind::Webhook, &queued[..2], None).await.unwrap();
    assert_eq!(control.matching(&filter, 100).await.unwrap().len(), 3);
    assert_eq!(lab.depth().await, 3);
}

#[tokio::test]
async fn a_large_cancel_is_split_into_bounded_calls() {
    let lab = Lab::new();
    let jobs: Vec<NewJob> = (0..1200).map(|_| lab.job(None, None)).collect();
    lab.store().enqueue(&jobs).await.unwrap();
    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    let outcomes = lab.control().cancel_many(Kind::Webhook, &ids, None).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == CancelOutcome::Cancelled));
    assert_eq!(lab.counter().await, Some(1200));
    assert_eq!(lab.depth().await, 0);
    let entries = lab.stream(lab.q().cancelled()).await;
    assert_eq!(entries.iter().map(Vec::len).collect::<Vec<_>>(), vec![500, 500, 200], "one entry per call");
}

/// Bytes Redis has sent to every client so far (`INFO stats`).
async fn sent(lab: &Lab) -> u64 {
    let info: String = lab.run(redis::cmd("INFO").arg("stats")).await;
    info.lines().find_map(|l| l.strip_prefix("total_net_output_bytes:")).unwrap().trim().parse().unwrap()
}

/// A bulk cancel counts what its filter covers twice (to show the count, then to confirm it),
/// walking up to a million jobs, and a record carries its payload (up to 256 KiB: an email's
/// HTML). The walk filters on Redis's side and answers ids only: counting 200 jobs of 200 KiB
/// each sends a few KiB, not the 40 MiB of their records.
#[tokio::test]
async fn a_bulk_count_never_reads_the_payloads() {
    let lab = Lab::new();
    let payload = format!(r#"{{"url":"https://a.example/hook","event":"e","data":"{}"}}"#, "x".repeat(200 * 1024));
    let jobs: Vec<NewJob> = (0..200).map(|_| NewJob { payload: payload.clone(), ..lab.job(None, None) }).collect();
    for chunk in jobs.chunks(20) {
        lab.store().enqueue(chunk).await.unwrap();
    }
    let control = lab.control();
    let filter = CancelFilter { kind: Kind::Webhook, state: WaitingState::Queued, producer: None, until: None };
    // The least of three: other clients of a shared Redis only add to the figure.
    let mut least = u64::MAX;
    for _ in 0..3 {
        let before = sent(&lab).await;
        assert_eq!(control.matching(&filter, 1000).await.unwrap().len(), 200);
        least = least.min(sent(&lab).await - before);
    }
    let ids: Vec<String> = jobs.iter().map(|j| lab.q().job(&j.id.to_string())).collect();
    let _: u64 = lab.run(redis::cmd("UNLINK").arg(ids).arg(lab.q().ready())).await;
    assert!(least < 256 * 1024, "counting 200 jobs sent {least} bytes");
}

/// The operator audit log travels as `audit_log` jobs (producer `console`) until a worker writes
/// them to PostgreSQL. An operator who could cancel them could pause that kind, act, cancel the
/// events of what they did, and resume: the audit log would never hold them. So operators never
/// cancel an audit event, one by id or in bulk; it stays queued.
#[tokio::test]
async fn operators_never_cancel_audit_events() {
    let lab = Lab::new();
    let event = NewJob {
        kind: Kind::AuditLog,
        payload: r#"{"tenant_id":"jobplane","action":"queue.pause","resource_type":"queue"}"#.into(),
        producer: "console".into(),
        ..lab.job(None, None)
    };
    lab.enqueue(&event).await;
    let id = event.id.to_string();
    let control = lab.control();
    assert_eq!(control.cancel(&id, None).await.unwrap(), (Some(Kind::AuditLog), CancelOutcome::Protected));
    assert_eq!(
        control.cancel_many(Kind::AuditLog, std::slice::from_ref(&id), None).await.unwrap(),
        vec![CancelOutcome::Protected]
    );
    let filter = CancelFilter { kind: Kind::AuditLog, state: WaitingState::Queued, producer: None, until: None };
    assert_eq!(filter.check().unwrap_err().0, "kind");
    let q = lab.keys.queue(Kind::AuditLog);
    let raw: Vec<u8> = lab.run(redis::cmd("GET").arg(q.job(&id))).await;
    assert_eq!(JobRecord::decode(&raw).unwrap().status, JobStatus::Queued, "untouched");
    let ready: Vec<String> = lab.run(redis::cmd("LRANGE").arg(q.ready()).arg(0).arg(-1)).await;
    assert_eq!(ready, vec![id.clone()]);
    let _: u64 = lab.run(redis::cmd("UNLINK").arg(q.job(&id)).arg(q.ready()).arg(q.wake())).await;
}
