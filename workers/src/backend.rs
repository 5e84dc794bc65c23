//! Jobplane's Redis storage as an apalis backend: apalis runs the jobs (concurrency, panics,
//! tracing), this backend leases them with `fetch.lua` and, through [`AckLayer`], records
//! each outcome with `finish.lua`.
//!
//! It implements `Backend` directly rather than through apalis's `Persisted`, whose event
//! path flushes acknowledgements only while the backend is idle, drops them at shutdown and
//! ends the worker on one payload it cannot decode (see docs/worker.md).
//!
//! Read top to bottom: [`Job`] is what each task carries; [`Fetcher::next_batch`] is the
//! fetch/idle loop, an `async fn` that [`Fetcher::into_stream`] turns into a stream of
//! batches; [`RedisBackend`] hands those jobs to apalis one at a time and, at shutdown, puts
//! back the ones it never started ([`put_back`]).

use std::collections::VecDeque;
use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use jobs::queue::{Leased, Queue};
use jobs::redis_conn::Conn;
use jobs::{Kind, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ack::{AckLayer, Acker};
use crate::leases::Inflight;

/// One leased job as apalis runs it: the lease travels with the payload in the task's own
/// type, so whoever records the outcome always has it.
#[derive(Debug, Clone)]
pub struct Job {
    pub lease: Leased,
    pub payload: String,
}

/// What one fetch brought: the jobs leased and, when there were none, how soon the queue has
/// work without a new job (the next due scheduled job or lease deadline).
#[derive(Debug, Default)]
pub struct Fetched {
    pub jobs: Vec<Job>,
    pub next: Option<Duration>,
    /// The queue is paused: nothing was leased.
    pub paused: bool,
    /// Jobs are ready but the kind's rate limit has no token (`jobs::rate`): nothing was
    /// leased, and `next` is when a token is due.
    pub throttled: bool,
}

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
    /// While the queue is paused, how long a worker waits before it looks again, unless a
    /// wake-up marker (a resume pushes some) ends the wait sooner.
    pub paused_recheck: Duration,
}

/// The longest a worker sleeps for a token before it fetches again.
const THROTTLED_RECHECK: Duration = Duration::from_secs(1);

/// The queue as the fetch loop uses it: [`Queue`] in production, a fake in the tests.
pub trait Leases: Clone + Send + Sync + 'static {
    fn kind(&self) -> Kind;

    /// Leases up to `count` jobs (`fetch.lua`).
    fn fetch(&self, count: usize, settings: &FetchSettings)
    -> impl Future<Output = Result<Fetched, StoreError>> + Send;

    /// Puts back jobs (id, lease token) leased but not started, the attempt not counted.
    fn release(&self, jobs: &[(String, u64)]) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

impl Leases for Queue {
    fn kind(&self) -> Kind {
        Queue::kind(self)
    }

    async fn fetch(&self, count: usize, settings: &FetchSettings) -> Result<Fetched, StoreError> {
        let reply = self.fetch_reply(settings.lease, count, settings.promote_limit).await?;
        let jobs = reply.jobs.into_iter().map(|(lease, payload)| Job { lease, payload }).collect();
        Ok(Fetched { jobs, next: reply.next, paused: reply.paused, throttled: reply.throttled })
    }

    async fn release(&self, jobs: &[(String, u64)]) -> Result<u64, StoreError> {
        Queue::release(self, jobs).await
    }
}

/// Waits on the queue's wake-up list, to which each enqueued job pushes a marker.
pub trait WakeUps: Send + Sync + 'static {
    /// True when woken by a new job, false when `timeout` ran out. Runs as a task of its own.
    fn wait(&self, timeout: Duration) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static;
}

/// `BLPOP` on the queue's wake-up list, on a connection of its own: a connection blocked in
/// `BLPOP` serves nothing else.
#[derive(Debug)]
pub struct WakeList {
    queue: Queue,
    conn: Conn,
}

impl WakeUps for WakeList {
    fn wait(&self, timeout: Duration) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        let (queue, mut conn) = (self.queue.clone(), self.conn.clone());
        async move { queue.wait_for_work(&mut conn, timeout).await }
    }
}

/// The fetch/idle loop's state. It stops at the first check after `closing` turns true.
pub struct Fetcher<L: Leases, W: WakeUps> {
    leases: L,
    settings: FetchSettings,
    inflight: Inflight,
    /// Slots free for new jobs right now (the concurrency less the jobs running).
    free: Box<dyn Fn() -> usize + Send + Sync>,
    /// `None`: no wake-up connection, so an idle worker polls with backoff.
    wake: Option<W>,
    /// A wake-up wait still outstanding: it outlives an idle spell cut short by the local
    /// timer, and serves the next one. Its answer: woken by a marker (not a timeout).
    waiting: Option<JoinHandle<bool>>,
    /// The current poll interval of an idle worker without a wake-up connection.
    idle: Duration,
    /// Fetches failed in a row.
    failures: u32,
    closing: watch::Receiver<bool>,
}

impl<L: Leases, W: WakeUps> std::fmt::Debug for Fetcher<L, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("kind", &self.leases.kind())
            .field("settings", &self.settings)
            .field("wake_ups", &self.wake.is_some())
            .field("idle", &self.idle)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl<L: Leases, W: WakeUps> Drop for Fetcher<L, W> {
    fn drop(&mut self) {
        if let Some(waiting) = self.waiting.take() {
            waiting.abort();
        }
    }
}

impl<L: Leases, W: WakeUps> Fetcher<L, W> {
    pub fn new(
        leases: L,
        settings: FetchSettings,
        inflight: Inflight,
        free: Box<dyn Fn() -> usize + Send + Sync>,
        wake: Option<W>,
        closing: watch::Receiver<bool>,
    ) -> Self {
        let idle = settings.idle_min;
        Self { leases, settings, inflight, free, wake, waiting: None, idle, failures: 0, closing }
    }

    /// The batches of [`Fetcher::next_batch`], until it closes.
    pub fn into_stream(self) -> BoxStream<'static, Vec<Job>> {
        futures::stream::unfold(self, |mut fetcher| async move {
            let batch = fetcher.next_batch().await?;
            Some((batch, fetcher))
        })
        .boxed()
    }

    /// The next jobs to run, never more than the free slots; waits while the queue is empty
    /// and retries with backoff while Redis fails. `None` once closing: a fetch already in
    /// flight is still awaited, and its jobs returned, so they can be put back.
    pub async fn next_batch(&mut self) -> Option<Vec<Job>> {
        loop {
            if self.is_closing() {
                return None;
            }
            let free = (self.free)();
            if free == 0 {
                // A finishing job wakes the worker; the timer is a floor under that.
                self.sleep(self.settings.idle_min).await;
                continue;
            }
            match self.fetch(free.min(self.settings.batch)).await {
                Ok(fetched) if !fetched.jobs.is_empty() => {
                    self.failures = 0;
                    self.idle = self.settings.idle_min;
                    return Some(fetched.jobs);
                }
                Ok(fetched) if fetched.paused => {
                    self.failures = 0;
                    self.wait_while_paused().await;
                }
                Ok(fetched) if fetched.throttled => {
                    // No token: sleep until one is due. Not on the wake-up list, whose markers
                    // (new jobs) would only find no token either, a fetch each.
                    self.failures = 0;
                    // At most a second: a console change (a limit raised or removed) applies within it.
                    let wait = fetched
                        .next
                        .unwrap_or(self.settings.idle_max)
                        .clamp(Duration::from_millis(1), THROTTLED_RECHECK);
                    self.sleep(wait).await;
                }
                Ok(fetched) => {
                    self.failures = 0;
                    self.wait_for_work(fetched.next).await;
                }
                Err(e) => self.back_off(&e).await,
            }
        }
    }

    /// Leases as a task of its own, which records the jobs in [`Inflight`] as soon as Redis
    /// answers: a stopping worker can then put them back even if it no longer waits for it.
    async fn fetch(&self, count: usize) -> Result<Fetched, StoreError> {
        let (leases, settings, inflight) = (self.leases.clone(), self.settings, self.inflight.clone());
        let fetch = tokio::spawn(async move {
            let fetched = leases.fetch(count, &settings).await?;
            for job in &fetched.jobs {
                inflight.insert(&job.lease.id, job.lease.token);
            }
            Ok(fetched)
        });
        fetch.await.unwrap_or_else(|e| Err(StoreError::Protocol(jobs::store::Cause::new("the fetch task failed", e))))
    }

    /// The queue is empty: waits for a new job, woken through the queue's wake-up list (at
    /// most `idle_max`), but never past `next`, when a scheduled job falls due or a lease runs
    /// out. That bound is a local timer, because Redis times out a blocked client only at its
    /// own `hz` tick (every 100 ms by default). Without a wake-up connection: polls with backoff.
    async fn wait_for_work(&mut self, next: Option<Duration>) {
        let one_ms = Duration::from_millis(1);
        if self.wake.is_none() {
            let poll = next.map_or(self.idle, |n| self.idle.min(n)).max(one_ms);
            self.idle = (self.idle * 2).min(self.settings.idle_max);
            return self.sleep(poll).await;
        }
        let timeout = self.settings.idle_max;
        // Should the wait never answer, a floor: fetch again after three of its timeouts.
        let bound = next.filter(|n| *n < timeout).map_or(timeout * 3, |n| n.max(one_ms));
        let mut closing = self.closing.clone();
        let waiting = self.waiting(timeout);
        let woken = tokio::select! {
            _ = waiting => true,
            () = tokio::time::sleep(bound) => false,
            _ = closing.wait_for(|c| *c) => false,
        };
        if woken {
            self.waiting = None;
        }
    }

    /// The queue is paused: looks again after `paused_recheck`, or at once when a wake-up
    /// marker comes (a resume pushes some; so does a new job, which costs one more fetch).
    /// Waits that time out at Redis are renewed until then.
    async fn wait_while_paused(&mut self) {
        if self.wake.is_none() {
            return self.sleep(self.settings.paused_recheck).await;
        }
        let deadline = tokio::time::Instant::now() + self.settings.paused_recheck;
        let timeout = self.settings.idle_max;
        loop {
            let mut closing = self.closing.clone();
            let waiting = self.waiting(timeout);
            let marker = tokio::select! {
                answer = waiting => Some(answer.unwrap_or(false)),
                () = tokio::time::sleep_until(deadline) => None,
                _ = closing.wait_for(|c| *c) => None,
            };
            match marker {
                None => return,
                Some(woken) => {
                    self.waiting = None;
                    if woken || tokio::time::Instant::now() >= deadline {
                        return;
                    }
                }
            }
        }
    }

    /// The outstanding wake-up wait, started (for at most `timeout`) if there is none.
    /// Without a wake-up connection, a wait that never ends.
    fn waiting(&mut self, timeout: Duration) -> &mut JoinHandle<bool> {
        let kind = self.leases.kind();
        let wake = self.wake.as_ref();
        self.waiting.get_or_insert_with(|| match wake {
            None => tokio::spawn(std::future::pending()),
            Some(wake) => {
                let wait = wake.wait(timeout);
                tokio::spawn(async move {
                    match wait.await {
                        Ok(woken) => woken,
                        Err(e) => {
                            tracing::debug!(%kind, error = %e, "wake-up wait failed; polling instead");
                            tokio::time::sleep(timeout).await;
                            false
                        }
                    }
                })
            }
        })
    }

    /// Redis away or restarting: keep trying, with backoff, for as long as it takes.
    async fn back_off(&mut self, error: &StoreError) {
        self.failures = self.failures.saturating_add(1);
        let wait = Duration::from_millis(100 * 2_u64.pow(self.failures.min(4))).min(Duration::from_secs(1));
        let kind = self.leases.kind();
        tracing::warn!(%kind, error = jobs::store::chain(error), retry_in_ms = wait.as_millis(), "fetch failed");
        metrics::counter!("jobplane_fetch_errors_total", "kind" => kind.as_str()).increment(1);
        self.sleep(wait).await;
    }

    /// Sleeps for `duration`, or less if the worker starts closing.
    async fn sleep(&self, duration: Duration) {
        let mut closing = self.closing.clone();
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            _ = closing.wait_for(|c| *c) => {}
        }
    }

    fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }
}

/// Puts back the jobs leased but not started, so other workers run them at once: `held`, and
/// those of a fetch Redis may already have run (the rest of `fetches`, which ends once closing).
pub async fn put_back<L: Leases>(
    leases: L,
    inflight: Inflight,
    mut held: Vec<Job>,
    fetches: Option<BoxStream<'static, Vec<Job>>>,
) {
    if let Some(fetches) = fetches {
        held.extend(fetches.concat().await);
    }
    let jobs: Vec<(String, u64)> = held.into_iter().map(|job| (job.lease.id, job.lease.token)).collect();
    let kind = leases.kind();
    match leases.release(&jobs).await {
        Ok(n) => tracing::info!(%kind, released = n, "put back jobs not started"),
        Err(e) => {
            tracing::warn!(%kind, error = jobs::store::chain(&e), "could not put back jobs; their leases will expire");
        }
    }
    for (id, token) in &jobs {
        inflight.remove(id, *token);
    }
}

/// The backend's side of the fetch loop. The loop starts on the first poll, when apalis
/// hands over the worker whose running jobs bound each fetch.
enum Feed {
    NotStarted,
    Running(BoxStream<'static, Vec<Job>>),
    Closing(BoxFuture<'static, ()>),
    Closed,
}

pub struct RedisBackend {
    queue: Queue,
    settings: FetchSettings,
    inflight: Inflight,
    acker: Acker,
    wake: Option<WakeList>,
    buffer: VecDeque<Job>,
    feed: Feed,
    closing: watch::Sender<bool>,
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
    /// `waker`: a connection of this backend's own for the wake-up list; `None`: poll only.
    pub fn new(queue: Queue, settings: FetchSettings, inflight: Inflight, acker: Acker, waker: Option<Conn>) -> Self {
        let wake = waker.map(|conn| WakeList { queue: queue.clone(), conn });
        let closing = watch::Sender::new(false);
        Self { queue, settings, inflight, acker, wake, buffer: VecDeque::new(), feed: Feed::NotStarted, closing }
    }

    /// The running fetch loop, started if need be; `None` once closing.
    fn fetches(&mut self, worker: &WorkerContext) -> Option<&mut BoxStream<'static, Vec<Job>>> {
        if matches!(self.feed, Feed::NotStarted) {
            let (worker, concurrency) = (worker.clone(), self.settings.concurrency);
            let free = Box::new(move || concurrency.saturating_sub(worker.task_count()));
            let (queue, inflight) = (self.queue.clone(), self.inflight.clone());
            let fetcher =
                Fetcher::new(queue, self.settings, inflight, free, self.wake.take(), self.closing.subscribe());
            self.feed = Feed::Running(fetcher.into_stream());
        }
        match &mut self.feed {
            Feed::Running(fetches) => Some(fetches),
            _ => None,
        }
    }
}

fn task(job: Job) -> Task<Job> {
    let id = TaskId::from_string(job.lease.id.clone());
    let (attempt, max_attempts) = (job.lease.attempt.saturating_sub(1) as usize, job.lease.max_attempts as usize);
    TaskBuilder::new(job).task_id(id).attempt(attempt).max_attempts(max_attempts).build()
}

impl Backend for RedisBackend {
    type Task = Task<Job>;
    type Error = StoreError;

    fn poll_ready(&mut self, _cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// Redis errors never reach apalis: the fetch loop logs them and retries.
    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        loop {
            if let Some(job) = self.buffer.pop_front() {
                return Poll::Ready(Some(Ok(task(job))));
            }
            let Some(fetches) = self.fetches(worker) else { return Poll::Ready(None) };
            match std::task::ready!(fetches.poll_next_unpin(cx)) {
                Some(batch) => self.buffer.extend(batch),
                None => return Poll::Ready(None),
            }
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        loop {
            match &mut self.feed {
                Feed::NotStarted | Feed::Running(_) => {
                    self.closing.send_replace(true);
                    let fetches = match std::mem::replace(&mut self.feed, Feed::Closed) {
                        Feed::Running(fetches) => Some(fetches),
                        _ => None,
                    };
                    let held = self.buffer.drain(..).collect();
                    let put_back = put_back(self.queue.clone(), self.inflight.clone(), held, fetches);
                    self.feed = Feed::Closing(put_back.boxed());
                }
                Feed::Closing(put_back) => {
                    std::task::ready!(put_back.poll_unpin(cx));
                    self.feed = Feed::Closed;
                }
                Feed::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl BackendConfig for RedisBackend {
    type Args = Job;
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

/// The fetch loop against a fake queue, on a paused clock: how much each fetch asks for, when
/// an idle or failing loop fetches again, and what a closing worker puts back.
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use chrono::Utc;
    use tokio::sync::Notify;
    use tokio::time::Instant;

    use super::*;

    #[derive(Default)]
    struct State {
        ready: VecDeque<Job>,
        /// Each fetch: when, and how many jobs it asked for.
        asked: Vec<(Instant, usize)>,
        /// Fetches still to fail as if Redis were away.
        failures: u32,
        /// What an empty fetch says of the next due job.
        next: Option<Duration>,
        released: Vec<(String, u64)>,
        /// What a fetch says of the pause (it then leases nothing).
        paused: bool,
        /// Tokens left in the kind's bucket (`None`: no limit); an empty bucket with jobs ready
        /// answers throttled, the next token `next` away.
        tokens: Option<usize>,
    }

    #[derive(Clone)]
    struct FakeLeases {
        state: Arc<Mutex<State>>,
        /// A fetch answers only while this is true.
        open: watch::Receiver<bool>,
    }

    impl FakeLeases {
        fn new(jobs: usize) -> (Self, watch::Sender<bool>) {
            let (gate, open) = watch::channel(true);
            let state = State { ready: (0..jobs).map(job).collect(), ..State::default() };
            (Self { state: Arc::new(Mutex::new(state)), open }, gate)
        }

        fn state(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap()
        }

        /// Milliseconds between fetches.
        fn gaps(&self) -> Vec<u128> {
            self.state().asked.windows(2).map(|w| (w[1].0 - w[0].0).as_millis()).collect()
        }
    }

    impl Leases for FakeLeases {
        fn kind(&self) -> Kind {
            Kind::Webhook
        }

        async fn fetch(&self, count: usize, _settings: &FetchSettings) -> Result<Fetched, StoreError> {
            let mut open = self.open.clone();
            let _ = open.wait_for(|open| *open).await;
            let mut state = self.state();
            state.asked.push((Instant::now(), count));
            if state.failures > 0 {
                state.failures -= 1;
                return Err(StoreError::Unavailable("connection refused".into()));
            }
            let grant = if state.paused { 0 } else { state.tokens.map_or(count, |t| t.min(count)) };
            let jobs: Vec<Job> = (0..grant).map_while(|_| state.ready.pop_front()).collect();
            if let Some(tokens) = state.tokens.as_mut() {
                *tokens -= jobs.len();
            }
            let throttled = !state.paused && grant == 0 && !state.ready.is_empty();
            let next = if jobs.is_empty() { state.next } else { None };
            Ok(Fetched { jobs, next, paused: state.paused, throttled })
        }

        async fn release(&self, jobs: &[(String, u64)]) -> Result<u64, StoreError> {
            self.state().released.extend_from_slice(jobs);
            Ok(jobs.len() as u64)
        }
    }

    /// A wake-up list: `notify_one` is a job enqueued (kept until a wait takes it, as the list does).
    #[derive(Clone, Default)]
    struct FakeWake {
        pushed: Arc<Notify>,
        waits: Arc<AtomicUsize>,
    }

    impl WakeUps for FakeWake {
        fn wait(&self, timeout: Duration) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
            self.waits.fetch_add(1, Ordering::SeqCst);
            let pushed = self.pushed.clone();
            async move {
                tokio::select! {
                    () = pushed.notified() => Ok(true),
                    () = tokio::time::sleep(timeout) => Ok(false),
                }
            }
        }
    }

    fn job(n: usize) -> Job {
        let lease = Leased {
            id: format!("j{n}"),
            kind: Kind::Webhook,
            attempt: 1,
            token: 1,
            max_attempts: 3,
            created_at: Utc::now(),
            producer: "p".into(),
            traceparent: None,
        };
        Job { lease, payload: "{}".into() }
    }

    struct Loop {
        fetcher: Fetcher<FakeLeases, FakeWake>,
        free: Arc<AtomicUsize>,
        inflight: Inflight,
        closing: watch::Sender<bool>,
    }

    fn start(leases: &FakeLeases, wake: Option<FakeWake>) -> Loop {
        let settings = FetchSettings {
            batch: 10,
            concurrency: 20,
            lease: Duration::from_secs(30),
            promote_limit: 100,
            idle_min: Duration::from_millis(1),
            idle_max: Duration::from_millis(100),
            paused_recheck: Duration::from_millis(300),
        };
        let free = Arc::new(AtomicUsize::new(20));
        let slots = free.clone();
        let (inflight, closing) = (Inflight::default(), watch::Sender::new(false));
        let count = Box::new(move || slots.load(Ordering::SeqCst));
        let fetcher = Fetcher::new(leases.clone(), settings, inflight.clone(), count, wake, closing.subscribe());
        Loop { fetcher, free, inflight, closing }
    }

    async fn within(ms: u64, future: impl Future) {
        let _ = tokio::time::timeout(Duration::from_millis(ms), future).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_asks_for_no_more_than_the_free_slots_and_holds_its_jobs_at_once() {
        let (leases, _gate) = FakeLeases::new(50);
        let mut feed = start(&leases, None);
        feed.free.store(3, Ordering::SeqCst);
        assert_eq!(feed.fetcher.next_batch().await.unwrap().len(), 3);
        assert_eq!(feed.inflight.len(), 3, "held from the moment Redis answered");
        feed.free.store(20, Ordering::SeqCst);
        assert_eq!(feed.fetcher.next_batch().await.unwrap().len(), 10, "and never more than the batch");
        feed.free.store(0, Ordering::SeqCst);
        within(50, feed.fetcher.next_batch()).await;
        let asked: Vec<usize> = leases.state().asked.iter().map(|(_, n)| *n).collect();
        assert_eq!(asked, [3, 10], "no fetch while every slot is busy");
    }

    #[tokio::test(start_paused = true)]
    async fn without_wake_ups_an_idle_loop_polls_with_backoff() {
        let (leases, _gate) = FakeLeases::new(0);
        let mut feed = start(&leases, None);
        within(400, feed.fetcher.next_batch()).await;
        assert_eq!(leases.gaps(), [1, 2, 4, 8, 16, 32, 64, 100, 100]);

        // A job ends the spell, and the next one starts from the shortest interval again,
        // never past the next due job.
        leases.state().ready.push_back(job(1));
        assert_eq!(feed.fetcher.next_batch().await.unwrap().len(), 1);
        leases.state().asked.clear();
        leases.state().next = Some(Duration::from_millis(3));
        within(20, feed.fetcher.next_batch()).await;
        assert_eq!(leases.gaps()[..4], [1, 2, 3, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn with_wake_ups_a_new_job_is_fetched_at_once() {
        let (leases, _gate) = FakeLeases::new(0);
        let wake = FakeWake::default();
        let mut feed = start(&leases, Some(wake.clone()));
        let enqueue = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            leases.state().ready.push_back(job(1));
            wake.pushed.notify_one();
        };
        let (batch, ()) = tokio::join!(feed.fetcher.next_batch(), enqueue);
        assert_eq!(batch.unwrap().len(), 1);
        assert_eq!(leases.gaps(), [30], "fetched when the job came, not at the wait's timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn with_wake_ups_an_idle_loop_fetches_when_a_job_falls_due_or_the_wait_times_out() {
        let (leases, _gate) = FakeLeases::new(0);
        let wake = FakeWake::default();
        let mut feed = start(&leases, Some(wake.clone()));
        leases.state().next = Some(Duration::from_millis(20));
        within(70, feed.fetcher.next_batch()).await;
        assert_eq!(leases.gaps(), [20, 20, 20], "the local timer, for the next due job");
        assert_eq!(wake.waits.load(Ordering::SeqCst), 1, "one wait, still outstanding, serves each spell");

        leases.state().asked.clear();
        leases.state().next = None;
        within(250, feed.fetcher.next_batch()).await;
        // The outstanding wait (started at 0) times out at 100, the next ones a timeout apart.
        assert_eq!(leases.gaps(), [30, 100, 100]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_token_the_loop_sleeps_until_the_next_one_whatever_the_wake_ups() {
        let (leases, _gate) = FakeLeases::new(30);
        leases.state().tokens = Some(4);
        leases.state().next = Some(Duration::from_millis(250));
        let wake = FakeWake::default();
        let mut feed = start(&leases, Some(wake.clone()));
        assert_eq!(feed.fetcher.next_batch().await.unwrap().len(), 4, "as many as tokens");
        // New jobs keep pushing markers: none of them makes the loop fetch before the token.
        let flood = async {
            for _ in 0..50 {
                wake.pushed.notify_one();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        within(600, async { tokio::join!(feed.fetcher.next_batch(), flood) }).await;
        assert_eq!(leases.gaps(), [0, 250, 250], "one fetch per token interval, never a spin");
        assert_eq!(wake.waits.load(Ordering::SeqCst), 0, "no wait on the wake-up list");
        leases.state().tokens = Some(2);
        assert_eq!(feed.fetcher.next_batch().await.unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_queue_is_looked_at_again_after_the_recheck_or_at_once_when_woken() {
        let (leases, _gate) = FakeLeases::new(5);
        leases.state().paused = true;
        let wake = FakeWake::default();
        let mut feed = start(&leases, Some(wake.clone()));
        within(1000, feed.fetcher.next_batch()).await;
        assert_eq!(leases.gaps(), [300, 300, 300], "waits that time out at Redis are renewed until the recheck");

        // A resume: the marker ends the wait at once, and the jobs are leased.
        leases.state().asked.clear();
        let resume = async {
            tokio::time::sleep(Duration::from_millis(40)).await;
            leases.state().paused = false;
            wake.pushed.notify_one();
        };
        let (batch, ()) = tokio::join!(feed.fetcher.next_batch(), resume);
        assert_eq!(batch.unwrap().len(), 5);
        let asked: Vec<Instant> = leases.state().asked.iter().map(|(at, _)| *at).collect();
        let last_gap = asked[asked.len() - 1] - asked[asked.len() - 2];
        assert!(last_gap < Duration::from_millis(300), "woken, not at the recheck: {last_gap:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_wake_ups_a_paused_queue_is_polled_at_the_recheck() {
        let (leases, _gate) = FakeLeases::new(1);
        leases.state().paused = true;
        let mut feed = start(&leases, None);
        within(1000, feed.fetcher.next_batch()).await;
        assert_eq!(leases.gaps(), [300, 300, 300]);
    }

    #[tokio::test(start_paused = true)]
    async fn redis_errors_back_off_up_to_a_second_and_the_loop_carries_on() {
        let (leases, _gate) = FakeLeases::new(1);
        leases.state().failures = 6;
        let mut feed = start(&leases, None);
        assert_eq!(feed.fetcher.next_batch().await.unwrap().len(), 1);
        assert_eq!(leases.gaps(), [200, 400, 800, 1000, 1000, 1000]);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_puts_back_the_jobs_held_and_those_of_a_fetch_in_flight() {
        let (leases, gate) = FakeLeases::new(5);
        gate.send_replace(false);
        let feed = start(&leases, None);
        let held = job(99);
        feed.inflight.insert(&held.lease.id, 1);
        let mut fetches = feed.fetcher.into_stream();
        assert!(futures::poll!(fetches.next()).is_pending(), "a fetch in flight");

        feed.closing.send_replace(true);
        let put_back = tokio::spawn(put_back(leases.clone(), feed.inflight.clone(), vec![held], Some(fetches)));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!put_back.is_finished(), "the fetch's answer is awaited");
        gate.send_replace(true);
        put_back.await.unwrap();

        let released: Vec<String> = leases.state().released.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(released, ["j99", "j0", "j1", "j2", "j3", "j4"]);
        assert!(feed.inflight.is_empty(), "{:?}", feed.inflight.snapshot());
        assert_eq!(leases.state().asked.len(), 1, "no fetch after closing");
    }

    #[tokio::test(start_paused = true)]
    async fn closing_ends_an_idle_wait_at_once() {
        let (leases, _gate) = FakeLeases::new(0);
        let feed = start(&leases, Some(FakeWake::default()));
        let mut fetches = feed.fetcher.into_stream();
        assert!(futures::poll!(fetches.next()).is_pending(), "the queue is empty");
        let began = Instant::now();
        feed.closing.send_replace(true);
        put_back(leases.clone(), feed.inflight.clone(), Vec::new(), Some(fetches)).await;
        assert_eq!(began.elapsed(), Duration::ZERO);
        assert_eq!(leases.state().asked.len(), 1);
    }
}
