//! `idlegrid`: the volunteer's client. `--headless` runs it without a window (servers, tests, CI);
//! `idlegrid bench ...` measures it. Parses the command line and calls into the library.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use idlegrid::client::{self, settings};
use idlegrid::{bench, supervisor};

#[derive(Parser)]
#[command(
    name = "idlegrid",
    version,
    about = "Lends this computer's idle time to an idlegrid pool, and steps aside the moment you are back."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Run without a window.
    #[arg(long)]
    headless: bool,
    /// The supervisor's worker endpoint, ws://HOST:PORT/worker or wss://HOST:PORT/worker
    /// (default: from the settings file).
    #[arg(long)]
    server: Option<String>,
    /// Trust the CA certificates in this PEM file (the pool's private CA) for a wss:// server,
    /// besides the public roots (default: from the settings file).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// File holding the worker token the pool's operator gave you (default: from the settings file).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Name shown to the pool's operators (default: this machine's host name).
    #[arg(long)]
    name: Option<String>,
    /// Tasks to run at once (default: from the settings file, else one per logical CPU).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    cpus: Option<u32>,
    /// Settings file (default: settings.toml in this system's config directory for idlegrid).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Compute even while the machine is in use (for machines dedicated to the pool).
    #[arg(long)]
    run_while_in_use: bool,
    /// Where this worker keeps its id and its finished work until the supervisor has it; one
    /// client per dir (default: this system's data directory for idlegrid).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Owner activity from a script instead of this machine's input and processes (benchmarks of
    /// a pool on one machine): lines `at_ms,busy` / `at_ms,idle`, ms since the Unix epoch, in time
    /// order. The quiet period after a spell is the settings' `idle_after_secs`.
    #[arg(
        long,
        hide = true,
        value_name = "FILE",
        conflicts_with = "run_while_in_use"
    )]
    scripted_activity: Option<PathBuf>,
    /// Run the `abort` fault kernel, which kills this worker process (fault tests of a pool only).
    #[arg(long, hide = true)]
    fault_kernels: bool,
    /// Report a forged output for every task (tests of the supervisor's result validation only).
    #[arg(long, hide = true)]
    lie_outputs: bool,
    /// Start in the tray with the window closed (for a session's autostart).
    #[arg(long, conflicts_with = "headless")]
    hidden: bool,
    /// The window's first page: status, settings or welcome (screenshots).
    #[cfg(feature = "gui")]
    #[arg(long, hide = true, value_name = "PAGE")]
    page: Option<idlegrid::gui::Page>,
    /// Write the number of frames the window has drawn to FILE, every 250 ms (benchmarks).
    #[arg(long, hide = true, value_name = "FILE")]
    count_frames: Option<PathBuf>,
    /// Show the work of the client running on this machine full screen (read from its data
    /// dir) until a key, a click or a pointer move. As an xscreensaver hack:
    /// `idlegrid --screensaver-hack [-root]` (see the README).
    #[cfg(feature = "gui")]
    #[arg(long, conflicts_with = "headless")]
    screensaver: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the client: prints figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Latency from owner input to the local pause and to the supervisor hearing of it.
    Activity(bench::activity::ActivityArgs),
    /// CPU and memory of an idle client watching input.
    Footprint(bench::footprint::FootprintArgs),
    /// How much the client computing slows the owner's programs.
    Interference(bench::interference::InterferenceArgs),
}

fn main() -> std::process::ExitCode {
    idlegrid::tls::install_process_provider();
    // xscreensaver's hack arguments (`-root`, `-window-id ID`) are not GNU-style: read them here.
    #[cfg(all(feature = "gui", unix))]
    {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.first().map(String::as_str) == Some("--screensaver-hack") {
            idlegrid::init_logging("warn");
            return match screensaver_hack(&args[1..]) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
    }
    // Windows starts a screensaver as `NAME.scr /s`, `/c[:HWND]` or `/p HWND`.
    #[cfg(feature = "gui")]
    if let Some(mode) = windows_screensaver_mode() {
        idlegrid::init_logging("warn");
        let outcome = mode
            .map_err(anyhow::Error::msg)
            .and_then(run_windows_screensaver);
        return match outcome {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    let default_level = if cli.command.is_some() {
        "error"
    } else {
        "info"
    };
    idlegrid::init_logging(default_level);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Draws the running client's work into xscreensaver's window (`XSCREENSAVER_WINDOW`), the
/// root window (`-root`) or a window of its own, until SIGTERM.
#[cfg(all(feature = "gui", unix))]
fn screensaver_hack(args: &[String]) -> anyhow::Result<()> {
    use idlegrid::gui::screensaver::xhack;
    let target =
        xhack::XTarget::from_args(args, std::env::var("XSCREENSAVER_WINDOW").ok().as_deref())?;
    let Some(data_dir) = client::default_data_dir() else {
        bail!("this system names no data directory for idlegrid");
    };
    xhack::run_xhack(target, &data_dir)?;
    Ok(())
}

/// The screensaver mode, when this program was started as a screensaver (`*.scr`).
#[cfg(feature = "gui")]
fn windows_screensaver_mode() -> Option<Result<idlegrid::gui::screensaver::WindowsMode, String>> {
    let mut args = std::env::args_os();
    let exe = PathBuf::from(args.next()?);
    let is_scr = exe
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("scr"));
    if !is_scr {
        return None;
    }
    let rest: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    Some(idlegrid::gui::screensaver::WindowsMode::parse(&rest))
}

/// `/s`: the work full screen, read from the running client's data dir. `/c`: the client's
/// settings page. `/p HWND`: a preview inside the settings dialog's window, which this build
/// does not draw (it needs the Win32 API); the dialog then shows its own empty preview.
#[cfg(feature = "gui")]
fn run_windows_screensaver(mode: idlegrid::gui::screensaver::WindowsMode) -> anyhow::Result<()> {
    use idlegrid::gui::screensaver::{FeedSource, FullscreenOptions, WindowsMode, run_fullscreen};
    match mode {
        WindowsMode::Fullscreen => {
            let Some(data_dir) = client::default_data_dir() else {
                bail!("this system names no data directory for idlegrid");
            };
            run_fullscreen(FeedSource::DataDir(data_dir), FullscreenOptions::default())
                .map_err(|e| anyhow::anyhow!("cannot open the screensaver window: {e}"))?;
            Ok(())
        }
        WindowsMode::Settings { .. } => run(Cli::parse_from(["idlegrid", "--page", "settings"])),
        WindowsMode::Preview { parent } => {
            eprintln!(
                "idlegrid: no preview drawn into window {parent} (previews are not part of this build)"
            );
            Ok(())
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Before any runtime thread exists: the display must be in the environment first.
    let display = match &cli.command {
        // SAFETY: only the main thread runs yet (tracing's writer spawns no thread).
        Some(Command::Bench(BenchCommand::Activity(_))) => {
            Some(unsafe { bench::activity::private_display() }?)
        }
        _ => None,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        Some(Command::Bench(BenchCommand::Activity(args))) => {
            let display = display.context("no display")?;
            return runtime.block_on(bench::activity::run(args, display));
        }
        Some(Command::Bench(BenchCommand::Footprint(args))) => {
            return runtime.block_on(bench::footprint::run(args));
        }
        Some(Command::Bench(BenchCommand::Interference(args))) => {
            return runtime.block_on(bench::interference::run(args));
        }
        None => {}
    }
    #[cfg(feature = "gui")]
    if cli.screensaver {
        use idlegrid::gui::screensaver::{FeedSource, FullscreenOptions, run_fullscreen};
        let Some(data_dir) = cli.data_dir.clone().or_else(client::default_data_dir) else {
            bail!("this system names no data directory for idlegrid; pass --data-dir DIR");
        };
        let opts = FullscreenOptions {
            fullscreen: true,
            ..FullscreenOptions::default()
        };
        run_fullscreen(FeedSource::DataDir(data_dir), opts)
            .map_err(|e| anyhow::anyhow!("cannot open the screensaver window: {e}"))?;
        return Ok(());
    }
    #[cfg(feature = "gui")]
    if !cli.headless {
        if idlegrid::gui::display_available() {
            return run_desktop(cli, &runtime);
        }
        tracing::warn!(
            "no display to open a window on (DISPLAY, WAYLAND_DISPLAY): running as --headless"
        );
    }
    #[cfg(not(feature = "gui"))]
    if !cli.headless {
        tracing::warn!(
            "this build has no window (built without feature `gui`): running as --headless"
        );
    }
    let (mut settings, from) = settings::load(cli.config.as_deref())?;
    match &from {
        Some(path) => tracing::info!("settings from {}", path.display()),
        None => tracing::info!("no settings file; using defaults"),
    }
    if cli.run_while_in_use {
        settings.run_while_in_use = true;
    }
    let Some(server) = cli.server.or(settings.server.clone()) else {
        bail!(
            "no supervisor given: pass --server ws://HOST:PORT/worker (or wss://) or set `server` in the settings file"
        );
    };
    let Some(token_file) = cli.token_file.or(settings.token_file.clone()) else {
        bail!(
            "no token given: pass --token-file FILE (the supervisor's DATA_DIR/worker.token) or set `token_file` in the settings file"
        );
    };
    client::check_server_url(&server)?;
    let token = supervisor::read_token(&token_file)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let name = cli.name.unwrap_or_else(client::host_name);
    let Some(data_dir) = cli.data_dir.or_else(client::default_data_dir) else {
        bail!("this system names no data directory for idlegrid; pass --data-dir DIR");
    };
    let data = client::DataDir::open(&data_dir, &name)?;
    tracing::info!(worker = %data.worker_id(), "data in {}", data.path().display());
    if cli.fault_kernels {
        idlegrid::client::enable_fault_kernels();
    }
    if cli.lie_outputs {
        idlegrid::client::enable_lying();
    }
    let cfg = client::ClientConfig {
        server: Some(server),
        ca_file: cli.ca_file.or(settings.ca_file.clone()),
        token,
        worker_id: data.worker_id().clone(),
        name,
        slots: cli.cpus.or(settings.cpus).unwrap_or(cores),
        data_dir: Some(data),
    };
    let watch = match &cli.scripted_activity {
        Some(file) => client::Watch::scripted(
            client::activity::scripted::read_spells(file)?,
            settings.idle_after,
        ),
        None => client::Watch::from_settings(&settings),
    };
    let engine = runtime
        .block_on(client::build(cfg, watch))?
        .with_settings(settings, from);
    runtime.block_on(engine.run(idlegrid::shutdown_signal()))?;
    Ok(())
}

/// The engine with the window and the tray. The supervisor may still be unknown (first run):
/// the window's welcome page then asks for it.
#[cfg(feature = "gui")]
fn run_desktop(cli: Cli, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    use idlegrid::gui;
    // A named settings file that does not exist yet is where the welcome page will save.
    let (mut settings, from) = match &cli.config {
        Some(path) if !path.exists() => (settings::Settings::default(), None),
        _ => settings::load(cli.config.as_deref())?,
    };
    if cli.run_while_in_use {
        settings.run_while_in_use = true;
    }
    let settings_path = from.or(cli.config.clone()).or_else(settings::default_path);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let name = cli.name.unwrap_or_else(client::host_name);
    let Some(data_dir) = cli.data_dir.or_else(client::default_data_dir) else {
        bail!("this system names no data directory for idlegrid; pass --data-dir DIR");
    };
    let slots = cli.cpus.or(settings.cpus).unwrap_or(cores);
    let server = cli.server.or(settings.server.clone());
    let token_file = cli.token_file.or(settings.token_file.clone());
    let (server, token) = match (server, token_file) {
        (Some(server), Some(token_file)) => {
            client::check_server_url(&server)?;
            (Some(server), supervisor::read_token(&token_file)?)
        }
        _ => {
            tracing::info!("no supervisor configured yet: the window asks for one");
            (None, String::new())
        }
    };
    let data = client::DataDir::open(&data_dir, &name)?;
    tracing::info!(worker = %data.worker_id(), "data in {}", data.path().display());
    let config = client::ClientConfig {
        server,
        ca_file: cli.ca_file.or(settings.ca_file.clone()),
        token,
        worker_id: data.worker_id().clone(),
        name,
        slots,
        data_dir: Some(data),
    };
    let launch = gui::Launch {
        watch: client::Watch::from_settings(&settings),
        settings,
        settings_path,
        config,
    };
    let (engine, ended) = gui::start_engine(runtime.handle(), launch)?;
    let options = gui::Options {
        page: cli.page,
        hidden: cli.hidden,
        count_frames: cli.count_frames,
    };
    if let Err(e) = gui::run(runtime.handle(), engine, options) {
        // The engine carries on without a window, as --headless would, until a signal.
        tracing::error!("{e}; carrying on without a window");
    }
    runtime
        .block_on(ended)
        .context("the engine stopped abnormally")?;
    Ok(())
}
