//! Pause, resume and run-now of schedules (`schedule_pause.lua`, `schedule_resume.lua`,
//! `schedule_fence.lua`, `schedule_get.lua`, and the pause's part in `schedule_claim.lua`,
//! `schedule_settle.lua`, `schedule_put.lua`, `schedule_delete.lua` and `enqueue.lua`), run
//! against a real Redis (`REDIS_URL`, default 127.0.0.1:6379) under a namespace of their own;
//! each test asserts the keys and values the scripts leave.

#![expect(clippy::unwrap_used, reason = "a fixture that cannot be set up fails the test, loudly")]

mod lab;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use jobs::schedule::{
    Actor, CatchUp, Changed, DeleteOutcome, Due, Refused, Schedule, ScheduleLimits, ScheduleStore, Source, due,
};
use jobs::store::TickClaim;
use jobs::{EnqueueOutcome, Kind};
use serde_json::{Value, json};

use lab::Lab;

/// The next-fire score of a paused schedule (`PARKED` in `schedule_index.lua`).
const PARKED: f64 = 4_503_599_627_370_496.0;

impl Lab {
    fn schedules(&self) -> ScheduleStore {
        ScheduleStore::new(self.conn.clone(), &self.namespace)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{{schedules}}:{rest}", self.namespace)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        cmd.query_async(&mut self.conn.clone()).await.unwrap()
    }

    async fn hash(&self, key: String) -> BTreeMap<String, String> {
        self.run(redis::cmd("HGETALL").arg(key)).await
    }

    async fn score(&self, name: &str) -> Option<f64> {
        self.run(redis::cmd("ZSCORE").arg(self.key("due")).arg(name)).await
    }

    /// The fence of every queue, by kind.
    async fn fences(&self) -> BTreeMap<&'static str, BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for kind in Kind::ALL {
            out.insert(kind.as_str(), self.hash(self.keys.queue(kind).schedule_pauses()).await);
        }
        out
    }

    /// Every key of the namespace with its value: equal before and after a call that must
    /// write nothing.
    async fn dump(&self) -> BTreeMap<String, String> {
        let names: Vec<String> = self.run(redis::cmd("KEYS").arg(format!("{}:*", self.namespace))).await;
        let mut out = BTreeMap::new();
        for name in names {
            let kind: String = self.run(redis::cmd("TYPE").arg(&name)).await;
            let value = match kind.as_str() {
                "hash" => format!("{:?}", self.hash(name.clone()).await),
                "zset" => format!(
                    "{:?}",
                    self.run::<Vec<String>>(redis::cmd("ZRANGE").arg(&name).arg(0).arg(-1).arg("WITHSCORES")).await
                ),
                "list" => {
                    format!("{:?}", self.run::<Vec<String>>(redis::cmd("LRANGE").arg(&name).arg(0).arg(-1)).await)
                }
                _ => format!("{:?}", self.run::<Option<Vec<u8>>>(redis::cmd("GET").arg(&name)).await),
            };
            out.insert(name, value);
        }
        out
    }

    async fn redis_now(&self) -> DateTime<Utc> {
        let (secs, micros): (i64, i64) = self.run(&redis::cmd("TIME")).await;
        DateTime::from_timestamp_millis(secs * 1000 + micros / 1000).unwrap()
    }
}

/// A webhook schedule on `cron` (every minute by default), stored as of `updated_at`.
fn schedule(
    name: &str,
    cron: &str,
    catch_up: CatchUp,
    source: Source,
    producer: &str,
    updated_at: DateTime<Utc>,
) -> Schedule {
    let request = json!({"name": name, "cron": cron, "catch_up": catch_up,
        "job": {"kind": "webhook", "payload": {"url": "https://a.example/hook", "event": "tick"}}});
    Schedule::parse(request, "", source, producer, updated_at).unwrap().0
}

fn shop() -> Actor {
    Actor::Producer("shop".into())
}

fn ms(t: DateTime<Utc>) -> String {
    t.timestamp_millis().to_string()
}

/// An every-minute schedule of the shop's, stored two hours ago, last fired `last` ago.
async fn minutely(lab: &Lab, name: &str, catch_up: CatchUp, last: chrono::Duration) -> Schedule {
    let now = Utc::now();
    let s = schedule(name, "* * * * *", catch_up, Source::Api, "shop", now - chrono::Duration::hours(2));
    lab.schedules().put_checked(&s, &ScheduleLimits::default()).await.unwrap();
    let tick = (now - last).duration_trunc(chrono::Duration::minutes(1)).unwrap();
    assert!(lab.schedules().settle(&s, Some(tick), tick + chrono::Duration::minutes(1)).await.unwrap());
    s
}

#[tokio::test]
async fn a_pause_is_stored_parks_the_schedule_fences_every_queue_and_is_idempotent() {
    let lab = Lab::new();
    let store = lab.schedules();
    minutely(&lab, "digest", CatchUp::Latest, chrono::Duration::hours(1)).await;
    let before = lab.redis_now().await;
    assert_eq!(store.pause("digest", &shop()).await.unwrap(), Ok(Changed { changed: true }));
    let after = lab.redis_now().await;

    let paused = lab.hash(lab.key("paused")).await;
    let pause: Value = serde_json::from_str(&paused["digest"]).unwrap();
    assert_eq!(pause["by"], "api:shop");
    let at = pause["at"].as_i64().unwrap();
    assert!((before.timestamp_millis()..=after.timestamp_millis()).contains(&at), "the pause's time is Redis's");
    assert_eq!(lab.score("digest").await, Some(PARKED), "parked after every real fire time");
    let fence = BTreeMap::from([("digest".to_owned(), at.to_string())]);
    assert_eq!(lab.fences().await, Kind::ALL.map(|k| (k.as_str(), fence.clone())).into_iter().collect());

    // Due for an hour, but paused: no claim takes it.
    let claim = store.claim(chrono::Duration::seconds(5), 100).await.unwrap();
    assert!(claim.due.is_empty());

    // Again: nothing changes, the first pause's time is kept.
    let dump = lab.dump().await;
    assert_eq!(store.pause("digest", &Actor::Operator("ops".into())).await.unwrap(), Ok(Changed { changed: false }));
    assert_eq!(lab.dump().await, dump);

    // Listed and read as paused.
    let (listed, _) = store.get("digest").await.unwrap();
    let listed = listed.unwrap();
    assert_eq!(listed.pause.as_ref().map(|p| (p.at.timestamp_millis(), p.by.as_str())), Some((at, "api:shop")));
    assert_eq!(listed.next_run_at(Utc::now()), None, "a paused schedule shows no next run");
    assert!(store.list().await.unwrap()[0].pause.is_some());
    assert!(store.list_for("shop").await.unwrap()[0].pause.is_some());
}

#[tokio::test]
async fn pause_resume_and_run_refuse_other_producers_and_the_file_and_write_nothing() {
    let lab = Lab::new();
    let store = lab.schedules();
    let queue = lab.store();
    minutely(&lab, "mine", CatchUp::Latest, chrono::Duration::minutes(1)).await;
    let file = schedule("nightly", "0 3 * * *", CatchUp::Latest, Source::File, "file", Utc::now());
    store.put(&file).await.unwrap();
    let dump = lab.dump().await;
    let other = Actor::Producer("other".into());
    for (name, actor, refused) in [
        ("mine", &other, Refused::Taken),
        ("nightly", &shop(), Refused::FromFile),
        ("absent", &shop(), Refused::Missing),
    ] {
        assert_eq!(store.pause(name, actor).await.unwrap(), Err(refused.clone()), "pause {name}");
        assert_eq!(store.resume(name, actor, &queue).await.unwrap(), Err(refused.clone()), "resume {name}");
        assert_eq!(store.run_now(name, actor, &queue).await.unwrap(), Err(refused), "run {name}");
    }
    assert_eq!(lab.dump().await, dump, "refusals write nothing");

    // An operator acts on the file's schedule.
    let ops = Actor::Operator("alice".into());
    assert_eq!(store.pause("nightly", &ops).await.unwrap(), Ok(Changed { changed: true }));
    let pause: Value = serde_json::from_str(&lab.hash(lab.key("paused")).await["nightly"]).unwrap();
    assert_eq!(pause["by"], "console:alice");
    assert_eq!(store.resume("nightly", &ops, &queue).await.unwrap(), Ok(Changed { changed: true }));
    assert_eq!(store.resume("nightly", &ops, &queue).await.unwrap(), Ok(Changed { changed: false }), "not paused");
}

/// A tick claimed before the pause and still in flight is refused by the fence; a tick claimed
/// after a pause that has since been resumed is not (a stale fence refuses nothing newer).
#[tokio::test]
async fn the_fence_refuses_a_tick_claimed_before_the_pause_and_nothing_claimed_after() {
    let lab = Lab::new();
    let store = lab.schedules();
    let queue = lab.store();
    let s = minutely(&lab, "digest", CatchUp::Latest, chrono::Duration::minutes(5)).await;
    let claim = store.claim(chrono::Duration::seconds(5), 10).await.unwrap();
    assert_eq!(claim.due.len(), 1);
    let tick = Utc::now().duration_trunc(chrono::Duration::minutes(1)).unwrap();
    let job = s.job_for(tick, claim.now).unwrap();
    store.pause("digest", &shop()).await.unwrap().unwrap();
    let dump = lab.dump().await;
    let in_flight = TickClaim { schedule: "digest".into(), claimed: claim.now };
    assert_eq!(queue.enqueue_tick(&job, &in_flight).await.unwrap(), EnqueueOutcome::NotWritten);
    assert_eq!(lab.dump().await, dump, "the refused tick wrote nothing: no job, no key, no wake-up");

    // The scheduler settles it (no tick): the pause keeps the schedule parked.
    assert!(store.settle(&s, None, claim.now).await.unwrap());
    assert_eq!(lab.score("digest").await, Some(PARKED));
    // A tick fired before the pause is still recorded, and the schedule stays parked.
    assert!(store.settle(&s, Some(tick), tick + chrono::Duration::minutes(1)).await.unwrap());
    assert_eq!(lab.hash(lab.key("last")).await["digest"], ms(tick));
    assert_eq!(lab.score("digest").await, Some(PARKED));

    // The fence of another schedule, or of this one's pause for a later claim, refuses nothing.
    let later = TickClaim { schedule: "digest".into(), claimed: lab.redis_now().await + chrono::Duration::seconds(1) };
    let other = TickClaim { schedule: "other".into(), claimed: claim.now };
    assert!(matches!(queue.enqueue_tick(&job, &other).await.unwrap(), EnqueueOutcome::Created { .. }));
    let again = s.job_for(tick + chrono::Duration::minutes(1), claim.now).unwrap();
    assert!(matches!(queue.enqueue_tick(&again, &later).await.unwrap(), EnqueueOutcome::Created { .. }));
}

/// A claim that meets a paused schedule whose score a racing writer moved (a settle of an
/// earlier claim, a worker's reconcile) parks it again and takes nothing.
#[tokio::test]
async fn a_claim_parks_a_paused_schedule_it_finds_due() {
    let lab = Lab::new();
    let store = lab.schedules();
    minutely(&lab, "digest", CatchUp::Latest, chrono::Duration::minutes(5)).await;
    store.pause("digest", &shop()).await.unwrap().unwrap();
    let () = lab.run(redis::cmd("ZADD").arg(lab.key("due")).arg(0).arg("digest")).await;
    let claim = store.claim(chrono::Duration::seconds(5), 10).await.unwrap();
    assert!(claim.due.is_empty());
    assert_eq!(lab.score("digest").await, Some(PARKED));
}

/// `catch_up: latest`: the resume fires the latest tick missed while paused, once, with its
/// regular key, and records it; earlier missed ticks are not fired.
#[tokio::test]
async fn resume_with_catch_up_latest_fires_the_latest_missed_tick_once() {
    let lab = Lab::new();
    let store = lab.schedules();
    let s = minutely(&lab, "digest", CatchUp::Latest, chrono::Duration::minutes(10)).await;
    store.pause("digest", &shop()).await.unwrap().unwrap();
    let before = lab.redis_now().await;
    assert_eq!(store.resume("digest", &shop(), &lab.store()).await.unwrap(), Ok(Changed { changed: true }));
    let after = lab.redis_now().await;
    assert!(lab.hash(lab.key("paused")).await.is_empty());
    assert!(
        lab.fences().await.values().all(|f| f.contains_key("digest")),
        "the pause's fences stay: a tick claimed before the pause must not fire after the resume"
    );
    let table = s.timetable().unwrap();
    let last: i64 = lab.hash(lab.key("last")).await["digest"].parse().unwrap();
    let candidates = [before, after].map(|t| table.latest_at_or_before(t).unwrap());
    let owed = candidates.into_iter().find(|t| t.timestamp_millis() == last).expect("the owed tick is recorded");
    let q = lab.keys.queue(Kind::Webhook);
    let ready: Vec<String> = lab.run(redis::cmd("LRANGE").arg(q.ready()).arg(0).arg(-1)).await;
    assert_eq!(ready.len(), 1, "one job, not ten");
    let key = jobs::schedule::idempotency_key("digest", owed);
    let held: String = lab.run(redis::cmd("GET").arg(q.idempotency("shop", &key))).await;
    assert!(held.ends_with(&ready[0]), "the owed tick carries its regular key {key}");
    #[expect(clippy::cast_precision_loss, reason = "ms since the epoch")]
    let due_now = after.timestamp_millis() as f64;
    assert!(lab.score("digest").await.unwrap() <= due_now, "due at once: the scheduler computes the next");
    // A scheduler pass now finds nothing more owed.
    let claim = store.claim(chrono::Duration::seconds(5), 10).await.unwrap();
    let since = claim.due[0].last.unwrap();
    assert!(!matches!(due(&table, since, claim.now, s.catch_up), Due::Fire(t) if t <= owed));
}

/// `catch_up: none`: resumed, every tick up to the resume counts as done; the schedule picks
/// up at the first tick after it.
#[tokio::test]
async fn resume_with_catch_up_none_skips_the_missed_ticks() {
    let lab = Lab::new();
    let store = lab.schedules();
    let s = minutely(&lab, "digest", CatchUp::None, chrono::Duration::minutes(10)).await;
    store.pause("digest", &shop()).await.unwrap().unwrap();
    let before = lab.redis_now().await;
    assert_eq!(store.resume("digest", &shop(), &lab.store()).await.unwrap(), Ok(Changed { changed: true }));
    let after = lab.redis_now().await;
    let table = s.timetable().unwrap();
    let last: i64 = lab.hash(lab.key("last")).await["digest"].parse().unwrap();
    let candidates = [before, after].map(|t| table.latest_at_or_before(t).unwrap().timestamp_millis());
    assert!(candidates.contains(&last), "the latest tick at the resume counts as done: {last} {candidates:?}");
    #[expect(clippy::cast_precision_loss, reason = "ms since the epoch")]
    let next = table.next_after(DateTime::from_timestamp_millis(last).unwrap()).unwrap().timestamp_millis() as f64;
    assert_eq!(lab.score("digest").await, Some(next), "looked at next at the first tick after the resume");
    assert!(lab.hash(lab.key("paused")).await.is_empty());
}

/// A replacement of a paused schedule (the API's, or SCHEDULES_FILE's at a worker's start)
/// keeps the pause; a delete ends it, fences and all.
#[tokio::test]
async fn a_replacement_keeps_the_pause_and_a_delete_ends_it() {
    let lab = Lab::new();
    let store = lab.schedules();
    let limits = ScheduleLimits::default();
    minutely(&lab, "digest", CatchUp::Latest, chrono::Duration::minutes(1)).await;
    store.pause("digest", &shop()).await.unwrap().unwrap();
    let replaced = schedule("digest", "*/5 * * * *", CatchUp::None, Source::Api, "shop", Utc::now());
    store.put_checked(&replaced, &limits).await.unwrap();
    assert_eq!(lab.score("digest").await, Some(PARKED));
    assert!(lab.hash(lab.key("paused")).await.contains_key("digest"));

    let file = schedule("nightly", "0 3 * * *", CatchUp::Latest, Source::File, "file", Utc::now());
    store.put(&file).await.unwrap();
    store.pause("nightly", &Actor::Operator("alice".into())).await.unwrap().unwrap();
    let edited = schedule("nightly", "0 4 * * *", CatchUp::Latest, Source::File, "file", Utc::now());
    assert!(store.put(&edited).await.unwrap());
    assert_eq!(lab.score("nightly").await, Some(PARKED), "the file's new version stays paused");

    assert_eq!(store.delete_checked("digest", "shop").await.unwrap(), DeleteOutcome::Deleted);
    assert!(store.delete_from_file("nightly").await.unwrap());
    assert!(lab.hash(lab.key("paused")).await.is_empty());
    assert!(lab.fences().await.values().all(BTreeMap::is_empty));
    // A new schedule of the same name starts running.
    let fresh = schedule("digest", "* * * * *", CatchUp::Latest, Source::Api, "shop", Utc::now());
    store.put_checked(&fresh, &limits).await.unwrap();
    assert!(lab.score("digest").await.unwrap() < PARKED);
}

/// Run-now: one job per schedule and second, whoever presses how often; the regular ticks are
/// left alone, and a paused schedule runs too, staying paused.
#[tokio::test]
async fn run_now_makes_one_job_a_second_and_leaves_the_ticks_alone() {
    let lab = Lab::new();
    let store = lab.schedules();
    let queue = lab.store();
    minutely(&lab, "digest", CatchUp::Latest, chrono::Duration::minutes(1)).await;
    // Clear of a second's end, so the ten runs fall in one second.
    while lab.redis_now().await.timestamp_subsec_millis() > 600 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = (lab.hash(lab.key("last")).await, lab.score("digest").await);
    let shop = shop();
    let runs = futures::future::join_all((0..10).map(|_| store.run_now("digest", &shop, &queue))).await;
    let runs: Vec<_> = runs.into_iter().map(|r| r.unwrap().unwrap()).collect();
    let created: Vec<_> = runs.iter().filter(|r| !r.replayed).collect();
    assert_eq!(created.len(), 1, "one run made the job, the nine others were given it");
    assert!(runs.iter().all(|r| r.id == created[0].id && r.idempotency_key == created[0].idempotency_key));
    let key = &created[0].idempotency_key;
    let seconds: i64 = key.strip_prefix("schedule:digest:manual:").unwrap().parse().unwrap();
    assert!((Utc::now().timestamp() - seconds).abs() <= 2, "{key}");
    let ready: Vec<String> =
        lab.run(redis::cmd("LRANGE").arg(lab.keys.queue(Kind::Webhook).ready()).arg(0).arg(-1)).await;
    assert_eq!(ready, [created[0].id.clone()]);
    let idem = lab.keys.queue(Kind::Webhook).idempotency("shop", key);
    let held: String = lab.run(redis::cmd("GET").arg(idem)).await;
    assert!(held.ends_with(&created[0].id));
    assert_eq!((lab.hash(lab.key("last")).await, lab.score("digest").await), before, "the regular ticks are untouched");

    // Paused: runs, and stays paused.
    store.pause("digest", &shop).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let run = store.run_now("digest", &shop, &queue).await.unwrap().unwrap();
    assert!(!run.replayed && run.id != created[0].id);
    assert_eq!(lab.score("digest").await, Some(PARKED));
}
