//! Hardening at the edges (issue 13): label values a client picks cannot grow the metrics, the
//! audit-log query refuses bad and oversized input before PostgreSQL sees it, an API fuzzer
//! finds no 5xx, and a full Redis is an outage of capacity (`503`, `Retry-After`, `/readyz`),
//! not a bug, while workers keep draining what is queued.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobs::Kind;
use serde_json::{Value, json};

use crate::console::{ADMIN_TOKEN, TestConsole, make_dead};
use crate::emulators::require_python_module;
use crate::enqueue::webhook;
use crate::receiver::{Receiver, Reply};
use crate::support::{OwnDatabase, SHOP_KEY, TestApp, WorkerProcess, free_port, problem_fields, redis_url};

/// A made-up HTTP method, 200 characters long, unique to `i`.
fn made_up_method(i: usize) -> reqwest::Method {
    reqwest::Method::from_bytes(format!("X{i:04}{}", "M".repeat(195)).as_bytes()).unwrap()
}

/// The distinct values of `label` in `metrics` text.
fn label_values(metrics: &str, label: &str) -> std::collections::BTreeSet<String> {
    let needle = format!("{label}=\"");
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(&needle).map(|(_, rest)| rest.split('"').next().unwrap_or_default().to_owned()))
        .collect()
}

/// Sends 300 requests with distinct made-up methods to `base` (half to a route, half to no
/// route, none authenticated), then checks `/metrics` holds none of them and barely grew.
async fn made_up_methods_leave_no_trace(base: &str, route: &str) {
    let http = reqwest::Client::new();
    let before = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for i in 0..300 {
        let path = if i % 2 == 0 { route.to_owned() } else { format!("/no/such/path/{i}") };
        let response = http.request(made_up_method(i), format!("{base}{path}")).send().await.unwrap();
        assert!(response.status().is_client_error(), "{path}: {}", response.status());
    }
    let after = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!after.contains("MMMMMMMMMM"), "a made-up method became a label");
    assert!(!after.contains("/no/such/path"), "a raw path became a label");
    let methods = label_values(&after, "method");
    assert!(methods.contains("other"), "{methods:?}");
    assert!(
        methods
            .iter()
            .all(|m| ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other"].contains(&m.as_str())),
        "{methods:?}"
    );
    let routes = label_values(&after, "route");
    assert!(routes.iter().all(|r| r == "unmatched" || r.starts_with('/')), "{routes:?}");
    // 300 new label sets of 200-byte names would add over 60 KB; a closed set adds a few lines.
    let grown = after.len().saturating_sub(before.len());
    assert!(grown < 16 * 1024, "/metrics grew by {grown} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_and_paths_do_not_grow_the_metrics() {
    service::metrics_handle();
    let app = TestApp::spawn().await;
    made_up_methods_leave_no_trace(&format!("http://{}", app.addr), "/v1/jobs").await;
    let console = TestConsole::start(&app, &[]).await;
    made_up_methods_leave_no_trace(&console.base, "/api/dead").await;
}

/// The producer API on a migrated database of the test's own.
async fn app_with_database() -> (TestApp, OwnDatabase) {
    let db = OwnDatabase::create().await;
    let pool = db::pool(&db.url, 1).unwrap();
    db::migrate(&pool).await.unwrap();
    pool.close().await;
    let app = TestApp::spawn_with(&redis_url(), &[("DATABASE_URL", &db.url)]).await;
    (app, db)
}

async fn audit_query(app: &TestApp, query: &str) -> (u16, Value) {
    let response =
        app.http.get(app.url(&format!("/v1/audit-logs?{query}"))).bearer_auth(SHOP_KEY).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_queries_postgresql_would_refuse_are_422_naming_the_parameter() {
    let (app, db) = app_with_database().await;
    assert_eq!(audit_query(&app, "tenant_id=acme").await.0, 200);
    let far_cursor = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        format!("{},{}", -6_400_000_000_000_000_000_i64, uuid::Uuid::now_v7()),
    );
    let cases: [(String, &str); 6] = [
        ("tenant_id=%00acme".into(), "tenant_id"),
        ("tenant_id=acme&actor=user%007".into(), "actor"),
        ("tenant_id=acme&action=a%0Db".into(), "action"),
        (format!("tenant_id=acme&cursor={far_cursor}"), "cursor"),
        ("tenant_id=acme&from=0000-01-01T00:00:00Z".into(), "from"),
        ("tenant_id=acme&limit=99999999999999999999".into(), "limit"),
    ];
    for (query, field) in cases {
        let (status, problem) = audit_query(&app, &query).await;
        assert_eq!(status, 422, "{query}: {problem}");
        assert_eq!(problem_fields(&problem), [field], "{query}: {problem}");
    }
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_query_of_many_parameters_is_refused_whole() {
    // No database: the query must be refused before one is asked.
    let unreachable = format!("postgres://postgres@127.0.0.1:{}/jobs", free_port());
    let app = TestApp::spawn_with(&redis_url(), &[("DATABASE_URL", &unreachable)]).await;
    // The longest query a URI holds (64 KiB): 10,000 distinct names, which a parser comparing
    // each with every earlier one pays for quadratically, and 7,000 repeats of one parameter.
    let distinct = (0..10_000).map(|i| format!("{i:x}")).collect::<Vec<_>>().join("&");
    for query in [distinct, "limit=1&".repeat(7_000)] {
        let (status, problem) = audit_query(&app, &format!("tenant_id=t&{query}")).await;
        assert_eq!(status, 422);
        assert_eq!(problem_fields(&problem), ["query"], "{}", problem["detail"]);
    }
    // 64 parameters are read; a repeat among them is named, once.
    let (status, problem) = audit_query(&app, &format!("tenant_id=t{}", "&limit=5".repeat(63))).await;
    assert_eq!((status, problem_fields(&problem)), (422, vec!["limit".to_owned()]), "{problem}");
}

/// schemathesis (pinned in `scripts/lib/services.sh`) over every operation of
/// `/openapi.json`, against the API with a valid key and a real database: no input may get a
/// 5xx. Three bounded runs, fixed seeds, a few minutes at most: the coverage phase (boundary
/// and invalid values of every parameter), examples and random fuzzing of every operation, and
/// many valid-looking audit-log queries (the ones that reach PostgreSQL, with NULs). The
/// coverage phase leaves out the batch endpoint, whose nested schema schemathesis 4.32 fails to
/// expand (its own error, not a finding); fuzzing covers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_fuzzer_finds_no_server_error() {
    let python = require_python_module("schemathesis");
    let (app, db) = app_with_database().await;
    let runs: [&[&str]; 3] = [
        &["--phases", "coverage", "--exclude-path", "/v1/jobs/batch"],
        &["--phases", "examples,fuzzing", "--max-examples", "40"],
        // Valid-looking audit queries reach PostgreSQL: 1000 of them find a NUL there.
        &["--phases", "fuzzing", "--mode", "positive", "--include-path", "/v1/audit-logs", "--max-examples", "1000"],
    ];
    let mut failures = Vec::new();
    for phases in runs {
        // A crash of schemathesis itself (its `ERRORS` section: Hypothesis's flaky-generation
        // errors, seen in one full run of five here) says nothing of the API: that run is tried again
        // with another seed. A finding (its `FAILURES` section) fails the test at once.
        let mut outcome = Err(String::new());
        for seed in ["13", "14", "15"] {
            let (passed, text) = schemathesis(&python, &app.url("/openapi.json"), seed, phases).await;
            if text.contains("FAILURES") {
                outcome = Err(format!("schemathesis {phases:?} (seed {seed}) found:\n{text}"));
                break;
            }
            if passed {
                outcome = Ok(());
                break;
            }
            outcome = Err(format!("schemathesis {phases:?} did not complete in three tries; the last:\n{text}"));
        }
        if let Err(failure) = outcome {
            failures.push(failure);
        }
    }
    db.drop().await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// One bounded schemathesis run over the API's document, in a folder of its own (it keeps a
/// cache in the working directory and writes reports); whether it passed, and what it printed.
async fn schemathesis(python: &std::path::Path, document: &str, seed: &str, phases: &[&str]) -> (bool, String) {
    let report = std::env::temp_dir().join(format!("jobplane-schemathesis-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&report).unwrap();
    let child = Command::new(python)
        .current_dir(&report)
        .args(["-m", "schemathesis.cli", "run", document])
        .args(["--checks", "not_a_server_error", "--seed", seed, "--workers", "2", "--request-timeout", "10"])
        .args(["--header", &format!("Authorization: Bearer {SHOP_KEY}")])
        .args(["--no-shrink", "--suppress-health-check", "all", "--generation-allow-x00", "true"])
        .args(phases)
        .arg("--report-dir")
        .arg(&report)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_with_limit(child, Duration::from_mins(4)).await;
    let _ = std::fs::remove_dir_all(&report);
    let text = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success() && text.contains(" passed"), text)
}

/// Waits for `child`, killing it after `limit`.
pub(crate) async fn wait_with_limit(child: Child, limit: Duration) -> std::process::Output {
    let id = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    if let Ok(output) = tokio::time::timeout(limit, waiting).await {
        return output.unwrap();
    }
    let _ = Command::new("kill").args(["-KILL", &id.to_string()]).status();
    panic!("schemathesis did not finish within {limit:?}");
}

/// A `redis-server` with a 2 MB `maxmemory` under `noeviction` (what compose runs, small),
/// nothing saved, killed on drop.
pub(crate) struct SmallRedis {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl SmallRedis {
    pub(crate) fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("jobplane-small-redis-{port}-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        let redis = Self { port, dir, child };
        let client = redis::Client::open(redis.url()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200))
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {port} did not answer within 10 s");
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Writes strings until Redis refuses even a small one with `OOM`, then lowers
    /// `maxmemory` 256 KB under what Redis holds: a full Redis by a margin that a closed
    /// connection's buffers, or the jobs workers drain, do not give back. Returns how many
    /// strings it took.
    pub(crate) fn fill(&self) -> usize {
        let mut written = 0;
        self.fill_once(&mut written);
        let mut conn = redis::Client::open(self.url()).unwrap().get_connection().unwrap();
        let info: String = redis::cmd("INFO").arg("memory").query(&mut conn).unwrap();
        let used: u64 = info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap();
        let () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(used - 256 * 1024).query(&mut conn).unwrap();
        written
    }

    fn fill_once(&self, written: &mut usize) {
        let mut conn = redis::Client::open(self.url()).unwrap().get_connection().unwrap();
        for size in [8 * 1024, 512, 16] {
            let value = "x".repeat(size);
            loop {
                let set: redis::RedisResult<()> =
                    redis::cmd("SET").arg(format!("filler:{}", *written)).arg(&value).query(&mut conn);
                match set {
                    Ok(()) => *written += 1,
                    Err(e) if e.code() == Some("OOM") => break,
                    Err(e) => panic!("{e}"),
                }
                assert!(*written < 20_000, "Redis took 20,000 strings under a 2 MB maxmemory");
            }
        }
    }
}

impl Drop for SmallRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) async fn assert_full_answer(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 503, "{what}");
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    assert!(retry_after.as_deref().is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)), "{what}: {retry_after:?}");
    assert_eq!(response.headers()["content-type"], "application/problem+json", "{what}");
    let problem: Value = response.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("queue store is full"), "{what}: {problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_is_a_503_with_retry_after_and_workers_keep_draining() {
    service::metrics_handle();
    let redis = SmallRedis::start();
    let app = TestApp::spawn_on(&redis.url()).await;
    let receiver = Receiver::start(&[], Reply::OK).await;
    // Queued while there is room: 200 webhooks and a dead letter.
    let ids = app.enqueue_webhooks(&receiver.url(), 200, 3).await;
    let dead = make_dead(
        &app,
        Kind::Email,
        &json!({"to": ["a@example.org"], "subject": "s", "text": "t"}),
        1,
        "permanent",
        "boom",
    )
    .await;
    let console = TestConsole::start(&app, &[]).await;
    assert!(redis.fill() > 0);

    assert_full_answer(app.post_job(&webhook(), Some("full-1")).await, "single enqueue").await;
    let batch = json!({"jobs": vec![webhook(); 50]});
    let response = app.http.post(app.url("/v1/jobs/batch")).bearer_auth(SHOP_KEY).json(&batch).send().await.unwrap();
    assert_full_answer(response, "batch enqueue").await;

    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!((body["status"].as_str(), body["redis"].as_str()), (Some("not ready"), Some("full")), "{body}");
    let ready = console.get("/readyz", ADMIN_TOKEN).await;
    assert_eq!(ready.status(), 503);

    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let full: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("jobplane_redis_full_total "))
        .unwrap_or_else(|| panic!("no jobplane_redis_full_total:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(full >= 2.0, "{full}");

    // The console: a replay either goes through (it frees as much as it writes) or is a 503
    // saying the store is full; never a 500.
    let response = console.post(&format!("/api/dead/{}/replay", dead[0]), ADMIN_TOKEN, &json!({})).await;
    match response.status().as_u16() {
        202 => {}
        503 => assert_full_answer(response, "console replay").await,
        other => panic!("console replay while full: {other} {}", response.text().await.unwrap()),
    }

    // Still full, a worker delivers every job queued before: finishing a job frees room.
    let mut worker =
        WorkerProcess::start_captured(&redis.url(), &app.namespace, &[("WORKER_CONCURRENCY_WEBHOOK", "32")]);
    let delivered = receiver.wait_for(ids.len(), Duration::from_secs(30)).await;
    let mut seen: Vec<String> = delivered.iter().map(crate::receiver::Delivery::webhook_id).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), ids.len(), "worker log:\n{}", worker.output());
    for id in &ids {
        let job = app.wait_status(id, &["succeeded"], Duration::from_secs(10)).await;
        assert_eq!(job["status"], "succeeded", "{job}\nworker log:\n{}", worker.output());
    }
    // ... and Redis was full all along.
    let ready: Value = app.http.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["redis"], "full", "{ready}");
    assert_full_answer(app.post_job(&webhook(), Some("full-1")).await, "single enqueue after the drain").await;
    assert!(worker.wait(Duration::ZERO).is_none(), "the worker exited:\n{}", worker.output());
}
