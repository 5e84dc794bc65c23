//! Review of the console hardening (issue 13 items 5 and 8): secrets the first fix still
//! showed or let `q` find (JSON held in a string, header lines and name/value header pairs,
//! basic credentials, form bodies, token-valued map keys), on every reader's path (JSON API,
//! pages, `q`), and an edit whose stored secrets still went to a new destination (a URL whose
//! path differs only in case, a new `reply_to`).

use jobs::Kind;
use serde_json::{Value, json};

use crate::console::{ADMIN_TOKEN, TestConsole, VIEWER_TOKEN, make_dead};
use crate::support::{TestApp, problem_fields};

const SECRETS: [&str; 7] = [
    "hunter2-pw-55",
    "dXNlcjpodW50ZXIy",
    "hdr-77665544",
    "cs-5566778899",
    "tok-a1b2c3d4e5",
    "k_live_443322",
    "s3cr3t-deep-1",
];

fn letter() -> Value {
    json!({"url": "https://hooks.example.org/in", "event": "order.created", "data": {
        "body": format!("{{\"password\":\"{}\",\"user\":\"ann\"}}", SECRETS[0]),
        "headers": [format!("Authorization: Basic {}", SECRETS[1]), format!("X-Api-Key: {}", SECRETS[5])],
        "header_list": [{"name": "X-Api-Key", "value": SECRETS[2]}],
        "form": format!("grant_type=client_credentials&client_secret={}", SECRETS[3]),
        "api_tokens": {SECRETS[4]: "billing"},
        "nested": json!({"inner": json!({"secret": SECRETS[6]}).to_string()}).to_string(),
        "order": 42}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_json_text_headers_forms_and_keys_are_hidden_everywhere() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let error = format!("HTTP 401: sent Authorization: Basic {}", SECRETS[1]);
    let id = make_dead(&app, Kind::Webhook, &letter(), 1, "permanent", &error).await.remove(0);

    let r = console.http.post(format!("{}/login", console.base)).form(&[("token", VIEWER_TOKEN)]).send().await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = console.http.get(format!("{}/dead/{id}", console.base)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    let list_page = console.http.get(format!("{}/dead", console.base)).header("cookie", &cookie).send().await.unwrap();
    let list_page = list_page.text().await.unwrap();
    let shown = console.get(&format!("/api/dead/{id}"), VIEWER_TOKEN).await.text().await.unwrap();
    let list = console.get("/api/dead", VIEWER_TOKEN).await.text().await.unwrap();
    for secret in SECRETS {
        for (name, text) in [("API record", &shown), ("API list", &list), ("page", &page), ("list page", &list_page)] {
            assert!(!text.contains(secret), "{secret} in the {name}: {text}");
        }
        let found: Value = console.get(&format!("/api/dead?q={secret}"), VIEWER_TOKEN).await.json().await.unwrap();
        assert_eq!(found["total"], 0, "q={secret} found the letter");
    }
    let record: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(record["payload"]["data"]["order"], 42);
    assert!(record["payload"]["data"]["body"].as_str().unwrap().contains("ann"), "{shown}");

    // Edited as shown, same destination: every stored secret (token-valued key too) is kept.
    let mut edited = record["payload"].clone();
    edited["data"]["order"] = json!(43);
    let r = console.post(&format!("/api/dead/{id}/replay"), ADMIN_TOKEN, &json!({"payload": edited})).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let stored: Value = serde_json::from_str(&app.job_fields("webhook", &id).await["payload"]).unwrap();
    let mut expected = letter();
    expected["data"]["order"] = json!(43);
    assert_eq!(stored, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_changed_url_path_or_a_new_reply_to_does_not_carry_stored_secrets() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let hook = json!({"url": "https://receiver.example.org/Tenants/AcmeCo", "event": "order.created",
        "data": {"api_token": "tok_live_secret", "n": 1}});
    let id = make_dead(&app, Kind::Webhook, &hook, 1, "permanent", "HTTP 400").await.remove(0);
    let record: Value = console.get(&format!("/api/dead/{id}"), ADMIN_TOKEN).await.json().await.unwrap();
    let mut moved = record["payload"].clone();
    moved["url"] = json!("https://receiver.example.org/tenants/acmeco");
    let r = console.post(&format!("/api/dead/{id}/replay"), ADMIN_TOKEN, &json!({"payload": moved})).await;
    assert_eq!(r.status(), 422);
    assert_eq!(problem_fields(&r.json().await.unwrap()), ["/payload/data/api_token"]);
    assert_eq!(app.job_fields("webhook", &id).await["status"], "dead", "nothing replayed");

    let mail = json!({"to": ["ann@example.org"],
        "template": {"name": "reset", "data": {"reset_token": "rt_secret_1", "name": "Ann"}}});
    let id = make_dead(&app, Kind::Email, &mail, 1, "permanent", "rejected").await.remove(0);
    let record: Value = console.get(&format!("/api/dead/{id}"), ADMIN_TOKEN).await.json().await.unwrap();
    let mut edited = record["payload"].clone();
    edited["reply_to"] = json!(["spy@example.net"]);
    let r = console.post(&format!("/api/dead/{id}/replay"), ADMIN_TOKEN, &json!({"payload": edited})).await;
    assert_eq!(r.status(), 422);
    assert_eq!(problem_fields(&r.json().await.unwrap()), ["/payload/template/data/reset_token"]);
}
