//! `REDIS_WAIT_REPLICAS`: a `202` only once a replica holds the job, so a failover to that
//! replica cannot lose it; a replica that does not confirm in time makes the enqueue a `503`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{OwnRedis, TestApp, free_port};
use crate::topology;

/// A `redis-server` replicating `master`, in a folder of its own (a replica stores the RDB it
/// syncs from), killed on drop.
struct Replica {
    port: u16,
    dir: std::path::PathBuf,
    child: Child,
}

impl Replica {
    fn of(master: &OwnRedis) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("jobplane-replica-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--replicaof", "127.0.0.1", &master.port.to_string()])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let replica = Self { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !replica.info().contains("master_link_status:up") {
            assert!(Instant::now() < deadline, "the replica did not sync within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        replica
    }

    fn info(&self) -> String {
        topology::info(self.port, "replication")
    }

    fn exists(&self, key: &str) -> bool {
        let mut conn = topology::node(self.port).unwrap();
        redis::cmd("EXISTS").arg(key).query::<bool>(&mut conn).unwrap()
    }

    fn signal(&self, signal: &str) {
        assert!(Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap().success());
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn email(n: u32) -> Value {
    json!({"kind": "email", "payload": {"to": "ada@example.org", "subject": format!("n{n}"), "text": "hi"}})
}

#[tokio::test]
async fn an_enqueue_is_accepted_only_once_a_replica_holds_it() {
    let master = OwnRedis::start();
    let replica = Replica::of(&master);
    let app =
        TestApp::spawn_with(&master.url(), &[("REDIS_WAIT_REPLICAS", "1"), ("REDIS_WAIT_TIMEOUT_MS", "300")]).await;

    let response = app.post_job(&email(1), Some("wait-1")).await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    assert!(replica.exists(&app.key(&format!("{{email}}:job:{id}"))), "202 before the replica held the job");

    // A replica that stops answering cannot confirm: the API says it does not know.
    replica.signal("-STOP");
    let started = Instant::now();
    let response = app.post_job(&email(2), Some("wait-2")).await;
    assert_eq!(response.status(), 503, "{}", response.text().await.unwrap());
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());

    // Once it is back, the client's retry with the same key finds the job the master kept.
    replica.signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    let retried = loop {
        let response = app.post_job(&email(2), Some("wait-2")).await;
        if response.status() != 503 || Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(retried.status(), 200, "a replay of the job the master kept");
    let id = retried.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    assert!(replica.exists(&app.key(&format!("{{email}}:job:{id}"))));
}

#[tokio::test]
async fn without_any_replica_every_enqueue_is_unavailable() {
    let app = TestApp::spawn_with(
        &crate::support::redis_url(),
        &[("REDIS_WAIT_REPLICAS", "1"), ("REDIS_WAIT_TIMEOUT_MS", "100")],
    )
    .await;
    assert_eq!(app.post_job(&email(3), None).await.status(), 503);
}
