//! Webhook destinations: one slow or broken endpoint must not hold the others' workers.
//!
//! A destination is the scheme, host and port of a webhook URL ([`Destination`]). Fleet-wide,
//! at most [`Policy::max_in_flight`] deliveries to one destination are in flight; a job that
//! finds no slot, or finds its destination cooling down, is deferred: it gives its attempt back,
//! waits `scheduled` (cancel and browse see it) and parked, and the delivery that frees a slot
//! moves the oldest parked job to the popping end of the ready list at once. Consecutive
//! failures open a cool-down (a circuit breaker): its jobs wait without burning attempts until
//! the gap ends, then single probes test the destination; a success closes it, a failure
//! doubles the gap. Each step is one script (`lua/destination_*.lua`) over keys that share the
//! webhook queue's hash tag ([`crate::keys::DestinationKeys`]).

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::Script;
use serde::Serialize;
use sha2::Digest;

use crate::keys::{DestinationKeys, QueueKeys};
use crate::record::{millis, with_records};
use crate::redis_conn::Conn;
use crate::store::Cause;
use crate::{Keys, Kind, StoreError};

/// Scripts of this module: record.lua and lanes.lua, then destination.lua, then the script itself.
fn script(body: &str) -> Script {
    with_records(&format!("{}{body}", include_str!("../lua/destination.lua")))
}

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| script(include_str!("../lua/destination_acquire.lua")));
static RELEASE: LazyLock<Script> = LazyLock::new(|| script(include_str!("../lua/destination_release.lua")));
static RESUME: LazyLock<Script> = LazyLock::new(|| script(include_str!("../lua/destination_resume.lua")));

/// The most destinations one console page lists.
pub const MAX_PAGE: usize = 200;

/// Where a webhook goes, as far as flow control cares: `scheme://host:port`, the host
/// lower-cased and the port explicit (`https://Example.org/x` is `https://example.org:443`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    origin: String,
    id: String,
}

impl Destination {
    /// The destination of `url`; `None` for a URL without a host (validation refuses those).
    pub fn of_url(url: &str) -> Option<Self> {
        let url = url::Url::parse(url).ok()?;
        let host = match url.host()? {
            url::Host::Domain(name) => name.trim_end_matches('.').to_ascii_lowercase(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => format!("[{ip}]"),
        };
        let port = url.port_or_known_default()?;
        let origin = format!("{}://{host}:{port}", url.scheme());
        let id = hex::encode(&sha2::Sha256::digest(origin.as_bytes())[..16]);
        Some(Self { origin, id })
    }

    /// `scheme://host:port`: what the console shows.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The digest naming the destination's keys and its console entry.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A destination id as the console takes it: 32 lower-case hex digits.
pub fn is_id(raw: &str) -> bool {
    raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The worker's flow-control settings (`WEBHOOK_*`, read at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION` (default 8).
    pub max_in_flight: u32,
    /// How long a slot is held at most: the webhook timeout and a margin. A worker that dies
    /// mid-delivery frees its slot after this.
    pub hold: Duration,
    /// `WEBHOOK_MAX_DEFERRAL_SECONDS` (default 86400): a job waiting for its destination this
    /// long since its first deferral fails as expired instead of waiting on.
    pub max_deferral: Duration,
    /// `WEBHOOK_COOLDOWN_FAILURES` (default 5): consecutive failures that open a cool-down.
    pub threshold: u32,
    /// `WEBHOOK_COOLDOWN_MIN_SECONDS` (default 5): the first gap, doubled by each failed probe.
    pub base_gap: Duration,
    /// `WEBHOOK_COOLDOWN_MAX_SECONDS` (default 600): the longest gap, also the most a
    /// `Retry-After` can set.
    pub max_gap: Duration,
    /// How long an idle destination's keys are kept (an hour), so their number stays bounded
    /// by the destinations used within it.
    pub idle: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_in_flight: 8,
            hold: Duration::from_secs(15),
            max_deferral: Duration::from_hours(24),
            threshold: 5,
            base_gap: Duration::from_secs(5),
            max_gap: Duration::from_mins(10),
            idle: Duration::from_hours(1),
        }
    }
}

/// Why a job was deferred: its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeferReason {
    /// Every slot of the destination is taken.
    Busy,
    /// The destination cools down (or its single probe is in flight).
    Cooling,
}

impl DeferReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Cooling => "cooling",
        }
    }
}

/// What [`Destinations::acquire`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Send now; release afterwards. `probe`: the single test of a cooling destination.
    Acquired { probe: bool },
    /// The job now waits, scheduled for `until` at the latest, its attempt given back.
    Deferred { until: DateTime<Utc>, reason: DeferReason },
    /// The job has waited the longest deferral since `since`: fail it; nothing changed.
    Overdue { since: DateTime<Utc> },
    /// No slot, and the job's cancellation was asked while it ran: it ended cancelled.
    Cancelled,
    /// The lease is no longer the job's: nothing changed.
    Stale,
}

/// How a delivery ended, as the cool-down counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The destination answered (2xx, or a 4xx other than 408/429: the endpoint is up).
    Answered,
    /// Connection error, timeout, 408, 429 or 5xx; `retry_after` from a 429/503.
    Failed { retry_after: Option<Duration> },
}

/// What a release changed in the cool-down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// The slot was not held (lost lease, expired slot): nothing changed.
    Stale,
    Unchanged,
    Opened,
    /// A probe failed: the gap grew.
    Extended,
    Closed,
}

/// What [`Destinations::release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub breaker: Breaker,
    /// Parked jobs moved to the ready list.
    pub moved: u64,
}

/// A destination cooling down, as the console lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cooling {
    pub id: String,
    /// `scheme://host:port`.
    pub destination: String,
    /// Consecutive failed deliveries.
    pub failures: u64,
    /// When the cool-down began.
    pub since: Option<DateTime<Utc>>,
    /// End of the current gap; after it, single probes test the destination.
    pub until: DateTime<Utc>,
    pub gap_seconds: f64,
    /// Jobs parked, waiting for the destination.
    pub parked: u64,
}

/// One page of cooling destinations, soonest gap end first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoolingPage {
    pub items: Vec<Cooling>,
    /// The offset of the next page, if any.
    pub next_cursor: Option<u64>,
    pub total: u64,
}

/// Flow control of webhook destinations over one Redis.
#[derive(Debug, Clone)]
pub struct Destinations {
    conn: Conn,
    keys: DestinationKeys,
    queue: QueueKeys,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn protocol(message: &str) -> StoreError {
    StoreError::Protocol(Cause::from(message.to_owned()))
}

impl Destinations {
    pub fn new(conn: Conn, keys: &Keys) -> Self {
        Self { conn, keys: keys.destinations(), queue: keys.queue(Kind::Webhook) }
    }

    /// One round trip: a slot for job `id` (lease `token`) at `to`, or the job deferred.
    pub async fn acquire(&self, to: &Destination, id: &str, token: u64, policy: &Policy) -> Result<Slot, StoreError> {
        let mut call = ACQUIRE.prepare_invoke();
        call.key(self.keys.in_flight(&to.id))
            .key(self.keys.parked(&to.id))
            .key(self.keys.state(&to.id))
            .key(self.keys.cooling())
            .key(self.queue.active())
            .key(self.queue.scheduled())
            .key(self.queue.bucket());
        call.arg(self.queue.job_prefix())
            .arg(id)
            .arg(token)
            .arg(policy.max_in_flight.max(1))
            .arg(ms(policy.hold))
            .arg(ms(policy.max_deferral))
            .arg(ms(policy.idle))
            .arg(&to.origin);
        let reply: Vec<redis::Value> = call.invoke_async(&mut self.conn.clone()).await?;
        let word = |i: usize| reply.get(i).and_then(|v| redis::from_redis_value::<String>(v.clone()).ok());
        let number = |i: usize| reply.get(i).and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok());
        match word(0).as_deref() {
            Some("acquired") => Ok(Slot::Acquired { probe: number(1) == Some(1) }),
            Some("deferred") => {
                let until = number(1).and_then(DateTime::from_timestamp_millis).ok_or_else(|| protocol("no run-at"))?;
                let reason =
                    if word(2).as_deref() == Some("cooling") { DeferReason::Cooling } else { DeferReason::Busy };
                Ok(Slot::Deferred { until, reason })
            }
            Some("overdue") => {
                let since = number(1).and_then(DateTime::from_timestamp_millis).ok_or_else(|| protocol("no time"))?;
                Ok(Slot::Overdue { since })
            }
            Some("stale") => Ok(Slot::Stale),
            Some("cancelled") => Ok(Slot::Cancelled),
            _ => Err(protocol("destination_acquire.lua answered something unknown")),
        }
    }

    /// One round trip: frees the slot job `id` took with `token`, counts `delivery` for the
    /// cool-down, and moves the oldest parked jobs into the free slots.
    pub async fn release(
        &self,
        to: &Destination,
        id: &str,
        token: u64,
        delivery: Delivery,
        policy: &Policy,
    ) -> Result<Released, StoreError> {
        let (outcome, retry_after) = match delivery {
            Delivery::Answered => ("ok", 0),
            Delivery::Failed { retry_after } => ("failed", retry_after.map_or(0, ms)),
        };
        let mut call = RELEASE.prepare_invoke();
        self.wake_keys(&mut call, &to.id);
        call.arg(self.queue.job_prefix())
            .arg(id)
            .arg(token)
            .arg(outcome)
            .arg(retry_after)
            .arg(policy.threshold.max(1))
            .arg(ms(policy.base_gap))
            .arg(ms(policy.max_gap))
            .arg(policy.max_in_flight.max(1))
            .arg(ms(policy.idle))
            .arg(&to.id)
            .arg(&to.origin);
        let (event, moved): (String, u64) = call.invoke_async(&mut self.conn.clone()).await?;
        let breaker = match event.as_str() {
            "stale" => Breaker::Stale,
            "opened" => Breaker::Opened,
            "extended" => Breaker::Extended,
            "closed" => Breaker::Closed,
            _ => Breaker::Unchanged,
        };
        Ok(Released { breaker, moved })
    }

    /// An operator ends the cool-down of destination `id`: `None` when it was not cooling
    /// down, else how many parked jobs moved to the ready list. `max_in_flight` counts when the
    /// destination's state names no limit of its own.
    pub async fn resume(&self, id: &str, max_in_flight: u32) -> Result<Option<u64>, StoreError> {
        let mut call = RESUME.prepare_invoke();
        self.wake_keys(&mut call, id);
        call.arg(self.queue.job_prefix()).arg(id).arg(max_in_flight.max(1));
        let (resumed, moved): (u8, u64) = call.invoke_async(&mut self.conn.clone()).await?;
        Ok((resumed == 1).then_some(moved))
    }

    fn wake_keys(&self, call: &mut redis::ScriptInvocation<'_>, id: &str) {
        call.key(self.keys.in_flight(id))
            .key(self.keys.parked(id))
            .key(self.keys.state(id))
            .key(self.keys.cooling())
            .key(self.queue.ready())
            .key(self.queue.scheduled())
            .key(self.queue.wake());
    }

    /// How many destinations cool down (the gauge).
    pub async fn cooling_count(&self) -> Result<u64, StoreError> {
        Ok(redis::cmd("ZCARD").arg(self.keys.cooling()).query_async(&mut self.conn.clone()).await?)
    }

    /// Destinations cooling down, soonest gap end first, from offset `cursor`: one `ZRANGE` and
    /// one pipeline of `limit` (at most [`MAX_PAGE`]) reads, whatever the number.
    pub async fn cooling(&self, cursor: u64, limit: usize) -> Result<CoolingPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut conn = self.conn.clone();
        let start = isize::try_from(cursor).unwrap_or(isize::MAX);
        let (ids, total): (Vec<(String, i64)>, u64) = redis::pipe()
            .cmd("ZRANGE")
            .arg(self.keys.cooling())
            .arg(start)
            .arg(start.saturating_add_unsigned(limit))
            .arg("WITHSCORES")
            .cmd("ZCARD")
            .arg(self.keys.cooling())
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(CoolingPage { items: Vec::new(), next_cursor: None, total });
        }
        let mut pipe = redis::pipe();
        for (id, _) in ids.iter().take(limit) {
            pipe.cmd("HMGET").arg(self.keys.state(id)).arg(&["origin", "failures", "since", "gap"]);
            pipe.cmd("ZCARD").arg(self.keys.parked(id));
        }
        let states: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let mut items = Vec::new();
        for ((id, until), pair) in ids.iter().zip(states.chunks(2)) {
            let (fields, parked) = (&pair[0], &pair[1]);
            let (origin, failures, since, gap): (Option<String>, Option<u64>, Option<i64>, Option<u64>) =
                redis::from_redis_value(fields.clone()).map_err(|e| StoreError::Protocol(Cause::new("a state", e)))?;
            // A state that expired leaves its index entry until the next prune: not listed.
            let Some(destination) = origin else { continue };
            items.push(Cooling {
                id: id.clone(),
                destination,
                failures: failures.unwrap_or(0),
                since: since.and_then(DateTime::from_timestamp_millis),
                until: millis(*until),
                gap_seconds: Duration::from_millis(gap.unwrap_or(0)).as_secs_f64(),
                parked: redis::from_redis_value(parked.clone()).unwrap_or(0),
            });
        }
        let more = ids.len() > limit;
        Ok(CoolingPage { items, next_cursor: more.then(|| cursor + limit as u64), total })
    }
}
