use serde_json::{Value, json};

use crate::enqueue::webhook;
use crate::support::{BILLING_KEY, TestApp};

#[tokio::test]
async fn the_same_key_and_body_replay_the_same_job() {
    let app = TestApp::spawn().await;
    let first = app.post_job(&webhook(), Some("order-42")).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    // The same body with its keys in another order is the same request.
    let reordered: Value = serde_json::from_str(
        r#"{"payload": {"data": {"order": 42}, "event": "order.created", "url": "https://example.org/hook"}, "kind": "webhook"}"#,
    )
    .unwrap();
    let second = app.post_job(&reordered, Some("order-42")).await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["status"], "queued");
    assert_eq!(second["run_at"], first["run_at"]);
    assert_eq!(app.ready("webhook").await.len(), 1);

    // The record lives 24 h.
    let ttl: i64 = redis::cmd("PTTL")
        .arg(app.key("{webhook}:idem:shop:order-42"))
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    assert!((86_390_000..=86_400_000).contains(&ttl), "ttl {ttl} ms");
}

#[tokio::test]
async fn the_same_key_with_another_body_is_refused() {
    let app = TestApp::spawn().await;
    let first: Value = app.post_job(&webhook(), Some("k1")).await.json().await.unwrap();
    let mut other = webhook();
    other["payload"]["data"]["order"] = json!(43);
    let response = app.post_job(&other, Some("k1")).await;
    assert_eq!(response.status(), 422);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/idempotency-key-reused");
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains(first["id"].as_str().unwrap()));
    assert_eq!(app.ready("webhook").await.len(), 1);
}

#[tokio::test]
async fn sixteen_concurrent_requests_with_one_key_make_exactly_one_job() {
    let app = TestApp::spawn().await;
    let job = webhook();
    let requests = (0..16).map(|_| app.post_job(&job, Some("concurrent-1")));
    let responses = futures::future::join_all(requests).await;
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for response in responses {
        match response.status().as_u16() {
            202 => created += 1,
            200 => assert_eq!(response.headers()["idempotent-replayed"], "true"),
            other => panic!("unexpected status {other}"),
        }
        let body: Value = response.json().await.unwrap();
        ids.insert(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    assert_eq!(app.ready("webhook").await.len(), 1);
    let job_keys = app.keys().into_iter().filter(|k| k.contains(":job:")).count();
    assert_eq!(job_keys, 1);
}

#[tokio::test]
async fn keys_belong_to_their_producer() {
    let app = TestApp::spawn().await;
    let shop: Value = app.post_job(&webhook(), Some("shared-key")).await.json().await.unwrap();
    let response = app
        .http
        .post(app.url("/v1/jobs"))
        .bearer_auth(BILLING_KEY)
        .header("Idempotency-Key", "shared-key")
        .json(&webhook())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let billing: Value = response.json().await.unwrap();
    assert_ne!(shop["id"], billing["id"]);
    assert_eq!(app.job_fields("webhook", billing["id"].as_str().unwrap()).await["producer"], "billing");
}

#[tokio::test]
async fn a_malformed_key_is_refused() {
    let app = TestApp::spawn().await;
    let long = "k".repeat(256);
    for key in ["", "has space", long.as_str()] {
        let response = app.post_job(&webhook(), Some(key)).await;
        assert_eq!(response.status(), 422, "{key:?}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    }
    // The structured-field form "..." is the same key as the bare one.
    let bare: Value = app.post_job(&webhook(), Some("sf-1")).await.json().await.unwrap();
    let quoted = app.post_job(&webhook(), Some("\"sf-1\"")).await;
    assert_eq!(quoted.status(), 200);
    assert_eq!(quoted.json::<Value>().await.unwrap()["id"], bare["id"]);
    assert!(app.keys().iter().all(|k| !k.contains("has space")));
}

#[tokio::test]
async fn a_key_whose_job_was_deleted_enqueues_anew() {
    let app = TestApp::spawn().await;
    let first: Value = app.post_job(&webhook(), Some("gone-1")).await.json().await.unwrap();
    let id = first["id"].as_str().unwrap();
    let _: () = redis::cmd("DEL")
        .arg(app.key(&format!("{{webhook}}:job:{id}")))
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    let again = app.post_job(&webhook(), Some("gone-1")).await;
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_ne!(again["id"], first["id"]);
    assert_eq!(app.post_job(&webhook(), Some("gone-1")).await.status(), 200);
}

#[tokio::test]
async fn a_key_is_scoped_to_its_kind() {
    // Documented scope: the record lives in its queue's hash slot (Redis Cluster), so the
    // same key for another kind is another job, not a conflict.
    let app = TestApp::spawn().await;
    assert_eq!(app.post_job(&webhook(), Some("k")).await.status(), 202);
    let email = json!({"kind": "email", "payload": {"to": "a@example.org", "subject": "s", "text": "t"}});
    assert_eq!(app.post_job(&email, Some("k")).await.status(), 202);
    assert_eq!(app.post_job(&email, Some("k")).await.status(), 200);
}

/// A cluster client resends a script whose connection dropped before the answer came. The
/// resend of an enqueue (same job ids) must write nothing: no second copy in the ready list,
/// and the job's state (here: already taken by a worker) untouched.
#[tokio::test]
async fn a_resent_enqueue_of_the_same_job_writes_nothing() {
    let app = TestApp::spawn().await;
    let conn = jobs::redis_conn::connect_url(&app.redis_url, std::time::Duration::from_secs(5)).unwrap();
    let store = jobs::Store::new(
        conn,
        jobs::Keys::new(&app.namespace),
        std::time::Duration::from_hours(1),
        std::time::Duration::from_secs(5),
    );
    let job = jobs::NewJob {
        id: uuid::Uuid::now_v7(),
        kind: jobs::Kind::Webhook,
        payload: json!({"url": "https://x.example/h", "event": "e"}).to_string(),
        created_at: chrono::Utc::now(),
        run_at: None,
        max_attempts: 3,
        producer: "shop".into(),
        idempotency: None,
        traceparent: None,
        priority: jobs::Priority::Normal,
        group: None,
    };
    let first = store.enqueue(std::slice::from_ref(&job)).await.unwrap();
    assert!(matches!(first[0], jobs::EnqueueOutcome::Created { .. }), "{first:?}");
    app.change_record("webhook", &job.id.to_string(), |r| r.status = jobs::JobStatus::Running).await;

    let again = store.enqueue(std::slice::from_ref(&job)).await.unwrap();
    let id = job.id.to_string();
    assert!(
        matches!(&again[0], jobs::EnqueueOutcome::Replayed { id: replayed, status, .. } if *replayed == id && *status == jobs::JobStatus::Running),
        "{again:?}"
    );
    assert_eq!(app.ready("webhook").await, [id]);
    assert_eq!(app.job_fields("webhook", &job.id.to_string()).await["status"], "running");
}
