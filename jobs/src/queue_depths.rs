//! The queue gauges, sampled in the background by the processes that watch queues: workers
//! (their kinds) and the console (every kind): `jobplane_queue_depth` ([`sample`]), and
//! `jobplane_queue_paused`, `jobplane_queue_latency_seconds` and `jobplane_workers`
//! ([`sample_control`]).

use std::time::Duration;

use crate::Kind;
use crate::dead::DeadLetters;
use crate::fleet::Fleet;
use crate::pause::Pauses;

/// Samples the depth of `kinds`' queues every `every`, until the process ends. A kind whose
/// counts Redis does not give this time keeps its last values.
pub async fn sample(dead: DeadLetters, kinds: Vec<Kind>, every: Duration) {
    loop {
        for kind in &kinds {
            let (Ok(depths), Ok(retrying)) = (dead.depths(*kind).await, dead.retrying(*kind).await) else { continue };
            #[expect(clippy::cast_precision_loss, reason = "queue depths far below 2^52")]
            let states = [
                ("queued", depths.queued as f64),
                ("scheduled", depths.scheduled.saturating_sub(retrying) as f64),
                ("retrying", retrying as f64),
                ("running", depths.running as f64),
                ("dead", depths.dead as f64),
            ];
            for (state, value) in states {
                metrics::gauge!("jobplane_queue_depth", "kind" => kind.as_str(), "state" => state).set(value);
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Samples, every `every` until the process ends, whether each of `kinds` is paused (0 or 1),
/// its latency (the age of its oldest ready job, bounded work: [`Pauses::latency`]) and how
/// many live workers serve it (one read of the fleet registry per round). A value Redis does
/// not give this time keeps its last one.
pub async fn sample_control(pauses: Pauses, fleet: Fleet, kinds: Vec<Kind>, every: Duration) {
    loop {
        let live = fleet.live_per_kind().await.ok();
        for kind in &kinds {
            let kind_label = kind.as_str();
            if let Ok(paused) = pauses.paused(*kind).await {
                metrics::gauge!("jobplane_queue_paused", "kind" => kind_label).set(if paused.is_some() {
                    1.0
                } else {
                    0.0
                });
            }
            if let Ok(latency) = pauses.latency(*kind, chrono::Utc::now()).await {
                metrics::gauge!("jobplane_queue_latency_seconds", "kind" => kind_label).set(latency.as_secs_f64());
            }
            if let Some(count) = live.as_ref().and_then(|live| live.get(kind)) {
                #[expect(clippy::cast_precision_loss, reason = "worker counts far below 2^52")]
                metrics::gauge!("jobplane_workers", "kind" => kind_label).set(*count as f64);
            }
        }
        tokio::time::sleep(every).await;
    }
}
