//! The `jobplane_queue_depth` gauge, sampled in the background by the processes that watch
//! queues: workers (their kinds) and the console (every kind).

use std::time::Duration;

use crate::Kind;
use crate::dead::DeadLetters;

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
