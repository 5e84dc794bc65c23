//! Adversarial review of issue 15 (flow control: lanes and rate limits), against a real Redis
//! (`REDIS_URL`, default 127.0.0.1:6379), each test under a namespace of its own: the bugs
//! found, each shown failing before its fix.

#![expect(clippy::unwrap_used, reason = "a fixture that cannot be set up fails the test, loudly")]

mod lab;

use std::time::Duration;

use chrono::Utc;
use jobs::destinations::{Destination, Destinations, Policy, Slot};
use jobs::queue::{FetchReply, Queue};
use jobs::rate::{RateLimit, RateLimits};
use jobs::{Kind, NewJob};

use lab::Lab;

const LEASE: Duration = Duration::from_secs(30);

impl Lab {
    /// Enqueues `n` webhooks to `url`; their ids, oldest first.
    async fn webhooks(&self, url: &str, n: usize) -> Vec<String> {
        let jobs: Vec<NewJob> = (0..n)
            .map(|_| NewJob { payload: format!(r#"{{"url":"{url}","event":"e"}}"#), ..lab::job(Kind::Webhook) })
            .collect();
        self.store().enqueue(&jobs).await.unwrap();
        jobs.iter().map(|j| j.id.to_string()).collect()
    }

    async fn fetch(&self, batch: usize) -> FetchReply {
        Queue::new(self.conn.clone(), &self.keys, Kind::Webhook, "w1").fetch_reply(LEASE, batch, 100).await.unwrap()
    }

    async fn tokens(&self) -> f64 {
        let tk: Option<String> = redis::cmd("HGET")
            .arg(self.keys.queue(Kind::Webhook).bucket())
            .arg("tk")
            .query_async(&mut self.conn.clone())
            .await
            .unwrap();
        tk.unwrap().parse().unwrap()
    }

    /// A slot of `url`'s destination for each job of `leased`, in order (one at a time).
    async fn acquire(&self, leased: &FetchReply, url: &str) -> Vec<Slot> {
        let destinations = Destinations::new(self.conn.clone(), &self.keys);
        let to = Destination::of_url(url).unwrap();
        let mut slots = Vec::new();
        for (job, _) in &leased.jobs {
            slots.push(destinations.acquire(&to, &job.id, job.token, &policy()).await.unwrap());
        }
        slots
    }
}

fn policy() -> Policy {
    Policy {
        max_in_flight: 1,
        hold: Duration::from_secs(15),
        max_deferral: Duration::from_hours(1),
        threshold: 5,
        base_gap: Duration::from_secs(5),
        max_gap: Duration::from_mins(1),
        idle: Duration::from_mins(1),
    }
}

/// A webhook deferred by its destination (no slot) sends nothing: the token its lease took must
/// go back to the kind's bucket, or a slow destination's parked line (leased again at every
/// fallback run-at) eats the tokens every other destination needs. Before the fix the two
/// deferred jobs kept their tokens and the fetch below found none.
#[tokio::test]
async fn a_webhook_deferred_by_its_destination_gives_its_token_back() {
    let lab = Lab::new();
    // One token a second, a burst of 3: the test runs well within a second, so only the burst counts.
    let limit = RateLimit::new(1, Some(3)).unwrap();
    RateLimits::new(lab.conn.clone(), lab.keys.clone()).put(Kind::Webhook, Some(limit), "admin").await.unwrap();
    let slow = lab.webhooks("https://slow.example/hook", 3).await;
    let leased = lab.fetch(10).await;
    assert_eq!(leased.jobs.len(), 3, "the burst");
    assert!(lab.tokens().await < 1.0);

    let slots = lab.acquire(&leased, "https://slow.example/hook").await;
    assert!(matches!(slots[0], Slot::Acquired { .. }), "{slots:?}");
    assert!(slots[1..].iter().all(|s| matches!(s, Slot::Deferred { .. })), "{slots:?}");
    let tokens = lab.tokens().await;
    assert!((2.0..3.0).contains(&tokens), "the two deferred jobs' tokens are back: {tokens}");

    // Another destination's jobs get them.
    let fast = lab.webhooks("https://fast.example/hook", 2).await;
    let next = lab.fetch(10).await;
    let ids: Vec<String> = next.jobs.iter().map(|(job, _)| job.id.clone()).collect();
    assert_eq!(ids, fast, "{next:?}");
    assert_eq!(slow.len(), 3);
}

/// The token a deferral gives back never lifts the bucket above its burst.
#[tokio::test]
async fn a_token_given_back_stays_within_the_burst() {
    let lab = Lab::new();
    let rates = RateLimits::new(lab.conn.clone(), lab.keys.clone());
    rates.put(Kind::Webhook, Some(RateLimit::new(1, Some(3)).unwrap()), "admin").await.unwrap();
    lab.webhooks("https://slow.example/hook", 2).await;
    let leased = lab.fetch(10).await;
    assert_eq!(leased.jobs.len(), 2);
    // One token left; the burst lowered to 1 meanwhile: a token given back finds the bucket full.
    rates.put(Kind::Webhook, Some(RateLimit::new(1, Some(1)).unwrap()), "admin").await.unwrap();
    assert!((0.99..=1.0).contains(&lab.tokens().await));
    let slots = lab.acquire(&leased, "https://slow.example/hook").await;
    assert!(matches!(slots[1], Slot::Deferred { .. }), "{slots:?}");
    let tokens = lab.tokens().await;
    assert!((0.99..=1.0).contains(&tokens), "{tokens}");
}

/// A worker without `RATE_LIMIT_<KIND>` removes a setting's limit; the docs say the bucket is
/// then absent (a fetch costs one `EXISTS` of a key that does not exist). Before the fix, the
/// tokens the limit's fetches had counted (`tk`, `ts`) kept the hash for good, and every fetch
/// read it (`HMGET`).
#[tokio::test]
async fn a_settings_removal_leaves_no_bucket_behind() {
    let lab = Lab::new();
    let rates = RateLimits::new(lab.conn.clone(), lab.keys.clone());
    let bucket = lab.keys.queue(Kind::Webhook).bucket();
    rates.put_default(Kind::Webhook, Some(RateLimit::new(5, Some(5)).unwrap()), "worker-1").await.unwrap();
    lab.webhooks("https://a.example/hook", 2).await;
    assert_eq!(lab.fetch(10).await.jobs.len(), 2);
    assert!(lab.tokens().await < 4.0, "the fetch counted its tokens");
    assert!(rates.put_default(Kind::Webhook, None, "worker-2").await.unwrap());
    let exists: i64 = redis::cmd("EXISTS").arg(&bucket).query_async(&mut lab.conn.clone()).await.unwrap();
    assert_eq!(exists, 0);

    // A throttle's hold in force outlives the removal, and the bucket expires with it.
    rates.put_default(Kind::Webhook, Some(RateLimit::new(5, Some(5)).unwrap()), "worker-1").await.unwrap();
    let throttle = rates.throttle(Kind::Webhook, Some(Duration::from_mins(1))).await.unwrap();
    assert!(rates.put_default(Kind::Webhook, None, "worker-2").await.unwrap());
    let view = rates.view(Kind::Webhook, Utc::now()).await.unwrap();
    assert_eq!((view.per_second, view.throttled_until), (None, throttle.until));
    let ttl: i64 = redis::cmd("PTTL").arg(&bucket).query_async(&mut lab.conn.clone()).await.unwrap();
    assert!((1..=60_000).contains(&ttl), "{ttl}");
    lab.webhooks("https://a.example/hook", 1).await;
    assert!(lab.fetch(10).await.throttled, "the hold still holds");
}
