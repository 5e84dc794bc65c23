//! The OpenAPI document, generated from the handlers and types, and a page that renders it.

use std::sync::LazyLock;

use axum::Json;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::problem::ProblemDoc;
use crate::{audit_logs, routes};

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Jobplane producer API", description = "Validates and enqueues OTP SMS, email, webhook and audit-log jobs."),
    paths(routes::create_job, routes::create_batch, routes::get_job, routes::cancel_job, crate::audit_logs::list,
        crate::schedules::put, crate::schedules::list, crate::schedules::delete,
        crate::schedules::pause, crate::schedules::resume, crate::schedules::run, crate::suppressions::check,
        crate::callbacks::twilio::report, crate::callbacks::mitake::report, crate::callbacks::ses::notification),
    components(schemas(ProblemDoc, routes::CancelAnswer, jobs::FieldError, jobs::JobInfo, jobs::JobStatus, jobs::delivery::Delivery, jobs::delivery::DeliveryStatus, jobs::Kind, jobs::Priority,
        crate::suppressions::SuppressionView, jobs::suppression::SuppressionReason)),
    modifiers(&BearerAuth),
    tags((name = "jobs", description = "Enqueue jobs and follow them"),
         (name = "audit logs", description = "Read the audit events workers wrote to PostgreSQL"),
         (name = "schedules", description = "Recurring jobs on cron expressions in IANA time zones"),
         (name = "suppressions", description = "Email addresses never mailed again (hard bounces, complaints, operators' entries)"),
         (name = "callbacks", description = "What providers report after a send (no bearer key: each provider's signature, or CALLBACK_SECRET)"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A secret from PRODUCER_API_KEYS"))
                    .build(),
            ),
        );
    }
}

/// The document served at `/openapi.json` (and printed by `producer-api openapi`): utoipa's,
/// with the bodies that store jobs and the audit-log query made as strict as the validation
/// ([`jobs::openapi`]), so generated clients and validators refuse what the API refuses.
pub fn document() -> &'static Value {
    static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
        strict_bodies(&mut doc);
        strict_parameters(&mut doc);
        operation_ids(&mut doc);
        prune_unused(&mut doc);
        doc
    });
    &DOCUMENT
}

pub async fn json() -> Json<&'static Value> {
    Json(document())
}

/// The request bodies of `POST /v1/jobs`, `/v1/jobs/batch` and `/v1/schedules` point at the
/// strict schemas.
fn strict_bodies(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    for (name, schema) in jobs::openapi::request_schemas() {
        schemas[name] = schema;
    }
    for (path, schema) in
        [("/v1/jobs", "JobRequest"), ("/v1/jobs/batch", "BatchRequest"), ("/v1/schedules", "ScheduleRequest")]
    {
        doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"] =
            json!({"$ref": format!("#/components/schemas/{schema}")});
    }
}

/// Each parameter's rules as the handlers check them.
fn strict_parameters(doc: &mut Value) {
    let one_line = r"^[^\u0000-\u001F\u007F-\u009F]{1,256}$";
    let rules = [
        ("Idempotency-Key", json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]{1,255}$"})),
        ("tenant_id", json!({"type": "string", "minLength": 1, "maxLength": 256, "pattern": one_line})),
        ("action", json!({"type": "string", "minLength": 1, "maxLength": 256, "pattern": one_line})),
        ("actor", json!({"type": "string", "minLength": 1, "maxLength": 256, "pattern": one_line})),
        (
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": audit_logs::MAX_LIMIT, "default": audit_logs::DEFAULT_LIMIT}),
        ),
        ("cursor", json!({"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9_-]{1,128}$"})),
    ];
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for parameter in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|operations| operations.values_mut())
        .filter_map(|operation| operation.get_mut("parameters").and_then(Value::as_array_mut))
        .flatten()
    {
        let name = parameter["name"].as_str().unwrap_or_default().to_owned();
        if let Some((_, schema)) = rules.iter().find(|(n, _)| *n == name) {
            parameter["schema"] = schema.clone();
        }
    }
}

/// Names each operation for generated clients: utoipa takes the handler's name, and
/// `audit_logs::list` and `schedules::list` (or `put`, `delete`), `twilio::report` and
/// `mitake::report` would collide.
fn operation_ids(doc: &mut Value) {
    let names = [
        ("/v1/jobs", "post", "enqueueJob"),
        ("/v1/jobs/batch", "post", "enqueueBatch"),
        ("/v1/jobs/{id}", "get", "getJob"),
        ("/v1/jobs/{id}", "delete", "cancelJob"),
        ("/v1/audit-logs", "get", "listAuditLogs"),
        ("/v1/schedules", "post", "putSchedule"),
        ("/v1/schedules", "get", "listSchedules"),
        ("/v1/schedules/{name}", "delete", "deleteSchedule"),
        ("/v1/schedules/{name}/pause", "post", "pauseSchedule"),
        ("/v1/schedules/{name}/resume", "post", "resumeSchedule"),
        ("/v1/schedules/{name}/run", "post", "runSchedule"),
        ("/v1/suppressions/{address}", "get", "checkSuppression"),
        ("/v1/callbacks/twilio", "post", "twilioStatusCallback"),
        ("/v1/callbacks/mitake", "get", "mitakeDeliveryReport"),
        ("/v1/callbacks/ses", "post", "sesNotification"),
    ];
    for (path, method, name) in names {
        if let Some(operation) = doc["paths"].get_mut(path).and_then(|p| p.get_mut(method)) {
            operation["operationId"] = json!(name);
        }
    }
}

/// Drops the component schemas nothing refers to any more (the loose ones the strict bodies
/// replaced), until none is left over.
fn prune_unused(doc: &mut Value) {
    loop {
        let text = doc.to_string();
        let Some(schemas) = doc["components"]["schemas"].as_object_mut() else { return };
        let unused: Vec<String> = schemas
            .keys()
            .filter(|name| !text.contains(&format!("\"#/components/schemas/{name}\"")))
            .cloned()
            .collect();
        if unused.is_empty() {
            return;
        }
        for name in unused {
            schemas.remove(&name);
        }
    }
}

/// Redoc's standalone bundle (npm package `redoc` 2.5.4, `bundles/redoc.standalone.js`, MIT),
/// vendored in `assets/redoc/` and served from the binary: the page loads nothing from a
/// third party. `assets/redoc/README.md` says how to update it.
static REDOC_JS: &[u8] = include_bytes!("../assets/redoc/redoc.standalone.js");

/// Where the page loads Redoc from.
pub const REDOC_PATH: &str = "/docs/redoc.standalone.js";

/// The page's Content-Security-Policy: scripts from this origin only (no inline script, no
/// eval), the document fetched from here only. Redoc needs inline styles (styled-components),
/// `data:` images and fonts of its own, and a `blob:` worker for its search.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// Renders `/openapi.json` with Redoc, served by this binary (`<redoc spec-url>` starts itself).
pub async fn docs() -> impl IntoResponse {
    let page = format!(
        r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Jobplane API</title><meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<noscript>The machine-readable document is at <a href="/openapi.json">/openapi.json</a>.</noscript>
<redoc spec-url="/openapi.json"></redoc>
<script src="{REDOC_PATH}"></script>
</body>
</html>"#
    );
    ([(header::CONTENT_SECURITY_POLICY, DOCS_CSP), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")], Html(page))
}

/// Redoc's bundle, cacheable for a day.
pub async fn redoc_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        REDOC_JS,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use sha2::{Digest, Sha256};

    /// One schema per kind, chosen by `kind`; every reference resolves; the loose documentation
    /// types the strict schemas replaced are gone.
    #[test]
    fn the_bodies_that_store_jobs_are_one_schema_per_kind() {
        let doc = super::document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let job = &schemas["JobRequest"];
        assert_eq!(job["oneOf"].as_array().unwrap().len(), 4);
        assert_eq!(job["discriminator"]["propertyName"], "kind");
        assert_eq!(schemas["OtpSmsJob"]["additionalProperties"], false);
        assert_eq!(schemas["OtpSmsJob"]["properties"]["max_attempts"]["maximum"], 10);
        assert_eq!(schemas["AuditLogBatchJob"]["properties"]["max_attempts"]["maximum"], 50);
        assert_eq!(schemas["ScheduleRequest"]["properties"]["job"]["oneOf"].as_array().unwrap().len(), 3);
        let body = |path: &str| {
            doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].clone()
        };
        assert_eq!(body("/v1/jobs"), "#/components/schemas/JobRequest");
        assert_eq!(body("/v1/jobs/batch"), "#/components/schemas/BatchRequest");
        let text = doc.to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(schemas.contains_key(name), "{name}");
        }
        for gone in ["JobRequestDoc", "BatchRequestDoc", "Payload", "OtpSms"] {
            assert!(!schemas.contains_key(gone), "{gone}");
        }
        let limit = doc["paths"]["/v1/audit-logs"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(limit["schema"]["maximum"], 1000);
        let mut ids: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|operation| operation["operationId"].as_str())
            .collect();
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count, "operation ids are unique: {ids:?}");
    }

    #[test]
    fn the_vendored_redoc_is_the_one_recorded() {
        // assets/redoc/README.md records this digest: change both together.
        assert_eq!(
            format!("{:x}", Sha256::digest(super::REDOC_JS)),
            "dcaf76612bc4a3fbcc923a8966dee2f6146a5f32e5ce1b6f02dd60cbbf89500b"
        );
    }
}
