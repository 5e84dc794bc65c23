//! Recurring schedules: what one is, the rules it must pass, when it fires, and where it lives
//! in Redis.
//!
//! A schedule's ticks are the instants its cron expression names in its time zone. Every worker
//! may compute the tick that is due; each firing is enqueued with the idempotency key
//! `schedule:<name>:<tick>`, so however many workers compute it, one job exists per tick, and
//! the schedule's last fired tick (advanced with a compare-and-set) keeps a tick from firing
//! again once its idempotency record has expired.
//!
//! Daylight saving time (croner's rules, as Vixie cron): a fixed time that does not exist on a
//! spring-forward day (02:30 when 02:00 jumps to 03:00) fires once, at the first instant after
//! the gap (03:00); a fixed time that happens twice on a fall-back day (01:30) fires once, at
//! the first of the two, however many fixed times the repeated hour holds (`0 0,30 1 * * *`
//! fires 01:00 and 01:30 once each). Expressions whose minute or hour field is a wildcard
//! (`*/15 * * * *`, `@hourly`) follow real time on both days, as in Vixie cron.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use crate::redis_conn::Conn;
use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use redis::Script;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::settings::{Env, SettingError};

mod control;
use crate::validation::{FieldError, from_serde};
use crate::{Kind, StoreError, ValidJob};
pub use control::{Actor, Changed, Pause, Refused, RunNow, manual_idempotency_key};

/// The longest cron expression accepted, in characters: real ones are far shorter, and a
/// long one costs memory in every scheduler that caches it.
pub const MAX_CRON_CHARS: usize = 256;

/// The largest job a schedule may hold, as JSON (`/job`): every schedule is kept in Redis and
/// read on each tick, so 10,000 of them stay within 160 MiB. Direct jobs allow 256 KiB.
pub const MAX_JOB_BYTES: usize = 16 * 1024;

/// How many ticks ahead [`Timetable::shortest_gap`] looks.
const GAP_TICKS: usize = 1000;

/// How far ahead [`Timetable::shortest_gap`] looks for clock changes: a year and a margin.
const GAP_DAYS: i64 = 400;

/// Limits on the schedules producers may store through the API (not on `SCHEDULES_FILE`,
/// which the operator writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleLimits {
    /// `SCHEDULES_MAX_PER_PRODUCER` (default 1000).
    pub per_producer: u32,
    /// `SCHEDULES_MAX` (default 10000): all producers' and the file's together.
    pub total: u32,
    /// `SCHEDULES_MIN_INTERVAL_SECONDS` (default 1): the shortest time between two ticks.
    pub min_interval: Duration,
}

impl Default for ScheduleLimits {
    fn default() -> Self {
        Self { per_producer: 1000, total: 10_000, min_interval: Duration::from_secs(1) }
    }
}

impl ScheduleLimits {
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let per_producer: u32 = env.parse("SCHEDULES_MAX_PER_PRODUCER", 1000)?;
        if per_producer == 0 {
            return Err(SettingError::new("SCHEDULES_MAX_PER_PRODUCER", "must be at least 1"));
        }
        let total: u32 = env.parse("SCHEDULES_MAX", 10_000)?;
        if total == 0 {
            return Err(SettingError::new("SCHEDULES_MAX", "must be at least 1"));
        }
        let min_interval = env.seconds("SCHEDULES_MIN_INTERVAL_SECONDS", 1)?;
        if min_interval < Duration::from_secs(1) || min_interval > Duration::from_hours(24) {
            return Err(SettingError::new("SCHEDULES_MIN_INTERVAL_SECONDS", "must be between 1 and 86400"));
        }
        Ok(Self { per_producer, total, min_interval })
    }

    /// `/cron`'s error when `table` fires more often than the minimum interval allows.
    pub fn check_interval(&self, table: &Timetable, base: &str, now: DateTime<Utc>) -> Option<FieldError> {
        // Ticks are whole seconds apart: one second allows every expression.
        if self.min_interval <= Duration::from_secs(1) {
            return None;
        }
        let min = chrono::Duration::from_std(self.min_interval).unwrap_or(chrono::Duration::MAX);
        table.shortest_gap(now, min).filter(|gap| *gap < min).map(|gap| {
            FieldError::new(
                format!("{base}/cron"),
                format!(
                    "fires {} s apart at times; SCHEDULES_MIN_INTERVAL_SECONDS allows no less than {} s",
                    gap.num_seconds(),
                    min.num_seconds()
                ),
            )
        })
    }
}

/// The quota a refused schedule would have passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleLimit {
    /// `SCHEDULES_MAX_PER_PRODUCER`.
    PerProducer,
    /// `SCHEDULES_MAX`.
    Total,
}

impl ScheduleLimit {
    /// As the API's problem names it.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleLimit::PerProducer => "schedules_per_producer",
            ScheduleLimit::Total => "schedules_max",
        }
    }

    /// The setting that sets it.
    pub fn setting(self) -> &'static str {
        match self {
            ScheduleLimit::PerProducer => "SCHEDULES_MAX_PER_PRODUCER",
            ScheduleLimit::Total => "SCHEDULES_MAX",
        }
    }
}

/// What an owner-checked create-or-replace did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Replaced,
    /// Nothing written: another producer holds the name.
    Taken,
    /// Nothing written: `SCHEDULES_FILE` holds the name.
    FromFile,
    /// Nothing written: a quota is full.
    OverLimit(ScheduleLimit),
}

/// A schedule as listed: its definition, its last fired (or skipped) tick, and its pause.
#[derive(Debug, Clone)]
pub struct Listed {
    pub schedule: Schedule,
    pub last: Option<DateTime<Utc>>,
    /// Present while paused.
    pub pause: Option<Pause>,
}

impl Listed {
    /// Its next tick: none while paused (nothing fires), or if the expression no longer fires.
    pub fn next_run_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.pause.is_some() {
            return None;
        }
        let from = self.last.unwrap_or(self.schedule.updated_at).max(self.schedule.updated_at).max(now);
        self.schedule.timetable().and_then(|t| t.next_after(from))
    }
}

/// What an owner-checked delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    Missing,
    /// Nothing deleted: another producer's.
    Taken,
    /// Nothing deleted: `SCHEDULES_FILE`'s.
    FromFile,
}

/// What a schedule does with ticks missed while no worker ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Fire the most recent missed tick once (never a burst).
    #[default]
    Latest,
    /// Skip missed ticks: fire only ticks at most [`MISFIRE_GRACE`] late (a worker's loop runs
    /// every second, so a live worker is never that late).
    None,
}

/// With `catch_up: none`, how late a tick may still fire.
pub const MISFIRE_GRACE: chrono::Duration = chrono::Duration::seconds(10);

/// Where a schedule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `POST /v1/schedules`.
    Api,
    /// `SCHEDULES_FILE`, loaded by workers at start.
    File,
}

/// A schedule as `POST /v1/schedules` and `SCHEDULES_FILE` give it.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// 1–128 of letters, digits, `_ . : -`; the same name again replaces the schedule.
    #[cfg_attr(feature = "openapi", schema(example = "weekday-digest"))]
    pub name: String,
    /// 5 fields (`minute hour day month weekday`), or 6 with a leading seconds field.
    #[cfg_attr(feature = "openapi", schema(example = "0 9 * * 1-5"))]
    pub cron: String,
    /// An IANA time zone; default `UTC`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = "Asia/Taipei"))]
    pub timezone: Option<String>,
    #[serde(default)]
    pub catch_up: Option<CatchUp>,
    /// `{"kind", "payload", "max_attempts"?, "priority"?, "group"?}`, checked by the rules of `POST /v1/jobs`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub job: Value,
}

/// A stored schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Schedule {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub catch_up: CatchUp,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub job: Value,
    pub source: Source,
    /// The API key name that created it (`file` for file schedules); its jobs carry it.
    pub producer: String,
    pub updated_at: DateTime<Utc>,
}

/// A cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct Timetable {
    cron: Cron,
    tz: chrono_tz::Tz,
    /// Its minute or hour field is `*` or `*/n` (`@hourly` too): it follows real time through
    /// a fall-back hour. Otherwise a local time that happens twice fires once, at the first.
    real_time: bool,
}

impl Timetable {
    /// Errors name `/cron` or `/timezone` under `base`.
    pub fn new(cron: &str, timezone: &str, base: &str) -> Result<Self, Vec<FieldError>> {
        let cron_text = cron;
        if cron.chars().count() > MAX_CRON_CHARS {
            return Err(vec![FieldError::new(
                format!("{base}/cron"),
                format!("must be at most {MAX_CRON_CHARS} characters"),
            )]);
        }
        let mut errors = Vec::new();
        let fields = cron.split_whitespace().count();
        let nickname = cron.trim().starts_with('@');
        let parsed = if nickname || fields == 5 || fields == 6 {
            CronParser::builder()
                .seconds(Seconds::Optional)
                .build()
                .parse(cron)
                .map_err(|e| {
                    errors
                        .push(FieldError::new(format!("{base}/cron"), format!("is not a valid cron expression: {e}")));
                })
                .ok()
        } else {
            errors.push(FieldError::new(
                format!("{base}/cron"),
                format!(
                    "must have 5 fields (minute hour day month weekday) or 6 with a leading seconds field, not {fields}"
                ),
            ));
            None
        };
        let tz = timezone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| {
                errors
                    .push(FieldError::new(format!("{base}/timezone"), "is not an IANA time zone, such as Asia/Taipei"));
            })
            .ok();
        match (parsed, tz) {
            (Some(cron), Some(tz)) if errors.is_empty() => {
                let table = Self { cron, tz, real_time: follows_real_time(cron_text) };
                // An expression that never matches (`0 0 30 2 *`) is refused, not stored.
                if table.next_after(Utc::now()).is_none() {
                    return Err(vec![FieldError::new(format!("{base}/cron"), "never fires")]);
                }
                Ok(table)
            }
            _ => Err(errors),
        }
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut from = t;
        // A fall-back hour holds at most 3600 ticks of whole seconds.
        for _ in 0..=REPEATED_TICKS {
            let at = self.cron.find_next_occurrence(&from.with_timezone(&self.tz), false).ok()?.with_timezone(&Utc);
            if !self.is_repeat(at) {
                return Some(at);
            }
            from = at;
        }
        None
    }

    /// Whether `t` is a second occurrence of its local time (the hour a fall-back repeats)
    /// that this expression does not fire again.
    fn is_repeat(&self, t: DateTime<Utc>) -> bool {
        use chrono::TimeZone;
        if self.real_time {
            return false;
        }
        match self.tz.from_local_datetime(&t.with_timezone(&self.tz).naive_local()) {
            chrono::LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc) != t,
            _ => false,
        }
    }

    /// The shortest time between two consecutive ticks among the next 1000 after `from`, and
    /// around each change of the zone's UTC offset in the year after `from`, or the first
    /// found below `stop`. A cron's ticks repeat by minute, hour and day, so dense ticks show
    /// within the first thousand; but a clock change shortens the real time between two ticks
    /// of a fixed local hour (01:50 then 03:00 is 10 minutes on a spring-forward day), and the
    /// next change may be further than a thousand ticks away.
    pub fn shortest_gap(&self, from: DateTime<Utc>, stop: chrono::Duration) -> Option<chrono::Duration> {
        let mut shortest = self.gaps(from, GAP_TICKS, None, stop);
        for change in self.offset_changes(from, from + chrono::Duration::days(GAP_DAYS)) {
            if shortest.is_some_and(|s| s < stop) {
                break;
            }
            // A gap under `stop` across the change starts less than `stop` before it.
            let around = self.gaps(change - stop - chrono::Duration::seconds(1), GAP_TICKS, Some(change + stop), stop);
            shortest = match (shortest, around) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        shortest
    }

    /// The shortest gap between the ticks after `from`, at most `ticks` of them and none
    /// after `until`, stopping at the first below `stop`.
    fn gaps(
        &self,
        from: DateTime<Utc>,
        ticks: usize,
        until: Option<DateTime<Utc>>,
        stop: chrono::Duration,
    ) -> Option<chrono::Duration> {
        let mut previous = self.next_after(from)?;
        let mut shortest: Option<chrono::Duration> = None;
        for _ in 0..ticks {
            if until.is_some_and(|u| previous > u) {
                break;
            }
            let Some(next) = self.next_after(previous) else { break };
            let gap = next - previous;
            shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
            if gap < stop {
                break;
            }
            previous = next;
        }
        shortest
    }

    /// The instants in `(from, until]` where the zone's UTC offset changes, to the second.
    fn offset_changes(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        use chrono::{Offset, TimeZone};
        let offset = |t: DateTime<Utc>| self.tz.offset_from_utc_datetime(&t.naive_utc()).fix();
        let step = chrono::Duration::hours(6);
        let mut changes = Vec::new();
        let mut at = from;
        while at < until {
            let next = at + step;
            if offset(at) != offset(next) {
                // The change is in (lo, hi]: halve to the second.
                let (mut lo, mut hi) = (at, next);
                while hi - lo > chrono::Duration::seconds(1) {
                    let mid = lo + (hi - lo) / 2;
                    if offset(mid) == offset(lo) { lo = mid } else { hi = mid }
                }
                changes.push(hi);
            }
            at = next;
        }
        changes
    }

    /// The last tick at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut until = t;
        for _ in 0..=REPEATED_TICKS {
            let at = self.cron.find_previous_occurrence(&until.with_timezone(&self.tz), true).ok()?.with_timezone(&Utc);
            if !self.is_repeat(at) {
                return Some(at);
            }
            until = at - chrono::Duration::seconds(1);
        }
        None
    }
}

/// The most ticks a repeated (fall-back) hour can hold: one a second.
const REPEATED_TICKS: usize = 3600;

/// Vixie cron's rule: an expression whose minute or hour field is a wildcard (`*`, `*/n`)
/// runs by real time through a fall-back hour; one at fixed minutes and hours runs once.
fn follows_real_time(pattern: &str) -> bool {
    let text = pattern.trim().to_ascii_lowercase();
    match text.as_str() {
        "@hourly" => return true,
        t if t.starts_with('@') => return false,
        _ => {}
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    let (minute, hour) = match fields.len() {
        6 => (fields[1], fields[2]),
        _ => (fields.first().copied().unwrap_or("*"), fields.get(1).copied().unwrap_or("*")),
    };
    minute.starts_with('*') || hour.starts_with('*')
}

/// What a worker does with a schedule at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Enqueue the job of this tick.
    Fire(DateTime<Utc>),
    /// Record this tick as done without a job (`catch_up: none`, too late).
    Skip(DateTime<Utc>),
    Nothing,
}

/// The most recent tick in `(last, now]` decides: one tick at most, however many were missed.
pub fn due(table: &Timetable, last: DateTime<Utc>, now: DateTime<Utc>, catch_up: CatchUp) -> Due {
    match table.latest_at_or_before(now) {
        Some(tick) if tick > last => {
            if catch_up == CatchUp::None && now - tick > MISFIRE_GRACE {
                Due::Skip(tick)
            } else {
                Due::Fire(tick)
            }
        }
        _ => Due::Nothing,
    }
}

/// The naming rule of schedules: 1–128 of letters, digits, `_ . : -`.
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

impl Schedule {
    /// Checks a request with the rules of `POST /v1/jobs` for its job; errors point under `base`.
    pub fn parse(
        value: Value,
        base: &str,
        source: Source,
        producer: &str,
        now: DateTime<Utc>,
    ) -> Result<(Self, Timetable), Vec<FieldError>> {
        if !value.is_object() {
            return Err(vec![FieldError::new(base, "must be a JSON object")]);
        }
        let request: ScheduleRequest =
            serde_path_to_error::deserialize(value).map_err(|e| vec![from_serde(base, &e)])?;
        let timezone = request.timezone.unwrap_or_else(|| "UTC".to_owned());
        let mut errors = Vec::new();
        if !valid_name(&request.name) {
            errors.push(FieldError::new(format!("{base}/name"), "must be 1 to 128 of letters, digits, _ . : -"));
        }
        let table = Timetable::new(&request.cron, &timezone, base).map_err(|mut e| errors.append(&mut e)).ok();
        if serde_json::to_string(&request.job).map_or(0, |s| s.len()) > MAX_JOB_BYTES {
            errors.push(FieldError::new(
                format!("{base}/job"),
                format!("must be at most {} KiB as JSON", MAX_JOB_BYTES / 1024),
            ));
        } else if let Err(mut e) = check_job(&request.job, &format!("{base}/job"), now) {
            errors.append(&mut e);
        }
        match table {
            Some(table) if errors.is_empty() => Ok((
                Self {
                    name: request.name,
                    cron: request.cron.trim().to_owned(),
                    timezone,
                    catch_up: request.catch_up.unwrap_or_default(),
                    job: request.job,
                    source,
                    producer: producer.to_owned(),
                    updated_at: now,
                },
                table,
            )),
            _ => Err(errors),
        }
    }

    pub fn timetable(&self) -> Option<Timetable> {
        Timetable::new(&self.cron, &self.timezone, "").ok()
    }

    /// The job of the tick `tick`, as of `now`: checked again (an audit event gets a fresh
    /// `event_id` each tick) and carrying the idempotency key `schedule:<name>:<tick>`.
    pub fn job_for(&self, tick: DateTime<Utc>, now: DateTime<Utc>) -> Result<crate::NewJob, Vec<FieldError>> {
        let valid = ValidJob::parse(self.job.clone(), "/job", now)?;
        let key = idempotency_key(&self.name, tick);
        let mut job = valid.into_new(&self.producer, now);
        // The key alone is the fingerprint: every worker computing this tick makes the same
        // claim, whatever the payload's generated parts (an audit event's id) are.
        job.idempotency = Some((key.clone(), crate::fingerprint::of_request(&Value::String(key))));
        Ok(job)
    }
}

/// `schedule:<name>:<tick in RFC 3339, UTC, seconds>`.
pub fn idempotency_key(name: &str, tick: DateTime<Utc>) -> String {
    format!("schedule:{name}:{}", tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// A schedule's job: `kind`, `payload`, `max_attempts`, `priority` and `group` only, checked
/// like `POST /v1/jobs`.
fn check_job(job: &Value, base: &str, now: DateTime<Utc>) -> Result<(), Vec<FieldError>> {
    let Some(fields) = job.as_object() else {
        return Err(vec![FieldError::new(base, "must be a JSON object with kind and payload")]);
    };
    let mut errors: Vec<FieldError> = fields
        .keys()
        .filter(|k| !matches!(k.as_str(), "kind" | "payload" | "max_attempts" | "priority" | "group"))
        .map(|k| {
            FieldError::new(
                format!("{base}/{k}"),
                "is not allowed in a schedule's job (kind, payload, max_attempts, priority, group)",
            )
        })
        .collect();
    if fields.get("kind").and_then(Value::as_str) == Some(Kind::OtpSms.as_str()) {
        errors.push(FieldError::new(
            format!("{base}/kind"),
            "otp_sms cannot be scheduled: a one-time code must not repeat",
        ));
    }
    if let Err(mut e) = ValidJob::parse(job.clone(), base, now) {
        errors.append(&mut e);
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

fn index_script(body: &str) -> Script {
    Script::new(&format!("{}{body}", include_str!("../lua/schedule_index.lua")))
}

static PUT: LazyLock<Script> = LazyLock::new(|| index_script(include_str!("../lua/schedule_put.lua")));
static DELETE: LazyLock<Script> = LazyLock::new(|| index_script(include_str!("../lua/schedule_delete.lua")));
static CLAIM: LazyLock<Script> = LazyLock::new(|| index_script(include_str!("../lua/schedule_claim.lua")));
static LIST: LazyLock<Script> = LazyLock::new(|| index_script(include_str!("../lua/schedule_list.lua")));
static REINDEX: LazyLock<Script> = LazyLock::new(|| index_script("return ensure_index()"));
static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/schedule_settle.lua")));

/// A schedule taken by [`ScheduleStore::claim`]: its stored JSON and last fired tick.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub name: String,
    /// As stored; a definition that no longer reads is the caller's to report.
    pub definition: String,
    pub last: Option<DateTime<Utc>>,
}

/// One pass's due schedules, the earliest next-fire time left (to sleep until), and the
/// time of the claim by Redis's clock (what the pass judges ticks by).
#[derive(Debug, Clone)]
pub struct Claim {
    pub due: Vec<Claimed>,
    pub next: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

impl Schedule {
    /// Who holds the name in the index: `api:<producer>` or `file`.
    pub fn owner(&self) -> String {
        match self.source {
            Source::File => "file".to_owned(),
            Source::Api => api_owner(&self.producer),
        }
    }

    /// `updated_at` as stored, which the settle script compares.
    fn version(&self) -> Result<String, StoreError> {
        let value = serde_json::to_value(self.updated_at)
            .map_err(|e| StoreError::Protocol(crate::store::Cause::new(e.to_string(), e)))?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// Its first tick: the first strictly after `updated_at` (ticks count from then).
    fn first_tick_ms(&self) -> i64 {
        self.timetable()
            .and_then(|t| t.next_after(self.updated_at))
            .map_or(self.updated_at.timestamp_millis(), |t| t.timestamp_millis())
    }
}

fn api_owner(producer: &str) -> String {
    format!("api:{producer}")
}

/// Schedules in Redis, under one hash tag (one Redis Cluster slot):
/// `<ns>:{schedules}:defs` (name → JSON), `:last` (name → last fired tick, ms), `:due` (sorted
/// set, name → when a scheduler looks at it next, ms), `:owners` (name → `api:<producer>` or
/// `file`), `:counts` (owner → how many) and `:by_owner` (sorted set of `<owner>\0<name>`,
/// one owner's names a lexicographic range), the last four kept by the scripts that write;
/// `:paused` (name → the pause, JSON) while a schedule is paused, mirrored as a fence in each
/// queue's slot ([`crate::keys::QueueKeys::schedule_pauses`]); `:run:<name>` (the key of the
/// run-now window open, for a second after a run).
#[derive(Debug, Clone)]
pub struct ScheduleStore {
    conn: Conn,
    defs: String,
    last: String,
    due: String,
    owners: String,
    counts: String,
    by_owner: String,
    paused: String,
    /// The queues' keys, for the pause fences in their slots.
    keys: crate::Keys,
}

type Row = (String, String, Option<i64>, Option<String>);

/// A claimed schedule as `schedule_claim.lua` answers it: name, definition, last tick (ms).
type ClaimRow = (String, String, Option<i64>);

impl ScheduleStore {
    pub fn new(conn: Conn, namespace: &str) -> Self {
        let key = |rest: &str| format!("{namespace}:{{schedules}}:{rest}");
        Self {
            conn,
            defs: key("defs"),
            last: key("last"),
            due: key("due"),
            owners: key("owners"),
            counts: key("counts"),
            by_owner: key("by_owner"),
            paused: key("paused"),
            keys: crate::Keys::new(namespace),
        }
    }

    /// STRING holding the key of the run-now window open for `name` (`schedule_run.lua`),
    /// expiring with it.
    fn run_window(&self, name: &str) -> String {
        format!("{}:{{schedules}}:run:{name}", self.keys.namespace())
    }

    fn indexed<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut call = script.prepare_invoke();
        call.key(&self.defs).key(&self.last).key(&self.due).key(&self.owners).key(&self.counts).key(&self.by_owner);
        call.key(&self.paused);
        call
    }

    async fn write(&self, schedule: &Schedule, mode: &str, limits: &ScheduleLimits) -> Result<PutOutcome, StoreError> {
        let json = serde_json::to_string(schedule)
            .map_err(|e| StoreError::Protocol(crate::store::Cause::new(e.to_string(), e)))?;
        let mut call = self.indexed(&PUT);
        call.arg(&schedule.name)
            .arg(json)
            .arg(schedule.owner())
            .arg(schedule.first_tick_ms())
            .arg(mode)
            .arg(limits.per_producer)
            .arg(limits.total);
        let reply: Vec<String> = call.invoke_async(&mut self.conn.clone()).await?;
        match reply.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["created"] => Ok(PutOutcome::Created),
            ["replaced"] => Ok(PutOutcome::Replaced),
            ["taken"] => Ok(PutOutcome::Taken),
            ["from_file"] => Ok(PutOutcome::FromFile),
            ["over_limit", "per_producer"] => Ok(PutOutcome::OverLimit(ScheduleLimit::PerProducer)),
            ["over_limit", "total"] => Ok(PutOutcome::OverLimit(ScheduleLimit::Total)),
            other => Err(StoreError::Protocol(format!("schedule_put.lua answered {other:?}").into())),
        }
    }

    /// Creates or replaces `schedule` whoever holds its name, with no quota: for
    /// `SCHEDULES_FILE`, which the operator writes. Its ticks count from its `updated_at`: a
    /// replaced schedule never fires a tick from before the replacement. Returns whether it
    /// replaced one.
    pub async fn put(&self, schedule: &Schedule) -> Result<bool, StoreError> {
        let outcome = self.write(schedule, "trusted", &ScheduleLimits::default()).await?;
        Ok(outcome == PutOutcome::Replaced)
    }

    /// Creates `schedule`, or replaces its producer's own of that name, in one atomic step
    /// that checks the name's owner and the quotas: of two producers racing for a name, one
    /// gets it and the other [`PutOutcome::Taken`].
    pub async fn put_checked(&self, schedule: &Schedule, limits: &ScheduleLimits) -> Result<PutOutcome, StoreError> {
        self.write(schedule, "checked", limits).await
    }

    /// Deletes the `SCHEDULES_FILE` schedule `name`. Whether it existed.
    pub async fn delete_from_file(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.delete_as(name, "file").await? == DeleteOutcome::Deleted)
    }

    /// Deletes `producer`'s API schedule `name`, atomically owner-checked.
    pub async fn delete_checked(&self, name: &str, producer: &str) -> Result<DeleteOutcome, StoreError> {
        self.delete_as(name, &api_owner(producer)).await
    }

    async fn delete_as(&self, name: &str, owner: &str) -> Result<DeleteOutcome, StoreError> {
        let mut call = self.indexed(&DELETE);
        call.arg(name).arg(owner);
        let reply: Vec<Option<String>> = call.invoke_async(&mut self.conn.clone()).await?;
        let (reply, at) = match reply.as_slice() {
            [Some(reply), rest @ ..] => (reply.as_str(), rest.get(1).cloned().flatten()),
            _ => return Err(StoreError::Protocol(format!("schedule_delete.lua answered {reply:?}").into())),
        };
        match reply {
            "deleted" => {
                // The fences of the name's pauses (the one the delete ended, and those resumes
                // left) refuse nothing now: tidied, so deleted names leave nothing behind.
                if let Some(at) = at.and_then(|ms| ms.parse().ok()).and_then(DateTime::from_timestamp_millis) {
                    self.clear_fences(name, at).await;
                }
                Ok(DeleteOutcome::Deleted)
            }
            "missing" => Ok(DeleteOutcome::Missing),
            "taken" => Ok(DeleteOutcome::Taken),
            "from_file" => Ok(DeleteOutcome::FromFile),
            other => Err(StoreError::Protocol(format!("schedule_delete.lua answered {other:?}").into())),
        }
    }

    /// Every schedule with its last fired (or skipped) tick and its pause, sorted by name.
    /// Entries that no longer read (a foreign writer) are left out and logged.
    pub async fn list(&self) -> Result<Vec<Listed>, StoreError> {
        let (defs, last, mut paused): (HashMap<String, String>, HashMap<String, i64>, HashMap<String, String>) =
            redis::pipe()
                .hgetall(&self.defs)
                .hgetall(&self.last)
                .hgetall(&self.paused)
                .query_async(&mut self.conn.clone())
                .await?;
        let rows = defs.into_iter().map(|(name, json)| {
            let last = last.get(&name).copied();
            let pause = paused.remove(&name);
            (name, json, last, pause)
        });
        Ok(read_rows(rows))
    }

    /// `producer`'s schedules and `SCHEDULES_FILE`'s, as [`ScheduleStore::list`] gives them:
    /// reads only those.
    pub async fn list_for(&self, producer: &str) -> Result<Vec<Listed>, StoreError> {
        let mut call = self.indexed(&LIST);
        call.arg(api_owner(producer)).arg("file");
        let rows: Vec<Row> = call.invoke_async(&mut self.conn.clone()).await?;
        Ok(read_rows(rows.into_iter()))
    }

    /// Takes up to `limit` schedules due by Redis's clock, each leased for `lease` (it comes
    /// due again then unless [`ScheduleStore::settle`] records its next fire time first). The
    /// claim's `now` is Redis's: every scheduler judges ticks by it, whatever its own clock.
    pub async fn claim(&self, lease: chrono::Duration, limit: usize) -> Result<Claim, StoreError> {
        let mut call = self.indexed(&CLAIM);
        call.arg(lease.num_milliseconds().max(1)).arg(limit);
        let (rows, next, now): (Vec<ClaimRow>, Option<String>, i64) = call.invoke_async(&mut self.conn.clone()).await?;
        let due = rows
            .into_iter()
            .map(|(name, definition, last)| Claimed {
                name,
                definition,
                last: last.and_then(DateTime::from_timestamp_millis),
            })
            .collect();
        #[expect(clippy::cast_possible_truncation, reason = "scores are ms since the epoch, written as integers")]
        let next = next.and_then(|s| s.parse::<f64>().ok()).and_then(|ms| DateTime::from_timestamp_millis(ms as i64));
        let now = DateTime::from_timestamp_millis(now)
            .ok_or_else(|| StoreError::Protocol(format!("schedule_claim.lua gave the time {now}").into()))?;
        Ok(Claim { due, next, now })
    }

    /// Indexes any schedule written without the index, and brings forward the next-fire time
    /// of any whose stored one is later than its next tick: definitions written by something
    /// other than these scripts (a version from before the index, still running during an
    /// upgrade; a hand edit). Reads every schedule once: for a scheduler's start, not for each
    /// pass. Returns how many it brought forward.
    pub async fn reconcile(&self) -> Result<usize, StoreError> {
        let _: i64 = self.indexed(&REINDEX).invoke_async(&mut self.conn.clone()).await?;
        let (scores,): (Vec<(String, f64)>,) = redis::pipe()
            .cmd("ZRANGE")
            .arg(&self.due)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.conn.clone())
            .await?;
        let scores: HashMap<String, f64> = scores.into_iter().collect();
        let mut pipe = redis::pipe();
        let mut moved = 0;
        // A paused schedule stays parked.
        for Listed { schedule, last, .. } in self.list().await?.into_iter().filter(|l| l.pause.is_none()) {
            let since = last.map_or(schedule.updated_at, |l| l.max(schedule.updated_at));
            let Some(next) = schedule.timetable().and_then(|t| t.next_after(since)) else { continue };
            #[expect(clippy::cast_precision_loss, reason = "ms since the epoch are far below 2^52")]
            let next_ms = next.timestamp_millis() as f64;
            if scores.get(&schedule.name).is_some_and(|score| next_ms < *score) {
                pipe.cmd("ZADD").arg(&self.due).arg("XX").arg("LT").arg(next_ms).arg(&schedule.name).ignore();
                moved += 1;
            }
        }
        if moved > 0 {
            let () = pipe.query_async(&mut self.conn.clone()).await?;
        }
        Ok(moved)
    }

    /// Records `tick` (fired or skipped; only forward) as `schedule`'s last, and `next` as when
    /// to look at it again, if the stored definition is still `schedule`. Whether it was.
    pub async fn settle(
        &self,
        schedule: &Schedule,
        tick: Option<DateTime<Utc>>,
        next: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut call = SETTLE.prepare_invoke();
        call.key(&self.defs)
            .key(&self.last)
            .key(&self.due)
            .key(&self.paused)
            .arg(&schedule.name)
            .arg(schedule.version()?)
            .arg(tick.map(|t| t.timestamp_millis().to_string()).unwrap_or_default())
            .arg(next.timestamp_millis());
        let moved: u32 = call.invoke_async(&mut self.conn.clone()).await?;
        Ok(moved == 1)
    }
}

fn read_rows(rows: impl Iterator<Item = Row>) -> Vec<Listed> {
    let mut schedules: Vec<Listed> = rows
        .filter_map(|(name, json, last, pause)| match serde_json::from_str::<Schedule>(&json) {
            Ok(schedule) => Some(Listed {
                schedule,
                last: last.and_then(DateTime::from_timestamp_millis),
                pause: pause.as_deref().and_then(Pause::read),
            }),
            Err(e) => {
                tracing::error!(schedule = %name, error = %e, "a stored schedule does not read; ignored");
                None
            }
        })
        .collect();
    schedules.sort_by(|a, b| a.schedule.name.cmp(&b.schedule.name));
    schedules
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_or_six_fields_and_iana_zones() {
        assert!(Timetable::new("0 9 * * 1-5", "Asia/Taipei", "").is_ok());
        assert!(Timetable::new("*/10 0 9 * * *", "UTC", "").is_ok());
        let errors = Timetable::new("0 9 * *", "Mars/Olympus", "").unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["/cron", "/timezone"]);
        assert!(errors[0].message.contains("not 4"), "{}", errors[0].message);
        let errors = Timetable::new("0 61 * * *", "UTC", "").unwrap_err();
        assert_eq!(errors[0].field, "/cron");
        assert_eq!(Timetable::new("0 0 30 2 *", "UTC", "").unwrap_err()[0].message, "never fires");
    }

    #[test]
    fn weekdays_at_nine_in_taipei() {
        let table = Timetable::new("0 9 * * 1-5", "Asia/Taipei", "").unwrap();
        // Friday 2026-11-20 09:00 in Taipei is 01:00 UTC; the next is Monday the 23rd.
        let friday = utc("2026-11-20T01:00:00Z");
        assert_eq!(table.next_after(utc("2026-11-19T02:00:00Z")), Some(friday));
        assert_eq!(table.next_after(friday), Some(utc("2026-11-23T01:00:00Z")));
        assert_eq!(table.latest_at_or_before(utc("2026-11-22T12:00:00Z")), Some(friday));
    }

    #[test]
    fn a_time_skipped_by_spring_forward_fires_once_right_after_the_gap() {
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist.
        let table = Timetable::new("30 2 * * *", "America/New_York", "").unwrap();
        let day_before = utc("2026-03-07T07:30:00Z"); // 02:30 EST
        let gap_day = utc("2026-03-08T07:00:00Z"); // 03:00 EDT, the first instant after the gap
        let day_after = utc("2026-03-09T06:30:00Z"); // 02:30 EDT
        assert_eq!(table.next_after(day_before), Some(gap_day));
        assert_eq!(table.next_after(gap_day), Some(day_after));
        assert_eq!(table.latest_at_or_before(utc("2026-03-08T12:00:00Z")), Some(gap_day));
    }

    #[test]
    fn a_time_repeated_by_fall_back_fires_once_at_its_first_occurrence() {
        // New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let table = Timetable::new("30 1 * * *", "America/New_York", "").unwrap();
        let first = utc("2026-11-01T05:30:00Z"); // 01:30 EDT
        let next_day = utc("2026-11-02T06:30:00Z"); // 01:30 EST
        assert_eq!(table.next_after(utc("2026-10-31T12:00:00Z")), Some(first));
        assert_eq!(table.next_after(first), Some(next_day), "not again at 01:30 EST on the same day");
        // Between the two 01:30s and after the second, the latest tick is still the first.
        assert_eq!(table.latest_at_or_before(utc("2026-11-01T06:00:00Z")), Some(first));
        assert_eq!(table.latest_at_or_before(utc("2026-11-01T06:45:00Z")), Some(first));
    }

    /// Review of issue 13 item 2: the minimum interval looked at the next 1000 ticks only, so
    /// a clock change further away slipped through: `0 0,50 1,3 * * *` in New York is 50
    /// minutes apart at least on ordinary days, 10 minutes on a spring-forward day (01:50 EST,
    /// then 03:00 EDT), and four ticks a day reach the next spring only after 250 days.
    #[test]
    fn the_minimum_interval_holds_across_clock_changes() {
        let limits = ScheduleLimits { min_interval: Duration::from_mins(30), ..ScheduleLimits::default() };
        let table = Timetable::new("0 0,50 1,3 * * *", "America/New_York", "").unwrap();
        // Just after the 2026 spring change: the next is 2027-03-14, 349 days on.
        let from = utc("2026-03-09T12:00:00Z");
        let error = limits.check_interval(&table, "", from).expect("10 minutes apart on 2027-03-14");
        assert_eq!(error.field, "/cron");
        assert!(error.message.contains("600 s apart"), "{}", error.message);
        // Where the clock never changes, the same expression passes.
        let utc_table = Timetable::new("0 0,50 1,3 * * *", "UTC", "").unwrap();
        assert!(limits.check_interval(&utc_table, "", from).is_none());
    }

    /// Review of issue 13 (exactly-once firing): the fall-back rule held only for one fixed
    /// time in the repeated hour. `0 0,30 1 * * *` in New York fired 01:00 and 01:30 twice on
    /// 2026-11-01 (EDT, then EST): four jobs where the module promises two.
    #[test]
    fn fixed_times_in_a_fall_back_hour_fire_once_each() {
        let day = utc("2026-11-01T04:00:00Z");
        let ticks = |cron: &str, n: usize| {
            let table = Timetable::new(cron, "America/New_York", "").unwrap();
            let mut at = day;
            (0..n)
                .map(|_| {
                    at = table.next_after(at).unwrap();
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ticks("0 0,30 1 * * *", 3),
            ["2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:00:00Z"]
        );
        // A wildcard minute or hour follows real time through the repeated hour.
        assert_eq!(ticks("0 * * * *", 4)[1..3], ["2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z"]);
        assert_eq!(ticks("*/30 1 * * *", 4)[2..], ["2026-11-01T06:00:00Z", "2026-11-01T06:30:00Z"]);
        // After the second 01:30, the latest tick is the first 01:30, so nothing is due.
        let table = Timetable::new("0 0,30 1 * * *", "America/New_York", "").unwrap();
        assert_eq!(table.latest_at_or_before(utc("2026-11-01T06:45:00Z")), Some(utc("2026-11-01T05:30:00Z")));
        assert_eq!(
            due(&table, utc("2026-11-01T05:30:00Z"), utc("2026-11-01T06:00:05Z"), CatchUp::Latest),
            Due::Nothing
        );
    }

    #[test]
    fn missed_ticks_fire_once_or_not_at_all() {
        let table = Timetable::new("*/5 * * * *", "UTC", "").unwrap();
        let last = utc("2026-11-21T08:00:00Z");
        let now = utc("2026-11-21T09:02:00Z"); // twelve ticks missed
        assert_eq!(due(&table, last, now, CatchUp::Latest), Due::Fire(utc("2026-11-21T09:00:00Z")));
        assert_eq!(due(&table, last, now, CatchUp::None), Due::Skip(utc("2026-11-21T09:00:00Z")));
        let on_time = utc("2026-11-21T09:00:09Z");
        assert_eq!(due(&table, last, on_time, CatchUp::None), Due::Fire(utc("2026-11-21T09:00:00Z")));
        assert_eq!(due(&table, utc("2026-11-21T09:00:00Z"), now, CatchUp::Latest), Due::Nothing);
        assert_eq!(
            due(&table, last, Utc.with_ymd_and_hms(2026, 11, 21, 8, 4, 59).unwrap(), CatchUp::Latest),
            Due::Nothing
        );
    }

    #[test]
    fn schedules_check_their_job_like_the_api() {
        let now = Utc::now();
        let ok = serde_json::json!({"name": "digest", "cron": "0 9 * * 1-5", "timezone": "Asia/Taipei",
            "job": {"kind": "webhook", "payload": {"url": "https://example.com/h", "event": "digest.due"}}});
        let (s, _) = Schedule::parse(ok, "", Source::Api, "shop", now).unwrap();
        assert_eq!((s.catch_up, s.timezone.as_str()), (CatchUp::Latest, "Asia/Taipei"));
        let bad = serde_json::json!({"name": "bad name", "cron": "0 9 * * 1-5",
            "job": {"kind": "otp_sms", "run_at": "2026-11-21T09:00:00Z", "payload": {"to": "+14155550100", "code": "1234"}}});
        let errors = Schedule::parse(bad, "", Source::Api, "shop", now).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["/name", "/job/run_at", "/job/kind"]);
        let bad_payload = serde_json::json!({"name": "x", "cron": "@daily",
            "job": {"kind": "webhook", "payload": {"url": "ftp://example.com", "event": "e"}}});
        let errors = Schedule::parse(bad_payload, "", Source::Api, "shop", now).unwrap_err();
        assert_eq!(errors[0].field, "/job/payload/url");
    }

    #[test]
    fn each_tick_has_its_own_key_and_one_fingerprint() {
        let job = serde_json::json!({"kind": "audit_log", "payload": {"tenant_id": "t", "actor": "cron", "action": "partitions.checked", "resource_type": "db"}});
        let now = Utc::now();
        let (s, _) = Schedule::parse(
            serde_json::json!({"name": "nightly", "cron": "0 3 * * *", "job": job}),
            "",
            Source::File,
            "file",
            now,
        )
        .unwrap();
        let tick = utc("2026-11-21T03:00:00Z");
        let (a, b) = (s.job_for(tick, now).unwrap(), s.job_for(tick, now).unwrap());
        assert_eq!(a.idempotency, b.idempotency);
        assert_eq!(a.idempotency.as_ref().unwrap().0, "schedule:nightly:2026-11-21T03:00:00Z");
        assert_ne!(a.payload, b.payload, "each computation gives the audit event a fresh id");
        assert_eq!(a.producer, "file");
    }
}
