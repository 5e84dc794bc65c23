//! `rediss://`: the producer API and a worker reach a redis-server that speaks only TLS,
//! trusting its private CA through `SSL_CERT_FILE`; without that CA they refuse the server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::receiver::{Receiver, Reply};
use crate::support::{Running, SHOP_KEY, WorkerProcess, free_port, namespace, wait_until_ok};

/// A TLS-only `redis-server` (no plain port) with a certificate for `localhost` signed by a
/// CA made for this test alone.
struct TlsRedis {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl TlsRedis {
    fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("jobplane-tls-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(&dir).output().expect("openssl is installed");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let subject = |cn: &str| format!("/CN={cn}");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            &subject("jobplane test CA"),
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            &subject("localhost"),
        ]);
        std::fs::write(dir.join("san.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "san.cnf",
        ]);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--tls-cert-file", "server.pem", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem"])
            .args(["--tls-auth-clients", "no"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let redis = Self { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the TLS redis-server did not listen within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    fn url(&self) -> String {
        format!("rediss://localhost:{}", self.port)
    }

    fn ca(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The producer API binary on `redis_url`, and its base URL; `ca` is its `SSL_CERT_FILE`, if any.
fn producer(redis_url: &str, namespace: &str, ca: Option<&str>) -> (Running, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let unreachable_db = format!("postgres://postgres@127.0.0.1:{}/jobs", free_port());
    let keys = format!("shop:{SHOP_KEY}");
    let mut env = vec![
        ("PRODUCER_ADDR", addr.as_str()),
        ("PRODUCER_API_KEYS", keys.as_str()),
        ("REDIS_URL", redis_url),
        ("REDIS_NAMESPACE", namespace),
        ("DATABASE_URL", unreachable_db.as_str()),
    ];
    if let Some(ca) = ca {
        env.push(("SSL_CERT_FILE", ca));
    }
    (Running::start("producer-api", &env), format!("http://{addr}"))
}

#[tokio::test]
async fn jobs_flow_over_tls_and_an_untrusted_server_is_refused() {
    let redis = TlsRedis::start();
    let ns = namespace();
    let ca = redis.ca();

    // Without the CA the server's certificate cannot be verified: never ready.
    let (_untrusting, untrusting_url) = producer(&redis.url(), &ns, None);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut answered = 0;
    while Instant::now() < deadline {
        if let Ok(response) = http.get(format!("{untrusting_url}/readyz")).send().await {
            assert_eq!(response.status(), 503, "ready on a Redis whose certificate it cannot verify");
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(answered > 0, "the producer API never answered /readyz");

    // With it, a job goes in through the API and out through a worker, both over TLS.
    let (_api, api_url) = producer(&redis.url(), &ns, Some(&ca));
    wait_until_ok(&format!("{api_url}/readyz")).await;
    let receiver = Receiver::start(&[], Reply::OK).await;
    let _worker = WorkerProcess::start(&redis.url(), &ns, &[("SSL_CERT_FILE", ca.as_str())]);
    let job = json!({"kind": "webhook", "payload": {"url": receiver.url(), "event": "tls.checked", "data": {}}});
    let response = http.post(format!("{api_url}/v1/jobs")).bearer_auth(SHOP_KEY).json(&job).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(receiver.wait_for(1, Duration::from_secs(15)).await.len(), 1, "the worker delivered nothing");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status: serde_json::Value = http
            .get(format!("{api_url}/v1/jobs/{id}"))
            .bearer_auth(SHOP_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["status"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "job not succeeded: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
