//! SES feedback through SNS, end to end: the producer API's `POST /v1/callbacks/ses` against
//! SNS messages this test signs with a certificate it makes itself (`openssl`), served from a
//! local certificate host (the API's `SES_SNS_URL_PATTERN` pointed at it); the worker binary
//! against moto's SES. A hard bounce or a complaint suppresses the address, so the next email
//! to it ends `dead` with reason `suppressed` and moto never sees it; a delivery sets the job's
//! `delivery`; forged messages are refused; the console lists, searches and removes entries.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use serde_json::{Value, json};

use crate::console::{ADMIN_TOKEN, TestConsole, VIEWER_TOKEN};
use crate::emulators::{Moto, ses_worker_env};
use crate::support::{SHOP_KEY, TestApp, WorkerProcess, redis_url};

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:jobplane-ses";

/// A signing key and its self-signed certificate, served over HTTP on loopback with a
/// confirmation endpoint that counts its calls.
struct SnsLab {
    dir: PathBuf,
    base: String,
    confirmations: Arc<Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl SnsLab {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("jobplane-sns-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sns.test"])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stderr(Stdio::null())
            .status()
            .expect("openssl is needed to make the test's SNS certificate");
        assert!(made.success());
        let cert = std::fs::read(dir.join("cert.pem")).unwrap();
        let confirmations = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/SimpleNotificationService-test.pem", get(move || async move { cert }))
            .route("/big.pem", get(|| async { vec![b'A'; 20 * 1024] }))
            .route(
                "/confirm",
                get(|State(seen): State<Arc<Mutex<Vec<String>>>>, uri: axum::http::Uri| async move {
                    seen.lock().unwrap().push(uri.query().unwrap_or_default().to_owned());
                    "<ConfirmSubscriptionResponse/>"
                }),
            )
            .with_state(confirmations.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { dir, base, confirmations, server }
    }

    /// The pattern the API is given: this host only.
    fn pattern(&self) -> String {
        format!("^{}/", self.base.replace('.', r"\."))
    }

    fn cert_url(&self) -> String {
        format!("{}/SimpleNotificationService-test.pem", self.base)
    }

    /// `text` signed with the lab's key: base64 of RSA PKCS#1 v1.5 over SHA-1 (`1`) or SHA-256 (`2`).
    fn sign(&self, text: &str, version: &str) -> String {
        let digest = if version == "2" { "-sha256" } else { "-sha1" };
        let mut child = Command::new("openssl")
            .args(["dgst", digest, "-sign"])
            .arg(self.dir.join("key.pem"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        base64::engine::general_purpose::STANDARD.encode(out.stdout)
    }

    /// A signed notification carrying `message` (an SES event).
    fn notification(&self, message_id: &str, message: &Value, version: &str) -> Value {
        self.notification_at(message_id, message, version, &now())
    }

    /// A signed notification sent by SNS at `timestamp`.
    fn notification_at(&self, message_id: &str, message: &Value, version: &str, timestamp: &str) -> Value {
        let message = message.to_string();
        let text = format!(
            "Message\n{message}\nMessageId\n{message_id}\nTimestamp\n{timestamp}\nTopicArn\n{TOPIC}\nType\nNotification\n"
        );
        json!({"Type": "Notification", "MessageId": message_id, "TopicArn": TOPIC, "Message": message,
               "Timestamp": timestamp, "SignatureVersion": version, "Signature": self.sign(&text, version),
               "SigningCertURL": self.cert_url(), "UnsubscribeURL": format!("{}/unsubscribe", self.base)})
    }

    fn confirmation(&self, subscribe_url: &str) -> Value {
        let (message, token, timestamp) = ("You have chosen to subscribe", "tok-123", now());
        let text = format!(
            "Message\n{message}\nMessageId\nsub-1\nSubscribeURL\n{subscribe_url}\nTimestamp\n{timestamp}\nToken\n{token}\nTopicArn\n{TOPIC}\nType\nSubscriptionConfirmation\n"
        );
        json!({"Type": "SubscriptionConfirmation", "MessageId": "sub-1", "Token": token, "TopicArn": TOPIC,
               "Message": message, "SubscribeURL": subscribe_url, "Timestamp": timestamp,
               "SignatureVersion": "1", "Signature": self.sign(&text, "1"), "SigningCertURL": self.cert_url()})
    }
}

impl Drop for SnsLab {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Now, as SNS writes its `Timestamp`.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn bounce(job_id: &str, address: &str, kind: &str) -> Value {
    json!({"eventType": "Bounce", "mail": {"messageId": "m", "tags": {"jobplane_job_id": [job_id]}},
           "bounce": {"bounceType": kind, "bounceSubType": "General", "timestamp": "2026-11-28T01:00:00.000Z",
                      "bouncedRecipients": [{"emailAddress": address, "status": "5.1.1",
                                             "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}})
}

fn complaint(job_id: &str, address: &str) -> Value {
    json!({"notificationType": "Complaint", "mail": {"tags": {"jobplane_job_id": [job_id]}},
           "complaint": {"complainedRecipients": [{"emailAddress": address}], "complaintFeedbackType": "abuse",
                         "timestamp": "2026-11-28T01:00:02.000Z"}})
}

fn delivered(job_id: &str) -> Value {
    json!({"eventType": "Delivery", "mail": {"tags": {"jobplane_job_id": [job_id]}},
           "delivery": {"timestamp": "2026-11-28T01:00:01.000Z", "smtpResponse": "250 2.0.0 OK"}})
}

/// The API with the lab's certificate host and, unless `extra` says otherwise, the lab's topic
/// allowed (`SES_SNS_TOPIC_ARNS`).
async fn app_for(lab: &SnsLab, extra: &[(&str, &str)]) -> TestApp {
    let pattern = lab.pattern();
    let mut pairs = vec![("SES_SNS_URL_PATTERN", pattern.as_str())];
    if !extra.iter().any(|(k, _)| *k == "SES_SNS_TOPIC_ARNS") {
        pairs.push(("SES_SNS_TOPIC_ARNS", TOPIC));
    }
    pairs.extend_from_slice(extra);
    TestApp::spawn_with(&redis_url(), &pairs).await
}

fn ses_worker(app: &TestApp, moto: &Moto) -> WorkerProcess {
    let env = ses_worker_env(&moto.url());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    WorkerProcess::start(&app.redis_url, &app.namespace, &env)
}

async fn post_sns(app: &TestApp, body: &Value) -> reqwest::StatusCode {
    app.http
        .post(app.url("/v1/callbacks/ses"))
        .header("x-amz-sns-message-type", body["Type"].as_str().unwrap_or_default())
        .header("content-type", "text/plain; charset=UTF-8")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
}

async fn email(app: &TestApp, to: &str) -> String {
    let response = app
        .post_job(
            &json!({"kind": "email", "max_attempts": 3, "payload": {"to": to, "subject": "Hi", "text": "x"}}),
            None,
        )
        .await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn finished(app: &TestApp, id: &str) -> Value {
    app.wait_status(id, &["succeeded", "dead"], Duration::from_secs(30)).await
}

async fn suppression(app: &TestApp, address: &str) -> (u16, Value) {
    let response =
        app.http.get(app.url(&format!("/v1/suppressions/{address}"))).bearer_auth(SHOP_KEY).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_hard_bounce_suppresses_the_address_and_the_next_email_is_never_sent() {
    let lab = SnsLab::start().await;
    let moto = Moto::start().await;
    moto.verify_sender("sender@example.org").await;
    let app = app_for(&lab, &[]).await;
    let _worker = ses_worker(&app, &moto);

    let first = email(&app, "gone@example.org").await;
    assert_eq!(finished(&app, &first).await["status"], "succeeded");
    assert_eq!(moto.sent().await.len(), 1);

    // A soft bounce is reported on the job but suppresses nothing.
    let soft = lab.notification("msg-soft", &bounce(&first, "gone@example.org", "Transient"), "1");
    assert_eq!(post_sns(&app, &soft).await, 204);
    assert_eq!(suppression(&app, "gone@example.org").await.0, 404);

    let hard = lab.notification("msg-bounce", &bounce(&first, "Gone@Example.org", "Permanent"), "1");
    assert_eq!(post_sns(&app, &hard).await, 204);
    let job: Value = app.get_job(&first, SHOP_KEY).await.json().await.unwrap();
    assert_eq!(job["delivery"]["status"], "bounced", "{job}");
    assert_eq!(job["delivery"]["at"], "2026-11-28T01:00:00Z");
    let (status, entry) = suppression(&app, "GONE@example.org").await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["address"], "gone@example.org");
    assert_eq!(entry["reason"], "bounce");
    assert!(entry["detail"].as_str().unwrap().contains("5.1.1"), "{entry}");
    assert!(entry.get("job_id").is_none(), "a producer never sees whose job it was");
    // SNS resends: the same message again changes nothing and is still accepted.
    assert_eq!(post_sns(&app, &hard).await, 204);

    let next = email(&app, "Gone <gone@example.org>").await;
    let job = finished(&app, &next).await;
    assert_eq!(job["status"], "dead", "{job}");
    assert_eq!(job["attempts"], 1);
    assert!(
        job["last_error"].as_str().unwrap().starts_with("gone@example.org is on the suppression list (bounce"),
        "{job}"
    );
    assert_eq!(app.job_fields("email", &next).await["reason"], "suppressed");
    assert_eq!(moto.sent().await.len(), 1, "SES was not called for the suppressed address");
}

#[tokio::test]
async fn a_complaint_suppresses_and_a_delivery_is_recorded() {
    let lab = SnsLab::start().await;
    let moto = Moto::start().await;
    moto.verify_sender("sender@example.org").await;
    let app = app_for(&lab, &[("SES_SNS_TOPIC_ARNS", TOPIC)]).await;
    let _worker = ses_worker(&app, &moto);

    let ok = email(&app, "reader@example.org").await;
    let annoyed = email(&app, "annoyed@example.org").await;
    for id in [&ok, &annoyed] {
        assert_eq!(finished(&app, id).await["status"], "succeeded");
    }
    // Signature version 2 (SHA-256) for this one.
    assert_eq!(post_sns(&app, &lab.notification("msg-dlv", &delivered(&ok), "2")).await, 204);
    let job: Value = app.get_job(&ok, SHOP_KEY).await.json().await.unwrap();
    assert_eq!(job["delivery"]["status"], "delivered", "{job}");
    assert_eq!(suppression(&app, "reader@example.org").await.0, 404);

    assert_eq!(
        post_sns(&app, &lab.notification("msg-cpl", &complaint(&annoyed, "annoyed@example.org"), "1")).await,
        204
    );
    let job: Value = app.get_job(&annoyed, SHOP_KEY).await.json().await.unwrap();
    assert_eq!(job["delivery"]["status"], "complained", "{job}");
    assert_eq!(suppression(&app, "annoyed@example.org").await.1["reason"], "complaint");

    // cc counts as much as to.
    let response = app
        .post_job(
            &json!({"kind": "email", "payload": {"to": "reader@example.org", "cc": "annoyed@example.org", "subject": "Hi", "text": "x"}}),
            None,
        )
        .await;
    let next = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(finished(&app, &next).await["status"], "dead");
    assert_eq!(app.job_fields("email", &next).await["reason"], "suppressed");
    assert_eq!(moto.sent().await.len(), 2);

    // An event for a job that does not exist is accepted the same way: nothing leaks.
    let unknown = lab.notification("msg-unknown", &delivered("019ac0de-0000-7000-8000-000000000000"), "1");
    assert_eq!(post_sns(&app, &unknown).await, 204);
}

#[tokio::test]
async fn forged_or_oversized_messages_are_refused() {
    let lab = SnsLab::start().await;
    let app = app_for(&lab, &[("SES_SNS_TOPIC_ARNS", TOPIC)]).await;
    let event = bounce("019ac0de-0000-7000-8000-000000000001", "victim@example.org", "Permanent");

    let mut tampered = lab.notification("f-1", &event, "1");
    tampered["Message"] =
        json!(bounce("019ac0de-0000-7000-8000-000000000001", "other@example.org", "Permanent").to_string());
    assert_eq!(post_sns(&app, &tampered).await, 403);

    let mut off_host = lab.notification("f-2", &event, "1");
    off_host["SigningCertURL"] = json!("https://evil.example/SimpleNotificationService-test.pem");
    assert_eq!(post_sns(&app, &off_host).await, 403);

    let mut not_pem = lab.notification("f-3", &event, "1");
    not_pem["SigningCertURL"] = json!(format!("{}/big.pem", lab.base));
    assert_eq!(post_sns(&app, &not_pem).await, 403, "a certificate over the size bound is refused");

    let mut version = lab.notification("f-4", &event, "1");
    version["SignatureVersion"] = json!("3");
    assert_eq!(post_sns(&app, &version).await, 403);

    let mut other_topic = lab.notification("f-5", &event, "1");
    other_topic["TopicArn"] = json!("arn:aws:sns:us-east-1:999999999999:other");
    assert_eq!(post_sns(&app, &other_topic).await, 403);

    // Signed, but sent by SNS a day ago: a replay, past the window in which resends are told apart.
    let old = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(post_sns(&app, &lab.notification_at("f-6", &event, "1", &old)).await, 403);

    assert_eq!(post_sns(&app, &json!({"hello": "world"})).await, 403);
    let huge = json!({"Type": "Notification", "Message": "x".repeat(300 * 1024)});
    assert_eq!(post_sns(&app, &huge).await, 413);

    assert_eq!(suppression(&app, "victim@example.org").await.0, 404, "nothing forged was applied");
    assert_eq!(suppression(&app, "other@example.org").await.0, 404);
}

/// Anyone can make an SNS topic, subscribe this endpoint to it and publish "SES events" that
/// SNS signs with its own certificate: without an allow-list every message is refused, the
/// subscription too.
#[tokio::test]
async fn without_an_allowed_topic_nothing_signed_by_sns_is_taken() {
    let lab = SnsLab::start().await;
    let app = app_for(&lab, &[("SES_SNS_TOPIC_ARNS", "")]).await;
    let event = bounce("019ac0de-0000-7000-8000-000000000002", "victim@example.org", "Permanent");
    assert_eq!(post_sns(&app, &lab.notification("t-1", &event, "1")).await, 403);
    let confirm = lab.confirmation(&format!("{}/confirm?Action=ConfirmSubscription&Token=tok-123", lab.base));
    assert_eq!(post_sns(&app, &confirm).await, 403);
    assert!(lab.confirmations.lock().unwrap().is_empty(), "no subscription confirmed");
    assert_eq!(suppression(&app, "victim@example.org").await.0, 404);
}

#[tokio::test]
async fn a_subscription_is_confirmed_only_on_the_pinned_host() {
    let lab = SnsLab::start().await;
    let app = app_for(&lab, &[]).await;

    let good = lab.confirmation(&format!("{}/confirm?Action=ConfirmSubscription&Token=tok-123", lab.base));
    assert_eq!(post_sns(&app, &good).await, 204);
    assert_eq!(*lab.confirmations.lock().unwrap(), ["Action=ConfirmSubscription&Token=tok-123"]);

    let elsewhere = lab.confirmation("http://192.0.2.1/confirm?Action=ConfirmSubscription");
    assert_eq!(post_sns(&app, &elsewhere).await, 403);
    assert_eq!(lab.confirmations.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn operators_search_and_remove_entries_and_the_address_is_mailed_again() {
    let lab = SnsLab::start().await;
    let moto = Moto::start().await;
    moto.verify_sender("sender@example.org").await;
    let app = app_for(&lab, &[]).await;
    let console = TestConsole::start(&app, &[]).await;
    let _worker = ses_worker(&app, &moto);

    let first = email(&app, "back@example.org").await;
    assert_eq!(finished(&app, &first).await["status"], "succeeded");
    assert_eq!(
        post_sns(&app, &lab.notification("b-1", &bounce(&first, "back@example.org", "Permanent"), "1")).await,
        204
    );
    let added = console
        .post("/api/suppressions", ADMIN_TOKEN, &json!({"address": "Manual@Example.net", "detail": "asked"}))
        .await;
    assert_eq!(added.status(), 201);

    let page: Value = console.get("/api/suppressions?q=EXAMPLE.ORG", VIEWER_TOKEN).await.json().await.unwrap();
    assert_eq!(page["total"], 2);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["address"], "back@example.org");
    assert_eq!(items[0]["reason"], "bounce");
    assert_eq!(items[0]["job_id"], first.as_str(), "operators see the job");
    let all: Value = console.get("/api/suppressions", ADMIN_TOKEN).await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    assert_eq!(console.get("/api/suppressions?limit=0", ADMIN_TOKEN).await.status(), 422);

    let url = format!("{}/api/suppressions/back@example.org", console.base);
    let refused = console.http.delete(&url).bearer_auth(VIEWER_TOKEN).send().await.unwrap();
    assert_eq!(refused.status(), 403, "read-only operators may not remove");
    let removed = console.http.delete(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(removed.status(), 200);
    assert_eq!(console.http.delete(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap().status(), 404);
    assert_eq!(suppression(&app, "back@example.org").await.0, 404);
    // SNS resending the bounce does not bring the entry back: a message id is applied once.
    assert_eq!(
        post_sns(&app, &lab.notification("b-1", &bounce(&first, "back@example.org", "Permanent"), "1")).await,
        204
    );
    assert_eq!(suppression(&app, "back@example.org").await.0, 404);

    let again = email(&app, "back@example.org").await;
    assert_eq!(finished(&app, &again).await["status"], "succeeded");
    assert_eq!(moto.sent().await.len(), 2);
    let manual = email(&app, "manual@example.net").await;
    assert_eq!(finished(&app, &manual).await["status"], "dead");
    assert_eq!(moto.sent().await.len(), 2);
    let dead: Value = console.get("/api/dead?kind=email&reason=suppressed", ADMIN_TOKEN).await.json().await.unwrap();
    assert_eq!(dead["items"].as_array().unwrap().len(), 1, "{dead}");
    assert_eq!(dead["items"][0]["id"], manual.as_str());
    assert_eq!(dead["items"][0]["reason"], "suppressed");
}

/// The worker sends with `SES_CONFIGURATION_SET` and the job's tag: what the events come back with.
#[tokio::test]
async fn messages_carry_the_configuration_set_and_the_job_tag() {
    use crate::receiver::{Receiver, Reply};
    let receiver = Receiver::start(&[], Reply::with_body(200, r#"{"MessageId":"cs-0001"}"#)).await;
    let app = TestApp::spawn().await;
    let mut env = ses_worker_env(&format!("http://{}", receiver.addr));
    env.push(("SES_CONFIGURATION_SET", "jobplane-events".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &env);
    let id = email(&app, "ada@example.org").await;
    assert_eq!(finished(&app, &id).await["status"], "succeeded");
    let sent: Value = serde_json::from_slice(&receiver.deliveries()[0].body).unwrap();
    assert_eq!(sent["ConfigurationSetName"], "jobplane-events");
    assert_eq!(sent["EmailTags"], json!([{"Name": "jobplane_job_id", "Value": id}]));
}

/// The console's page and CLI over the same list, and the API's routes in its OpenAPI document.
#[tokio::test]
async fn the_page_the_cli_and_the_openapi_document() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let (code, out, err) = crate::pause::cli(&app, &["suppress", "Page@Example.org", "--detail", "by hand"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "page@example.org: suppressed (manual)");
    let (code, out, _) = crate::pause::cli(&app, &["suppressions", "--q", "page@", "--json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["items"][0]["address"], "page@example.org");
    assert_eq!(listed["items"][0]["detail"], "by hand");
    assert_eq!(suppression(&app, "page@example.org").await.1["reason"], "manual");

    let login = console.http.post(format!("{}/login", console.base)).form(&[("token", ADMIN_TOKEN)]).send().await;
    let cookie = login.unwrap().headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let html = console
        .http
        .get(format!("{}/suppressions?q=PAGE", console.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("page@example.org") && html.contains("by hand"), "{html}");
    assert!(
        html.contains("action=\"/suppressions/page%40example.org/delete\""),
        "the form names the address encoded: {html}"
    );
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let remove = |csrf: String| {
        console
            .http
            .post(format!("{}/suppressions/page%40example.org/delete", console.base))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf)])
            .send()
    };
    assert_eq!(remove("forged".into()).await.unwrap().status(), 403, "CSRF check");
    assert_eq!(suppression(&app, "page@example.org").await.0, 200);
    assert!(remove(csrf).await.unwrap().status().is_success());
    assert_eq!(suppression(&app, "page@example.org").await.0, 404);
    let (code, _, err) = crate::pause::cli(&app, &["unsuppress", "page@example.org"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not on the suppression list"), "{err}");

    let doc: Value = app.http.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["paths"]["/v1/suppressions/{address}"]["get"]["responses"].get("404").is_some());
    assert!(doc["paths"]["/v1/callbacks/ses"]["post"]["responses"].get("403").is_some());
    let unauthorized = app.http.get(app.url("/v1/suppressions/page@example.org")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
}
