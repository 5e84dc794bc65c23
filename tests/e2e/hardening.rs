//! Hardening: each test pins a fix from a review (or a suspicion it cleared): paging ties,
//! edits of redacted payloads, races of purge with replay, frozen bulk confirmations, bulk
//! replays that outlive their request, ticks whose job died, file schedules, DST through the
//! worker's loop, schedules kept per producer, reserved audit actors.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::dead::{DeadFilter, DeadLetters};
use jobs::queue::{Finished, Outcome, Queue, Retention};
use jobs::schedule::{CatchUp, Due, Schedule, ScheduleStore, Source, Timetable, due};
use jobs::{EnqueueOutcome, Keys, Kind, Store};
use serde_json::{Value, json};

use crate::console::{ADMIN_TOKEN, TestConsole, make_dead};
use crate::support::TestApp;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn pages(console: &TestConsole, query: &str) -> (Vec<String>, u64) {
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

/// Checked: thousands of letters on one dead_at score, in two kinds, paged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ties_on_one_score_page_each_letter_exactly_once() {
    let app = TestApp::spawn().await;
    let mut conn = app.redis().await;
    let keys = Keys::new(&app.namespace);
    let s: i64 = 1_763_712_000_000;
    let mut all: Vec<(i64, String, Kind)> = Vec::new();
    for (kind, same, other) in [(Kind::Webhook, 2500usize, 40usize), (Kind::Email, 1200, 40)] {
        let q = keys.queue(kind);
        let mut pipe = redis::pipe();
        for i in 0..same + other {
            let id = uuid::Uuid::now_v7().to_string();
            let score = if i < same { s } else { s + i64::try_from(i % 3).unwrap() - 1 };
            pipe.zadd(q.dead(), &id, score).ignore();
            let record = jobs::record::JobRecord {
                status: jobs::JobStatus::Dead,
                attempts: 1,
                leases: 1,
                max_attempts: 1,
                producer: "shop".into(),
                created_at: score,
                run_at: score,
                payload: Some("{}".into()),
                idempotency_key: None,
                traceparent: None,
                started_at: None,
                worker: None,
                last_error: Some("boom".into()),
                provider_message_id: None,
                finished_at: Some(score),
                reason: Some(jobs::record::DeadReason::Permanent),
                dead_at: Some(score),
                idem_fingerprint: None,
                idem_expires_at: None,
                notes: Vec::new(),
                priority: jobs::Priority::Normal,
                group: None,
                deferred_at: None,
                delivery: None,
                history: Vec::new(),
            };
            pipe.set(q.job(&id), record.encode()).ignore();
            all.push((score, id, kind));
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    all.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
    let console = TestConsole::start(&app, &[]).await;
    for (query, kind) in [
        ("limit=50", None),
        ("limit=1000", None),
        ("limit=999&q=boom", None),
        ("limit=333&kind=webhook", Some(Kind::Webhook)),
    ] {
        let expected: Vec<String> =
            all.iter().filter(|(_, _, k)| kind.is_none_or(|want| want == *k)).map(|(_, id, _)| id.clone()).collect();
        let (ids, total) = pages(&console, query).await;
        assert_eq!(total, expected.len() as u64, "{query}");
        assert_eq!(ids.len(), expected.len(), "{query}");
        assert!(ids == expected, "{query}: order or membership differs");
    }
}

/// Fixed: an edit built from the (redacted) record writes `[redacted]` over the real secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_redacted_payload_keeps_the_secret() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let hook = json!({"url": "https://hooks.example.org/o", "event": "order.created", "data": {"api_token": "tok_live_secret", "n": 1}});
    let id = make_dead(&app, Kind::Webhook, &hook, 1, "permanent", "HTTP 400").await.remove(0);
    let record: Value = console.get(&format!("/api/dead/{id}"), ADMIN_TOKEN).await.json().await.unwrap();
    let mut payload = record["payload"].clone();
    payload["data"]["n"] = json!(2); // the operator fixes one unrelated field
    let r = console.post(&format!("/api/dead/{id}/replay"), ADMIN_TOKEN, &json!({"payload": payload})).await;
    assert_eq!(r.status(), 202);
    let stored: Value = serde_json::from_str(&app.job_fields("webhook", &id).await["payload"]).unwrap();
    assert_eq!(stored["data"]["api_token"], "tok_live_secret", "secret overwritten: {stored}");
}

/// Fixed: purge deletes by id without checking the job is still dead; a letter replayed
/// between `matching()` and `delete_many()` loses its hash while its id sits in the ready list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_does_not_delete_a_letter_replayed_meanwhile() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let ids = make_dead(
        &app,
        Kind::Webhook,
        &json!({"url": "https://x.example/h", "event": "e"}),
        3,
        "permanent",
        "HTTP 400",
    )
    .await;
    let conn = jobs::redis_conn::connect_url(&app.redis_url, Duration::from_secs(30)).unwrap();
    let dead = DeadLetters::new(conn, Keys::new(&app.namespace));
    let targets: Vec<String> =
        dead.matching(&DeadFilter::default()).await.unwrap().into_iter().map(|(_, id)| id).collect();
    let r = console.post(&format!("/api/dead/{}/replay", ids[0]), ADMIN_TOKEN, &json!({})).await;
    assert_eq!(r.status(), 202);
    dead.delete_many(Kind::Webhook, &targets).await.unwrap();
    assert!(app.ready("webhook").await.contains(&ids[0]));
    assert!(!app.job_fields("webhook", &ids[0]).await.is_empty(), "replayed job's hash deleted: job lost");
}

/// Fixed: the bulk confirmation's count is ignored; letters that died after the operator
/// saw "Delete 2" are deleted too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_purge_deletes_only_what_was_confirmed() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let hook = json!({"url": "https://x.example/h", "event": "e"});
    make_dead(&app, Kind::Webhook, &hook, 2, "permanent", "HTTP 400").await;
    let login =
        console.http.post(format!("{}/login", console.base)).form(&[("token", ADMIN_TOKEN)]).send().await.unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let html = console
        .http
        .get(format!("{}/dead", console.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let form = [("csrf", csrf.as_str()), ("action", "purge"), ("filters", "kind=webhook")];
    let confirm = console
        .http
        .post(format!("{}/dead/bulk", console.base))
        .header("cookie", &cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    let confirm_page = confirm.text().await.unwrap();
    assert!(confirm_page.contains("Delete 2 dead letters?"));
    make_dead(&app, Kind::Webhook, &hook, 3, "permanent", "HTTP 400").await; // die meanwhile
    let page = confirm_page;
    let frozen =
        page.split("name=\"filters\" value=\"").nth(1).unwrap().split('"').next().unwrap().replace("&amp;", "&");
    assert!(frozen.contains("until="), "the confirmation freezes the filter: {frozen}");
    // Posting the unfrozen filter with the old count is refused: more match now.
    let form = [("csrf", csrf.as_str()), ("action", "purge"), ("filters", "kind=webhook"), ("confirm", "2")];
    let refused = console
        .http
        .post(format!("{}/dead/bulk", console.base))
        .header("cookie", &cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    assert_eq!(app.depths("webhook").await.3, 5, "nothing deleted");
    let form = [("csrf", csrf.as_str()), ("action", "purge"), ("filters", frozen.as_str()), ("confirm", "2")];
    let done = console
        .http
        .post(format!("{}/dead/bulk", console.base))
        .header("cookie", &cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    let text = done.text().await.unwrap();
    assert!(text.contains("2 deleted."), "{text}");
    assert_eq!(app.depths("webhook").await.3, 3, "the letters that died after the confirmation are kept");
}

/// Fixed: a bulk replay cut short (client gone) stopped midway and left no audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_bulk_replay_is_still_audited() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[("CONSOLE_REPLAY_RATE", "5")]).await;
    make_dead(&app, Kind::Webhook, &json!({"url": "https://x.example/h", "event": "e"}), 20, "permanent", "HTTP 400")
        .await;
    let short = reqwest::Client::builder().timeout(Duration::from_millis(1500)).build().unwrap();
    let r = short
        .post(format!("{}/api/dead/replay", console.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"filter": {"kind": "webhook"}}))
        .send()
        .await;
    assert!(r.is_err(), "the client gave up");
    // The replay goes on without its client, paced, and both ends are on record.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while app.ready("webhook").await.len() < 20 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.ready("webhook").await.len(), 20);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut actions = Vec::new();
    for id in app.ready("audit_log").await {
        let payload: Value = serde_json::from_str(&app.job_fields("audit_log", &id).await["payload"]).unwrap();
        actions.push(payload["action"].as_str().unwrap().to_owned());
    }
    actions.sort();
    assert_eq!(actions, ["dead_letter.replay_many", "dead_letter.replay_many.started"]);
}

/// Fixed: once a tick's job died, its idempotency record is gone and the same tick enqueues
/// again; only the (separate, later) compare-and-set of `last` protects it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_whose_job_died_is_not_enqueued_again() {
    let app = TestApp::spawn().await;
    let conn = jobs::redis_conn::connect_url(&app.redis_url, Duration::from_secs(30)).unwrap();
    let keys = Keys::new(&app.namespace);
    let store = Store::new(conn.clone(), keys.clone(), Duration::from_hours(24), Duration::from_secs(30));
    let body = json!({"name": "hourly", "cron": "0 * * * *",
        "job": {"kind": "webhook", "payload": {"url": "https://x.example/h", "event": "e"}}});
    let (schedule, _) = Schedule::parse(body, "", Source::Api, "shop", Utc::now()).unwrap();
    let tick = utc("2026-11-21T09:00:00Z");
    let first = store.enqueue(&[schedule.job_for(tick, Utc::now()).unwrap()]).await.unwrap();
    assert!(matches!(first[0], EnqueueOutcome::Created { .. }));
    let queue = Queue::new(conn, &keys, Kind::Webhook, "w1");
    let leased = queue.fetch(Duration::from_mins(1), 10, 0).await.unwrap();
    let done: Vec<Finished> = leased
        .into_iter()
        .map(|(job, _)| Finished {
            job,
            outcome: Outcome::Dead(jobs::record::DeadReason::Permanent),
            error: Some("HTTP 400".into()),
            provider_id: None,
            started_at: Utc::now(),
            finished_at: Utc::now(),
        })
        .collect();
    queue.finish(&done, Utc::now(), &Retention::default()).await.unwrap();
    let again = store.enqueue(&[schedule.job_for(tick, Utc::now()).unwrap()]).await.unwrap();
    assert!(!matches!(again[0], EnqueueOutcome::Created { .. }), "tick {tick} enqueued twice: {again:?}");
}

/// Checked: DST, driven through `due()` the way the worker loop does.
#[test]
fn dst_ticks_through_the_worker_loop() {
    let run = |cron: &str, from: &str, to: &str| {
        let table = Timetable::new(cron, "America/New_York", "").unwrap();
        let (mut last, mut now, end, mut fired) = (utc(from), utc(from), utc(to), Vec::new());
        while now < end {
            now += chrono::Duration::seconds(20);
            if let Due::Fire(t) = due(&table, last, now, CatchUp::Latest) {
                fired.push(t.to_rfc3339());
                last = t;
            }
        }
        fired
    };
    let every15 = run("*/15 * * * *", "2026-11-01T04:50:00Z", "2026-11-01T07:10:00Z");
    let expected: Vec<String> =
        (0..9).map(|i| (utc("2026-11-01T05:00:00Z") + chrono::Duration::minutes(15 * i)).to_rfc3339()).collect();
    assert_eq!(every15, expected, "interval schedule on the fall-back day");
    assert_eq!(run("30 1 * * *", "2026-11-01T04:00:00Z", "2026-11-01T08:00:00Z"), ["2026-11-01T05:30:00+00:00"]);
    assert_eq!(run("30 2 * * *", "2026-03-08T05:00:00Z", "2026-03-08T09:00:00Z"), ["2026-03-08T07:00:00+00:00"]);
    let spring = run("*/15 * * * *", "2026-03-08T06:50:00Z", "2026-03-08T07:40:00Z");
    assert_eq!(spring.len(), 3, "{spring:?}");
}

/// Fixed: a schedule removed from SCHEDULES_FILE stays (and keeps firing); the API refuses
/// to delete it (409, it comes from the file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_removed_from_the_file_is_removed() {
    let app = TestApp::spawn().await;
    let conn = jobs::redis_conn::connect_url(&app.redis_url, Duration::from_secs(30)).unwrap();
    let store = ScheduleStore::new(conn, &app.namespace);
    let make = |name: &str| {
        let body = json!({"name": name, "cron": "0 * * * *",
            "job": {"kind": "webhook", "payload": {"url": "https://x.example/h", "event": "e"}}});
        Schedule::parse(body, "", Source::File, "file", Utc::now()).unwrap().0
    };
    workers::scheduler::load(&store, &[make("a"), make("b")]).await.unwrap();
    workers::scheduler::load(&store, &[make("a")]).await.unwrap();
    let names: Vec<String> = store.list().await.unwrap().into_iter().map(|l| l.schedule.name).collect();
    assert_eq!(names, ["a"]);
}

/// Fixed: any producer could list, replace or delete another producer's schedules.
#[tokio::test]
async fn schedules_belong_to_their_producer() {
    use crate::support::{BILLING_KEY, SHOP_KEY};
    let app = TestApp::spawn().await;
    let body = json!({"name": "shop-digest", "cron": "0 9 * * *",
        "job": {"kind": "webhook", "payload": {"url": "https://x.example/h", "event": "e", "data": {"secret_ref": "s"}}}});
    let post =
        |key: &'static str, body: Value| app.http.post(app.url("/v1/schedules")).bearer_auth(key).json(&body).send();
    assert_eq!(post(SHOP_KEY, body.clone()).await.unwrap().status(), 201);
    assert_eq!(post(BILLING_KEY, body).await.unwrap().status(), 409, "the name belongs to shop");
    let listed: Value =
        app.http.get(app.url("/v1/schedules")).bearer_auth(BILLING_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["schedules"].as_array().unwrap().len(), 0);
    let delete = app.http.delete(app.url("/v1/schedules/shop-digest")).bearer_auth(BILLING_KEY).send().await.unwrap();
    assert_eq!(delete.status(), 404);
    let listed: Value =
        app.http.get(app.url("/v1/schedules")).bearer_auth(SHOP_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["schedules"].as_array().unwrap().len(), 1);
}

/// Fixed: a producer could write audit events that pass for a console operator's.
#[tokio::test]
async fn console_actors_are_reserved_for_the_console() {
    let app = TestApp::spawn().await;
    let body = json!({"kind": "audit_log", "payload": {"tenant_id": "jobplane", "actor": "console:admin",
        "action": "dead_letter.purge", "resource_type": "dead_letter"}});
    let response = app.post_job(&body, None).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "/payload/actor");
}

/// Fixed: a dead letter whose idempotency key the producer has since used again is not
/// replayed (it would deliver twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_superseded_by_a_newer_job_is_not_replayed() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let conn = jobs::redis_conn::connect_url(&app.redis_url, Duration::from_secs(30)).unwrap();
    let keys = Keys::new(&app.namespace);
    let queue = Queue::new(conn, &keys, Kind::Webhook, "w1");
    let body = json!({"kind": "webhook", "payload": {"url": "https://x.example/h", "event": "e"}});
    let first =
        app.post_job(&body, Some("order-7")).await.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let leased = queue.fetch(Duration::from_mins(1), 10, 0).await.unwrap();
    let done: Vec<Finished> = leased
        .into_iter()
        .map(|(job, _)| Finished {
            job,
            outcome: Outcome::Dead(jobs::record::DeadReason::Permanent),
            error: Some("HTTP 400".into()),
            provider_id: None,
            started_at: Utc::now(),
            finished_at: Utc::now(),
        })
        .collect();
    queue.finish(&done, Utc::now(), &Retention::default()).await.unwrap();
    // The key is free again after the death: the producer sends the order anew.
    let second = app.post_job(&body, Some("order-7")).await;
    assert_eq!(second.status(), 202);
    let response = console.post(&format!("/api/dead/{first}/replay"), ADMIN_TOKEN, &json!({})).await;
    assert_eq!(response.status(), 409);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("newer job"), "{problem}");
}
