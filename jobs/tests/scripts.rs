//! Each Lua script run directly against a real Redis (`REDIS_URL`, default 127.0.0.1:6379),
//! under a namespace of its own, through the typed calls of `Store`, `Queue` and
//! `DeadLetters`; every test asserts the exact keys and values the script leaves behind, as
//! asynq's `rdb_test.go` does.

#![expect(clippy::unwrap_used, reason = "a fixture that cannot be set up fails the test, loudly")]

mod lab;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::dead::{DeadFilter, DeadLetters, ReplayOutcome, ReplayRefused};
use jobs::keys::QueueKeys;
use jobs::queue::{FinishReport, Finished, Leased, Outcome, Queue, Retention};
use jobs::record::{AttemptRecord, DeadReason, JobRecord, millis};
use jobs::schedule::{DeleteOutcome, PutOutcome, Schedule, ScheduleLimit, ScheduleLimits, ScheduleStore, Source};
use jobs::{EnqueueOutcome, JobStatus, Kind, NewJob, OtpLimit, OtpLimits};

use lab::Lab;

impl Lab {
    fn queue(&self, kind: Kind) -> Queue {
        self.queue_of(kind, "w1")
    }

    fn queue_of(&self, kind: Kind, worker: &str) -> Queue {
        Queue::new(self.conn.clone(), &self.keys, kind, worker)
    }

    fn dead_letters(&self) -> DeadLetters {
        DeadLetters::new(self.conn.clone(), self.keys.clone())
    }

    fn q(&self, kind: Kind) -> QueueKeys {
        self.keys.queue(kind)
    }

    #[expect(clippy::unused_self, reason = "tests read `lab.job(...)` like every other fixture")]
    fn job(&self, kind: Kind, run_at: Option<DateTime<Utc>>, key: Option<&str>) -> NewJob {
        NewJob {
            id: uuid::Uuid::now_v7(),
            kind,
            payload: r#"{"url":"https://a.example/hook","event":"e"}"#.into(),
            created_at: Utc::now(),
            run_at,
            max_attempts: 2,
            producer: "shop".into(),
            idempotency: key.map(|k| (k.to_owned(), "fp1".to_owned())),
            traceparent: None,
            priority: jobs::Priority::Normal,
            group: None,
        }
    }

    /// An OTP SMS to `to`: the rate limits read the recipient from the payload.
    fn otp(&self, to: &str) -> NewJob {
        NewJob { payload: format!(r#"{{"to":"{to}","code":"123456"}}"#), ..self.job(Kind::OtpSms, None, None) }
    }

    /// Every key of the namespace with its type, sorted: what a script left behind.
    async fn layout(&self) -> BTreeMap<String, String> {
        let mut conn = self.conn.clone();
        let names: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}:*", self.namespace)).query_async(&mut conn).await.unwrap();
        let mut out = BTreeMap::new();
        for name in names {
            let kind: String = redis::cmd("TYPE").arg(&name).query_async(&mut conn).await.unwrap();
            out.insert(self.short(&name), kind);
        }
        out
    }

    /// `key` as `layout` and `dump` name it: the namespace shown as `ns`.
    fn short(&self, key: &str) -> String {
        key.replacen(&self.namespace, "ns", 1)
    }

    /// The layout made of `keys` (full names) and their types.
    fn expect(&self, keys: &[(String, &str)]) -> BTreeMap<String, String> {
        keys.iter().map(|(name, kind)| (self.short(name), (*kind).to_owned())).collect()
    }

    /// Every key of the namespace with its whole value (TTLs aside): equal before and after a
    /// call that must write nothing.
    async fn dump(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (short, kind) in self.layout().await {
            let name = short.replacen("ns", &self.namespace, 1);
            let value = match kind.as_str() {
                "string" => format!("{:?}", self.run::<Vec<u8>>(redis::cmd("GET").arg(&name)).await),
                "list" => format!("{:?}", self.list(name).await),
                "zset" => format!(
                    "{:?}",
                    self.run::<Vec<String>>(redis::cmd("ZRANGE").arg(&name).arg(0).arg(-1).arg("WITHSCORES")).await
                ),
                "hash" => format!("{:?}", self.run::<BTreeMap<String, String>>(redis::cmd("HGETALL").arg(&name)).await),
                "stream" => format!("{:?}", self.stream(name).await),
                other => panic!("{short}: unexpected type {other}"),
            };
            out.insert(short, value);
        }
        out
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        cmd.query_async(&mut self.conn.clone()).await.unwrap()
    }

    async fn record(&self, kind: Kind, id: &str) -> Option<JobRecord> {
        let raw: Option<Vec<u8>> =
            redis::cmd("GET").arg(self.keys.queue(kind).job(id)).query_async(&mut self.conn.clone()).await.unwrap();
        raw.map(|r| JobRecord::decode(&r).unwrap())
    }

    async fn put_record(&self, kind: Kind, id: &str, record: &JobRecord) {
        let () = self.run(redis::cmd("SET").arg(self.q(kind).job(id)).arg(record.encode())).await;
    }

    async fn get(&self, key: String) -> Option<String> {
        self.run(redis::cmd("GET").arg(key)).await
    }

    async fn zset(&self, key: String) -> Vec<String> {
        redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).query_async(&mut self.conn.clone()).await.unwrap()
    }

    async fn zscores(&self, key: String) -> Vec<(String, i64)> {
        self.run(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES")).await
    }

    /// Sets the score of `id`, which must be a member already.
    async fn rescore(&self, key: String, id: &str, score: i64) {
        let changed: i64 = self.run(redis::cmd("ZADD").arg(key).arg("XX").arg("CH").arg(score).arg(id)).await;
        assert_eq!(changed, 1, "{id} was not a member");
    }

    /// A stream's entries, each as its field names (the values are empty): the job ids.
    async fn stream(&self, key: String) -> Vec<Vec<String>> {
        let entries: Vec<(String, Vec<String>)> = self.run(redis::cmd("XRANGE").arg(key).arg("-").arg("+")).await;
        entries.into_iter().map(|(_, fields)| fields.into_iter().step_by(2).collect()).collect()
    }

    async fn list(&self, key: String) -> Vec<String> {
        redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query_async(&mut self.conn.clone()).await.unwrap()
    }

    async fn pttl(&self, key: String) -> i64 {
        redis::cmd("PTTL").arg(key).query_async(&mut self.conn.clone()).await.unwrap()
    }

    /// Redis's clock, ms: the one the scripts read.
    async fn now_ms(&self) -> i64 {
        let (secs, micros): (i64, i64) = self.run(&redis::cmd("TIME")).await;
        secs * 1000 + micros / 1000
    }

    async fn enqueue(&self, jobs: &[NewJob]) -> Vec<EnqueueOutcome> {
        self.store().enqueue(jobs).await.unwrap()
    }

    /// Enqueues `job` and leases it to w1: the job as its worker holds it.
    async fn leased(&self, job: &NewJob) -> Leased {
        self.enqueue(std::slice::from_ref(job)).await;
        self.lease(job).await
    }

    /// Leases the job at the head of `job`'s queue, which must be `job`, to w1.
    async fn lease(&self, job: &NewJob) -> Leased {
        let mut jobs = self.queue(job.kind).fetch(LEASE, 1, 10).await.unwrap();
        assert_eq!(jobs.len(), 1);
        let (leased, _) = jobs.remove(0);
        assert_eq!(leased.id, job.id.to_string());
        leased
    }

    /// Enqueues `job`, leases it and finishes it as a permanent failure at `now`: a dead letter.
    async fn bury(&self, job: &NewJob, now: DateTime<Utc>, retention: &Retention) -> FinishReport {
        let leased = self.leased(job).await;
        let done = finished(leased, Outcome::Dead(DeadReason::Permanent), Some("HTTP 410"));
        self.queue(job.kind).finish(&[done], now, retention).await.unwrap()
    }

    /// `fetch.lua` called directly, for the counts `Queue::fetch` only logs: the header
    /// `[promoted, recovered, next, skipped]` and the leased ids.
    async fn fetch_raw(&self, kind: Kind, worker: &str, batch: usize, promote_limit: usize) -> ([i64; 4], Vec<String>) {
        let script = redis::Script::new(&format!(
            "{}{}{}{}",
            include_str!("../lua/record.lua"),
            include_str!("../lua/lanes.lua"),
            include_str!("../lua/rate.lua"),
            include_str!("../lua/fetch.lua")
        ));
        let q = self.q(kind);
        let mut call = script.prepare_invoke();
        call.key(q.ready()).key(q.scheduled()).key(q.retry()).key(q.active()).key(q.dead()).key(q.paused());
        call.key(q.bucket());
        call.arg(LEASE.as_millis().to_string())
            .arg(batch)
            .arg(promote_limit)
            .arg(q.job_prefix())
            .arg(worker)
            .arg(q.idempotency_prefix())
            .arg(jobs::rate::RAMP.as_millis().to_string());
        let reply: Vec<redis::Value> = call.invoke_async(&mut self.conn.clone()).await.unwrap();
        let mut reply = reply.into_iter();
        let header: Vec<i64> = reply.by_ref().take(6).map(|v| redis::from_redis_value(v).unwrap()).collect();
        let ids = reply.step_by(2).map(|v| redis::from_redis_value(v).unwrap()).collect();
        (header[..4].try_into().unwrap(), ids)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()).as_str(),
        ) else {
            return;
        };
        if let Ok(mut conn) = client.get_connection() {
            let names: Vec<String> =
                redis::cmd("KEYS").arg(format!("{}:*", self.namespace)).query(&mut conn).unwrap_or_default();
            if !names.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(names).query(&mut conn);
            }
        }
    }
}

/// When a worker says its attempt started and ended (ms): fixed, so records compare exactly.
const STARTED: i64 = 1_800_000_000_000;
const ENDED: i64 = STARTED + 250;
const LEASE: Duration = Duration::from_secs(30);
const DAY_MS: i64 = 24 * 3600 * 1000;
const LOST: &str = "lease expired: the worker stopped answering";

fn finished(job: Leased, outcome: Outcome, error: Option<&str>) -> Finished {
    Finished {
        job,
        outcome,
        error: error.map(str::to_owned),
        provider_id: None,
        started_at: millis(STARTED),
        finished_at: millis(ENDED),
    }
}

fn attempt(n: u32, error: Option<&str>, worker: &str) -> AttemptRecord {
    AttemptRecord {
        attempt: n,
        started_at: STARTED,
        finished_at: ENDED,
        error: error.map(str::to_owned),
        worker: worker.to_owned(),
    }
}

/// A TTL (ms) set to `full` a moment ago.
fn assert_ttl(what: &str, ttl: i64, full: i64) {
    assert!((full - 5_000..=full).contains(&ttl), "{what}: ttl {ttl} ms, expected about {full}");
}

fn assert_within(what: &str, value: i64, range: RangeInclusive<i64>) {
    assert!(range.contains(&value), "{what}: {value} not within {range:?}");
}

/// The minute key of `finish.lua`'s counters for a call made at `now`.
fn stats_key(q: &QueueKeys, now: DateTime<Utc>) -> String {
    q.stats(now.timestamp().div_euclid(60))
}

const RETENTION: Retention = Retention {
    finished: Duration::from_mins(1),
    dead_cap: 100,
    dead_cap_per_producer: 10,
    dead_age: Duration::from_hours(24),
};

// ---------------------------------------------------------------------------------------------
// enqueue.lua

#[tokio::test]
async fn enqueue_writes_one_record_and_one_list_entry() {
    let lab = Lab::new();
    let job = lab.job(Kind::Webhook, None, None);
    let id = job.id.to_string();
    let outcome = lab.store().enqueue(std::slice::from_ref(&job)).await.unwrap();
    assert!(matches!(&outcome[0], EnqueueOutcome::Created { id: i, status: JobStatus::Queued, .. } if *i == id));
    let q = lab.keys.queue(Kind::Webhook);
    assert_eq!(lab.list(q.ready()).await, std::slice::from_ref(&id));
    let record = lab.record(Kind::Webhook, &id).await.unwrap();
    assert_eq!(record, JobRecord::new(&job, job.created_at));
    assert_eq!(lab.layout().await, lab.expect(&[(q.ready(), "list"), (q.wake(), "list"), (q.job(&id), "string")]));
    assert_eq!(lab.pttl(q.job(&id)).await, -1, "a live job never expires");
}

#[tokio::test]
async fn enqueue_puts_immediate_jobs_in_the_ready_list_and_delayed_ones_in_the_scheduled_set() {
    let lab = Lab::new();
    let a = lab.job(Kind::Webhook, None, None);
    let b = lab.job(Kind::Webhook, Some(Utc::now() + chrono::Duration::hours(1)), None);
    let c = NewJob {
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        ..lab.job(Kind::Webhook, None, None)
    };
    let jobs = [a.clone(), b.clone(), c.clone()];
    let outcome = lab.enqueue(&jobs).await;

    // The call's "now" is its first job's creation time.
    let now = a.created_at;
    let now_ms = millis(now.timestamp_millis());
    let b_ms = b.run_at.unwrap().timestamp_millis();
    let (a_id, b_id, c_id) = (a.id.to_string(), b.id.to_string(), c.id.to_string());
    assert_eq!(
        outcome,
        [
            EnqueueOutcome::Created { id: a_id.clone(), status: JobStatus::Queued, run_at: now_ms },
            EnqueueOutcome::Created { id: b_id.clone(), status: JobStatus::Scheduled, run_at: millis(b_ms) },
            EnqueueOutcome::Created { id: c_id.clone(), status: JobStatus::Queued, run_at: now_ms },
        ]
    );
    let q = lab.q(Kind::Webhook);
    assert_eq!(
        lab.layout().await,
        lab.expect(&[
            (q.ready(), "list"),
            (q.scheduled(), "zset"),
            (q.wake(), "list"),
            (q.job(&a_id), "string"),
            (q.job(&b_id), "string"),
            (q.job(&c_id), "string"),
        ])
    );
    // LPUSH: the oldest at the popping (right) end.
    assert_eq!(lab.list(q.ready()).await, [c_id.clone(), a_id.clone()]);
    assert_eq!(lab.zscores(q.scheduled()).await, [(b_id.clone(), b_ms)]);
    assert_eq!(lab.list(q.wake()).await, ["1", "1"], "one marker per immediate job");
    for job in &jobs {
        let record = lab.record(Kind::Webhook, &job.id.to_string()).await.unwrap();
        assert_eq!(record, JobRecord::new(job, now));
    }
    assert_eq!(lab.record(Kind::Webhook, &b_id).await.unwrap().status, JobStatus::Scheduled);
}

#[tokio::test]
async fn the_wake_list_keeps_at_most_16_markers() {
    // (immediate jobs, delayed jobs, markers already there, markers after)
    let cases = [(1, 0, 0, 1), (2, 1, 0, 2), (0, 2, 0, 0), (20, 0, 0, 16), (3, 0, 15, 16)];
    for (immediate, delayed, before, after) in cases {
        let lab = Lab::new();
        let q = lab.q(Kind::Email);
        for _ in 0..before {
            let _: i64 = lab.run(redis::cmd("LPUSH").arg(q.wake()).arg("1")).await;
        }
        let later = Utc::now() + chrono::Duration::minutes(5);
        let jobs: Vec<NewJob> = (0..immediate)
            .map(|_| lab.job(Kind::Email, None, None))
            .chain((0..delayed).map(|_| lab.job(Kind::Email, Some(later), None)))
            .collect();
        lab.enqueue(&jobs).await;
        let case = format!("{immediate} immediate, {delayed} delayed, {before} markers before");
        assert_eq!(lab.list(q.wake()).await, vec!["1"; after], "{case}");
    }
}

#[tokio::test]
async fn a_key_seen_with_the_same_fingerprint_answers_with_the_earlier_job() {
    // (state of the earlier job, the answer to a second request with its key and fingerprint)
    enum Then {
        Replayed(JobStatus),
        Created,
    }
    let cases = [
        ("queued", Then::Replayed(JobStatus::Queued)),
        ("running", Then::Replayed(JobStatus::Running)),
        ("succeeded", Then::Replayed(JobStatus::Succeeded)),
        // A dead letter gave its key up (bury): the key makes a new job.
        ("dead", Then::Created),
    ];
    for (state, then) in cases {
        let lab = Lab::new();
        let q = lab.q(Kind::Webhook);
        let first = lab.job(Kind::Webhook, None, Some("order-7"));
        let first_id = first.id.to_string();
        lab.enqueue(std::slice::from_ref(&first)).await;
        match state {
            "running" => drop(lab.lease(&first).await),
            "succeeded" => {
                let leased = lab.lease(&first).await;
                lab.queue(Kind::Webhook)
                    .finish(&[finished(leased, Outcome::Succeeded, None)], Utc::now(), &RETENTION)
                    .await
                    .unwrap();
            }
            "dead" => {
                let leased = lab.lease(&first).await;
                let done = finished(leased, Outcome::Dead(DeadReason::Permanent), Some("HTTP 410"));
                lab.queue(Kind::Webhook).finish(&[done], Utc::now(), &RETENTION).await.unwrap();
            }
            _ => {}
        }
        let before = lab.dump().await;
        let again = lab.job(Kind::Webhook, None, Some("order-7"));
        let outcome = lab.enqueue(std::slice::from_ref(&again)).await;
        match then {
            Then::Replayed(status) => {
                let run_at = millis(lab.record(Kind::Webhook, &first_id).await.unwrap().run_at);
                assert_eq!(outcome, [EnqueueOutcome::Replayed { id: first_id.clone(), status, run_at }], "{state}");
                assert_eq!(lab.dump().await, before, "{state}: a replay writes nothing");
            }
            Then::Created => {
                let id = again.id.to_string();
                assert!(
                    matches!(&outcome[..], [EnqueueOutcome::Created { id: i, .. }] if *i == id),
                    "{state}: {outcome:?}"
                );
                assert_eq!(lab.get(q.idempotency("shop", "order-7")).await, Some(format!("fp1 {id}")), "{state}");
                assert_ttl(state, lab.pttl(q.idempotency("shop", "order-7")).await, DAY_MS);
            }
        }
    }
}

#[tokio::test]
async fn a_key_seen_with_another_fingerprint_conflicts_and_nothing_of_the_call_is_written() {
    let lab = Lab::new();
    let q = lab.q(Kind::Webhook);
    let first = lab.job(Kind::Webhook, None, Some("order-7"));
    lab.enqueue(std::slice::from_ref(&first)).await;
    let before = lab.dump().await;

    let plain = lab.job(Kind::Webhook, None, None);
    let mut other = lab.job(Kind::Webhook, None, Some("order-7"));
    other.idempotency = Some(("order-7".into(), "fp2".into()));
    let outcome = lab.enqueue(&[plain, other]).await;
    assert_eq!(outcome, [EnqueueOutcome::NotWritten, EnqueueOutcome::Conflict { existing_id: first.id.to_string() }]);
    assert_eq!(lab.dump().await, before);
    assert_eq!(lab.get(q.idempotency("shop", "order-7")).await, Some(format!("fp1 {}", first.id)));
}

#[tokio::test]
async fn a_key_whose_job_is_gone_makes_a_new_job() {
    let lab = Lab::new();
    let q = lab.q(Kind::Webhook);
    let idem = q.idempotency("shop", "order-7");
    // The idempotency record outlived its job (deleted by an operator, or a record that
    // expired first): the key holds nothing any more.
    let () = lab
        .run(redis::cmd("SET").arg(&idem).arg("fp9 01900000-0000-7000-8000-000000000000").arg("PX").arg(60_000))
        .await;
    let job = lab.job(Kind::Webhook, None, Some("order-7"));
    let id = job.id.to_string();
    let outcome = lab.enqueue(std::slice::from_ref(&job)).await;
    assert_eq!(
        outcome,
        [EnqueueOutcome::Created {
            id: id.clone(),
            status: JobStatus::Queued,
            run_at: millis(job.created_at.timestamp_millis())
        }]
    );
    assert_eq!(lab.get(idem.clone()).await, Some(format!("fp1 {id}")));
    assert_ttl("idempotency record", lab.pttl(idem.clone()).await, DAY_MS);
    assert_eq!(
        lab.layout().await,
        lab.expect(&[(q.ready(), "list"), (q.wake(), "list"), (q.job(&id), "string"), (idem, "string")])
    );
}

#[tokio::test]
async fn a_resent_call_is_answered_as_a_replay_and_writes_no_second_copy() {
    let lab = Lab::new();
    let q = lab.q(Kind::Email);
    let now_job = lab.job(Kind::Email, None, None);
    let later = lab.job(Kind::Email, Some(Utc::now() + chrono::Duration::minutes(5)), None);
    lab.enqueue(&[now_job.clone(), later.clone()]).await;
    let before = lab.dump().await;

    // The same call again (a client that lost the first answer), and one job more.
    let extra = lab.job(Kind::Email, None, None);
    let outcome = lab.enqueue(&[now_job.clone(), later.clone(), extra.clone()]).await;
    let now_ms = millis(now_job.created_at.timestamp_millis());
    assert_eq!(
        outcome,
        [
            EnqueueOutcome::Replayed { id: now_job.id.to_string(), status: JobStatus::Queued, run_at: now_ms },
            EnqueueOutcome::Replayed {
                id: later.id.to_string(),
                status: JobStatus::Scheduled,
                run_at: millis(later.run_at.unwrap().timestamp_millis()),
            },
            EnqueueOutcome::Created { id: extra.id.to_string(), status: JobStatus::Queued, run_at: now_ms },
        ]
    );
    assert_eq!(lab.list(q.ready()).await, [extra.id.to_string(), now_job.id.to_string()]);
    assert_eq!(lab.zset(q.scheduled()).await, [later.id.to_string()]);
    assert_eq!(lab.list(q.wake()).await, ["1", "1"]);
    let mut after = lab.dump().await;
    for key in [q.ready(), q.wake(), q.job(&extra.id.to_string())] {
        after.remove(&lab.short(&key));
    }
    let mut before = before;
    for key in [q.ready(), q.wake()] {
        before.remove(&lab.short(&key));
    }
    assert_eq!(after, before, "the resent jobs' records are untouched");
}

#[tokio::test]
async fn a_call_over_two_kinds_is_checked_first_and_writes_nothing_when_one_kind_refuses() {
    // Store::enqueue checks every queue (enqueue.lua with `check`) before writing any.
    let lab = Lab::new();
    let webhook = lab.q(Kind::Webhook);
    let email = lab.q(Kind::Email);
    let first = lab.job(Kind::Email, None, Some("k-email"));
    lab.enqueue(std::slice::from_ref(&first)).await;
    // A webhook key whose job is gone: the check must not tidy it away either.
    let stale = webhook.idempotency("shop", "k-webhook");
    let () = lab
        .run(redis::cmd("SET").arg(&stale).arg("fp1 01900000-0000-7000-8000-000000000000").arg("PX").arg(60_000))
        .await;
    let before = lab.dump().await;

    let hook = lab.job(Kind::Webhook, None, Some("k-webhook"));
    let mut clash = lab.job(Kind::Email, None, Some("k-email"));
    clash.idempotency = Some(("k-email".into(), "fp2".into()));
    let outcome = lab.enqueue(&[hook.clone(), clash]).await;
    assert_eq!(outcome, [EnqueueOutcome::NotWritten, EnqueueOutcome::Conflict { existing_id: first.id.to_string() }]);
    assert_eq!(lab.dump().await, before);

    // Without the conflict, both kinds are written.
    let fresh = lab.job(Kind::Email, None, Some("k-other"));
    let outcome = lab.enqueue(&[hook.clone(), fresh.clone()]).await;
    let now_ms = millis(hook.created_at.timestamp_millis());
    assert_eq!(
        outcome,
        [
            EnqueueOutcome::Created { id: hook.id.to_string(), status: JobStatus::Queued, run_at: now_ms },
            EnqueueOutcome::Created { id: fresh.id.to_string(), status: JobStatus::Queued, run_at: now_ms },
        ]
    );
    assert_eq!(lab.get(stale).await, Some(format!("fp1 {}", hook.id)));
    assert_eq!(lab.list(webhook.ready()).await, [hook.id.to_string()]);
    assert_eq!(lab.list(email.ready()).await, [fresh.id.to_string(), first.id.to_string()]);
}

#[tokio::test]
async fn a_call_over_two_kinds_writes_nothing_when_an_otp_is_over_its_limit() {
    let lab = Lab::new();
    let limits = OtpLimits { per_number: 1, per_key: 0, window: Duration::from_hours(1) };
    let store = lab.store().with_otp_limits(limits);
    store.enqueue(&[lab.otp("+886912345678")]).await.unwrap();
    let before = lab.dump().await;
    let outcome = store.enqueue(&[lab.job(Kind::Email, None, None), lab.otp("+886912345678")]).await.unwrap();
    assert!(
        matches!(
            &outcome[..],
            [EnqueueOutcome::NotWritten, EnqueueOutcome::Limited { limit: OtpLimit::PerNumber, .. }]
        ),
        "{outcome:?}"
    );
    assert_eq!(lab.dump().await, before);
}

#[tokio::test]
async fn otp_rate_limits_refuse_the_whole_call_and_say_how_long_to_wait() {
    let lab = Lab::new();
    let window = Duration::from_hours(1);
    let window_ms = 3_600_000;
    let store = lab.store().with_otp_limits(OtpLimits { per_number: 2, per_key: 3, window });
    let q = lab.q(Kind::OtpSms);
    let (n1, n2, n3) = ("+886912345678", "+14155552671", "+447700900123");

    let t0 = lab.now_ms().await;
    let (o1, o2) = (lab.otp(n1), lab.otp(n1));
    let outcome = store.enqueue(&[o1.clone(), o2.clone()]).await.unwrap();
    let t1 = lab.now_ms().await;
    assert!(outcome.iter().all(|o| matches!(o, EnqueueOutcome::Created { .. })), "{outcome:?}");
    let ids = |jobs: &[&NewJob]| {
        let mut ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
        ids.sort();
        ids
    };
    for key in [q.rate_per_number(n1), q.rate_per_producer("shop")] {
        let counted = lab.zscores(key.clone()).await;
        assert_eq!(counted.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), ids(&[&o1, &o2]));
        for (_, score) in counted {
            assert_within("counted at", score, t0..=t1);
        }
        assert_ttl(&key, lab.pttl(key.clone()).await, window_ms);
    }
    assert_eq!(
        lab.layout().await,
        lab.expect(&[
            (q.ready(), "list"),
            (q.wake(), "list"),
            (q.job(&o1.id.to_string()), "string"),
            (q.job(&o2.id.to_string()), "string"),
            (q.rate_per_number(n1), "zset"),
            (q.rate_per_producer("shop"), "zset"),
        ])
    );
    let before = lab.dump().await;

    // Over the per-number limit: nothing of the call is written; a slot frees when o1 leaves the window.
    let outcome = store.enqueue(&[lab.otp(n2), lab.otp(n1)]).await.unwrap();
    let [EnqueueOutcome::NotWritten, EnqueueOutcome::Limited { limit: OtpLimit::PerNumber, retry_after }] = outcome[..]
    else {
        panic!("{outcome:?}")
    };
    let elapsed = lab.now_ms().await - t0;
    assert_within("retry after", i64::try_from(retry_after.as_millis()).unwrap(), window_ms - elapsed..=window_ms);
    assert_eq!(lab.dump().await, before);

    // Over the per-key limit (2 counted + 2 new > 3): the second new job is the one refused.
    let outcome = store.enqueue(&[lab.otp(n2), lab.otp(n3)]).await.unwrap();
    let [EnqueueOutcome::NotWritten, EnqueueOutcome::Limited { limit: OtpLimit::PerKey, retry_after }] = outcome[..]
    else {
        panic!("{outcome:?}")
    };
    let elapsed = lab.now_ms().await - t0;
    assert_within("retry after", i64::try_from(retry_after.as_millis()).unwrap(), window_ms - elapsed..=window_ms);
    assert_eq!(lab.dump().await, before);

    // A resent job does not count again.
    let outcome = store.enqueue(std::slice::from_ref(&o1)).await.unwrap();
    assert!(matches!(&outcome[..], [EnqueueOutcome::Replayed { .. }]), "{outcome:?}");
    assert_eq!(lab.dump().await, before);

    // One more fits the per-key limit exactly.
    let o3 = lab.otp(n2);
    let outcome = store.enqueue(std::slice::from_ref(&o3)).await.unwrap();
    assert!(matches!(&outcome[..], [EnqueueOutcome::Created { .. }]), "{outcome:?}");
    assert_eq!(lab.zset(q.rate_per_producer("shop")).await.len(), 3);
    assert_eq!(lab.zset(q.rate_per_number(n2)).await, [o3.id.to_string()]);
    assert_eq!(lab.zset(q.rate_per_number(n1)).await, ids(&[&o1, &o2]));
}

#[tokio::test]
async fn an_otp_call_over_the_limit_by_itself_waits_a_whole_window() {
    let lab = Lab::new();
    let window = Duration::from_hours(1);
    let store = lab.store().with_otp_limits(OtpLimits { per_number: 2, per_key: 0, window });
    let to = "+886912345678";
    let outcome = store.enqueue(&[lab.otp(to), lab.otp(to), lab.otp(to)]).await.unwrap();
    assert_eq!(
        outcome,
        [
            EnqueueOutcome::NotWritten,
            EnqueueOutcome::NotWritten,
            EnqueueOutcome::Limited { limit: OtpLimit::PerNumber, retry_after: window },
        ]
    );
    assert!(lab.layout().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// fetch.lua

#[tokio::test]
async fn fetch_leases_in_fifo_order_and_marks_each_job_running() {
    let lab = Lab::new();
    let q = lab.q(Kind::Webhook);
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let a = NewJob { traceparent: Some(traceparent.into()), ..lab.job(Kind::Webhook, None, None) };
    let (b, c) = (lab.job(Kind::Webhook, None, None), lab.job(Kind::Webhook, None, None));
    lab.enqueue(&[a.clone(), b.clone(), c.clone()]).await;
    let (a_id, b_id, c_id) = (a.id.to_string(), b.id.to_string(), c.id.to_string());

    let t0 = lab.now_ms().await;
    let leased = lab.queue(Kind::Webhook).fetch(LEASE, 2, 10).await.unwrap();
    let t1 = lab.now_ms().await;
    assert_eq!(leased.iter().map(|(l, _)| l.id.clone()).collect::<Vec<_>>(), [a_id.clone(), b_id.clone()]);
    for ((l, payload), job) in leased.iter().zip([&a, &b]) {
        assert_eq!((l.attempt, l.max_attempts, l.producer.as_str()), (1, 2, "shop"));
        assert_eq!((payload, &l.traceparent), (&job.payload, &job.traceparent));
        assert_eq!(l.created_at, millis(job.created_at.timestamp_millis()));
    }

    let started = lab.record(Kind::Webhook, &a_id).await.unwrap().started_at.unwrap();
    assert_within("started at (Redis's clock)", started, t0..=t1);
    for job in [&a, &b] {
        let record = lab.record(Kind::Webhook, &job.id.to_string()).await.unwrap();
        let expected = JobRecord {
            status: JobStatus::Running,
            attempts: 1,
            leases: 1,
            started_at: Some(started),
            worker: Some("w1".into()),
            ..JobRecord::new(job, a.created_at)
        };
        assert_eq!(record, expected);
    }
    let deadline = started + 30_000;
    let mut active = vec![(a_id.clone(), deadline), (b_id.clone(), deadline)];
    active.sort();
    assert_eq!(lab.zscores(q.active()).await, active, "leased until Redis's now + lease");
    assert_eq!(lab.list(q.ready()).await, std::slice::from_ref(&c_id));
    assert_eq!(
        lab.layout().await,
        lab.expect(&[
            (q.ready(), "list"),
            (q.wake(), "list"),
            (q.active(), "zset"),
            (q.job(&a_id), "string"),
            (q.job(&b_id), "string"),
            (q.job(&c_id), "string"),
        ])
    );
    let next = lab.queue(Kind::Webhook).fetch(LEASE, 2, 10).await.unwrap();
    assert_eq!(next.iter().map(|(l, _)| l.id.clone()).collect::<Vec<_>>(), [c_id]);
}

#[tokio::test]
async fn a_record_survives_luas_msgpack_whatever_its_payload() {
    // fetch.lua and finish.lua unpack and repack the record with cmsgpack: every string
    // length class (fixstr, str8, str16, str32) and non-ASCII text must come back as written.
    for size in [10, 200, 60_000, 300_000] {
        let lab = Lab::new();
        let payload = format!(r#"{{"event":"é🙂","pad":"{}"}}"#, "x".repeat(size));
        let job = NewJob { payload: payload.clone(), ..lab.job(Kind::Webhook, None, Some("ключ-7")) };
        lab.enqueue(std::slice::from_ref(&job)).await;
        let mut leased = lab.queue(Kind::Webhook).fetch(LEASE, 1, 10).await.unwrap();
        let (leased, handed) = leased.remove(0);
        assert_eq!(handed, payload, "{size}");
        let retry = finished(leased, Outcome::Retry { at: Utc::now() }, Some("échec"));
        lab.queue(Kind::Webhook).finish(&[retry], Utc::now(), &RETENTION).await.unwrap();
        let record = lab.record(Kind::Webhook, &job.id.to_string()).await.unwrap();
        assert_eq!(record.payload.as_deref(), Some(payload.as_str()), "{size}");
        assert_eq!(record.idempotency_key.as_deref(), Some("ключ-7"), "{size}");
        assert_eq!(record.history, [attempt(1, Some("échec"), "w1")], "{size}");
    }
}

#[tokio::test]
async fn fetch_promotes_due_jobs_up_to_the_promote_limit_and_leaves_future_ones() {
    let lab = Lab::new();
    let q = lab.q(Kind::Email);
    let later = Utc::now() + chrono::Duration::hours(1);
    let delayed: Vec<NewJob> = (0..4).map(|_| lab.job(Kind::Email, Some(later), None)).collect();
    let retried = lab.job(Kind::Email, None, None);
    let leased = lab.leased(&retried).await;
    let done = finished(leased, Outcome::Retry { at: later }, Some("HTTP 503"));
    let finished_at = Utc::now();
    lab.queue(Kind::Email).finish(&[done], finished_at, &RETENTION).await.unwrap();
    lab.enqueue(&delayed).await;
    let ids: Vec<String> = delayed.iter().map(|j| j.id.to_string()).collect();
    let r = retried.id.to_string();
    // Three delayed jobs and the retry are due; the fourth delayed job is not.
    let now = lab.now_ms().await;
    for (id, ago) in ids.iter().zip([3000, 2000, 1000]) {
        lab.rescore(q.scheduled(), id, now - ago).await;
    }
    lab.rescore(q.retry(), &r, now - 1500).await;
    let records_before = lab.dump().await;

    let (header, leased) = lab.fetch_raw(Kind::Email, "w1", 0, 2).await;
    // Two of the three due delayed jobs (the promote limit), and the retry; nothing leased
    // (batch 0), and jobs are ready, so the next wait is none.
    assert_eq!(header, [3, 0, 0, 0]);
    assert!(leased.is_empty());
    // Each set's due jobs go to the popping end, the earliest due popped first; the retries
    // are moved after the delayed jobs, so they pop before them.
    assert_eq!(lab.list(q.ready()).await, [ids[1].clone(), ids[0].clone(), r.clone()]);
    assert_eq!(lab.zset(q.scheduled()).await, [ids[2].clone(), ids[3].clone()]);
    assert_eq!(
        lab.layout().await,
        lab.expect(&[
            (q.ready(), "list"),
            (q.scheduled(), "zset"),
            (q.job(&r), "string"),
            (q.job(&ids[0]), "string"),
            (q.job(&ids[1]), "string"),
            (q.job(&ids[2]), "string"),
            (q.job(&ids[3]), "string"),
            (q.wake(), "list"),
            (stats_key(&q, finished_at), "hash"),
        ])
    );
    // Promotion moves ids only: the records keep their status until leased.
    let records_after = lab.dump().await;
    for id in [&r, &ids[0], &ids[1]] {
        let key = lab.short(&q.job(id));
        assert_eq!(records_after[&key], records_before[&key]);
    }

    let (header, leased) = lab.fetch_raw(Kind::Email, "w1", 10, 2).await;
    assert_eq!(header, [1, 0, -1, 0], "the third due delayed job is promoted now");
    assert_eq!(leased, [ids[2].clone(), r.clone(), ids[0].clone(), ids[1].clone()]);
    assert_eq!(lab.zset(q.scheduled()).await, [ids[3].clone()]);
    let record = lab.record(Kind::Email, &r).await.unwrap();
    assert_eq!((record.status, record.attempts), (JobStatus::Running, 2));
    assert_eq!(record.history, [attempt(1, Some("HTTP 503"), "w1")]);
}

#[tokio::test]
async fn fetch_recovers_expired_leases() {
    // (max attempts, what recovery does)
    for max_attempts in [2, 1] {
        let lab = Lab::new();
        let q = lab.q(Kind::Webhook);
        let job = NewJob { max_attempts, ..lab.job(Kind::Webhook, None, Some("order-7")) };
        let id = job.id.to_string();
        lab.leased(&job).await;
        let leased_record = lab.record(Kind::Webhook, &id).await.unwrap();
        lab.rescore(q.active(), &id, lab.now_ms().await - 1).await;

        let t0 = lab.now_ms().await;
        let (header, leased) = lab.fetch_raw(Kind::Webhook, "w2", 0, 10).await;
        let t1 = lab.now_ms().await;
        assert!(leased.is_empty());
        let record = lab.record(Kind::Webhook, &id).await.unwrap();
        let recovered_at = record.history.first().map(|h| h.finished_at).unwrap();
        assert_within("recovered at", recovered_at, t0..=t1);
        let lost = AttemptRecord {
            attempt: 1,
            started_at: leased_record.started_at.unwrap(),
            finished_at: recovered_at,
            error: Some(LOST.into()),
            worker: "w1".into(),
        };
        let idem = q.idempotency("shop", "order-7");
        if max_attempts == 2 {
            assert_eq!(header, [0, 1, 0, 0], "requeued: ready again at once");
            let expected = JobRecord {
                status: JobStatus::Queued,
                last_error: Some(LOST.into()),
                history: vec![lost.clone()],
                ..leased_record.clone()
            };
            assert_eq!(record, expected);
            assert_eq!(lab.list(q.ready()).await, std::slice::from_ref(&id));
            assert_eq!(
                lab.layout().await,
                lab.expect(&[
                    (q.ready(), "list"),
                    (q.wake(), "list"),
                    (q.job(&id), "string"),
                    (idem.clone(), "string")
                ])
            );
            // It runs again, as attempt 2, with its history.
            let again = lab.queue_of(Kind::Webhook, "w2").fetch(LEASE, 1, 10).await.unwrap();
            assert_eq!(again[0].0.attempt, 2);
            let record = lab.record(Kind::Webhook, &id).await.unwrap();
            assert_eq!(
                (record.status, record.worker.as_deref(), record.history),
                (JobStatus::Running, Some("w2"), vec![lost])
            );
        } else {
            assert_eq!(header, [0, 1, -1, 0]);
            let expected = JobRecord {
                status: JobStatus::Dead,
                last_error: Some(LOST.into()),
                finished_at: Some(recovered_at),
                reason: Some(DeadReason::Exhausted),
                dead_at: Some(recovered_at),
                idem_fingerprint: Some("fp1".into()),
                idem_expires_at: record.idem_expires_at,
                history: vec![lost],
                ..leased_record.clone()
            };
            assert_eq!(record, expected);
            assert_within(
                "fingerprint kept until",
                record.idem_expires_at.unwrap() - recovered_at,
                DAY_MS - 5_000..=DAY_MS,
            );
            assert_eq!(lab.zscores(q.dead()).await, [(id.clone(), recovered_at)]);
            assert_eq!(lab.zscores(q.dead_of("shop")).await, [(id.clone(), recovered_at)]);
            assert_eq!(
                lab.layout().await,
                lab.expect(&[
                    (q.wake(), "list"),
                    (q.dead(), "zset"),
                    (q.dead_of("shop"), "zset"),
                    (q.job(&id), "string"),
                ]),
                "the idempotency record is deleted"
            );
        }
    }
}

#[tokio::test]
async fn fetch_skips_popped_ids_whose_record_is_gone_finished_or_unreadable() {
    let lab = Lab::new();
    let q = lab.q(Kind::Webhook);
    let live = lab.job(Kind::Webhook, None, None);
    lab.enqueue(std::slice::from_ref(&live)).await;
    let done = JobRecord {
        status: JobStatus::Succeeded,
        attempts: 1,
        payload: None,
        finished_at: Some(ENDED),
        ..JobRecord::new(&lab.job(Kind::Webhook, None, None), Utc::now())
    };
    lab.put_record(Kind::Webhook, "finished", &done).await;
    let () = lab.run(redis::cmd("HSET").arg(q.job("hash")).arg("status").arg("queued")).await;
    let () = lab.run(redis::cmd("SET").arg(q.job("garbage")).arg("not msgpack")).await;
    let () = lab.run(redis::cmd("SET").arg(q.job("truncated")).arg(&done.encode()[..5])).await;
    for id in ["gone", "finished", "hash", "garbage", "truncated"] {
        let _: i64 = lab.run(redis::cmd("LPUSH").arg(q.ready()).arg(id)).await;
    }
    let before = lab.dump().await;

    let (header, leased) = lab.fetch_raw(Kind::Webhook, "w1", 10, 10).await;
    assert_eq!(header, [0, 0, -1, 4], "gone, hash, garbage and truncated are counted; a finished job is not");
    assert_eq!(leased, [live.id.to_string()]);
    let mut after = lab.dump().await;
    for name in ["finished", "hash", "garbage", "truncated"] {
        let key = lab.short(&q.job(name));
        assert_eq!(after.remove(&key), before.get(&key).cloned(), "{name} is left as it was");
    }
    assert_eq!(
        after.into_keys().collect::<Vec<_>>(),
        [q.active(), q.job(&live.id.to_string()), q.wake()].map(|k| lab.short(&k))
    );

    // Through Queue: no error; every popped id skipped is no reason to idle for long: the
    // answer is when work is due (here the live job's lease), or at once while jobs are ready.
    for id in ["gone", "finished"] {
        let _: i64 = lab.run(redis::cmd("LPUSH").arg(q.ready()).arg(id)).await;
    }
    let (jobs, next) = lab.queue(Kind::Webhook).fetch_or_next(LEASE, 10, 10).await.unwrap();
    assert!(jobs.is_empty());
    let next = i64::try_from(next.expect("the lease's deadline").as_millis()).unwrap();
    assert_within("next", next, 25_000..=30_000);
    let waiting = lab.job(Kind::Webhook, None, None);
    lab.enqueue(std::slice::from_ref(&waiting)).await;
    let _: i64 = lab.run(redis::cmd("RPUSH").arg(q.ready()).arg("gone")).await;
    let (jobs, next) = lab.queue(Kind::Webhook).fetch_or_next(LEASE, 1, 10).await.unwrap();
    assert!(jobs.is_empty());
    assert_eq!(next, Some(Duration::ZERO), "a job is still ready");
    assert_eq!(lab.list(q.ready()).await, [waiting.id.to_string()]);
}

#[tokio::test]
async fn an_idle_fetch_says_how_long_until_work_is_due() {
    // (scheduled in, retry in, lease ends in: seconds from now; the expected wait)
    type Secs = Option<i64>;
    let cases: [(Secs, Secs, Secs, Secs); 5] = [
        (None, None, None, None),
        (Some(60), None, None, Some(60)),
        (Some(60), Some(20), None, Some(20)),
        (Some(60), Some(20), Some(5), Some(5)),
        (None, None, Some(40), Some(40)),
    ];
    for case in cases {
        let lab = Lab::new();
        let q = lab.q(Kind::Email);
        let now = lab.now_ms().await;
        for (set, secs) in [(q.scheduled(), case.0), (q.retry(), case.1), (q.active(), case.2)] {
            if let Some(secs) = secs {
                let _: i64 = lab.run(redis::cmd("ZADD").arg(set).arg(now + secs * 1000).arg("j")).await;
            }
        }
        let before = lab.dump().await;
        let (jobs, next) = lab.queue(Kind::Email).fetch_or_next(LEASE, 10, 10).await.unwrap();
        assert!(jobs.is_empty());
        match case.3 {
            None => assert_eq!(next, None, "{case:?}"),
            Some(secs) => {
                let next = i64::try_from(next.unwrap().as_millis()).unwrap();
                assert_within(&format!("{case:?}"), next, secs * 1000 - 2_000..=secs * 1000);
            }
        }
        assert_eq!(lab.dump().await, before, "{case:?}: an idle fetch writes nothing");
    }
}

// ---------------------------------------------------------------------------------------------
// finish.lua

#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one table of cases, each with the exact record it must leave")]
async fn a_success_shrinks_the_record_and_keeps_it_for_the_retention() {
    struct Case {
        name: &'static str,
        key: Option<&'static str>,
        retention: Duration,
        failed_before: bool,
        /// ms; `None`: the record is deleted.
        ttl: Option<i64>,
    }
    let minute = Duration::from_mins(1);
    let cases = [
        Case { name: "first attempt", key: None, retention: minute, failed_before: false, ttl: Some(60_000) },
        Case { name: "no retention", key: None, retention: Duration::ZERO, failed_before: false, ttl: None },
        Case {
            name: "key outlives retention",
            key: Some("k"),
            retention: minute,
            failed_before: false,
            ttl: Some(DAY_MS),
        },
        Case {
            name: "key, no retention",
            key: Some("k"),
            retention: Duration::ZERO,
            failed_before: false,
            ttl: Some(DAY_MS),
        },
        Case { name: "after a failure", key: None, retention: minute, failed_before: true, ttl: Some(60_000) },
    ];
    for case in cases {
        let lab = Lab::new();
        let q = lab.q(Kind::Email);
        let queue = lab.queue(Kind::Email);
        let retention = Retention { finished: case.retention, ..RETENTION };
        let job = NewJob {
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            ..lab.job(Kind::Email, None, case.key)
        };
        let id = job.id.to_string();
        let now = Utc::now();
        let mut leased = lab.leased(&job).await;
        let mut run_at = job.created_at.timestamp_millis();
        if case.failed_before {
            let retry_at = now - chrono::Duration::seconds(1);
            queue
                .finish(&[finished(leased, Outcome::Retry { at: retry_at }, Some("HTTP 500"))], now, &retention)
                .await
                .unwrap();
            run_at = retry_at.timestamp_millis();
            leased = lab.lease(&job).await;
        }
        let done = Finished { provider_id: Some("pm-1".into()), ..finished(leased, Outcome::Succeeded, None) };
        let report = queue.finish(&[done], now, &retention).await.unwrap();
        assert_eq!(report, FinishReport { recorded: 1, stale: 0, evicted: 0 }, "{}", case.name);

        let attempts = if case.failed_before { 2 } else { 1 };
        let history =
            if case.failed_before { vec![attempt(1, Some("HTTP 500"), "w1"), attempt(2, None, "w1")] } else { vec![] };
        let compact = JobRecord {
            status: JobStatus::Succeeded,
            attempts,
            leases: 0,
            max_attempts: 2,
            producer: "shop".into(),
            created_at: job.created_at.timestamp_millis(),
            run_at,
            payload: None,
            idempotency_key: None,
            traceparent: None,
            started_at: Some(STARTED),
            worker: None,
            last_error: case.failed_before.then(|| "HTTP 500".into()),
            provider_message_id: Some("pm-1".into()),
            finished_at: Some(ENDED),
            reason: None,
            dead_at: None,
            idem_fingerprint: None,
            idem_expires_at: None,
            notes: vec![],
            priority: jobs::Priority::Normal,
            group: None,
            deferred_at: None,
            delivery: None,
            history,
        };
        let mut layout = vec![(q.wake(), "list"), (stats_key(&q, now), "hash")];
        match case.ttl {
            Some(ttl) => {
                assert_eq!(lab.record(Kind::Email, &id).await, Some(compact), "{}", case.name);
                assert_ttl(case.name, lab.pttl(q.job(&id)).await, ttl);
                layout.push((q.job(&id), "string"));
            }
            None => assert_eq!(lab.record(Kind::Email, &id).await, None, "{}", case.name),
        }
        if let Some(key) = case.key {
            assert_eq!(lab.get(q.idempotency("shop", key)).await, Some(format!("fp1 {id}")), "{}", case.name);
            layout.push((q.idempotency("shop", key), "string"));
        }
        // Indexed for the console's listing while it is kept: one entry per finish call.
        if case.retention > Duration::ZERO {
            assert_eq!(lab.stream(q.succeeded()).await, vec![vec![id.clone()]], "{}", case.name);
            layout.push((q.succeeded(), "stream"));
        }
        assert_eq!(lab.layout().await, lab.expect(&layout), "{}", case.name);
        assert_one_success(&lab, &stats_key(&q, now), case.failed_before, case.name).await;
    }
}

/// The minute's counters hold one success, and one failure when an attempt failed before it.
async fn assert_one_success(lab: &Lab, key: &str, failed_before: bool, name: &str) {
    let stats: BTreeMap<String, String> = lab.run(redis::cmd("HGETALL").arg(key)).await;
    let mut expected = BTreeMap::from([("succeeded".to_owned(), "1".to_owned())]);
    if failed_before {
        expected.insert("failed".into(), "1".into());
    }
    assert_eq!(stats, expected, "{name}");
}

#[tokio::test]
async fn a_retry_waits_in_the_retry_set_with_its_failure_recorded() {
    let lab = Lab::new();
    let q = lab.q(Kind::Webhook);
    let job = lab.job(Kind::Webhook, None, Some("order-7"));
    let id = job.id.to_string();
    let leased = lab.leased(&job).await;
    let fetched = lab.record(Kind::Webhook, &id).await.unwrap();
    let now = Utc::now();
    let at = now + chrono::Duration::minutes(10);
    let report = lab
        .queue(Kind::Webhook)
        .finish(&[finished(leased, Outcome::Retry { at }, Some("HTTP 503"))], now, &RETENTION)
        .await
        .unwrap();
    assert_eq!(report, FinishReport { recorded: 1, stale: 0, evicted: 0 });
    let at_ms = at.timestamp_millis();
    let expected = JobRecord {
        status: JobStatus::Retrying,
        run_at: at_ms,
        started_at: Some(STARTED),
        last_error: Some("HTTP 503".into()),
        history: vec![attempt(1, Some("HTTP 503"), "w1")],
        ..fetched
    };
    assert_eq!(lab.record(Kind::Webhook, &id).await.unwrap(), expected);
    assert_eq!(lab.zscores(q.retry()).await, [(id.clone(), at_ms)]);
    assert_eq!(
        lab.layout().await,
        lab.expect(&[
            (q.wake(), "list"),
            (q.retry(), "zset"),
            (q.job(&id), "string"),
            (q.idempotency("shop", "order-7"), "string"),
            (stats_key(&q, now), "hash"),
        ])
    );
    assert_eq!(lab.pttl(q.job(&id)).await, -1);
    assert_eq!(lab.dead_letters().retrying(Kind::Webhook).await.unwrap(), 1);
}

#[tokio::test]
async fn each_dead_reason_buries_the_job_and_frees_its_key() {
    for reason in DeadReason::ALL {
        let lab = Lab::new();
        let q = lab.q(Kind::Webhook);
        let job = lab.job(Kind::Webhook, None, Some("order-7"));
        let id = job.id.to_string();
        let leased = lab.leased(&job).await;
        let fetched = lab.record(Kind::Webhook, &id).await.unwrap();
        let now = Utc::now();
        let now_ms = now.timestamp_millis();
        let report = lab
            .queue(Kind::Webhook)
            .finish(&[finished(leased, Outcome::Dead(reason), Some("no"))], now, &RETENTION)
            .await
            .unwrap();
        assert_eq!(report, FinishReport { recorded: 1, stale: 0, evicted: 0 }, "{reason}");
        let record = lab.record(Kind::Webhook, &id).await.unwrap();
        let expected = JobRecord {
            status: reason.status(),
            started_at: Some(STARTED),
            last_error: Some("no".into()),
            finished_at: Some(now_ms),
            reason: Some(reason),
            dead_at: Some(now_ms),
            idem_fingerprint: Some("fp1".into()),
            idem_expires_at: record.idem_expires_at,
            history: vec![attempt(1, Some("no"), "w1")],
            ..fetched
        };
        assert_eq!(record, expected, "{reason}");
        assert_eq!(record.status, if reason == DeadReason::Expired { JobStatus::Expired } else { JobStatus::Dead });
        assert_within("key's expiry", record.idem_expires_at.unwrap() - now_ms, DAY_MS - 5_000..=DAY_MS);
        assert_eq!(lab.zscores(q.dead()).await, [(id.clone(), now_ms)], "{reason}");
        assert_eq!(lab.zscores(q.dead_of("shop")).await, [(id.clone(), now_ms)], "{reason}");
        assert_eq!(
            lab.layout().await,
            lab.expect(&[
                (q.wake(), "list"),
                (q.dead(), "zset"),
                (q.dead_of("shop"), "zset"),
                (q.job(&id), "string"),
                (stats_key(&q, now), "hash"),
            ]),
            "{reason}"
        );
        assert_eq!(lab.pttl(q.job(&id)).await, -1, "{reason}: a dead letter stays until evicted");
    }
}

#[tokio::test]
async fn a_stale_outcome_changes_nothing() {
    for case in ["another lease", "not active", "sent twice", "lease lost and leased again", "no record"] {
        let lab = Lab::new();
        let q = lab.q(Kind::Webhook);
        let queue = lab.queue(Kind::Webhook);
        let job = lab.job(Kind::Webhook, None, None);
        let id = job.id.to_string();
        let mut leased = lab.leased(&job).await;
        let now = Utc::now();
        match case {
            "another lease" => leased.token += 1,
            "not active" => {
                let _: i64 = lab.run(redis::cmd("ZREM").arg(q.active()).arg(&id)).await;
            }
            "sent twice" => {
                let done = finished(leased.clone(), Outcome::Retry { at: now }, Some("HTTP 500"));
                queue.finish(&[done], now, &RETENTION).await.unwrap();
            }
            "lease lost and leased again" => {
                lab.rescore(q.active(), &id, lab.now_ms().await - 1).await;
                let again = lab.queue_of(Kind::Webhook, "w2").fetch(LEASE, 1, 10).await.unwrap();
                assert_eq!(again[0].0.attempt, 2);
            }
            _ => {
                let _: i64 = lab.run(redis::cmd("DEL").arg(q.job(&id))).await;
            }
        }
        let before = lab.dump().await;
        let report = queue.finish(&[finished(leased, Outcome::Succeeded, None)], now, &RETENTION).await.unwrap();
        assert_eq!(report, FinishReport { recorded: 0, stale: 1, evicted: 0 }, "{case}");
        assert_eq!(lab.dump().await, before, "{case}");
    }
}

#[tokio::test]
async fn outcomes_are_counted_per_minute_for_two_hours() {
    let lab = Lab::new();
    let q = lab.q(Kind::Email);
    let queue = lab.queue(Kind::Email);
    let jobs: Vec<NewJob> = (0..4).map(|_| lab.job(Kind::Email, None, None)).collect();
    lab.enqueue(&jobs).await;
    let leased = queue.fetch(LEASE, 4, 10).await.unwrap();
    let mut leased = leased.into_iter().map(|(l, _)| l);
    let mut next = || leased.next().unwrap();
    let now = Utc::now();
    let retry_at = now + chrono::Duration::minutes(1);
    let done = [
        finished(next(), Outcome::Succeeded, None),
        finished(next(), Outcome::Retry { at: retry_at }, Some("HTTP 500")),
        finished(next(), Outcome::Dead(DeadReason::Permanent), Some("HTTP 400")),
    ];
    assert_eq!(queue.finish(&done, now, &RETENTION).await.unwrap(), FinishReport { recorded: 3, stale: 0, evicted: 0 });
    let stats: BTreeMap<String, String> = lab.run(redis::cmd("HGETALL").arg(stats_key(&q, now))).await;
    assert_eq!(stats, BTreeMap::from([("succeeded".into(), "1".into()), ("failed".into(), "2".into())]));
    assert_ttl("stats", lab.pttl(stats_key(&q, now)).await, 7_200_000);

    // The same minute adds up; another minute has its own key.
    let later = now + chrono::Duration::minutes(1);
    queue.finish(&[finished(next(), Outcome::Succeeded, None)], later, &RETENTION).await.unwrap();
    let stats: BTreeMap<String, String> = lab.run(redis::cmd("HGETALL").arg(stats_key(&q, later))).await;
    assert_eq!(stats, BTreeMap::from([("succeeded".into(), "1".into())]));
    let throughput = lab.dead_letters().throughput(Kind::Email, later, 2).await.unwrap();
    let minute = |t: DateTime<Utc>| DateTime::from_timestamp(t.timestamp().div_euclid(60) * 60, 0).unwrap();
    assert_eq!(throughput, [(minute(now), 1, 2), (minute(later), 1, 0)]);
}

#[tokio::test]
async fn dead_letters_are_evicted_per_producer_then_by_age_then_by_cap() {
    struct Case {
        name: &'static str,
        retention: Retention,
        /// Each letter's producer and its death, seconds from now, buried in this order.
        letters: &'static [(&'static str, i64)],
        /// Positions in `letters` of the letters left.
        kept: &'static [usize],
    }
    let cases = [
        Case {
            name: "per producer",
            retention: Retention { dead_cap_per_producer: 2, ..RETENTION },
            letters: &[("shop", -3), ("other", -2), ("shop", -1), ("shop", 0)],
            kept: &[1, 2, 3],
        },
        Case {
            name: "by age",
            retention: Retention { dead_age: Duration::from_hours(1), ..RETENTION },
            letters: &[("shop", -3700), ("other", -3500), ("shop", 0)],
            kept: &[1, 2],
        },
        Case {
            name: "by cap",
            retention: Retention { dead_cap: 2, ..RETENTION },
            letters: &[("shop", -2), ("other", -1), ("shop", 0)],
            kept: &[1, 2],
        },
    ];
    for case in cases {
        let lab = Lab::new();
        let q = lab.q(Kind::Webhook);
        let start = Utc::now();
        let mut ids = Vec::new();
        let mut stats = Vec::new();
        let mut reports = Vec::new();
        for (producer, at) in case.letters {
            let job = NewJob { producer: (*producer).into(), ..lab.job(Kind::Webhook, None, None) };
            let now = start + chrono::Duration::seconds(*at);
            reports.push(lab.bury(&job, now, &case.retention).await.evicted);
            ids.push((job.id.to_string(), *producer, now.timestamp_millis()));
            stats.push((stats_key(&q, now), "hash"));
        }
        let mut expected_reports = vec![0; case.letters.len()];
        *expected_reports.last_mut().unwrap() = (case.letters.len() - case.kept.len()) as u64;
        assert_eq!(reports, expected_reports, "{}: evicted by each call", case.name);

        let kept: Vec<&(String, &str, i64)> = case.kept.iter().map(|&i| &ids[i]).collect();
        let by_score = |letters: Vec<&(String, &str, i64)>| {
            letters.iter().map(|(id, _, at)| (id.clone(), *at)).collect::<Vec<_>>()
        };
        assert_eq!(lab.zscores(q.dead()).await, by_score(kept.clone()), "{}", case.name);
        let mut layout = stats;
        layout.extend([(q.wake(), "list"), (q.dead(), "zset")]);
        for producer in ["shop", "other"] {
            let theirs: Vec<_> = kept.iter().copied().filter(|(_, p, _)| *p == producer).collect();
            assert_eq!(lab.zscores(q.dead_of(producer)).await, by_score(theirs.clone()), "{}: {producer}", case.name);
            if !theirs.is_empty() {
                layout.push((q.dead_of(producer), "zset"));
            }
        }
        layout.extend(kept.iter().map(|(id, _, _)| (q.job(id), "string")));
        assert_eq!(lab.layout().await, lab.expect(&layout), "{}: evicted letters leave no key", case.name);
    }
}

// ---------------------------------------------------------------------------------------------
// extend.lua

#[tokio::test]
async fn extend_renews_only_the_callers_current_attempt() {
    for case in ["current attempt", "stale attempt", "recovered meanwhile", "unknown job"] {
        let lab = Lab::new();
        let q = lab.q(Kind::Webhook);
        let job = lab.job(Kind::Webhook, None, None);
        let leased = lab.leased(&job).await;
        let mut claim = (leased.id.clone(), leased.token);
        match case {
            "stale attempt" => claim.1 += 1,
            "recovered meanwhile" => {
                let _: i64 = lab.run(redis::cmd("ZREM").arg(q.active()).arg(&leased.id)).await;
            }
            "unknown job" => claim.0 = "01900000-0000-7000-8000-000000000000".into(),
            _ => {}
        }
        let before = lab.dump().await;
        let t0 = lab.now_ms().await;
        let renewed = lab.queue(Kind::Webhook).extend(&[claim], Duration::from_mins(1)).await.unwrap();
        let t1 = lab.now_ms().await;
        if case == "current attempt" {
            assert_eq!(renewed, 1);
            let [(id, deadline)] = &lab.zscores(q.active()).await[..] else { panic!("one lease") };
            assert_eq!(id, &leased.id);
            assert_within("new deadline", *deadline, t0 + 60_000..=t1 + 60_000);
            let mut after = lab.dump().await;
            let mut before = before;
            let active = lab.short(&q.active());
            after.remove(&active);
            before.remove(&active);
            assert_eq!(after, before, "only the deadline changes");
        } else {
            assert_eq!(renewed, 0, "{case}");
            assert_eq!(lab.dump().await, before, "{case}: nothing renewed, nothing added back");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// release.lua

#[tokio::test]
async fn release_puts_jobs_back_at_the_popping_end_with_the_attempt_uncounted() {
    let lab = Lab::new();
    let q = lab.q(Kind::Email);
    let queue = lab.queue(Kind::Email);
    let (a, b) = (lab.job(Kind::Email, None, None), lab.job(Kind::Email, None, None));
    lab.enqueue(&[a.clone(), b.clone()]).await;
    let leased = lab.lease(&a).await;
    let fetched = lab.record(Kind::Email, &leased.id).await.unwrap();

    // A stale holder (wrong attempt) puts nothing back.
    let before = lab.dump().await;
    assert_eq!(queue.release(&[(leased.id.clone(), 2)]).await.unwrap(), 0);
    assert_eq!(lab.dump().await, before);

    assert_eq!(queue.release(&[(leased.id.clone(), 1)]).await.unwrap(), 1);
    let expected = JobRecord { status: JobStatus::Queued, attempts: 0, ..fetched };
    assert_eq!(lab.record(Kind::Email, &leased.id).await.unwrap(), expected);
    assert_eq!(lab.list(q.ready()).await, [b.id.to_string(), a.id.to_string()]);
    assert_eq!(
        lab.layout().await,
        lab.expect(&[
            (q.ready(), "list"),
            (q.wake(), "list"),
            (q.job(&a.id.to_string()), "string"),
            (q.job(&b.id.to_string()), "string"),
        ])
    );
    // Released once, not twice.
    assert_eq!(queue.release(&[(leased.id.clone(), 1)]).await.unwrap(), 0);
    // It runs next, as attempt 1 again.
    let again = lab.lease(&a).await;
    assert_eq!(again.attempt, 1);
}

// ---------------------------------------------------------------------------------------------
// replay.lua (DeadLetters::replay) and forget.lua (DeadLetters::delete, delete_many)

#[tokio::test]
async fn replay_requeues_a_dead_letter_under_its_id() {
    for edited in [None, Some(r#"{"url":"https://b.example/hook","event":"e"}"#)] {
        let lab = Lab::new();
        let q = lab.q(Kind::Webhook);
        let job = lab.job(Kind::Webhook, None, Some("order-7"));
        let id = job.id.to_string();
        let buried_at = Utc::now();
        lab.bury(&job, buried_at, &RETENTION).await;
        let dead = lab.record(Kind::Webhook, &id).await.unwrap();
        let markers = lab.list(q.wake()).await.len();

        let now = Utc::now();
        let replayed = lab.dead_letters().replay(&id, edited, "ops", now).await;
        assert!(matches!(replayed, Ok(Kind::Webhook)), "{replayed:?}");
        assert_eq!(lab.list(q.wake()).await.len(), markers + 1, "an idle worker is woken for the replayed job");
        let note = match edited {
            Some(_) => format!("{} edited and replayed by ops", now.to_rfc3339()),
            None => format!("{} replayed by ops", now.to_rfc3339()),
        };
        let expected = JobRecord {
            status: JobStatus::Queued,
            attempts: 0,
            run_at: now.timestamp_millis(),
            payload: Some(edited.unwrap_or(&job.payload).to_owned()),
            last_error: None,
            finished_at: None,
            reason: None,
            dead_at: None,
            idem_fingerprint: None,
            idem_expires_at: None,
            notes: vec![note],
            deferred_at: None,
            delivery: None,
            ..dead.clone()
        };
        assert_eq!(lab.record(Kind::Webhook, &id).await.unwrap(), expected);
        assert_eq!(expected.history, [attempt(1, Some("HTTP 410"), "w1")], "the history stays");
        assert_eq!(lab.list(q.ready()).await, std::slice::from_ref(&id));
        let idem = q.idempotency("shop", "order-7");
        assert_eq!(lab.get(idem.clone()).await, Some(format!("fp1 {id}")), "the key is claimed again");
        let left = dead.idem_expires_at.unwrap() - now.timestamp_millis();
        assert_ttl("reclaimed key", lab.pttl(idem.clone()).await, left);
        assert_eq!(
            lab.layout().await,
            lab.expect(&[
                (q.ready(), "list"),
                (q.wake(), "list"),
                (q.job(&id), "string"),
                (idem, "string"),
                (stats_key(&q, buried_at), "hash"),
            ])
        );
        // It runs again, as attempt 1.
        assert_eq!(lab.lease(&job).await.attempt, 1);
    }
}

#[tokio::test]
async fn replay_claims_the_key_only_while_no_newer_job_holds_it() {
    enum Then {
        Claimed,
        NoKey,
        Refused,
    }
    let cases = [
        ("key free", Then::Claimed),
        ("key names a job gone since", Then::Claimed),
        ("key names a newer live job", Then::Refused),
        ("key's day has passed", Then::NoKey),
    ];
    for (case, then) in cases {
        let lab = Lab::new();
        let q = lab.q(Kind::Webhook);
        let idem = q.idempotency("shop", "order-7");
        let job = lab.job(Kind::Webhook, None, Some("order-7"));
        let id = job.id.to_string();
        lab.bury(&job, Utc::now(), &RETENTION).await;
        match case {
            "key names a job gone since" => {
                let () = lab.run(redis::cmd("SET").arg(&idem).arg("fp2 01900000-0000-7000-8000-000000000000")).await;
            }
            "key names a newer live job" => {
                let newer = NewJob {
                    idempotency: Some(("order-7".into(), "fp2".into())),
                    ..lab.job(Kind::Webhook, None, None)
                };
                let outcome = lab.enqueue(std::slice::from_ref(&newer)).await;
                assert!(matches!(&outcome[..], [EnqueueOutcome::Created { .. }]), "{outcome:?}");
            }
            "key's day has passed" => {
                let mut record = lab.record(Kind::Webhook, &id).await.unwrap();
                record.idem_expires_at = Some(Utc::now().timestamp_millis() - 1);
                lab.put_record(Kind::Webhook, &id, &record).await;
            }
            _ => {}
        }
        let before = lab.dump().await;
        let held_before = lab.get(idem.clone()).await;
        let replayed = lab.dead_letters().replay(&id, None, "ops", Utc::now()).await;
        match then {
            Then::Claimed => {
                assert!(replayed.is_ok(), "{case}: {replayed:?}");
                assert_eq!(lab.get(idem.clone()).await, Some(format!("fp1 {id}")), "{case}");
            }
            Then::NoKey => {
                assert!(replayed.is_ok(), "{case}: {replayed:?}");
                assert_eq!(lab.get(idem.clone()).await, None, "{case}");
                assert_eq!(lab.record(Kind::Webhook, &id).await.unwrap().status, JobStatus::Queued);
            }
            Then::Refused => {
                assert!(
                    matches!(replayed, Err(ReplayOutcome::Refused(ReplayRefused::NotReplayable(_)))),
                    "{case}: {replayed:?}"
                );
                assert_eq!(lab.dump().await, before, "{case}: nothing changes");
                assert_eq!(lab.get(idem.clone()).await, held_before);
            }
        }
    }
}

#[tokio::test]
async fn replay_refuses_what_is_not_a_dead_letter() {
    let lab = Lab::new();
    let live = lab.job(Kind::Webhook, None, None);
    lab.enqueue(std::slice::from_ref(&live)).await;
    let before = lab.dump().await;
    for id in [live.id.to_string(), "01900000-0000-7000-8000-000000000000".to_owned()] {
        let replayed = lab.dead_letters().replay(&id, None, "ops", Utc::now()).await;
        assert!(matches!(replayed, Err(ReplayOutcome::Refused(ReplayRefused::NotFound))), "{replayed:?}");
    }
    assert_eq!(lab.dump().await, before);
}

#[tokio::test]
async fn forget_deletes_dead_letters_only() {
    let lab = Lab::new();
    let q = lab.q(Kind::Webhook);
    let letters: Vec<NewJob> = ["shop", "shop", "other"]
        .into_iter()
        .map(|producer| NewJob { producer: producer.into(), ..lab.job(Kind::Webhook, None, None) })
        .collect();
    let now = Utc::now();
    for job in &letters {
        lab.bury(job, now, &RETENTION).await;
    }
    let live = lab.job(Kind::Webhook, None, None);
    lab.enqueue(std::slice::from_ref(&live)).await;
    let [d1, d2, d3] = [0, 1, 2].map(|i| letters[i].id.to_string());
    let live_id = live.id.to_string();
    let dead = lab.dead_letters();

    assert!(dead.delete(&d1).await.unwrap());
    assert!(!dead.delete(&live_id).await.unwrap(), "a live job is no dead letter");
    assert!(!dead.delete(&d1).await.unwrap(), "deleted once");
    assert_eq!(lab.zset(q.dead_of("shop")).await, std::slice::from_ref(&d2));
    let ids = [d2.clone(), live_id.clone(), "01900000-0000-7000-8000-000000000000".into(), d3.clone()];
    assert_eq!(dead.delete_many(Kind::Webhook, &ids).await.unwrap(), 2);
    assert_eq!(
        lab.layout().await,
        lab.expect(&[
            (q.ready(), "list"),
            (q.wake(), "list"),
            (q.job(&live_id), "string"),
            (stats_key(&q, now), "hash"),
        ])
    );
    assert_eq!(lab.record(Kind::Webhook, &live_id).await.unwrap(), JobRecord::new(&live, live.created_at));
}

// ---------------------------------------------------------------------------------------------
// What DeadLetters reads back of what the scripts wrote.

#[tokio::test]
async fn dead_letters_read_the_sets_and_records_the_scripts_leave() {
    let lab = Lab::new();
    let kind = Kind::Email;
    let queue = lab.queue(kind);
    let now = Utc::now();
    let [queued, delayed, retrying, running, dead] = [0, 1, 2, 3, 4].map(|i| {
        let at = (i == 1).then(|| now + chrono::Duration::hours(1));
        lab.job(kind, at, None)
    });
    lab.enqueue(std::slice::from_ref(&retrying)).await;
    let leased = lab.lease(&retrying).await;
    queue
        .finish(
            &[finished(leased, Outcome::Retry { at: now + chrono::Duration::hours(1) }, Some("HTTP 500"))],
            now,
            &RETENTION,
        )
        .await
        .unwrap();
    lab.bury(&dead, now, &RETENTION).await;
    lab.leased(&running).await;
    lab.enqueue(&[queued, delayed]).await;

    let letters = lab.dead_letters();
    let depths = letters.depths(kind).await.unwrap();
    assert_eq!((depths.queued, depths.scheduled, depths.running, depths.dead), (1, 2, 1, 1));
    assert_eq!(letters.retrying(kind).await.unwrap(), 1);
    let page = letters.list(&DeadFilter::default(), 10, None).await.unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.items.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), [dead.id.to_string()]);
    let letter = letters.get(&dead.id.to_string()).await.unwrap().unwrap();
    assert_eq!(
        (letter.status, letter.summary.reason, letter.summary.attempts),
        (JobStatus::Dead, DeadReason::Permanent, 1)
    );
    assert_eq!(letter.summary.dead_at, millis(now.timestamp_millis()));
    assert_eq!(letter.history.len(), 1);
    assert_eq!(letter.history[0].error.as_deref(), Some("HTTP 410"));
    assert!(letters.get(&retrying.id.to_string()).await.unwrap().is_none(), "a retrying job is no dead letter");
}

#[tokio::test]
async fn a_dead_schedule_tick_keeps_its_key() {
    // Another worker computing the same tick must still find it taken, or a tick whose job
    // died at once would fire again.
    let lab = Lab::new();
    let q = lab.q(Kind::Webhook);
    let key = "schedule:digest:2026-11-21T03:00:00Z";
    let job = lab.job(Kind::Webhook, None, Some(key));
    let id = job.id.to_string();
    let report = lab.bury(&job, Utc::now(), &RETENTION).await;
    assert_eq!(report.recorded, 1);
    let record = lab.record(Kind::Webhook, &id).await.unwrap();
    assert_eq!((record.status, record.idem_fingerprint, record.idem_expires_at), (JobStatus::Dead, None, None));
    assert_eq!(lab.get(q.idempotency("shop", key)).await, Some(format!("fp1 {id}")));
    let again = lab.enqueue(&[lab.job(Kind::Webhook, None, Some(key))]).await;
    assert!(matches!(&again[..], [EnqueueOutcome::Replayed { id: i, status: JobStatus::Dead, .. }] if *i == id));
}

// ---------------------------------------------------------------------------------------------
// schedule_put.lua, schedule_delete.lua, schedule_list.lua, schedule_claim.lua,
// schedule_settle.lua and the index (schedule_index.lua)

impl Lab {
    fn schedules(&self) -> ScheduleStore {
        ScheduleStore::new(self.conn.clone(), &self.namespace)
    }

    fn schedule_key(&self, rest: &str) -> String {
        format!("{}:{{schedules}}:{rest}", self.namespace)
    }

    async fn hash(&self, key: String) -> BTreeMap<String, String> {
        self.run(redis::cmd("HGETALL").arg(key)).await
    }

    /// The schedule index as its keys hold it: definitions (name → JSON), owners, counts and
    /// by-owner members.
    async fn schedule_index(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>, Vec<String>) {
        let owners = self.hash(self.schedule_key("owners")).await;
        let counts = self.hash(self.schedule_key("counts")).await;
        let by_owner = self.zset(self.schedule_key("by_owner")).await;
        (owners, counts, by_owner)
    }
}

/// A schedule every five minutes, stored as of `updated_at`.
fn schedule(name: &str, source: Source, producer: &str, updated_at: DateTime<Utc>) -> Schedule {
    let request = serde_json::json!({"name": name, "cron": "*/5 * * * *",
        "job": {"kind": "webhook", "payload": {"url": "https://a.example/hook", "event": "tick"}}});
    Schedule::parse(request, "", source, producer, updated_at).unwrap().0
}

fn first_tick_ms(schedule: &Schedule) -> i64 {
    schedule.timetable().unwrap().next_after(schedule.updated_at).unwrap().timestamp_millis()
}

fn strings<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

#[tokio::test]
async fn schedule_put_checks_the_owner_and_the_quotas_and_keeps_the_index() {
    let lab = Lab::new();
    let store = lab.schedules();
    let limits = ScheduleLimits::default();
    let now = Utc::now();
    let a = schedule("a", Source::Api, "shop", now);
    assert_eq!(store.put_checked(&a, &limits).await.unwrap(), PutOutcome::Created);
    let defs = lab.schedule_key("defs");
    assert_eq!(
        lab.layout().await,
        lab.expect(&[
            (defs.clone(), "hash"),
            (lab.schedule_key("due"), "zset"),
            (lab.schedule_key("owners"), "hash"),
            (lab.schedule_key("counts"), "hash"),
            (lab.schedule_key("by_owner"), "zset"),
        ])
    );
    assert_eq!(lab.hash(defs.clone()).await, strings([("a", &serde_json::to_string(&a).unwrap())]));
    assert_eq!(lab.zscores(lab.schedule_key("due")).await, [("a".to_owned(), first_tick_ms(&a))]);
    assert_eq!(
        lab.schedule_index().await,
        (strings([("a", "api:shop")]), strings([("api:shop", "1")]), vec!["api:shop\0a".to_owned()])
    );

    // Replacing one's own: its last fired tick is cleared, its ticks count from the new time.
    assert!(store.settle(&a, Some(now), now + chrono::Duration::minutes(5)).await.unwrap());
    assert_eq!(lab.layout().await.len(), 6, "settle wrote the last fired tick");
    let a2 = schedule("a", Source::Api, "shop", now + chrono::Duration::minutes(7));
    assert_eq!(store.put_checked(&a2, &limits).await.unwrap(), PutOutcome::Replaced);
    assert_eq!(lab.hash(defs.clone()).await, strings([("a", &serde_json::to_string(&a2).unwrap())]));
    assert!(lab.hash(lab.schedule_key("last")).await.is_empty());
    assert_eq!(lab.zscores(lab.schedule_key("due")).await, [("a".to_owned(), first_tick_ms(&a2))]);

    // The file's schedule, and refusals that write nothing.
    let f = schedule("f", Source::File, "file", now);
    assert!(!store.put(&f).await.unwrap(), "created, not replaced");
    let before = lab.dump().await;
    let refusals = [
        (schedule("a", Source::Api, "other", now), limits, PutOutcome::Taken),
        (schedule("f", Source::Api, "shop", now), limits, PutOutcome::FromFile),
        (
            schedule("b", Source::Api, "shop", now),
            ScheduleLimits { per_producer: 1, ..limits },
            PutOutcome::OverLimit(ScheduleLimit::PerProducer),
        ),
        (
            schedule("c", Source::Api, "other", now),
            ScheduleLimits { total: 2, ..limits },
            PutOutcome::OverLimit(ScheduleLimit::Total),
        ),
    ];
    for (schedule, limits, outcome) in refusals {
        assert_eq!(store.put_checked(&schedule, &limits).await.unwrap(), outcome, "{}", schedule.name);
        assert_eq!(lab.dump().await, before, "{}", schedule.name);
    }
    // Replacing one's own is never over a quota.
    let a3 = schedule("a", Source::Api, "shop", now + chrono::Duration::minutes(8));
    let full = ScheduleLimits { per_producer: 1, total: 2, ..limits };
    assert_eq!(store.put_checked(&a3, &full).await.unwrap(), PutOutcome::Replaced);

    // The file takes any name: the index moves it to its new owner.
    let fa = schedule("a", Source::File, "file", now);
    assert!(store.put(&fa).await.unwrap());
    assert_eq!(
        lab.schedule_index().await,
        (
            strings([("a", "file"), ("f", "file")]),
            strings([("api:shop", "0"), ("file", "2")]),
            vec!["file\0a".to_owned(), "file\0f".to_owned()]
        )
    );
}

#[tokio::test]
async fn schedule_delete_is_owner_checked_and_cleans_the_index() {
    let lab = Lab::new();
    let store = lab.schedules();
    let now = Utc::now();
    let a = schedule("a", Source::Api, "shop", now);
    store.put_checked(&a, &ScheduleLimits::default()).await.unwrap();
    store.settle(&a, Some(now), now + chrono::Duration::minutes(5)).await.unwrap();
    store.put(&schedule("f", Source::File, "file", now)).await.unwrap();
    let before = lab.dump().await;
    for (name, producer, outcome) in [
        ("a", "other", DeleteOutcome::Taken),
        ("f", "shop", DeleteOutcome::FromFile),
        ("z", "shop", DeleteOutcome::Missing),
    ] {
        assert_eq!(store.delete_checked(name, producer).await.unwrap(), outcome, "{name} by {producer}");
        assert_eq!(lab.dump().await, before, "{name} by {producer}");
    }
    assert_eq!(store.delete_checked("a", "shop").await.unwrap(), DeleteOutcome::Deleted);
    assert_eq!(lab.hash(lab.schedule_key("defs")).await.into_keys().collect::<Vec<_>>(), ["f"]);
    assert_eq!(lab.zset(lab.schedule_key("due")).await, ["f"]);
    assert!(lab.hash(lab.schedule_key("last")).await.is_empty(), "its last tick goes with it");
    assert_eq!(
        lab.schedule_index().await,
        (strings([("f", "file")]), strings([("api:shop", "0"), ("file", "1")]), vec!["file\0f".to_owned()])
    );
    assert!(store.delete_from_file("f").await.unwrap());
    assert_eq!(
        lab.layout().await,
        lab.expect(&[(lab.schedule_key("counts"), "hash")]),
        "only the zero counts are left"
    );
}

#[tokio::test]
async fn schedule_list_for_reads_one_producer_and_the_file() {
    let lab = Lab::new();
    let store = lab.schedules();
    let now = Utc::now();
    for (name, source, producer) in [
        ("a", Source::Api, "shop"),
        ("b", Source::Api, "other"),
        ("c", Source::Api, "shop"),
        ("f", Source::File, "file"),
    ] {
        store.put_checked(&schedule(name, source, producer, now), &ScheduleLimits::default()).await.unwrap();
    }
    let tick = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap();
    store.settle(&schedule("c", Source::Api, "shop", now), Some(tick), now).await.unwrap();
    let before = lab.dump().await;
    let listed = store.list_for("shop").await.unwrap();
    let got: Vec<(&str, Option<DateTime<Utc>>)> = listed.iter().map(|l| (l.schedule.name.as_str(), l.last)).collect();
    assert_eq!(got, [("a", None), ("c", Some(tick)), ("f", None)]);
    assert_eq!(lab.dump().await, before, "a listing writes nothing");
}

#[tokio::test]
async fn schedule_claim_leases_the_due_schedules_on_redis_clock() {
    let lab = Lab::new();
    let store = lab.schedules();
    let now = Utc::now();
    let due_key = lab.schedule_key("due");
    let schedules: Vec<Schedule> =
        ["a", "b", "c", "d"].into_iter().map(|name| schedule(name, Source::Api, "shop", now)).collect();
    for s in &schedules {
        store.put_checked(s, &ScheduleLimits::default()).await.unwrap();
    }
    store.settle(&schedules[1], Some(now), now).await.unwrap();
    let t = lab.now_ms().await;
    // a and b are due (a first), c is due too but past the claim's limit, d is not due.
    for (name, score) in [("a", t - 3000), ("b", t - 2000), ("c", t - 1000), ("d", t + 600_000)] {
        lab.rescore(due_key.clone(), name, score).await;
    }

    let claim = store.claim(chrono::Duration::seconds(30), 2).await.unwrap();
    let t1 = lab.now_ms().await;
    let claim_ms = claim.now.timestamp_millis();
    assert_within("claim's now (Redis's clock)", claim_ms, t..=t1);
    let got: Vec<(&str, &str, Option<DateTime<Utc>>)> =
        claim.due.iter().map(|c| (c.name.as_str(), c.definition.as_str(), c.last)).collect();
    let json = |i: usize| serde_json::to_string(&schedules[i]).unwrap();
    let (json_a, json_b) = (json(0), json(1));
    let settled = DateTime::from_timestamp_millis(now.timestamp_millis());
    assert_eq!(got, [("a", json_a.as_str(), None), ("b", json_b.as_str(), settled)]);
    let lease_end = claim_ms + 30_000;
    assert_eq!(
        lab.zscores(due_key.clone()).await,
        [
            ("c".to_owned(), t - 1000),
            ("a".to_owned(), lease_end),
            ("b".to_owned(), lease_end),
            ("d".to_owned(), t + 600_000)
        ]
    );
    assert_eq!(claim.next, DateTime::from_timestamp_millis(t - 1000), "c is still due");

    // Leased schedules are not taken again until their lease ends.
    let claim = store.claim(chrono::Duration::seconds(30), 10).await.unwrap();
    assert_eq!(claim.due.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["c"]);
    assert_eq!(claim.next, DateTime::from_timestamp_millis(lease_end));
}

#[tokio::test]
async fn schedule_settle_moves_forward_only_and_only_for_the_same_definition() {
    let lab = Lab::new();
    let store = lab.schedules();
    let now = Utc::now();
    let a = schedule("a", Source::Api, "shop", now);
    store.put_checked(&a, &ScheduleLimits::default()).await.unwrap();
    let ms = |minutes: i64| (now + chrono::Duration::minutes(minutes)).timestamp_millis();
    let at = |minutes: i64| DateTime::from_timestamp_millis(ms(minutes)).unwrap();
    let last = || async { lab.hash(lab.schedule_key("last")).await };
    let due = || async { lab.zscores(lab.schedule_key("due")).await };

    // (tick, next look) -> (last fired tick kept, next look)
    let steps = [(Some(10), 15, 10, 15), (Some(5), 20, 10, 20), (None, 25, 10, 25), (Some(30), 35, 30, 35)];
    for (tick, next, kept, look) in steps {
        assert!(store.settle(&a, tick.map(at), at(next)).await.unwrap(), "{tick:?}");
        assert_eq!(last().await, strings([("a", &ms(kept).to_string())]), "{tick:?}");
        assert_eq!(due().await, [("a".to_owned(), ms(look))], "{tick:?}");
    }

    // A replaced or deleted definition is not the one looked at: nothing moves.
    let a2 = schedule("a", Source::Api, "shop", now + chrono::Duration::seconds(1));
    store.put_checked(&a2, &ScheduleLimits::default()).await.unwrap();
    let before = lab.dump().await;
    assert!(!store.settle(&a, Some(at(40)), at(45)).await.unwrap());
    assert_eq!(lab.dump().await, before);
    store.delete_checked("a", "shop").await.unwrap();
    let before = lab.dump().await;
    assert!(!store.settle(&a2, Some(at(40)), at(45)).await.unwrap());
    assert_eq!(lab.dump().await, before);
}

#[tokio::test]
async fn the_schedule_index_is_rebuilt_from_definitions_written_without_it() {
    // Definitions stored by a version before the index, and a next-fire entry for a name that
    // no longer exists: the first script to run indexes them, due at once.
    let lab = Lab::new();
    let store = lab.schedules();
    let now = Utc::now();
    let (a, f) = (schedule("a", Source::Api, "shop", now), schedule("f", Source::File, "file", now));
    for s in [&a, &f] {
        let _: i64 = lab
            .run(redis::cmd("HSET").arg(lab.schedule_key("defs")).arg(&s.name).arg(serde_json::to_string(s).unwrap()))
            .await;
    }
    let _: i64 = lab.run(redis::cmd("ZADD").arg(lab.schedule_key("due")).arg(5).arg("gone")).await;

    let claim = store.claim(chrono::Duration::seconds(30), 10).await.unwrap();
    let mut names: Vec<&str> = claim.due.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "f"], "indexed due at once");
    assert_eq!(
        lab.schedule_index().await,
        (
            strings([("a", "api:shop"), ("f", "file")]),
            strings([("api:shop", "1"), ("file", "1")]),
            vec!["api:shop\0a".to_owned(), "file\0f".to_owned()]
        )
    );
    let lease_end = claim.now.timestamp_millis() + 30_000;
    assert_eq!(
        lab.zscores(lab.schedule_key("due")).await,
        [("a".to_owned(), lease_end), ("f".to_owned(), lease_end)],
        "each leased; the entry without a definition dropped"
    );
}

#[tokio::test]
async fn a_record_only_lua_can_read_does_not_strand_the_rest_of_its_batch() {
    // A record Lua reads (its `st` is a string) but `JobRecord` cannot (here: no `ma`, as a
    // newer or foreign writer might leave it) is leased by fetch.lua with the good jobs of the
    // same call. The good jobs must still reach the worker: failing the whole fetch would leave
    // them running in no worker's hands until their leases expire, each losing an attempt.
    #[derive(serde::Serialize)]
    struct Odd<'a> {
        st: &'a str,
        pr: &'a str,
        ca: i64,
        ra: i64,
        pl: &'a str,
    }
    let lab = Lab::new();
    let q = lab.q(Kind::Webhook);
    let good = lab.job(Kind::Webhook, None, None);
    lab.enqueue(std::slice::from_ref(&good)).await;
    let odd = rmp_serde::to_vec_named(&Odd { st: "queued", pr: "shop", ca: 1, ra: 1, pl: "{}" }).unwrap();
    let () = lab.run(redis::cmd("SET").arg(q.job("odd")).arg(odd)).await;
    let _: i64 = lab.run(redis::cmd("LPUSH").arg(q.ready()).arg("odd")).await;

    let leased = lab.queue(Kind::Webhook).fetch(LEASE, 10, 10).await.expect("the good job is handed over");
    assert_eq!(leased.iter().map(|(l, _)| l.id.clone()).collect::<Vec<_>>(), [good.id.to_string()]);
}

/// A holder whose lease was lost presents an old token: after the job was recovered, buried,
/// replayed and leased again as attempt 1, the old holder's late outcome, renewal and release
/// must change nothing, and the new holder's outcome must count (attempt numbers repeat after a
/// replay; lease tokens never do).
#[tokio::test]
async fn a_lost_lease_stays_stale_after_a_replay_leases_the_job_again() {
    let lab = Lab::new();
    let q = lab.q(Kind::Webhook);
    let job = NewJob { max_attempts: 1, ..lab.job(Kind::Webhook, None, None) };
    let id = job.id.to_string();
    let old = lab.leased(&job).await;
    // The lease runs out; the next fetch recovers it and buries the job (its only attempt).
    lab.rescore(q.active(), &id, 0).await;
    assert_eq!(lab.fetch_raw(Kind::Webhook, "w2", 10, 10).await.1, Vec::<String>::new());
    assert_eq!(lab.record(Kind::Webhook, &id).await.unwrap().status, JobStatus::Dead);
    lab.dead_letters().replay(&id, None, "ops", Utc::now()).await.unwrap();
    let new = lab.lease(&job).await;
    assert_eq!((old.attempt, new.attempt), (1, 1), "the attempt number repeats after a replay");
    assert_ne!(old.token, new.token, "the lease token does not");

    let queue = lab.queue(Kind::Webhook);
    let before = lab.dump().await;
    assert_eq!(queue.extend(&[(id.clone(), old.token)], LEASE).await.unwrap(), 0);
    assert_eq!(queue.release(&[(id.clone(), old.token)]).await.unwrap(), 0);
    let late = finished(old, Outcome::Dead(DeadReason::Permanent), Some("HTTP 410"));
    let report = queue.finish(&[late], Utc::now(), &RETENTION).await.unwrap();
    assert_eq!(report, FinishReport { recorded: 0, stale: 1, evicted: 0 });
    assert_eq!(lab.dump().await, before, "the old holder changed nothing");

    let report = queue.finish(&[finished(new, Outcome::Succeeded, None)], Utc::now(), &RETENTION).await.unwrap();
    assert_eq!(report, FinishReport { recorded: 1, stale: 0, evicted: 0 });
    assert_eq!(lab.record(Kind::Webhook, &id).await.unwrap().status, JobStatus::Succeeded);
}
