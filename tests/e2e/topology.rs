//! Redis topologies of a test's own, made of `redis-server` processes alone, each in its own
//! temporary folder on free ports and torn down on drop (also when the test panics):
//! a Redis Cluster of N masters, a master and replica watched by three Sentinels, and a small
//! LAN of "hosts" (network namespaces on a bridge) with a Redis every host reaches.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::free_port;

/// A folder of the test's own under the temporary directory.
fn own_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jobplane-{what}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `redis-server` with `args`, its log in `dir/<name>.log`, its files in `dir`.
fn redis_server(dir: &Path, name: &str, args: &[&str]) -> Child {
    Command::new("redis-server")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join(format!("{name}.log")))
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (scripts/test installs it)")
}

/// A synchronous connection to one node, each answer bounded by a second.
pub fn node(port: u16) -> redis::RedisResult<redis::Connection> {
    node_at("127.0.0.1", port)
}

fn node_at(host: &str, port: u16) -> redis::RedisResult<redis::Connection> {
    let conn = redis::Client::open(format!("redis://{host}:{port}"))?
        .get_connection_with_timeout(Duration::from_millis(500))?;
    conn.set_read_timeout(Some(Duration::from_secs(1)))?;
    Ok(conn)
}

/// Polls `check` every 50 ms until it holds, for at most `limit`; panics with `what` if it never does.
fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within {limit:?}");
}

fn wait_ping(host: &str, port: u16) {
    wait_for(&format!("redis-server on {host}:{port} answers PING"), Duration::from_secs(10), || {
        node_at(host, port).and_then(|mut c| redis::cmd("PING").query::<String>(&mut c)).is_ok()
    });
}

/// The keys matching `pattern` that the node on `port` holds (its own slots only, in a cluster).
pub fn scan(port: u16, pattern: &str) -> Vec<String> {
    let mut conn = node(port).unwrap();
    redis::Commands::scan_match::<_, String>(&mut conn, pattern).unwrap().filter_map(Result::ok).collect()
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A Redis Cluster of masters only (`--cluster-replicas 0`), every slot covered.
pub struct OwnCluster {
    pub ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Child>,
}

impl OwnCluster {
    pub fn start(masters: usize) -> Self {
        let mut cluster = Self { ports: Vec::new(), dir: own_dir("cluster"), children: Vec::new() };
        for i in 0..masters {
            // The bus port is chosen too: the default (port + 10000) may be taken or out of range.
            let (port, bus) = (free_port(), free_port());
            let config = cluster.dir.join(format!("nodes-{i}.conf"));
            let (port_s, bus_s) = (port.to_string(), bus.to_string());
            let args = [
                "--port",
                &port_s,
                "--cluster-port",
                &bus_s,
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                config.to_str().unwrap(),
                "--cluster-node-timeout",
                "2000",
                "--appendonly",
                "no",
                "--save",
                "",
            ];
            cluster.children.push(redis_server(&cluster.dir, &format!("node-{i}"), &args));
            cluster.ports.push(port);
        }
        for &port in &cluster.ports {
            wait_ping("127.0.0.1", port);
        }
        let nodes: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (scripts/test installs it)");
        assert!(created.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&created.stdout));
        for &port in &cluster.ports {
            wait_for(&format!("cluster_state:ok on node {port}"), Duration::from_secs(20), || {
                node(port)
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
        }
        cluster
    }

    /// The seed nodes, as `REDIS_CLUSTER_URLS` takes them.
    pub fn urls(&self) -> String {
        self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// The keys of `namespace` each master holds, in the order of [`OwnCluster::ports`].
    pub fn keys_per_node(&self, namespace: &str) -> Vec<Vec<String>> {
        self.ports.iter().map(|&port| scan(port, &format!("{namespace}:*"))).collect()
    }

    /// The port of the master serving `key`'s slot.
    pub fn node_of(&self, key: &str) -> u16 {
        let mut conn = node(self.ports[0]).unwrap();
        let slot: i64 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut conn).unwrap();
        let ranges: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn).unwrap();
        for range in ranges {
            let redis::Value::Array(parts) = range else { continue };
            let (Some(redis::Value::Int(from)), Some(redis::Value::Int(to)), Some(redis::Value::Array(master))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                continue;
            };
            if (*from..=*to).contains(&slot)
                && let Some(redis::Value::Int(port)) = master.get(1)
            {
                return u16::try_from(*port).unwrap();
            }
        }
        panic!("no master serves slot {slot} of {key}");
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        self.children.iter_mut().for_each(kill);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The name the Sentinels know the master by (`REDIS_SENTINEL_MASTER`).
pub const SENTINEL_MASTER: &str = "jobplane";

/// A master and one replica, watched by three Sentinels (quorum 2) that fail over a second
/// after the master stops answering.
pub struct OwnSentinel {
    /// The port of the master at start (the replica's, after [`OwnSentinel::kill_master`]).
    pub first_master: u16,
    pub replica: u16,
    pub sentinels: Vec<u16>,
    dir: PathBuf,
    master_child: Option<Child>,
    children: Vec<Child>,
}

impl OwnSentinel {
    pub fn start() -> Self {
        let (first_master, replica) = (free_port(), free_port());
        let mut this = Self {
            first_master,
            replica,
            sentinels: Vec::new(),
            dir: own_dir("sentinel"),
            master_child: None,
            children: Vec::new(),
        };
        let base = ["--bind", "127.0.0.1", "--appendonly", "no", "--save", ""];
        let master_port = first_master.to_string();
        let master_args = [["--port", master_port.as_str()].as_slice(), &base].concat();
        this.master_child = Some(redis_server(&this.dir, "master", &master_args));
        let replica_port = replica.to_string();
        let replica_args =
            [["--port", replica_port.as_str(), "--replicaof", "127.0.0.1", master_port.as_str()].as_slice(), &base]
                .concat();
        this.children.push(redis_server(&this.dir, "replica", &replica_args));
        wait_ping("127.0.0.1", first_master);
        wait_ping("127.0.0.1", replica);
        wait_for("the replica in sync with the master", Duration::from_secs(15), || {
            info(replica, "replication").contains("master_link_status:up")
        });
        for i in 0..3 {
            let port = free_port();
            // A Sentinel rewrites its own configuration file: each has one, in the test's folder.
            let config = this.dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "port {port}\nbind 127.0.0.1\n\
                     sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {first_master} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                     sentinel failover-timeout {SENTINEL_MASTER} 3000\n\
                     sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
                ),
            )
            .unwrap();
            this.children.push(redis_server(
                &this.dir,
                &format!("sentinel-{i}"),
                &[config.to_str().unwrap(), "--sentinel"],
            ));
            this.sentinels.push(port);
        }
        for &port in &this.sentinels {
            wait_ping("127.0.0.1", port);
            // Each must know the replica and the two other Sentinels, or a failover cannot reach quorum.
            wait_for(
                &format!("sentinel {port} sees the replica and two other sentinels"),
                Duration::from_secs(20),
                || {
                    let fields = sentinel_master_fields(port);
                    fields.get("num-slaves").map(String::as_str) == Some("1")
                        && fields.get("num-other-sentinels").map(String::as_str) == Some("2")
                },
            );
        }
        this
    }

    /// The Sentinels, as `REDIS_SENTINEL_URLS` takes them.
    pub fn urls(&self) -> String {
        self.sentinels.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// The master's port as the first Sentinel that answers reports it.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|&port| {
            let mut conn = node(port).ok()?;
            let (_, master_port): (String, String) =
                redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(SENTINEL_MASTER).query(&mut conn).ok()?;
            master_port.parse().ok()
        })
    }

    /// SIGKILLs the master and returns once a Sentinel names the replica as the new master,
    /// with the time that took.
    pub fn kill_master(&mut self) -> Duration {
        let started = Instant::now();
        kill(self.master_child.as_mut().expect("the master runs"));
        self.master_child = None;
        wait_for("a Sentinel promotes the replica", Duration::from_secs(30), || {
            self.master_port() == Some(self.replica)
        });
        wait_for("the promoted replica says it is a master", Duration::from_secs(10), || {
            info(self.replica, "replication").contains("role:master")
        });
        started.elapsed()
    }
}

/// `INFO <section>` of the node on `port`, empty when it does not answer.
pub fn info(port: u16, section: &str) -> String {
    node(port).and_then(|mut c| redis::cmd("INFO").arg(section).query(&mut c)).unwrap_or_default()
}

fn sentinel_master_fields(port: u16) -> std::collections::HashMap<String, String> {
    node(port)
        .and_then(|mut c| redis::cmd("SENTINEL").arg("MASTER").arg(SENTINEL_MASTER).query(&mut c))
        .unwrap_or_default()
}

impl Drop for OwnSentinel {
    fn drop(&mut self) {
        if let Some(child) = self.master_child.as_mut() {
            kill(child);
        }
        self.children.iter_mut().for_each(kill);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `ip` by its full path: the worker processes run with a cleared environment, PATH included.
pub fn ip_command() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("`ip` (iproute2) must be installed (scripts/test installs it); the test runs as root")
}

fn ip(args: &[&str]) -> bool {
    Command::new(ip_command()).args(args).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn must_ip(args: &[&str]) {
    let out = Command::new(ip_command()).args(args).output().unwrap();
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A LAN of "hosts": network namespaces whose veth pairs plug into a bridge in this namespace
/// holding `<subnet>.1/24`, where a Redis of the LAN's own listens. Each host is
/// `<subnet>.<2 + i>` and reaches that Redis, and anything else bound to `<subnet>.1`, across its
/// link. The /24 is a private `10.x.y.0/24` no interface here uses yet.
pub struct NetLab {
    /// `10.x.y`: the LAN's addresses without the last number.
    pub subnet: String,
    pub redis_port: u16,
    tag: String,
    hosts: Vec<String>,
    links: Vec<String>,
    bridge: Option<String>,
    redis: Option<Child>,
    dir: PathBuf,
}

impl NetLab {
    pub fn start(hosts: usize) -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
        let mut lab = Self {
            subnet: free_subnet(),
            redis_port: free_port(),
            hosts: Vec::new(),
            links: Vec::new(),
            bridge: None,
            redis: None,
            dir: own_dir("netlab"),
            tag,
        };
        let bridge = format!("jpbr{}", lab.tag);
        must_ip(&["link", "add", &bridge, "type", "bridge"]);
        lab.bridge = Some(bridge.clone());
        must_ip(&["addr", "add", &format!("{}.1/24", lab.subnet), "dev", &bridge]);
        must_ip(&["link", "set", &bridge, "up"]);
        for i in 0..hosts {
            lab.add_host(i, &bridge);
        }
        let port = lab.redis_port.to_string();
        let bind = format!("{}.1", lab.subnet);
        let args = [
            "--port",
            &port,
            "--bind",
            &bind,
            "127.0.0.1",
            "--protected-mode",
            "no",
            "--appendonly",
            "no",
            "--save",
            "",
        ];
        lab.redis = Some(redis_server(&lab.dir, "redis", &args));
        wait_ping("127.0.0.1", lab.redis_port);
        for i in 0..hosts {
            wait_for(&format!("host {i} reaches the LAN's Redis"), Duration::from_secs(10), || lab.reaches_redis(i));
        }
        lab
    }

    fn add_host(&mut self, i: usize, bridge: &str) {
        let ns = format!("jp-{}-{i}", self.tag);
        must_ip(&["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        let (outside, inside) = (format!("jp{}h{i}", self.tag), format!("jp{}n{i}", self.tag));
        must_ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside]);
        self.links.push(outside.clone());
        must_ip(&["link", "set", &inside, "netns", &ns]);
        must_ip(&["link", "set", &outside, "master", bridge]);
        must_ip(&["link", "set", &outside, "up"]);
        must_ip(&["-n", &ns, "addr", "add", &format!("{}/24", self.host_addr(i)), "dev", &inside]);
        must_ip(&["-n", &ns, "link", "set", &inside, "up"]);
        must_ip(&["-n", &ns, "link", "set", "lo", "up"]);
    }

    /// The network namespace of host `i`, for `ip netns exec`.
    pub fn host(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    pub fn host_addr(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, 2 + i)
    }

    /// The address every host reaches: the bridge's, in this namespace.
    pub fn gateway(&self) -> String {
        format!("{}.1", self.subnet)
    }

    /// The LAN's Redis as the hosts reach it.
    pub fn redis_url(&self) -> String {
        format!("redis://{}:{}", self.gateway(), self.redis_port)
    }

    /// The LAN's Redis from this namespace.
    pub fn local_redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.redis_port)
    }

    /// Whether host `i` gets a PONG from the LAN's Redis within 2 s.
    pub fn reaches_redis(&self, i: usize) -> bool {
        Command::new("timeout")
            .args(["2", ip_command(), "netns", "exec", self.host(i), "redis-cli", "-h", &self.gateway()])
            .args(["-p", &self.redis_port.to_string(), "PING"])
            .output()
            .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "PONG")
    }

    /// Pulls host `i`'s cable (`up = false`) or plugs it back: its link to the bridge goes down.
    /// Its packets are then dropped, as on a dead link: no reset, no error, only silence.
    pub fn set_link(&self, i: usize, up: bool) {
        must_ip(&["link", "set", &self.links[i], if up { "up" } else { "down" }]);
    }
}

/// A `10.x.y` (x in 200..250) that no address of this machine falls in.
fn free_subnet() -> String {
    let out = Command::new(ip_command()).args(["-4", "-o", "addr", "show"]).output().unwrap();
    let taken = String::from_utf8_lossy(&out.stdout).into_owned();
    loop {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        let subnet = format!("10.{}.{}", 200 + bytes[0] % 50, bytes[1]);
        if !taken.contains(&format!("inet {subnet}.")) {
            return subnet;
        }
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        if let Some(child) = self.redis.as_mut() {
            kill(child);
        }
        // Deleting the outside end deletes its peer too, even while a process still lives in the namespace.
        for link in &self.links {
            ip(&["link", "del", link]);
        }
        for ns in &self.hosts {
            ip(&["netns", "del", ns]);
        }
        if let Some(bridge) = &self.bridge {
            ip(&["link", "del", bridge]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
