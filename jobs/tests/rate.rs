//! Rate limits per kind against a real Redis (`REDIS_URL`), each test under a namespace of its
//! own: how many jobs `fetch.lua` leases from a token bucket, what it answers when there is no
//! token, what it leaves untouched, and what `throttle.lua` and `rate_put.lua` write.

#![expect(clippy::unwrap_used, reason = "a fixture that cannot be set up fails the test, loudly")]

mod lab;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use jobs::keys::QueueKeys;
use jobs::queue::{FetchReply, Queue};
use jobs::rate::{RateLimit, RateLimits, Source};
use jobs::{Kind, NewJob};

use lab::Lab;

const LEASE: Duration = Duration::from_secs(30);

impl Lab {
    fn q(&self, kind: Kind) -> QueueKeys {
        self.keys.queue(kind)
    }

    fn rates(&self) -> RateLimits {
        RateLimits::new(self.conn.clone(), self.keys.clone())
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        cmd.query_async(&mut self.conn.clone()).await.unwrap()
    }

    /// `n` ready jobs of `kind`, enqueued; their ids, oldest first.
    async fn ready(&self, kind: Kind, n: usize) -> Vec<String> {
        let jobs: Vec<NewJob> = (0..n).map(|_| lab::job(kind)).collect();
        self.store().enqueue(&jobs).await.unwrap();
        jobs.iter().map(|j| j.id.to_string()).collect()
    }

    async fn fetch(&self, kind: Kind, batch: usize) -> FetchReply {
        Queue::new(self.conn.clone(), &self.keys, kind, "w1").fetch_reply(LEASE, batch, 100).await.unwrap()
    }

    async fn limit(&self, kind: Kind, per_second: u32, burst: u32) {
        self.rates().put(kind, Some(RateLimit::new(per_second, Some(burst)).unwrap()), "admin").await.unwrap();
    }

    /// Every key of `kind`'s queue with its `DUMP`, but the bucket: the exact bytes a call left.
    async fn dump(&self, kind: Kind) -> BTreeMap<String, Vec<u8>> {
        let pattern = format!("{}:{{{}}}:*", self.namespace, kind.as_str());
        let names: Vec<String> = self.run(redis::cmd("KEYS").arg(pattern)).await;
        let mut dump = BTreeMap::new();
        for name in names.into_iter().filter(|n| *n != self.q(kind).bucket()) {
            let bytes: Vec<u8> = self.run(redis::cmd("DUMP").arg(&name)).await;
            dump.insert(name, bytes);
        }
        dump
    }

    async fn bucket(&self, kind: Kind) -> BTreeMap<String, String> {
        self.run(redis::cmd("HGETALL").arg(self.q(kind).bucket())).await
    }
}

fn ids(reply: &FetchReply) -> Vec<String> {
    reply.jobs.iter().map(|(job, _)| job.id.clone()).collect()
}

#[tokio::test]
async fn a_bucket_of_5_a_second_leases_5_then_none_until_the_next_token() {
    let lab = Lab::new();
    lab.limit(Kind::Email, 5, 5).await;
    let ready = lab.ready(Kind::Email, 20).await;
    let first = lab.fetch(Kind::Email, 100).await;
    assert_eq!(ids(&first), ready[..5], "as many as tokens, oldest first");
    assert!(!first.throttled);

    let before = lab.dump(Kind::Email).await;
    let second = lab.fetch(Kind::Email, 100).await;
    assert!(second.jobs.is_empty() && second.throttled && !second.paused);
    // One token every 200 ms: the worker sleeps until it is due, at most one interval.
    let next = second.next.unwrap();
    assert!(next > Duration::ZERO && next <= Duration::from_millis(200), "{next:?}");
    // The jobs without a token were not popped: every record, list and set as it was.
    assert_eq!(lab.dump(Kind::Email).await, before);
    let left: i64 = lab.run(redis::cmd("LLEN").arg(lab.q(Kind::Email).ready())).await;
    assert_eq!(left, 15);
}

#[tokio::test]
async fn tokens_of_ids_popped_but_not_leased_stay_in_the_bucket() {
    let lab = Lab::new();
    // One token a second: the test runs well within it, so only the burst counts.
    lab.limit(Kind::Webhook, 1, 5).await;
    let first = lab.ready(Kind::Webhook, 5).await;
    // Two records gone (deleted meanwhile): popped, not leased, their tokens handed back.
    for id in &first[..2] {
        let _: i64 = lab.run(redis::cmd("DEL").arg(lab.q(Kind::Webhook).job(id))).await;
    }
    assert_eq!(ids(&lab.fetch(Kind::Webhook, 100).await), first[2..]);
    let tokens: f64 = lab.bucket(Kind::Webhook).await["tk"].parse().unwrap();
    assert!((2.0..3.0).contains(&tokens), "{tokens}");
    let more = lab.ready(Kind::Webhook, 5).await;
    assert_eq!(ids(&lab.fetch(Kind::Webhook, 100).await), more[..2]);
    assert!(lab.fetch(Kind::Webhook, 100).await.throttled);
}

#[tokio::test]
async fn without_a_limit_a_fetch_leases_the_batch_and_writes_no_bucket() {
    let lab = Lab::new();
    let ready = lab.ready(Kind::OtpSms, 20).await;
    let reply = lab.fetch(Kind::OtpSms, 100).await;
    assert_eq!(ids(&reply), ready);
    assert!(!reply.throttled);
    let exists: i64 = lab.run(redis::cmd("EXISTS").arg(lab.q(Kind::OtpSms).bucket())).await;
    assert_eq!(exists, 0);
    // A limit removed by the console: unlimited again.
    lab.limit(Kind::OtpSms, 1, 1).await;
    lab.rates().put(Kind::OtpSms, None, "admin").await.unwrap();
    let ready = lab.ready(Kind::OtpSms, 7).await;
    assert_eq!(ids(&lab.fetch(Kind::OtpSms, 100).await), ready);
}

#[tokio::test]
async fn a_throttle_with_retry_after_leases_nothing_until_then_and_halves_the_rate() {
    let lab = Lab::new();
    lab.limit(Kind::Email, 100, 100).await;
    let ready = lab.ready(Kind::Email, 10).await;
    let throttle = lab.rates().throttle(Kind::Email, Some(Duration::from_secs(30))).await.unwrap();
    assert_eq!(throttle.per_second, Some(50.0));
    assert!(throttle.reduced);
    // Another refusal of the same round: the hold stays, the rate is not halved again.
    let again = lab.rates().throttle(Kind::Email, None).await.unwrap();
    assert_eq!((again.per_second, again.reduced, again.until), (Some(50.0), false, throttle.until));

    let before = lab.dump(Kind::Email).await;
    let reply = lab.fetch(Kind::Email, 100).await;
    assert!(reply.jobs.is_empty() && reply.throttled);
    let next = reply.next.unwrap();
    assert!(next > Duration::from_secs(29) && next <= Duration::from_secs(30), "{next:?}");
    assert_eq!(lab.dump(Kind::Email).await, before, "no record read, no attempt burnt");

    let view = lab.rates().view(Kind::Email, Utc::now()).await.unwrap();
    assert_eq!((view.per_second, view.burst, view.source), (Some(100), Some(100), Some(Source::Console)));
    assert_eq!(view.throttled_until, throttle.until);
    assert_eq!(view.effective_per_second, Some(50.0), "the climb back starts when the hold ends");

    // The hold over (moved into the past): the bucket, emptied by the throttle, refills at the
    // halved rate, and the jobs lease again, oldest first.
    let past = Utc::now().timestamp_millis() - 1000;
    let () = lab.run(redis::cmd("HSET").arg(lab.q(Kind::Email).bucket()).arg("un").arg(past).arg("ts").arg(past)).await;
    let leased = ids(&lab.fetch(Kind::Email, 100).await);
    assert!(!leased.is_empty() && leased.len() <= 10);
    assert_eq!(leased, ready[..leased.len()]);
}

#[tokio::test]
async fn a_throttle_without_a_limit_holds_the_kind_for_the_retry_after_only() {
    let lab = Lab::new();
    lab.ready(Kind::OtpSms, 3).await;
    let throttle = lab.rates().throttle(Kind::OtpSms, Some(Duration::from_secs(5))).await.unwrap();
    assert_eq!((throttle.per_second, throttle.reduced), (None, false));
    let reply = lab.fetch(Kind::OtpSms, 100).await;
    assert!(reply.jobs.is_empty() && reply.throttled);
    assert!(reply.next.unwrap() <= Duration::from_secs(5));
    let bucket = lab.bucket(Kind::OtpSms).await;
    assert_eq!(bucket.keys().collect::<Vec<_>>(), ["un"], "{bucket:?}");
    let ttl: i64 = lab.run(redis::cmd("PTTL").arg(lab.q(Kind::OtpSms).bucket())).await;
    assert!(ttl > 0 && ttl <= 5000, "the bucket expires with the hold: {ttl}");
    // A limit set meanwhile stays.
    lab.limit(Kind::OtpSms, 100, 100).await;
    let ttl: i64 = lab.run(redis::cmd("PTTL").arg(lab.q(Kind::OtpSms).bucket())).await;
    assert_eq!(ttl, -1);
    lab.rates().put(Kind::OtpSms, None, "admin").await.unwrap();
    let () = lab.run(redis::cmd("HSET").arg(lab.q(Kind::OtpSms).bucket()).arg("un").arg(1)).await;
    assert_eq!(lab.fetch(Kind::OtpSms, 100).await.jobs.len(), 3);
}

#[tokio::test]
async fn an_operators_limit_ends_a_providers_hold() {
    let lab = Lab::new();
    lab.ready(Kind::OtpSms, 3).await;
    lab.limit(Kind::OtpSms, 10, 10).await;
    // A gateway asks for a day's pause.
    lab.rates().throttle(Kind::OtpSms, Some(Duration::from_hours(24))).await.unwrap();
    assert!(lab.fetch(Kind::OtpSms, 100).await.throttled);
    // The operator sets the limit again: the hold and the halved rate end at once.
    lab.limit(Kind::OtpSms, 10, 10).await;
    let bucket = lab.bucket(Kind::OtpSms).await;
    assert!(["un", "e0", "t0", "dt"].iter().all(|f| !bucket.contains_key(*f)), "{bucket:?}");
    let view = lab.rates().view(Kind::OtpSms, Utc::now()).await.unwrap();
    assert_eq!((view.throttled_until, view.effective_per_second), (None, Some(10.0)));
    // The bucket the throttle emptied refills at the full rate: 3 tokens within 0.3 s.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(lab.fetch(Kind::OtpSms, 100).await.jobs.len(), 3);
    // Removing the limit from the console ends a hold too, and the mark does not expire with it.
    lab.rates().throttle(Kind::OtpSms, Some(Duration::from_hours(24))).await.unwrap();
    lab.rates().put(Kind::OtpSms, None, "admin").await.unwrap();
    let ttl: i64 = lab.run(redis::cmd("PTTL").arg(lab.q(Kind::OtpSms).bucket())).await;
    assert_eq!(ttl, -1, "the console's mark stays");
    assert!(!lab.bucket(Kind::OtpSms).await.contains_key("un"));
}

#[tokio::test]
async fn the_setting_is_the_default_until_the_console_changes_it() {
    let lab = Lab::new();
    let rates = lab.rates();
    let setting = RateLimit::new(14, Some(28)).unwrap();
    assert!(rates.put_default(Kind::Email, Some(setting), "worker-1").await.unwrap());
    let view = rates.view(Kind::Email, Utc::now()).await.unwrap();
    assert_eq!((view.per_second, view.burst, view.source), (Some(14), Some(28), Some(Source::Setting)));
    assert_eq!(view.set_by.as_deref(), Some("worker-1"));
    // A worker without the setting removes a setting's limit.
    assert!(rates.put_default(Kind::Email, None, "worker-2").await.unwrap());
    assert_eq!(lab.bucket(Kind::Email).await, BTreeMap::new());

    // The console's value stands, even its removal.
    rates.put(Kind::Email, Some(RateLimit::new(3, None).unwrap()), "alice").await.unwrap();
    assert!(!rates.put_default(Kind::Email, Some(setting), "worker-3").await.unwrap());
    let view = rates.view(Kind::Email, Utc::now()).await.unwrap();
    assert_eq!((view.per_second, view.burst, view.set_by.as_deref()), (Some(3), Some(3), Some("alice")));
    rates.put(Kind::Email, None, "alice").await.unwrap();
    assert!(!rates.put_default(Kind::Email, Some(setting), "worker-3").await.unwrap());
    let view = rates.view(Kind::Email, Utc::now()).await.unwrap();
    assert_eq!((view.per_second, view.source), (None, Some(Source::Console)));
}
