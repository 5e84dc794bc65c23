//! The OpenAPI document, generated from the handlers and types, and a page that renders it.

use axum::Json;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::problem::ProblemDoc;
use crate::routes;

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

pub async fn json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
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
    use sha2::{Digest, Sha256};

    #[test]
    fn the_vendored_redoc_is_the_one_recorded() {
        // assets/redoc/README.md records this digest: change both together.
        assert_eq!(
            format!("{:x}", Sha256::digest(super::REDOC_JS)),
            "dcaf76612bc4a3fbcc923a8966dee2f6146a5f32e5ce1b6f02dd60cbbf89500b"
        );
    }
}
