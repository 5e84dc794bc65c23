//! Priorities and groups (`lua/lanes.lua`) against a real Redis: the order a fetch serves
//! lanes and groups in, the rotation's invariants, every path back to the ready lists keeping
//! a job's lane, the depth counts, and the commands a fetch costs with 2 or 100,000 groups.

#![expect(clippy::unwrap_used, reason = "a fixture that cannot be set up fails the test, loudly")]

mod lab;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::control::{CancelOutcome, Control};
use jobs::dead::DeadLetters;
use jobs::keys::QueueKeys;
use jobs::queue::{Finished, Outcome, Queue, Retention};
use jobs::{Kind, NewJob, Priority};

use lab::Lab;

const LEASE: Duration = Duration::from_secs(30);

impl Lab {
    fn q(&self) -> QueueKeys {
        self.keys.queue(Kind::Webhook)
    }

    fn queue(&self) -> Queue {
        Queue::new(self.conn.clone(), &self.keys, Kind::Webhook, "w1")
    }

    #[expect(clippy::unused_self, reason = "read like the other fixtures")]
    fn job(&self, priority: Priority, group: Option<&str>) -> NewJob {
        NewJob { priority, group: group.map(str::to_owned), ..lab::job(Kind::Webhook) }
    }

    /// Enqueues `jobs` (1,000 a call) and answers their ids, in order.
    async fn put(&self, jobs: &[NewJob]) -> Vec<String> {
        for chunk in jobs.chunks(1000) {
            self.store().enqueue(chunk).await.unwrap();
        }
        jobs.iter().map(|j| j.id.to_string()).collect()
    }

    async fn fetch(&self, batch: usize) -> Vec<String> {
        self.queue().fetch(LEASE, batch, 100).await.unwrap().into_iter().map(|(l, _)| l.id).collect()
    }

    async fn list(&self, key: String) -> Vec<String> {
        redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query_async(&mut self.conn.clone()).await.unwrap()
    }

    async fn get(&self, key: String) -> Option<i64> {
        redis::cmd("GET").arg(key).query_async(&mut self.conn.clone()).await.unwrap()
    }

    async fn record(&self, id: &str) -> jobs::record::JobRecord {
        let raw: Vec<u8> = redis::cmd("GET").arg(self.q().job(id)).query_async(&mut self.conn.clone()).await.unwrap();
        jobs::record::JobRecord::decode(&raw).unwrap()
    }

    async fn queued(&self) -> u64 {
        DeadLetters::new(self.conn.clone(), self.keys.clone()).depths(Kind::Webhook).await.unwrap().queued
    }

    /// Every key of the namespace left, named after the queue's ready list (`ready`, `ready:g:a`).
    async fn lane_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}*", self.q().ready())).query_async(&mut self.conn.clone()).await.unwrap();
        keys.sort();
        let ready = self.q().ready();
        keys.into_iter().map(|k| k.replacen(&ready, "ready", 1)).collect()
    }

    async fn cleanup(&self) {
        let mut conn = self.conn.clone();
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}:*", self.namespace)).query_async(&mut conn).await.unwrap();
        for chunk in keys.chunks(10_000) {
            let _: u64 = redis::cmd("UNLINK").arg(chunk).query_async(&mut conn).await.unwrap();
        }
    }
}

fn owned(ids: &[&String]) -> Vec<String> {
    ids.iter().map(|id| (*id).clone()).collect()
}

fn finished(leased: jobs::queue::Leased, outcome: Outcome) -> Finished {
    Finished {
        job: leased,
        outcome,
        error: Some("HTTP 500".into()),
        provider_id: None,
        started_at: Utc::now(),
        finished_at: Utc::now(),
    }
}

#[tokio::test]
async fn high_before_normal_before_low_fifo_within_each() {
    let lab = Lab::new();
    let order = [Priority::Low, Priority::Normal, Priority::High, Priority::Low, Priority::High, Priority::Normal];
    let jobs: Vec<NewJob> = order.iter().map(|p| lab.job(*p, None)).collect();
    let ids = lab.put(&jobs).await;
    assert_eq!(lab.queued().await, 6);
    assert_eq!(lab.fetch(10).await, owned(&[&ids[2], &ids[4], &ids[1], &ids[5], &ids[0], &ids[3]]));
    // A batch smaller than the high lane takes from it alone.
    let more = lab.put(&[lab.job(Priority::Normal, None), lab.job(Priority::High, None)]).await;
    assert_eq!(lab.fetch(1).await, owned(&[&more[1]]));
    assert_eq!(lab.fetch(1).await, owned(&[&more[0]]));
    assert_eq!(lab.queued().await, 0);
    lab.cleanup().await;
}

#[tokio::test]
async fn groups_are_served_round_robin_so_a_flood_does_not_starve_a_late_group() {
    let lab = Lab::new();
    let a = lab.put(&(0..1000).map(|_| lab.job(Priority::Normal, Some("A"))).collect::<Vec<_>>()).await;
    let b = lab.put(&(0..3).map(|_| lab.job(Priority::Normal, Some("B"))).collect::<Vec<_>>()).await;
    assert_eq!(lab.queued().await, 1003);
    let got = lab.fetch(10).await;
    assert_eq!(got, owned(&[&a[0], &b[0], &a[1], &b[1], &a[2], &b[2], &a[3], &a[4], &a[5], &a[6]]));
    // B's list emptied: it left the rotation; A alone is served in runs.
    assert_eq!(lab.list(lab.q().rotation(Priority::Normal)).await, ["A"]);
    assert_eq!(lab.fetch(5).await, a[7..12]);
    assert_eq!(lab.get(lab.q().ready_grouped()).await, Some(1000 - 12));
    // B comes back with its next job, and is served next to A again.
    let b2 = lab.put(&[lab.job(Priority::Normal, Some("B"))]).await;
    assert_eq!(lab.list(lab.q().rotation(Priority::Normal)).await, ["B", "A"]);
    assert_eq!(lab.fetch(3).await, owned(&[&a[12], &b2[0], &a[13]]));
    assert_eq!(lab.queued().await, 1000 - 14);
    lab.cleanup().await;
}

#[tokio::test]
async fn the_ungrouped_list_takes_a_turn_while_groups_wait_and_the_lanes_empty_to_nothing() {
    let lab = Lab::new();
    let u = lab.put(&[lab.job(Priority::Normal, None), lab.job(Priority::Normal, None)]).await;
    assert_eq!(lab.lane_keys().await, ["ready"]);
    let g = lab.put(&[lab.job(Priority::Normal, Some("A")), lab.job(Priority::Normal, Some("A"))]).await;
    // The rotation started with a group while ungrouped jobs waited: "" joined it first.
    assert_eq!(lab.list(lab.q().rotation(Priority::Normal)).await, ["A", ""]);
    assert_eq!(lab.fetch(3).await, owned(&[&u[0], &g[0], &u[1]]));
    // The ungrouped list emptied: "" left; a new ungrouped job brings it back at the far end.
    assert_eq!(lab.list(lab.q().rotation(Priority::Normal)).await, ["A"]);
    let u2 = lab.put(&[lab.job(Priority::Normal, None)]).await;
    assert_eq!(lab.list(lab.q().rotation(Priority::Normal)).await, ["", "A"]);
    assert_eq!(lab.fetch(5).await, owned(&[&g[1], &u2[0]]));
    assert_eq!(lab.lane_keys().await, Vec::<String>::new(), "an empty queue leaves no lane key, no counter");
    assert_eq!(lab.queued().await, 0);
    // A group in another lane keeps its own rotation.
    let low = lab.put(&[lab.job(Priority::Low, Some("A")), lab.job(Priority::Low, None)]).await;
    assert_eq!(
        lab.list(lab.q().rotation(Priority::Low)).await,
        ["", "A"],
        "the ungrouped job joins a rotation that holds a group"
    );
    assert_eq!(lab.list(lab.q().group_list(Priority::Low, "A")).await, [low[0].clone()]);
    assert_eq!(lab.fetch(5).await, owned(&[&low[0], &low[1]]));
    lab.cleanup().await;
}

#[tokio::test]
async fn promoted_delayed_and_retried_jobs_land_in_their_lane_and_group() {
    let lab = Lab::new();
    let q = lab.q();
    let delayed =
        NewJob { run_at: Some(Utc::now() + chrono::Duration::hours(1)), ..lab.job(Priority::High, Some("T")) };
    let normal = lab.put(&[lab.job(Priority::Normal, None)]).await;
    let delayed_id = lab.put(std::slice::from_ref(&delayed)).await.remove(0);
    let record = lab.record(&delayed_id).await;
    assert_eq!((record.priority, record.group.as_deref()), (Priority::High, Some("T")), "kept on the record");
    let _: i64 = redis::cmd("ZADD")
        .arg(q.scheduled())
        .arg("XX")
        .arg(1)
        .arg(&delayed_id)
        .query_async(&mut lab.conn.clone())
        .await
        .unwrap();
    assert_eq!(lab.fetch(1).await, owned(&[&delayed_id]), "promoted into the high lane, before the normal job");
    // A retry of it comes back to the high lane too.
    let holder = jobs::queue::Leased {
        id: delayed_id.clone(),
        kind: Kind::Webhook,
        attempt: 1,
        token: 1,
        max_attempts: 3,
        created_at: Utc::now(),
        producer: "shop".into(),
        traceparent: None,
    };
    let past: DateTime<Utc> = Utc::now() - chrono::Duration::seconds(1);
    lab.queue()
        .finish(&[finished(holder, Outcome::Retry { at: past })], Utc::now(), &Retention::default())
        .await
        .unwrap();
    assert_eq!(lab.fetch(1).await, owned(&[&delayed_id]), "promoted from the retry set into the high lane");
    assert_eq!(lab.fetch(1).await, normal);
    lab.cleanup().await;
}

#[tokio::test]
async fn release_and_lost_lease_recovery_keep_the_lane() {
    let lab = Lab::new();
    let q = lab.q();
    let id = lab.put(&[lab.job(Priority::Low, Some("T"))]).await.remove(0);
    let mut leased = lab.queue().fetch(LEASE, 1, 100).await.unwrap();
    let holder = leased.remove(0).0;
    assert_eq!(lab.lane_keys().await, Vec::<String>::new());
    assert_eq!(lab.queue().release(&[(holder.id.clone(), holder.token)]).await.unwrap(), 1);
    assert_eq!(lab.list(q.group_list(Priority::Low, "T")).await, std::slice::from_ref(&id));
    assert_eq!(lab.list(q.rotation(Priority::Low)).await, ["T"]);
    assert_eq!(lab.queued().await, 1);
    // Leased for 1 ms and lost: the next fetch recovers it into its group of the low lane.
    let lost = lab.queue().fetch(Duration::from_millis(1), 1, 100).await.unwrap();
    assert_eq!(lost.len(), 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let other = lab.put(&[lab.job(Priority::Normal, None)]).await;
    assert_eq!(lab.fetch(5).await, owned(&[&other[0], &id]), "recovered behind the normal lane, in its own");
    lab.cleanup().await;
}

#[tokio::test]
async fn a_cancelled_grouped_job_is_skipped_and_the_depth_stays_true() {
    let lab = Lab::new();
    let ids = lab
        .put(&[
            lab.job(Priority::Normal, Some("T")),
            lab.job(Priority::Normal, Some("T")),
            lab.job(Priority::High, Some("U")),
        ])
        .await;
    assert_eq!(lab.queued().await, 3);
    let control = Control::new(lab.conn.clone(), lab.keys.clone(), BTreeMap::new(), Duration::from_secs(5));
    assert_eq!(control.cancel(&ids[0], None).await.unwrap().1, CancelOutcome::Cancelled);
    assert_eq!(lab.queued().await, 2);
    assert_eq!(lab.fetch(10).await, owned(&[&ids[2], &ids[1]]));
    assert_eq!(lab.queued().await, 0);
    assert_eq!(lab.get(lab.q().ready_grouped()).await, None);
    assert_eq!(lab.get(lab.q().ready_cancelled()).await, Some(0));
    lab.cleanup().await;
}

#[tokio::test]
async fn the_latency_sees_the_oldest_job_of_every_lane_and_group() {
    let lab = Lab::new();
    let pauses = jobs::pause::Pauses::new(lab.conn.clone(), lab.keys.clone());
    let hour_ago = Utc::now() - chrono::Duration::hours(1);
    lab.put(&[lab.job(Priority::Normal, None)]).await;
    let fresh = pauses.latency(Kind::Webhook, Utc::now()).await.unwrap();
    assert!(fresh < Duration::from_mins(1), "{fresh:?}");
    // An hour-old job waiting in a group of the low lane is the queue's latency.
    lab.put(&[NewJob { created_at: hour_ago, ..lab.job(Priority::Low, Some("T")) }]).await;
    let old = pauses.latency(Kind::Webhook, Utc::now()).await.unwrap();
    assert!(old >= Duration::from_secs(3599), "{old:?}");
    lab.cleanup().await;
}

/// Runs `fetch.lua` with `redis.call` counting: the commands one fetch of `batch` sends.
async fn commands_of_a_fetch(lab: &Lab, batch: usize) -> (i64, usize) {
    let counting = "local calls = 0\nlocal real_redis = redis\nlocal redis = setmetatable({call = function(...) calls = calls + 1 return real_redis.call(...) end}, {__index = real_redis})\nlocal function fetch()\n";
    let script = redis::Script::new(&format!(
        "{counting}{}{}{}{}\nend\nlocal reply = fetch()\nreturn {{calls, #reply - 6}}",
        include_str!("../lua/record.lua"),
        include_str!("../lua/lanes.lua"),
        include_str!("../lua/rate.lua"),
        include_str!("../lua/fetch.lua"),
    ));
    let q = lab.q();
    let mut call = script.prepare_invoke();
    call.key(q.ready()).key(q.scheduled()).key(q.retry()).key(q.active()).key(q.dead()).key(q.paused()).key(q.bucket());
    call.arg(30_000).arg(batch).arg(100).arg(q.job_prefix()).arg("w1").arg(q.idempotency_prefix()).arg(20_000);
    let (calls, fields): (i64, usize) = call.invoke_async(&mut lab.conn.clone()).await.unwrap();
    (calls, fields / 2)
}

#[tokio::test]
async fn a_fetch_costs_the_same_commands_with_two_groups_or_100_000() {
    const BATCH: usize = 50;
    let two = Lab::new();
    let jobs: Vec<NewJob> =
        (0..200).map(|i| two.job(Priority::Normal, Some(if i % 2 == 0 { "A" } else { "B" }))).collect();
    two.put(&jobs).await;
    let many = Lab::new();
    let jobs: Vec<NewJob> = (0..100_000).map(|i| many.job(Priority::Normal, Some(&format!("g{i}")))).collect();
    many.put(&jobs).await;
    let plain = Lab::new();
    plain.put(&(0..200).map(|_| plain.job(Priority::Normal, None)).collect::<Vec<_>>()).await;

    let (two_calls, two_leased) = commands_of_a_fetch(&two, BATCH).await;
    let (many_calls, many_leased) = commands_of_a_fetch(&many, BATCH).await;
    let (plain_calls, plain_leased) = commands_of_a_fetch(&plain, BATCH).await;
    println!(
        "commands for a fetch of {BATCH}: no group {plain_calls}, 2 groups {two_calls}, 100,000 groups {many_calls}"
    );
    assert_eq!((two_leased, many_leased, plain_leased), (BATCH, BATCH, BATCH));
    // Picking a grouped job costs at most four commands (take the next member, pop its list,
    // look at the list, put the member back), whatever the number of groups; the rest of the
    // fetch (its record's GET and SET, the lease's ZADD, promotion, recovery) is the same.
    let batch = i64::try_from(BATCH).unwrap();
    assert!(many_calls <= two_calls, "100,000 groups: {many_calls} commands, 2 groups: {two_calls}");
    assert!(two_calls - plain_calls <= 4 * batch + 8, "2 groups: {two_calls}, no group: {plain_calls}");
    // No group, normal priority: today's fetch (TIME, the pause's EXISTS, three ZRANGEBYSCOREs,
    // one RPOP, three commands a job) plus one EXISTS over the other lanes and one for the
    // kind's token bucket.
    assert_eq!(plain_calls, 6 + 3 * batch + 2, "no group");
    for lab in [two, many, plain] {
        lab.cleanup().await;
    }
}

#[tokio::test]
async fn the_queued_listing_pages_through_the_lanes_in_serving_order() {
    use jobs::browse::{Cursor, JobBrowser, JobState};
    let lab = Lab::new();
    let order = [Priority::Low, Priority::Normal, Priority::High, Priority::Low, Priority::High, Priority::Normal];
    let ids = lab.put(&order.iter().map(|p| lab.job(*p, None)).collect::<Vec<_>>()).await;
    let browser = JobBrowser::new(lab.conn.clone(), lab.keys.clone());
    let mut cursor: Option<Cursor> = None;
    let mut listed = Vec::new();
    for _ in 0..4 {
        let page = browser.list(Kind::Webhook, JobState::Queued, cursor.as_ref(), 4).await.unwrap();
        listed.extend(page.items.into_iter().map(|j| j.id));
        let Some(next) = page.next_cursor else { break };
        cursor = Some(Cursor::parse(JobState::Queued, &next).unwrap());
    }
    assert_eq!(listed, owned(&[&ids[2], &ids[4], &ids[1], &ids[5], &ids[0], &ids[3]]));
    assert_eq!(Cursor::parse(JobState::Queued, "h3:abc").unwrap().to_string(), "h3:abc");
    assert!(Cursor::parse(JobState::Queued, "x3:abc").is_err());
    lab.cleanup().await;
}

#[tokio::test]
async fn a_groups_queued_jobs_are_listed_by_group_and_the_groups_by_size() {
    use jobs::browse::{Cursor, GroupWaiting, JobBrowser, JobState};
    let lab = Lab::new();
    let order = [
        (Priority::Normal, Some("acme")),
        (Priority::Normal, None),
        (Priority::High, Some("acme")),
        (Priority::Low, Some("beta")),
        (Priority::Normal, Some("acme")),
        (Priority::Low, Some("acme")),
    ];
    let ids = lab.put(&order.iter().map(|(p, g)| lab.job(*p, *g)).collect::<Vec<_>>()).await;
    let browser = JobBrowser::new(lab.conn.clone(), lab.keys.clone());

    // acme's four, in serving order (high, then normal oldest first, then low), two a page.
    let mut cursor: Option<Cursor> = None;
    let mut listed = Vec::new();
    for _ in 0..4 {
        let page = browser.list_in(Kind::Webhook, JobState::Queued, Some("acme"), cursor.as_ref(), 2).await.unwrap();
        listed.extend(page.items.into_iter().map(|j| j.id));
        let Some(next) = page.next_cursor else { break };
        cursor = Some(Cursor::parse(JobState::Queued, &next).unwrap());
    }
    assert_eq!(listed, owned(&[&ids[2], &ids[0], &ids[4], &ids[5]]));
    // Without a group: the ungrouped job only; a group nobody used: nothing.
    let page = browser.list(Kind::Webhook, JobState::Queued, None, 50).await.unwrap();
    assert_eq!(page.items.into_iter().map(|j| j.id).collect::<Vec<_>>(), owned(&[&ids[1]]));
    let page = browser.list_in(Kind::Webhook, JobState::Queued, Some("nobody"), None, 50).await.unwrap();
    assert!(page.items.is_empty());

    let groups = browser.groups(Kind::Webhook, 50).await.unwrap();
    let acme = GroupWaiting { group: "acme".into(), waiting: 4, high: 1, normal: 2, low: 1 };
    let beta = GroupWaiting { group: "beta".into(), waiting: 1, high: 0, normal: 0, low: 1 };
    assert_eq!(groups.items, [acme.clone(), beta]);
    assert!(!groups.more);
    // One looked at: acme is in the first lane read, and the others are said to exist.
    let groups = browser.groups(Kind::Webhook, 1).await.unwrap();
    assert_eq!(groups.items.iter().map(|g| g.group.as_str()).collect::<Vec<_>>(), ["acme"]);
    assert!(groups.more);
    // Emptied lanes list no group.
    while !lab.fetch(10).await.is_empty() {}
    assert!(browser.groups(Kind::Webhook, 50).await.unwrap().items.is_empty());
    lab.cleanup().await;
}

/// The lane of the i-th job of a cost case.
type LaneOf = fn(usize) -> (Priority, Option<String>);

/// Redis CPU per job (`INFO commandstats`: µs inside `EVALSHA`) of enqueue (1000 a call) and
/// fetch (100 a call) over `LANES_COST_JOBS` (50,000) jobs: no group, 2 groups, 10,000 groups,
/// with one high job in ten. Needs a Redis of its own (`LANES_COST_REDIS`, default
/// `redis://127.0.0.1:6395`: `redis-server --port 6395 --save '' --daemonize yes`), since the
/// figures are the whole server's. Reported in docs/storage.md.
#[tokio::test]
#[ignore = "a benchmark: needs a Redis of its own"]
#[expect(clippy::cast_precision_loss, reason = "µs per job, for a report")]
async fn redis_cpu_per_job() {
    let url = std::env::var("LANES_COST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6395".to_owned());
    let n: usize = std::env::var("LANES_COST_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000);
    let conn = jobs::redis_conn::connect_url(&url, Duration::from_mins(1)).unwrap();
    let script_usec = || async {
        let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn.clone()).await.unwrap();
        info.lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| l.split("usec=").nth(1)?.split(',').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    let cases: [(&str, LaneOf); 4] = [
        ("no group, normal", |_| (Priority::Normal, None)),
        ("2 groups", |i| (Priority::Normal, Some(format!("g{}", i % 2)))),
        ("10,000 groups", |i| (Priority::Normal, Some(format!("g{}", i % 10_000)))),
        ("no group, 1 in 10 high", |i| (if i % 10 == 0 { Priority::High } else { Priority::Normal }, None)),
    ];
    for (name, lane) in cases {
        let namespace = format!("cost{}", uuid::Uuid::now_v7().simple());
        let lab = Lab { conn: conn.clone(), keys: jobs::Keys::new(&namespace), namespace };
        let jobs: Vec<NewJob> = (0..n)
            .map(|i| {
                let (priority, group) = lane(i);
                NewJob { group, ..lab.job(priority, None) }
            })
            .collect();
        let before = script_usec().await;
        lab.put(&jobs).await;
        let enqueued = script_usec().await;
        let mut fetched = 0;
        while fetched < n {
            let got = lab.queue().fetch(LEASE, 100, 100).await.unwrap().len();
            assert!(got > 0);
            fetched += got;
        }
        let after = script_usec().await;
        println!(
            "{name:<24} enqueue {:.2} µs/job, fetch {:.2} µs/job",
            (enqueued - before) as f64 / n as f64,
            (after - enqueued) as f64 / n as f64
        );
        lab.cleanup().await;
    }
}
