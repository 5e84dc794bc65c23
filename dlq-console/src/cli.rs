//! `dlq-console list|show|replay|edit|delete|purge|stats|pause|resume|rate-limit|workers`: the same actions from a shell,
//! straight against Redis (`REDIS_URL`, `REDIS_NAMESPACE`). Human tables by default, `--json`
//! for scripts, a progress bar for bulk actions, `--dry-run` to see how many letters match.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use jobs::Kind;
use jobs::browse::{Cursor, JobState, JobSummary};
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
    /// Cancel one job by id, or every job of a kind in a state (`--kind K --state S`, optionally
    /// `--producer P`): without `--yes` only counts them.
    Cancel {
        id: Option<String>,
        #[arg(long)]
        kind: Option<Kind>,
        /// queued, scheduled or retrying.
        #[arg(long)]
        state: Option<jobs::control::WaitingState>,
        #[arg(long)]
        producer: Option<String>,
        /// Cancel what the filter selects (the jobs created up to now, no more than counted).
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Per-kind counts: queued, scheduled, running, retrying, dead, and the outcomes of the
    /// last complete minute.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// One kind's jobs in one state, a page at a time (queued oldest first, scheduled and
    /// retrying next due first, running by lease deadline, succeeded and cancelled newest first).
    Jobs {
        #[arg(long)]
        kind: Kind,
        /// queued, scheduled, retrying, running, succeeded or cancelled.
        #[arg(long)]
        state: JobState,
        /// Only this group's queued jobs (`groups` names the groups waiting).
        #[arg(long)]
        group: Option<String>,
        /// Most jobs shown (1–500).
        #[arg(long, default_value_t = jobs::browse::DEFAULT_LIMIT)]
        limit: usize,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The groups with jobs waiting in a kind's lanes, the largest first.
    Groups {
        #[arg(long)]
        kind: Kind,
        /// Most groups shown (1–500).
        #[arg(long, default_value_t = jobs::browse::DEFAULT_LIMIT)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Pause a kind: workers start none of its jobs (it still accepts new ones) until resumed.
    Pause { kind: Kind },
    /// Resume a paused kind: its idle workers start at once.
    Resume { kind: Kind },
    /// Set a kind's rate limit for every worker: `50/s`, `50/s:100` (burst), or `off`. Stands
    /// over the workers' RATE_LIMIT_<KIND> from then on. Without a limit: show the one in force.
    RateLimit {
        kind: Kind,
        /// `<n>/s[:<burst>]` or `off`.
        limit: Option<RateArg>,
    },
    /// The worker processes: live ones, and those gone within the hour.
    Workers {
        #[arg(long)]
        json: bool,
    },
    /// Webhook destinations cooling down (scheme://host:port), soonest gap end first.
    Destinations {
        /// Most shown (1–200).
        #[arg(long, default_value_t = crate::destinations::DEFAULT_LIMIT)]
        limit: usize,
        /// `next_cursor` of the previous page.
        #[arg(long, default_value_t = 0)]
        cursor: u64,
        #[arg(long)]
        json: bool,
    },
    /// End a webhook destination's cool-down (its id from `destinations`): its jobs go at once.
    ResumeDestination { id: String },
    /// The email suppression list: addresses containing `--q` (all without it).
    Suppressions {
        #[arg(long)]
        q: Option<String>,
        /// Most shown (1–200).
        #[arg(long, default_value_t = crate::suppressions::DEFAULT_LIMIT)]
        limit: usize,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Put an address on the suppression list by hand (reason `manual`).
    Suppress {
        address: String,
        #[arg(long, default_value = "")]
        detail: String,
    },
    /// Take an address off the suppression list: it may be mailed again.
    Unsuppress { address: String },
}

/// A rate limit on the command line: `<n>/s[:<burst>]`, or `off` for none.
#[derive(Debug, Clone, Copy)]
pub struct RateArg(Option<jobs::rate::RateLimit>);

impl std::str::FromStr for RateArg {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "off" | "none" => Ok(Self(None)),
            _ => raw.parse().map(|l| Self(Some(l))),
        }
    }
}

#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    #[arg(long)]
    pub kind: Option<Kind>,
    /// exhausted, permanent, expired, panicked or suppressed.
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
                println!("{:<36}  {:<9}  {:<9}  {:>3}  {:<23}  last error", "id", "kind", "reason", "att", "died");
                for item in &page.items {
                    let error: String = item.last_error.clone().unwrap_or_default().chars().take(60).collect();
                    println!(
                        "{:<36}  {:<9}  {:<9}  {:>3}  {:<23}  {error}",
                        item.id,
                        item.kind.as_str(),
                        item.reason,
                        item.attempts,
                        crate::pages::format_time(item.dead_at)
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
        Command::Cancel { id, kind, state, producer, yes, json } => match (id, kind, state) {
            (Some(id), None, None) => {
                let answer = console.cancel_job(operator, &id).await.map_err(explain)?;
                let text = if answer.cancel_requested.is_some() {
                    format!("{id}: running; cancellation requested")
                } else {
                    format!("{id}: cancelled")
                };
                report(json, &serde_json::to_value(&answer)?, &text)?;
            }
            (None, Some(kind), Some(state)) => {
                let filter = jobs::control::CancelFilter { kind, state, producer, until: Some(Utc::now()) };
                filter.check().map_err(|(field, message)| anyhow::anyhow!("--{field} {message}"))?;
                let count = console.cancel_count(&filter).await.map_err(explain)?;
                if !yes {
                    return report(
                        json,
                        &json!({"would_cancel": count}),
                        &format!("{count} would be cancelled; add --yes to cancel them"),
                    );
                }
                let done = console.bulk_cancel(operator, &filter, count).await.map_err(explain)?;
                let text = format!(
                    "{} cancelled, {} running (cancellation requested), {} had finished",
                    done.cancelled, done.cancel_requested, done.unchanged
                );
                report(json, &serde_json::to_value(&done)?, &text)?;
            }
            _ => anyhow::bail!("give a job id, or --kind and --state (queued, scheduled or retrying)"),
        },
        Command::Pause { kind } => {
            let pause = console.pause(operator, kind).await.map_err(explain)?;
            println!("{kind}: paused since {} by {}", crate::pages::format_time(pause.since), pause.by);
        }
        Command::Resume { kind } => {
            let was = console.resume(operator, kind).await.map_err(explain)?;
            println!("{kind}: {}", if was { "resumed" } else { "was not paused" });
        }
        Command::RateLimit { kind, limit } => {
            if let Some(RateArg(limit)) = limit {
                console.set_rate_limit(operator, kind, limit).await.map_err(explain)?;
            }
            let view = console.rate_limit(kind).await.map_err(explain)?;
            println!("{kind}: {}", crate::rate::describe(&view));
        }
        Command::Workers { json } => crate::fleet::print_workers(console, json).await?,
        Command::Destinations { limit, cursor, json } => {
            crate::destinations::print(console, cursor, limit, json).await?;
        }
        Command::ResumeDestination { id } => match console.resume_destination(operator, &id).await.map_err(explain)? {
            Some(moved) => println!("{id}: cool-down ended; {moved} waiting job(s) moved to the ready list"),
            None => anyhow::bail!("no webhook destination `{id}` is cooling down"),
        },
        Command::Suppressions { q, limit, cursor, json } => {
            let query = crate::suppressions::SearchQuery { q, cursor, limit: Some(limit.to_string()) };
            crate::suppressions::print(console, query, json).await?;
        }
        Command::Suppress { address, detail } => {
            let entry = console.suppress(operator, &address, &detail).await.map_err(explain)?;
            println!("{}: suppressed (manual)", entry.address);
        }
        Command::Unsuppress { address } => match console.unsuppress(operator, &address).await.map_err(explain)? {
            Some(entry) => {
                println!("{}: removed from the suppression list (was {})", entry.address, entry.reason.as_str());
            }
            None => anyhow::bail!("`{address}` is not on the suppression list"),
        },
        Command::Stats { json } => {
            let mut rows = Vec::new();
            for kind in Kind::ALL {
                let d = console.dead.depths(kind).await?;
                let retrying = console.dead.retrying(kind).await?;
                let minute = console.dead.throughput(kind, crate::api::last_complete_minute(Utc::now()), 1).await?;
                let (ok, failed) = minute.first().map_or((0, 0), |(_, ok, failed)| (*ok, *failed));
                rows.push(json!({"kind": kind, "queued": d.queued, "scheduled": d.scheduled, "running": d.running,
                    "retrying": retrying, "dead": d.dead, "processed_last_minute": ok + failed, "failed_last_minute": failed}));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&json!({"queues": rows}))?);
            } else {
                print!("{}", stats_table(&rows));
            }
        }
        Command::Jobs { kind, state, group, limit, cursor, json } => {
            let limit = jobs::browse::check_limit(limit).map_err(|rule| anyhow::anyhow!("--limit {rule}"))?;
            let cursor = cursor
                .map(|c| Cursor::parse(state, &c).map_err(|rule| anyhow::anyhow!("--cursor {rule}")))
                .transpose()?;
            if let Some(g) = &group {
                anyhow::ensure!(state == JobState::Queued, "--group filters the queued state only");
                anyhow::ensure!(
                    jobs::lanes::valid_group(g),
                    "--group must be 1 to {} visible ASCII characters",
                    jobs::lanes::MAX_GROUP_LEN
                );
            }
            let page = console.dead.browser().list_in(kind, state, group.as_deref(), cursor.as_ref(), limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                print!("{}", jobs_table(state, &page.items));
                if let Some(next) = page.next_cursor {
                    println!("next page: --cursor {next}");
                }
            }
        }
        Command::Groups { kind, limit, json } => {
            let limit = jobs::browse::check_limit(limit).map_err(|rule| anyhow::anyhow!("--limit {rule}"))?;
            let groups = console.dead.browser().groups(kind, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&groups)?);
            } else {
                let rows: Vec<Vec<String>> = groups
                    .items
                    .iter()
                    .map(|g| {
                        vec![
                            g.group.clone(),
                            g.waiting.to_string(),
                            g.high.to_string(),
                            g.normal.to_string(),
                            g.low.to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["group", "waiting", "high", "normal", "low"], &["waiting", "high", "normal", "low"], &rows)
                );
                if groups.more {
                    println!("(more groups wait than --limit {limit})");
                }
            }
        }
    }
    Ok(())
}

/// Columns padded to their widest cell, header included: one width per column for every line.
/// Columns named in `right` are aligned right (numbers).
fn table(headers: &[&str], right: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0).max(h.len()))
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(headers.iter().zip(&widths))
            .map(|(cell, (h, w))| if right.contains(h) { format!("{cell:>w$}") } else { format!("{cell:<w$}") })
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn stats_table(rows: &[Value]) -> String {
    let headers = ["kind", "queued", "scheduled", "running", "retrying", "dead", "done/min", "failed/min"];
    let fields =
        ["kind", "queued", "scheduled", "running", "retrying", "dead", "processed_last_minute", "failed_last_minute"];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| fields.iter().map(|f| r[f].as_str().map_or_else(|| r[f].to_string(), str::to_owned)).collect())
        .collect();
    table(&headers, &headers[1..], &cells)
}

fn jobs_table(state: JobState, items: &[JobSummary]) -> String {
    let time = |t: Option<DateTime<Utc>>| t.map(crate::pages::format_time).unwrap_or_default();
    let mut headers = vec!["id", "status", "attempts", "created"];
    headers.extend(match state {
        JobState::Queued => vec!["ready since"],
        JobState::Scheduled => vec!["due"],
        JobState::Retrying => vec!["next attempt", "last error"],
        JobState::Running => vec!["worker", "started", "lease deadline"],
        JobState::Succeeded | JobState::Cancelled => vec!["finished"],
    });
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|j| {
            let mut row = vec![
                j.id.clone(),
                j.status.as_str().to_owned(),
                format!("{}/{}", j.attempts, j.max_attempts),
                time(Some(j.created_at)),
            ];
            row.extend(match state {
                JobState::Queued | JobState::Scheduled => vec![time(Some(j.run_at))],
                JobState::Retrying => {
                    vec![time(Some(j.run_at)), j.last_error.clone().unwrap_or_default().chars().take(60).collect()]
                }
                JobState::Running => {
                    vec![j.worker.clone().unwrap_or_default(), time(j.started_at), time(j.lease_deadline)]
                }
                JobState::Succeeded | JobState::Cancelled => vec![time(j.finished_at)],
            });
            row
        })
        .collect();
    table(&headers, &["attempts"], &rows)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_header_and_rows_share_each_column_width() {
        let rows = vec![
            json!({"kind": "otp_sms", "queued": 1_234_567, "scheduled": 0, "running": 3, "retrying": 0, "dead": 12,
                   "processed_last_minute": 52, "failed_last_minute": 1}),
            json!({"kind": "email", "queued": 0, "scheduled": 0, "running": 0, "retrying": 0, "dead": 0,
                   "processed_last_minute": 0, "failed_last_minute": 0}),
        ];
        let text = stats_table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        // Every column ends where its header ends (numbers right-aligned under it).
        let ends = |line: &str| -> Vec<usize> {
            let mut ends = Vec::new();
            let bytes = line.as_bytes();
            for i in 0..bytes.len() {
                if bytes[i] != b' ' && (i + 1 == bytes.len() || bytes[i + 1] == b' ') {
                    ends.push(i);
                }
            }
            ends
        };
        assert_eq!(ends(lines[0])[1..], ends(lines[1])[1..], "{text}");
        assert_eq!(ends(lines[0])[1..], ends(lines[2])[1..], "{text}");
        assert!(lines[1].starts_with("otp_sms  ") && lines[1].contains("1234567"), "{text}");
    }

    #[test]
    fn jobs_columns_line_up_whatever_the_cell_widths() {
        let now = Utc::now();
        let job = |id: &str, error: Option<&str>| JobSummary {
            id: id.into(),
            kind: Kind::Webhook,
            status: jobs::JobStatus::Retrying,
            producer: "shop".into(),
            attempts: 1,
            max_attempts: 10,
            created_at: now,
            run_at: now,
            last_error: error.map(str::to_owned),
            worker: None,
            started_at: None,
            lease_deadline: None,
            finished_at: None,
        };
        let text = jobs_table(JobState::Retrying, &[job("a", Some("HTTP 503")), job("0190-long-id", None)]);
        let lines: Vec<&str> = text.lines().collect();
        let at = |line: &str, what: &str| line.find(what).unwrap();
        assert_eq!(at(lines[0], "status"), at(lines[1], "retrying"));
        assert_eq!(at(lines[1], "retrying"), at(lines[2], "retrying"));
        assert_eq!(at(lines[0], "last error"), at(lines[1], "HTTP 503"));
        assert!(lines[1].contains(&crate::pages::format_time(now)));
    }
}
