//! Recording outcomes. A tower layer around each job waits until the job's outcome is written
//! to Redis before the job counts as done, and a batcher task writes the outcomes of many jobs
//! in one `finish.lua` call. A job's side effect is therefore acknowledged right after it
//! happens; the window in which a crash can repeat it is that one write.

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use jobs::queue::{FinishReport, Finished, Outcome, Queue, Retention};
use jobs::retry::Backoff;
use jobs::{Kind, StoreError};
use tokio::sync::{mpsc, oneshot};
use tower::{Layer, Service};

use crate::backend::Job;
use crate::leases::Inflight;
use crate::outcome::{Delivered, JobError, judge};

/// Most outcomes written by one `finish.lua` call.
const MAX_BATCH: usize = 256;
/// Outcomes waiting for the batcher at most; a job whose outcome finds the queue full waits
/// (it still holds its slot), so an outage holds back new jobs instead of growing memory.
const QUEUED: usize = 4 * MAX_BATCH;
/// The longest wait between two tries while Redis is away.
const RETRY_CAP: Duration = Duration::from_secs(2);

/// The one call the batcher makes: [`Queue::finish`] in production, a fake in the tests.
pub trait Finish: Send + Sync + 'static {
    fn kind(&self) -> Kind;

    /// Records `done` in one call (`finish.lua`).
    fn finish(
        &self,
        done: &[Finished],
        now: DateTime<Utc>,
        retention: &Retention,
    ) -> impl Future<Output = Result<FinishReport, StoreError>> + Send;
}

impl Finish for Queue {
    fn kind(&self) -> Kind {
        Queue::kind(self)
    }

    async fn finish(
        &self,
        done: &[Finished],
        now: DateTime<Utc>,
        retention: &Retention,
    ) -> Result<FinishReport, StoreError> {
        Queue::finish(self, done, now, retention).await
    }
}

type Pending = (Finished, oneshot::Sender<()>);

#[derive(Debug, Clone)]
pub struct Acker {
    tx: mpsc::Sender<Pending>,
    backoff: Backoff,
    inflight: Inflight,
    /// Where a provider's "too many requests" slows the kind down; `None` in the tests.
    rates: Option<jobs::rate::RateLimits>,
}

impl Acker {
    /// Starts the batcher task of `queue`; it ends once every `Acker` is gone and what they
    /// handed it is written.
    pub fn spawn(queue: impl Finish, backoff: Backoff, retention: Retention, inflight: Inflight) -> Self {
        let (acker, batcher) = Self::new(queue, backoff, retention, inflight);
        tokio::spawn(batcher);
        acker
    }

    fn new(
        queue: impl Finish,
        backoff: Backoff,
        retention: Retention,
        inflight: Inflight,
    ) -> (Self, impl Future<Output = ()> + Send) {
        let (tx, rx) = mpsc::channel(QUEUED);
        (Self { tx, backoff, inflight, rates: None }, write_batches(queue, rx, retention))
    }

    /// Throttles reported by the handlers slow the kind down through `rates`.
    #[must_use]
    pub fn with_rates(mut self, rates: jobs::rate::RateLimits) -> Self {
        self.rates = Some(rates);
        self
    }

    /// A provider throttled `kind`: every worker slows down (`throttle.lua`), counted in
    /// `jobplane_throttle_events_total{kind}`. Written in the background: the attempt's
    /// outcome does not wait for it, and a Redis failure only loses the slowing down.
    fn throttle(&self, kind: Kind, after: Option<Duration>) {
        metrics::counter!("jobplane_throttle_events_total", "kind" => kind.as_str()).increment(1);
        let Some(rates) = self.rates.clone() else { return };
        tokio::spawn(async move {
            match rates.throttle(kind, after).await {
                Ok(throttle) => {
                    tracing::warn!(%kind, per_second = ?throttle.per_second, until = ?throttle.until, reduced = throttle.reduced, "the provider throttled the kind; slowing down");
                    if let Some(rate) = throttle.per_second {
                        metrics::gauge!("jobplane_rate_limit_per_second", "kind" => kind.as_str()).set(rate);
                    }
                }
                Err(e) => {
                    tracing::warn!(%kind, error = jobs::store::chain(&e), "could not record the provider's throttle");
                }
            }
        });
    }

    /// Records one finished attempt and returns once it is in Redis.
    async fn record(&self, finished: Finished) {
        let (id, token) = (finished.job.id.clone(), finished.job.token);
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send((finished, done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
        self.inflight.remove(&id, token);
    }

    /// A job that ended without an outcome to record (deferred: its script wrote its state).
    fn forget(&self, job: &jobs::queue::Leased) {
        self.inflight.remove(&job.id, job.token);
    }
}

async fn write_batches(queue: impl Finish, mut rx: mpsc::Receiver<Pending>, retention: Retention) {
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
async fn write(queue: &impl Finish, done: &[Finished], retention: &Retention) {
    let mut wait = Duration::from_millis(50);
    loop {
        match queue.finish(done, Utc::now(), retention).await {
            Ok(report) => return count(queue.kind(), done, report),
            Err(StoreError::Protocol(e)) if done.len() > 1 => {
                tracing::error!(kind = %queue.kind(), error = jobs::store::chain(&e), "a batch of outcomes was refused; writing them one by one");
                for one in done {
                    Box::pin(write(queue, std::slice::from_ref(one), retention)).await;
                }
                return;
            }
            Err(StoreError::Protocol(e)) => {
                tracing::error!(kind = %queue.kind(), job_id = %done[0].job.id, error = jobs::store::chain(&e), "outcome refused; the job's lease will run it again");
                return;
            }
            Err(e) => {
                tracing::warn!(kind = %queue.kind(), error = jobs::store::chain(&e), outcomes = done.len(), "could not record outcomes; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_CAP);
            }
        }
    }
}

/// The metric labels of an outcome: `jobplane_jobs_completed_total`'s, and the dead-letter
/// reason when it buried the job.
fn labels(outcome: &Outcome) -> (&'static str, Option<&'static str>) {
    match outcome {
        Outcome::Succeeded => ("succeeded", None),
        Outcome::Retry { .. } => ("retrying", None),
        Outcome::Dead(reason) => (reason.as_str(), Some(reason.as_str())),
    }
}

fn count(kind: Kind, done: &[Finished], report: FinishReport) {
    let kind = kind.as_str();
    for f in done {
        let (outcome, dead) = labels(&f.outcome);
        metrics::counter!("jobplane_jobs_completed_total", "kind" => kind, "outcome" => outcome).increment(1);
        if let Some(reason) = dead {
            metrics::counter!("jobplane_dead_letters_total", "kind" => kind, "reason" => reason).increment(1);
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

impl<S> Service<Task<Job>> for AckService<S>
where
    S: Service<Task<Job>, Response = Delivered, Error = BoxDynError>,
    S::Future: Send + 'static,
{
    type Response = Delivered;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<Delivered, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, task: Task<Job>) -> Self::Future {
        let job = task.args.lease.clone();
        let started_at = Utc::now();
        let run = self.inner.call(task);
        let acker = self.acker.clone();
        async move {
            let result = run.await;
            if let Err(e) = &result
                && matches!(e.downcast_ref::<crate::outcome::JobError>(), Some(crate::outcome::JobError::Deferred))
            {
                acker.forget(&job);
                return result;
            }
            let finished_at = Utc::now();
            let (outcome, error) = judge(&job, result.as_ref().map(|_| ()), &acker.backoff, finished_at);
            if let Some(JobError::Throttled { after, .. }) = result.as_ref().err().and_then(|e| e.downcast_ref()) {
                acker.throttle(job.kind, *after);
            }
            if let Some(error) = &error {
                // Logs are read by operators too: the error as the console shows it.
                let error = jobs::redact::redact_text(error);
                tracing::info!(job_id = %job.id, kind = %job.kind, attempt = job.attempt, producer = %job.producer, %error, ?outcome, "attempt failed");
            }
            let provider_id = result.as_ref().ok().and_then(|d| d.provider_id.clone());
            acker.record(Finished { job, outcome, error, provider_id, started_at, finished_at }).await;
            result
        }
        .boxed()
    }
}

/// The batcher against a fake queue, as River tests its completer: what reaches `finish`, in
/// how many calls, and what happens when Redis refuses or is away.
#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::sync::{Arc, Mutex};

    use jobs::queue::Leased;
    use tokio::sync::watch;
    use tokio::time::Instant;

    use super::*;

    #[derive(Default)]
    struct Calls {
        /// Each `finish` call: when, and the ids it carried.
        seen: Vec<(Instant, Vec<String>)>,
        /// Ids recorded, in order.
        written: Vec<String>,
        /// Calls still to fail as if Redis were away.
        down: u32,
        /// A batch holding one of these is refused by the script.
        refused: HashSet<String>,
    }

    #[derive(Clone)]
    struct FakeQueue {
        calls: Arc<Mutex<Calls>>,
        /// `finish` answers only while this is true.
        open: watch::Receiver<bool>,
    }

    impl FakeQueue {
        fn new() -> (Self, watch::Sender<bool>) {
            let (gate, open) = watch::channel(true);
            (Self { calls: Arc::default(), open }, gate)
        }

        fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
            self.calls.lock().unwrap()
        }

        /// How many times each id was written.
        fn written(&self) -> HashMap<String, usize> {
            let mut times = HashMap::new();
            for id in &self.calls().written {
                *times.entry(id.clone()).or_default() += 1;
            }
            times
        }
    }

    impl Finish for FakeQueue {
        fn kind(&self) -> Kind {
            Kind::Webhook
        }

        async fn finish(
            &self,
            done: &[Finished],
            _now: DateTime<Utc>,
            _retention: &Retention,
        ) -> Result<FinishReport, StoreError> {
            let mut open = self.open.clone();
            let _ = open.wait_for(|open| *open).await;
            let mut calls = self.calls();
            let ids: Vec<String> = done.iter().map(|f| f.job.id.clone()).collect();
            calls.seen.push((Instant::now(), ids.clone()));
            if calls.down > 0 {
                calls.down -= 1;
                // Alternately unreachable and full (`OOM`): both are outages to wait out.
                return Err(if calls.down.is_multiple_of(2) {
                    StoreError::Unavailable("connection refused".into())
                } else {
                    StoreError::Full("OOM command not allowed".into())
                });
            }
            if ids.iter().any(|id| calls.refused.contains(id)) {
                return Err(StoreError::Protocol("bad outcome".into()));
            }
            calls.written.extend(ids);
            Ok(FinishReport { recorded: done.len() as u64, ..FinishReport::default() })
        }
    }

    fn finished(id: &str) -> Finished {
        let now = Utc::now();
        let job = Leased {
            id: id.into(),
            kind: Kind::Webhook,
            attempt: 1,
            token: 1,
            max_attempts: 3,
            created_at: now,
            producer: "p".into(),
            traceparent: None,
        };
        Finished { job, outcome: Outcome::Succeeded, error: None, provider_id: None, started_at: now, finished_at: now }
    }

    fn ids(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("j{i}")).collect()
    }

    /// An acker over `queue`, and its batcher to run; `inflight` holds every id of `held`.
    fn acker(queue: &FakeQueue, held: &[String]) -> (Acker, Inflight, impl Future<Output = ()> + Send + 'static) {
        let inflight = Inflight::default();
        for id in held {
            inflight.insert(id, 1);
        }
        let backoff = Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(1), jitter: false };
        let (acker, batcher) = Acker::new(queue.clone(), backoff, Retention::default(), inflight.clone());
        (acker, inflight, batcher)
    }

    /// [`acker`], its batcher running as a task.
    fn start(queue: &FakeQueue, held: &[String]) -> (Acker, Inflight, JoinHandle) {
        let (acker, inflight, batcher) = acker(queue, held);
        (acker, inflight, tokio::spawn(batcher))
    }

    type JoinHandle = tokio::task::JoinHandle<()>;

    /// Records each of `ids` from a task of its own, as apalis runs each job.
    fn record_all(acker: &Acker, ids: &[String]) -> Vec<JoinHandle> {
        ids.iter()
            .map(|id| {
                let (acker, done) = (acker.clone(), finished(id));
                tokio::spawn(async move { acker.record(done).await })
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn many_outcomes_go_out_in_a_few_calls() {
        let (queue, _gate) = FakeQueue::new();
        let all = ids(0..600);
        let (acker, inflight, batcher) = acker(&queue, &all);
        let records = record_all(&acker, &all);
        // Every outcome handed over before the batcher first looks.
        while acker.tx.capacity() > QUEUED - all.len() {
            tokio::task::yield_now().await;
        }
        tokio::spawn(batcher);
        futures::future::join_all(records).await;

        let sizes: Vec<usize> = queue.calls().seen.iter().map(|(_, ids)| ids.len()).collect();
        assert_eq!(sizes, [256, 256, 88], "600 outcomes queued at once, at most {MAX_BATCH} a call");
        let written = queue.written();
        assert_eq!(written.len(), 600);
        assert!(written.values().all(|&n| n == 1), "each outcome written once");
        assert!(inflight.is_empty(), "a recorded job is no longer held: {:?}", inflight.snapshot());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_batch_is_written_one_by_one() {
        let (queue, _gate) = FakeQueue::new();
        queue.calls().refused.insert("j3".into());
        let all = ids(0..5);
        let (acker, inflight, _batcher) = start(&queue, &all);
        futures::future::join_all(all.iter().map(|id| acker.record(finished(id)))).await;

        let seen: Vec<Vec<String>> = queue.calls().seen.iter().map(|(_, ids)| ids.clone()).collect();
        let mut expected = vec![all.clone()];
        expected.extend(all.iter().map(|id| vec![id.clone()]));
        assert_eq!(seen, expected, "the batch once, then each outcome alone, the refused one not retried");
        assert_eq!(queue.calls().written, ["j0", "j1", "j2", "j4"]);
        assert!(inflight.is_empty(), "the refused job is left to its lease, not held: {:?}", inflight.snapshot());
    }

    #[tokio::test(start_paused = true)]
    async fn while_redis_is_away_outcomes_wait_and_none_is_lost() {
        let (queue, _gate) = FakeQueue::new();
        queue.calls().down = 9;
        let all = ids(0..3);
        let (acker, _inflight, _batcher) = start(&queue, &all);
        futures::future::join_all(all.iter().map(|id| acker.record(finished(id)))).await;

        let calls = queue.calls();
        assert_eq!(calls.seen.len(), 10, "nine failures, then written");
        assert!(calls.seen.iter().all(|(_, ids)| *ids == all), "every try carries every outcome");
        let gaps: Vec<u128> = calls.seen.windows(2).map(|w| (w[1].0 - w[0].0).as_millis()).collect();
        assert_eq!(gaps, [50, 100, 200, 400, 800, 1600, 2000, 2000, 2000], "backoff, capped at {RETRY_CAP:?}");
        assert_eq!(calls.written, all);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_outage_holds_back_jobs_instead_of_growing_memory() {
        let (queue, _gate) = FakeQueue::new();
        queue.calls().down = u32::MAX;
        let all = ids(0..QUEUED + MAX_BATCH + 10);
        let (acker, _inflight, _batcher) = start(&queue, &all);
        let records = record_all(&acker, &all);
        tokio::time::sleep(Duration::from_mins(1)).await;

        assert!(records.iter().all(|r| !r.is_finished()), "no job ends before its outcome is written");
        assert_eq!(acker.tx.capacity(), 0, "the queue is full: the last jobs wait to hand over their outcomes");
        let tries = queue.calls().seen.len();
        assert!((30..=40).contains(&tries), "{tries} tries in 60 s: at most one each {RETRY_CAP:?} once backed off");
        assert!(queue.calls().seen.iter().all(|(_, ids)| ids.len() == MAX_BATCH));

        queue.calls().down = 0;
        futures::future::join_all(records).await;
        let written = queue.written();
        assert_eq!(written.len(), all.len(), "every outcome written once Redis is back");
        assert!(written.values().all(|&n| n == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_handed_over_are_written_after_the_worker_is_gone() {
        let (queue, gate) = FakeQueue::new();
        gate.send_replace(false);
        let all = ids(0..300);
        let (acker, _inflight, batcher) = start(&queue, &all);
        let records = record_all(&acker, &all);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let queued = all.len() - MAX_BATCH;
        assert_eq!(acker.tx.capacity(), QUEUED - queued, "the first batch in flight, the rest queued");
        // Then the worker goes away: its jobs' futures dropped, the last sender with them.
        for record in &records {
            record.abort();
        }
        drop(acker);
        gate.send_replace(true);

        tokio::time::timeout(Duration::from_secs(5), batcher).await.expect("the batcher ends").unwrap();
        let written = queue.written();
        assert_eq!(written.len(), all.len(), "nothing handed over is dropped at shutdown");
        assert!(written.values().all(|&n| n == 1));
    }
}
