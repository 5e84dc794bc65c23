//! End-to-end tests against real Redis and PostgreSQL. Each test has its own Redis
//! namespace (or its own `redis-server`) and its own database, so all run in parallel.

#![expect(clippy::unwrap_used, reason = "a fixture that cannot be set up fails the test, loudly")]

mod audit;
mod batch;
mod binaries;
mod browse;
mod browser;
mod callbacks;
mod cancel;
mod chaos;
mod class_sweep;
mod clients;
mod console;
mod console_hardening;
mod console_review;
mod destinations;
mod edge_hardening;
mod edge_review;
mod email;
mod emulators;
mod enqueue;
mod hardening;
mod idempotency;
mod lanes;
mod leases;
mod live_review;
mod migrations;
mod net_hardening;
mod net_review;
mod observability;
mod ops;
mod panics;
mod pause;
mod providers;
mod ratelimit;
mod receiver;
mod redis_down;
mod replicas;
mod scale;
mod sched_review;
mod schedule_control;
mod schedule_limits;
mod schedules;
mod ses_feedback;
mod sms;
mod strict_schema;
mod support;
mod tls;
mod topology;
mod validation;
mod verify_audit;
mod webhook_verify;
mod worker;
