//! Adversarial review of issue 14 (control of live work), against a real Redis (`REDIS_URL`,
//! default 127.0.0.1:6379), each test under a namespace of its own: the bugs found, each shown
//! failing before its fix.

#![expect(clippy::unwrap_used, reason = "a fixture that cannot be set up fails the test, loudly")]

mod lab;

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::pause::Pauses;
use jobs::queue::Queue;
use jobs::schedule::{Actor, Schedule, ScheduleLimits, ScheduleStore, Source};
use jobs::{Kind, NewJob};
use serde_json::json;

use lab::Lab;

impl Lab {
    fn schedules(&self) -> ScheduleStore {
        ScheduleStore::new(self.conn.clone(), &self.namespace)
    }

    async fn redis_now(&self) -> DateTime<Utc> {
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut self.conn.clone()).await.unwrap();
        DateTime::from_timestamp_millis(secs * 1000 + micros / 1000).unwrap()
    }

    fn job(kind: Kind, created_at: DateTime<Utc>, run_at: Option<DateTime<Utc>>) -> NewJob {
        NewJob { created_at, run_at, max_attempts: 2, ..lab::job(kind) }
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

/// Run now pressed twice 150 ms apart, across the turn of a second (a double click): one job.
/// The key was `schedule:<name>:manual:<unix second>`, so the two presses fell in two seconds
/// and made two jobs; "exactly once however many times the button is pressed within a second".
#[tokio::test]
async fn run_now_twice_within_a_second_across_its_turn_makes_one_job() {
    let lab = Lab::new();
    let store = lab.schedules();
    let queue = lab.store();
    let request = json!({"name": "digest", "cron": "0 3 1 1 *",
        "job": {"kind": "webhook", "payload": {"url": "https://a.example/hook", "event": "tick"}}});
    let (schedule, _) = Schedule::parse(request, "", Source::Api, "shop", Utc::now()).unwrap();
    store.put_checked(&schedule, &ScheduleLimits::default()).await.unwrap();
    let shop = Actor::Producer("shop".into());

    // Wait for the last 100 ms of a second on Redis's clock.
    while lab.redis_now().await.timestamp_subsec_millis() < 900 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = store.run_now("digest", &shop, &queue).await.unwrap().unwrap();
    let pressed = lab.redis_now().await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = store.run_now("digest", &shop, &queue).await.unwrap().unwrap();
    let elapsed = lab.redis_now().await - pressed;
    assert!(elapsed < chrono::Duration::milliseconds(900), "the presses were {elapsed} apart");
    assert!(!first.replayed);
    assert_eq!((second.id.as_str(), second.replayed), (first.id.as_str(), true), "one job for presses 150 ms apart");
    let ready: Vec<String> = redis::cmd("LRANGE")
        .arg(lab.keys.queue(Kind::Webhook).ready())
        .arg(0)
        .arg(-1)
        .query_async(&mut lab.conn.clone())
        .await
        .unwrap();
    assert_eq!(ready, std::slice::from_ref(&first.id));

    // A second after the first press, a press makes a new job.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let third = store.run_now("digest", &shop, &queue).await.unwrap().unwrap();
    assert!(!third.replayed && third.id != first.id);
    assert!(third.idempotency_key.starts_with("schedule:digest:manual:"), "{}", third.idempotency_key);
}

/// The latency is the age of the oldest ready job. A due delayed job (or a retry) is promoted
/// to the popping end, in front of the backlog: the latency read only the first live job
/// there, so a queue whose oldest job had waited 90 s showed the promoted job's 0.3 s.
#[tokio::test]
async fn latency_is_not_hidden_by_a_job_promoted_in_front_of_an_old_backlog() {
    let lab = Lab::new();
    let now = Utc::now();
    let old = Lab::job(Kind::Webhook, now - chrono::Duration::seconds(90), None);
    let delayed = Lab::job(Kind::Webhook, now, Some(now + chrono::Duration::milliseconds(200)));
    lab.store().enqueue(&[old.clone(), delayed.clone()]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Paused (or busy): a fetch promotes the due job and leases nothing.
    let pauses = Pauses::new(lab.conn.clone(), lab.keys.clone());
    pauses.pause(Kind::Webhook, "admin", now).await.unwrap();
    let reply = Queue::new(lab.conn.clone(), &lab.keys, Kind::Webhook, "w1")
        .fetch_reply(Duration::from_secs(30), 10, 100)
        .await
        .unwrap();
    assert!(reply.paused && reply.jobs.is_empty());
    let ready: Vec<String> = redis::cmd("LRANGE")
        .arg(lab.keys.queue(Kind::Webhook).ready())
        .arg(0)
        .arg(-1)
        .query_async(&mut lab.conn.clone())
        .await
        .unwrap();
    assert_eq!(ready, [old.id.to_string(), delayed.id.to_string()], "the promoted job is next out");

    let latency = pauses.latency(Kind::Webhook, Utc::now()).await.unwrap();
    assert!(latency >= Duration::from_secs(90), "the oldest ready job has waited 90 s, latency says {latency:?}");
    // The jobs page's "oldest queued job ready since": the same job.
    let browser = jobs::browse::JobBrowser::new(lab.conn.clone(), lab.keys.clone());
    let since = browser.oldest_queued(Kind::Webhook).await.unwrap().unwrap();
    assert_eq!(
        since.timestamp_millis(),
        old.created_at.timestamp_millis(),
        "the jobs page's latency counts from {since}"
    );
}

/// A fence of every queue, by kind.
async fn fences(lab: &Lab) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let fence: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(lab.keys.queue(kind).schedule_pauses())
            .query_async(&mut lab.conn.clone())
            .await
            .unwrap();
        out.push(fence);
    }
    out
}

/// A tick a scheduler claimed before a pause, still enqueueing (a stalled worker), is refused
/// by the pause's fence. The resume removed the fence, so the stale tick was written after
/// the resume: a `catch_up: none` schedule fired a tick missed while paused, and a `latest`
/// one fired it besides the latest (two jobs for one pause). A fence refuses only ticks
/// claimed before its pause, so it stays until the schedule is deleted.
#[tokio::test]
async fn a_tick_claimed_before_a_pause_is_refused_after_the_resume_too() {
    let lab = Lab::new();
    let store = lab.schedules();
    let queue = lab.store();
    let request = json!({"name": "digest", "cron": "* * * * *", "catch_up": "none",
        "job": {"kind": "webhook", "payload": {"url": "https://a.example/hook", "event": "tick"}}});
    let (schedule, _) =
        Schedule::parse(request, "", Source::Api, "shop", Utc::now() - chrono::Duration::hours(1)).unwrap();
    store.put_checked(&schedule, &ScheduleLimits::default()).await.unwrap();
    let claim = store.claim(chrono::Duration::seconds(5), 10).await.unwrap();
    assert_eq!(claim.due.len(), 1);
    let tick = schedule.timetable().unwrap().latest_at_or_before(claim.now).unwrap();
    let job = schedule.job_for(tick, claim.now).unwrap();
    let shop = Actor::Producer("shop".into());

    store.pause("digest", &shop).await.unwrap().unwrap();
    store.resume("digest", &shop, &queue).await.unwrap().unwrap();
    let stale = jobs::store::TickClaim { schedule: "digest".into(), claimed: claim.now };
    assert_eq!(
        queue.enqueue_tick(&job, &stale).await.unwrap(),
        jobs::EnqueueOutcome::NotWritten,
        "the tick claimed before the pause is not written after the resume"
    );
    // A tick claimed after the pause passes.
    let fresh = jobs::store::TickClaim { schedule: "digest".into(), claimed: lab.redis_now().await };
    let next = schedule.job_for(tick + chrono::Duration::minutes(1), claim.now).unwrap();
    assert!(matches!(queue.enqueue_tick(&next, &fresh).await.unwrap(), jobs::EnqueueOutcome::Created { .. }));

    // The delete of a running schedule removes the fences its past pauses left.
    assert!(fences(&lab).await.iter().all(|f| f.contains_key("digest")));
    assert_eq!(store.delete_checked("digest", "shop").await.unwrap(), jobs::schedule::DeleteOutcome::Deleted);
    assert!(fences(&lab).await.iter().all(std::collections::BTreeMap::is_empty), "{:?}", fences(&lab).await);
}
