//! Every Redis key Jobplane writes, built in one place.
//!
//! Each queue's keys share the hash tag `{<kind>}` (`jobplane:{email}:ready`, ...), so every
//! Lua script touches exactly one Redis Cluster slot. The namespace in front lets tests and
//! several deployments share one Redis.

use sha2::Digest;

use crate::{Kind, Priority};

#[derive(Debug, Clone)]
pub struct Keys {
    namespace: String,
}

impl Keys {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self { namespace: namespace.into() }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// STRING naming the operator of one open console session (its id: a digest of the
    /// cookie's nonce), expiring with the cookie; deleted at logout.
    pub fn console_session(&self, id: &str) -> String {
        format!("{}:console:session:{id}", self.namespace)
    }

    /// HASH of the live worker processes: field worker id, value its heartbeat (JSON: host,
    /// pid, version, kinds, concurrency, in flight, started at, last seen). One key for the
    /// fleet, read whole by the console; entries gone for long are pruned by whoever reads it.
    pub fn workers(&self) -> String {
        format!("{}:workers", self.namespace)
    }

    pub fn queue(&self, kind: Kind) -> QueueKeys {
        QueueKeys { prefix: format!("{}:{{{}}}", self.namespace, kind.as_str()) }
    }

    /// The keys of webhook destinations ([`crate::destinations`]), under the webhook queue's
    /// hash tag, so one script reaches a destination's keys and the queue's together.
    pub fn destinations(&self) -> DestinationKeys {
        DestinationKeys { prefix: format!("{}:dest", self.queue(Kind::Webhook).prefix) }
    }
}

/// The keys of webhook destinations. A destination is named by its digest (`id`, 32 hex
/// digits of SHA-256 over `scheme://host:port`), never by a URL: no path, query or secret.
#[derive(Debug, Clone)]
pub struct DestinationKeys {
    prefix: String,
}

impl DestinationKeys {
    /// ZSET of the deliveries in flight (member `<job id>:<lease token>`, score: the slot's
    /// deadline, ms), so a dead worker's slot frees itself.
    pub fn in_flight(&self, id: &str) -> String {
        format!("{}:{id}:inflight", self.prefix)
    }

    /// ZSET of the deferred jobs waiting for a slot (score: first deferral, ms): oldest first.
    pub fn parked(&self, id: &str) -> String {
        format!("{}:{id}:parked", self.prefix)
    }

    /// HASH of the destination's cool-down: failures, until, gap, probe, since, origin, max.
    pub fn state(&self, id: &str) -> String {
        format!("{}:{id}:state", self.prefix)
    }

    /// ZSET of the destinations cooling down (member: id, score: end of the gap, ms), so the
    /// console lists them in O(page).
    pub fn cooling(&self) -> String {
        format!("{}:cooling", self.prefix)
    }
}

/// The keys of one queue. All share the queue's hash tag.
#[derive(Debug, Clone)]
pub struct QueueKeys {
    prefix: String,
}

impl QueueKeys {
    /// LIST of ids ready to run in the normal lane, ungrouped; producers `LPUSH`, workers pop
    /// from the right (FIFO). The other lanes and the group lists are named after it
    /// ([`QueueKeys::lane`], [`QueueKeys::group_list`]).
    pub fn ready(&self) -> String {
        format!("{}:ready", self.prefix)
    }

    /// LIST of the ungrouped ids ready to run at `priority`: normal is [`QueueKeys::ready`]
    /// itself, high and low are `<ready>:high` and `<ready>:low` (`lua/lanes.lua` builds them so).
    pub fn lane(&self, priority: Priority) -> String {
        match priority {
            Priority::High => format!("{}:high", self.ready()),
            Priority::Normal => self.ready(),
            Priority::Low => format!("{}:low", self.ready()),
        }
    }

    /// LIST of the ready ids of one group at `priority`: `<lane>:g:<group>`.
    pub fn group_list(&self, priority: Priority, group: &str) -> String {
        format!("{}:g:{group}", self.lane(priority))
    }

    /// LIST, the rotation of a lane: each group whose list holds ids, once, and "" for the
    /// lane's ungrouped list while the rotation holds a group and that list holds ids; a fetch
    /// pops a member on the right and puts it back on the left while its list still holds ids.
    pub fn rotation(&self, priority: Priority) -> String {
        format!("{}:groups", self.lane(priority))
    }

    /// STRING counting the ids waiting in the queue's group lists (every lane), so the queue's
    /// depth is the lanes' `LLEN`s plus it, less [`QueueKeys::ready_cancelled`], whatever the
    /// number of groups.
    pub fn ready_grouped(&self) -> String {
        format!("{}:grouped", self.ready())
    }

    /// STRING counting the cancelled ids still lying in the ready list (`cancel.lua` adds one
    /// per queued job it cancels; `fetch.lua` takes one off per cancelled or missing record it
    /// pops, never below 0), so the queue's depth is `LLEN ready` minus it without an `LREM`
    /// over a list that may hold millions. `fetch.lua` builds it as `<ready>:cancelled`.
    pub fn ready_cancelled(&self) -> String {
        format!("{}:cancelled", self.ready())
    }

    /// LIST of wake-up markers (at most 16): `enqueue.lua` pushes one per immediate job, and an
    /// idle worker waits on it with `BLPOP`, so a new job starts at once instead of at the
    /// worker's next poll.
    pub fn wake(&self) -> String {
        format!("{}:wake", self.prefix)
    }

    /// ZSET of delayed ids waiting for their time, scored by run-at in ms since the epoch.
    pub fn scheduled(&self) -> String {
        format!("{}:scheduled", self.prefix)
    }

    /// ZSET of ids waiting out a retry backoff, scored by run-at in ms since the epoch: apart
    /// from the delayed jobs, so "how many are retrying" is one `ZCARD`.
    pub fn retry(&self) -> String {
        format!("{}:retry", self.prefix)
    }

    /// ZSET of ids being worked on, scored by lease deadline in ms since the epoch.
    pub fn active(&self) -> String {
        format!("{}:active", self.prefix)
    }

    /// STRING present while the queue is paused (its value: when, ms, and by whom): `fetch.lua`
    /// leases nothing of a paused queue. Kept without expiry, so a pause survives restarts.
    pub fn paused(&self) -> String {
        format!("{}:paused", self.prefix)
    }

    /// HASH holding the kind's rate limit and its token bucket, shared by every worker
    /// (`lua/rate.lua` names the fields): `fetch.lua` leases a job only with a token,
    /// `throttle.lua` slows the kind when a provider says so, `rate_put.lua` sets the limit.
    /// Absent while no limit and no throttle is in force.
    pub fn bucket(&self) -> String {
        format!("{}:bucket", self.prefix)
    }

    /// HASH of the schedules paused (field: schedule name, value: when the pause was taken, ms on
    /// the schedules' Redis clock), in every queue's slot: `enqueue.lua` refuses a schedule's
    /// regular tick claimed at or before its pause, so no tick fires once a pause has answered.
    /// Written by the pause (the largest time wins), kept by the resume (a tick claimed before
    /// the pause may still be in flight) and trimmed by the schedule's delete.
    pub fn schedule_pauses(&self) -> String {
        format!("{}:schedule_pauses", self.prefix)
    }

    /// STREAM indexing the succeeded jobs within the retention window, newest last: each entry
    /// (one per `finish.lua` call) has one field per job, the job's id. Trimmed by age
    /// (`MINID`), so it costs a few bytes per job and one command per batch.
    pub fn succeeded(&self) -> String {
        format!("{}:succeeded", self.prefix)
    }

    /// STREAM indexing the cancelled jobs within the retention window, like [`QueueKeys::succeeded`].
    pub fn cancelled(&self) -> String {
        format!("{}:cancelled", self.prefix)
    }

    /// ZSET of dead (and expired) job ids, scored by dead_at in ms: the dead-letter index.
    /// The letters themselves are the job hashes, kept until evicted by cap or age.
    pub fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    /// ZSET of one producer's dead job ids, scored like [`QueueKeys::dead`]: what the
    /// per-producer cap counts and evicts from. `bury.lua` and the scripts that remove letters
    /// build it as `<dead>:by:<producer>`.
    pub fn dead_of(&self, producer: &str) -> String {
        format!("{}:by:{producer}", self.dead())
    }

    /// STRING holding one job's record (`record::JobRecord`, MessagePack): its payload,
    /// status, attempts, timestamps and attempt history.
    pub fn job(&self, id: &str) -> String {
        format!("{}:{id}", self.job_prefix())
    }

    /// The part of a job key before the id, for scripts that meet ids they were not given keys for.
    pub fn job_prefix(&self) -> String {
        format!("{}:job", self.prefix)
    }

    /// STRING `<fingerprint> <job id>` recording an idempotency key of one producer.
    /// A producer's name never holds `:` (it is the part before `:` in `PRODUCER_API_KEYS`),
    /// so the key is unambiguous whatever the idempotency key holds.
    pub fn idempotency(&self, producer: &str, key: &str) -> String {
        format!("{}:{producer}:{key}", self.idempotency_prefix())
    }

    /// ZSET of the OTP SMS accepted for one recipient within the rate window (member: job id,
    /// score: ms on Redis's clock). The number appears as a SHA-256 prefix, never in clear.
    pub fn rate_per_number(&self, number: &str) -> String {
        let digest = sha2::Sha256::digest(number.as_bytes());
        format!("{}:rate:to:{}", self.prefix, hex::encode(&digest[..16]))
    }

    /// ZSET of the OTP SMS accepted for one producer (API key name) within the rate window.
    pub fn rate_per_producer(&self, producer: &str) -> String {
        format!("{}:rate:key:{producer}", self.prefix)
    }

    /// HASH of the outcomes recorded in the minute `minute` (minutes since the epoch):
    /// `succeeded`, `failed`; kept two hours.
    pub fn stats(&self, minute: i64) -> String {
        format!("{}:stats:{minute}", self.prefix)
    }

    /// The part of an idempotency key before `:<producer>:<key>`, for scripts that build it.
    pub fn idempotency_prefix(&self) -> String {
        format!("{}:idem", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part Redis Cluster hashes: between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        let start = key.find('{').unwrap() + 1;
        let end = start + key[start..].find('}').unwrap();
        &key[start..end]
    }

    #[test]
    fn every_key_of_a_queue_shares_its_hash_tag() {
        let q = Keys::new("jobplane").queue(Kind::Email);
        let keys = [
            q.ready(),
            q.wake(),
            q.scheduled(),
            q.retry(),
            q.active(),
            q.dead(),
            q.paused(),
            q.bucket(),
            q.succeeded(),
            q.cancelled(),
            q.ready_cancelled(),
            q.lane(Priority::High),
            q.lane(Priority::Low),
            q.rotation(Priority::Normal),
            q.group_list(Priority::Low, "tenant-{7}"),
            q.ready_grouped(),
            q.schedule_pauses(),
            q.stats(29_395_200),
            q.job("0190"),
            q.idempotency("shop", "order-{7}:x"),
            q.rate_per_number("+886912345678"),
            q.rate_per_producer("shop"),
        ];
        for key in &keys {
            assert_eq!(hash_tag(key), "email", "{key}");
        }
        assert_eq!(q.ready(), "jobplane:{email}:ready");
        assert_eq!(q.job("abc"), "jobplane:{email}:job:abc");
        // The scripts build these from the record prefix and the ready list (`queue_key` in
        // lua/record.lua, fetch.lua's counter).
        let queue = q.job_prefix().strip_suffix(":job").unwrap().to_owned();
        assert_eq!(q.cancelled(), format!("{queue}:cancelled"));
        assert_eq!(q.idempotency_prefix(), format!("{queue}:idem"));
        assert_eq!(q.ready_cancelled(), format!("{}:cancelled", q.ready()));
        // lua/lanes.lua builds these from the ready list.
        assert_eq!(q.lane(Priority::Normal), q.ready());
        assert_eq!(q.rotation(Priority::High), format!("{}:high:groups", q.ready()));
        assert_eq!(q.group_list(Priority::Normal, "a"), format!("{}:g:a", q.ready()));
        assert_eq!(q.ready_grouped(), format!("{}:grouped", q.ready()));
        let dest = Keys::new("jobplane").destinations();
        for key in [dest.in_flight("ab"), dest.parked("ab"), dest.state("ab"), dest.cooling()] {
            assert_eq!(hash_tag(&key), "webhook", "{key}");
        }
        assert_eq!(dest.state("ab"), "jobplane:{webhook}:dest:ab:state");
        let otp = Keys::new("jobplane").queue(Kind::OtpSms);
        let number_key = otp.rate_per_number("+886912345678");
        assert!(number_key.starts_with("jobplane:{otp_sms}:rate:to:") && !number_key.contains("912345678"));
        assert_eq!(number_key.len(), "jobplane:{otp_sms}:rate:to:".len() + 32);
    }
}
