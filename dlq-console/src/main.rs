use jobs::settings::Env;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = dlq_console::Config::from_env(&Env::from_process())
        .unwrap_or_else(|e| service::exit_on_bad_setting("dlq-console", &e));
    service::init_tracing(config.json_logs);
    let listener = tokio::net::TcpListener::bind(config.addr).await.unwrap_or_else(|e| {
        service::exit_on_bad_setting("dlq-console", &format!("CONSOLE_ADDR: cannot listen on {} ({e})", config.addr))
    });
    dlq_console::run(config, listener, service::shutdown_signal()).await
}
