//! The `orchard` binary: parses arguments and wires the library's parts together. No logic here.

use clap::{Parser, Subcommand};
use orchard::config::{Config, ServeArgs};
use orchard::{server, web};

#[derive(Parser)]
#[command(
    name = "orchard",
    version,
    about = "Self-hosted Apple device enrollment and management"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the admin UI and the device endpoints over HTTPS.
    Serve(Box<ServeArgs>),
    /// Manage admin accounts and API keys (while `orchard serve` is stopped).
    Admin(web::cli::AdminArgs),
    /// Work with ADE server tokens (`orchard token inspect --key KEY.pem TOKEN.p7m`).
    Token(orchard::ade::token::inspect::TokenArgs),
    /// Try Orchard without an Apple account: a simulated Apple School Manager with Macs.
    Demo(orchard::demo::DemoArgs),
    /// Run a simulator of Apple's services by hand.
    #[command(subcommand)]
    Sim(SimCommand),
}

#[derive(Subcommand)]
enum SimCommand {
    /// Apple's DEP service on plain HTTP; prints the server token it accepts.
    Dep(orchard::sim::dep::SimDepArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = Config::resolve(*args)?;
            server::init_tracing(config.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve(config))
        }
        Command::Admin(args) => Ok(web::cli::run(args)?),
        Command::Token(args) => {
            let now = orchard::clock::Clock::now(&orchard::clock::SystemClock);
            println!("{}", orchard::ade::token::inspect::run_cli(&args, now)?);
            Ok(())
        }
        Command::Sim(SimCommand::Dep(args)) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(orchard::sim::dep::run(args)),
        Command::Demo(args) => {
            server::init_tracing(orchard::config::LogFormat::Human);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(orchard::demo::run(args))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = server::start(config).await?;
    let shutdown = running.shutdown_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        shutdown.trigger();
    });
    running.wait().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
