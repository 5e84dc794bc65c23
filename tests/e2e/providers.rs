//! SMS providers end to end, with what they report back: the worker sending through a local
//! fake Mitake gateway that speaks Mitake's documented wire format (`SmSend`, form fields,
//! `key=value` answers, a `clientid` it refuses to send twice, delivery reports called on the
//! `response` URL) and through a fake Twilio API, and producer-api taking their reports
//! (`/v1/callbacks/mitake`, `/v1/callbacks/twilio`) onto the job and `sms_deliveries`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use serde_json::{Value, json};

use crate::receiver::{Receiver, Reply};
use crate::support::{OwnDatabase, SHOP_KEY, TestApp, WorkerProcess, redis_url};

const USERNAME: &str = "jobplane-acct";
const PASSWORD: &str = "mitake-pw-s3cret";
const SECRET: &str = "callback-secret-0123456789";
const CODE: &str = "482913";
const NUMBER: &str = "+886912345678";
const MSGID: &str = "1010079522";
const TOKEN: &str = "twilio-auth-token-for-tests";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const MESSAGE_SID: &str = "SM0123456789abcdef0123456789abcdef";
const TWO_LINES: &str = "{code} is your code\nit expires in {minutes} min";

/// One request the fake gateway got.
#[derive(Debug, Clone)]
struct Sent {
    path: String,
    query: String,
    content_type: String,
    form: HashMap<String, String>,
}

#[derive(Default)]
struct Gateway {
    requests: Vec<Sent>,
    clientids: HashSet<String>,
    /// Messages it really sent: one per new `clientid`.
    sent: usize,
    /// The first answer waits this long (a slow gateway: the worker times out and retries).
    first_delay: Duration,
    /// Answer this statuscode (and `Error`) instead of sending.
    refuse: Option<(&'static str, &'static str)>,
}

/// Mitake's HTTP API as its public clients speak it: `POST /api/mtk/SmSend?CharsetURL=UTF8`
/// with form fields, answered with `key=value` lines.
#[derive(Clone)]
struct FakeMitake {
    base: String,
    state: Arc<Mutex<Gateway>>,
}

impl FakeMitake {
    async fn start(first_delay: Duration, refuse: Option<(&'static str, &'static str)>) -> Self {
        let state = Arc::new(Mutex::new(Gateway { first_delay, refuse, ..Gateway::default() }));
        let app = Router::new().fallback(sm_send).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api/mtk", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, state }
    }

    fn requests(&self) -> Vec<Sent> {
        self.state.lock().unwrap().requests.clone()
    }

    fn sent(&self) -> usize {
        self.state.lock().unwrap().sent
    }

    /// Calls the `response` URL the worker gave, as Mitake does with a delivery report: its
    /// fields appended to the URL's query.
    async fn report(&self, http: &reqwest::Client, flag: &str, statusstr: &str, donetime: &str) -> reqwest::Response {
        let response = self.requests()[0].form["response"].clone();
        let url = format!(
            "{response}&msgid={MSGID}&dstaddr=0912345678&dlvtime=20261128110201&donetime={donetime}&statusstr={statusstr}&statuscode=0&StatusFlag={flag}"
        );
        http.get(url).send().await.unwrap()
    }
}

async fn sm_send(State(state): State<Arc<Mutex<Gateway>>>, uri: Uri, headers: HeaderMap, body: Bytes) -> String {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let (delay, answer) = {
        let mut gateway = state.lock().unwrap();
        gateway.requests.push(Sent {
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or("").to_owned(),
            content_type: headers.get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default(),
            form: form.clone(),
        });
        let delay = if gateway.requests.len() == 1 { gateway.first_delay } else { Duration::ZERO };
        let answer = if form.get("username").map(String::as_str) != Some(USERNAME)
            || form.get("password").map(String::as_str) != Some(PASSWORD)
        {
            "[1]\r\nstatuscode=e\r\nError=帳號、密碼錯誤\r\n".to_owned()
        } else if let Some((code, error)) = gateway.refuse {
            format!("[1]\r\nstatuscode={code}\r\nError={error}\r\nAccountPoint=43\r\n")
        } else if gateway.clientids.insert(form.get("clientid").cloned().unwrap_or_default()) {
            gateway.sent += 1;
            format!("[1]\r\nmsgid={MSGID}\r\nstatuscode=1\r\nAccountPoint=42\r\n")
        } else {
            format!("[1]\r\nmsgid={MSGID}\r\nstatuscode=1\r\nAccountPoint=42\r\nDuplicate=Y\r\n")
        };
        (delay, answer)
    };
    tokio::time::sleep(delay).await;
    answer
}

fn otp(template: Option<&str>) -> Value {
    let mut payload = json!({"to": NUMBER, "code": CODE, "ttl_seconds": 120});
    if let Some(template) = template {
        payload["template"] = json!(template);
    }
    json!({"kind": "otp_sms", "payload": payload})
}

async fn enqueue(app: &TestApp, body: &Value) -> String {
    let response = app.post_job(body, None).await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

fn mitake_worker(app: &TestApp, db: &OwnDatabase, base: &str) -> WorkerProcess {
    let callback_base = app.url("");
    WorkerProcess::start_captured(
        &app.redis_url,
        &app.namespace,
        &[
            ("WORKER_KINDS", "otp_sms"),
            ("RUST_LOG", "debug"),
            ("RETRY_JITTER", "none"),
            ("RETRY_BASE_MS_OTP_SMS", "200"),
            ("SMS_TIMEOUT_MS", "1000"),
            ("SMS_TEMPLATE_TWOLINES", TWO_LINES),
            ("DATABASE_URL", db.url.as_str()),
            ("SMS_PROVIDER", "mitake"),
            ("MITAKE_BASE_URL", base),
            ("MITAKE_USERNAME", USERNAME),
            ("MITAKE_PASSWORD", PASSWORD),
            ("MITAKE_LOW_CREDIT_WARNING", "100"),
            ("CALLBACK_BASE_URL", callback_base.as_str()),
            ("CALLBACK_SECRET", SECRET),
        ],
    )
}

/// `sms_deliveries` of the job: (attempt, provider, message id, status, delivery status, delivered at).
type Row = (i32, String, Option<String>, String, Option<String>, Option<chrono::DateTime<chrono::Utc>>);

/// The job's rows once `done` holds for them (or after 15 s).
async fn rows(db: &OwnDatabase, job_id: &str, done: impl Fn(&[Row]) -> bool) -> Vec<Row> {
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found: Vec<Row> = sqlx::query_as(
            "SELECT attempt, provider, provider_message_id, status, delivery_status, delivered_at
             FROM sms_deliveries WHERE job_id = $1::uuid ORDER BY attempt",
        )
        .bind(job_id)
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        if done(&found) || Instant::now() > deadline {
            pool.close().await;
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn job(app: &TestApp, id: &str) -> Value {
    app.get_job(id, SHOP_KEY).await.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mitake_send_goes_out_once_and_its_delivery_report_lands_on_the_job() {
    let db = OwnDatabase::create().await;
    db::migrate_url(&db.url).await.unwrap();
    let app = TestApp::spawn_with(
        &redis_url(),
        &[("DATABASE_URL", db.url.as_str()), ("CALLBACK_SECRET", SECRET), ("SMS_TEMPLATE_TWOLINES", TWO_LINES)],
    )
    .await;
    // The first answer comes after the worker's 1 s timeout: the message went out, the worker
    // does not know it, and retries; the gateway refuses the same clientid a second time.
    let mitake = FakeMitake::start(Duration::from_secs(2), None).await;
    let worker = mitake_worker(&app, &db, &mitake.base);
    let id = enqueue(&app, &otp(Some("twolines"))).await;

    let done = app.wait_status(&id, &["succeeded", "dead"], Duration::from_secs(20)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!((done["attempts"].as_u64(), done["provider_message_id"].as_str()), (Some(2), Some(MSGID)));
    let requests = mitake.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(mitake.sent(), 1, "one message reached the phone: the clientid was refused the second time");
    let first = &requests[0];
    assert_eq!((first.path.as_str(), first.query.as_str()), ("/api/mtk/SmSend", "CharsetURL=UTF8"));
    assert_eq!(first.content_type, "application/x-www-form-urlencoded");
    let report_url = format!("{}/v1/callbacks/mitake?secret={SECRET}&job={id}", app.url(""));
    let expected = HashMap::from([
        ("username".to_owned(), USERNAME.to_owned()),
        ("password".to_owned(), PASSWORD.to_owned()),
        ("dstaddr".to_owned(), "0912345678".to_owned()),
        ("smbody".to_owned(), format!("{CODE} is your code\u{6}it expires in 2 min")),
        ("clientid".to_owned(), id.clone()),
        ("response".to_owned(), report_url),
    ]);
    assert_eq!(first.form, expected);
    assert_eq!(requests[1].form, expected, "the retry is the same request, same clientid");

    // The credit left, as a gauge, and a warning below MITAKE_LOW_CREDIT_WARNING.
    let metrics = reqwest::get(format!("http://{}/metrics", worker.metrics_addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == r#"jobplane_sms_credit_remaining{provider="mitake"} 42"#), "{metrics}");
    let log = worker.output();
    assert!(log.contains("Mitake credit is low"), "{log}");
    for secret in [PASSWORD, CODE, "912345678"] {
        assert!(!log.contains(secret), "the worker's log holds {secret}:\n{log}");
    }

    let sent = |rows: &[Row]| rows.len() == 2;
    let found = rows(&db, &id, sent).await;
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!((found[0].1.as_str(), found[0].3.as_str()), ("mitake", "failed"));
    assert_eq!(found[1], (2, "mitake".to_owned(), Some(MSGID.to_owned()), "sent".to_owned(), None, None));

    // Mitake reports the delivery: acknowledged as it expects, on the job, in sms_deliveries.
    let answer = mitake.report(&app.http, "4", "DELIVRD", "20261128110203").await;
    assert_eq!(answer.status(), 200);
    let ack = answer.text().await.unwrap();
    assert_eq!(ack, format!("magicid=sms_gateway_rpack\nmsgid={MSGID}\n"));
    let delivered = json!({"status": "delivered", "at": "2026-11-28T03:02:03Z", "detail": "DELIVRD"});
    assert_eq!(job(&app, &id).await["delivery"], delivered);
    let reported = |rows: &[Row]| rows.get(1).is_some_and(|r| r.4.is_some());
    let found = rows(&db, &id, reported).await;
    let at: chrono::DateTime<chrono::Utc> = "2026-11-28T03:02:03Z".parse().unwrap();
    assert_eq!((found[1].4.as_deref(), found[1].5), (Some("delivered"), Some(at)), "{found:?}");
    assert_eq!(found[0].4, None, "the failed attempt gets no delivery status");

    // The same report again: the same answer, nothing changes.
    let again = mitake.report(&app.http, "4", "DELIVRD", "20261128110959").await;
    assert_eq!((again.status().as_u16(), again.text().await.unwrap()), (200, ack.clone()));
    assert_eq!(job(&app, &id).await["delivery"], delivered);

    // Forged: a wrong secret, no secret: 403, nothing recorded.
    for forged in [
        format!(
            "{}/v1/callbacks/mitake?secret=wrong-secret-0123456789&job={id}&msgid={MSGID}&StatusFlag=6",
            app.url("")
        ),
        format!("{}/v1/callbacks/mitake?job={id}&msgid={MSGID}&StatusFlag=6", app.url("")),
    ] {
        let answer = app.http.get(forged).send().await.unwrap();
        assert_eq!(answer.status(), 403);
        assert_eq!(answer.headers()["content-type"], "application/problem+json");
    }
    assert_eq!(job(&app, &id).await["delivery"], delivered);

    // An authentic report for an unknown job: the same acknowledgement, nothing written.
    let unknown = uuid::Uuid::now_v7().to_string();
    let url = format!("{}/v1/callbacks/mitake?secret={SECRET}&job={unknown}&msgid={MSGID}&StatusFlag=4", app.url(""));
    let answer = app.http.get(url).send().await.unwrap();
    assert_eq!((answer.status().as_u16(), answer.text().await.unwrap()), (200, ack));
    assert_eq!(app.record("otp_sms", &unknown).await, None);

    // A POSTed report (form body) with a stronger status replaces it.
    let answer = app
        .http
        .post(format!("{}/v1/callbacks/mitake?secret={SECRET}&job={id}", app.url("")))
        .form(&[("msgid", MSGID), ("StatusFlag", "6"), ("statusstr", "UNDELIV"), ("donetime", "20261128120000")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(job(&app, &id).await["delivery"]["status"], "undelivered");
    drop(worker);
    db.drop().await;
}

#[tokio::test]
async fn a_number_mitake_refuses_is_a_permanent_failure_without_the_number() {
    let db = OwnDatabase::create().await;
    db::migrate_url(&db.url).await.unwrap();
    let app = TestApp::spawn().await;
    let mitake = FakeMitake::start(Duration::ZERO, Some(("6", "門號有錯誤 0912345678"))).await;
    let worker = mitake_worker(&app, &db, &mitake.base);
    let id = enqueue(&app, &otp(None)).await;

    let done = app.wait_status(&id, &["dead", "succeeded"], Duration::from_secs(20)).await;
    assert_eq!(done["status"], "dead", "{done}");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["last_error"], "Mitake statuscode 6: 門號有錯誤 +886*******78 (the number has an error)");
    assert_eq!(
        mitake.requests()[0].form["smbody"],
        format!("Your verification code is {CODE}. It expires in 2 minutes.")
    );
    let log = worker.output();
    assert!(!log.contains(PASSWORD) && !log.contains("912345678"), "{log}");
    drop(worker);
    db.drop().await;
}

#[tokio::test]
async fn the_worker_gives_twilio_the_status_callback_and_twilios_report_updates_the_row() {
    let db = OwnDatabase::create().await;
    db::migrate_url(&db.url).await.unwrap();
    // The public URL Twilio is given, as a proxy in front of producer-api serves it; the
    // worker and producer-api share it, and Twilio signs over it.
    let callback_base = "https://api.example.test/jobplane";
    let app = TestApp::spawn_with(
        &redis_url(),
        &[("DATABASE_URL", db.url.as_str()), ("TWILIO_AUTH_TOKEN", TOKEN), ("CALLBACK_BASE_URL", callback_base)],
    )
    .await;
    let created = r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}"#;
    let twilio = Receiver::start(&[], Reply::with_body(201, created)).await;
    let twilio_base = format!("http://{}", twilio.addr);
    let worker = WorkerProcess::start_captured(
        &app.redis_url,
        &app.namespace,
        &[
            ("WORKER_KINDS", "otp_sms"),
            ("DATABASE_URL", db.url.as_str()),
            ("SMS_PROVIDER", "twilio"),
            ("TWILIO_BASE_URL", twilio_base.as_str()),
            ("TWILIO_ACCOUNT_SID", SID),
            ("TWILIO_AUTH_TOKEN", TOKEN),
            ("TWILIO_FROM", "+15005550006"),
            ("CALLBACK_BASE_URL", callback_base),
        ],
    );
    let id = enqueue(&app, &otp(None)).await;
    let done = app.wait_status(&id, &["succeeded", "dead"], Duration::from_secs(20)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let form: HashMap<String, String> =
        url::form_urlencoded::parse(&twilio.deliveries()[0].body).into_owned().collect();
    let status_callback = format!("{callback_base}/v1/callbacks/twilio?job={id}");
    assert_eq!(form["StatusCallback"], status_callback);
    let sent = |rows: &[Row]| rows.len() == 1;
    assert_eq!(rows(&db, &id, sent).await.len(), 1);

    // Twilio calls it, signed with the auth token over that URL and the sorted parameters.
    let params = [("MessageSid", MESSAGE_SID), ("MessageStatus", "undelivered"), ("ErrorCode", "30003")];
    let mut signed = status_callback.clone();
    let mut sorted = params.to_vec();
    sorted.sort_unstable();
    for (name, value) in sorted {
        signed.push_str(name);
        signed.push_str(value);
    }
    let signature = {
        use base64::Engine;
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(TOKEN.as_bytes()).unwrap();
        mac.update(signed.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    let answer = app
        .http
        .post(app.url(&format!("/v1/callbacks/twilio?job={id}")))
        .header("X-Twilio-Signature", signature)
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 204);
    let delivery = job(&app, &id).await["delivery"].clone();
    assert_eq!((delivery["status"].as_str(), delivery["detail"].as_str()), (Some("undelivered"), Some("30003")));
    let reported = |rows: &[Row]| rows.first().is_some_and(|r| r.4.is_some());
    let found = rows(&db, &id, reported).await;
    assert_eq!(found[0].4.as_deref(), Some("undelivered"), "{found:?}");
    drop(worker);
    db.drop().await;
}

#[test]
fn bad_provider_and_callback_settings_stop_the_processes_with_one_line_naming_the_variable() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let keys = ("PRODUCER_API_KEYS", "a:0123456789abcdef");
    let cases: [Case; 7] = [
        ("worker", &[("SMS_PROVIDER", "mitake")], "worker: MITAKE_USERNAME: is required"),
        ("worker", &[("SMS_PROVIDER", "mitake"), ("MITAKE_USERNAME", "u")], "worker: MITAKE_PASSWORD: is required"),
        (
            "worker",
            &[("SMS_PROVIDER", "mitake"), ("MITAKE_USERNAME", "u"), ("MITAKE_PASSWORD", "p"), ("MITAKE_BASE_URL", "x")],
            "worker: MITAKE_BASE_URL: ",
        ),
        ("worker", &[("SMS_PROVIDER", "mitake"), ("CALLBACK_SECRET", "short")], "worker: CALLBACK_SECRET: "),
        ("producer-api", &[keys, ("CALLBACK_BASE_URL", "api.example.com")], "producer-api: CALLBACK_BASE_URL: "),
        ("producer-api", &[keys, ("CALLBACK_SECRET", "has spaces in it ok?")], "producer-api: CALLBACK_SECRET: "),
        (
            "producer-api",
            &[keys, ("CALLBACK_RATE_LIMIT_PER_SECOND", "0")],
            "producer-api: CALLBACK_RATE_LIMIT_PER_SECOND: ",
        ),
    ];
    for (name, env, expected) in cases {
        let base = [("WORKER_KINDS", "otp_sms"), ("WORKER_METRICS_ADDR", "0")];
        let stderr = crate::support::stops_at_start(name, &base, env, expected);
        assert!(!stderr.contains("has spaces"), "a bad secret is not echoed: {stderr}");
    }
}
