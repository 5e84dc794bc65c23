//! Hardening of the dead-letter console (issue 13): edits that move a job may not carry its
//! stored secrets along (item 5), redaction at any depth and in every string (item 8), sessions
//! that end at logout and at token rotation (item 11), replays that claim their idempotency key
//! again (item 12), and a per-producer dead-letter cap (a flood evicts only its own letters).

use std::time::Duration;

use chrono::Utc;
use jobs::queue::{Finished, Outcome, Queue, Retention};
use jobs::{Keys, Kind, NewJob, Store};
use serde_json::{Value, json};

use crate::console::{ADMIN_TOKEN, TestConsole, VIEWER_TOKEN, make_dead};
use crate::enqueue::webhook;
use crate::support::{TestApp, problem_fields};

/// The `audit_log` payloads the console wrote, oldest last.
async fn audit_records(app: &TestApp) -> Vec<Value> {
    let mut records = Vec::new();
    for id in app.ready("audit_log").await {
        records.push(serde_json::from_str(&app.job_fields("audit_log", &id).await["payload"]).unwrap());
    }
    records
}

/// Item 5: a new URL (or new recipients) with a secret left as `[redacted]` is refused, naming
/// the field; the stored secret never reaches the new destination. Supplied, the edit goes, and
/// the audit record names the fields changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_to_a_new_destination_must_supply_the_redacted_secrets() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let hook = json!({"url": "https://hooks.example.org/in", "event": "order.created",
        "data": {"api_token": "tok_live_secret", "n": 1}});
    let id = make_dead(&app, Kind::Webhook, &hook, 1, "permanent", "HTTP 400").await.remove(0);
    let record: Value = console.get(&format!("/api/dead/{id}"), ADMIN_TOKEN).await.json().await.unwrap();
    let mut moved = record["payload"].clone();
    moved["url"] = json!("https://attacker.example/collect");
    let r = console.post(&format!("/api/dead/{id}/replay"), ADMIN_TOKEN, &json!({"payload": moved})).await;
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem_fields(&problem), ["/payload/data/api_token"]);
    let message = problem["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("[redacted]") && message.contains("`url`"), "{message}");
    let job = app.job_fields("webhook", &id).await;
    assert_eq!(job["status"], "dead", "nothing replayed");
    assert!(job["payload"].contains("hooks.example.org/in"));

    // The operator supplies the value: the edit goes, with the new secret only.
    moved["data"]["api_token"] = json!("tok_for_the_new_receiver");
    let r = console.post(&format!("/api/dead/{id}/replay"), ADMIN_TOKEN, &json!({"payload": moved})).await;
    assert_eq!(r.status(), 202);
    let stored: Value = serde_json::from_str(&app.job_fields("webhook", &id).await["payload"]).unwrap();
    assert_eq!(stored["url"], "https://attacker.example/collect");
    assert_eq!(stored["data"]["api_token"], "tok_for_the_new_receiver");
    let audit = audit_records(&app).await;
    let edit = audit.iter().find(|r| r["action"] == "dead_letter.edit_and_replay").unwrap();
    assert_eq!(edit["metadata"]["changed"], json!(["/data/api_token", "/url"]));
    assert!(!edit.to_string().contains("tok_"), "the audit record names fields, never values: {edit}");

    // Email: new recipients (a bcc added) with the template's secret left redacted.
    let mail = json!({"to": ["ann@example.org"],
        "template": {"name": "reset", "data": {"reset_token": "rt_secret_1", "name": "Ann"}}});
    let id = make_dead(&app, Kind::Email, &mail, 1, "permanent", "rejected").await.remove(0);
    let record: Value = console.get(&format!("/api/dead/{id}"), ADMIN_TOKEN).await.json().await.unwrap();
    assert_eq!(record["payload"]["template"]["data"]["reset_token"], "[redacted]");
    let mut edited = record["payload"].clone();
    edited["bcc"] = json!(["spy@example.net"]);
    let r = console.post(&format!("/api/dead/{id}/replay"), ADMIN_TOKEN, &json!({"payload": edited})).await;
    assert_eq!(r.status(), 422);
    assert_eq!(problem_fields(&r.json().await.unwrap()), ["/payload/template/data/reset_token"]);
    // The same recipients (case aside): the stored secret is kept.
    let mut same = record["payload"].clone();
    same["to"] = json!(["Ann@Example.org"]);
    same["template"]["data"]["name"] = json!("Annie");
    let r = console.post(&format!("/api/dead/{id}/replay"), ADMIN_TOKEN, &json!({"payload": same})).await;
    assert_eq!(r.status(), 202);
    let stored: Value = serde_json::from_str(&app.job_fields("email", &id).await["payload"]).unwrap();
    assert_eq!(stored["template"]["data"]["reset_token"], "rt_secret_1");
}

/// Item 8: secrets in arrays, in objects under a secret key, in URL query strings of any field,
/// in well-known URL paths and token shapes, and in errors are hidden from every reader, and
/// `q` cannot find them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_anywhere_in_a_letter_are_redacted_and_not_searchable() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let secrets = [
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "p4ss-w0rd-value",
        "cbtok-998877",
        "T0AAA/B0BBB/XyZsecretSLACK",
        "discordSECRETtoken_1",
        "xoxb-1111-2222-slackbottoken",
        "ghp_0123456789abcdefghijABCDEFGHIJ",
    ];
    let hook = json!({"url": "https://hooks.example.org/in", "event": "order.created", "data": {
        "api_tokens": [secrets[0]],
        "password": {"value": secrets[1]},
        "callback_url": format!("https://app.example.com/cb?token={}", secrets[2]),
        "notify": [format!("https://hooks.slack.com/services/{}", secrets[3]),
                   format!("https://discord.com/api/webhooks/123456789/{}", secrets[4])],
        "note": format!("bot uses {} and {}", secrets[5], secrets[6]),
        "order": 42}});
    let error = format!("HTTP 401: token {} rejected", secrets[0]);
    let id = make_dead(&app, Kind::Webhook, &hook, 1, "permanent", &error).await.remove(0);

    for token in [ADMIN_TOKEN, VIEWER_TOKEN] {
        let shown = console.get(&format!("/api/dead/{id}"), token).await.text().await.unwrap();
        let list = console.get("/api/dead", token).await.text().await.unwrap();
        for secret in secrets {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
            assert!(!list.contains(secret), "{secret} listed: {list}");
        }
        let record: Value = serde_json::from_str(&shown).unwrap();
        let data = &record["payload"]["data"];
        assert_eq!(data["api_tokens"], json!(["[redacted]"]));
        assert_eq!(data["password"], json!({"value": "[redacted]"}));
        assert_eq!(data["callback_url"], "https://app.example.com/cb?[redacted]");
        assert_eq!(data["notify"][0], "https://hooks.slack.com/services/[redacted]");
        assert_eq!(data["notify"][1], "https://discord.com/api/webhooks/123456789/[redacted]");
        assert_eq!(data["order"], 42);
        assert_eq!(record["last_error"], "HTTP 401: token [redacted] rejected");
        assert_eq!(record["history"][0]["error"], "HTTP 401: token [redacted] rejected");
    }
    // Probing for a secret (or a part of one) finds nothing; the shown form still searches.
    for probe in ["sk_live", "4eC39Hq", "p4ss", "cbtok", "XyZsecret", "discordSECRET", "slackbottoken", "ghp_0123"] {
        let page: Value = console.get(&format!("/api/dead?q={probe}"), VIEWER_TOKEN).await.json().await.unwrap();
        assert_eq!(page["total"], 0, "q={probe} found the letter");
    }
    let page: Value = console.get("/api/dead?q=hooks.slack.com", VIEWER_TOKEN).await.json().await.unwrap();
    assert_eq!(page["total"], 1);
}

fn cookie_of(response: &reqwest::Response) -> String {
    response.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
}

async fn login(console: &TestConsole, token: &str) -> String {
    let r = console.http.post(format!("{}/login", console.base)).form(&[("token", token)]).send().await.unwrap();
    assert_eq!(r.status(), 303);
    cookie_of(&r)
}

/// The CSRF token of the letter's page, or `None` when the cookie no longer opens a session.
async fn csrf(console: &TestConsole, cookie: &str, id: &str) -> Option<String> {
    let r = console.http.get(format!("{}/dead/{id}", console.base)).header("cookie", cookie).send().await.unwrap();
    if r.status() != 200 {
        assert_eq!(r.headers()["location"], "/login");
        return None;
    }
    let html = r.text().await.unwrap();
    Some(html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned())
}

async fn delete_by_form(console: &TestConsole, cookie: &str, csrf: &str, id: &str) -> reqwest::Response {
    console
        .http
        .post(format!("{}/dead/{id}/delete", console.base))
        .header("cookie", cookie)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap()
}

/// Item 11: after logout, the old cookie and its CSRF token delete nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_on_the_server() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let ids = make_dead(
        &app,
        Kind::Webhook,
        &json!({"url": "https://x.example/h", "event": "e"}),
        2,
        "permanent",
        "HTTP 400",
    )
    .await;
    let cookie = login(&console, ADMIN_TOKEN).await;
    let token = csrf(&console, &cookie, &ids[0]).await.expect("a fresh session opens the page");
    let r = console
        .http
        .post(format!("{}/logout", console.base))
        .header("cookie", &cookie)
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap()), (303, "/login"));

    // The attacker kept the cookie and the CSRF token.
    let r = delete_by_form(&console, &cookie, &token, &ids[0]).await;
    assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap()), (303, "/login"));
    assert_eq!(app.job_fields("webhook", &ids[0]).await["status"], "dead", "deleted after logout");
    assert!(csrf(&console, &cookie, &ids[0]).await.is_none(), "the page still opens after logout");

    // A new login works as before; its own logout ends only itself.
    let other = login(&console, ADMIN_TOKEN).await;
    let second = login(&console, ADMIN_TOKEN).await;
    let token = csrf(&console, &other, &ids[1]).await.unwrap();
    let r = console
        .http
        .post(format!("{}/logout", console.base))
        .header("cookie", &other)
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let token = csrf(&console, &second, &ids[1]).await.expect("another session lives on");
    assert_eq!(delete_by_form(&console, &second, &token, &ids[1]).await.status(), 200);
    assert!(app.job_fields("webhook", &ids[1]).await.is_empty());
}

/// Every page handler that changes something reads its form through one extractor
/// (`service::csrf::CsrfForm`) that checks the session's CSRF token first: a post without the
/// token, with an empty one or with another session's is `403` on each of them, and does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_changing_form_refuses_a_post_without_its_csrf_token() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let id = make_dead(&app, Kind::Webhook, &json!({"url": "https://x.example/h", "event": "e"}), 1, "permanent", "x")
        .await
        .remove(0);
    let cookie = login(&console, ADMIN_TOKEN).await;
    let other = login(&console, ADMIN_TOKEN).await;
    let token = csrf(&console, &cookie, &id).await.unwrap();
    let others_token = csrf(&console, &other, &id).await.unwrap();
    assert_ne!(token, others_token, "each session has its own token");
    let payload = json!({"url": "https://x.example/elsewhere", "event": "e"}).to_string();
    let forms: [(String, Vec<(&str, &str)>); 5] = [
        ("/logout".into(), vec![]),
        (format!("/dead/{id}/replay"), vec![]),
        (format!("/dead/{id}/edit"), vec![("payload", payload.as_str())]),
        (format!("/dead/{id}/delete"), vec![]),
        ("/dead/bulk".into(), vec![("action", "purge"), ("filters", "kind=webhook"), ("confirm", "1")]),
    ];
    for (path, fields) in &forms {
        for presented in [None, Some(""), Some(others_token.as_str())] {
            let mut form = fields.clone();
            form.extend(presented.map(|t| ("csrf", t)));
            let r = console
                .http
                .post(format!("{}{path}", console.base))
                .header("cookie", &cookie)
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{path} with csrf {presented:?}");
        }
    }
    // Nothing was done: the letter is as it was and the session still open...
    assert_eq!(app.job_fields("webhook", &id).await["status"], "dead");
    assert_eq!(csrf(&console, &cookie, &id).await.as_deref(), Some(token.as_str()));
    // ...and the same form with its own token goes through.
    assert_eq!(delete_by_form(&console, &cookie, &token, &id).await.status(), 200);
    assert!(app.job_fields("webhook", &id).await.is_empty());
}

/// Item 11: a rotated token (restart with a new `CONSOLE_TOKEN`) ends every session it opened,
/// even with the same session key; the unrotated token's sessions carry over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_ends_its_sessions() {
    let app = TestApp::spawn().await;
    let key = ("CONSOLE_SESSION_KEY", "a-shared-session-key-0123456789abcdef");
    let before = TestConsole::start(&app, &[key]).await;
    let id = make_dead(&app, Kind::Webhook, &json!({"url": "https://x.example/h", "event": "e"}), 1, "permanent", "x")
        .await
        .remove(0);
    let admin = login(&before, ADMIN_TOKEN).await;
    let viewer = login(&before, VIEWER_TOKEN).await;
    let token = csrf(&before, &admin, &id).await.unwrap();
    drop(before);

    let after = TestConsole::start(&app, &[key, ("CONSOLE_TOKEN", "console-admin-ROTATED-0123456789")]).await;
    assert!(csrf(&after, &admin, &id).await.is_none(), "the rotated token's session still opens pages");
    let r = delete_by_form(&after, &admin, &token, &id).await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.job_fields("webhook", &id).await["status"], "dead");
    let r = after.http.get(format!("{}/dead", after.base)).header("cookie", &viewer).send().await.unwrap();
    assert_eq!(r.status(), 200, "the viewer's token did not change: its session lives on");
}

/// Item 12: a replayed letter claims its idempotency key again, so the producer's retry with
/// the same key and body gets the replayed job, not a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_letter_claims_its_idempotency_key_again() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let created = app.post_job(&webhook(), Some("order-42-dies")).await;
    assert_eq!(created.status(), 202);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let idem_key = app.key("{webhook}:idem:shop:order-42-dies");
    let ttl_before: i64 = redis::cmd("PTTL").arg(&idem_key).query_async(&mut app.redis().await).await.unwrap();
    kill(&app, &id).await;
    let exists: bool = redis::cmd("EXISTS").arg(&idem_key).query_async(&mut app.redis().await).await.unwrap();
    assert!(!exists, "a dead job frees its key");

    let r = console.post(&format!("/api/dead/{id}/replay"), ADMIN_TOKEN, &json!({})).await;
    assert_eq!(r.status(), 202);
    let record: String = redis::cmd("GET").arg(&idem_key).query_async(&mut app.redis().await).await.unwrap();
    assert!(record.ends_with(&format!(" {id}")), "{record}");
    let ttl: i64 = redis::cmd("PTTL").arg(&idem_key).query_async(&mut app.redis().await).await.unwrap();
    assert!(ttl > 0 && ttl <= ttl_before, "the key keeps its first expiry: {ttl} of {ttl_before}");

    let again = app.post_job(&webhook(), Some("order-42-dies")).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap()["id"], id.as_str());
    assert_eq!(app.ready("webhook").await, std::slice::from_ref(&id), "no second job");

    // Dead again, the key taken meanwhile by a newer job: the replay is refused (the newer job
    // keeps the key, and a replay would deliver twice).
    kill(&app, &id).await;
    let newer = app.post_job(&webhook(), Some("order-42-dies")).await;
    assert_eq!(newer.status(), 202);
    let r = console.post(&format!("/api/dead/{id}/replay"), ADMIN_TOKEN, &json!({})).await;
    assert_eq!(r.status(), 409);
}

/// Leases every ready webhook and buries `id` (the only one expected) as a permanent failure.
async fn kill(app: &TestApp, id: &str) {
    let conn = jobs::redis_conn::connect_url(&app.redis_url, Duration::from_secs(30)).unwrap();
    let queue = Queue::new(conn, &Keys::new(&app.namespace), Kind::Webhook, "console-hardening");
    let leased = queue.fetch(Duration::from_mins(1), 10, 0).await.unwrap();
    assert_eq!(leased.iter().map(|(j, _)| j.id.as_str()).collect::<Vec<_>>(), [id]);
    let now = Utc::now();
    let done: Vec<Finished> = leased
        .into_iter()
        .map(|(job, _)| Finished {
            job,
            outcome: Outcome::Dead(jobs::record::DeadReason::Permanent),
            error: Some("HTTP 400".into()),
            provider_id: None,
            started_at: now,
            finished_at: now,
        })
        .collect();
    queue.finish(&done, now, &Retention::default()).await.unwrap();
}

/// Buries `n` webhooks of `producer`, `per_call` per `finish` call, under `retention`; their ids.
async fn bury_as(app: &TestApp, producer: &str, n: usize, per_call: usize, retention: &Retention) -> Vec<String> {
    let conn = jobs::redis_conn::connect_url(&app.redis_url, Duration::from_secs(30)).unwrap();
    let keys = Keys::new(&app.namespace);
    let store = Store::new(conn.clone(), keys.clone(), Duration::from_hours(1), Duration::from_secs(30));
    let queue = Queue::new(conn, &keys, Kind::Webhook, "console-hardening");
    let mut ids = Vec::new();
    for _ in 0..n / per_call {
        let now = Utc::now();
        let jobs: Vec<NewJob> = (0..per_call)
            .map(|_| NewJob {
                id: uuid::Uuid::now_v7(),
                kind: Kind::Webhook,
                payload: json!({"url": "https://x.example/h", "event": "e"}).to_string(),
                created_at: now,
                run_at: None,
                max_attempts: 1,
                producer: producer.into(),
                idempotency: None,
                traceparent: None,
                priority: jobs::Priority::Normal,
                group: None,
            })
            .collect();
        store.enqueue(&jobs).await.unwrap();
        let done: Vec<Finished> = queue
            .fetch(Duration::from_mins(1), per_call, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|(job, _)| {
                ids.push(job.id.clone());
                Finished {
                    job,
                    outcome: Outcome::Dead(jobs::record::DeadReason::Exhausted),
                    error: Some("HTTP 503".into()),
                    provider_id: None,
                    started_at: now,
                    finished_at: Utc::now(),
                }
            })
            .collect();
        queue.finish(&done, Utc::now(), retention).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await; // distinct dead_at per call
    }
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// The dead-letter policy: a producer flooding past its cap loses its own oldest letters, and
/// another producer's letters survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_producer_evicts_only_its_own_dead_letters() {
    let app = TestApp::spawn().await;
    let retention = Retention { dead_cap: 25, dead_cap_per_producer: 10, ..Retention::default() };
    let quiet = bury_as(&app, "billing", 3, 1, &retention).await;
    let flood = bury_as(&app, "shop", 60, 5, &retention).await;
    let q = Keys::new(&app.namespace).queue(Kind::Webhook);
    let mut conn = app.redis().await;
    let dead: Vec<String> = redis::cmd("ZRANGE").arg(q.dead()).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    let mut expected: Vec<String> = quiet.clone();
    expected.extend_from_slice(&flood[50..]);
    assert_eq!(sorted(dead), sorted(expected), "billing's 3 letters and shop's newest 10");
    for id in &quiet {
        assert_eq!(app.job_fields("webhook", id).await["status"], "dead");
    }
    for id in &flood[..50] {
        assert!(app.job_fields("webhook", id).await.is_empty(), "an evicted letter keeps its hash");
    }
    let shop: Vec<String> =
        redis::cmd("ZRANGE").arg(q.dead_of("shop")).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    assert_eq!(sorted(shop), sorted(flood[50..].to_vec()));
    let billing: u64 = redis::cmd("ZCARD").arg(q.dead_of("billing")).query_async(&mut conn).await.unwrap();
    assert_eq!(billing, 3);

    // A replayed or deleted letter leaves its producer's set too.
    let console = TestConsole::start(&app, &[]).await;
    assert_eq!(console.post(&format!("/api/dead/{}/replay", quiet[0]), ADMIN_TOKEN, &json!({})).await.status(), 202);
    let r = console.http.delete(format!("{}/api/dead/{}", console.base, quiet[1])).bearer_auth(ADMIN_TOKEN).send();
    assert_eq!(r.await.unwrap().status(), 204);
    let billing: Vec<String> =
        redis::cmd("ZRANGE").arg(q.dead_of("billing")).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    assert_eq!(billing, [quiet[2].clone()]);
}
