//! PostgreSQL, for the processes that use it (the producer API reads `audit_logs`, workers
//! write `audit_logs` and `sms_deliveries`): bounded pools, and the migrations under
//! `migrations/`, which every such process applies at start (sqlx takes an advisory lock, so
//! several processes starting at once apply each migration once). The console and the `jobs`
//! crate know nothing of PostgreSQL.

use std::str::FromStr as _;
use std::time::Duration;

use jobs::settings::{Env, SecretUrl, SettingError};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor as _, PgPool};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The longest a caller waits for a connection from a pool, connecting included.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest one statement may run on the server (`statement_timeout`, set on every
/// connection of [`pool`]): the audit-log query and the writers' batch inserts take
/// milliseconds, so a statement still running after this is stuck (a lock held elsewhere, a
/// server in trouble) and fails with SQLSTATE 57014, which callers treat as "PostgreSQL
/// unavailable, try again" rather than waiting forever.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a caller waits for one query's answer, on its own clock: the server's
/// [`STATEMENT_TIMEOUT`] plus a margin, for when the server (or the network to it) stops
/// answering at all and the statement timeout never comes back.
pub const QUERY_DEADLINE: Duration = Duration::from_secs(STATEMENT_TIMEOUT.as_secs() + 5);

/// The error of a query that got no answer within [`QUERY_DEADLINE`]: an I/O time-out, which
/// callers treat as PostgreSQL being unavailable.
pub fn no_answer() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "PostgreSQL did not answer in time"))
}

/// Whether `url` is a PostgreSQL URL a pool can be made from (the error never shows its password).
pub fn check_url(url: &str) -> Result<(), sqlx::Error> {
    PgConnectOptions::from_str(url).map(|_| ())
}

/// `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/jobs`), parsed at start, so a
/// malformed one stops the process naming it (without its password) rather than surfacing at
/// the first query, or in a migration loop that warns for ever.
pub fn database_url(env: &Env) -> Result<SecretUrl, SettingError> {
    let url = env.or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/jobs");
    check_url(&url).map_err(|e| SettingError::new("DATABASE_URL", e.to_string()))?;
    Ok(SecretUrl::new(url))
}

/// A pool that connects on first use, with a bounded wait for a connection
/// ([`ACQUIRE_TIMEOUT`]) and a bounded run of every statement ([`STATEMENT_TIMEOUT`]).
pub fn pool(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let statement_timeout = format!("SET statement_timeout = {}", STATEMENT_TIMEOUT.as_millis());
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _| {
            let sql = statement_timeout.clone();
            Box::pin(async move { conn.execute(sql.as_str()).await.map(|_| ()) })
        })
        .connect_lazy_with(PgConnectOptions::from_str(url)?))
}

/// A pool for [`migrate`] only: no statement timeout, because a migration may rightly run long
/// and sqlx's advisory lock waits while another process migrates.
pub fn migration_pool(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new().max_connections(max_connections).acquire_timeout(ACQUIRE_TIMEOUT).connect_lazy(url)
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Why the migrations were not applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("DATABASE_URL")]
    Url(#[source] sqlx::Error),
    #[error("applying migrations")]
    Apply(#[source] sqlx::migrate::MigrateError),
}

/// Applies the migrations once (the `migrate` subcommand, compose's migrate step), on a pool of
/// its own that is closed before returning.
pub async fn migrate_url(database_url: &str) -> Result<(), MigrationError> {
    let pool = migration_pool(database_url, 2).map_err(MigrationError::Url)?;
    let applied = migrate(&pool).await.map_err(MigrationError::Apply);
    pool.close().await;
    applied
}

/// Applies the migrations in the background, retrying every 5 s until PostgreSQL answers,
/// for processes whose main duty does not wait on PostgreSQL.
pub async fn migrate_until_done(database_url: String) {
    loop {
        match migrate_url(&database_url).await {
            Ok(()) => {
                tracing::info!("migrations applied");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %chain(&e), "migrations not applied yet; retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// `e` and its causes on one line, `outer: inner: innermost`, as anyhow's `{:#}` prints them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs the PostgreSQL of `DATABASE_URL` (the test environment's); skipped without it.
    #[tokio::test]
    async fn every_connection_of_a_pool_bounds_its_statements() {
        let Ok(url) = std::env::var("DATABASE_URL") else { return };
        let pool = pool(&url, 1).unwrap();
        let shown: String = sqlx::query_scalar("SHOW statement_timeout").fetch_one(&pool).await.unwrap();
        assert_eq!(shown, "10s");
        let migrations = migration_pool(&url, 1).unwrap();
        let shown: String = sqlx::query_scalar("SHOW statement_timeout").fetch_one(&migrations).await.unwrap();
        assert_eq!(shown, "0");
    }

    #[test]
    fn a_migration_error_names_the_setting_and_keeps_its_cause() {
        let error = MigrationError::Url(check_url("postgres://u:s3cretpw@host:notaport/db").unwrap_err());
        let line = chain(&error);
        assert!(line.starts_with("DATABASE_URL: "), "{line}");
        assert!(line.len() > "DATABASE_URL: ".len(), "{line}");
        assert!(!line.contains("s3cretpw"), "{line}");
    }

    #[test]
    fn a_bad_url_is_refused_without_its_password() {
        for url in ["postgres://u:s3cretpw@host:notaport/db", "postgres://u:s3cretpw@host/db?sslmode=bogus", "s3cretpw"]
        {
            let error = pool(url, 1).unwrap_err().to_string();
            assert!(!error.contains("s3cretpw"), "{error}");
        }
    }
}
