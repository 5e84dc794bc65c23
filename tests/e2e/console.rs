//! The dead-letter console: its JSON API and its CLI against real dead letters, made by the
//! worker's own fetch and finish scripts.

use std::time::Duration;

use chrono::Utc;
use jobs::queue::{Finished, Outcome, Queue, Retention};
use jobs::{Keys, Kind, NewJob, Store};
use serde_json::{Value, json};

use crate::support::{TestApp, binary};

pub const ADMIN_TOKEN: &str = "console-admin-0123456789";
pub const VIEWER_TOKEN: &str = "console-viewer-0123456789";

/// Makes `n` dead letters of `kind` with `payload`, each dead for `reason` with `error`, through
/// the worker's scripts (`fetch.lua`, `finish.lua`); returns their ids.
pub async fn make_dead(
    app: &TestApp,
    kind: Kind,
    payload: &Value,
    n: usize,
    reason: &'static str,
    error: &str,
) -> Vec<String> {
    let conn = jobs::redis_conn::connect_url(&app.redis_url, Duration::from_secs(30)).unwrap();
    let keys = Keys::new(&app.namespace);
    let store = Store::new(conn.clone(), keys.clone(), Duration::from_hours(1), Duration::from_secs(30));
    let queue = Queue::new(conn, &keys, kind, "console-test");
    let mut ids = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let now = Utc::now();
        let jobs: Vec<NewJob> = (0..left.min(1000))
            .map(|_| NewJob {
                id: uuid::Uuid::now_v7(),
                kind,
                payload: payload.to_string(),
                created_at: now,
                run_at: None,
                max_attempts: 1,
                producer: "shop".into(),
                idempotency: None,
                traceparent: None,
                priority: jobs::Priority::Normal,
                group: None,
            })
            .collect();
        store.enqueue(&jobs).await.unwrap();
        let leased = queue.fetch(Duration::from_mins(1), jobs.len(), 0).await.unwrap();
        assert_eq!(leased.len(), jobs.len());
        let done: Vec<Finished> = leased
            .into_iter()
            .map(|(job, _)| {
                ids.push(job.id.clone());
                Finished {
                    job,
                    outcome: Outcome::Dead(reason.parse().unwrap()),
                    error: Some(error.to_owned()),
                    provider_id: None,
                    started_at: now,
                    finished_at: Utc::now(),
                }
            })
            .collect();
        for chunk in done.chunks(250) {
            queue.finish(chunk, Utc::now(), &Retention::default()).await.unwrap();
        }
        left -= jobs.len();
    }
    ids
}

/// The console, served from this process on the test's namespace.
pub struct TestConsole {
    pub base: String,
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl TestConsole {
    pub async fn start(app: &TestApp, extra: &[(&str, &str)]) -> Self {
        let operators = format!("viewer:{VIEWER_TOKEN}:readonly");
        let mut pairs = vec![
            ("CONSOLE_TOKEN", ADMIN_TOKEN),
            ("CONSOLE_OPERATORS", operators.as_str()),
            ("REDIS_URL", app.redis_url.as_str()),
            ("REDIS_NAMESPACE", app.namespace.as_str()),
            ("CONSOLE_REPLAY_RATE", "100000"),
        ];
        pairs.extend_from_slice(extra);
        let env = jobs::settings::Env::from_pairs(&pairs);
        let config = dlq_console::Config::from_env(&env).unwrap();
        let state = dlq_console::AppState::new(config, jobs::sms_templates::SmsTemplates::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, dlq_console::router(state)).await.unwrap();
        });
        Self {
            base,
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            server,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.base)).bearer_auth(token).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.http.post(format!("{}{path}", self.base)).bearer_auth(token).json(body).send().await.unwrap()
    }
}

impl Drop for TestConsole {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn all_ids(console: &TestConsole, query: &str) -> (Vec<String>, u64) {
    let (mut ids, mut cursor, mut total) = (Vec::new(), None::<String>, 0);
    loop {
        let q = cursor.as_ref().map_or_else(|| query.to_owned(), |c| format!("{query}&cursor={c}"));
        let page: Value = console.get(&format!("/api/dead?{q}"), ADMIN_TOKEN).await.json().await.unwrap();
        total = page["total"].as_u64().unwrap_or(total);
        ids.extend(page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (ids, total),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lists_searches_shows_replays_and_purges_dead_letters() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let hook = json!({"url": "https://hooks.example.org/orders", "event": "order.created", "data": {"api_token": "tok_live_secret"}});
    let bad = make_dead(&app, Kind::Webhook, &hook, 30, "permanent", "HTTP 400 bad request").await;
    let gone = make_dead(&app, Kind::Webhook, &hook, 5, "exhausted", "HTTP 410 gone").await;
    let otp = json!({"to": "+14155550100", "code": "493817", "ttl_seconds": 300});
    let expired = make_dead(&app, Kind::OtpSms, &otp, 3, "expired", "not delivered within its ttl of 300 s").await;

    // Lists, filters, pages: every letter once, newest first across kinds.
    let (ids, total) = all_ids(&console, "limit=7").await;
    assert_eq!((ids.len(), total), (38, 38));
    assert_eq!(ids.iter().collect::<std::collections::BTreeSet<_>>().len(), 38, "no letter twice across pages");
    assert_eq!(all_ids(&console, "kind=webhook&limit=1000").await.1, 35);
    let (found, total) = all_ids(&console, "q=410&limit=2").await;
    assert_eq!((total, found.len()), (5, 5));
    assert_eq!(found.iter().collect::<std::collections::BTreeSet<_>>(), gone.iter().collect());
    assert_eq!(all_ids(&console, "reason=expired").await.1, 3);
    // The redacted payload is searched, never the secret in it.
    assert_eq!(all_ids(&console, "q=tok_live").await.1, 0);
    assert_eq!(all_ids(&console, "q=493817").await.1, 0, "an OTP code is not searchable");
    let problem: Value = console.get("/api/dead?kind=fax&limit=0", ADMIN_TOKEN).await.json().await.unwrap();
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["kind", "limit"]);

    // One letter in full: secrets and the code redacted, every attempt.
    let letter: Value = console.get(&format!("/api/dead/{}", expired[0]), ADMIN_TOKEN).await.json().await.unwrap();
    assert_eq!(letter["payload"]["code"], "[redacted]");
    assert_eq!(letter["history"].as_array().unwrap().len(), 1);
    assert!(!letter.to_string().contains("493817"));
    let hook_letter: Value = console.get(&format!("/api/dead/{}", bad[0]), ADMIN_TOKEN).await.json().await.unwrap();
    assert_eq!(hook_letter["payload"]["data"]["api_token"], "[redacted]");

    // An expired OTP is not replayed; a bad edit is refused by the producer API's rules.
    let response = console.post(&format!("/api/dead/{}/replay", expired[0]), ADMIN_TOKEN, &json!({})).await;
    assert_eq!(response.status(), 409);
    let edit = json!({"payload": {"url": "ftp://nope", "event": "order.created"}});
    let response = console.post(&format!("/api/dead/{}/replay", bad[0]), ADMIN_TOKEN, &edit).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "/payload/url");
    // A good edit: same id, attempts reset, payload replaced, history kept, action noted.
    let edit = json!({"payload": {"url": "https://hooks.example.org/v2/orders", "event": "order.created"}});
    let response = console.post(&format!("/api/dead/{}/replay", bad[0]), ADMIN_TOKEN, &edit).await;
    assert_eq!(response.status(), 202);
    let job = app.job_fields("webhook", &bad[0]).await;
    assert_eq!((job["status"].as_str(), job["attempts"].as_str()), ("queued", "0"));
    assert!(job["payload"].contains("/v2/orders"));
    assert!(job["notes"].contains("edited and replayed by admin"), "{}", job["notes"]);
    assert!(app.ready("webhook").await.contains(&bad[0]));

    // A read-only operator sees but cannot act; no token, no API.
    assert_eq!(console.get("/api/dead", VIEWER_TOKEN).await.status(), 200);
    assert_eq!(console.post(&format!("/api/dead/{}/replay", bad[1]), VIEWER_TOKEN, &json!({})).await.status(), 403);
    assert_eq!(console.http.get(format!("{}/api/dead", console.base)).send().await.unwrap().status(), 401);

    // Bulk: replay everything matching a search, delete one, purge the rest of a kind.
    let report: Value =
        console.post("/api/dead/replay", ADMIN_TOKEN, &json!({"filter": {"q": "410"}})).await.json().await.unwrap();
    assert_eq!(report["replayed"], 5);
    let response = console
        .http
        .delete(format!("{}/api/dead/{}", console.base, bad[2]))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let purged: Value = console
        .post("/api/dead/purge", ADMIN_TOKEN, &json!({"filter": {"kind": "webhook"}}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(purged["deleted"], 28);
    assert_eq!(all_ids(&console, "").await.1, 3, "only the expired OTPs are left");
    assert!(app.job_fields("webhook", &bad[3]).await.is_empty(), "a purged letter is gone");

    // Queues and schedules; every action is in the audit log.
    let queues: Value = console.get("/api/queues", ADMIN_TOKEN).await.json().await.unwrap();
    let webhook = queues["queues"].as_array().unwrap().iter().find(|q| q["kind"] == "webhook").unwrap().clone();
    assert_eq!((webhook["queued"].as_u64(), webhook["dead"].as_u64()), (Some(6), Some(0)));
    assert_eq!(console.get("/api/schedules", ADMIN_TOKEN).await.status(), 200);
    let audit: Vec<String> = app.ready("audit_log").await;
    let mut actions = Vec::new();
    for id in &audit {
        let payload: Value = serde_json::from_str(&app.job_fields("audit_log", id).await["payload"]).unwrap();
        actions.push((payload["actor"].as_str().unwrap().to_owned(), payload["action"].as_str().unwrap().to_owned()));
    }
    actions.sort();
    let expected: Vec<(String, String)> = [
        "dead_letter.delete",
        "dead_letter.edit_and_replay",
        "dead_letter.purge",
        "dead_letter.replay_many",
        "dead_letter.replay_many.started",
    ]
    .iter()
    .map(|a| ("console:admin".to_owned(), (*a).to_owned()))
    .collect();
    assert_eq!(actions, expected);
}

pub fn cli(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(binary("dlq-console"))
        .env_clear()
        .env("REDIS_URL", &app.redis_url)
        .env("REDIS_NAMESPACE", &app.namespace)
        .env("CONSOLE_REPLAY_RATE", "100000")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_shows_replays_and_purges() {
    let app = TestApp::spawn().await;
    let hook = json!({"url": "https://hooks.example.org/orders", "event": "order.created"});
    let bad = make_dead(&app, Kind::Webhook, &hook, 12, "permanent", "HTTP 400 bad request").await;
    let gone = make_dead(&app, Kind::Webhook, &hook, 4, "exhausted", "HTTP 503 unavailable").await;

    let (code, out, err) = cli(&app, &["list", "--json", "--limit", "5"]);
    assert_eq!(code, 0, "{err}");
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((page["total"].as_u64(), page["items"].as_array().unwrap().len()), (Some(16), 5));
    let (code, out, _) = cli(&app, &["list", "--q", "503"]);
    assert_eq!(code, 0);
    assert!(out.contains("4 shown of 4 matching"), "{out}");
    assert!(out.contains(&gone[0]));
    let (code, out, _) = cli(&app, &["show", &bad[0], "--json"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["reason"], "permanent");

    // Dry runs count and change nothing.
    let (_, out, _) = cli(&app, &["replay", "--all", "--reason", "exhausted", "--dry-run", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["would_replay"], 4);
    let (_, out, _) = cli(&app, &["purge", "--reason", "permanent", "--dry-run", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["would_delete"], 12);
    assert_eq!(app.depths("webhook").await.3, 16);

    let (code, out, err) = cli(&app, &["replay", "--all", "--reason", "exhausted", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["replayed"], 4);
    let (code, out, err) = cli(
        &app,
        &["edit", &bad[0], "--payload", r#"{"url":"https://hooks.example.org/fixed","event":"order.created"}"#],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed"));
    let (code, _, err) = cli(&app, &["edit", &bad[1], "--payload", r#"{"url":"nope","event":"order.created"}"#]);
    assert_eq!(code, 1);
    assert!(err.contains("/payload/url"), "{err}");
    let (code, _, _) = cli(&app, &["delete", &bad[1]]);
    assert_eq!(code, 0);
    let (code, out, _) = cli(&app, &["purge", "--kind", "webhook", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["deleted"], 10);
    let (code, out, _) = cli(&app, &["stats", "--json"]);
    assert_eq!(code, 0);
    let stats: Value = serde_json::from_str(&out).unwrap();
    let webhook = stats["queues"].as_array().unwrap().iter().find(|q| q["kind"] == "webhook").unwrap().clone();
    assert_eq!((webhook["queued"].as_u64(), webhook["dead"].as_u64()), (Some(5), Some(0)));
    let (code, _, err) = cli(&app, &["replay"]);
    assert_eq!(code, 1);
    assert!(err.contains("give ids, or --all"), "{err}");
}
