//! Webhook destinations' scripts (`lua/destination_*.lua`) against a real Redis (`REDIS_URL`),
//! each test under a namespace of its own: the slot limit across callers, deferral, the parked
//! line, the cool-down and its probes, an operator's resume, and stale releases.

#![expect(clippy::unwrap_used, reason = "a fixture that cannot be set up fails the test, loudly")]

mod lab;

use std::time::Duration;

use chrono::Utc;
use jobs::destinations::{Breaker, DeferReason, Delivery, Destination, Destinations, Policy, Released, Slot};
use jobs::keys::{DestinationKeys, QueueKeys};
use jobs::queue::{Leased, Queue};
use jobs::record::JobRecord;
use jobs::{JobStatus, Kind, NewJob, Priority};

use lab::Lab;

const LEASE: Duration = Duration::from_secs(30);

fn policy(max_in_flight: u32) -> Policy {
    Policy {
        max_in_flight,
        hold: Duration::from_secs(15),
        max_deferral: Duration::from_hours(1),
        threshold: 2,
        base_gap: Duration::from_millis(200),
        max_gap: Duration::from_secs(2),
        idle: Duration::from_mins(1),
    }
}

fn slow() -> Destination {
    Destination::of_url("https://Slow.Example/hook?token=secret").unwrap()
}

/// A webhook to the slow destination, in lane `priority` and group `group`.
fn webhook(priority: Priority, group: Option<&str>) -> NewJob {
    NewJob {
        payload: r#"{"url":"https://slow.example/hook","event":"e"}"#.into(),
        priority,
        group: group.map(str::to_owned),
        ..lab::job(Kind::Webhook)
    }
}

impl Lab {
    fn destinations(&self) -> Destinations {
        Destinations::new(self.conn.clone(), &self.keys)
    }

    fn q(&self) -> QueueKeys {
        self.keys.queue(Kind::Webhook)
    }

    fn d(&self) -> DestinationKeys {
        self.keys.destinations()
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        cmd.query_async(&mut self.conn.clone()).await.unwrap()
    }

    async fn zset(&self, key: String) -> Vec<String> {
        self.run(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1)).await
    }

    async fn list(&self, key: String) -> Vec<String> {
        self.run(redis::cmd("LRANGE").arg(key).arg(0).arg(-1)).await
    }

    async fn record(&self, id: &str) -> JobRecord {
        let raw: Vec<u8> = self.run(redis::cmd("GET").arg(self.q().job(id))).await;
        JobRecord::decode(&raw).unwrap()
    }

    async fn state(&self, field: &str) -> Option<String> {
        self.run(redis::cmd("HGET").arg(self.d().state(slow().id())).arg(field)).await
    }

    /// Enqueues `n` webhooks and leases them (worker `worker`), oldest first.
    async fn lease(&self, n: usize, worker: &str) -> Vec<Leased> {
        let jobs: Vec<NewJob> = (0..n).map(|_| webhook(Priority::Normal, None)).collect();
        self.store().enqueue(&jobs).await.unwrap();
        let queue = Queue::new(self.conn.clone(), &self.keys, Kind::Webhook, worker);
        let leased: Vec<Leased> = queue.fetch(LEASE, n, 100).await.unwrap().into_iter().map(|(job, _)| job).collect();
        assert_eq!(leased.len(), n);
        leased
    }

    async fn acquire(&self, job: &Leased, policy: &Policy) -> Slot {
        self.destinations().acquire(&slow(), &job.id, job.token, policy).await.unwrap()
    }

    async fn release(&self, job: &Leased, delivery: Delivery, policy: &Policy) -> Released {
        self.destinations().release(&slow(), &job.id, job.token, delivery, policy).await.unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let Ok(client) = redis::Client::open(url.as_str()) else { return };
        if let Ok(mut conn) = client.get_connection() {
            let names: Vec<String> =
                redis::cmd("KEYS").arg(format!("{}:*", self.namespace)).query(&mut conn).unwrap_or_default();
            if !names.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(names).query(&mut conn);
            }
        }
    }
}

const FAILED: Delivery = Delivery::Failed { retry_after: None };

#[test]
fn a_destination_is_scheme_host_and_port_never_the_path() {
    let a = Destination::of_url("https://Example.ORG/a?key=s3cret").unwrap();
    assert_eq!(a.origin(), "https://example.org:443");
    assert_eq!(Destination::of_url("https://example.org:443/b").unwrap(), a);
    assert_eq!(Destination::of_url("http://example.org/").unwrap().origin(), "http://example.org:80");
    assert_eq!(Destination::of_url("http://[::1]:8080/").unwrap().origin(), "http://[::1]:8080");
    assert_ne!(Destination::of_url("https://example.org:8443/").unwrap().id(), a.id());
    assert!(jobs::destinations::is_id(a.id()) && !a.id().contains("example"));
    assert_eq!(Destination::of_url("not a url"), None);
}

#[tokio::test]
async fn at_most_n_slots_across_callers_and_each_deferral_gives_its_attempt_back() {
    let lab = Lab::new();
    let policy = policy(2);
    let mut jobs = lab.lease(3, "w1").await;
    jobs.extend(lab.lease(3, "w2").await);
    let slots = futures::future::join_all(jobs.iter().map(|job| lab.acquire(job, &policy))).await;
    let acquired = slots.iter().filter(|s| matches!(s, Slot::Acquired { probe: false })).count();
    let deferred: Vec<&Leased> = jobs
        .iter()
        .zip(&slots)
        .filter(|(_, s)| matches!(s, Slot::Deferred { reason: DeferReason::Busy, .. }))
        .map(|(job, _)| job)
        .collect();
    assert_eq!((acquired, deferred.len()), (2, 4), "{slots:?}");
    assert_eq!(lab.zset(lab.d().in_flight(slow().id())).await.len(), 2);

    let mut parked = lab.zset(lab.d().parked(slow().id())).await;
    parked.sort();
    let mut expected: Vec<String> = deferred.iter().map(|j| j.id.clone()).collect();
    expected.sort();
    assert_eq!(parked, expected);
    let active = lab.zset(lab.q().active()).await;
    for (job, slot) in jobs.iter().zip(&slots) {
        let record = lab.record(&job.id).await;
        if let Slot::Deferred { until, .. } = slot {
            assert_eq!((record.status, record.attempts, record.history.len()), (JobStatus::Scheduled, 0, 0));
            assert_eq!(record.run_at, until.timestamp_millis());
            let score: Option<i64> = lab.run(redis::cmd("ZSCORE").arg(lab.q().scheduled()).arg(&job.id)).await;
            assert_eq!(score, Some(until.timestamp_millis()));
            assert!(record.deferred_at.is_some() && !active.contains(&job.id));
        } else {
            assert_eq!((record.status, record.attempts, record.deferred_at), (JobStatus::Running, 1, None));
            assert!(active.contains(&job.id));
        }
    }
}

#[tokio::test]
async fn a_slot_past_its_deadline_is_taken_back() {
    let lab = Lab::new();
    let short = Policy { hold: Duration::from_millis(50), ..policy(1) };
    let jobs = lab.lease(2, "w1").await;
    assert_eq!(lab.acquire(&jobs[0], &short).await, Slot::Acquired { probe: false });
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(lab.acquire(&jobs[1], &short).await, Slot::Acquired { probe: false });
    assert_eq!(lab.zset(lab.d().in_flight(slow().id())).await, [format!("{}:{}", jobs[1].id, jobs[1].token)]);
    // The dead holder's late release changes nothing.
    assert_eq!(lab.release(&jobs[0], FAILED, &short).await.breaker, Breaker::Stale);
    assert_eq!(lab.state("failures").await, None);
}

#[tokio::test]
async fn a_freed_slot_moves_the_oldest_parked_job_to_the_popping_end() {
    let lab = Lab::new();
    let policy = policy(1);
    let jobs = lab.lease(3, "w1").await;
    assert_eq!(lab.acquire(&jobs[0], &policy).await, Slot::Acquired { probe: false });
    for job in &jobs[1..] {
        assert!(matches!(lab.acquire(job, &policy).await, Slot::Deferred { reason: DeferReason::Busy, .. }));
    }
    let _: i64 = lab.run(redis::cmd("LPUSH").arg(lab.q().ready()).arg("someone-else")).await;

    let _: i64 = lab.run(redis::cmd("DEL").arg(lab.q().wake())).await;
    let released = lab.release(&jobs[0], Delivery::Answered, &policy).await;
    assert_eq!(released, Released { breaker: Breaker::Unchanged, moved: 1 });
    // fetch.lua pops from the right: the oldest parked job is next, ahead of what was ready.
    assert_eq!(lab.list(lab.q().ready()).await, ["someone-else".to_owned(), jobs[1].id.clone()]);
    let moved = lab.record(&jobs[1].id).await;
    assert_eq!((moved.status, moved.attempts), (JobStatus::Queued, 0));
    assert_eq!(lab.zset(lab.q().scheduled()).await, [jobs[2].id.clone()]);
    assert_eq!(lab.zset(lab.d().parked(slow().id())).await, [jobs[2].id.clone()]);
    assert_eq!(lab.list(lab.q().wake()).await.len(), 1);
    assert!(lab.zset(lab.d().in_flight(slow().id())).await.is_empty());
}

#[tokio::test]
async fn failures_open_a_cool_down_probes_double_the_gap_and_a_success_closes_it() {
    let lab = Lab::new();
    let policy = policy(4);
    let jobs = lab.lease(8, "w1").await;
    for job in &jobs[..2] {
        assert_eq!(lab.acquire(job, &policy).await, Slot::Acquired { probe: false });
    }
    assert_eq!(lab.release(&jobs[0], FAILED, &policy).await.breaker, Breaker::Unchanged);
    assert_eq!(lab.release(&jobs[1], FAILED, &policy).await.breaker, Breaker::Opened);
    assert_eq!(lab.zset(lab.d().cooling()).await, [slow().id().to_owned()]);
    assert_eq!(lab.state("gap").await.as_deref(), Some("200"));
    // Cooling: nothing is sent, whatever the free slots.
    assert!(matches!(lab.acquire(&jobs[2], &policy).await, Slot::Deferred { reason: DeferReason::Cooling, .. }));
    let page = lab.destinations().cooling(0, 10).await.unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(
        (page.items[0].destination.as_str(), page.items[0].failures, page.items[0].parked),
        ("https://slow.example:443", 2, 1)
    );

    // The gap ends: one probe, the next job waits for it.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(lab.acquire(&jobs[3], &policy).await, Slot::Acquired { probe: true });
    assert!(matches!(lab.acquire(&jobs[4], &policy).await, Slot::Deferred { reason: DeferReason::Cooling, .. }));
    assert_eq!(lab.release(&jobs[3], FAILED, &policy).await, Released { breaker: Breaker::Extended, moved: 0 });
    assert_eq!(lab.state("gap").await.as_deref(), Some("400"));

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(lab.acquire(&jobs[5], &policy).await, Slot::Acquired { probe: true });
    // The probe succeeds: closed, and the parked jobs fill the free slots, oldest first.
    assert_eq!(
        lab.release(&jobs[5], Delivery::Answered, &policy).await,
        Released { breaker: Breaker::Closed, moved: 2 }
    );
    assert!(lab.zset(lab.d().cooling()).await.is_empty());
    assert_eq!(lab.destinations().cooling(0, 10).await.unwrap().total, 0);
    assert_eq!(lab.list(lab.q().ready()).await, [jobs[4].id.clone(), jobs[2].id.clone()]);
    assert_eq!((lab.state("until").await, lab.state("failures").await), (None, None));
}

#[tokio::test]
async fn a_retry_after_sets_the_gap_within_the_longest() {
    let lab = Lab::new();
    let policy = Policy { threshold: 1, ..policy(4) };
    let jobs = lab.lease(1, "w1").await;
    lab.acquire(&jobs[0], &policy).await;
    let throttled = Delivery::Failed { retry_after: Some(Duration::from_hours(1)) };
    assert_eq!(lab.release(&jobs[0], throttled, &policy).await.breaker, Breaker::Opened);
    assert_eq!(lab.state("gap").await.as_deref(), Some("2000"));
}

#[tokio::test]
async fn an_operator_ends_a_cool_down_and_the_parked_jobs_go() {
    let lab = Lab::new();
    let policy = Policy { threshold: 1, base_gap: Duration::from_mins(1), ..policy(4) };
    let jobs = lab.lease(3, "w1").await;
    lab.acquire(&jobs[0], &policy).await;
    assert_eq!(lab.release(&jobs[0], FAILED, &policy).await.breaker, Breaker::Opened);
    for job in &jobs[1..] {
        assert!(matches!(lab.acquire(job, &policy).await, Slot::Deferred { reason: DeferReason::Cooling, .. }));
    }
    assert_eq!(lab.destinations().resume(slow().id(), 8).await.unwrap(), Some(2));
    assert!(lab.zset(lab.d().cooling()).await.is_empty());
    // Oldest parked at the popping end (the right).
    assert_eq!(lab.list(lab.q().ready()).await, [jobs[2].id.clone(), jobs[1].id.clone()]);
    assert_eq!(lab.destinations().resume(slow().id(), 8).await.unwrap(), None);
}

#[tokio::test]
async fn a_release_with_another_lease_token_changes_nothing() {
    let lab = Lab::new();
    let policy = Policy { threshold: 1, ..policy(1) };
    let jobs = lab.lease(2, "w1").await;
    lab.acquire(&jobs[0], &policy).await;
    assert!(matches!(lab.acquire(&jobs[1], &policy).await, Slot::Deferred { .. }));
    let old = Leased { token: jobs[0].token + 1, ..jobs[0].clone() };
    assert_eq!(lab.release(&old, FAILED, &policy).await, Released { breaker: Breaker::Stale, moved: 0 });
    assert_eq!(lab.zset(lab.d().in_flight(slow().id())).await, [format!("{}:{}", jobs[0].id, jobs[0].token)]);
    assert_eq!(lab.zset(lab.d().parked(slow().id())).await, [jobs[1].id.clone()]);
    assert_eq!((lab.state("failures").await, lab.zset(lab.d().cooling()).await.len()), (None, 0));
    // A stale acquire (the lease is gone) changes nothing either.
    assert_eq!(lab.acquire(&jobs[1], &policy).await, Slot::Stale);
}

#[tokio::test]
async fn a_job_whose_cancellation_was_asked_ends_cancelled_instead_of_waiting() {
    let lab = Lab::new();
    let policy = policy(1);
    let jobs = lab.lease(2, "w1").await;
    lab.acquire(&jobs[0], &policy).await;
    let control = jobs::control::Control::new(
        lab.conn.clone(),
        lab.keys.clone(),
        std::collections::BTreeMap::new(),
        Duration::from_secs(5),
    );
    control.cancel(&jobs[1].id, None).await.unwrap();
    assert_eq!(lab.acquire(&jobs[1], &policy).await, Slot::Cancelled);
    let record = lab.record(&jobs[1].id).await;
    assert_eq!((record.status, record.attempts), (JobStatus::Cancelled, 0));
    assert!(!lab.zset(lab.q().active()).await.contains(&jobs[1].id));
    assert!(lab.zset(lab.d().parked(slow().id())).await.is_empty());
}

#[tokio::test]
async fn a_job_deferred_past_the_longest_deferral_is_overdue() {
    let lab = Lab::new();
    let policy = Policy { max_deferral: Duration::from_millis(100), ..policy(1) };
    let jobs = lab.lease(2, "w1").await;
    lab.acquire(&jobs[0], &policy).await;
    let Slot::Deferred { until, .. } = lab.acquire(&jobs[1], &policy).await else { panic!("not deferred") };
    let deferred_at = lab.record(&jobs[1].id).await.deferred_at.unwrap();
    assert_eq!(until.timestamp_millis(), deferred_at + 100, "the fallback never passes the deferral's end");
    tokio::time::sleep(Duration::from_millis(120)).await;
    let again = Queue::new(lab.conn.clone(), &lab.keys, Kind::Webhook, "w2").fetch(LEASE, 10, 100).await.unwrap();
    assert_eq!(again.len(), 1);
    let Slot::Overdue { since } = lab.acquire(&again[0].0, &policy).await else { panic!("not overdue") };
    assert_eq!(since.timestamp_millis(), deferred_at);
    let record = lab.record(&jobs[1].id).await;
    assert_eq!((record.status, record.attempts), (JobStatus::Running, 1));
}

#[tokio::test]
async fn a_replayed_expired_job_waits_afresh_instead_of_expiring_again() {
    use jobs::queue::{Finished, Outcome, Retention};
    let lab = Lab::new();
    let policy = Policy { max_deferral: Duration::from_millis(100), ..policy(1) };
    let jobs = lab.lease(2, "w1").await;
    lab.acquire(&jobs[0], &policy).await;
    assert!(matches!(lab.acquire(&jobs[1], &policy).await, Slot::Deferred { .. }));
    tokio::time::sleep(Duration::from_millis(120)).await;
    let queue = Queue::new(lab.conn.clone(), &lab.keys, Kind::Webhook, "w2");
    let again = queue.fetch(LEASE, 10, 100).await.unwrap();
    assert_eq!(again.len(), 1);
    let job = again[0].0.clone();
    assert!(matches!(lab.acquire(&job, &policy).await, Slot::Overdue { .. }));
    // The worker fails it as expired (`JobError::Expired`): a dead letter.
    let now = Utc::now();
    let expired = Finished {
        job: job.clone(),
        outcome: Outcome::Dead(jobs::record::DeadReason::Expired),
        error: Some("waited for its destination".into()),
        provider_id: None,
        started_at: now,
        finished_at: now,
    };
    queue.finish(&[expired], now, &Retention::default()).await.unwrap();
    assert_eq!(lab.record(&job.id).await.status, JobStatus::Expired);

    // The operator replays it; the destination is busy again (jobs[0] holds its one slot), as it
    // is after a bulk replay: the replayed job waits its own deferral, from now.
    jobs::dead::DeadLetters::new(lab.conn.clone(), lab.keys.clone())
        .replay(&job.id, None, "ops", Utc::now())
        .await
        .unwrap();
    let replayed = queue.fetch(LEASE, 10, 100).await.unwrap();
    assert_eq!(replayed.len(), 1);
    let slot = lab.acquire(&replayed[0].0, &policy).await;
    assert!(matches!(slot, Slot::Deferred { reason: DeferReason::Busy, .. }), "{slot:?}");
    let record = lab.record(&job.id).await;
    assert!(record.deferred_at.is_some_and(|first| first > now.timestamp_millis()), "the wait starts afresh");
}

#[tokio::test]
async fn a_deferred_job_gives_back_the_rate_limit_token_its_fetch_took() {
    let lab = Lab::new();
    let policy = policy(1);
    let limit = jobs::rate::RateLimit::new(1, Some(2)).unwrap();
    jobs::rate::RateLimits::new(lab.conn.clone(), lab.keys.clone())
        .put(Kind::Webhook, Some(limit), "ops")
        .await
        .unwrap();
    // Both tokens of the burst taken by the fetch.
    let jobs = lab.lease(2, "w1").await;
    assert_eq!(lab.acquire(&jobs[0], &policy).await, Slot::Acquired { probe: false });
    assert!(matches!(lab.acquire(&jobs[1], &policy).await, Slot::Deferred { reason: DeferReason::Busy, .. }));
    // Nothing was sent for the deferred job: its token serves the next job (of any destination),
    // or a busy destination's line, cycling through fetches, would eat the kind's whole rate.
    let tokens: Option<f64> = lab.run(redis::cmd("HGET").arg(lab.q().bucket()).arg("tk")).await;
    assert!(tokens.is_some_and(|t| t >= 1.0), "tokens left: {tokens:?}");
    assert_eq!(lab.lease(1, "w2").await.len(), 1);
}

#[tokio::test]
async fn a_long_line_comes_back_by_its_fallbacks_at_the_destinations_pace() {
    let lab = Lab::new();
    let policy = policy(8);
    for job in lab.lease(8, "w1").await {
        assert_eq!(lab.acquire(&job, &policy).await, Slot::Acquired { probe: false });
    }
    let line = lab.lease(400, "w2").await;
    for job in &line {
        assert!(matches!(lab.acquire(job, &policy).await, Slot::Deferred { reason: DeferReason::Busy, .. }));
    }
    // Were every wake-up lost, the line would come back by its fallbacks alone: at the
    // destination's slowest pace (`max` jobs a hold), not all of it within a few holds, each job
    // a fetch and a deferral again, ahead of the other destinations' jobs.
    let horizon = Utc::now().timestamp_millis() + 5 * 15_000;
    let due: u64 = lab.run(redis::cmd("ZCOUNT").arg(lab.q().scheduled()).arg("-inf").arg(horizon)).await;
    assert!(due <= 6 * 8, "{due} of {} parked jobs come back within five holds", line.len());
}

#[tokio::test]
async fn a_killed_holder_of_every_slot_stalls_the_line_no_longer_than_its_first_slot() {
    let lab = Lab::new();
    let policy = policy(2);
    // Worker w1 holds both slots; a long line parks behind them.
    let holders = lab.lease(2, "w1").await;
    for job in &holders {
        assert_eq!(lab.acquire(job, &policy).await, Slot::Acquired { probe: false });
    }
    let line = lab.lease(40, "w2").await;
    for job in &line {
        assert!(matches!(lab.acquire(job, &policy).await, Slot::Deferred { reason: DeferReason::Busy, .. }));
    }
    // A delivery of w1 ends and wakes the head of the line; w1 takes the freed slot again, then
    // is killed: its slots free nobody, and the rest of the line was parked with fallbacks far out.
    lab.release(&holders[0], Delivery::Answered, &policy).await;
    let again = lab.lease(1, "w1").await;
    assert_eq!(lab.acquire(&again[0], &policy).await, Slot::Acquired { probe: false });
    let slots: Vec<(String, i64)> =
        lab.run(redis::cmd("ZRANGE").arg(lab.d().in_flight(slow().id())).arg(0).arg(0).arg("WITHSCORES")).await;
    let first_deadline = slots[0].1;
    let head = lab.zset(lab.d().parked(slow().id())).await[0].clone();
    let head_at: i64 = lab.run(redis::cmd("ZSCORE").arg(lab.q().scheduled()).arg(&head)).await;
    assert!(head_at <= first_deadline, "the head comes back at {head_at}, the first slot frees at {first_deadline}");
    let last_at: i64 = lab.run(redis::cmd("ZSCORE").arg(lab.q().scheduled()).arg(&line[39].id)).await;
    assert!(last_at > first_deadline + 5 * 15_000, "the rest of the line stays spread out");
}

#[tokio::test]
async fn a_parked_job_back_by_its_fallback_leaves_the_line_when_it_takes_a_slot() {
    let lab = Lab::new();
    let short = Policy { hold: Duration::from_millis(50), ..policy(1) };
    let jobs = lab.lease(2, "w1").await;
    assert_eq!(lab.acquire(&jobs[0], &short).await, Slot::Acquired { probe: false });
    assert!(matches!(lab.acquire(&jobs[1], &short).await, Slot::Deferred { .. }));
    // The holder dies (no release, no wake-up): the parked job comes back by its fallback.
    tokio::time::sleep(Duration::from_millis(80)).await;
    let back = Queue::new(lab.conn.clone(), &lab.keys, Kind::Webhook, "w2").fetch(LEASE, 10, 100).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(lab.acquire(&back[0].0, &short).await, Slot::Acquired { probe: false });
    assert!(
        lab.zset(lab.d().parked(slow().id())).await.is_empty(),
        "a job sending is no longer in the line (its count, and the spread of the next fallbacks)"
    );
}

#[tokio::test]
async fn a_parked_job_wakes_into_its_own_lane_and_group_and_the_depth_stays_true() {
    let lab = Lab::new();
    let policy = policy(1);
    let (holder, tenant, cancelled) =
        (webhook(Priority::Normal, None), webhook(Priority::High, Some("acme")), webhook(Priority::High, Some("acme")));
    lab.store().enqueue(&[holder.clone(), tenant.clone(), cancelled.clone()]).await.unwrap();
    let queue = Queue::new(lab.conn.clone(), &lab.keys, Kind::Webhook, "w1");
    let leased: Vec<Leased> = queue.fetch(LEASE, 3, 100).await.unwrap().into_iter().map(|(j, _)| j).collect();
    let by_id = |id: uuid::Uuid| leased.iter().find(|j| j.id == id.to_string()).unwrap().clone();
    let (holder, tenant, cancelled) = (by_id(holder.id), by_id(tenant.id), by_id(cancelled.id));
    assert_eq!(lab.acquire(&holder, &policy).await, Slot::Acquired { probe: false });
    for parked in [&tenant, &cancelled] {
        assert!(matches!(lab.acquire(parked, &policy).await, Slot::Deferred { reason: DeferReason::Busy, .. }));
    }
    assert_eq!((depths(&lab).await.queued, depths(&lab).await.scheduled), (0, 2));

    // A normal job arrives; the slot frees: the oldest parked job goes to the high lane, in its
    // group's list and rotation, and is fetched before the normal one.
    let fresh = webhook(Priority::Normal, None);
    lab.store().enqueue(std::slice::from_ref(&fresh)).await.unwrap();
    let policy2 = Policy { max_in_flight: 2, ..policy };
    assert_eq!(lab.release(&holder, Delivery::Answered, &policy2).await.moved, 2);
    assert_eq!(lab.list(lab.q().group_list(Priority::High, "acme")).await.len(), 2);
    assert_eq!(lab.list(lab.q().rotation(Priority::High)).await, ["acme".to_owned()]);
    assert_eq!((depths(&lab).await.queued, depths(&lab).await.scheduled), (3, 0));
    // One of the woken jobs is cancelled while it waits in its group's list.
    let control = jobs::control::Control::new(
        lab.conn.clone(),
        lab.keys.clone(),
        std::collections::BTreeMap::new(),
        Duration::from_secs(5),
    );
    control.cancel(&cancelled.id, None).await.unwrap();
    assert_eq!(depths(&lab).await.queued, 2);
    let next: Vec<String> = queue.fetch(LEASE, 3, 100).await.unwrap().into_iter().map(|(j, _)| j.id).collect();
    assert_eq!(next, [tenant.id.clone(), fresh.id.to_string()], "the woken high job first, the cancelled one skipped");
    assert_eq!(depths(&lab).await.queued, 0);
    let counters: (Option<i64>, Option<i64>) = (
        lab.run(redis::cmd("GET").arg(lab.q().ready_grouped())).await,
        lab.run(redis::cmd("GET").arg(lab.q().ready_cancelled())).await,
    );
    assert!(matches!(counters, (None, None | Some(0))), "{counters:?}");
}

async fn depths(lab: &Lab) -> jobs::inspect::Depths {
    jobs::dead::DeadLetters::new(lab.conn.clone(), lab.keys.clone()).depths(Kind::Webhook).await.unwrap()
}
