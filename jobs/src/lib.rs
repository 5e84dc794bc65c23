//! Jobplane's shared library. It knows nothing of HTTP: it owns the job kinds and their
//! payloads, the validation rules, the Redis layout (`keys`) and its Lua scripts, the enqueue
//! client (`store`) and the settings readers. PostgreSQL is the `db` crate's.

pub mod dead;
pub mod envelope;
pub mod fingerprint;
pub mod keys;
pub mod kind;
pub mod limits;
pub mod payload;
pub mod queue;
pub mod queue_depths;
pub mod readiness;
pub mod redact;
pub mod redis_conn;
pub mod retry;
pub mod schedule;
pub mod settings;
pub mod sms_templates;
pub mod status;
pub mod store;
pub mod validation;

pub use envelope::{JobRequest, NewJob, ValidJob};
pub use keys::Keys;
pub use kind::Kind;
pub use limits::{OtpLimit, OtpLimits};
pub use status::{JobInfo, JobStatus};
pub use store::{EnqueueOutcome, Store, StoreError};
pub use validation::FieldError;
