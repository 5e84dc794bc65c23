//! Whether Redis can take a process's work now: what `/readyz` reports (the `service` crate
//! renders it, through its `Readiness` trait).

use crate::redis_conn::Memory;
use crate::{Store, StoreError};

/// Why Redis cannot take the process's work now.
#[derive(Debug, thiserror::Error)]
pub enum Unready {
    /// It does not answer within the store's timeout, or refuses the connection.
    #[error(transparent)]
    Unreachable(StoreError),
    /// It answers, but refuses writes: at its `maxmemory` under a policy that does not evict.
    #[error("Redis uses {used} bytes of its maxmemory {max} and refuses writes")]
    Full { used: u64, max: u64 },
}

impl Unready {
    /// Its state in a word or a line, as `/readyz` names it: `full`, or why Redis does not answer.
    pub fn state(&self) -> String {
        match self {
            Unready::Unreachable(e) => e.to_string(),
            Unready::Full { .. } => "full".to_owned(),
        }
    }

    /// A sentence for the operator, where the state alone does not say enough.
    pub fn detail(&self) -> Option<String> {
        matches!(self, Unready::Full { .. }).then(|| self.to_string())
    }
}

impl Store {
    /// Ready when Redis answers and has room for writes. A Redis at its `maxmemory` that
    /// refuses writes is not: it answers, but no job can be enqueued until memory is freed
    /// (finished jobs expire, dead letters are evicted or purged; workers keep working) or
    /// `maxmemory` is raised.
    pub async fn readiness(&self) -> Result<(), Unready> {
        if let Err(e) = self.ping().await {
            tracing::warn!(error = %e, "not ready");
            return Err(Unready::Unreachable(e));
        }
        match self.memory().await {
            // Counted and logged where writes are refused; a probe every few seconds adds nothing.
            Ok(Memory::Full { used, max }) => Err(Unready::Full { used, max }),
            // PING answered: a failed INFO alone does not make the process unready.
            _ => Ok(()),
        }
    }
}
