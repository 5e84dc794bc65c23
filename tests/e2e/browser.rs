//! The console's pages in a real browser: headless Chromium from Debian, driven through
//! ChromeDriver's W3C WebDriver protocol (plain HTTP, so no client library is needed). An
//! operator logs in, finds a dead job by searching its payload, replays it, and it succeeds.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::console::{ADMIN_TOKEN, TestConsole};
use crate::receiver::{Receiver, Reply};
use crate::support::{SHOP_KEY, TestApp, WorkerProcess, free_port};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    profile: std::path::PathBuf,
}

impl Driver {
    async fn start() -> Self {
        let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("chromedriver is not installed: scripts/test installs Debian's chromium and chromium-driver");
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !http.get(format!("{base}/status")).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(format!("jobplane-chromium-{}", uuid::Uuid::now_v7().simple()));
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}}});
        let created: Value =
            http.post(format!("{base}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let session =
            created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_owned();
        Self { child, base, session, http, profile }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(reply["value"].get("error").is_none(), "webdriver {path}: {reply}");
        reply["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    async fn find(&self, css: &str) -> String {
        let found =
            self.call(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{element}/value"), Some(json!({"text": text}))).await;
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{element}/click"), Some(json!({}))).await;
    }

    async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{element}/text"), None).await.as_str().unwrap().to_owned()
    }

    /// Waits (at most 10 s) until the element at `css` exists and its text satisfies `ok`, as a
    /// click that submits a form returns before the next page has loaded.
    async fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = format!("{}/session/{}/element", self.base, self.session);
            let found: Value = self
                .http
                .post(url)
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(element) = found["value"][ELEMENT].as_str() {
                let url = format!("{}/session/{}/element/{element}/text", self.base, self.session);
                let text: Value = self.http.get(url).send().await.unwrap().json().await.unwrap();
                if let Some(text) = text["value"].as_str()
                    && ok(text)
                {
                    return text.to_owned();
                }
            }
            assert!(Instant::now() < deadline, "{css} never showed the expected text");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None).await.as_str().unwrap().to_owned()
    }

    async fn cookie(&self, name: &str) -> Value {
        self.call(reqwest::Method::GET, &format!("/cookie/{name}"), None).await
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_a_dead_job_by_its_payload_and_replays_it_in_a_browser() {
    let app = TestApp::spawn().await;
    // The receiver refuses the first delivery for good (400), then accepts.
    let receiver = Receiver::start(&[Reply::status(400)], Reply::OK).await;
    let worker = WorkerProcess::start(&app.redis_url, &app.namespace, &[]);
    let needle = format!("order-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let body = json!({"kind": "webhook", "payload": {"url": receiver.url(), "event": "order.created", "data": {"order": needle}}});
    let response = app.post_job(&body, None).await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let job = app.wait_status(&id, &["dead"], Duration::from_secs(15)).await;
    assert_eq!(job["status"], "dead", "{job}");
    // Other dead letters around it, so the search has something to leave out.
    let other = json!({"url": "https://hooks.example.org/x", "event": "order.created", "data": {"order": "another"}});
    // They are made by leasing them straight from the queue: no worker may take them first (an
    // idle worker is woken by their enqueue), so it stops meanwhile and another runs the replay.
    drop(worker);
    crate::console::make_dead(&app, jobs::Kind::Webhook, &other, 20, "permanent", "HTTP 400").await;
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &[]);

    let console = TestConsole::start(&app, &[]).await;
    let browser = Driver::start().await;
    // Pages need a session: the browser lands on the login form.
    browser.go(&format!("{}/dead", console.base)).await;
    assert!(browser.current_url().await.ends_with("/login"));
    browser.type_into("input[name=token]", ADMIN_TOKEN).await;
    browser.click("button[type=submit]").await;
    browser.wait_text("h1", |t| t == "Overview").await;
    let cookie = browser.cookie("jp_session").await;
    assert_eq!((cookie["httpOnly"].as_bool(), cookie["sameSite"].as_str()), (Some(true), Some("Strict")));

    browser.go(&format!("{}/dead", console.base)).await;
    assert_eq!(browser.text("#total").await, "21");
    browser.type_into("input[name=q]", &needle).await;
    browser.click("form.filters button[type=submit]").await;
    browser.wait_text("#total", |t| t == "1").await;
    browser.click("table#letters td a").await;
    browser.wait_text("#payload", |t| t.contains(&needle)).await;
    browser.click("#replay").await;
    browser.wait_text("#done", |t| t.contains("queued again")).await;

    let job = app.wait_status(&id, &["succeeded"], Duration::from_secs(15)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0].webhook_id(), deliveries[1].webhook_id(), "the replay keeps the job id");

    // The session cookie alone does not make a form: a post without its CSRF token is refused.
    let forged = console
        .http
        .post(format!("{}/dead/{}/delete", console.base, id))
        .header("cookie", format!("jp_session={}", cookie["value"].as_str().unwrap()))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let _ = browser.call(reqwest::Method::DELETE, "", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pauses_a_kind_cancels_a_waiting_job_and_resumes_in_a_browser() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[], Reply::OK).await;
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &[]);
    let console = TestConsole::start(&app, &[]).await;
    let browser = Driver::start().await;
    browser.go(&format!("{}/login", console.base)).await;
    browser.type_into("input[name=token]", ADMIN_TOKEN).await;
    browser.click("button[type=submit]").await;
    browser.wait_text("h1", |t| t == "Overview").await;

    // Pause webhooks from the overview: jobs are still accepted, none starts.
    browser.click("#pause-webhook").await;
    browser.wait_text("#resume-webhook", |t| t == "Resume").await;
    let queues: Value = console.get("/api/queues", ADMIN_TOKEN).await.json().await.unwrap();
    let webhook = queues["queues"]
        .as_array()
        .unwrap_or_else(|| panic!("{queues}"))
        .iter()
        .find(|q| q["kind"] == "webhook")
        .unwrap();
    assert_eq!(webhook["paused"], true, "{webhook}");
    let mut ids = Vec::new();
    for order in ["keep", "drop"] {
        let body = json!({"kind": "webhook", "payload": {"url": receiver.url(), "event": "order.created", "data": {"order": order}}});
        let response = app.post_job(&body, None).await;
        assert_eq!(response.status(), 202, "a paused kind still accepts jobs");
        ids.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(receiver.deliveries().is_empty(), "no job of a paused kind starts");

    // The queued tab lists both; the second one is cancelled from its page.
    browser.go(&format!("{}/jobs?kind=webhook&state=queued", console.base)).await;
    browser.wait_text("table", |t| t.contains(&ids[0]) && t.contains(&ids[1])).await;
    browser.go(&format!("{}/jobs/{}", console.base, ids[1])).await;
    browser.click("button.cancel").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let url = format!("{}/session/{}/alert/accept", browser.base, browser.session);
        let accepted = browser.http.post(url).json(&json!({})).send().await.unwrap();
        if accepted.status().is_success() {
            break;
        }
        assert!(Instant::now() < deadline, "the cancel button asks for a confirmation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.wait_text("#done", |t| t.contains("cancelled")).await;

    // Resume from the overview: the job left waiting runs, the cancelled one never does.
    browser.go(&format!("{}/", console.base)).await;
    browser.click("#resume-webhook").await;
    browser.wait_text("#pause-webhook", |t| t == "Pause").await;
    let kept = app.wait_status(&ids[0], &["succeeded"], Duration::from_secs(15)).await;
    assert_eq!(kept["status"], "succeeded", "{kept}");
    let dropped: Value = app.get_job(&ids[1], SHOP_KEY).await.json().await.unwrap();
    assert_eq!(dropped["status"], "cancelled", "{dropped}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered: Vec<String> = receiver.deliveries().iter().map(crate::receiver::Delivery::webhook_id).collect();
    assert_eq!(delivered, vec![ids[0].clone()], "only the job left waiting was delivered");
    let _ = browser.call(reqwest::Method::DELETE, "", None).await;
}
