//! `jobs::browse` against a real Redis (`REDIS_URL`), each test under a namespace of its own:
//! every state's pages in order, walked to the end without a repeat or a gap, and cursors that
//! still resume after the queue moved under them.

#![expect(clippy::unwrap_used, reason = "a fixture that cannot be set up fails the test, loudly")]

mod lab;

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::browse::{Cursor, JobBrowser, JobPage, JobState};
use jobs::queue::{Finished, Outcome, Queue, Retention};
use jobs::record::JobRecord;
use jobs::redis_conn::Conn;
use jobs::{JobStatus, Keys, Kind, NewJob, Store};

use lab::Lab;

impl Lab {
    fn browser(&self) -> JobBrowser {
        JobBrowser::new(self.conn.clone(), self.keys.clone())
    }

    fn queue(&self) -> Queue {
        Queue::new(self.conn.clone(), &self.keys, Kind::Webhook, "w-browse")
    }

    /// Enqueues `n` webhooks due at `run_at` (now when `None`) in one call; their ids in order.
    async fn enqueue(&self, n: usize, run_at: Option<DateTime<Utc>>) -> Vec<String> {
        let store = Store::new(self.conn.clone(), self.keys.clone(), Duration::from_hours(1), Duration::from_secs(5));
        let jobs: Vec<NewJob> = (0..n)
            .map(|_| NewJob {
                payload: r#"{"url":"https://a.example/hook?token=t0ps3cret","event":"e","data":{}}"#.into(),
                run_at,
                ..lab::job(Kind::Webhook)
            })
            .collect();
        store.enqueue(&jobs).await.unwrap();
        jobs.iter().map(|j| j.id.to_string()).collect()
    }

    async fn set_status(&self, id: &str, status: JobStatus) {
        let key = self.keys.queue(Kind::Webhook).job(id);
        let mut conn = self.conn.clone();
        let raw: Vec<u8> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
        let mut record = JobRecord::decode(&raw).unwrap();
        record.status = status;
        let () = redis::cmd("SET").arg(&key).arg(record.encode()).query_async(&mut conn).await.unwrap();
    }

    /// One stream entry indexing `ids`, as `finish.lua` and the cancel script write them.
    async fn index(&self, stream: &str, ids: &[String]) {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for id in ids {
            cmd.arg(id).arg("");
        }
        let _: String = cmd.query_async(&mut self.conn.clone()).await.unwrap();
    }

    async fn page(&self, state: JobState, cursor: Option<&str>, limit: usize) -> JobPage {
        let cursor = cursor.map(|c| Cursor::parse(state, c).unwrap());
        self.browser().list(Kind::Webhook, state, cursor.as_ref(), limit).await.unwrap()
    }

    /// Every id of `state`, page by page, and how many pages it took.
    async fn walk(&self, state: JobState, limit: usize) -> (Vec<String>, usize) {
        let (mut ids, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
        loop {
            let page = self.page(state, cursor.as_deref(), limit).await;
            pages += 1;
            assert!(page.items.len() <= limit);
            ids.extend(page.items.into_iter().map(|j| j.id));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return (ids, pages),
            }
        }
    }

    async fn cleanup(&self) {
        let mut conn = self.conn.clone();
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}:*", self.namespace)).query_async(&mut conn).await.unwrap();
        if !keys.is_empty() {
            let _: u64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
        }
    }
}

fn ids(page: &JobPage) -> Vec<String> {
    page.items.iter().map(|j| j.id.clone()).collect()
}

#[tokio::test]
async fn queued_pages_run_oldest_first_skip_finished_ids_and_resume_after_pops() {
    let lab = Lab::new();
    let all = lab.enqueue(23, None).await;
    let (walked, pages) = lab.walk(JobState::Queued, 5).await;
    assert_eq!(walked, all, "oldest first, every id once");
    assert_eq!(pages, 5);
    let first = lab.page(JobState::Queued, None, 5).await;
    assert_eq!(first.items[0].status, JobStatus::Queued);
    assert!(first.items.iter().all(|j| j.worker.is_none() && j.lease_deadline.is_none()));

    // A cancelled job's id lingers in the list: it is not shown, and the pages go on past it.
    lab.set_status(&all[6], JobStatus::Cancelled).await;
    let second = lab.page(JobState::Queued, first.next_cursor.as_deref(), 5).await;
    assert_eq!(ids(&second), all[5..10].iter().filter(|id| **id != all[6]).cloned().collect::<Vec<_>>());
    let third_cursor = second.next_cursor.clone().unwrap();

    // Workers pop 7 ids (fewer than shown; the cancelled one is dropped, not run): the page
    // after resumes at the same job.
    let popped = lab.queue().fetch(Duration::from_mins(1), 7, 0).await.unwrap();
    assert_eq!(popped.len(), 6);
    assert_eq!(ids(&lab.page(JobState::Queued, Some(&third_cursor), 5).await), all[10..15]);

    // Further than a page from where it was: found by LPOS.
    let fourth = lab.page(JobState::Queued, Some(&third_cursor), 5).await.next_cursor.unwrap();
    let fifth = lab.page(JobState::Queued, Some(&fourth), 5).await.next_cursor.unwrap();
    // Indexes count from the right end as it is now: 7 ids left it.
    assert_eq!(fifth, format!("12:{}", all[19]));
    lab.queue().fetch(Duration::from_mins(1), 8, 0).await.unwrap();
    assert_eq!(ids(&lab.page(JobState::Queued, Some(&fifth), 5).await), all[20..23]);

    // The cursor's own job popped (with every older one): the page starts at the oldest left.
    lab.queue().fetch(Duration::from_mins(1), 6, 0).await.unwrap();
    let resumed = lab.page(JobState::Queued, Some(&fifth), 5).await;
    assert_eq!(ids(&resumed), all[21..23]);
    assert_eq!(resumed.next_cursor, None);

    let oldest = lab.browser().oldest_queued(Kind::Webhook).await.unwrap().unwrap();
    assert!(Utc::now() - oldest < chrono::Duration::seconds(60));
    assert_eq!(lab.browser().counts(Kind::Webhook).await.unwrap().queued, 2);
    lab.cleanup().await;
}

#[tokio::test]
async fn scheduled_pages_run_next_due_first_through_ties_and_resume_when_the_cursor_job_left() {
    let lab = Lab::new();
    let base = Utc::now() + chrono::Duration::hours(1);
    let mut all = Vec::new();
    for i in 0..6 {
        all.extend(lab.enqueue(1, Some(base + chrono::Duration::seconds(i))).await);
    }
    // Twelve at the same millisecond: ordered by id among themselves, as Redis orders ties.
    let mut tied = lab.enqueue(12, Some(base + chrono::Duration::seconds(10))).await;
    tied.sort();
    all.extend(tied.iter().cloned());
    all.extend(lab.enqueue(1, Some(base + chrono::Duration::seconds(20))).await);

    for limit in [1, 4, 7, 50] {
        let (walked, _) = lab.walk(JobState::Scheduled, limit).await;
        assert_eq!(walked, all, "limit {limit}");
    }
    let page = lab.page(JobState::Scheduled, None, 8).await;
    assert_eq!(page.items[0].run_at.timestamp_millis(), base.timestamp_millis());
    assert_eq!(page.items[0].status, JobStatus::Scheduled);
    let cursor = page.next_cursor.unwrap();
    assert_eq!(cursor, format!("{}:{}", (base + chrono::Duration::seconds(10)).timestamp_millis(), all[7]));

    // The cursor's job leaves the set (cancelled, run now): the next page is the same.
    let scheduled = lab.keys.queue(Kind::Webhook).scheduled();
    let mut conn = lab.conn.clone();
    let _: u64 = redis::cmd("ZREM").arg(&scheduled).arg(&all[7]).query_async(&mut conn).await.unwrap();
    assert_eq!(ids(&lab.page(JobState::Scheduled, Some(&cursor), 4).await), all[8..12]);
    // ... or moves to another time: resumed by the score it had.
    let _: u64 = redis::cmd("ZADD").arg(&scheduled).arg(1).arg(&all[7]).query_async(&mut conn).await.unwrap();
    assert_eq!(ids(&lab.page(JobState::Scheduled, Some(&cursor), 4).await), all[8..12]);
    // A cursor past every member: an empty last page.
    let past = format!("{}:zzz", (base + chrono::Duration::days(1)).timestamp_millis());
    let empty = lab.page(JobState::Scheduled, Some(&past), 4).await;
    assert!(empty.items.is_empty() && empty.next_cursor.is_none());
    lab.cleanup().await;
}

#[tokio::test]
async fn running_and_retrying_pages_show_the_worker_the_lease_and_the_last_error() {
    let lab = Lab::new();
    lab.enqueue(9, None).await;
    let leased = lab.queue().fetch(Duration::from_mins(5), 9, 0).await.unwrap();
    let now = Utc::now();
    let retry_at = now + chrono::Duration::minutes(10);
    let done: Vec<Finished> = leased
        .iter()
        .take(4)
        .map(|(job, _)| Finished {
            job: job.clone(),
            outcome: Outcome::Retry { at: retry_at },
            error: Some("HTTP 503 from https://a.example/hook?token=t0ps3cret".into()),
            provider_id: None,
            started_at: now,
            finished_at: now,
        })
        .collect();
    lab.queue().finish(&done, now, &Retention::default()).await.unwrap();

    let (running, _) = lab.walk(JobState::Running, 2).await;
    assert_eq!(running.len(), 5);
    let page = lab.page(JobState::Running, None, 10).await;
    for job in &page.items {
        assert_eq!(job.status, JobStatus::Running);
        assert_eq!(job.worker.as_deref(), Some("w-browse"));
        assert!(job.started_at.is_some());
        let lease = job.lease_deadline.unwrap() - Utc::now();
        assert!(lease > chrono::Duration::minutes(4) && lease <= chrono::Duration::minutes(5), "{lease}");
    }

    let (retrying, _) = lab.walk(JobState::Retrying, 3).await;
    let mut expected: Vec<String> = done.iter().map(|f| f.job.id.clone()).collect();
    expected.sort();
    assert_eq!(retrying, expected, "same next attempt: by id");
    let page = lab.page(JobState::Retrying, None, 10).await;
    for job in &page.items {
        assert_eq!(job.status, JobStatus::Retrying);
        assert_eq!(job.run_at.timestamp_millis(), retry_at.timestamp_millis());
        assert_eq!(job.last_error.as_deref(), Some("HTTP 503 from https://a.example/hook?[redacted]"));
        assert_eq!(job.lease_deadline, None);
    }
    let counts = lab.browser().counts(Kind::Webhook).await.unwrap();
    assert_eq!((counts.queued, counts.running, counts.retrying, counts.scheduled), (0, 5, 4, 0));
    lab.cleanup().await;
}

#[tokio::test]
async fn succeeded_and_cancelled_pages_run_newest_first_across_entries_of_many_ids() {
    let lab = Lab::new();
    let ids_all = lab.enqueue(11, None).await;
    let leased = lab.queue().fetch(Duration::from_mins(5), 8, 0).await.unwrap();
    let now = Utc::now();
    let done: Vec<Finished> = leased
        .iter()
        .map(|(job, _)| Finished {
            job: job.clone(),
            outcome: Outcome::Succeeded,
            error: None,
            provider_id: None,
            started_at: now,
            finished_at: now,
        })
        .collect();
    lab.queue().finish(&done, now, &Retention::default()).await.unwrap();
    let q = lab.keys.queue(Kind::Webhook);
    let succeeded = q.succeeded();
    // The finish above indexed its 8 ids in one entry; replaced here by the entries of three
    // calls, written as the finishing script writes them.
    let _: u64 = redis::cmd("DEL").arg(&succeeded).query_async(&mut lab.conn.clone()).await.unwrap();
    lab.index(&succeeded, &ids_all[0..3]).await;
    lab.index(&succeeded, &ids_all[3..4]).await;
    lab.index(&succeeded, &ids_all[4..8]).await;
    let newest_first: Vec<String> =
        [&ids_all[4..8], &ids_all[3..4], &ids_all[0..3]].into_iter().flatten().cloned().collect();
    for limit in [1, 2, 3, 5, 50] {
        let (walked, _) = lab.walk(JobState::Succeeded, limit).await;
        assert_eq!(walked, newest_first, "limit {limit}");
    }
    let page = lab.page(JobState::Succeeded, None, 3).await;
    assert!(page.items.iter().all(|j| j.status == JobStatus::Succeeded && j.finished_at.is_some()));
    // The entry the cursor points into is trimmed away (retention): the page goes on with older ones.
    let cursor = lab.page(JobState::Succeeded, None, 5).await.next_cursor.unwrap();
    let entry = cursor.split(':').next().unwrap().to_owned();
    let mut conn = lab.conn.clone();
    let _: u64 = redis::cmd("XDEL").arg(&succeeded).arg(&entry).query_async(&mut conn).await.unwrap();
    assert_eq!(ids(&lab.page(JobState::Succeeded, Some(&cursor), 5).await), ids_all[0..3]);

    for id in &ids_all[8..11] {
        lab.set_status(id, JobStatus::Cancelled).await;
    }
    lab.index(&q.cancelled(), &ids_all[8..10]).await;
    lab.index(&q.cancelled(), &ids_all[10..11]).await;
    let (walked, pages) = lab.walk(JobState::Cancelled, 2).await;
    assert_eq!(walked, vec![ids_all[10].clone(), ids_all[8].clone(), ids_all[9].clone()]);
    assert_eq!(pages, 2);
    assert!(lab.page(JobState::Cancelled, None, 5).await.items.iter().all(|j| j.status == JobStatus::Cancelled));
    lab.cleanup().await;
}

#[tokio::test]
async fn a_job_by_id_shows_its_attempts_and_never_a_secret() {
    let lab = Lab::new();
    let id = lab.enqueue(1, None).await.remove(0);
    let leased = lab.queue().fetch(Duration::from_mins(5), 1, 0).await.unwrap();
    let now = Utc::now();
    let failed = Finished {
        job: leased[0].0.clone(),
        outcome: Outcome::Retry { at: now },
        error: Some("HTTP 401 at https://a.example/hook?token=t0ps3cret".into()),
        provider_id: None,
        started_at: now,
        finished_at: now,
    };
    lab.queue().finish(&[failed], now, &Retention::default()).await.unwrap();
    let job = lab.browser().job(&id).await.unwrap().unwrap();
    assert_eq!(job.summary.status, JobStatus::Retrying);
    assert_eq!(job.history.len(), 1);
    assert_eq!(job.history[0].worker, "w-browse");
    let text = serde_json::to_string(&job).unwrap();
    assert!(!text.contains("t0ps3cret"), "{text}");
    assert!(job.payload.unwrap()["url"].as_str().unwrap().starts_with("https://a.example/hook"));
    assert!(lab.browser().job("no-such-job").await.unwrap().is_none());
    lab.cleanup().await;
}

/// Every command Redis runs meanwhile that names `needle`, as `MONITOR` prints it: a raw
/// connection read on a thread of its own until [`Monitor::stop`].
struct Monitor {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Monitor {
    fn start(needle: &str) -> Self {
        use std::io::{BufRead, Write};
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let address = url.trim_start_matches("redis://").split('/').next().unwrap().to_owned();
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.write_all(b"MONITOR\r\n").unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let mut ok = String::new();
        reader.read_line(&mut ok).unwrap();
        assert!(ok.starts_with("+OK"), "{ok}");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, stopping, needle) = (lines.clone(), stop.clone(), needle.to_owned());
        let thread = std::thread::spawn(move || {
            let mut line = String::new();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                match reader.read_line(&mut line) {
                    Ok(0) => return,
                    Ok(_) if line.ends_with('\n') => {
                        if line.contains(&needle) {
                            seen.lock().unwrap().push(std::mem::take(&mut line));
                        }
                        line.clear();
                    }
                    _ => {}
                }
            }
        });
        Self { lines, stop, thread }
    }

    fn stop(self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(200));
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap();
        self.lines.lock().unwrap().clone()
    }
}

/// A cursor is text any caller sends. One whose index lies past what a list can hold (beyond
/// an i64) once made the page `LRANGE -9223372036854775807 -1`: the whole ready list, however
/// long, in one reply. Every `LRANGE` a page sends spans at most about two pages.
#[tokio::test]
async fn a_queued_cursor_with_a_huge_index_reads_no_more_than_a_page() {
    let lab = Lab::new();
    let q = lab.keys.queue(Kind::Webhook);
    let all = lab.enqueue(30, None).await;
    let filler: Vec<String> = (0..2_000).map(|i| format!("filler-{i}")).collect();
    let _: u64 = redis::cmd("RPUSH").arg(q.ready()).arg(&filler).query_async(&mut lab.conn.clone()).await.unwrap();
    let monitor = Monitor::start(&q.ready());
    let limit = 5;
    for index in [u64::MAX, 9_223_372_036_854_775_900, 9_223_372_036_854_775_807, 4_294_967_296] {
        let page = lab.page(JobState::Queued, Some(&format!("{index}:{}", all[3])), limit).await;
        assert!(page.items.len() <= limit, "index {index}");
    }
    let lines = monitor.stop();
    let ranges: Vec<(i128, i128)> = lines
        .iter()
        .filter(|l| l.to_ascii_lowercase().contains("\"lrange\""))
        .map(|l| {
            let args: Vec<&str> = l.trim_end().rsplitn(3, ' ').collect();
            let arg = |s: &str| s.trim_matches('"').parse::<i128>().unwrap();
            (arg(args[1]), arg(args[0]))
        })
        .collect();
    assert!(!lines.is_empty(), "MONITOR saw the pages");
    for (start, stop) in ranges {
        assert!(stop - start < 2 * limit as i128 + 2, "LRANGE {start} {stop}: more than a page");
    }
    lab.cleanup().await;
}

/// Cancelled ids lie in the ready list until a worker pops them: the count on the tabs (and
/// the bulk-cancel button it shows) must not count them, as the overview does not.
#[tokio::test]
async fn the_queued_count_leaves_out_cancelled_ids_still_in_the_list() {
    let lab = Lab::new();
    let all = lab.enqueue(5, None).await;
    let retention = Kind::ALL.into_iter().map(|k| (k, Duration::from_hours(1))).collect();
    let control = jobs::control::Control::new(lab.conn.clone(), lab.keys.clone(), retention, Duration::from_secs(5));
    control.cancel_many(Kind::Webhook, &all[1..3], None).await.unwrap();
    let depths = jobs::dead::DeadLetters::new(lab.conn.clone(), lab.keys.clone()).depths(Kind::Webhook).await.unwrap();
    assert_eq!(depths.queued, 3);
    assert_eq!(lab.browser().counts(Kind::Webhook).await.unwrap().queued, 3, "as the overview counts");
    lab.cleanup().await;
}

/// The cost of a page at depth: fills one namespace of a Redis of its own (`BROWSE_BENCH_REDIS`,
/// default `redis://127.0.0.1:6395`: start one with `redis-server --port 6395 --save ''
/// --daemonize yes`) with `BROWSE_BENCH_JOBS` (default 1,000,000) queued and as many scheduled
/// jobs, records included, then times the first, middle and last pages of each (50 jobs):
/// server-side from `INFO commandstats` (µs of every command a page sends), end-to-end as the
/// wall time of `JobBrowser::list` here. Then the same at 10 jobs. Reported in docs/console.md.
#[tokio::test]
#[ignore = "a benchmark: needs a Redis of its own and about 1 GB of memory"]
async fn cost_of_a_page_at_depth() {
    let url = std::env::var("BROWSE_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6395".to_owned());
    let big: usize = std::env::var("BROWSE_BENCH_JOBS").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let conn = jobs::redis_conn::connect_url(&url, Duration::from_mins(2)).unwrap();
    for n in [big, 10] {
        let namespace = format!("bench{n}");
        let keys = Keys::new(&namespace);
        let ids = fill(&conn, &keys, n).await;
        let browser = JobBrowser::new(conn.clone(), keys.clone());
        let limit = 50;
        println!("\n{n} queued and {n} scheduled jobs, pages of {limit}");
        println!("{:<10} {:<7} {:>12} {:>12} {:>6}", "state", "page", "server µs", "e2e µs", "items");
        for (state, name) in [(JobState::Queued, "queued"), (JobState::Scheduled, "scheduled")] {
            for (label, at) in [("first", None), ("middle", Some(n / 2)), ("last", Some(n.saturating_sub(limit + 1)))] {
                let cursor = at.filter(|_| n > limit).map(|i| match state {
                    JobState::Queued => Cursor::List { index: i as u64, id: ids[i].clone() },
                    _ => Cursor::Sorted { score: score(i), id: ids[i].clone() },
                });
                if at.is_some() && cursor.is_none() {
                    continue;
                }
                let (server, e2e, items) = measure(&conn, &browser, state, cursor.as_ref(), limit).await;
                println!("{name:<10} {label:<7} {server:>12.1} {e2e:>12.1} {items:>6}");
            }
        }
        // A resume whose cursor job left: the queue popped a page's worth, the set lost its member.
        if n > limit {
            let mut c = conn.clone();
            let _: Vec<String> = redis::cmd("RPOP")
                .arg(keys.queue(Kind::Webhook).ready())
                .arg(limit * 2)
                .query_async(&mut c)
                .await
                .unwrap();
            let mid = n / 2;
            let _: u64 = redis::cmd("ZREM")
                .arg(keys.queue(Kind::Webhook).scheduled())
                .arg(&ids[mid])
                .query_async(&mut c)
                .await
                .unwrap();
            let moved = Cursor::List { index: mid as u64, id: ids[mid].clone() };
            let (server, e2e, items) = measure(&conn, &browser, JobState::Queued, Some(&moved), limit).await;
            println!(
                "{:<10} {:<7} {server:>12.1} {e2e:>12.1} {items:>6}   (cursor job moved {} towards the end, deeper than LPOS_SCAN: from the oldest)",
                "queued",
                "middle*",
                limit * 2
            );
            let near = Cursor::List { index: 5_000, id: ids[5_000].clone() };
            let (server, e2e, items) = measure(&conn, &browser, JobState::Queued, Some(&near), limit).await;
            println!(
                "{:<10} {:<7} {server:>12.1} {e2e:>12.1} {items:>6}   (cursor job at 5,000 moved {}: found by LPOS)",
                "queued",
                "5000*",
                limit * 2
            );
            let gone = Cursor::Sorted { score: score(mid), id: ids[mid].clone() };
            let (server, e2e, items) = measure(&conn, &browser, JobState::Scheduled, Some(&gone), limit).await;
            println!(
                "{:<10} {:<7} {server:>12.1} {e2e:>12.1} {items:>6}   (cursor job gone: by score)",
                "scheduled", "middle*"
            );
        }
        // BROWSE_BENCH_KEEP=1 keeps the big namespace, to time the console over HTTP afterwards.
        if n == big && std::env::var_os("BROWSE_BENCH_KEEP").is_some() {
            continue;
        }
        let mut c = conn.clone();
        let q = keys.queue(Kind::Webhook);
        for chunk in ids.chunks(10_000) {
            let jobs: Vec<String> = chunk.iter().map(|id| q.job(id)).collect();
            let _: u64 = redis::cmd("UNLINK").arg(jobs).query_async(&mut c).await.unwrap();
        }
        let _: u64 = redis::cmd("UNLINK").arg(q.ready()).arg(q.scheduled()).query_async(&mut c).await.unwrap();
    }
}

fn score(i: usize) -> f64 {
    // One due time per job, a millisecond apart, from 2030 on.
    1_893_456_000_000.0 + f64::from(u32::try_from(i).unwrap())
}

/// `n` webhook ids in the ready list (ids[0] the oldest) and the same ids in the scheduled set
/// (ids[i] at score(i)), each with a record.
async fn fill(conn: &Conn, keys: &Keys, n: usize) -> Vec<String> {
    let q = keys.queue(Kind::Webhook);
    let ids: Vec<String> = (0..n).map(|i| format!("{i:08x}-0000-7000-8000-{i:012x}")).collect();
    let record = |i: usize| JobRecord {
        status: JobStatus::Queued,
        attempts: 0,
        leases: 0,
        max_attempts: 10,
        producer: "shop".into(),
        created_at: 1_764_000_000_000,
        run_at: 1_764_000_000_000 + i64::try_from(i).unwrap(),
        payload: Some(r#"{"url":"https://a.example/hook","event":"order.created","data":{"order":12345}}"#.into()),
        idempotency_key: None,
        traceparent: None,
        started_at: None,
        worker: None,
        last_error: None,
        provider_message_id: None,
        finished_at: None,
        reason: None,
        dead_at: None,
        idem_fingerprint: None,
        idem_expires_at: None,
        notes: Vec::new(),
        priority: jobs::Priority::Normal,
        group: None,
        deferred_at: None,
        delivery: None,
        history: Vec::new(),
    };
    let mut c = conn.clone();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        pipe.cmd("LPUSH").arg(q.ready()).arg(chunk.iter().map(|&i| &ids[i]).collect::<Vec<_>>()).ignore();
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(q.scheduled());
        for &i in chunk {
            zadd.arg(score(i)).arg(&ids[i]);
        }
        pipe.add_command(zadd).ignore();
        let mut mset = redis::cmd("MSET");
        for &i in chunk {
            mset.arg(q.job(&ids[i])).arg(record(i).encode());
        }
        pipe.add_command(mset).ignore();
        let () = pipe.query_async(&mut c).await.unwrap();
    }
    ids
}

/// Pages timed per measure.
const RUNS: u32 = 20;

/// Mean µs per page over [`RUNS`] pages: on the server (every command's time in `INFO
/// commandstats`) and end to end; and the items of the page.
async fn measure(
    conn: &Conn,
    browser: &JobBrowser,
    state: JobState,
    cursor: Option<&Cursor>,
    limit: usize,
) -> (f64, f64, usize) {
    let mut c = conn.clone();
    let _ = browser.list(Kind::Webhook, state, cursor, limit).await.unwrap();
    let () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut c).await.unwrap();
    let started = std::time::Instant::now();
    let mut items = 0;
    for _ in 0..RUNS {
        items = browser.list(Kind::Webhook, state, cursor, limit).await.unwrap().items.len();
    }
    let e2e = started.elapsed().as_secs_f64() * 1e6 / f64::from(RUNS);
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut c).await.unwrap();
    let server: f64 = info
        .lines()
        // A script's and a transaction's time is counted again by the commands they run.
        .filter(|l| l.starts_with("cmdstat_"))
        .filter(|l| {
            !["config", "info", "exec", "evalsha", "eval"].iter().any(|c| l.starts_with(&format!("cmdstat_{c}:")))
        })
        .filter_map(|l| l.split("usec=").nth(1)?.split(',').next()?.parse::<f64>().ok())
        .sum();
    (server / f64::from(RUNS), e2e, items)
}
