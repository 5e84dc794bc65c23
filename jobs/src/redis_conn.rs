//! Connections to Redis — one node, a Redis Cluster, or a Sentinel-managed master — that
//! reconnect on their own and never make a caller wait long.
//!
//! Every caller holds a [`Conn`] and does not know which topology is behind it. What makes
//! that possible is the key layout ([`crate::keys`]): every key one script or pipeline touches
//! shares one `{...}` hash tag, so each call lands on exactly one cluster slot; calls that read
//! several queues send one request per queue, concurrently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
};

use crate::settings::{Env, SettingError};
use crate::{Keys, Kind};

/// Where Redis is. Read from `REDIS_CLUSTER_URLS`, else `REDIS_SENTINEL_URLS` (with
/// `REDIS_SENTINEL_MASTER`), else `REDIS_URL`.
#[derive(Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server: `redis://`, or `rediss://` for TLS.
    Single { url: String },
    /// A Redis Cluster, found through any of these seed nodes.
    Cluster { urls: Vec<String> },
    /// The master that these sentinels name `master`, followed through failovers.
    Sentinel { urls: Vec<String>, master: String, master_password: Option<String> },
}

impl Topology {
    /// What the startup log says: the topology and its addresses, without credentials.
    pub fn describe(&self) -> String {
        let list = |urls: &[String]| urls.iter().map(|u| redacted(u)).collect::<Vec<_>>().join(",");
        match self {
            Self::Single { url } => format!("single node {}", redacted(url)),
            Self::Cluster { urls } => format!("cluster seeds {}", list(urls)),
            Self::Sentinel { urls, master, .. } => format!("sentinel master `{master}` via {}", list(urls)),
        }
    }
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A URL with any password replaced, for logs.
fn redacted(url: &str) -> String {
    if url::Url::parse(url).is_err() {
        return "<not a URL>".to_owned();
    }
    crate::settings::redacted_url(url)
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub topology: Topology,
    /// Prefix of every key, so several deployments (or tests) can share one Redis.
    pub namespace: String,
}

impl RedisSettings {
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let cluster = url_list(env, "REDIS_CLUSTER_URLS")?;
        let sentinels = url_list(env, "REDIS_SENTINEL_URLS")?;
        let topology = match (cluster, sentinels) {
            (Some(_), Some(_)) => {
                return Err(SettingError::new("REDIS_CLUSTER_URLS", "cannot be set together with REDIS_SENTINEL_URLS"));
            }
            (Some(urls), None) => Topology::Cluster { urls },
            (None, Some(urls)) => {
                let master =
                    env.require("REDIS_SENTINEL_MASTER", "the master's name, required with REDIS_SENTINEL_URLS")?;
                Topology::Sentinel {
                    urls,
                    master: master.to_owned(),
                    master_password: env.get("REDIS_SENTINEL_MASTER_PASSWORD").map(str::to_owned),
                }
            }
            (None, None) => {
                let url = env.or("REDIS_URL", "redis://127.0.0.1:6379");
                redis::Client::open(url.as_str())
                    .map_err(|e| SettingError::new("REDIS_URL", format!("not a Redis URL ({e})")))?;
                Topology::Single { url }
            }
        };
        let namespace = env.or("REDIS_NAMESPACE", "jobplane");
        if namespace.is_empty() || !namespace.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
            return Err(SettingError::new("REDIS_NAMESPACE", "must be letters, digits, _ . or -"));
        }
        Ok(Self { topology, namespace })
    }
}

/// A comma-separated list of `redis://host:port` (or `rediss://`) addresses, or `None` when unset.
fn url_list(env: &Env, name: &'static str) -> Result<Option<Vec<String>>, SettingError> {
    let Some(raw) = env.get(name).filter(|v| !v.trim().is_empty()) else { return Ok(None) };
    let urls: Vec<String> = raw.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
    for url in &urls {
        let ok = url::Url::parse(url)
            .is_ok_and(|u| matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some_and(|h| !h.is_empty()));
        if !ok {
            return Err(SettingError::new(
                name,
                format!("`{}` is not a redis:// or rediss:// host address", redacted(url)),
            ));
        }
    }
    Ok(Some(urls))
}

/// A connection to whichever topology the settings name. Cheap to clone: clones share the
/// underlying connections. Every request is bounded by the timeout it was made with.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConnection),
}

/// A connection that is made on first use and remade after any failure, with each connect
/// attempt and each answer bounded by `timeout`: when Redis is down a call fails fast, and
/// when Redis returns the next call succeeds, with no restart of the process.
///
/// On one node and behind Sentinel a request is never sent twice: a failed call fails, and the
/// caller decides whether to retry. On a cluster redis-rs follows redirections (`MOVED`,
/// `ASK`, `TRYAGAIN`: the request did not run) and also resends a request whose connection
/// dropped, which may have run. Every script is safe to run twice: `enqueue.lua` answers a
/// resend of a job id it already wrote as a replay, `finish.lua` ignores an outcome whose
/// attempt is over, and a resent `fetch.lua` only leases jobs that come back when the lease
/// runs out.
pub fn connect(topology: &Topology, timeout: Duration) -> RedisResult<Conn> {
    match topology {
        Topology::Single { url } => {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_millis(500));
            Ok(Conn::Single(ConnectionManager::new_lazy_with_config(redis::Client::open(url.as_str())?, config)?))
        }
        Topology::Cluster { urls } => {
            let client = ClusterClientBuilder::new(urls.iter().map(String::as_str))
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(CLUSTER_REDIRECTIONS)
                .min_retry_wait(10)
                .max_retry_wait(200)
                .build()?;
            let config = ClusterConfig::new().set_connection_timeout(timeout).set_response_timeout(timeout);
            Ok(Conn::Cluster(client.get_pending_async_connection_with_config(config)))
        }
        Topology::Sentinel { urls, master, master_password } => {
            Ok(Conn::Sentinel(SentinelConnection::new(urls, master, master_password.as_deref(), timeout)?))
        }
    }
}

/// [`connect`] to one node.
pub fn connect_url(url: &str, timeout: Duration) -> RedisResult<Conn> {
    connect(&Topology::Single { url: url.to_owned() }, timeout)
}

/// Sends `command(<job key of id in that queue>)` to every queue at once and returns the
/// answers in the order of [`Kind::ALL`]: one request per queue, because each queue is its own
/// cluster slot and a cluster refuses a pipeline that spans slots. On one node the requests
/// still share one round trip (the connection pipelines them).
pub async fn for_job_in_every_queue<T: redis::FromRedisValue>(
    conn: &Conn,
    keys: &Keys,
    id: &str,
    command: impl Fn(String) -> Cmd,
) -> RedisResult<Vec<T>> {
    let reads = Kind::ALL.map(|kind| {
        let mut conn = conn.clone();
        let cmd = command(keys.queue(kind).job(id));
        async move { cmd.query_async::<T>(&mut conn).await }
    });
    futures::future::try_join_all(reads).await
}

/// How many times one cluster request may be redirected or retried while slots move.
const CLUSTER_REDIRECTIONS: u32 = 3;

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Conn::Single",
            Self::Cluster(_) => "Conn::Cluster",
            Self::Sentinel(_) => "Conn::Sentinel",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Sentinel(c) => c.get_db(),
        }
    }
}

/// The current master of a Sentinel-managed group. The master's address is asked of the
/// sentinels on first use and again after any error that says the connection is gone or the
/// node is no longer master (`READONLY` from a demoted master), so a failover is followed
/// within one failed call per caller.
#[derive(Clone)]
pub struct SentinelConnection {
    inner: Arc<SentinelInner>,
}

struct SentinelInner {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    /// The connection in use and its generation, so a late failure of an old connection does
    /// not throw away a newer one.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generations: AtomicU64,
    config: AsyncConnectionConfig,
    timeout: Duration,
}

impl std::fmt::Debug for SentinelConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelConnection")
            .field("generation", &self.inner.generations.load(Ordering::Relaxed))
            .finish()
    }
}

impl SentinelConnection {
    fn new(urls: &[String], master: &str, password: Option<&str>, timeout: Duration) -> RedisResult<Self> {
        let mut node = SentinelNodeConnectionInfo::default();
        if urls.iter().any(|u| u.starts_with("rediss://")) {
            node = node.set_tls_mode(redis::TlsMode::Secure);
        }
        if let Some(password) = password {
            node = node.set_redis_connection_info(redis::RedisConnectionInfo::default().set_password(password));
        }
        let client = SentinelClient::build(
            urls.iter().map(String::as_str).collect(),
            master,
            Some(node),
            SentinelServerType::Master,
        )?;
        Ok(Self {
            inner: Arc::new(SentinelInner {
                sentinels: tokio::sync::Mutex::new(client),
                current: Mutex::new(None),
                generations: AtomicU64::new(0),
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout)),
                timeout,
            }),
        })
    }

    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        self.inner.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The current master's connection, asking the sentinels when there is none. One caller
    /// asks at a time; the others wait for its answer.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.cached() {
            return Ok(current);
        }
        let mut sentinels = self.inner.sentinels.lock().await;
        if let Some(current) = self.cached() {
            return Ok(current);
        }
        let connect = async {
            let client = sentinels.async_get_client().await?;
            client.get_multiplexed_async_connection_with_config(&self.inner.config).await
        };
        let conn = tokio::time::timeout(self.inner.timeout, connect).await.map_err(|_| {
            RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no master found through the sentinels in time",
            ))
        })??;
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        *self.inner.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Drops connection `generation` when `error` says it can no longer serve writes.
    fn judge(&self, generation: u64, error: &RedisError) {
        if !must_reconnect(error) {
            return;
        }
        let mut current = self.inner.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            tracing::warn!(error = %error, "lost the Redis master; asking the sentinels again");
            *current = None;
        }
    }
}

/// Errors after which the connection (or the node behind it) is useless for writes.
fn must_reconnect(error: &RedisError) -> bool {
    error.is_unrecoverable_error()
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_timeout()
        || matches!(error.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown))
}

/// Whether `error` means Redis cannot serve the call right now — down, unreachable, failing
/// over, resharding, or loading — rather than that the call itself is wrong. Callers answer
/// such errors with "try again" (a `503`, a retried fetch), never with a failure of the job.
pub fn is_unavailable(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::NoValidReplicasFoundBySentinel
                | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::ReadOnly
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::BusyLoading
                )
        )
}

/// Whether `error` is Redis refusing a write because it reached `maxmemory` (`OOM command not
/// allowed when used memory > 'maxmemory'`), as it does under the `noeviction` policy, or
/// under a `volatile-*` one with nothing left to evict. Wherever the refusal sits: the error
/// itself; one of a pipeline's errors, whichever comes first; a command queued in a
/// `MULTI` that Redis refused, which makes `EXEC` answer `EXECABORT`; or a script's error that
/// Redis 6 wraps as `ERR Error running script ... -OOM command not allowed ...`.
pub fn is_full(error: &RedisError) -> bool {
    /// The text of Redis's refusal, whatever code a wrapper gives it.
    const REFUSAL: &str = "command not allowed when used memory";
    let refused = |code: &str, detail: Option<&str>| code == "OOM" || detail.is_some_and(|d| d.contains(REFUSAL));
    refused(error.code().unwrap_or_default(), error.detail())
        || error
            .clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, e)| refused(e.code(), e.details())))
}

/// How often, at most, a process logs that Redis is full.
const FULL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Counts one write refused because Redis is full (`jobplane_redis_full_total`) and logs it,
/// at most once per [`FULL_LOG_INTERVAL`] with the number refused since the last line: a
/// full Redis refuses every enqueue, and a line per request would bury the one that matters.
pub fn note_full(error: &RedisError) {
    static LAST_LOGGED: Mutex<Option<std::time::Instant>> = Mutex::new(None);
    static SINCE: AtomicU64 = AtomicU64::new(0);
    metrics::counter!("jobplane_redis_full_total").increment(1);
    let refused = SINCE.fetch_add(1, Ordering::Relaxed) + 1;
    let mut last = LAST_LOGGED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if last.is_some_and(|at| at.elapsed() < FULL_LOG_INTERVAL) {
        return;
    }
    *last = Some(std::time::Instant::now());
    SINCE.store(0, Ordering::Relaxed);
    drop(last);
    tracing::error!(
        error = %error,
        refused,
        "Redis is full (maxmemory reached): writes are refused until memory is freed (finished jobs expire after \
         JOB_RETENTION_SECONDS, dead letters by their caps) or maxmemory is raised; logged at most every 10 s"
    );
}

/// What `INFO memory` says of a node's room for writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// Writes are taken (or the node does not say).
    Room,
    /// Over `maxmemory` with a policy that refuses writes rather than evicting any key.
    Full { used: u64, max: u64 },
}

impl Memory {
    /// Reads one node's `INFO memory` text: full when the memory Redis counts against
    /// `maxmemory` (`used_memory` less `mem_not_counted_for_evict`) is over it and the policy
    /// is not an `allkeys-*` one (those evict instead; `volatile-*` ones refuse once no key
    /// with a TTL is left, which `noeviction` always does).
    pub fn from_info(info: &str) -> Self {
        let field =
            |name: &str| info.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(str::trim);
        let number = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let max = number("maxmemory");
        let used = number("used_memory").saturating_sub(number("mem_not_counted_for_evict"));
        let evicts = field("maxmemory_policy").is_some_and(|p| p.starts_with("allkeys"));
        if max > 0 && used > max && !evicts { Memory::Full { used, max } } else { Memory::Room }
    }
}

/// The memory state of the node (or, on a cluster, of every master) behind `conn`: `Full` if
/// any of them is. `INFO` unknown to a locked-down server counts as room.
pub async fn memory(conn: &Conn) -> RedisResult<Memory> {
    let mut conn = conn.clone();
    let reply: Value = match redis::cmd("INFO").arg("memory").query_async(&mut conn).await {
        Ok(reply) => reply,
        Err(e) if is_unavailable(&e) => return Err(e),
        Err(_) => return Ok(Memory::Room),
    };
    // One node answers a bulk string; a cluster answers a map of node to bulk string.
    let mut texts = Vec::new();
    collect_texts(&reply, &mut texts);
    Ok(texts.iter().map(|t| Memory::from_info(t)).find(|m| *m != Memory::Room).unwrap_or(Memory::Room))
}

fn collect_texts(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::BulkString(bytes) => out.push(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => out.push(s.clone()),
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|v| collect_texts(v, out)),
        Value::Map(pairs) => pairs.iter().for_each(|(_, v)| collect_texts(v, out)),
        _ => {}
    }
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut conn) = self.connection().await?;
            let answer = conn.req_packed_command(cmd).await;
            if let Err(e) = &answer {
                self.judge(generation, e);
            }
            answer
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut conn) = self.connection().await?;
            let answer = conn.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &answer {
                self.judge(generation, e);
            }
            answer
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<RedisSettings, String> {
        RedisSettings::from_env(&Env::from_pairs(pairs)).map_err(|e| e.to_string())
    }

    /// The error Redis answers with `line` (a RESP error line, without the leading `-`).
    fn server_error(line: &str) -> RedisError {
        redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap().extract_error().unwrap_err()
    }

    #[test]
    fn a_full_redis_is_recognised_whatever_wraps_the_refusal() {
        let oom = "OOM command not allowed when used memory > 'maxmemory'.";
        assert!(is_full(&server_error(oom)));
        // Redis 7 keeps the code of an error raised in a script.
        assert!(is_full(&server_error(&format!("{oom} script: 2f0e, on @user_script:150."))));
        // Redis 6 wraps it in ERR.
        assert!(is_full(&server_error(&format!(
            "ERR Error running script (call to f_2f0e): @user_script:150: @user_script: 150: -{oom}"
        ))));
        assert!(!is_full(&server_error("ERR unknown command 'NOPE'")));
        assert!(!is_full(&server_error("WRONGTYPE Operation against a key holding the wrong kind of value")));
        assert!(!is_full(&server_error("EXECABORT Transaction discarded because of previous errors.")));
    }

    #[test]
    fn memory_is_full_only_over_maxmemory_under_a_refusing_policy() {
        let info = |used: u64, max: u64, policy: &str| {
            format!(
                "# Memory\r\nused_memory:{used}\r\nused_memory_human:1M\r\nmaxmemory:{max}\r\n\
                 maxmemory_policy:{policy}\r\nmem_not_counted_for_evict:100\r\n"
            )
        };
        assert_eq!(Memory::from_info(&info(3000, 2000, "noeviction")), Memory::Full { used: 2900, max: 2000 });
        assert_eq!(Memory::from_info(&info(3000, 2000, "volatile-lru")), Memory::Full { used: 2900, max: 2000 });
        assert_eq!(Memory::from_info(&info(3000, 2000, "allkeys-lru")), Memory::Room);
        assert_eq!(Memory::from_info(&info(2050, 2000, "noeviction")), Memory::Room);
        assert_eq!(Memory::from_info(&info(3000, 0, "noeviction")), Memory::Room);
        assert_eq!(Memory::from_info(""), Memory::Room);
    }

    #[test]
    fn a_single_node_by_default() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.topology, Topology::Single { url: "redis://127.0.0.1:6379".into() });
    }

    #[test]
    fn cluster_and_sentinel_take_precedence_over_redis_url() {
        let s = settings(&[("REDIS_URL", "redis://x:1"), ("REDIS_CLUSTER_URLS", "redis://a:7001, redis://b:7002")])
            .unwrap();
        assert_eq!(s.topology, Topology::Cluster { urls: vec!["redis://a:7001".into(), "redis://b:7002".into()] });
        let s = settings(&[
            ("REDIS_URL", "redis://x:1"),
            ("REDIS_SENTINEL_URLS", "redis://s1:26379,redis://s2:26379"),
            ("REDIS_SENTINEL_MASTER", "mymaster"),
        ])
        .unwrap();
        assert!(matches!(s.topology, Topology::Sentinel { ref master, .. } if master == "mymaster"));
    }

    #[test]
    fn bad_topologies_name_the_setting() {
        let both = settings(&[("REDIS_CLUSTER_URLS", "redis://a:1"), ("REDIS_SENTINEL_URLS", "redis://b:2")]);
        assert!(both.unwrap_err().starts_with("REDIS_CLUSTER_URLS: "));
        let no_master = settings(&[("REDIS_SENTINEL_URLS", "redis://b:2")]);
        assert!(no_master.unwrap_err().starts_with("REDIS_SENTINEL_MASTER: "));
        let not_redis = settings(&[("REDIS_CLUSTER_URLS", "redis://a:1,http://b:2")]);
        assert!(not_redis.unwrap_err().starts_with("REDIS_CLUSTER_URLS: "));
        let no_host = settings(&[("REDIS_SENTINEL_URLS", "redis://"), ("REDIS_SENTINEL_MASTER", "m")]);
        assert!(no_host.unwrap_err().starts_with("REDIS_SENTINEL_URLS: "));
    }

    #[test]
    fn descriptions_hide_passwords() {
        let t = Topology::Cluster { urls: vec!["redis://:hunter2@a:7001".into()] };
        assert!(!t.describe().contains("hunter2"), "{}", t.describe());
        let t = Topology::Single { url: "rediss://user:hunter2@a:6380".into() };
        assert!(!t.describe().contains("hunter2"), "{}", t.describe());
    }
}
