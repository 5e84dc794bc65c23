//! Adversarial review of live control (issue 14), against the real console: an operator's own
//! audit events travel as `audit_log` jobs until a worker writes them to PostgreSQL, so no
//! operator may cancel them, by id or in bulk, not even after pausing that kind.

use serde_json::{Value, json};

use crate::console::{ADMIN_TOKEN, TestConsole};
use crate::support::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cannot_cancel_the_audit_events_of_their_own_actions() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    // The pause holds the audit events queued (no worker of audit_log runs here anyway).
    assert_eq!(console.post("/api/queues/audit_log/pause", ADMIN_TOKEN, &json!({})).await.status(), 200);
    let events = app.ready("audit_log").await;
    assert_eq!(events.len(), 1, "the pause is recorded");

    let one = console.post(&format!("/api/jobs/{}/cancel", events[0]), ADMIN_TOKEN, &json!({})).await;
    assert_eq!(one.status(), 409, "{}", one.text().await.unwrap());
    let bulk = json!({"filter": {"kind": "audit_log", "state": "queued"}});
    let counted = console.post("/api/jobs/bulk-cancel", ADMIN_TOKEN, &bulk).await;
    assert_eq!(counted.status(), 422);
    let problem: Value = counted.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "/filter/kind", "{problem}");
    let frozen =
        json!({"filter": {"kind": "audit_log", "state": "queued", "until": chrono::Utc::now()}, "confirm": 10});
    assert_eq!(console.post("/api/jobs/bulk-cancel", ADMIN_TOKEN, &frozen).await.status(), 422);

    assert_eq!(app.record("audit_log", &events[0]).await.unwrap().status, jobs::JobStatus::Queued);
    assert!(app.ready("audit_log").await.contains(&events[0]), "the pause's event is still on its way");
}
