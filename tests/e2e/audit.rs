//! Audit-log events: through the API and a real worker into PostgreSQL in batches, each event
//! stored once, read back newest first page by page; a row PostgreSQL refuses dies alone.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{OwnDatabase, SHOP_KEY, TestApp, WorkerProcess, redis_url};

/// An audit event for `tenant`, its id and time fixed by the test.
pub fn event(tenant: &str, id: Uuid, action: &str, occurred_at: DateTime<Utc>) -> Value {
    json!({"kind": "audit_log", "payload": {
        "event_id": id, "tenant_id": tenant, "actor": "user:7", "action": action,
        "resource_type": "invoice", "resource_id": "inv_1", "ip": "203.0.113.7",
        "metadata": {"amount": 42}, "occurred_at": occurred_at.to_rfc3339()}})
}

/// Enqueues `jobs` through the batch endpoint, 1000 at a time.
pub async fn enqueue_all(app: &TestApp, jobs: &[Value]) {
    for chunk in jobs.chunks(1000) {
        let response = app
            .http
            .post(app.url("/v1/jobs/batch"))
            .bearer_auth(SHOP_KEY)
            .json(&json!({ "jobs": chunk }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    }
}

pub async fn rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_logs").fetch_one(pool).await.unwrap_or(-1)
}

/// Waits until the audit queue is empty (nothing ready, scheduled or running).
pub async fn drained(app: &TestApp, limit: Duration) -> (usize, usize, usize, usize) {
    let deadline = Instant::now() + limit;
    loop {
        let depths = app.depths("audit_log").await;
        if (depths.0, depths.1, depths.2) == (0, 0, 0) || Instant::now() > deadline {
            return depths;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn page(app: &TestApp, query: &str) -> reqwest::Response {
    app.http.get(app.url(&format!("/v1/audit-logs?{query}"))).bearer_auth(SHOP_KEY).send().await.unwrap()
}

/// Every page of `query`, following `next_cursor`; returns the event ids in order.
async fn all_pages(app: &TestApp, query: &str) -> (Vec<Uuid>, usize) {
    let (mut ids, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let q = cursor.as_ref().map_or_else(|| query.to_owned(), |c| format!("{query}&cursor={c}"));
        let response = page(app, &q).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        pages += 1;
        ids.extend(
            body["items"].as_array().unwrap().iter().map(|i| i["event_id"].as_str().unwrap().parse::<Uuid>().unwrap()),
        );
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (ids, pages),
        }
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in the worker's metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_are_batched_stored_once_and_paged_newest_first() {
    let db = OwnDatabase::create().await;
    let app = TestApp::spawn_with(&redis_url(), &[("DATABASE_URL", &db.url)]).await;
    let worker = WorkerProcess::start(
        &app.redis_url,
        &app.namespace,
        &[("WORKER_KINDS", "audit_log"), ("DATABASE_URL", &db.url), ("AUDIT_FLUSH_MS", "100")],
    );
    // 2,500 events of one tenant a second apart, alternating two actions; 10 of another tenant;
    // then the first 100 again as new jobs carrying the same event ids.
    let start = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap().with_timezone(&Utc);
    let ids: Vec<Uuid> = (0..2500).map(|_| Uuid::now_v7()).collect();
    let at = |i: usize| start + chrono::Duration::seconds(i64::try_from(i).unwrap());
    let action = |i: usize| if i.is_multiple_of(2) { "invoice.paid" } else { "user.login" };
    let mut jobs: Vec<Value> = ids.iter().enumerate().map(|(i, id)| event("acme", *id, action(i), at(i))).collect();
    jobs.extend((0..10).map(|i| event("globex", Uuid::now_v7(), "user.login", at(i))));
    jobs.extend(ids.iter().take(100).enumerate().map(|(i, id)| event("acme", *id, action(i), at(i))));
    enqueue_all(&app, &jobs).await;

    let depths = drained(&app, Duration::from_mins(1)).await;
    assert_eq!(depths, (0, 0, 0, 0), "every job succeeded (ready, scheduled, active, dead)");
    let pool = db::pool(&db.url, 2).unwrap();
    assert_eq!(rows(&pool).await, 2510, "each event stored once, repeats included");

    // Batched: the writer's batches averaged far more than one event each.
    let text = reqwest::get(format!("http://{}/metrics", worker.metrics_addr)).await.unwrap().text().await.unwrap();
    let (sum, count) =
        (metric(&text, "jobplane_audit_batch_size_sum"), metric(&text, "jobplane_audit_batch_size_count"));
    assert!((sum - 2610.0).abs() < 0.5, "every job went through a batch: {sum}");
    assert!(sum / count >= 20.0, "batches of {:.1} events on average ({count} batches)", sum / count);

    // Newest first, all of them, each once, over three pages.
    let (listed, pages) = all_pages(&app, "tenant_id=acme&limit=1000").await;
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!((&listed, pages), (&newest_first, 3));
    // Filters: an action, a time window, another tenant.
    let (logins, _) = all_pages(&app, "tenant_id=acme&action=user.login&limit=500").await;
    assert_eq!(logins.len(), 1250);
    let window = format!("tenant_id=acme&from={}&to={}", at(100).to_rfc3339(), at(200).to_rfc3339());
    let (windowed, _) = all_pages(&app, &window.replace('+', "%2B")).await;
    assert_eq!(windowed, newest_first[2300..2400].to_vec());
    let body: Value = page(&app, "tenant_id=globex").await.json().await.unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 10);
    let item = &body["items"][0];
    assert_eq!((item["ip"].as_str(), item["metadata"]["amount"].as_i64()), (Some("203.0.113.7"), Some(42)));

    // Bad queries are named; no key, no logs.
    let response = page(&app, "limit=5000").await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["limit", "tenant_id"]);
    let response = app.http.get(app.url("/v1/audit-logs?tenant_id=acme")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    pool.close().await;
    drop(worker);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_postgresql_refuses_goes_alone_to_the_dead_letters() {
    let db = OwnDatabase::create().await;
    let pool = db::pool(&db.url, 2).unwrap();
    db::migrate(&pool).await.unwrap();
    // A rule the database has and the API does not know: the poison for this test.
    sqlx::query("ALTER TABLE audit_logs ADD CONSTRAINT test_no_poison CHECK (action <> 'poison.pill')")
        .execute(&pool)
        .await
        .unwrap();
    let app = TestApp::spawn().await;
    let _worker = WorkerProcess::start(
        &app.redis_url,
        &app.namespace,
        &[("WORKER_KINDS", "audit_log"), ("DATABASE_URL", &db.url), ("AUDIT_FLUSH_MS", "300")],
    );
    let now = Utc::now();
    let jobs: Vec<Value> = (0..300)
        .map(|i| event("acme", Uuid::now_v7(), if i == 137 { "poison.pill" } else { "invoice.paid" }, now))
        .collect();
    enqueue_all(&app, &jobs).await;

    let depths = drained(&app, Duration::from_secs(30)).await;
    assert_eq!(depths, (0, 0, 0, 1), "one dead letter, nothing left to run");
    assert_eq!(rows(&pool).await, 299, "the neighbours of the poison event were written");
    let dead: Vec<String> = redis::cmd("ZRANGE")
        .arg(app.key("{audit_log}:dead"))
        .arg(0)
        .arg(-1)
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    let job = app.job_fields("audit_log", &dead[0]).await;
    assert_eq!(job["status"], "dead");
    assert_eq!(job["attempts"], "1", "refused rows are not retried");
    assert!(job["last_error"].contains("test_no_poison"), "{}", job["last_error"]);
    assert!(job["payload"].contains("poison.pill"));
    pool.close().await;
    db.drop().await;
}
