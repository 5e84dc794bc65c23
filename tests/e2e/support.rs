//! Test fixtures: the producer API in-process on port 0 under its own Redis namespace, a
//! `redis-server` of a test's own, a PostgreSQL database of a test's own, and the built binaries.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobs::record::JobRecord;
use jobs::settings::Env;
use producer_api::{AppState, Config};
use serde_json::Value;

pub const SHOP_KEY: &str = "shop-secret-0123456789";
pub const BILLING_KEY: &str = "billing-secret-0123456789";
/// Used by the metrics test alone, so its counts are exact even when tests share a process.
pub const METRICS_KEY: &str = "metrics-secret-0123456789";

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A namespace no other test uses, so tests can share one Redis and run in parallel.
pub fn namespace() -> String {
    format!("t{}", uuid::Uuid::now_v7().simple())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The producer API, served from this process.
pub struct TestApp {
    pub addr: SocketAddr,
    pub namespace: String,
    pub redis_url: String,
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_on(&redis_url()).await
    }

    pub async fn spawn_on(redis_url: &str) -> Self {
        Self::spawn_with(redis_url, &[]).await
    }

    /// With more settings (`DATABASE_URL` for `GET /v1/audit-logs`, `SMS_TEMPLATE_*`, `OTP_RATE_*`, ...).
    pub async fn spawn_with(redis_url: &str, extra: &[(&str, &str)]) -> Self {
        let namespace = namespace();
        let keys = format!("shop:{SHOP_KEY},billing:{BILLING_KEY},metrics:{METRICS_KEY}");
        let mut pairs =
            vec![("PRODUCER_API_KEYS", keys.as_str()), ("REDIS_URL", redis_url), ("REDIS_NAMESPACE", &namespace)];
        pairs.extend_from_slice(extra);
        let env = Env::from_pairs(&pairs);
        let config = Config::from_env(&env).unwrap();
        let state = AppState::new(&config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, producer_api::router(state)).await.unwrap();
        });
        Self { addr, namespace, redis_url: redis_url.to_owned(), http: reqwest::Client::new(), server }
    }

    /// A new connection each time, so a test that restarts Redis still reads it afterwards.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.namespace)
    }

    pub async fn post_job(&self, body: &Value, idempotency_key: Option<&str>) -> reqwest::Response {
        let mut request = self.http.post(self.url("/v1/jobs")).bearer_auth(SHOP_KEY).json(body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.unwrap()
    }

    pub async fn get_job(&self, id: &str, secret: &str) -> reqwest::Response {
        self.http.get(self.url(&format!("/v1/jobs/{id}"))).bearer_auth(secret).send().await.unwrap()
    }

    pub async fn ready(&self, kind: &str) -> Vec<String> {
        redis::cmd("LRANGE")
            .arg(self.key(&format!("{{{kind}}}:ready")))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.redis().await)
            .await
            .unwrap()
    }

    pub async fn scheduled(&self, kind: &str) -> Vec<(String, i64)> {
        redis::cmd("ZRANGE")
            .arg(self.key(&format!("{{{kind}}}:scheduled")))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.redis().await)
            .await
            .unwrap()
    }

    /// The job's record as a map of field names to text (`status`, `attempts`, `reason`,
    /// `payload`, ...: see [`record_fields`]); empty when there is no record.
    pub async fn job_fields(&self, kind: &str, id: &str) -> std::collections::HashMap<String, String> {
        self.record(kind, id).await.as_ref().map(record_fields).unwrap_or_default()
    }

    /// The job's record, decoded.
    pub async fn record(&self, kind: &str, id: &str) -> Option<JobRecord> {
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.key(&format!("{{{kind}}}:job:{id}")))
            .query_async(&mut self.redis().await)
            .await
            .unwrap();
        raw.map(|raw| JobRecord::decode(&raw).unwrap())
    }

    /// Rewrites the job's record with `change` applied (a test staging a state).
    pub async fn change_record(&self, kind: &str, id: &str, change: impl FnOnce(&mut JobRecord)) {
        let mut record = self.record(kind, id).await.expect("no record to change");
        change(&mut record);
        let () = redis::cmd("SET")
            .arg(self.key(&format!("{{{kind}}}:job:{id}")))
            .arg(record.encode())
            .query_async(&mut self.redis().await)
            .await
            .unwrap();
    }

    /// Every key of this test's namespace.
    pub fn keys(&self) -> Vec<String> {
        keys_of(&self.redis_url, &self.namespace)
    }
}

fn keys_of(redis_url: &str, namespace: &str) -> Vec<String> {
    let Ok(mut conn) =
        redis::Client::open(redis_url).and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
    else {
        return Vec::new();
    };
    let Ok(iter) = redis::Commands::scan_match::<_, String>(&mut conn, format!("{namespace}:*")) else {
        return Vec::new();
    };
    iter.filter_map(Result::ok).collect()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
        let keys = keys_of(&self.redis_url, &self.namespace);
        if let Ok(mut conn) = redis::Client::open(self.redis_url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
        {
            for chunk in keys.chunks(500) {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
            }
        }
    }
}

/// A `redis-server` of the test's own, on its own port and folder, killed on drop.
pub struct OwnRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("jobplane-redis-{port}-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self { port, dir, child: None };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its process id, for a test that signals it from another program.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Starts (again) on the same port, with AOF so a restart keeps what was written.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url()).unwrap();
        while Instant::now() < deadline {
            if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200))
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {} did not answer within 10 s", self.port);
    }

    /// SIGSTOP / SIGCONT: a Redis that accepts connections but never answers.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server part of `DATABASE_URL` (default the local server), for databases of tests' own.
fn server_url() -> String {
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    match url.rfind('/') {
        Some(i) if url[..i].contains("://") && i > url.find("://").unwrap() + 2 => url[..i].to_owned(),
        _ => url,
    }
}

/// A PostgreSQL database of the test's own; dropped with `drop()`.
pub struct OwnDatabase {
    pub name: String,
    pub url: String,
}

impl OwnDatabase {
    pub async fn create() -> Self {
        let name = format!("jobplane_test_{}", uuid::Uuid::now_v7().simple());
        let admin = format!("{}/postgres", server_url());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        Self { url: format!("{}/{name}", server_url()), name }
    }

    pub async fn drop(self) {
        let admin = format!("{}/postgres", server_url());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut conn).await.unwrap();
    }
}

/// A PostgreSQL server of the test's own (initdb in a temporary folder, its own port), for
/// tests that stop and start it; stopped and removed on drop.
pub struct OwnPostgres {
    pub port: u16,
    dir: PathBuf,
    bindir: PathBuf,
}

impl OwnPostgres {
    pub fn start() -> Self {
        let bindir = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries under /usr/lib/postgresql (scripts/test installs them)")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists())
            .max_by_key(|bin| bin.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()))
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("jobplane-pg-{port}-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let pg = Self { port, dir, bindir };
        if Self::as_root() {
            // initdb refuses to run as root: the cluster belongs to the postgres user.
            assert!(Command::new("chown").arg("postgres").arg(&pg.dir).status().unwrap().success());
        }
        let data = pg.dir.join("data");
        let status = pg
            .as_owner("initdb")
            .arg("-D")
            .arg(&data)
            .args(["--username=postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");
        pg.start_again();
        pg
    }

    fn as_root() -> bool {
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0
    }

    fn as_owner(&self, program: &str) -> Command {
        let program = self.bindir.join(program);
        let mut command = if Self::as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.current_dir("/");
        command
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let status = self
            .as_owner("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-o", &options, "-w", "-t", "30", "start"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl start failed; see {}", self.dir.join("log").display());
    }

    /// A fast shutdown: open connections are cut, new ones refused, as in a real outage.
    pub fn stop(&self) {
        let _ = self
            .as_owner("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A binary of the workspace, as `cargo nextest run --workspace` (or `cargo build`) built it.
/// Starts binary `name` with only `env` (plus `base`) and asserts it stops at once with exit
/// status 2 and one line on stderr that starts with `expected`; answers that line.
pub fn stops_at_start(name: &str, base: &[(&str, &str)], env: &[(&str, &str)], expected: &str) -> String {
    let output = std::process::Command::new(binary(name))
        .env_clear()
        .envs(base.iter().copied())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{name} {env:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(expected), "{stderr}");
    stderr
}

pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built; run `cargo build --bins` first", path.display());
    path
}

/// Polls `url` until it answers 200, for at most 15 s.
pub async fn wait_until_ok(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not answer 200 within 15 s");
}

/// A started binary (environment cleared, output discarded), killed on drop; `terminate` stops it with SIGTERM.
pub struct Running(Child);

impl Running {
    pub fn start(name: &str, env: &[(&str, &str)]) -> Self {
        let child = Command::new(binary(name))
            .env_clear()
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self(child)
    }

    /// SIGTERM, then the exit code within 10 s.
    pub fn terminate(mut self) -> Option<i32> {
        Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The signing secret every test worker uses (24 random-looking bytes, base64).
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A `worker` process of the test's own, killed on drop.
pub struct WorkerProcess {
    pub child: Child,
    pub metrics_addr: String,
    /// Where its stdout and stderr go, when captured.
    log: Option<PathBuf>,
}

impl WorkerProcess {
    /// Starts `worker` on `redis_url` and `namespace` with test-friendly settings, overridden by `extra`.
    pub fn start(redis_url: &str, namespace: &str, extra: &[(&str, &str)]) -> Self {
        Self::spawn(redis_url, namespace, extra, None, None)
    }

    /// Like [`WorkerProcess::start`], inside the network namespace `netns` (`ip netns exec`),
    /// as on another host; its stdout and stderr captured.
    pub fn start_in_netns(netns: &str, redis_url: &str, namespace: &str, extra: &[(&str, &str)]) -> Self {
        let path = std::env::temp_dir().join(format!("jobplane-worker-{}.log", uuid::Uuid::now_v7().simple()));
        Self::spawn(redis_url, namespace, extra, Some(path), Some(netns))
    }

    /// Like [`WorkerProcess::start`], its stdout and stderr captured for [`WorkerProcess::output`].
    pub fn start_captured(redis_url: &str, namespace: &str, extra: &[(&str, &str)]) -> Self {
        let path = std::env::temp_dir().join(format!("jobplane-worker-{}.log", uuid::Uuid::now_v7().simple()));
        Self::spawn(redis_url, namespace, extra, Some(path), None)
    }

    /// Everything the process wrote so far (captured workers only).
    pub fn output(&self) -> String {
        self.log.as_ref().map(|path| std::fs::read_to_string(path).unwrap()).unwrap_or_default()
    }

    fn spawn(
        redis_url: &str,
        namespace: &str,
        extra: &[(&str, &str)],
        log: Option<PathBuf>,
        netns: Option<&str>,
    ) -> Self {
        let (stdout, stderr) = match &log {
            Some(path) => {
                let file = std::fs::File::create(path).unwrap();
                (Stdio::from(file.try_clone().unwrap()), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::inherit()),
        };
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let unreachable_db = format!("postgres://postgres@127.0.0.1:{}/jobs", free_port());
        // `ip netns exec` execs the worker in place: the child's id is the worker's.
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new(crate::topology::ip_command());
                c.args(["netns", "exec", ns]).arg(binary("worker"));
                c
            }
            None => Command::new(binary("worker")),
        };
        let child = command
            .env_clear()
            .env("RUST_LOG", std::env::var("TEST_WORKER_LOG").unwrap_or_else(|_| "warn".into()))
            .env("REDIS_URL", redis_url)
            .env("REDIS_NAMESPACE", namespace)
            .env("DATABASE_URL", unreachable_db)
            .env("WORKER_METRICS_ADDR", &metrics_addr)
            .env("WORKER_KINDS", "webhook")
            .env("WEBHOOK_SIGNING_SECRET", WEBHOOK_SECRET)
            .env("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
            .envs(extra.iter().copied())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        Self { child, metrics_addr, log }
    }

    pub fn signal(&self, signal: &str) {
        assert!(Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap().success());
    }

    /// The exit code, waiting at most `limit`; `None` if still running.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(path) = &self.log {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl TestApp {
    /// Enqueues `n` webhooks to `url` through the API; returns their ids in order.
    pub async fn enqueue_webhooks(&self, url: &str, n: usize, max_attempts: u32) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        let job = serde_json::json!({"kind": "webhook", "max_attempts": max_attempts, "payload": {"url": url, "event": "test.ping", "data": {"n": 1}}});
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let jobs = vec![job.clone(); chunk.len()];
            let response = self
                .http
                .post(self.url("/v1/jobs/batch"))
                .bearer_auth(SHOP_KEY)
                .json(&serde_json::json!({ "jobs": jobs }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            let body: Value = response.json().await.unwrap();
            ids.extend(body["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()));
        }
        ids
    }

    /// Polls the job's status until it is one of `statuses`, for at most `limit`.
    pub async fn wait_status(&self, id: &str, statuses: &[&str], limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let job: Value = self.get_job(id, SHOP_KEY).await.json().await.unwrap();
            if statuses.contains(&job["status"].as_str().unwrap_or_default()) || Instant::now() > deadline {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The attempt records of a job, oldest first, as JSON (`attempt`, `started_at`,
    /// `finished_at`, `error`, `worker`). A job that succeeded at its first attempt keeps none.
    pub async fn attempts(&self, kind: &str, id: &str) -> Vec<Value> {
        self.record(kind, id).await.map(|r| record_attempts(&r)).unwrap_or_default()
    }

    /// Counts of the queue's keys: ready, scheduled, active, dead.
    /// Counts of the queue's keys: ready, waiting (scheduled and retrying), active, dead.
    pub async fn depths(&self, kind: &str) -> (usize, usize, usize, usize) {
        let mut conn = self.redis().await;
        let mut pipe = redis::pipe();
        pipe.cmd("LLEN").arg(self.key(&format!("{{{kind}}}:ready")));
        for set in ["scheduled", "retry", "active", "dead"] {
            pipe.cmd("ZCARD").arg(self.key(&format!("{{{kind}}}:{set}")));
        }
        let (ready, scheduled, retry, active, dead): (usize, usize, usize, usize, usize) =
            pipe.query_async(&mut conn).await.unwrap();
        (ready, scheduled + retry, active, dead)
    }
}

/// A job record as field names and text, the names its JSON answers use: `status`,
/// `attempts`, `max_attempts`, `producer`, `created_at`, `run_at` (ms), `payload`,
/// `idempotency_key`, `traceparent`, `started_at`, `worker`, `last_error`,
/// `provider_message_id`, `finished_at`, `reason`, `dead_at`, `notes` (one per line); a field
/// the record does not hold is absent.
pub fn record_fields(record: &JobRecord) -> std::collections::HashMap<String, String> {
    let mut fields = std::collections::HashMap::new();
    let mut put = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            fields.insert(name.to_owned(), value);
        }
    };
    put("status", Some(record.status.as_str().to_owned()));
    put("attempts", Some(record.attempts.to_string()));
    put("max_attempts", Some(record.max_attempts.to_string()));
    put("producer", Some(record.producer.clone()));
    put("created_at", Some(record.created_at.to_string()));
    put("run_at", Some(record.run_at.to_string()));
    put("payload", record.payload.clone());
    put("idempotency_key", record.idempotency_key.clone());
    put("traceparent", record.traceparent.clone());
    put("started_at", record.started_at.map(|t| t.to_string()));
    put("worker", record.worker.clone());
    put("last_error", record.last_error.clone());
    put("provider_message_id", record.provider_message_id.clone());
    put("finished_at", record.finished_at.map(|t| t.to_string()));
    put("reason", record.reason.map(|r| r.as_str().to_owned()));
    put("dead_at", record.dead_at.map(|t| t.to_string()));
    put("notes", (!record.notes.is_empty()).then(|| record.notes.join("\n")));
    fields
}

/// A record's attempt history as JSON, oldest first.
pub fn record_attempts(record: &JobRecord) -> Vec<Value> {
    record
        .history
        .iter()
        .map(|a| {
            serde_json::json!({
                "attempt": a.attempt,
                "started_at": a.started_at,
                "finished_at": a.finished_at,
                "error": a.error,
                "worker": a.worker,
            })
        })
        .collect()
}

/// The `field` of each entry of a problem document's `errors` (none when it has no `errors`).
pub fn problem_fields(problem: &serde_json::Value) -> Vec<String> {
    problem["errors"].as_array().map_or_else(Vec::new, |errors| {
        errors.iter().map(|e| e["field"].as_str().unwrap_or_default().to_owned()).collect()
    })
}
