//! Observability: Prometheus text that `promtool check metrics` accepts from every process,
//! JSON log lines that name the job they are about (and never its secrets), and a W3C trace
//! that goes from the producer's request through the job to the worker's webhook.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::console::TestConsole;
use crate::receiver::{Receiver, Reply};
use crate::support::{SHOP_KEY, TestApp, WorkerProcess};

/// `promtool check metrics` on `text`: its complaints, empty when it accepts the text.
fn promtool(text: &str) -> String {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("promtool is not installed: scripts/test installs Debian's prometheus package");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() { String::new() } else { said }
}

fn has(text: &str, name: &str) -> bool {
    text.lines().any(|l| !l.starts_with('#') && l.starts_with(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_serves_metrics_that_promtool_accepts() {
    // The binaries install the recorder at start; in this process, the first caller does.
    service::metrics_handle();
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let receiver = Receiver::start(&[Reply::status(400)], Reply::OK).await;
    let worker = WorkerProcess::start(&app.redis_url, &app.namespace, &[]);
    // One job dies (400 is permanent), one succeeds.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let body = json!({"kind": "webhook", "payload": {"url": receiver.url(), "event": "order.created"}});
        ids.push(app.post_job(&body, None).await.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.wait_status(id, &["succeeded", "dead"], Duration::from_secs(15)).await;
    }
    assert_eq!(console.get("/api/queues", crate::console::ADMIN_TOKEN).await.status(), 200);
    // The depth sampler runs every 5 s.
    tokio::time::sleep(Duration::from_millis(5500)).await;

    let worker_text =
        reqwest::get(format!("http://{}/metrics", worker.metrics_addr)).await.unwrap().text().await.unwrap();
    // The API and the console run in this process and share its recorder; each serves it.
    let api_text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    let console_text = reqwest::get(format!("{}/metrics", console.base)).await.unwrap().text().await.unwrap();
    for (process, text) in [("worker", &worker_text), ("producer-api", &api_text), ("dlq-console", &console_text)] {
        assert_eq!(promtool(text), "", "{process}'s metrics:\n{text}");
        assert!(text.contains("# HELP "), "{process} describes its metrics");
    }
    for name in [
        "jobplane_jobs_completed_total{",
        "jobplane_attempt_duration_seconds_bucket{",
        "jobplane_dead_letters_total{",
        "jobplane_queue_depth{",
    ] {
        assert!(has(&worker_text, name), "worker lacks {name}:\n{worker_text}");
    }
    let producer = "jobplane_jobs_enqueued_total{kind=\"webhook\",producer=\"shop\"}";
    assert!(has(&api_text, producer), "{api_text}");
    assert!(has(&api_text, "jobplane_http_request_duration_seconds_bucket{"));
    let dead = worker_text
        .lines()
        .find(|l| l.starts_with("jobplane_queue_depth{") && l.contains("state=\"dead\"") && l.contains("webhook"));
    assert!(dead.is_some_and(|l| l.ends_with(" 1")), "{dead:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_log_lines_name_the_job_and_a_trace_goes_on_into_the_webhook() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[], Reply::OK).await;
    let worker = WorkerProcess::start_captured(
        &app.redis_url,
        &app.namespace,
        &[("WORKER_KINDS", "webhook,otp_sms"), ("SMS_PROVIDER", "log"), ("LOG_FORMAT", "json"), ("RUST_LOG", "info")],
    );
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let hook = app
        .http
        .post(app.url("/v1/jobs"))
        .bearer_auth(SHOP_KEY)
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .json(&json!({"kind": "webhook", "payload": {"url": receiver.url(), "event": "order.created"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status(), 202);
    let hook_id = hook.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let otp =
        app.post_job(&json!({"kind": "otp_sms", "payload": {"to": "+14155550123", "code": "739164"}}), None).await;
    let otp_id = otp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    for id in [&hook_id, &otp_id] {
        assert_eq!(app.wait_status(id, &["succeeded"], Duration::from_secs(15)).await["status"], "succeeded");
    }

    // The webhook continues the request's trace, under a span of the worker's own.
    let delivery = &receiver.deliveries()[0];
    let sent = delivery.header("traceparent");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[1]), (4, "00", trace), "{sent}");
    assert_ne!(parts[2], parent, "a span of its own");

    tokio::time::sleep(Duration::from_millis(200)).await;
    let output = worker.output();
    let lines: Vec<Value> = output.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!lines.is_empty(), "JSON log lines: {output}");
    let sms = lines
        .iter()
        .find(|l| l["span"]["job_id"] == otp_id.as_str())
        .unwrap_or_else(|| panic!("no line inside the OTP job's span:\n{output}"));
    assert_eq!((sms["span"]["kind"].as_str(), sms["span"]["producer"].as_str()), (Some("otp_sms"), Some("shop")));
    assert_eq!(sms["span"]["attempt"], 1);
    assert!(!output.contains("739164"), "the OTP code was logged");
    assert!(!output.contains("+14155550123"), "the full number was logged");
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the worker exports its job span over OTLP/HTTP to a
/// collector (here a local receiver standing for one), in the request's trace, and that span is
/// the parent the webhook announces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_to_an_otlp_collector_when_one_is_set() {
    let app = TestApp::spawn().await;
    let hooks = Receiver::start(&[], Reply::OK).await;
    let collector = Receiver::start(&[], Reply::OK).await;
    let endpoint = format!("http://{}", collector.addr);
    let _worker = WorkerProcess::start(
        &app.redis_url,
        &app.namespace,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let response = app
        .http
        .post(app.url("/v1/jobs"))
        .bearer_auth(SHOP_KEY)
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .json(&json!({"kind": "webhook", "payload": {"url": hooks.url(), "event": "order.created"}}))
        .send()
        .await
        .unwrap();
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_status(&id, &["succeeded"], Duration::from_secs(15)).await["status"], "succeeded");
    let sent = hooks.deliveries()[0].header("traceparent");
    let span_id = sent.split('-').nth(2).unwrap().to_owned();

    let exports = collector.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(exports[0].path, "/v1/traces");
    assert_eq!(exports[0].header("content-type"), "application/x-protobuf");
    let body: Vec<u8> = exports.iter().flat_map(|e| e.body.clone()).collect();
    let bytes = |hex: &str| {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect::<Vec<u8>>()
    };
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(contains(&bytes(trace)), "the exported span is in the request's trace");
    assert!(contains(&bytes(&span_id)), "the webhook's parent is the exported span");
}
