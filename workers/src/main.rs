use clap::Parser;
use jobs::settings::Env;

/// mimalloc: in the profiles glibc malloc/free took 14–17 % of the API's and the worker's CPU
/// (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Jobplane's worker: processes jobs; run as many copies as you like.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Comma-separated kinds to consume (otp_sms, email, webhook, audit_log); overrides WORKER_KINDS.
    #[arg(long)]
    kinds: Option<String>,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let config = workers::Config::from_env(&Env::from_process(), cli.kinds.as_deref())
        .unwrap_or_else(|e| service::exit_on_bad_setting("worker", &e));
    let traces = service::init_tracing("worker", config.json_logs);
    let result = workers::run(config, service::shutdown_signal()).await;
    if let Some(provider) = traces {
        let _ = provider.shutdown();
    }
    if let Err(e) = result {
        // A bad provider setting is found while starting: one line naming it, like the others.
        if let Some(setting) = e.downcast_ref::<jobs::settings::SettingError>() {
            service::exit_on_bad_setting("worker", setting);
        }
        tracing::error!(error = format!("{e:#}"), "worker failed");
        eprintln!("worker: {e:#}");
        std::process::exit(1);
    }
}
