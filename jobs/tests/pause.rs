//! Pausing a kind, its latency, and the fleet registry, against a real Redis (`REDIS_URL`),
//! each test under a namespace of its own: the exact keys `fetch.lua` leaves on a paused queue,
//! what a resume writes, and what a heartbeat keeps and prunes.

#![expect(clippy::unwrap_used, reason = "a fixture that cannot be set up fails the test, loudly")]

mod lab;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::fleet::{CAP, Fleet, Heartbeat};
use jobs::keys::QueueKeys;
use jobs::pause::Pauses;
use jobs::queue::Queue;
use jobs::record::JobRecord;
use jobs::{JobStatus, Kind, NewJob};

use lab::Lab;

const LEASE: Duration = Duration::from_secs(30);

impl Lab {
    fn queue(&self, kind: Kind, worker: &str) -> Queue {
        Queue::new(self.conn.clone(), &self.keys, kind, worker)
    }

    fn pauses(&self) -> Pauses {
        Pauses::new(self.conn.clone(), self.keys.clone())
    }

    fn fleet(&self) -> Fleet {
        Fleet::new(self.conn.clone(), self.keys.clone())
    }

    fn q(&self, kind: Kind) -> QueueKeys {
        self.keys.queue(kind)
    }

    fn job(kind: Kind, created_at: DateTime<Utc>, run_at: Option<DateTime<Utc>>) -> NewJob {
        NewJob { created_at, run_at, max_attempts: 2, ..lab::job(kind) }
    }

    async fn enqueue(&self, jobs: &[NewJob]) {
        self.store().enqueue(jobs).await.unwrap();
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        cmd.query_async(&mut self.conn.clone()).await.unwrap()
    }

    async fn list(&self, key: String) -> Vec<String> {
        self.run(redis::cmd("LRANGE").arg(key).arg(0).arg(-1)).await
    }

    async fn zset(&self, key: String) -> Vec<String> {
        self.run(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1)).await
    }

    async fn now_ms(&self) -> i64 {
        let (secs, micros): (i64, i64) = self.run(&redis::cmd("TIME")).await;
        secs * 1000 + micros / 1000
    }

    async fn record(&self, kind: Kind, id: &str) -> JobRecord {
        let raw: Vec<u8> = self.run(redis::cmd("GET").arg(self.q(kind).job(id))).await;
        JobRecord::decode(&raw).unwrap()
    }

    async fn put_record(&self, kind: Kind, id: &str, record: &JobRecord) {
        let () = self.run(redis::cmd("SET").arg(self.q(kind).job(id)).arg(record.encode())).await;
    }

    /// `fetch.lua`'s header as `Queue::fetch_reply` reads it: (leased ids, next, paused).
    async fn fetch(&self, kind: Kind, batch: usize) -> (Vec<String>, Option<Duration>, bool) {
        let reply = self.queue(kind, "w1").fetch_reply(LEASE, batch, 100).await.unwrap();
        (reply.jobs.into_iter().map(|(job, _)| job.id).collect(), reply.next, reply.paused)
    }

    async fn registry(&self) -> BTreeMap<String, serde_json::Value> {
        let raw: BTreeMap<String, String> = self.run(redis::cmd("HGETALL").arg(self.keys.workers())).await;
        raw.into_iter().map(|(k, v)| (k, serde_json::from_str(&v).unwrap())).collect()
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

#[tokio::test]
async fn a_paused_queue_leases_nothing_but_still_promotes_due_jobs_and_recovers_lost_leases() {
    let lab = Lab::new();
    let q = lab.q(Kind::Webhook);
    let now = Utc::now();
    // One job running under a lease that has run out, one delayed job now due, two ready.
    let lost = Lab::job(Kind::Webhook, now, None);
    lab.enqueue(std::slice::from_ref(&lost)).await;
    assert_eq!(lab.fetch(Kind::Webhook, 1).await.0, [lost.id.to_string()]);
    let expired = lab.now_ms().await - 1;
    let _: i64 = lab.run(redis::cmd("ZADD").arg(q.active()).arg("XX").arg(expired).arg(lost.id.to_string())).await;
    let due = Lab::job(Kind::Webhook, now, Some(now + chrono::Duration::milliseconds(300)));
    let ready = [Lab::job(Kind::Webhook, now, None), Lab::job(Kind::Webhook, now, None)];
    lab.enqueue(&[due.clone(), ready[0].clone(), ready[1].clone()]).await;
    tokio::time::sleep(Duration::from_millis(350)).await;

    let (pause, made) = lab.pauses().pause(Kind::Webhook, "admin", now).await.unwrap();
    assert_eq!((pause.by.as_str(), pause.since.timestamp_millis(), made), ("admin", now.timestamp_millis(), true));
    let (leased, next, paused) = lab.fetch(Kind::Webhook, 10).await;
    assert_eq!((leased, next, paused), (Vec::new(), None, true));
    // Promoted to the popping end, recovered behind it: all four ready, none active.
    let mut expected: Vec<String> = ready.iter().map(|j| j.id.to_string()).collect();
    expected.reverse();
    expected.insert(0, due.id.to_string());
    expected.push(lost.id.to_string());
    expected.reverse();
    let mut got = lab.list(q.ready()).await;
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    assert!(lab.zset(q.active()).await.is_empty());
    assert!(lab.zset(q.scheduled()).await.is_empty());
    let record = lab.record(Kind::Webhook, &lost.id.to_string()).await;
    assert_eq!((record.status, record.history.len()), (JobStatus::Queued, 1), "the lost attempt counts");
    let pause_key: String = lab.run(redis::cmd("GET").arg(q.paused())).await;
    let pause_value: serde_json::Value = serde_json::from_str(&pause_key).unwrap();
    assert_eq!(pause_value, serde_json::json!({"since": now.timestamp_millis(), "by": "admin"}));
    let ttl: i64 = lab.run(redis::cmd("PTTL").arg(q.paused())).await;
    assert_eq!(ttl, -1, "a pause has no expiry");

    // Another kind is not paused; a paused kind still takes jobs.
    let email = Lab::job(Kind::Email, now, None);
    lab.enqueue(std::slice::from_ref(&email)).await;
    assert_eq!(lab.fetch(Kind::Email, 10).await, (vec![email.id.to_string()], None, false));
    lab.enqueue(&[Lab::job(Kind::Webhook, now, None)]).await;
    assert_eq!(lab.list(q.ready()).await.len(), 5);

    // Resumed: the next fetch leases, oldest due first.
    assert!(lab.pauses().resume(Kind::Webhook).await.unwrap());
    let (leased, _, paused) = lab.fetch(Kind::Webhook, 10).await;
    assert!(!paused);
    assert_eq!(leased.len(), 5);
    assert!(lab.pauses().paused(Kind::Webhook).await.unwrap().is_none());
}

#[tokio::test]
async fn pausing_twice_keeps_the_first_pause_and_a_resume_wakes_at_most_16_workers() {
    let lab = Lab::new();
    let q = lab.q(Kind::Email);
    let t0 = Utc::now();
    lab.pauses().pause(Kind::Email, "alice", t0).await.unwrap();
    let (again, made) = lab.pauses().pause(Kind::Email, "bob", t0 + chrono::Duration::seconds(5)).await.unwrap();
    assert_eq!((again.by.as_str(), again.since.timestamp_millis(), made), ("alice", t0.timestamp_millis(), false));

    // Ten markers already waiting (jobs enqueued while paused): the list stays capped at 16.
    for _ in 0..10 {
        let _: i64 = lab.run(redis::cmd("LPUSH").arg(q.wake()).arg("1")).await;
    }
    assert!(lab.pauses().resume(Kind::Email).await.unwrap());
    assert_eq!(lab.list(q.wake()).await, vec!["1"; 16]);
    let exists: i64 = lab.run(redis::cmd("EXISTS").arg(q.paused())).await;
    assert_eq!(exists, 0);

    // Resuming a queue that is not paused writes nothing.
    let _: i64 = lab.run(redis::cmd("DEL").arg(q.wake())).await;
    assert!(!lab.pauses().resume(Kind::Email).await.unwrap());
    assert!(lab.list(q.wake()).await.is_empty());
}

#[tokio::test]
async fn latency_is_the_age_of_the_oldest_ready_job_passing_over_finished_and_missing_ones() {
    let lab = Lab::new();
    let pauses = lab.pauses();
    let q = lab.q(Kind::Webhook);
    let now = Utc::now();
    assert_eq!(pauses.latency(Kind::Webhook, now).await.unwrap(), Duration::ZERO, "nothing ready");

    let old = Lab::job(Kind::Webhook, now - chrono::Duration::seconds(90), None);
    let newer = Lab::job(Kind::Webhook, now - chrono::Duration::seconds(30), None);
    lab.enqueue(&[old.clone(), newer.clone()]).await;
    assert_eq!(pauses.latency(Kind::Webhook, now).await.unwrap(), Duration::from_secs(90));

    // The oldest is cancelled (its id lingers until a fetch pops it), and an id with no record
    // lies at the popping end: both are passed over.
    let mut record = lab.record(Kind::Webhook, &old.id.to_string()).await;
    record.status = JobStatus::Cancelled;
    lab.put_record(Kind::Webhook, &old.id.to_string(), &record).await;
    let _: i64 = lab.run(redis::cmd("RPUSH").arg(q.ready()).arg("gone")).await;
    assert_eq!(pauses.latency(Kind::Webhook, now).await.unwrap(), Duration::from_secs(30));

    // Every id read is finished: the youngest of them bounds the latency.
    let mut record = lab.record(Kind::Webhook, &newer.id.to_string()).await;
    record.status = JobStatus::Cancelled;
    lab.put_record(Kind::Webhook, &newer.id.to_string(), &record).await;
    assert_eq!(pauses.latency(Kind::Webhook, now).await.unwrap(), Duration::from_secs(30));

    // A delayed job promoted late counts from its run-at, not its creation.
    let lab = Lab::new();
    let delayed = Lab::job(Kind::Email, now - chrono::Duration::hours(1), Some(now - chrono::Duration::seconds(12)));
    lab.enqueue(std::slice::from_ref(&delayed)).await;
    let _ = lab.fetch(Kind::Email, 0).await;
    assert_eq!(lab.list(lab.q(Kind::Email).ready()).await, [delayed.id.to_string()]);
    assert_eq!(lab.pauses().latency(Kind::Email, now).await.unwrap(), Duration::from_secs(12));
}

fn beat(id: &str, lease_ms: u64) -> Heartbeat {
    Heartbeat {
        id: id.to_owned(),
        host: "h1".into(),
        pid: 42,
        version: "0.1.0".into(),
        kinds: vec![Kind::Webhook, Kind::Email],
        concurrency: [(Kind::Webhook, 50), (Kind::Email, 10)].into(),
        in_flight: [(Kind::Webhook, 3), (Kind::Email, 0)].into(),
        started_at: 1_764_000_000_000,
        lease_ms,
        last_seen_at: None,
    }
}

#[tokio::test]
async fn a_heartbeat_is_stamped_on_redis_clock_and_a_worker_is_gone_after_its_lease() {
    let lab = Lab::new();
    let fleet = lab.fleet();
    let before = lab.now_ms().await;
    fleet.beat(&beat("w-a", 30_000)).await.unwrap();
    fleet.beat(&beat("w-b", 200)).await.unwrap();
    let after = lab.now_ms().await;
    let stored = lab.registry().await;
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["w-a", "w-b"]);
    let seen = stored["w-a"]["last_seen_at"].as_i64().unwrap();
    assert!((before..=after).contains(&seen), "{before} <= {seen} <= {after}");
    assert_eq!(stored["w-a"]["concurrency"], serde_json::json!({"email": 10, "webhook": 50}));
    assert_eq!(stored["w-a"]["in_flight"]["webhook"], 3);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let listed = fleet.list().await.unwrap();
    let alive: Vec<(&str, bool)> = listed.iter().map(|w| (w.id.as_str(), w.alive)).collect();
    assert_eq!(alive, [("w-a", true), ("w-b", false)], "w-b missed its 200 ms lease");
    assert_eq!(fleet.live_per_kind().await.unwrap()[&Kind::Webhook], 1);
    assert_eq!(fleet.live_per_kind().await.unwrap()[&Kind::AuditLog], 0);

    fleet.leave("w-a").await.unwrap();
    assert_eq!(lab.registry().await.keys().collect::<Vec<_>>(), ["w-b"]);
}

#[tokio::test]
async fn the_registry_drops_entries_gone_an_hour_and_never_grows_past_its_cap() {
    let lab = Lab::new();
    let fleet = lab.fleet();
    let now = lab.now_ms().await;
    let entry = |seen: i64| {
        let mut b = beat("x", 30_000);
        b.last_seen_at = Some(seen);
        serde_json::to_string(&b).unwrap()
    };
    // Crash-looping workers left CAP + 50 entries: 50 of them over an hour old, one unreadable.
    let mut pipe = redis::pipe();
    for i in 0..CAP {
        pipe.cmd("HSET").arg(lab.keys.workers()).arg(format!("fresh-{i:04}")).arg(entry(now - 1000)).ignore();
    }
    for i in 0..49 {
        pipe.cmd("HSET").arg(lab.keys.workers()).arg(format!("old-{i:02}")).arg(entry(now - 3_700_000)).ignore();
    }
    pipe.cmd("HSET").arg(lab.keys.workers()).arg("garbage").arg("not json").ignore();
    let () = pipe.query_async(&mut lab.conn.clone()).await.unwrap();

    // Each heartbeat looks at a bounded sample; enough of them bring the hash back to its cap.
    for _ in 0..200 {
        fleet.beat(&beat("me", 30_000)).await.unwrap();
    }
    let len: usize = lab.run(redis::cmd("HLEN").arg(lab.keys.workers())).await;
    assert!(len <= CAP, "{len} entries");
    assert!(lab.registry().await.contains_key("me"), "the live worker keeps its entry");

    // A read drops what is over an hour old, whatever a sample missed.
    let _: i64 = lab.run(redis::cmd("HSET").arg(lab.keys.workers()).arg("old-x").arg(entry(now - 3_700_000))).await;
    let listed = fleet.list().await.unwrap();
    assert!(listed.iter().all(|w| w.id != "old-x"));
    let stored = lab.registry().await;
    assert!(!stored.contains_key("old-x") && !stored.keys().any(|k| k.starts_with("old-") || k == "garbage"));
    assert_eq!(listed.len(), stored.len());
}
