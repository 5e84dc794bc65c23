//! `GET /v1/suppressions/{address}`: whether an email address is on the suppression list, so
//! a producer can tell its user before it enqueues an email that would end `dead` with reason
//! `suppressed`. The list is the deployment's, shared by every producer: it says only what the
//! providers reported about an address, never whose job it was.

use axum::Json;
use axum::extract::{Path, State};
use jobs::suppression::Suppression;
use serde::Serialize;

use crate::AppState;
use crate::auth::Producer;
use crate::problem::{ApiError, ProblemDoc};

/// An entry as a producer sees it: the job that caused it is left out (it may be another
/// producer's).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SuppressionView {
    /// The normalised address (display name dropped, lower-cased).
    pub address: String,
    /// `bounce`, `complaint` or `manual`.
    pub reason: jobs::suppression::SuppressionReason,
    pub at: chrono::DateTime<chrono::Utc>,
    /// What the provider or the operator said (a bounce's diagnostic).
    pub detail: String,
}

impl From<Suppression> for SuppressionView {
    fn from(s: Suppression) -> Self {
        Self { address: s.address, reason: s.reason, at: s.at, detail: s.detail }
    }
}

#[utoipa::path(get, path = "/v1/suppressions/{address}", tag = "suppressions",
    params(("address" = String, Path, description = "An email address (a display name is dropped; the match is case-insensitive)")),
    responses(
        (status = 200, description = "Suppressed: an email to it ends `dead` with reason `suppressed`, unsent", body = SuppressionView),
        (status = 401, description = "Missing or unknown API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Not on the list (or not an address)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn check(
    State(state): State<AppState>,
    _producer: Producer,
    Path(address): Path<String>,
) -> Result<Json<SuppressionView>, ApiError> {
    match state.suppressions.get(&address).await? {
        Some(entry) => Ok(Json(entry.into())),
        None => Err(ApiError::NotSuppressed(address.chars().take(320).collect())),
    }
}
