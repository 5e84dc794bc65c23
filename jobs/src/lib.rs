//! Jobplane's shared library. It knows nothing of HTTP: it owns the job kinds and their
//! payloads, the validation rules, the Redis layout and its Lua scripts, and the settings
//! readers.
//!
//! # Code map
//!
//! - The domain: [`kind`] (the four kinds), [`payload`] and [`validation`] (each kind's rules),
//!   [`envelope`] (a request made a [`NewJob`]), [`retry`] (the backoff policy), [`limits`]
//!   (the OTP SMS guard), [`redact`] (what operators may see), [`schedule`] (cron schedules).
//! - The seam to Redis: [`keys`] names every key (one hash tag per queue, so each script
//!   touches one Cluster slot); [`record`] is the job record, one MessagePack codec shared by
//!   every Rust reader and, through `lua/record.lua`, by every script; [`status`] is what a
//!   record shows to producers.
//! - State transitions, each one script over one queue: [`store`] (enqueue: `lua/enqueue.lua`,
//!   one structured call per queue, tagged results) and [`queue`] (the worker's side: fetch,
//!   finish, extend, release), [`dead`] (replay and delete dead letters), [`control`] (cancel
//!   and run now, for producers and operators), [`delivery`] (providers' delivery reports put
//!   on jobs, `lua/delivery.lua`, with their precedence).
//! - Inspection, read only: [`inspect`] (dead letters listed and read, the queues' counts and
//!   per-minute outcomes), [`browse`] (every job of a kind in one state, in cursor pages whose
//!   cost does not grow with the queue; one job by id with its attempts).
//! - Providers' callbacks: [`callbacks`] (`CALLBACK_BASE_URL`, `CALLBACK_SECRET`).
//! - Connections and operations: [`redis_conn`] (one node, Cluster or Sentinel behind one
//!   `Conn`), [`readiness`] (Redis's answer to `/readyz`), [`queue_depths`] (the depth gauges).
//! - Control of live work: [`pause`] (pausing a kind; a queue's latency), [`rate`] (rate limits
//!   per kind: token buckets, provider throttles), [`fleet`] (the workers' heartbeats),
//!   [`lanes`] (priorities and groups: which ready list a job waits in, `lua/lanes.lua`
//!   prepended to every script that pushes or pops).
//! - Provider feedback: [`suppression`] (addresses never mailed again: hard bounces,
//!   complaints, operators' entries).
//!
//! PostgreSQL is the `db` crate's.
//!
//! The scripts are tested directly against a real Redis in `tests/scripts.rs`.

pub mod browse;
pub mod callbacks;
pub mod control;
pub mod dead;
pub mod delivery;
pub mod destinations;
pub mod envelope;
pub mod fingerprint;
pub mod fleet;
pub mod inspect;
pub mod keys;
pub mod kind;
pub mod lanes;
pub mod limits;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod pause;
pub mod payload;
pub mod priority;
pub mod queue;
pub mod queue_depths;
pub mod rate;
pub mod readiness;
pub mod record;
pub mod redact;
pub mod redis_conn;
pub mod retry;
pub mod schedule;
pub mod settings;
pub mod sms_templates;
pub mod status;
pub mod store;
pub mod suppression;
pub mod validation;

pub use envelope::{JobRequest, NewJob, ValidJob};
pub use keys::Keys;
pub use kind::Kind;
pub use lanes::Priority;
pub use limits::{OtpLimit, OtpLimits};
pub use status::{JobInfo, JobStatus};
pub use store::{EnqueueOutcome, Store, StoreError};
pub use validation::FieldError;
