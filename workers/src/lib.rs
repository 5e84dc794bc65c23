//! The worker process: one apalis worker per kind it consumes, each leasing jobs from its
//! queue in Redis ([`backend`]), running them ([`deliver`]) and recording each outcome
//! ([`ack`]) with the retry policy and the dead letters of `jobs`.
//!
//! # Layout
//! - [`Config`]: every setting, read and checked at start ([`deliver::Settings`] for the providers').
//! - [`backend`]: the fetch/idle loop, an `async fn` turned into a stream, and the apalis
//!   backend over it; each task carries its lease ([`backend::Job`]).
//! - [`ack`]: waits for each job's outcome to be written, batching the writes (`finish.lua`).
//! - [`leases`]: the jobs held, and their lease renewals.
//! - [`heartbeat`]: this process's entry in the fleet registry.
//! - [`outcome`]: a handler's typed result, judged into the job's next step.
//! - [`deliver`]: what running a job of each kind means.
//! - [`scheduler`]: fires due recurring schedules.

pub mod ack;
pub mod backend;
pub mod deliver;
pub mod heartbeat;
pub mod leases;
pub mod outcome;
pub mod scheduler;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use apalis_core::worker::context::WorkerContext;
use futures::StreamExt;
use jobs::queue::{Queue, Retention};
use jobs::redis_conn::RedisSettings;
use jobs::retry::Backoff;
use jobs::settings::{Env, SettingError};
use jobs::{Keys, Kind, Store};
use tokio::net::TcpListener;

use crate::ack::Acker;
use crate::backend::{FetchSettings, Job, RedisBackend};
use crate::deliver::Deliveries;
use crate::leases::Inflight;

#[derive(Debug, Clone)]
pub struct Config {
    /// `WORKER_METRICS_ADDR`, default `127.0.0.1:9091`; `0` turns the endpoint off.
    pub metrics_addr: Option<SocketAddr>,
    pub redis: RedisSettings,
    /// `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/jobs`.
    pub database_url: jobs::settings::SecretUrl,
    /// `WORKER_KINDS` (or `--kinds`): the kinds this worker consumes, default all.
    pub kinds: BTreeSet<Kind>,
    /// `WORKER_CONCURRENCY_<KIND>` (default 50 each; audit_log 2000: an audit job only waits
    /// for its batch, and two batches of `AUDIT_BATCH_SIZE` keep the writer busy).
    pub concurrency: BTreeMap<Kind, usize>,
    pub backoff: BTreeMap<Kind, Backoff>,
    /// `WORKER_BATCH` (default 100): most jobs leased per fetch.
    pub batch: usize,
    /// `WORKER_LEASE_SECONDS` (default 30): a job whose worker stops answering runs again after this.
    pub lease: Duration,
    /// `WORKER_SHUTDOWN_GRACE_SECONDS` (default 30): how long SIGTERM waits for running jobs.
    pub grace: Duration,
    /// Per kind: `JOB_RETENTION_SECONDS_<KIND>` (default `JOB_RETENTION_SECONDS`, 86400;
    /// for audit_log 0), `DEAD_LETTER_CAP` (100000), `DEAD_LETTER_CAP_PER_PRODUCER` (10000),
    /// `DEAD_LETTER_MAX_AGE_SECONDS` (90 days).
    pub retention: BTreeMap<Kind, Retention>,
    pub json_logs: bool,
    /// `WORKER_SCHEDULER` (default true): this worker fires due schedules. Any number may.
    pub scheduler: bool,
    /// `SCHEDULES_FILE`: schedules (TOML) this worker stores at start, read and checked here.
    pub file_schedules: Vec<jobs::schedule::Schedule>,
    /// `IDEMPOTENCY_TTL_SECONDS` (default 86400), for the keys of scheduled jobs.
    pub idempotency_ttl: Duration,
    /// `HTTP_HEADER_READ_TIMEOUT_MS`, `HTTP_IDLE_TIMEOUT_SECONDS`, `HTTP_MAX_CONNECTIONS` of the metrics address.
    pub http: service::HttpLimits,
    /// `RATE_LIMIT_<KIND>` (`<n>/s` or `<n>/s:<burst>`; no limit by default): each kind's
    /// default rate limit, written at start unless the console has set one (`jobs::rate`).
    pub rate_limits: BTreeMap<Kind, jobs::rate::RateLimit>,
    /// The providers' settings (`WEBHOOK_*`, `SMS_*`, `TWILIO_*`, `EMAIL_*`, `AUDIT_*`,
    /// `WORKER_JOB_TIMEOUT_SECONDS`), of the kinds this worker consumes.
    pub deliveries: deliver::Settings,
}

impl Config {
    /// Reads and checks every setting of the worker, so a bad value stops it at start with one
    /// line naming the variable; nothing reads the environment later.
    pub fn from_env(env: &Env, kinds_flag: Option<&str>) -> Result<Self, SettingError> {
        let metrics_addr = match env.or("WORKER_METRICS_ADDR", "127.0.0.1:9091").as_str() {
            "0" => None,
            raw => Some(raw.parse().map_err(|e| {
                SettingError::new("WORKER_METRICS_ADDR", format!("`{raw}` is not host:port or 0 ({e})"))
            })?),
        };
        let kinds = parse_kinds(kinds_flag.or(env.get("WORKER_KINDS")))
            .map_err(|problem| SettingError::new("WORKER_KINDS", problem))?;
        let mut concurrency = BTreeMap::new();
        let mut backoff = BTreeMap::new();
        for kind in Kind::ALL {
            let (name, default) = match kind {
                Kind::OtpSms => ("WORKER_CONCURRENCY_OTP_SMS", 50),
                Kind::Email => ("WORKER_CONCURRENCY_EMAIL", 50),
                Kind::Webhook => ("WORKER_CONCURRENCY_WEBHOOK", 50),
                Kind::AuditLog => ("WORKER_CONCURRENCY_AUDIT_LOG", 2000),
            };
            let n: usize = env.parse(name, default)?;
            if !(1..=10_000).contains(&n) {
                return Err(SettingError::new(name, "must be between 1 and 10000"));
            }
            concurrency.insert(kind, n);
            backoff.insert(kind, Backoff::from_env(env, kind)?);
        }
        let lease = env.seconds("WORKER_LEASE_SECONDS", 30)?;
        if lease < Duration::from_secs(3) {
            return Err(SettingError::new("WORKER_LEASE_SECONDS", "must be at least 3"));
        }
        let batch: usize = env.parse("WORKER_BATCH", 100)?;
        if !(1..=1000).contains(&batch) {
            return Err(SettingError::new("WORKER_BATCH", "must be between 1 and 1000"));
        }
        let scheduler = env.flag("WORKER_SCHEDULER", true)?;
        if !scheduler && env.get("SCHEDULES_FILE").is_some_and(|p| !p.is_empty()) {
            return Err(SettingError::new("SCHEDULES_FILE", "set, but WORKER_SCHEDULER=false would never load it"));
        }
        let shared = Retention {
            finished: Duration::ZERO,
            dead_cap: env.parse("DEAD_LETTER_CAP", 100_000)?,
            dead_cap_per_producer: match env.parse("DEAD_LETTER_CAP_PER_PRODUCER", 10_000)? {
                0 => return Err(SettingError::new("DEAD_LETTER_CAP_PER_PRODUCER", "must be at least 1")),
                n => n,
            },
            dead_age: env.seconds("DEAD_LETTER_MAX_AGE_SECONDS", 90 * 86_400)?,
        };
        let retention = jobs::settings::finished_retention(env)?
            .into_iter()
            .map(|(kind, finished)| (kind, Retention { finished, ..shared }))
            .collect();
        Ok(Self {
            metrics_addr,
            redis: RedisSettings::from_env(env)?,
            database_url: db::database_url(env)?,
            concurrency,
            backoff,
            batch,
            lease,
            grace: env.seconds("WORKER_SHUTDOWN_GRACE_SECONDS", 30)?,
            retention,
            json_logs: env.get("LOG_FORMAT") == Some("json"),
            scheduler,
            file_schedules: match env.get("SCHEDULES_FILE").filter(|p| !p.is_empty()) {
                Some(path) => scheduler::read_file(path, chrono::Utc::now())
                    .map_err(|problem| SettingError::new("SCHEDULES_FILE", problem))?,
                None => Vec::new(),
            },
            idempotency_ttl: env.seconds("IDEMPOTENCY_TTL_SECONDS", 86_400)?,
            http: service::HttpLimits::from_env(env)?,
            rate_limits: jobs::rate::from_env(env)?,
            deliveries: deliver::Settings::from_env(env, &kinds)?,
            kinds,
        })
    }
}

fn parse_kinds(raw: Option<&str>) -> Result<BTreeSet<Kind>, String> {
    match raw.map(str::trim).filter(|r| !r.is_empty() && *r != "all") {
        None => Ok(Kind::ALL.into_iter().collect()),
        Some(list) => list.split(',').map(|k| k.trim().parse::<Kind>().map_err(|e| e.to_string())).collect(),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname").map_or_else(|_| "host".into(), |h| h.trim().to_owned())
}

/// A name unique to this process, shown in attempt records and the fleet registry.
fn worker_id() -> String {
    format!("{}-{}-{:04x}", host_name(), std::process::id(), fastrand::u16(..))
}

/// Runs the delivery as a task of its own, so jobs spread over every core (apalis polls its
/// jobs inside one worker future), bounded by the job timeout; a panic is raised again here
/// for apalis's catch-panic layer.
async fn handle(job: Job, deliveries: Data<Arc<Deliveries>>) -> Result<outcome::Delivered, BoxDynError> {
    let Job { lease: mut job, payload } = job;
    let deliveries = Arc::clone(&deliveries);
    let timeout = deliveries.timeout;
    // Every log line about the job carries its id, kind, attempt and producer; a job enqueued
    // with a W3C traceparent continues that trace in a span of its own (a new span id), which
    // is also the parent its webhook delivery announces.
    let trace_id = job.traceparent.as_deref().and_then(|t| t.split('-').nth(1)).map(str::to_owned);
    let span = tracing::info_span!(
        "job",
        job_id = %job.id,
        kind = %job.kind,
        attempt = job.attempt,
        producer = %job.producer,
        trace_id = trace_id.as_deref().unwrap_or(""),
        span_id = tracing::field::Empty,
        parent_span_id = job.traceparent.as_deref().and_then(|t| t.split('-').nth(2)).unwrap_or(""),
    );
    if let Some(parent) = &job.traceparent {
        service::continue_trace(&span, parent);
    }
    // With spans exported, the span's own context; otherwise a span id of our own in the trace.
    job.traceparent = service::traceparent_of(&span)
        .filter(|_| trace_id.is_some())
        .or_else(|| trace_id.as_ref().map(|trace| format!("00-{trace}-{:016x}-01", fastrand::u64(1..))));
    if let Some(span_id) = job.traceparent.as_deref().and_then(|t| t.split('-').nth(2)) {
        span.record("span_id", span_id);
    }
    // Boxed: the task cell then holds a pointer, not the whole delivery future, which tokio
    // would otherwise move in and out of the cell for every job (memmove in the profile).
    let delivery: futures::future::BoxFuture<'static, _> =
        Box::pin(tracing::Instrument::instrument(async move { deliveries.run(&job, &payload).await }, span));
    let task = tokio::spawn(delivery);
    let abort = task.abort_handle();
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(result)) => result.map_err(Into::into),
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => Err(Box::new(e)),
        Err(_) => {
            abort.abort();
            Err(Box::new(outcome::JobError::Retry(format!("timed out after {} s", timeout.as_secs()))))
        }
    }
}

struct Running {
    kind: Kind,
    context: WorkerContext,
    queue: Queue,
    inflight: Inflight,
    /// Driven by the caller's task: apalis's worker future is not `Send` with handlers like ours.
    done: futures::future::LocalBoxFuture<'static, Result<(), String>>,
}

/// Runs until `shutdown` resolves, then drains. Returns an error, for a non-zero exit, if a
/// worker ends by itself: a worker never stays alive and idle.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    service::metrics_handle();
    let conn = jobs::redis_conn::connect(&config.redis.topology, Duration::from_secs(5))?;
    let keys = Keys::new(&config.redis.namespace);
    let destinations = jobs::destinations::Destinations::new(conn.clone(), &keys);
    // The providers' settings first: one unusable stops the worker with one line, before any log.
    let suppressions = jobs::suppression::Suppressions::new(conn.clone(), &keys, jobs::suppression::DEFAULT_CAP);
    let deliveries = Arc::new(
        Deliveries::start(&config.deliveries, config.database_url.expose(), destinations.clone(), suppressions).await?,
    );
    tracing::info!(redis = %config.redis.topology.describe(), "Redis");
    if config.kinds.contains(&Kind::Webhook) {
        tokio::spawn(deliver::flow::sample_cooling(destinations, Duration::from_secs(5)));
    }
    let id = worker_id();
    tokio::spawn(db::migrate_until_done(config.database_url.expose().to_owned()));
    tokio::spawn(jobs::queue_depths::sample(
        jobs::dead::DeadLetters::new(conn.clone(), keys.clone()),
        config.kinds.iter().copied().collect(),
        Duration::from_secs(5),
    ));
    if config.scheduler {
        let schedules = jobs::schedule::ScheduleStore::new(conn.clone(), &config.redis.namespace);
        let queue = Store::new(conn.clone(), keys.clone(), config.idempotency_ttl, Duration::from_secs(5));
        let from_file = config.file_schedules.clone();
        tokio::spawn(async move {
            while let Err(e) = scheduler::load(&schedules, &from_file).await {
                tracing::warn!(error = %e, "SCHEDULES_FILE not stored yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            scheduler::run(schedules, queue).await;
        });
    }
    tokio::spawn(jobs::queue_depths::sample_control(
        jobs::pause::Pauses::new(conn.clone(), keys.clone()),
        jobs::fleet::Fleet::new(conn.clone(), keys.clone()),
        config.kinds.iter().copied().collect(),
        Duration::from_secs(5),
    ));
    let rates = jobs::rate::RateLimits::new(conn.clone(), keys.clone());
    for &kind in &config.kinds {
        tokio::spawn(put_rate_default(rates.clone(), kind, config.rate_limits.get(&kind).copied(), id.clone()));
    }
    tokio::spawn(jobs::rate::sample(rates, config.kinds.iter().copied().collect(), Duration::from_secs(5)));
    let mut running: Vec<Running> =
        config.kinds.iter().map(|&kind| start(&config, kind, &conn, &keys, &id, &deliveries)).collect();
    let fleet = jobs::fleet::Fleet::new(conn.clone(), keys.clone());
    let beating = tokio::spawn(heartbeat::run(
        fleet.clone(),
        heartbeat_of(&config, &id),
        running.iter().map(|r| (r.kind, r.inflight.clone())).collect(),
        config.lease,
    ));
    tracing::info!(worker = %id, kinds = ?config.kinds, "worker started");

    if let Some(addr) = config.metrics_addr {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("WORKER_METRICS_ADDR: cannot listen on {addr} ({e})"))?;
        let store = Store::new(conn.clone(), keys.clone(), Duration::from_hours(24), Duration::from_secs(2));
        let limits = config.http;
        let ops = service::ops_router("redis", move || {
            let store = store.clone();
            async move { store.readiness().await.map_err(|e| service::NotReady { state: e.state(), detail: e.detail() }) }
        });
        tokio::spawn(service::http_server::serve(listener, ops, limits, std::future::pending()));
    }

    let ended = futures::future::select_all(running.iter_mut().map(|r| &mut r.done));
    tokio::select! {
        () = shutdown => {
            let drained = drain(running, config.grace).await;
            deliveries.flush(Duration::from_secs(2)).await;
            beating.abort();
            if let Err(e) = fleet.leave(&id).await {
                tracing::warn!(error = jobs::store::chain(&e), "could not leave the fleet registry; the entry will show gone");
            }
            drained
        }
        (result, index, _) = ended => {
            let kind = config.kinds.iter().nth(index).map_or("?", |k| k.as_str());
            let why = match result { Ok(()) => "ended".to_owned(), Err(e) => e };
            anyhow::bail!("the {kind} worker stopped by itself ({why}); exiting so a supervisor restarts this process")
        }
    }
}

/// Writes `kind`'s `RATE_LIMIT_<KIND>` (or its absence) as the default limit, unless the
/// console has set one; retried until Redis takes it.
async fn put_rate_default(rates: jobs::rate::RateLimits, kind: Kind, limit: Option<jobs::rate::RateLimit>, id: String) {
    loop {
        match rates.put_default(kind, limit, &id).await {
            Ok(written) => {
                let limit = limit.map_or_else(|| "none".to_owned(), |l| l.to_string());
                tracing::info!(%kind, %limit, written, "rate limit setting (not written: the console's limit stands)");
                return;
            }
            Err(e) => {
                tracing::warn!(%kind, error = jobs::store::chain(&e), "rate limit setting not written yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// This process's heartbeat before its first jobs.
fn heartbeat_of(config: &Config, id: &str) -> jobs::fleet::Heartbeat {
    jobs::fleet::Heartbeat {
        id: id.to_owned(),
        host: host_name(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        kinds: config.kinds.iter().copied().collect(),
        concurrency: config.kinds.iter().map(|k| (*k, config.concurrency[k])).collect(),
        in_flight: config.kinds.iter().map(|k| (*k, 0)).collect(),
        started_at: chrono::Utc::now().timestamp_millis(),
        lease_ms: u64::try_from(config.lease.as_millis()).unwrap_or(u64::MAX),
        last_seen_at: None,
    }
}

fn start(
    config: &Config,
    kind: Kind,
    conn: &jobs::redis_conn::Conn,
    keys: &Keys,
    id: &str,
    deliveries: &Arc<Deliveries>,
) -> Running {
    let queue = Queue::new(conn.clone(), keys, kind, id);
    let inflight = Inflight::default();
    let acker = Acker::spawn(queue.clone(), config.backoff[&kind], config.retention[&kind], inflight.clone())
        .with_rates(jobs::rate::RateLimits::new(conn.clone(), keys.clone()));
    tokio::spawn(leases::keep_alive(queue.clone(), inflight.clone(), config.lease));
    let concurrency = config.concurrency[&kind];
    let settings = FetchSettings {
        batch: config.batch,
        concurrency,
        lease: config.lease,
        promote_limit: 1000,
        // An idle worker blocks on the queue's wake-up list for up to 100 ms (new jobs wake it at
        // once; the timeout bounds how late a due delayed job or an expired lease is picked up).
        // Were that connection to fail, it polls: 1 ms after a queue turns empty, doubling to 100 ms.
        idle_min: Duration::from_millis(1),
        idle_max: Duration::from_millis(100),
        // A paused queue is looked at again 4 times a second (and at once on a resume's
        // wake-up marker): a resume costs at most this, a pause nothing (fetch.lua checks it).
        paused_recheck: Duration::from_millis(250),
    };
    // A connection of its own: a connection blocked in BLPOP serves nothing else.
    let waker = jobs::redis_conn::connect(&config.redis.topology, Duration::from_secs(5))
        .inspect_err(|e| tracing::warn!(%kind, error = %e, "no wake-up connection; polling"))
        .ok();
    let backend = RedisBackend::new(queue.clone(), settings, inflight.clone(), acker, waker);
    let context = WorkerContext::new(&format!("{id}:{kind}"));
    let worker = WorkerBuilder::new(&context)
        .backend(backend)
        .data(deliveries.clone())
        .concurrency(concurrency)
        .catch_panic()
        .build(handle);
    let stopper = context.clone();
    let done = Box::pin(async move {
        let mut stream = std::pin::pin!(worker.stream());
        let mut first_error = None;
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::error!(%kind, error = %e, "worker failed; draining");
                first_error.get_or_insert_with(|| e.to_string());
                let _ = stopper.stop();
            }
        }
        first_error.map_or(Ok(()), Err)
    });
    Running { kind, context, queue, inflight, done }
}

/// SIGTERM: stop fetching, let running jobs finish within `grace`, put back what is left.
async fn drain(running: Vec<Running>, grace: Duration) -> anyhow::Result<()> {
    tracing::info!(grace_seconds = grace.as_secs(), "stopping: no new jobs; waiting for running ones");
    for r in &running {
        let _ = r.context.stop();
    }
    // Every kind drains at once: a slow kind must not hold back the outcomes of the others.
    let deadline = tokio::time::Instant::now() + grace;
    let drains = running.into_iter().map(|r| async move {
        if tokio::time::timeout_at(deadline, r.done).await.is_err() {
            let left = r.inflight.snapshot();
            match r.queue.release(&left).await {
                Ok(n) => tracing::warn!(kind = %r.kind, put_back = n, "grace period over: put back the jobs still running"),
                Err(e) => {
                    tracing::error!(kind = %r.kind, error = jobs::store::chain(&e), "grace period over and Redis unreachable: leases will expire");
                }
            }
        }
    });
    futures::future::join_all(drains).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signing secret that reads (the webhook kind needs one).
    const SECRET: (&str, &str) = ("WEBHOOK_SIGNING_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");

    /// `Config::from_env` over `pairs` and a valid signing secret.
    fn config(pairs: &[(&str, &str)], kinds: Option<&str>) -> Result<Config, SettingError> {
        let mut pairs = pairs.to_vec();
        if !pairs.iter().any(|(name, _)| *name == SECRET.0) {
            pairs.push(SECRET);
        }
        Config::from_env(&Env::from_pairs(&pairs), kinds)
    }

    #[test]
    fn debug_never_shows_a_secret_setting() {
        let twilio = config(
            &[
                ("DATABASE_URL", "postgres://app:s3cretpw@db:5432/jobs"),
                ("REDIS_URL", "redis://:s3cretpw@redis:6379"),
                ("WEBHOOK_SIGNING_SECRET", "whsec_s3cretpwAAAAAAAAAAAAAAAA"),
                ("WEBHOOK_PROXY_URL", "http://proxy:s3cretpw@proxy.internal:3128"),
                ("SMS_PROVIDER", "twilio"),
                ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
                ("TWILIO_AUTH_TOKEN", "s3cretpw"),
                ("TWILIO_FROM", "+14155550100"),
                ("TWILIO_BASE_URL", "https://twilio:s3cretpw@twilio.internal"),
                ("AWS_SECRET_ACCESS_KEY", "s3cretpw"),
            ],
            None,
        )
        .unwrap();
        let gateway = [("SMS_PROVIDER", "http"), ("SMS_HTTP_URL", "https://sms"), ("SMS_HTTP_TOKEN", "s3cretpw")];
        for shown in [format!("{twilio:?}"), format!("{:?}", config(&gateway, None).unwrap())] {
            assert!(!shown.contains("s3cretpw"), "{shown}");
        }
    }

    #[test]
    fn kinds_narrow_and_bad_settings_are_named() {
        assert_eq!(parse_kinds(None).unwrap().len(), 4);
        assert_eq!(parse_kinds(Some("email, webhook")).unwrap().len(), 2);
        let err = config(&[("WORKER_KINDS", "email,fax")], None).unwrap_err();
        assert!(err.to_string().starts_with("WORKER_KINDS: unknown kind `fax`"), "{err}");
        let err = config(&[], Some("pager")).unwrap_err();
        assert!(err.to_string().starts_with("WORKER_KINDS: "));
        let err = config(&[("WORKER_METRICS_ADDR", "nope")], None).unwrap_err();
        assert!(err.to_string().starts_with("WORKER_METRICS_ADDR: "));
        let err = config(&[("RATE_LIMIT_EMAIL", "14/m")], None).unwrap_err();
        assert!(err.to_string().starts_with("RATE_LIMIT_EMAIL: `14/m` is not"), "{err}");
        let limits = config(&[("RATE_LIMIT_EMAIL", "14/s:28")], None).unwrap().rate_limits;
        assert_eq!(limits[&Kind::Email], jobs::rate::RateLimit { per_second: 14, burst: 28 });
        assert!(config(&[("WORKER_METRICS_ADDR", "0")], None).unwrap().metrics_addr.is_none());
        let err = config(&[("WORKER_CONCURRENCY_EMAIL", "0")], None).unwrap_err();
        assert!(err.to_string().starts_with("WORKER_CONCURRENCY_EMAIL: "));
        let err = config(&[("WORKER_LEASE_SECONDS", "1")], None).unwrap_err();
        assert!(err.to_string().starts_with("WORKER_LEASE_SECONDS: "));
    }

    /// Every provider setting is read at start, not when the first job of its kind runs.
    #[test]
    fn a_bad_delivery_setting_stops_the_start_naming_its_variable() {
        let ses = [("EMAIL_PROVIDER", "ses"), ("EMAIL_FROM", "Shop <noreply@example.org>")];
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("WORKER_JOB_TIMEOUT_SECONDS", "0")], "WORKER_JOB_TIMEOUT_SECONDS"),
            (&[("WEBHOOK_SIGNING_SECRET", "whsec_c2hvcnQ=")], "WEBHOOK_SIGNING_SECRET"),
            (&[("WEBHOOK_TIMEOUT_MS", "soon")], "WEBHOOK_TIMEOUT_MS"),
            (&[("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "maybe")], "WEBHOOK_ALLOW_PRIVATE_NETWORKS"),
            (&[("WEBHOOK_PROXY_URL", "ftp://proxy.internal")], "WEBHOOK_PROXY_URL"),
            (&[("WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION", "-1")], "WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION"),
            (&[("WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION", "10001")], "WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION"),
            (&[("WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION", "eight")], "WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION"),
            (&[("WEBHOOK_COOLDOWN_FAILURES", "0")], "WEBHOOK_COOLDOWN_FAILURES"),
            (
                &[("WEBHOOK_COOLDOWN_MIN_SECONDS", "60"), ("WEBHOOK_COOLDOWN_MAX_SECONDS", "30")],
                "WEBHOOK_COOLDOWN_MAX_SECONDS",
            ),
            (&[("WEBHOOK_MAX_DEFERRAL_SECONDS", "0")], "WEBHOOK_MAX_DEFERRAL_SECONDS"),
            (&[("SMS_PROVIDER", "pigeon")], "SMS_PROVIDER"),
            (&[("SMS_TIMEOUT_MS", "0")], "SMS_TIMEOUT_MS"),
            (&[("SMS_PROVIDER", "twilio")], "TWILIO_ACCOUNT_SID"),
            (&[("SMS_PROVIDER", "http")], "SMS_HTTP_URL"),
            (&[("SMS_TEMPLATE_LOGIN", "Welcome")], "SMS_TEMPLATE_LOGIN"),
            (&[("EMAIL_PROVIDER", "carrier")], "EMAIL_PROVIDER"),
            (&[("EMAIL_PROVIDER", "ses")], "EMAIL_FROM"),
            (&[ses[0], ses[1], ("EMAIL_TIMEOUT_MS", "0")], "EMAIL_TIMEOUT_MS"),
            (&[("AUDIT_BATCH_SIZE", "0")], "AUDIT_BATCH_SIZE"),
            (&[("AUDIT_FLUSH_MS", "x")], "AUDIT_FLUSH_MS"),
            (&[("AUDIT_WRITERS", "99")], "AUDIT_WRITERS"),
            (&[("AUDIT_RETENTION_MONTHS", "0")], "AUDIT_RETENTION_MONTHS"),
            (&[("AUDIT_RETENTION_MONTHS", "six")], "AUDIT_RETENTION_MONTHS"),
        ];
        for (pairs, name) in cases {
            let err = config(pairs, None).expect_err(name);
            assert!(err.to_string().starts_with(&format!("{name}: ")), "{pairs:?}: {err}");
        }
        assert!(config(&ses, None).is_ok(), "SES's own settings (region, credentials) are checked as it starts");
        // A kind this worker does not run needs none of its settings.
        let others = [("WEBHOOK_SIGNING_SECRET", ""), ("SMS_PROVIDER", "pigeon"), ("EMAIL_PROVIDER", "ses")];
        assert!(config(&others, Some("audit_log")).is_ok());
    }
}
