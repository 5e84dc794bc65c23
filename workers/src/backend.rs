//! Jobplane's Redis storage as an apalis backend: apalis runs the jobs (concurrency, panics,
//! tracing), this backend leases them with `fetch.lua` and, through [`AckLayer`], records
//! each outcome with `finish.lua`.
//!
//! It implements `Backend` directly rather than through apalis's `Persisted`, whose event
//! path flushes acknowledgements only while the backend is idle, drops them at shutdown and
//! ends the worker on one payload it cannot decode (see docs/worker.md).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use futures::FutureExt;
use futures::future::BoxFuture;
use jobs::StoreError;
use jobs::queue::{Leased, Queue};
use jobs::redis_conn::Conn;

use crate::ack::{AckLayer, Acker};
use crate::leases::Inflight;

#[derive(Debug, Clone, Copy)]
pub struct FetchSettings {
    /// Most jobs leased per fetch.
    pub batch: usize,
    /// Jobs run at once; a fetch never leases more than the free slots.
    pub concurrency: usize,
    pub lease: Duration,
    /// Most due scheduled jobs and expired leases moved per fetch.
    pub promote_limit: usize,
    /// Idle polling starts at `idle_min` and doubles up to `idle_max` while the queue is empty.
    /// With a wake-up connection an idle worker instead blocks for `idle_max` on the queue's
    /// wake-up list, and a new job ends the wait at once.
    pub idle_min: Duration,
    pub idle_max: Duration,
}

/// A fetch runs as a task of its own, which records the leased jobs in [`Inflight`] as soon as
/// Redis answers: a stopping worker can then put them back even if it no longer waits for it.
type Fetch = tokio::task::JoinHandle<Result<Fetched, StoreError>>;

/// The jobs leased, and when none were, how soon the queue has work without a new job.
type Fetched = (Vec<(Leased, String)>, Option<Duration>);

pub struct RedisBackend {
    queue: Queue,
    settings: FetchSettings,
    inflight: Inflight,
    acker: Acker,
    buffer: VecDeque<Task<String>>,
    fetching: Option<Fetch>,
    releasing: Option<BoxFuture<'static, ()>>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    idle: Duration,
    failures: u32,
    /// A connection of this backend's own for `BLPOP` on the wake-up list; `None`: poll only.
    waker: Option<Conn>,
    waiting: Option<tokio::task::JoinHandle<()>>,
    /// Set while idle with a wake-up connection: the latest the worker fetches again even
    /// without a wake-up (the next due job, or a floor should the `BLPOP` never answer).
    parked: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("queue", &self.queue.kind())
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    pub fn new(queue: Queue, settings: FetchSettings, inflight: Inflight, acker: Acker, waker: Option<Conn>) -> Self {
        Self {
            queue,
            settings,
            inflight,
            acker,
            buffer: VecDeque::new(),
            fetching: None,
            releasing: None,
            timer: None,
            idle: settings.idle_min,
            failures: 0,
            waker,
            waiting: None,
            parked: None,
        }
    }

    /// Waits for a new job, woken through the queue's wake-up list (`BLPOP`, at most
    /// `idle_max`), but never past `next`, when a scheduled job falls due or a lease runs out:
    /// that bound is a local timer, because Redis times out a blocked client only at its own
    /// `hz` tick (every 100 ms by default). A `BLPOP` still blocked when the timer fires stays
    /// outstanding and serves the next idle spell. Without a wake-up connection: polls with backoff.
    fn idle(&mut self, next: Option<Duration>) {
        let one_ms = Duration::from_millis(1);
        let Some(conn) = self.waker.clone() else {
            self.wait(next.map_or(self.idle, |n| self.idle.min(n)).max(one_ms));
            self.idle = (self.idle * 2).min(self.settings.idle_max);
            return;
        };
        if self.waiting.is_none() {
            let queue = self.queue.clone();
            let timeout = self.settings.idle_max;
            self.waiting = Some(tokio::spawn(async move {
                let mut conn = conn;
                if let Err(e) = queue.wait_for_work(&mut conn, timeout).await {
                    tracing::debug!(kind = %queue.kind(), error = %e, "wake-up wait failed; polling instead");
                    tokio::time::sleep(timeout).await;
                }
            }));
        }
        self.parked = match next {
            Some(n) if n < self.settings.idle_max => Some(Box::pin(tokio::time::sleep(n.max(one_ms)))),
            _ => Some(Box::pin(tokio::time::sleep(self.settings.idle_max * 3))),
        };
    }

    fn wait(&mut self, duration: Duration) {
        self.timer = Some(Box::pin(tokio::time::sleep(duration)));
    }

    fn start_fetch(&mut self, count: usize) {
        let queue = self.queue.clone();
        let settings = self.settings;
        let inflight = self.inflight.clone();
        self.fetching = Some(tokio::spawn(async move {
            let (jobs, next) = queue.fetch_or_next(settings.lease, count, settings.promote_limit).await?;
            for (job, _) in &jobs {
                inflight.insert(&job.id, job.attempt);
            }
            Ok((jobs, next))
        }));
    }

    fn fetched(&mut self, result: Result<Fetched, StoreError>) {
        match result {
            Ok((jobs, next)) if jobs.is_empty() => {
                self.failures = 0;
                self.idle(next);
            }
            Ok((jobs, _)) => {
                self.failures = 0;
                self.idle = self.settings.idle_min;
                for (job, payload) in jobs {
                    let task = TaskBuilder::new(payload)
                        .task_id(TaskId::from_string(job.id.clone()))
                        .attempt(job.attempt.saturating_sub(1) as usize)
                        .max_attempts(job.max_attempts as usize)
                        .data(job)
                        .build();
                    self.buffer.push_back(task);
                }
            }
            Err(e) => {
                // Redis away or restarting: keep trying, with backoff, for as long as it takes.
                self.failures = self.failures.saturating_add(1);
                let wait = Duration::from_millis(100 * 2_u64.pow(self.failures.min(4))).min(Duration::from_secs(1));
                tracing::warn!(kind = %self.queue.kind(), error = %e, retry_in_ms = wait.as_millis(), "fetch failed");
                metrics::counter!("jobplane_fetch_errors_total", "kind" => self.queue.kind().as_str()).increment(1);
                self.wait(wait);
            }
        }
    }
}

impl Backend for RedisBackend {
    type Task = Task<String>;
    type Error = StoreError;

    fn poll_ready(&mut self, _cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        loop {
            if let Some(task) = self.buffer.pop_front() {
                return Poll::Ready(Some(Ok(task)));
            }
            if let Some(fetch) = self.fetching.as_mut() {
                let result = std::task::ready!(fetch.poll_unpin(cx));
                self.fetching = None;
                self.fetched(
                    result.unwrap_or_else(|e| Err(StoreError::Protocol(format!("fetch task failed: {e}").into()))),
                );
                continue;
            }
            if let Some(timer) = self.timer.as_mut() {
                std::task::ready!(timer.as_mut().poll(cx));
                self.timer = None;
            }
            if let Some(parked) = self.parked.as_mut() {
                // Idle: until a wake-up (or the BLPOP's own timeout), or the local bound.
                let woken = self.waiting.as_mut().is_some_and(|w| w.poll_unpin(cx).is_ready());
                if woken {
                    self.waiting = None;
                } else if parked.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.parked = None;
            }
            let free = self.settings.concurrency.saturating_sub(worker.task_count());
            if free == 0 {
                // A finishing job wakes the worker; the timer is a floor under that.
                self.wait(self.settings.idle_min);
                continue;
            }
            self.start_fetch(free.min(self.settings.batch));
        }
    }

    /// Puts back the jobs leased but not started, so other workers run them at once: those
    /// buffered, and those of a fetch Redis may already have run.
    fn poll_close(&mut self, cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        if let Some(fetch) = self.fetching.as_mut() {
            let result = std::task::ready!(fetch.poll_unpin(cx));
            self.fetching = None;
            if let Ok(Ok(fetched)) = result {
                self.fetched(Ok(fetched));
            }
        }
        if let Some(waiting) = self.waiting.take() {
            waiting.abort();
        }
        self.parked = None;
        if self.releasing.is_none() {
            let jobs: Vec<(String, u32)> = self
                .buffer
                .drain(..)
                .filter_map(|task| task.data().get::<Leased>().map(|job| (job.id.clone(), job.attempt)))
                .collect();
            let queue = self.queue.clone();
            let inflight = self.inflight.clone();
            self.releasing = Some(
                async move {
                    match queue.release(&jobs).await {
                        Ok(n) => tracing::info!(kind = %queue.kind(), released = n, "put back jobs not started"),
                        Err(e) => tracing::warn!(kind = %queue.kind(), error = %e, "could not put back jobs; their leases will expire"),
                    }
                    for (id, attempt) in &jobs {
                        inflight.remove(id, *attempt);
                    }
                }
                .boxed(),
            );
        }
        self.releasing.as_mut().map_or(Poll::Ready(()), |f| f.poll_unpin(cx)).map(Ok)
    }
}

impl BackendConfig for RedisBackend {
    type Args = String;
    type Id = String;
    type Kind = Ephemeral;
    type Config = FetchSettings;
    type Layer = AckLayer;

    fn config(&self) -> &Self::Config {
        &self.settings
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        AckLayer::new(self.acker.clone())
    }
}
