//! The suppression list: email addresses that must not be mailed again, because they bounced
//! for good, their owner complained, or an operator said so.
//!
//! One list per deployment, in two keys under their own hash tag (`{suppressions}`, so both
//! scripts touch one Cluster slot): a HASH of the entries by address, and a ZSET of the same
//! addresses by the time they were suppressed, which keeps the list bounded (the oldest entries
//! beyond the cap are evicted, `lua/suppress.lua`). The worker asks about every recipient of an
//! email job in one `HMGET` before it calls SES ([`Suppressions::first_listed`]).
//!
//! Addresses are normalised before they are stored or looked up ([`normalise`]): the display
//! name dropped, surrounding space trimmed and the whole address lower-cased. The local part is
//! case-sensitive in theory only: SES, and every large mailbox provider, treat it as
//! case-insensitive, so `Ada@Example.org` bouncing suppresses `ada@example.org` too.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use redis::Script;
use serde::{Deserialize, Serialize};

use crate::record::millis;
use crate::redis_conn::Conn;
use crate::store::Cause;
use crate::{Keys, StoreError};

static SUPPRESS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/suppress.lua")));
static UNSUPPRESS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/unsuppress.lua")));

/// The longest detail kept with an entry (a bounce's diagnostic code, an operator's note).
pub const DETAIL_MAX: usize = 512;
/// The most entries one search page returns.
pub const PAGE_MAX: usize = 200;
/// The default cap on entries (`SUPPRESSION_CAP`).
pub const DEFAULT_CAP: u64 = 100_000;
/// Entries one search call examines at most before it answers with a cursor, however few match.
const SCAN_BUDGET: usize = 10_000;
const SCAN_COUNT: usize = 500;

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// A permanent (hard) bounce reported by the provider.
    Bounce,
    /// The recipient marked a message as spam.
    Complaint,
    /// An operator added it.
    Manual,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bounce => "bounce",
            Self::Complaint => "complaint",
            Self::Manual => "manual",
        }
    }
}

/// One suppressed address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Suppression {
    /// The normalised address (display name dropped, lower-cased).
    pub address: String,
    pub reason: SuppressionReason,
    pub at: DateTime<Utc>,
    /// What the provider or the operator said (a bounce's diagnostic), at most 512 bytes.
    pub detail: String,
    /// The job whose message bounced or was complained about, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// The stored value of an entry.
#[derive(Serialize, Deserialize)]
struct Stored {
    reason: SuppressionReason,
    at: i64,
    #[serde(default)]
    detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job: Option<String>,
}

impl Stored {
    fn view(self, address: String) -> Suppression {
        Suppression { address, reason: self.reason, at: millis(self.at), detail: self.detail, job_id: self.job }
    }
}

/// One page of a search: the entries, and the cursor of the next page (`None`: the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<Suppression>,
    pub next_cursor: Option<String>,
}

/// `SUPPRESSION_CAP` (default 100000, at least 1): the most addresses the list keeps; beyond
/// it the oldest entries are evicted, with a warning in the log.
pub fn cap_from_env(env: &crate::settings::Env) -> Result<u64, crate::settings::SettingError> {
    match env.parse("SUPPRESSION_CAP", DEFAULT_CAP)? {
        0 => Err(crate::settings::SettingError::new("SUPPRESSION_CAP", "must be at least 1")),
        cap => Ok(cap),
    }
}

/// An address as the list keys it: the mailbox's address (`Name <a@b>` → `a@b`), trimmed and
/// lower-cased; `None` for text that is not an address.
pub fn normalise(mailbox: &str) -> Option<String> {
    let mailbox = mailbox.trim();
    let address = match (mailbox.rfind('<'), mailbox.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        _ => mailbox,
    };
    let address = address.trim().to_lowercase();
    (address.len() <= 320 && email_address::EmailAddress::is_valid(&address)).then_some(address)
}

/// `text` cut to at most `max` bytes on a char boundary.
fn bounded(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The two keys of the list, and the prefix of the provider messages already applied.
#[derive(Debug, Clone)]
struct SuppressionKeys {
    entries: String,
    order: String,
    prefix: String,
}

impl SuppressionKeys {
    fn new(keys: &Keys) -> Self {
        let prefix = format!("{}:{{suppressions}}", keys.namespace());
        Self { entries: format!("{prefix}:entries"), order: format!("{prefix}:order"), prefix }
    }

    /// STRING marking provider message `id` as applied (expiring): named by a digest, so any
    /// text a provider sends makes a short key.
    fn message(&self, id: &str) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(id.as_bytes());
        format!("{}:msg:{}", self.prefix, hex::encode(&digest[..16]))
    }
}

/// Reads and writes the suppression list.
#[derive(Debug, Clone)]
pub struct Suppressions {
    conn: Conn,
    keys: SuppressionKeys,
    cap: u64,
}

fn protocol(message: &str, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Protocol(Cause::new(message, e))
}

impl Suppressions {
    /// The list of `keys`' namespace, keeping at most `cap` entries (`SUPPRESSION_CAP`).
    pub fn new(conn: Conn, keys: &Keys, cap: u64) -> Self {
        Self { conn, keys: SuppressionKeys::new(keys), cap: cap.max(1) }
    }

    /// Suppresses `address` (normalised here; `None` when it is not an address): whether it is
    /// new to the list. An address listed already takes the newer entry.
    pub async fn add(
        &self,
        address: &str,
        reason: SuppressionReason,
        detail: &str,
        job_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<bool>, StoreError> {
        let Some(address) = normalise(address) else { return Ok(None) };
        let stored = Stored {
            reason,
            at: now.timestamp_millis(),
            detail: bounded(detail, DETAIL_MAX),
            job: job_id.map(|id| bounded(id, 128)),
        };
        let entry = serde_json::to_string(&stored).map_err(|e| protocol("the entry did not encode", e))?;
        let mut call = SUPPRESS.prepare_invoke();
        call.key(&self.keys.entries).key(&self.keys.order).arg(&address).arg(entry).arg(stored.at).arg(self.cap);
        let (added, evicted): (i64, i64) = call.invoke_async(&mut self.conn.clone()).await?;
        if evicted > 0 {
            tracing::warn!(
                evicted,
                cap = self.cap,
                "suppression list full: the oldest entries were evicted (SUPPRESSION_CAP)"
            );
        }
        Ok(Some(added == 1))
    }

    /// Removes `address`: the entry it had, or `None` when it was not listed.
    pub async fn remove(&self, address: &str) -> Result<Option<Suppression>, StoreError> {
        let Some(address) = normalise(address) else { return Ok(None) };
        let mut call = UNSUPPRESS.prepare_invoke();
        call.key(&self.keys.entries).key(&self.keys.order).arg(&address);
        let raw: Option<String> = call.invoke_async(&mut self.conn.clone()).await?;
        raw.map(|raw| decode(address, &raw)).transpose()
    }

    /// The entry of `address`, if it is listed.
    pub async fn get(&self, address: &str) -> Result<Option<Suppression>, StoreError> {
        self.first_listed(std::iter::once(address)).await
    }

    /// The entry of the first of `addresses` that is listed, in one `HMGET` for them all;
    /// text that is not an address is never listed.
    pub async fn first_listed<'a>(
        &self,
        addresses: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<Suppression>, StoreError> {
        let normal: Vec<String> = addresses.into_iter().filter_map(normalise).collect();
        if normal.is_empty() {
            return Ok(None);
        }
        let raws: Vec<Option<String>> =
            redis::cmd("HMGET").arg(&self.keys.entries).arg(&normal).query_async(&mut self.conn.clone()).await?;
        for (address, raw) in normal.into_iter().zip(raws) {
            if let Some(raw) = raw {
                return decode(address, &raw).map(Some);
            }
        }
        Ok(None)
    }

    /// Claims provider message `id` (an SNS `MessageId`) for processing: true the first time
    /// within `ttl`, false when it was claimed already (a resend: nothing to do). A claim whose
    /// processing failed is given back with [`Suppressions::release_message`], so the resend
    /// is processed.
    pub async fn claim_message(&self, id: &str, ttl: std::time::Duration) -> Result<bool, StoreError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.message(id))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(set.is_some())
    }

    pub async fn release_message(&self, id: &str) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("DEL").arg(self.keys.message(id)).query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// How many addresses are listed.
    pub async fn count(&self) -> Result<u64, StoreError> {
        Ok(redis::cmd("HLEN").arg(&self.keys.entries).query_async(&mut self.conn.clone()).await?)
    }

    /// Entries whose address contains `query` (lower-cased; all when empty), at most `limit`
    /// (1..=200), from `cursor` (a previous page's `next_cursor`). A page may hold fewer
    /// entries than `limit` and still have a next one: each call examines a bounded number.
    pub async fn search(&self, query: &str, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let limit = limit.clamp(1, PAGE_MAX);
        let pattern = format!("*{}*", glob_escape(&query.trim().to_lowercase()));
        let (mut scan, mut skip) = parse_cursor(cursor);
        let mut items = Vec::new();
        let mut examined = 0;
        loop {
            let (next, batch): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                .arg(&self.keys.entries)
                .arg(scan)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut self.conn.clone())
                .await?;
            examined += SCAN_COUNT;
            for (i, (address, raw)) in batch.into_iter().enumerate().skip(skip) {
                if items.len() == limit {
                    // The rest of this batch comes first on the next page.
                    return Ok(Page { items, next_cursor: Some(format!("{scan}:{i}")) });
                }
                items.push(decode(address, &raw)?);
            }
            skip = 0;
            scan = next;
            if scan == 0 {
                return Ok(Page { items, next_cursor: None });
            }
            if items.len() == limit || examined >= SCAN_BUDGET {
                return Ok(Page { items, next_cursor: Some(format!("{scan}:0")) });
            }
        }
    }
}

fn decode(address: String, raw: &str) -> Result<Suppression, StoreError> {
    let stored: Stored = serde_json::from_str(raw).map_err(|e| protocol("a suppression entry did not read", e))?;
    Ok(stored.view(address))
}

/// A page cursor: `<HSCAN cursor>:<entries of that batch already returned>`; anything else
/// starts from the beginning.
fn parse_cursor(cursor: Option<&str>) -> (u64, usize) {
    cursor
        .and_then(|c| c.split_once(':'))
        .and_then(|(scan, skip)| Some((scan.parse().ok()?, skip.parse().ok()?)))
        .unwrap_or((0, 0))
}

/// `text` with Redis's glob characters escaped, so a search matches it literally.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(normalise(" Ada@Example.ORG ").as_deref(), Some("ada@example.org"));
        assert_eq!(normalise("Grace Hopper <Grace@Example.org>").as_deref(), Some("grace@example.org"));
        assert_eq!(normalise("not an address"), None);
        assert_eq!(normalise(&format!("{}@example.org", "a".repeat(320))), None);
    }

    #[test]
    fn cursors_and_patterns_read_safely() {
        assert_eq!(parse_cursor(Some("17:3")), (17, 3));
        assert_eq!(parse_cursor(Some("junk")), (0, 0));
        assert_eq!(parse_cursor(None), (0, 0));
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(bounded("éé", 3), "é");
    }
}
