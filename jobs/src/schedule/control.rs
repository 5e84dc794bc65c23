//! Control of a schedule's live work: pause, resume and run now, for producers (their own API
//! schedules) and operators (any schedule).
//!
//! **Pause** is two writes, in this order: `schedule_pause.lua` records the pause with the
//! schedule (`:paused`) and parks it in the next-fire set, so no claim from then on takes it
//! (the claim skips a paused schedule atomically); then the pause's time is written into the
//! fence of every queue (`schedule_fence.lua`), which `enqueue.lua` checks against the time a
//! tick was claimed. A tick claimed before the pause and still in flight is refused by the
//! fence, so once a pause has answered, no tick of the schedule fires, before the resume or
//! after it: a resume leaves the fence (it refuses only ticks claimed before its pause, which
//! may still be in flight on a stalled worker however long the pause was), a later pause
//! raises it, and the delete of the schedule removes it.
//!
//! **Resume** settles what the schedule owes for the ticks missed while paused, as its
//! `catch_up` says (see `schedule_resume.lua`): `latest` fires the most recent missed tick once,
//! at once (the resume enqueues it, with its regular key, before it answers); `none` skips them
//! all and picks up at the first tick after the resume.
//!
//! **Run now** enqueues one extra job of the schedule with the idempotency key
//! `schedule:<name>:manual:<unix seconds>` (Redis's clock, the second of the first press):
//! presses within one second of the first make one job, across the turn of a second too. It leaves the regular ticks alone, and works on a paused schedule too (an explicit act).

use super::{
    DateTime, Deserialize, LazyLock, Listed, Schedule, ScheduleStore, Script, Serialize, StoreError, Utc, api_owner,
    index_script, read_rows,
};
use crate::{EnqueueOutcome, FieldError, JobStatus, Kind, Store, ValidJob};

static PAUSE: LazyLock<Script> = LazyLock::new(|| index_script(include_str!("../../lua/schedule_pause.lua")));
static RESUME: LazyLock<Script> = LazyLock::new(|| index_script(include_str!("../../lua/schedule_resume.lua")));
static FENCE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../../lua/schedule_fence.lua")));
static GET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../../lua/schedule_get.lua")));
static RUN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../../lua/schedule_run.lua")));

/// How long the first run-now's key answers every other run of the schedule: one job for any
/// number of presses within a second of the first (`schedule_run.lua`).
pub const RUN_NOW_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// How many times a resume computes its ticks again when the definition changes under it.
const RESUME_TRIES: usize = 5;

/// A schedule's pause: when (Redis's clock) and by whom (`api:<producer>`, `console:<operator>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pause {
    pub at: DateTime<Utc>,
    pub by: String,
}

impl Pause {
    /// The pause as `schedule_pause.lua` stores it: `{"at": ms, "by": who}`.
    pub(super) fn read(json: &str) -> Option<Self> {
        #[derive(Deserialize)]
        struct Stored {
            at: i64,
            by: String,
        }
        let stored: Stored = serde_json::from_str(json).ok()?;
        Some(Self { at: DateTime::from_timestamp_millis(stored.at)?, by: stored.by })
    }
}

/// Who acts on a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An API key: its own API schedules only.
    Producer(String),
    /// A console operator: any schedule, the file's too.
    Operator(String),
}

impl Actor {
    /// The owner the scripts check, `""` for any.
    fn caller(&self) -> String {
        match self {
            Actor::Producer(p) => api_owner(p),
            Actor::Operator(_) => String::new(),
        }
    }

    /// As the pause records it.
    fn by(&self) -> String {
        match self {
            Actor::Producer(p) => api_owner(p),
            Actor::Operator(o) => format!("console:{o}"),
        }
    }

    /// Whether it may act on `schedule`, and why not.
    fn may_act_on(&self, schedule: &Schedule) -> Result<(), Refused> {
        match self {
            Actor::Operator(_) => Ok(()),
            Actor::Producer(p) if schedule.owner() == api_owner(p) => Ok(()),
            Actor::Producer(_) if schedule.owner() == "file" => Err(Refused::FromFile),
            Actor::Producer(_) => Err(Refused::Taken),
        }
    }
}

/// Why a control did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No schedule of that name.
    Missing,
    /// Another producer's (shown to producers as missing).
    Taken,
    /// `SCHEDULES_FILE`'s, and the actor is a producer.
    FromFile,
    /// The schedule's job no longer passes the rules of `POST /v1/jobs` (a rule added since).
    Invalid(Vec<FieldError>),
    /// The run's idempotency key is held by another request of the producer's (one it sent
    /// itself with that key): the job it made.
    KeyTaken { existing_id: String },
}

impl Refused {
    fn from_reply(reply: &str) -> Option<Self> {
        match reply {
            "missing" => Some(Refused::Missing),
            "taken" => Some(Refused::Taken),
            "from_file" => Some(Refused::FromFile),
            _ => None,
        }
    }
}

/// What a pause or a resume did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// False when the schedule already was as asked (paused, or running).
    pub changed: bool,
}

/// The job a run-now made, or the one a run within the second before made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunNow {
    pub id: String,
    pub kind: Kind,
    pub status: JobStatus,
    pub run_at: DateTime<Utc>,
    /// `schedule:<name>:manual:<unix seconds>`.
    pub idempotency_key: String,
    /// True when a run within the second before had already made the job: this is that job.
    pub replayed: bool,
}

/// `schedule:<name>:manual:<unix seconds>`: the key of a run-now opening a window at `at` (runs
/// within [`RUN_NOW_WINDOW`] of it are given the same key).
pub fn manual_idempotency_key(name: &str, at: DateTime<Utc>) -> String {
    format!("schedule:{name}:manual:{}", at.timestamp())
}

impl Schedule {
    /// The job of a run-now at `now`: checked again, carrying `key` (a
    /// [`manual_idempotency_key`]), whose fingerprint is the key alone (every press of the
    /// window makes the same claim).
    pub fn manual_job(&self, key: &str, now: DateTime<Utc>) -> Result<crate::NewJob, Vec<FieldError>> {
        let valid = ValidJob::parse(self.job.clone(), "/job", now)?;
        let key = key.to_owned();
        let mut job = valid.into_new(&self.producer, now);
        job.idempotency = Some((key.clone(), crate::fingerprint::of_request(&serde_json::Value::String(key))));
        Ok(job)
    }
}

/// The reply of `schedule_get.lua`: definition, last tick, pause, Redis's now (ms).
type GetRow = (Option<String>, Option<i64>, Option<String>, i64);

impl ScheduleStore {
    /// One schedule as listed, and Redis's now (the clock schedules are judged by), in one
    /// call. `None` when there is no such schedule (or it no longer reads).
    pub async fn get(&self, name: &str) -> Result<(Option<Listed>, DateTime<Utc>), StoreError> {
        let mut call = GET.prepare_invoke();
        call.key(&self.defs).key(&self.last).key(&self.paused).arg(name);
        let (def, last, pause, now): GetRow = call.invoke_async(&mut self.conn.clone()).await?;
        let now = DateTime::from_timestamp_millis(now)
            .ok_or_else(|| StoreError::Protocol(format!("schedule_get.lua gave the time {now}").into()))?;
        let listed = def.map(|json| (name.to_owned(), json, last, pause));
        Ok((read_rows(listed.into_iter()).pop(), now))
    }

    /// Pauses `name` as `actor` may: from the answer on, no tick of it fires (see the module).
    pub async fn pause(&self, name: &str, actor: &Actor) -> Result<Result<Changed, Refused>, StoreError> {
        let mut call = self.indexed(&PAUSE);
        call.arg(name).arg(actor.caller()).arg(actor.by());
        let reply: Vec<redis::Value> = call.invoke_async(&mut self.conn.clone()).await?;
        let (word, pause, fresh): (String, Option<String>, Option<i64>) = match reply.len() {
            1 => (redis::from_redis_value(reply[0].clone()).map_err(redis::RedisError::from)?, None, None),
            _ => redis::from_redis_value(redis::Value::Array(reply)).map_err(redis::RedisError::from)?,
        };
        if let Some(refused) = Refused::from_reply(&word) {
            return Ok(Err(refused));
        }
        let pause = pause
            .as_deref()
            .and_then(Pause::read)
            .ok_or_else(|| StoreError::Protocol(format!("schedule_pause.lua answered {word} {pause:?}").into()))?;
        // Written again when it already was paused: a pause whose fences failed is completed
        // by the next.
        self.fence("pause", name, pause.at).await?;
        // A delete between the two writes tidied the fences before they were written: tidied
        // again, so a deleted name leaves nothing behind.
        let exists: bool = redis::cmd("HEXISTS").arg(&self.defs).arg(name).query_async(&mut self.conn.clone()).await?;
        if !exists {
            self.clear_fences(name, pause.at).await;
        }
        Ok(Ok(Changed { changed: fresh == Some(1) }))
    }

    /// Resumes `name` as `actor` may; what it owes for the ticks missed while paused follows
    /// its `catch_up` (see `schedule_resume.lua`): with `latest`, the owed tick is enqueued on
    /// `queue` before this returns.
    pub async fn resume(
        &self,
        name: &str,
        actor: &Actor,
        queue: &Store,
    ) -> Result<Result<Changed, Refused>, StoreError> {
        for _ in 0..RESUME_TRIES {
            let (listed, now) = self.get(name).await?;
            let Some(listed) = listed else { return Ok(Err(Refused::Missing)) };
            let schedule = &listed.schedule;
            if let Err(refused) = actor.may_act_on(schedule) {
                return Ok(Err(refused));
            }
            let table = schedule.timetable();
            let since = listed.last.map_or(schedule.updated_at, |l| l.max(schedule.updated_at));
            let latest = table.as_ref().and_then(|t| t.latest_at_or_before(now)).filter(|t| *t > since);
            let next = table.as_ref().and_then(|t| t.next_after(now)).unwrap_or(now + chrono::Duration::days(1));
            let mut call = self.indexed(&RESUME);
            call.arg(name)
                .arg(actor.caller())
                .arg(schedule.version()?)
                .arg(match schedule.catch_up {
                    super::CatchUp::Latest => "latest",
                    super::CatchUp::None => "none",
                })
                .arg(latest.map(|t| t.timestamp_millis().to_string()).unwrap_or_default())
                .arg(next.timestamp_millis());
            let reply: Vec<String> = call.invoke_async(&mut self.conn.clone()).await?;
            match reply.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["changed"] => {}
                ["running"] => return Ok(Ok(Changed { changed: false })),
                // The pause's fences stay: a tick claimed before the pause may still be in
                // flight, and must not fire now.
                ["resumed", pause] => {
                    if schedule.catch_up == super::CatchUp::Latest
                        && let Some(tick) = latest
                    {
                        // Claimed after the pause it ended, whose fence refuses claims at or
                        // before it (the resume may read the same millisecond as the pause).
                        let after = Pause::read(pause).map(|p| p.at + chrono::Duration::milliseconds(1));
                        self.fire_owed(schedule, tick, after.map_or(now, |a| a.max(now)), queue).await;
                    }
                    return Ok(Ok(Changed { changed: true }));
                }
                [other] if Refused::from_reply(other).is_some() => {
                    return Ok(Err(Refused::from_reply(other).unwrap_or(Refused::Missing)));
                }
                other => return Err(StoreError::Protocol(format!("schedule_resume.lua answered {other:?}").into())),
            }
        }
        Err(StoreError::Protocol(
            format!("schedule `{name}` changed {RESUME_TRIES} times while it was being resumed").into(),
        ))
    }

    /// Fires the tick a resumed `catch_up: latest` schedule owes, with its regular key (a
    /// scheduler computing the same tick gets the same job), as claimed at `now` (a pause
    /// after the resume refuses it), and records it. A failure is logged: the schedule is due,
    /// and the next scheduler pass fires the latest tick then.
    async fn fire_owed(&self, schedule: &Schedule, tick: DateTime<Utc>, now: DateTime<Utc>, queue: &Store) {
        let name = schedule.name.as_str();
        let job = match schedule.job_for(tick, now) {
            Ok(job) => job,
            Err(errors) => {
                tracing::error!(schedule = name, %tick, ?errors, "the owed tick's job is refused; not fired");
                return;
            }
        };
        let claim = crate::store::TickClaim { schedule: name.to_owned(), claimed: now };
        match queue.enqueue_tick(&job, &claim).await {
            Ok(EnqueueOutcome::Created { .. } | EnqueueOutcome::Replayed { .. }) => {
                tracing::info!(schedule = name, %tick, "resumed; the latest tick missed while paused fired");
                if let Err(e) = self.settle(schedule, Some(tick), now).await {
                    tracing::warn!(schedule = name, error = %e, "the owed tick fired but not recorded; its key keeps it single");
                }
            }
            Ok(other) => tracing::warn!(schedule = name, %tick, outcome = ?other, "the owed tick not fired"),
            Err(e) => {
                tracing::warn!(schedule = name, %tick, error = %e, "the owed tick not fired; the next pass fires it");
            }
        }
    }

    /// Enqueues one extra job of `name` now, as `actor` may (see the module).
    pub async fn run_now(
        &self,
        name: &str,
        actor: &Actor,
        queue: &Store,
    ) -> Result<Result<RunNow, Refused>, StoreError> {
        let (listed, now) = self.get(name).await?;
        let Some(Listed { schedule, .. }) = listed else { return Ok(Err(Refused::Missing)) };
        if let Err(refused) = actor.may_act_on(&schedule) {
            return Ok(Err(refused));
        }
        if let Err(errors) = ValidJob::parse(schedule.job.clone(), "/job", now) {
            return Ok(Err(Refused::Invalid(errors)));
        }
        // The key of the run-now window open, or of one opened now: presses within a second of
        // the first make one job, even across the turn of a second.
        let mut call = RUN.prepare_invoke();
        call.key(self.run_window(name))
            .arg(manual_idempotency_key(name, now))
            .arg(u64::try_from(RUN_NOW_WINDOW.as_millis()).unwrap_or(1000));
        let key: String = call.invoke_async(&mut self.conn.clone()).await?;
        let job = match schedule.manual_job(&key, now) {
            Ok(job) => job,
            Err(errors) => return Ok(Err(Refused::Invalid(errors))),
        };
        let kind = job.kind;
        let run =
            |id, status, run_at, replayed| RunNow { id, kind, status, run_at, idempotency_key: key.clone(), replayed };
        match queue.enqueue(std::slice::from_ref(&job)).await?.pop() {
            Some(EnqueueOutcome::Created { id, status, run_at }) => {
                tracing::info!(schedule = name, job_id = %id, by = actor.by(), "schedule run now");
                Ok(Ok(run(id, status, run_at, false)))
            }
            Some(EnqueueOutcome::Replayed { id, status, run_at }) => Ok(Ok(run(id, status, run_at, true))),
            Some(EnqueueOutcome::Conflict { existing_id }) => Ok(Err(Refused::KeyTaken { existing_id })),
            other => Err(StoreError::Protocol(format!("a run-now's enqueue answered {other:?}").into())),
        }
    }

    /// Writes (`"pause"`) or tidies (`"clear"`) the fence of `name` at `at` in every queue's slot.
    async fn fence(&self, mode: &str, name: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let calls = Kind::ALL.map(|kind| {
            let mut call = FENCE.prepare_invoke();
            call.key(self.keys.queue(kind).schedule_pauses()).arg(mode).arg(name).arg(at.timestamp_millis());
            let mut conn = self.conn.clone();
            async move {
                let wrote: i64 = call.invoke_async(&mut conn).await?;
                Ok::<_, redis::RedisError>(wrote)
            }
        });
        futures::future::try_join_all(calls).await?;
        Ok(())
    }

    /// Removes the fences of the pauses of `name` taken at or before `until`, never a later
    /// pause's. A failure only leaves a stale fence, which refuses nothing claimed after it:
    /// logged, not returned.
    pub(super) async fn clear_fences(&self, name: &str, until: DateTime<Utc>) {
        let after = until + chrono::Duration::milliseconds(1);
        if let Err(e) = self.fence("clear", name, after).await {
            tracing::warn!(schedule = name, error = %e, "a pause's fences not tidied; they refuse nothing newer");
        }
    }
}
