//! Lease renewal is by attempt: a worker whose lease ran out and whose job another worker
//! leased again cannot keep the new holder's lease alive (`extend.lua`).

use std::time::Duration;

use jobs::queue::Queue;
use jobs::{Keys, Kind};
use redis::AsyncCommands as _;

use crate::support::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_holder_cannot_renew_the_new_attempts_lease() {
    let app = TestApp::spawn().await;
    let conn = jobs::redis_conn::connect_url(&app.redis_url, Duration::from_secs(30)).unwrap();
    let keys = Keys::new(&app.namespace);
    let id = app.enqueue_webhooks("https://receiver.example/hook", 1, 5).await.remove(0);

    let first = Queue::new(conn.clone(), &keys, Kind::Webhook, "w1");
    let leased = first.fetch(Duration::from_millis(150), 1, 10).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!((leased[0].0.id.as_str(), leased[0].0.attempt), (id.as_str(), 1));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The lease ran out: the next fetch recovers the job and leases it as attempt 2.
    let second = Queue::new(conn.clone(), &keys, Kind::Webhook, "w2");
    let leased = second.fetch(Duration::from_secs(2), 1, 10).await.unwrap();
    assert_eq!((leased[0].0.id.as_str(), leased[0].0.attempt), (id.as_str(), 2));

    let mut redis = app.redis().await;
    let active = keys.queue(Kind::Webhook).active();
    let deadline: f64 = redis.zscore(&active, &id).await.unwrap();
    // w1 still believes it runs attempt 1: its renewal is refused and moves nothing.
    let renewed = first.extend(&[(id.clone(), 1)], Duration::from_mins(10)).await.unwrap();
    assert_eq!(renewed, 0, "a stale attempt renewed another worker's lease");
    let after: f64 = redis.zscore(&active, &id).await.unwrap();
    assert!((after - deadline).abs() < f64::EPSILON, "the deadline moved from {deadline} to {after}");

    // The current holder renews its own lease.
    assert_eq!(second.extend(&[(id.clone(), 2)], Duration::from_mins(10)).await.unwrap(), 1);
    let renewed_to: f64 = redis.zscore(&active, &id).await.unwrap();
    assert!(renewed_to > deadline + 60_000.0, "{renewed_to} vs {deadline}");
    // An id that is not running (unknown) is never added to the active set.
    assert_eq!(second.extend(&[("no-such-job".to_owned(), 1)], Duration::from_mins(10)).await.unwrap(), 0);
    let held: Option<f64> = redis.zscore(&active, "no-such-job").await.unwrap();
    assert!(held.is_none());
}
