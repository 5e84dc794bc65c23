//! The OpenAPI document, generated from the handlers and types, and a page that renders it.

use axum::Json;
use axum::response::Html;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::problem::Problem;
use crate::routes;

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Jobplane producer API", description = "Validates and enqueues OTP SMS, email, webhook and audit-log jobs."),
    paths(routes::create_job, routes::create_batch, routes::get_job, crate::audit_logs::list,
        crate::schedules::put, crate::schedules::list, crate::schedules::delete),
    components(schemas(Problem, jobs::FieldError, jobs::JobInfo, jobs::JobStatus, jobs::Kind)),
    modifiers(&BearerAuth),
    tags((name = "jobs", description = "Enqueue jobs and follow them"),
         (name = "audit logs", description = "Read the audit events workers wrote to PostgreSQL"),
         (name = "schedules", description = "Recurring jobs on cron expressions in IANA time zones"))
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

pub async fn json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Renders `/openapi.json` with Scalar's API reference, loaded by the browser from a CDN:
/// no asset is fetched at build time.
pub async fn docs() -> Html<&'static str> {
    Html(
        r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Jobplane API</title><meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<noscript>The machine-readable document is at <a href="/openapi.json">/openapi.json</a>.</noscript>
<script id="api-reference" data-url="/openapi.json"></script>
<script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script>
</body>
</html>"#,
    )
}
