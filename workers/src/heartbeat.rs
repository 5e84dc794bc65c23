//! This process's entry in the fleet registry ([`jobs::fleet`]): a heartbeat every
//! [`every`] of the lease, with the jobs held per kind; removed at a graceful stop.

use std::collections::BTreeMap;
use std::time::Duration;

use jobs::Kind;
use jobs::fleet::{Fleet, Heartbeat};

use crate::leases::Inflight;

/// A third of the lease, at most 5 s: the console calls a worker gone once a whole lease
/// passed without a heartbeat, so two may be lost before it does.
pub fn every(lease: Duration) -> Duration {
    (lease / 3).min(Duration::from_secs(5))
}

/// Writes `beat`, refreshed with the jobs held, until the process ends. A heartbeat Redis
/// does not take is logged and the next one tried: it only keeps the console's view fresh.
pub async fn run(fleet: Fleet, mut beat: Heartbeat, held: Vec<(Kind, Inflight)>, lease: Duration) {
    let mut tick = tokio::time::interval(every(lease));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        beat.in_flight = held.iter().map(|(kind, inflight)| (*kind, inflight.len())).collect::<BTreeMap<_, _>>();
        if let Err(e) = fleet.beat(&beat).await {
            tracing::warn!(error = jobs::store::chain(&e), "heartbeat not written; retrying");
        }
    }
}
