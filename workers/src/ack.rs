//! Recording outcomes. A tower layer around each job waits until the job's outcome is written
//! to Redis before the job counts as done, and a batcher task writes the outcomes of many jobs
//! in one `finish.lua` call. A job's side effect is therefore acknowledged right after it
//! happens; the window in which a crash can repeat it is that one write.

use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use chrono::Utc;
use futures::FutureExt;
use futures::future::BoxFuture;
use jobs::queue::{Finished, Leased, Outcome, Queue, Retention};
use jobs::retry::Backoff;
use tokio::sync::{mpsc, oneshot};
use tower::{Layer, Service};

use crate::leases::Inflight;
use crate::outcome::{Delivered, judge};

/// Most outcomes written by one `finish.lua` call.
const MAX_BATCH: usize = 256;

type Pending = (Finished, oneshot::Sender<()>);

#[derive(Debug, Clone)]
pub struct Acker {
    tx: mpsc::Sender<Pending>,
    backoff: Backoff,
    inflight: Inflight,
}

impl Acker {
    /// Starts the batcher task of `queue`.
    pub fn spawn(queue: Queue, backoff: Backoff, retention: Retention, inflight: Inflight) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_batches(queue, rx, retention));
        Self { tx, backoff, inflight }
    }

    /// Records one finished attempt and returns once it is in Redis.
    async fn record(&self, finished: Finished) {
        let (id, attempt) = (finished.job.id.clone(), finished.job.attempt);
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send((finished, done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
        self.inflight.remove(&id, attempt);
    }
}

async fn write_batches(queue: Queue, mut rx: mpsc::Receiver<Pending>, retention: Retention) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (done, waiters): (Vec<Finished>, Vec<_>) = batch.drain(..).unzip();
        write(&queue, &done, &retention).await;
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }
}

/// Writes `done`, retrying while Redis is unreachable: outcomes are never dropped for an
/// outage, the jobs wait until Redis answers. A batch the script itself refuses is written
/// one outcome at a time, so one bad outcome cannot block its kind; an outcome refused alone is
/// logged and left to its lease, which runs the job again.
async fn write(queue: &Queue, done: &[Finished], retention: &Retention) {
    let mut wait = Duration::from_millis(50);
    loop {
        match queue.finish(done, Utc::now(), retention).await {
            Ok(report) => return count(queue, done, report),
            Err(jobs::StoreError::Protocol(e)) if done.len() > 1 => {
                tracing::error!(kind = %queue.kind(), error = %e, "a batch of outcomes was refused; writing them one by one");
                for one in done {
                    Box::pin(write(queue, std::slice::from_ref(one), retention)).await;
                }
                return;
            }
            Err(jobs::StoreError::Protocol(e)) => {
                tracing::error!(kind = %queue.kind(), job_id = %done[0].job.id, error = %e, "outcome refused; the job's lease will run it again");
                return;
            }
            Err(e) => {
                tracing::warn!(kind = %queue.kind(), error = %e, outcomes = done.len(), "could not record outcomes; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn count(queue: &Queue, done: &[Finished], report: jobs::queue::FinishReport) {
    let kind = queue.kind().as_str();
    for f in done {
        let outcome = match f.outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::Retry { .. } => "retrying",
            Outcome::Dead(reason) => reason.as_str(),
        };
        metrics::counter!("jobplane_jobs_completed_total", "kind" => kind, "outcome" => outcome).increment(1);
        if let Outcome::Dead(reason) = f.outcome {
            metrics::counter!("jobplane_dead_letters_total", "kind" => kind, "reason" => reason.as_str()).increment(1);
        }
        let seconds = (f.finished_at - f.started_at).as_seconds_f64();
        metrics::histogram!("jobplane_attempt_duration_seconds", "kind" => kind).record(seconds);
    }
    if report.stale > 0 {
        tracing::info!(kind, stale = report.stale, "outcomes of attempts whose lease was lost were ignored");
        metrics::counter!("jobplane_stale_outcomes_total", "kind" => kind).increment(report.stale);
    }
    if report.evicted > 0 {
        tracing::warn!(kind, evicted = report.evicted, "dead letters evicted by the cap or the age limit");
        metrics::counter!("jobplane_dead_letters_evicted_total", "kind" => kind).increment(report.evicted);
    }
}

#[derive(Debug, Clone)]
pub struct AckLayer {
    acker: Acker,
}

impl AckLayer {
    pub fn new(acker: Acker) -> Self {
        Self { acker }
    }
}

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AckService { inner, acker: self.acker.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct AckService<S> {
    inner: S,
    acker: Acker,
}

impl<S> Service<Task<String>> for AckService<S>
where
    S: Service<Task<String>, Response = Delivered, Error = BoxDynError>,
    S::Future: Send + 'static,
{
    type Response = Delivered;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<Delivered, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, task: Task<String>) -> Self::Future {
        let job = task.data().get::<Leased>().cloned();
        let started_at = Utc::now();
        let run = self.inner.call(task);
        let acker = self.acker.clone();
        async move {
            let result = run.await;
            if let Some(job) = job {
                let finished_at = Utc::now();
                let (outcome, error) = judge(&job, result.as_ref().map(|_| ()), &acker.backoff, finished_at);
                if let Some(error) = &error {
                    // Logs are read by operators too: the error as the console shows it.
                    let error = jobs::redact::redact_text(error);
                    tracing::info!(job_id = %job.id, kind = %job.kind, attempt = job.attempt, producer = %job.producer, %error, ?outcome, "attempt failed");
                }
                let provider_id = result.as_ref().ok().and_then(|d| d.provider_id.clone());
                acker.record(Finished { job, outcome, error, provider_id, started_at, finished_at }).await;
            }
            result
        }
        .boxed()
    }
}
