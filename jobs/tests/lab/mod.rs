//! What every script test file shares: a connection to the test Redis (`REDIS_URL`, default
//! 127.0.0.1:6379) and a namespace of its own, so tests run side by side and leave each other's
//! keys alone. Each file adds the helpers it needs in its own `impl Lab`.

#![allow(dead_code, reason = "each test file uses its own part of the lab")]

use std::time::Duration;

use chrono::Utc;
use jobs::redis_conn::Conn;
use jobs::{Keys, Kind, NewJob, Priority, Store};

pub struct Lab {
    pub conn: Conn,
    pub keys: Keys,
    pub namespace: String,
}

impl Lab {
    pub fn new() -> Self {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let conn = jobs::redis_conn::connect_url(&url, Duration::from_secs(5)).unwrap();
        let namespace = format!("t{}", uuid::Uuid::now_v7().simple());
        Self { conn, keys: Keys::new(&namespace), namespace }
    }

    /// The producers' side, with a day's idempotency and a 5 s Redis timeout.
    pub fn store(&self) -> Store {
        Store::new(self.conn.clone(), self.keys.clone(), Duration::from_hours(24), Duration::from_secs(5))
    }
}

/// A new job of `kind` as the tests write them unless they say otherwise: a webhook's payload to
/// `https://a.example/hook`, producer `shop`, 3 attempts, ready now, normal priority, no group, no
/// idempotency key.
pub fn job(kind: Kind) -> NewJob {
    NewJob {
        id: uuid::Uuid::now_v7(),
        kind,
        payload: r#"{"url":"https://a.example/hook","event":"e"}"#.into(),
        created_at: Utc::now(),
        run_at: None,
        max_attempts: 3,
        producer: "shop".into(),
        idempotency: None,
        traceparent: None,
        priority: Priority::Normal,
        group: None,
    }
}
