use clap::{Parser, Subcommand};
use jobs::settings::Env;
use producer_api::Config;

/// mimalloc: in the profiles glibc malloc/free took 14–17 % of the API's and the worker's CPU
/// (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Jobplane's producer API: validates and enqueues jobs.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply the PostgreSQL migrations and exit.
    Migrate,
    /// Print the OpenAPI document (what `/openapi.json` serves) and exit; needs no settings.
    Openapi,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        println!("{}", serde_json::to_string_pretty(producer_api::openapi::document())?);
        return Ok(());
    }
    let env = Env::from_process();
    if let Some(Command::Migrate) = cli.command {
        let url = db::database_url(&env).unwrap_or_else(|e| service::exit_on_bad_setting("producer-api", &e));
        service::init_tracing("producer-api", false);
        db::migrate_url(url.expose()).await?;
        tracing::info!("migrations applied");
        return Ok(());
    }
    let config = Config::from_env(&env).unwrap_or_else(|e| service::exit_on_bad_setting("producer-api", &e));
    let traces = service::init_tracing("producer-api", config.json_logs);
    let listener = tokio::net::TcpListener::bind(config.addr).await.unwrap_or_else(|e| {
        service::exit_on_bad_setting("producer-api", &format!("PRODUCER_ADDR: cannot listen on {} ({e})", config.addr))
    });
    let result = producer_api::run(config, listener, service::shutdown_signal()).await;
    if let Some(provider) = traces {
        let _ = provider.shutdown();
    }
    result
}
