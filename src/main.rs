//! `idlegrid`: the volunteer's client. `--headless` runs it without a window (servers, tests, CI).
//! Parses the command line and calls into the library.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;

use idlegrid::{client, supervisor};

#[derive(Parser)]
#[command(
    name = "idlegrid",
    version,
    about = "Lends this computer's idle time to an idlegrid pool."
)]
struct Cli {
    /// Run without a window.
    #[arg(long)]
    headless: bool,
    /// The supervisor's worker endpoint, ws://HOST:PORT/worker.
    #[arg(long)]
    server: Option<String>,
    /// File holding the worker token the supervisor's operator gave you.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Name shown to the pool's operators (default: this machine's host name).
    #[arg(long)]
    name: Option<String>,
    /// Tasks to run at once (default: one per logical CPU).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    cpus: Option<u32>,
}

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if !cli.headless {
        bail!(
            "the desktop window is not part of this build yet; run `idlegrid --headless --server ws://HOST:PORT/worker --token-file FILE`"
        );
    }
    let Some(server) = cli.server else {
        bail!(
            "--server is required: the supervisor's worker endpoint, e.g. ws://127.0.0.1:7400/worker"
        );
    };
    let Some(token_file) = cli.token_file else {
        bail!(
            "--token-file is required: the file holding the worker token (the supervisor's DATA_DIR/worker.token)"
        );
    };
    client::check_server_url(&server)?;
    let token = supervisor::read_token(&token_file)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let name = cli.name.unwrap_or_else(client::host_name);
    let cfg = client::ClientConfig {
        server,
        token,
        worker_id: client::new_worker_id(&name),
        name,
        slots: cli.cpus.unwrap_or(cores),
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(client::run(cfg, idlegrid::shutdown_signal()))?;
    Ok(())
}
