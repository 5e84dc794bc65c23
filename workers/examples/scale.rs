//! Processing throughput on a 3-master Redis Cluster against one Redis node, in the same run
//! (run by `bench/cluster.sh`; never part of the tests).
//!
//! Starts its own `redis-server`s: one plain node and a 3-master cluster, on free ports. Each
//! round, on each topology in turn, it enqueues N webhooks and N emails (two queues, which the
//! cluster keeps on two different masters: `{webhook}` is slot 12785, `{email}` slot 10780)
//! through the producer's enqueue path, starts the release `worker` binary on both kinds and
//! times the drain. Webhooks go to an in-process receiver that answers 200 at once; emails go to
//! the `log` provider, whose lines the log filter drops. Medians of the rounds, and the ratio.

#![expect(clippy::cast_precision_loss, reason = "rates for a report")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use chrono::Utc;
use jobs::dead::DeadLetters;
use jobs::redis_conn::{Topology, connect};
use jobs::{Keys, Kind, NewJob, Store};

const KINDS: [Kind; 2] = [Kind::Webhook, Kind::Email];

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `redis-server`s of the benchmark's own, killed on drop.
struct Servers {
    children: Vec<Child>,
    dirs: Vec<PathBuf>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn redis_server(servers: &mut Servers, port: u16, cluster: bool) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("jobplane-scale-{port}"));
    std::fs::create_dir_all(&dir)?;
    let mut command = Command::new("redis-server");
    command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
    if cluster {
        command.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]);
    }
    servers.children.push(command.current_dir(&dir).stdout(Stdio::null()).spawn()?);
    servers.dirs.push(dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "redis-server on {port} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("redis-cli").arg("-p").arg(port.to_string()).args(args).output()?;
    anyhow::ensure!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One plain node and a formed 3-master cluster.
fn start() -> anyhow::Result<(Servers, Topology, Topology, Vec<u16>)> {
    let mut servers = Servers { children: Vec::new(), dirs: Vec::new() };
    let single = free_port()?;
    redis_server(&mut servers, single, false)?;
    let ports = [free_port()?, free_port()?, free_port()?];
    for port in ports {
        redis_server(&mut servers, port, true)?;
    }
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args: Vec<&str> = vec!["--cluster", "create"];
    args.extend(nodes.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    cli(ports[0], &args)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ports.iter().all(|p| cli(*p, &["cluster", "info"]).is_ok_and(|i| i.contains("cluster_state:ok"))) {
        anyhow::ensure!(Instant::now() < deadline, "the cluster did not reach cluster_state:ok");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut all = vec![single];
    all.extend(ports);
    Ok((
        servers,
        Topology::Single { url: format!("redis://127.0.0.1:{single}") },
        Topology::Cluster { urls: ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect() },
        all,
    ))
}

fn topology_env(topology: &Topology) -> (&'static str, String) {
    match topology {
        Topology::Single { url } => ("REDIS_URL", url.clone()),
        Topology::Cluster { urls } => ("REDIS_CLUSTER_URLS", urls.join(",")),
        Topology::Sentinel { .. } => unreachable!("not benchmarked"),
    }
}

/// Fills both queues with `n` jobs each, drains them with one worker; jobs per second.
async fn round(topology: &Topology, n: usize, hook: &str, worker_bin: &str) -> anyhow::Result<f64> {
    let namespace = format!("scale-{}", uuid::Uuid::now_v7().simple());
    let keys = Keys::new(&namespace);
    let conn = connect(topology, Duration::from_secs(30))?;
    let store = Store::new(conn.clone(), keys.clone(), Duration::from_hours(1), Duration::from_secs(30));
    let payloads = [
        serde_json::json!({"url": hook, "event": "bench.ping", "data": {"n": 1}}).to_string(),
        serde_json::json!({"to": ["bench@example.com"], "subject": "bench", "text": "bench"}).to_string(),
    ];
    for (kind, payload) in KINDS.into_iter().zip(&payloads) {
        let mut written = 0;
        while written < n {
            let now = Utc::now();
            let jobs: Vec<NewJob> = (0..1000.min(n - written))
                .map(|_| NewJob {
                    id: uuid::Uuid::now_v7(),
                    kind,
                    payload: payload.clone(),
                    created_at: now,
                    run_at: None,
                    max_attempts: 10,
                    producer: "bench".into(),
                    idempotency: None,
                    traceparent: None,
                    priority: jobs::Priority::Normal,
                    group: None,
                })
                .collect();
            written += store.enqueue(&jobs).await?.len();
        }
    }
    let letters = DeadLetters::new(conn, keys);
    let (name, value) = topology_env(topology);
    let started = Instant::now();
    let mut worker = Command::new(worker_bin)
        .env(name, value)
        .env("REDIS_NAMESPACE", &namespace)
        .env("WORKER_KINDS", "webhook,email")
        .env("WORKER_METRICS_ADDR", "0")
        .env("WORKER_CONCURRENCY_WEBHOOK", "200")
        // One receiver: the per-destination limit at the concurrency, available but unused.
        .env("WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION", "200")
        .env("WORKER_CONCURRENCY_EMAIL", "200")
        .env("WORKER_BATCH", "100")
        .env("JOB_RETENTION_SECONDS", "60")
        .env("EMAIL_PROVIDER", "log")
        .env("WEBHOOK_SIGNING_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .env("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    loop {
        let mut left = 0;
        for kind in KINDS {
            let d = letters.depths(kind).await?;
            anyhow::ensure!(d.dead == 0, "{kind:?}: {} jobs died", d.dead);
            left += d.queued + d.scheduled + d.running;
        }
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = worker.kill();
    let _ = worker.wait();
    Ok((2 * n) as f64 / secs)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).filter_map(|a| a.parse::<usize>().ok());
    let n = args.next().unwrap_or(50_000);
    let rounds = args.next().unwrap_or(3);
    let worker_bin = std::env::var("WORKER_BIN").unwrap_or_else(|_| "target/release/worker".into());

    let app = Router::new().route("/hook", post(|| async { "" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (_servers, single, cluster, ports) = start()?;
    println!("{n} webhooks + {n} emails a round, one worker (concurrency 200 per kind, batch 100), {rounds} rounds");
    let (mut on_single, mut on_cluster) = (Vec::new(), Vec::new());
    for r in 1..=rounds {
        for (name, topology, figures) in
            [("single node", &single, &mut on_single), ("3-master cluster", &cluster, &mut on_cluster)]
        {
            let rate = round(topology, n, &hook, &worker_bin).await?;
            println!("round {r}: {name:<16} {rate:>8.0} jobs/s");
            figures.push(rate);
            for port in &ports {
                cli(*port, &["flushall"])?;
            }
        }
    }
    let range = |v: &[f64]| {
        let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        format!("{lo:.0}–{hi:.0}")
    };
    let (s, c) = (median(&mut on_single), median(&mut on_cluster));
    println!("single node:      median {s:>8.0} jobs/s ({})", range(&on_single));
    println!("3-master cluster: median {c:>8.0} jobs/s ({})", range(&on_cluster));
    println!("cluster / single: {:.2}x", c / s);
    Ok(())
}
