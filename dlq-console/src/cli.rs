//! `dlq-console list|show|replay|edit|delete|purge|stats|pause|resume|workers`: the same actions from a shell,
//! straight against Redis (`REDIS_URL`, `REDIS_NAMESPACE`). Human tables by default, `--json`
//! for scripts, a progress bar for bulk actions, `--dry-run` to see how many letters match.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use jobs::Kind;
use jobs::dead::DeadFilter;
use serde_json::{Value, json};

use crate::actions::{ActionError, Console};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the pages and the JSON API (the default).
    Serve,
    /// List dead letters, newest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Most letters shown (1–1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter: payload (secrets redacted) and every attempt.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Replay one letter, the listed ids, or every letter matching the filter (`--all`).
    Replay {
        ids: Vec<String>,
        /// Every letter matching the filter options.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: FilterArgs,
        /// Only count what would be replayed.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Replace a letter's payload (checked by the producer API's rules) and replay it.
    Edit {
        id: String,
        /// The new payload: JSON, or `@path` to read it from a file.
        #[arg(long)]
        payload: String,
    },
    /// Delete one dead letter.
    Delete { id: String },
    /// Delete every letter matching the filter options.
    Purge {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Per-kind counts: queued, scheduled, running, retrying, dead, last minute's outcomes.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Pause a kind: workers start none of its jobs (it still accepts new ones) until resumed.
    Pause { kind: Kind },
    /// Resume a paused kind: its idle workers start at once.
    Resume { kind: Kind },
    /// The worker processes: live ones, and those gone within the hour.
    Workers {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    #[arg(long)]
    pub kind: Option<Kind>,
    /// exhausted, permanent, expired or panicked.
    #[arg(long)]
    pub reason: Option<String>,
    /// Text in the last error or the (redacted) payload.
    #[arg(long)]
    pub q: Option<String>,
    /// Died at or after (RFC 3339).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// Died before (RFC 3339).
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
}

impl FilterArgs {
    fn filter(&self) -> anyhow::Result<DeadFilter> {
        let filter = DeadFilter {
            kind: self.kind,
            reason: self.reason.clone(),
            q: self.q.clone(),
            since: self.since,
            until: self.until,
        };
        filter.check().map_err(|(field, message)| anyhow::anyhow!("--{field} {message}"))?;
        Ok(filter)
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!("{what} {{bar:40}} {{pos}}/{{len}} {{per_sec}} eta {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn explain(e: ActionError) -> anyhow::Error {
    match e {
        ActionError::Invalid(errors) => {
            let list: Vec<String> = errors.iter().map(|e| format!("{} {}", e.field, e.message)).collect();
            anyhow::anyhow!("the payload is not valid: {}", list.join("; "))
        }
        other => anyhow::anyhow!(other.to_string()),
    }
}

#[expect(clippy::too_many_lines, reason = "one arm per command, each short")]
/// Runs one command as `operator` (recorded in the audit log as `console:<operator>`).
pub async fn run(console: &Console, operator: &str, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => unreachable!("serve is handled by main"),
        Command::List { filter, limit, cursor, json } => {
            anyhow::ensure!((1..=1000).contains(&limit), "--limit must be from 1 to 1000");
            let page = console.dead.list(&filter.filter()?, limit, cursor.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                println!("{:<36}  {:<9}  {:<9}  {:>3}  {:<20}  last error", "id", "kind", "reason", "att", "died");
                for item in &page.items {
                    let error: String = item.last_error.clone().unwrap_or_default().chars().take(60).collect();
                    println!(
                        "{:<36}  {:<9}  {:<9}  {:>3}  {:<20}  {error}",
                        item.id,
                        item.kind.as_str(),
                        item.reason,
                        item.attempts,
                        item.dead_at.format("%Y-%m-%d %H:%M:%S")
                    );
                }
                println!("{} shown of {} matching", page.items.len(), page.total);
                if let Some(next) = page.next_cursor {
                    println!("next page: --cursor {next}");
                }
            }
        }
        Command::Show { id, json } => {
            let record =
                console.dead.get(&id).await?.ok_or_else(|| anyhow::anyhow!("no dead letter has the id {id}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                println!(
                    "{} {} ({}), died {}",
                    record.summary.kind.as_str(),
                    id,
                    record.summary.reason,
                    record.summary.dead_at
                );
                println!(
                    "attempts {} of {}, producer {}",
                    record.summary.attempts, record.max_attempts, record.producer
                );
                println!("last error: {}", record.summary.last_error.unwrap_or_default());
                println!("payload:\n{}", serde_json::to_string_pretty(&record.payload)?);
                for a in record.history {
                    println!("  attempt {} on {}: {}", a.attempt, a.worker, a.error.unwrap_or_else(|| "ok".into()));
                }
            }
        }
        Command::Replay { ids, all, filter, dry_run, json } => {
            let (targets, scope) = match (ids.is_empty(), all) {
                (false, false) => (ids.clone(), json!({"ids": ids.len()})),
                (true, true) => {
                    let filter = filter.filter()?;
                    let targets =
                        console.matching(&filter).await.map_err(explain)?.into_iter().map(|(_, id)| id).collect();
                    (targets, json!({"filter": filter}))
                }
                _ => anyhow::bail!("give ids, or --all with filter options"),
            };
            if dry_run {
                return report(
                    json,
                    &json!({"would_replay": targets.len()}),
                    &format!("{} would be replayed", targets.len()),
                );
            }
            let progress = (!json && targets.len() > 1).then(|| bar(targets.len() as u64, "replaying"));
            let result = console
                .replay_many(operator, &targets, scope, |done| {
                    if let Some(p) = &progress {
                        p.set_position(done);
                    }
                })
                .await
                .map_err(explain)?;
            if let Some(p) = progress {
                p.finish();
            }
            let text = format!("{} replayed, {} refused", result.replayed, result.refused.len());
            report(json, &serde_json::to_value(&result)?, &text)?;
            for r in &result.refused {
                if !json {
                    eprintln!("  {}: {}", r.id, r.reason);
                }
            }
        }
        Command::Edit { id, payload } => {
            let text = match payload.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)?,
                None => payload,
            };
            let value: Value =
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("--payload is not JSON: {e}"))?;
            console.replay(operator, &id, Some(value)).await.map_err(explain)?;
            println!("{id}: payload replaced and replayed");
        }
        Command::Delete { id } => {
            console.delete(operator, &id).await.map_err(explain)?;
            println!("{id}: deleted");
        }
        Command::Purge { filter, dry_run, json } => {
            let filter = filter.filter()?;
            let count = console.dead.count(&filter).await?;
            if dry_run {
                return report(json, &json!({"would_delete": count}), &format!("{count} would be deleted"));
            }
            let progress = (!json).then(|| bar(count, "deleting"));
            let deleted = console
                .purge(operator, &filter, |done| {
                    if let Some(p) = &progress {
                        p.set_position(done);
                    }
                })
                .await
                .map_err(explain)?;
            if let Some(p) = progress {
                p.finish();
            }
            report(json, &json!({"deleted": deleted}), &format!("{deleted} deleted"))?;
        }
        Command::Pause { kind } => {
            let pause = console.pause(operator, kind).await.map_err(explain)?;
            println!("{kind}: paused since {} by {}", pause.since.format("%Y-%m-%d %H:%M:%S UTC"), pause.by);
        }
        Command::Resume { kind } => {
            let was = console.resume(operator, kind).await.map_err(explain)?;
            println!("{kind}: {}", if was { "resumed" } else { "was not paused" });
        }
        Command::Workers { json } => crate::fleet::print_workers(console, json).await?,
        Command::Stats { json } => {
            let mut rows = Vec::new();
            for kind in Kind::ALL {
                let d = console.dead.depths(kind).await?;
                let retrying = console.dead.retrying(kind).await?;
                let minute = console.dead.throughput(kind, Utc::now(), 2).await?;
                let (ok, failed) = minute.first().map_or((0, 0), |(_, ok, failed)| (*ok, *failed));
                rows.push(json!({"kind": kind, "queued": d.queued, "scheduled": d.scheduled, "running": d.running,
                    "retrying": retrying, "dead": d.dead, "processed_last_minute": ok + failed, "failed_last_minute": failed}));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&json!({"queues": rows}))?);
            } else {
                println!(
                    "{:<10} {:>9} {:>9} {:>8} {:>8} {:>9} {:>10} {:>8}",
                    "kind", "queued", "scheduled", "running", "retrying", "dead", "done/min", "failed"
                );
                for r in rows {
                    println!(
                        "{:<10} {:>9} {:>9} {:>8} {:>8} {:>9} {:>10} {:>8}",
                        r["kind"].as_str().unwrap_or(""),
                        r["queued"],
                        r["scheduled"],
                        r["running"],
                        r["retrying"],
                        r["dead"],
                        r["processed_last_minute"],
                        r["failed_last_minute"]
                    );
                }
            }
        }
    }
    Ok(())
}

fn report(json: bool, value: &Value, text: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        println!("{text}");
    }
    Ok(())
}

/// A generous timeout for commands that walk many letters.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(30);
