//! Issue 18: the client libraries against a real producer API, Redis, worker and PostgreSQL.
//! The Rust client (`clients/rust`) is called from here; the TypeScript one
//! (`clients/typescript`) runs its `node --test` suite against the same kind of set-up.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use jobplane_client::payload::{AuditLog, Email};
use jobplane_client::{AuditQuery, CallOptions, Client, Job, Kind};
use serde_json::json;

use crate::audit::{drained, rows};
use crate::edge_hardening::wait_with_limit;
use crate::support::{OwnDatabase, OwnRedis, SHOP_KEY, TestApp, WorkerProcess, binary, redis_url};

fn client(app: &TestApp) -> Client {
    Client::new(app.url(""), SHOP_KEY).unwrap()
}

fn email() -> Email {
    serde_json::from_value(json!({"to": "ada@example.org", "subject": "Hello", "text": "Hi"})).unwrap()
}

/// Redis frozen (SIGSTOP) makes the API answer `503` within 2 s; the enqueue written to the
/// frozen server may still land when it thaws. The client retries with the same key, so
/// whatever happened to the first attempt, one job exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_503_makes_exactly_one_job() {
    let redis = OwnRedis::start();
    let app = TestApp::spawn_on(&redis.url()).await;
    let client = client(&app);
    // The connection is up before Redis freezes, so the first attempt reaches the script.
    client
        .enqueue(&Job::webhook(
            &serde_json::from_value(json!({"url": "https://example.org/h", "event": "warm.up"})).unwrap(),
        ))
        .await
        .unwrap();
    redis.freeze(true);
    let started = Instant::now();
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.enqueue(&Job::email(&email())).await }
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    redis.freeze(false);
    let accepted = call.await.unwrap().expect("the retry succeeds once Redis answers");
    assert!(started.elapsed() >= Duration::from_secs(4), "it waited for Redis, retrying");
    assert_eq!(app.ready("email").await, vec![accepted.id.clone()], "exactly one email job");
    let view = client.get(&accepted.id).await.unwrap();
    assert_eq!((view.kind, view.status.as_str()), (Kind::Email, "queued"));
}

/// A `429` with `Retry-After: 2` (the OTP limit of one a number per 2 s): the client waits at
/// least 2 s, then the job is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_its_retry_after() {
    let settings = [("OTP_RATE_LIMIT_PER_NUMBER", "1"), ("OTP_RATE_WINDOW_SECONDS", "2")];
    let app = TestApp::spawn_with(&redis_url(), &settings).await;
    let client = client(&app);
    let otp = || Job::raw(Kind::OtpSms, json!({"to": "+14155550100", "code": "123456"}));
    client.enqueue(&otp()).await.unwrap();
    // Without a deadline long enough for the wait, the 429 comes back as the error.
    let refused = client.enqueue_with(&otp(), &CallOptions::default().deadline(Duration::from_secs(1))).await;
    let problem = refused.unwrap_err().problem().cloned().expect("a problem document");
    assert_eq!((problem.status, problem.retry_after), (429, Some(Duration::from_secs(2))), "{problem}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    client.enqueue(&otp()).await.unwrap();
    let started = Instant::now();
    let accepted = client.enqueue(&otp()).await.expect("accepted once the window moved on");
    assert!(started.elapsed() >= Duration::from_secs(2), "waited {:?}", started.elapsed());
    assert_eq!(accepted.kind, Kind::OtpSms);
}

/// A `422` comes back as a typed problem naming the field; nothing is retried or written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_422_names_the_field() {
    let app = TestApp::spawn().await;
    let client = client(&app);
    let job = Job::raw(Kind::Email, json!({"to": ["nope"], "subject": "Hi", "text": "x"}));
    // The client can check it with the API's own rules before sending...
    let local = job.check().unwrap_err();
    assert_eq!(local[0].field, "/payload/to/0");
    // ...and the API's answer says the same.
    let error = client.enqueue(&job).await.unwrap_err();
    let problem = error.problem().expect("a problem document");
    assert_eq!((problem.status, problem.kind.as_str()), (422, "/problems/validation"));
    assert_eq!(problem.fields().collect::<Vec<_>>(), ["/payload/to/0"]);
    assert!(app.ready("email").await.is_empty());
    let missing = client.get("0190d1c4-0000-7000-8000-000000000000").await.unwrap_err();
    assert_eq!(missing.status(), Some(404));
}

/// The traceparent the caller gives reaches the job (the worker continues that trace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_traceparent_is_passed_on() {
    let app = TestApp::spawn().await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let accepted =
        client(&app).enqueue_with(&Job::email(&email()), &CallOptions::default().traceparent(trace)).await.unwrap();
    let record = app.record("email", &accepted.id).await.unwrap();
    let carried = record.traceparent.expect("the job carries a traceparent");
    assert!(carried.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{carried}");
}

/// Schedules' whole life and a cancel, through the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_and_cancel_go_through_the_client() {
    let app = TestApp::spawn().await;
    let client = client(&app);
    let name = format!("digest-{}", app.namespace);
    let hook = json!({"kind": "webhook", "payload": {"url": "https://example.org/h", "event": "digest.due"}});
    let stored = client
        .put_schedule(&json!({"name": name, "cron": "0 9 * * 1-5", "timezone": "Asia/Taipei", "job": hook}))
        .await
        .unwrap();
    assert_eq!((stored.name.as_str(), stored.paused), (name.as_str(), false));
    assert!(client.list_schedules().await.unwrap().iter().any(|s| s.name == name && s.next_run_at.is_some()));
    assert!(client.pause_schedule(&name).await.unwrap().paused);
    assert!(!client.resume_schedule(&name).await.unwrap().paused);
    let run = client.run_schedule(&name).await.unwrap();
    assert!(run["idempotency_key"].as_str().unwrap().starts_with(&format!("schedule:{name}:manual:")), "{run}");
    client.delete_schedule(&name).await.unwrap();
    assert_eq!(client.pause_schedule(&name).await.unwrap_err().status(), Some(404));
    let later = Job::email(&email()).delay(Duration::from_hours(1));
    let accepted = client.enqueue(&later).await.unwrap();
    assert_eq!(accepted.status, "scheduled");
    let cancelled = client.cancel(&accepted.id).await.unwrap();
    assert_eq!((cancelled.id.as_str(), cancelled.status.as_str()), (accepted.id.as_str(), "cancelled"));
    assert_eq!(client.get(&accepted.id).await.unwrap().status, "cancelled");
}

/// 2,500 audit events, enqueued by `enqueue_batch` (three requests: 1,000 + 1,000 + 500) and
/// written by a worker, come back through the page stream each exactly once, newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_stream_yields_2500_events_each_once() {
    let db = OwnDatabase::create().await;
    let pool = db::pool(&db.url, 1).unwrap();
    db::migrate(&pool).await.unwrap();
    let app = TestApp::spawn_with(&redis_url(), &[("DATABASE_URL", &db.url)]).await;
    let _worker = WorkerProcess::start(
        &app.redis_url,
        &app.namespace,
        &[("WORKER_KINDS", "audit_log"), ("DATABASE_URL", &db.url), ("AUDIT_FLUSH_MS", "100")],
    );
    let client = client(&app);
    let start = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap().with_timezone(&Utc);
    let jobs: Vec<Job> = (0..2500_i64)
        .map(|i| {
            let event: AuditLog = serde_json::from_value(json!({
                "event_id": uuid::Uuid::now_v7(), "tenant_id": "acme", "actor": "user:7", "action": "invoice.paid",
                "resource_type": "invoice", "occurred_at": start + chrono::Duration::seconds(i / 2)}))
            .unwrap();
            Job::audit_log(&event)
        })
        .collect();
    let items = client.enqueue_batch(&jobs).await.unwrap();
    assert_eq!(items.len(), 2500);
    assert_eq!(drained(&app, Duration::from_mins(1)).await.0, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while rows(&pool).await < 2500 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows(&pool).await, 2500);
    let query = AuditQuery { limit: Some(300), ..AuditQuery::tenant("acme") };
    let events: Vec<_> = client.audit_logs(query).try_collect().await.unwrap();
    let ids: HashSet<_> = events.iter().map(|e| e.event_id).collect();
    assert_eq!((events.len(), ids.len()), (2500, 2500), "each event once");
    assert!(events.windows(2).all(|w| (w[0].occurred_at, w[0].event_id) > (w[1].occurred_at, w[1].event_id)));
    pool.close().await;
    db.drop().await;
}

/// The TypeScript package, its packages installed by `scripts/test` (`jp_ensure_node`).
fn typescript_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/typescript");
    assert!(
        dir.join("node_modules/.bin/tsc").exists(),
        "{}/node_modules is not installed: run scripts/test (jp_ensure_node), or `npm ci` there",
        dir.display()
    );
    dir
}

/// Runs `program args` in `dir` with `env`, for at most `limit`; its status and output.
async fn run(dir: &Path, program: &str, args: &[&str], env: &[(&str, String)], limit: Duration) -> (bool, String) {
    let child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (node and npm are installed by scripts/test)"));
    let output = wait_with_limit(child, limit).await;
    let text = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// The TypeScript client's suite (`clients/typescript/test`, `node --test`): a `503` from a
/// frozen Redis retried into exactly one job, a `429` waited out, a `422`'s field pointer, and
/// 2,500 audit events paged each once, against a producer API, Redis, worker and PostgreSQL
/// of this test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_client_passes_its_suite() {
    let dir = typescript_dir();
    let redis = OwnRedis::start();
    let db = OwnDatabase::create().await;
    let pool = db::pool(&db.url, 1).unwrap();
    db::migrate(&pool).await.unwrap();
    let settings =
        [("DATABASE_URL", db.url.as_str()), ("OTP_RATE_LIMIT_PER_NUMBER", "1"), ("OTP_RATE_WINDOW_SECONDS", "2")];
    let app = TestApp::spawn_with(&redis.url(), &settings).await;
    let _worker = WorkerProcess::start(
        &app.redis_url,
        &app.namespace,
        &[("WORKER_KINDS", "audit_log"), ("DATABASE_URL", &db.url), ("AUDIT_FLUSH_MS", "100")],
    );
    let (built, text) = run(&dir, "npm", &["run", "build"], &[], Duration::from_mins(2)).await;
    assert!(built, "tsc failed:\n{text}");
    let env = [
        ("JOBPLANE_URL", app.url("")),
        ("JOBPLANE_KEY", SHOP_KEY.to_owned()),
        ("JOBPLANE_REDIS_PID", redis.pid().to_string()),
        ("JOBPLANE_TENANT", format!("ts-{}", app.namespace)),
    ];
    let (passed, text) = run(&dir, "node", &["--test", "test/"], &env, Duration::from_mins(3)).await;
    assert!(passed, "node --test failed:\n{text}");
    assert!(text.contains("# pass 10") && text.contains("# fail 0"), "{text}");
    // The 503 test's email job is the only one: its retry reused the key.
    let id = text
        .lines()
        .find_map(|l| l.split_once("EMAIL_JOB ").map(|(_, id)| id.trim()))
        .expect("the 503 test names its job");
    assert_eq!(app.ready("email").await, vec![id.to_owned()], "{text}");
    pool.close().await;
    db.drop().await;
}

/// The checked-in `clients/typescript/src/schema.d.ts` is what openapi-typescript makes of the
/// document the built producer-api prints (`producer-api openapi`, the same as `/openapi.json`):
/// the client's types never drift from the API. After changing the API, regenerate it with
/// `target/debug/producer-api openapi > target/openapi.json && (cd clients/typescript && npm run generate)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_types_are_generated_from_the_document() {
    let dir = typescript_dir();
    let output = Command::new(binary("producer-api")).arg("openapi").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let scratch = std::env::temp_dir().join(format!("jobplane-openapi-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&scratch).unwrap();
    let document = scratch.join("openapi.json");
    let generated = scratch.join("schema.d.ts");
    std::fs::write(&document, &output.stdout).unwrap();
    let args = [document.to_str().unwrap(), "-o", generated.to_str().unwrap()];
    let (ok, text) = run(&dir, "node_modules/.bin/openapi-typescript", &args, &[], Duration::from_mins(1)).await;
    assert!(ok, "openapi-typescript failed:\n{text}");
    let fresh = std::fs::read_to_string(&generated).unwrap();
    let _ = std::fs::remove_dir_all(&scratch);
    let checked_in = std::fs::read_to_string(dir.join("src/schema.d.ts")).unwrap();
    assert!(
        fresh == checked_in,
        "clients/typescript/src/schema.d.ts differs from the document's types; regenerate it: \
         target/debug/producer-api openapi > target/openapi.json && (cd clients/typescript && npm run generate)"
    );
}
