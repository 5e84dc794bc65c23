//! What a call can fail with: the API's problem document, or the way there.

use std::time::Duration;

use serde::Deserialize;

use crate::FieldError;

/// An `application/problem+json` answer (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Problem {
    /// A URI reference naming the kind of problem, such as `/problems/validation`.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub title: String,
    pub status: u16,
    #[serde(default)]
    pub detail: Option<String>,
    /// For validation problems: each broken rule, `field` a JSON pointer into the request.
    #[serde(default)]
    pub errors: Vec<FieldError>,
    /// The limit a `429` names (`otp_per_number`, ...), when it names one.
    #[serde(default)]
    pub limit: Option<String>,
    /// Batch only: the jobs of other kinds the request did enqueue before a conflict or an OTP
    /// limit refused the rest (a `422` or `429`), as the API lists them.
    #[serde(default)]
    pub enqueued: Option<serde_json::Value>,
    /// The answer's `Retry-After`, when it had one.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

impl Problem {
    /// The pointers of the fields this problem names.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.errors.iter().map(|e| e.field.as_str())
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, if self.title.is_empty() { &self.kind } else { &self.title })?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        for e in &self.errors {
            write!(f, "; {}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused the call (or still answered `503`/`429` when the deadline came).
    #[error("the API answered {0}")]
    Problem(Box<Problem>),
    /// The request never got an answer (connection refused, reset, timed out), the last
    /// attempt's error once the deadline came.
    #[error("the API could not be reached after {attempts} attempt(s)")]
    Transport {
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not what the API documents.
    #[error("unexpected answer {status}: {message}")]
    Unexpected { status: u16, message: String },
    /// A batch stopped part-way: the requests before the failed one were enqueued, and
    /// `enqueued` holds their answers in order (the first `enqueued.len()` jobs); `source` is
    /// why the rest were not. Sending the rest again (with the keys the jobs carry) is safe.
    #[error("{} job(s) of the batch were enqueued, then: {source}", enqueued.len())]
    Batch { enqueued: Vec<crate::views::BatchItem>, source: Box<Error> },
    /// The call was refused before it was sent: a rule of the API broken here already, or a
    /// client setting.
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl Error {
    /// The problem document, when the API answered one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Problem(p) => Some(p),
            Error::Batch { source, .. } => source.problem(),
            _ => None,
        }
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Problem(p) => Some(p.status),
            Error::Unexpected { status, .. } => Some(*status),
            Error::Batch { source, .. } => source.status(),
            _ => None,
        }
    }
}
