//! Review of the schedule hardening (issue 13, items 2, 4, 7 and 9), as an attacker would try
//! it: skewed clocks between schedulers, forged operator actors, and the cost of reads.

use std::time::Duration;

use chrono::Utc;
use jobs::schedule::{Schedule, ScheduleLimits, ScheduleStore, Source};
use serde_json::json;

fn schedule(name: &str, cron: &str, updated_at: chrono::DateTime<Utc>) -> Schedule {
    let body = json!({"name": name, "cron": cron,
        "job": {"kind": "webhook", "payload": {"url": "https://example.com/h", "event": "reminder.due"}}});
    Schedule::parse(body, "", Source::Api, "shop", updated_at).unwrap().0
}

async fn store() -> (ScheduleStore, redis::aio::MultiplexedConnection, String) {
    let namespace = format!("jp-test-{}", uuid::Uuid::now_v7().simple());
    let url = crate::support::redis_url();
    let conn = jobs::redis_conn::connect_url(&url, Duration::from_secs(30)).unwrap();
    let raw = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    (ScheduleStore::new(conn, &namespace), raw, namespace)
}

async fn redis_now_ms(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    secs * 1000 + micros / 1000
}

/// Found in review: a scheduler judged what was due, and set its leases, by its own clock:
/// a worker whose clock ran an hour ahead claimed and fired every tick of the coming hour at
/// once (skipping the ones between) and held its leases an hour past their end. The claim now
/// reads Redis's clock and says what it read; a scheduler cannot pass its own.
#[tokio::test]
async fn a_claim_judges_due_by_the_redis_clock() {
    let (store, mut raw, namespace) = store().await;
    let limits = ScheduleLimits::default();
    let now = Utc::now();
    // Due: its first tick after its update is hours ago. Not due: the next 1 January.
    store.put_checked(&schedule("overdue", "0 0 * * * *", now - chrono::Duration::days(2)), &limits).await.unwrap();
    store.put_checked(&schedule("new-year", "0 0 0 1 1 *", now), &limits).await.unwrap();
    let before = redis_now_ms(&mut raw).await;
    let claim = store.claim(chrono::Duration::seconds(5), 100).await.unwrap();
    let after = redis_now_ms(&mut raw).await;
    let names: Vec<&str> = claim.due.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["overdue"]);
    let at = claim.now.timestamp_millis();
    assert!((before..=after).contains(&at), "claim's now {at} is not Redis's ({before}..={after})");
    let lease: f64 = redis::cmd("ZSCORE")
        .arg(format!("{namespace}:{{schedules}}:due"))
        .arg("overdue")
        .query_async(&mut raw)
        .await
        .unwrap();
    #[expect(clippy::cast_precision_loss, reason = "ms since the epoch")]
    let expected = (at + 5000) as f64;
    assert!((lease - expected).abs() < 1.0, "leased until {lease}, not Redis's now + 5 s ({expected})");
}

async fn command_calls(conn: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Found in review: `GET /v1/schedules` ran a script that read the owner of every schedule
/// of every producer (an HGETALL over up to `SCHEDULES_MAX` entries) to pick out the caller's:
/// any API key could make Redis walk all 10,000 schedules per request. It now reads one lexical
/// range per owner; the test counts the whole-hash reads Redis performs (no timing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_schedules_reads_only_the_callers() {
    let redis = crate::support::OwnRedis::start();
    let app = crate::support::TestApp::spawn_on(&redis.url()).await;
    let conn = jobs::redis_conn::connect_url(&redis.url(), Duration::from_secs(30)).unwrap();
    let store = ScheduleStore::new(conn, &app.namespace);
    let limits = ScheduleLimits::default();
    let now = Utc::now();
    for i in 0..200 {
        let mut other = schedule(&format!("other-{i:03}"), "0 0 3 1 1 *", now);
        other.producer = "another-producer".to_owned();
        store.put_checked(&other, &limits).await.unwrap();
    }
    let body = json!({"name": "mine", "cron": "0 9 * * *",
        "job": {"kind": "webhook", "payload": {"url": "https://example.com/h", "event": "e"}}});
    let created =
        app.http.post(app.url("/v1/schedules")).bearer_auth(crate::support::SHOP_KEY).json(&body).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let mut raw = app.redis().await;
    let before = command_calls(&mut raw, "hgetall").await;
    let listed: serde_json::Value = app
        .http
        .get(app.url("/v1/schedules"))
        .bearer_auth(crate::support::SHOP_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> =
        listed["schedules"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["mine"]);
    let whole_reads = command_calls(&mut raw, "hgetall").await - before;
    assert_eq!(whole_reads, 0, "listing one producer's schedules read a whole hash {whole_reads} times");
}
