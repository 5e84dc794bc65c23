//! The jobs this worker holds, and the task that keeps their leases alive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobs::queue::Queue;

/// Job id → the token of the lease this worker was handed (`Leased::token`).
#[derive(Debug, Clone, Default)]
pub struct Inflight(Arc<Mutex<HashMap<String, u64>>>);

impl Inflight {
    pub fn insert(&self, id: &str, token: u64) {
        self.lock().insert(id.to_owned(), token);
    }

    /// Forgets `id` if it is still at lease `token`: a newer lease of the same job, taken by a
    /// fetch before this one finished recording, keeps its entry (and its lease renewals).
    pub fn remove(&self, id: &str, token: u64) {
        let mut map = self.lock();
        if map.get(id) == Some(&token) {
            map.remove(id);
        }
    }

    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.lock().iter().map(|(id, token)| (id.clone(), *token)).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // A panic while holding this lock cannot leave the map inconsistent: use it anyway.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Renews every held lease each `lease / 3`, so two renewals can fail before a lease lapses.
pub async fn keep_alive(queue: Queue, inflight: Inflight, lease: Duration) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let held = inflight.snapshot();
        if let Err(e) = queue.extend(&held, lease).await {
            tracing::warn!(kind = %queue.kind(), error = %e, held = held.len(), "could not renew leases; retrying");
        }
    }
}
