//! Jobplane's producer client: enqueue jobs, follow and cancel them, manage schedules and read
//! the audit log over HTTP, the safe way by default.
//!
//! - Every logical call that creates something carries a fresh `Idempotency-Key`, the same on
//!   each of its retries, so a retry never makes a second job.
//! - `503`, `429` and connection failures are retried with jittered exponential backoff, never
//!   sooner than the answer's `Retry-After`, until the call's deadline ([`DEFAULT_DEADLINE`]).
//! - A problem document (`application/problem+json`) becomes [`Error::Problem`] with its
//!   `type`, `status`, `detail` and field errors (JSON pointers such as `/payload/to`).
//! - A W3C `traceparent` given in [`CallOptions`] is passed on, so the worker continues the trace.
//!
//! # Layout
//!
//! - [`payload`], [`validation`], [`Kind`], [`Priority`]: the `jobs` crate's own source files
//!   (one definition, compiled here without its Redis side): the typed payloads and their rules.
//! - [`job`]: a job to enqueue, built from a typed payload.
//! - [`client`]: the calls; [`retry`]: when and how long to retry; [`error`]: what fails.
//! - [`views`]: what the API answers.

#[path = "../../../jobs/src/kind.rs"]
mod kind;
#[path = "../../../jobs/src/payload.rs"]
pub mod payload;
#[path = "../../../jobs/src/priority.rs"]
pub mod priority;
#[path = "../../../jobs/src/validation.rs"]
pub mod validation;

pub mod client;
pub mod error;
pub mod job;
pub mod retry;
pub mod views;

pub use client::{AuditQuery, CallOptions, Client, ClientBuilder, MAX_BATCH};
pub use error::{Error, Problem};
pub use job::Job;
pub use kind::Kind;
pub use priority::Priority;
pub use retry::DEFAULT_DEADLINE;
pub use validation::FieldError;
