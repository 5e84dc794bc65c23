//! The jobs this worker holds, and the task that keeps their leases alive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobs::queue::Queue;

/// Job id → the attempt number this worker was handed.
#[derive(Debug, Clone, Default)]
pub struct Inflight(Arc<Mutex<HashMap<String, u32>>>);

impl Inflight {
    pub fn insert(&self, id: &str, attempt: u32) {
        self.lock().insert(id.to_owned(), attempt);
    }

    /// Forgets `id` if it is still at `attempt`: a newer attempt of the same job, leased by a
    /// fetch before this one finished recording, keeps its entry (and its lease renewals).
    pub fn remove(&self, id: &str, attempt: u32) {
        let mut map = self.lock();
        if map.get(id) == Some(&attempt) {
            map.remove(id);
        }
    }

    pub fn snapshot(&self) -> Vec<(String, u32)> {
        self.lock().iter().map(|(id, attempt)| (id.clone(), *attempt)).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
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
