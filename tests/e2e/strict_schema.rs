//! Issue 18: the request schemas of `/openapi.json` are as strict as the validation. Documents
//! sampled from the schemas (schemathesis, pinned in `scripts/lib/services.sh`) are each
//! accepted by a real producer API; documents that break them are each refused.
//! `tests/schema/strict_hooks.py` gives schemathesis the rules the document names by `format`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::edge_hardening::wait_with_limit;
use crate::emulators::require_python_module;
use crate::support::{OwnDatabase, SHOP_KEY, TestApp, redis_url};

/// The operations whose request schemas were made strict.
const STRICT: [&str; 4] = ["/v1/jobs", "/v1/jobs/batch", "/v1/schedules", "/v1/audit-logs"];

async fn app() -> (TestApp, OwnDatabase) {
    let db = OwnDatabase::create().await;
    let pool = db::pool(&db.url, 1).unwrap();
    db::migrate(&pool).await.unwrap();
    pool.close().await;
    // The OTP limits are off: a sample is valid whoever sent how many before it.
    let settings =
        [("DATABASE_URL", db.url.as_str()), ("OTP_RATE_LIMIT_PER_NUMBER", "0"), ("OTP_RATE_LIMIT_PER_KEY", "0")];
    (TestApp::spawn_with(&redis_url(), &settings).await, db)
}

/// One schemathesis run over the strict operations with `check` in `mode`; whether it passed
/// and what it printed.
async fn run(python: &Path, document: &str, mode: &str, check: &str, hooks: bool) -> (bool, String) {
    let report = std::env::temp_dir().join(format!("jobplane-strict-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&report).unwrap();
    let mut command = Command::new(python);
    command
        .current_dir(&report)
        .args(["-m", "schemathesis.cli", "run", document, "--phases", "examples,fuzzing", "--mode", mode])
        .args(["--checks", check, "--max-examples", "60", "--seed", "15", "--workers", "2", "--request-timeout", "10"])
        .args(["--header", &format!("Authorization: Bearer {SHOP_KEY}"), "--exclude-method", "DELETE"])
        .args(["--no-shrink", "--suppress-health-check", "all", "--generation-allow-x00", "false"])
        .args(STRICT.iter().flat_map(|path| ["--include-path", path]))
        .arg("--report-dir")
        .arg(&report)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if hooks {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
        command.env("PYTHONPATH", dir).env("SCHEMATHESIS_HOOKS", "strict_hooks");
    }
    let output = wait_with_limit(command.spawn().unwrap(), Duration::from_mins(5)).await;
    let _ = std::fs::remove_dir_all(&report);
    let text = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success() && text.contains("No issues found"), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_sampled_from_the_schemas_are_accepted() {
    let python = require_python_module("schemathesis");
    let (app, db) = app().await;
    let (passed, text) = run(&python, &app.url("/openapi.json"), "positive", "positive_data_acceptance", true).await;
    db.drop().await;
    assert!(passed, "a document the schema allows was refused:\n{text}");
    // Every strict operation was sampled, not skipped.
    assert!(text.contains("5 passed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_the_schemas_refuse_are_refused() {
    let python = require_python_module("schemathesis");
    let (app, db) = app().await;
    let (passed, text) = run(&python, &app.url("/openapi.json"), "negative", "negative_data_rejection", false).await;
    db.drop().await;
    assert!(passed, "a document the schema refuses was accepted:\n{text}");
}
