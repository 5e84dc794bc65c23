use clap::Parser;
use dlq_console::cli::{self, Command};
use jobs::redis_conn::RedisSettings;
use jobs::settings::Env;
use jobs::sms_templates::SmsTemplates;

/// mimalloc: in the profiles glibc malloc/free took 14–17 % of the API's and the worker's CPU
/// (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Jobplane's dead-letter console: pages and JSON API (`serve`, the default), or one command.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Who acts, recorded in the audit log as `console:<operator>` (commands only).
    #[arg(long, global = true, env = "USER", default_value = "cli")]
    operator: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let env = Env::from_process();
    let templates = SmsTemplates::from_env(&env).unwrap_or_else(|e| service::exit_on_bad_setting("dlq-console", &e));
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config =
                dlq_console::Config::from_env(&env).unwrap_or_else(|e| service::exit_on_bad_setting("dlq-console", &e));
            let _traces = service::init_tracing("dlq-console", config.json_logs);
            let listener = tokio::net::TcpListener::bind(config.addr).await.unwrap_or_else(|e| {
                service::exit_on_bad_setting(
                    "dlq-console",
                    &format!("CONSOLE_ADDR: cannot listen on {} ({e})", config.addr),
                )
            });
            dlq_console::run(config, templates, listener, service::shutdown_signal()).await
        }
        command => {
            let redis =
                RedisSettings::from_env(&env).unwrap_or_else(|e| service::exit_on_bad_setting("dlq-console", &e));
            let rate: u32 = env
                .parse("CONSOLE_REPLAY_RATE", 500)
                .unwrap_or_else(|e| service::exit_on_bad_setting("dlq-console", &e));
            let conn = jobs::redis_conn::connect(&redis.topology, cli::REDIS_TIMEOUT)?;
            let keys = jobs::Keys::new(&redis.namespace);
            let retention = jobs::settings::finished_retention(&env)
                .unwrap_or_else(|e| service::exit_on_bad_setting("dlq-console", &e));
            let console = dlq_console::actions::Console {
                control: jobs::control::Control::new(conn.clone(), keys.clone(), retention, cli::REDIS_TIMEOUT),
                dead: jobs::dead::DeadLetters::new(conn.clone(), keys.clone()),
                store: jobs::Store::new(
                    conn.clone(),
                    keys.clone(),
                    std::time::Duration::from_hours(24),
                    cli::REDIS_TIMEOUT,
                ),
                replay_rate: rate.max(1),
                templates,
                pauses: jobs::pause::Pauses::new(conn.clone(), keys.clone()),
                rates: jobs::rate::RateLimits::new(conn.clone(), keys.clone()),
                destinations: jobs::destinations::Destinations::new(conn.clone(), &keys),
                suppressions: jobs::suppression::Suppressions::new(
                    conn.clone(),
                    &keys,
                    jobs::suppression::cap_from_env(&env)
                        .unwrap_or_else(|e| service::exit_on_bad_setting("dlq-console", &e)),
                ),
                fleet: jobs::fleet::Fleet::new(conn, keys),
            };
            if let Err(e) = cli::run(&console, &cli.operator, command).await {
                eprintln!("dlq-console: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
