//! The built binaries, as users run them.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::enqueue::webhook;
use crate::support::{OwnDatabase, Running, SHOP_KEY, binary, free_port, namespace, redis_url, wait_until_ok};

fn run_with(name: &str, env: &[(&str, &str)]) -> Output {
    Command::new(binary(name)).env_clear().envs(env.iter().copied()).output().unwrap()
}

type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn a_bad_setting_stops_each_process_with_one_line_naming_it() {
    let cases: [Case; 8] = [
        ("producer-api", &[], "producer-api: PRODUCER_API_KEYS: is required"),
        (
            "producer-api",
            &[("PRODUCER_API_KEYS", "a:0123456789abcdef"), ("REDIS_URL", "mysql://x")],
            "producer-api: REDIS_URL: ",
        ),
        ("worker", &[("WORKER_KINDS", "email,fax")], "worker: WORKER_KINDS: unknown kind `fax`"),
        ("worker", &[("REDIS_NAMESPACE", "{bad}")], "worker: REDIS_NAMESPACE: "),
        ("dlq-console", &[], "dlq-console: CONSOLE_TOKEN: is required"),
        ("worker", &[("WORKER_METRICS_ADDR", "0")], "worker: WEBHOOK_SIGNING_SECRET: is required"),
        (
            "worker",
            &[("WEBHOOK_SIGNING_SECRET", "secret"), ("WORKER_METRICS_ADDR", "0")],
            "worker: WEBHOOK_SIGNING_SECRET: must start with whsec_",
        ),
        ("worker", &[("WORKER_KINDS", "otp_sms"), ("SMS_PROVIDER", "carrier-pigeon")], "worker: SMS_PROVIDER: "),
    ];
    for (name, env, expected) in cases {
        crate::support::stops_at_start(name, &[], env, expected);
    }
}

#[tokio::test]
async fn the_producer_binary_serves_migrates_and_stops_cleanly() {
    let db = OwnDatabase::create().await;
    let addr = format!("127.0.0.1:{}", free_port());
    let ns = namespace();
    let keys = format!("shop:{SHOP_KEY}");
    let redis = redis_url();
    let api = Running::start(
        "producer-api",
        &[
            ("PRODUCER_ADDR", &addr),
            ("PRODUCER_API_KEYS", &keys),
            ("REDIS_URL", &redis),
            ("REDIS_NAMESPACE", &ns),
            ("DATABASE_URL", &db.url),
        ],
    );
    wait_until_ok(&format!("http://{addr}/readyz")).await;
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/jobs"))
        .bearer_auth(SHOP_KEY)
        .json(&webhook())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    // Migrations are applied at start.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while sqlx::query_scalar::<_, Option<String>>("SELECT to_regclass('audit_logs')::text")
        .fetch_one(&pool)
        .await
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "migrations were not applied at start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;

    assert_eq!(api.terminate(), Some(0));
    let mut conn = redis::Client::open(redis.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let ready_key = format!("{ns}:{{webhook}}:ready");
    let ready: Vec<String> = redis::cmd("LRANGE").arg(&ready_key).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    assert_eq!(ready, [id.as_str()]);
    let _: () = redis::cmd("DEL")
        .arg(&ready_key)
        .arg(format!("{ns}:{{webhook}}:job:{id}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    db.drop().await;
}

#[tokio::test]
async fn the_migrate_subcommand_applies_the_schema() {
    let db = OwnDatabase::create().await;
    let output = run_with("producer-api", &[("DATABASE_URL", &db.url), ("RUST_LOG", "warn")]);
    assert!(!output.status.success(), "without a subcommand and without keys it refuses to serve");
    let output =
        Command::new(binary("producer-api")).arg("migrate").env_clear().env("DATABASE_URL", &db.url).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let kind: String = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'audit_logs'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kind, "p", "audit_logs is partitioned");
    pool.close().await;
    db.drop().await;

    let unreachable = Command::new(binary("producer-api"))
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", format!("postgres://postgres@127.0.0.1:{}/jobs", free_port()))
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
}

#[tokio::test]
async fn the_worker_and_console_start_and_answer_health_checks() {
    let ns = namespace();
    let redis = redis_url();
    let worker_addr = format!("127.0.0.1:{}", free_port());
    let console_addr = format!("127.0.0.1:{}", free_port());
    let unreachable_db = format!("postgres://postgres@127.0.0.1:{}/jobs", free_port());
    let common =
        [("REDIS_URL", redis.as_str()), ("REDIS_NAMESPACE", ns.as_str()), ("DATABASE_URL", unreachable_db.as_str())];
    let worker = Running::start(
        "worker",
        &[
            &common[..],
            &[
                ("WORKER_METRICS_ADDR", worker_addr.as_str()),
                ("WEBHOOK_SIGNING_SECRET", crate::support::WEBHOOK_SECRET),
            ],
        ]
        .concat(),
    );
    let console = Running::start(
        "dlq-console",
        &[&common[..], &[("CONSOLE_ADDR", console_addr.as_str()), ("CONSOLE_TOKEN", "console-token-0123456789")]]
            .concat(),
    );
    for addr in [&worker_addr, &console_addr] {
        for path in ["/healthz", "/readyz", "/metrics"] {
            wait_until_ok(&format!("http://{addr}{path}")).await;
        }
    }
    assert_eq!(worker.terminate(), Some(0));
    assert_eq!(console.terminate(), Some(0));
}
