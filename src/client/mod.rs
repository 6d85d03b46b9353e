//! The worker client: connects to a supervisor, runs the tasks it assigns while the machine is
//! idle, and reports back.
//!
//! `engine` owns the connection, the replicas' life and the reaction to the owner; `executor`
//! runs kernels on low-priority OS threads; `outbox` keeps finished outcomes until the
//! supervisor acknowledges them; `transfer` moves big payloads over HTTP; `datadir` is what the
//! worker keeps between runs (its id, the outbox, a lock); `activity` watches input and other
//! processes from threads of its own; `idle` decides (purely) when the machine counts as idle;
//! `settings` reads the settings file; `hardware` describes the machine. Nothing here draws (the
//! window comes with feature `gui`).

pub mod activity;
pub mod contention;
pub(crate) mod contribution;
mod datadir;
mod engine;
mod executor;
pub mod hardware;
pub mod idle;
pub mod localtime;
mod outbox;
pub mod saverfeed;
pub mod schedule;
pub mod settings;
pub mod snapshot;
mod transfer;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use datadir::{DataDir, default_path as default_data_dir};
pub use engine::{Engine, MAX_RECONNECT_WAIT, MAX_REFUSED_WAIT, TOKEN_FILE_NAME};
pub use snapshot::{EngineHandle, Snapshot, UiCommand};

use crate::proto::WorkerId;
use activity::SourceFactory;
use idle::IdleConfig;

/// How the worker watches its machine.
/// How often a scripted owner is looked at: well under the heartbeat of a test pool.
const SCRIPTED_POLL: Duration = Duration::from_millis(20);

pub struct Watch {
    pub idle: IdleConfig,
    /// Built in their own threads: see [`activity::Monitor`].
    pub sources: Vec<SourceFactory>,
    /// Whether to look at the battery.
    pub power: bool,
    /// Set by the engine while a task computes: the input source then polls at its full rate.
    pub pace: activity::Pace,
}

impl Watch {
    /// Compute whatever the owner does: no sources, no battery check. For machines that are
    /// dedicated to the pool (and for the demo and benchmarks).
    pub fn always() -> Self {
        Self {
            idle: IdleConfig {
                run_while_in_use: true,
                run_on_battery: true,
                ..IdleConfig::default()
            },
            sources: Vec::new(),
            power: false,
            pace: activity::Pace::default(),
        }
    }

    /// An owner who follows a script ([`activity::scripted::read_spells`]), for benchmarks of a
    /// pool on one machine: only the script is watched (not input, other processes or the
    /// battery, which would see the other workers' tasks as an owner), and the machine computes
    /// again `idle_after` after each spell, as with a real owner.
    pub fn scripted(spells: Vec<activity::scripted::Spell>, idle_after: Duration) -> Self {
        Self {
            idle: IdleConfig {
                idle_after,
                run_while_in_use: false,
                run_on_battery: true,
            },
            sources: vec![activity::scripted::spells_factory(spells, SCRIPTED_POLL)],
            power: false,
            pace: activity::Pace::default(),
        }
    }

    /// What the settings ask for: input (where built with feature `input`), other processes'
    /// CPU and full-screen windows (`pause_on_fullscreen`, feature `input`), unless the machine
    /// may be used while the worker computes; and whatever the machine is used for, the
    /// schedule, the exclusive programs and the temperature limit when the settings set them.
    pub fn from_settings(s: &settings::Settings) -> Self {
        let mut sources: Vec<SourceFactory> = Vec::new();
        let pace = activity::Pace::default();
        if !s.run_while_in_use {
            #[cfg(feature = "input")]
            sources.push(activity::input::factory(s.input_poll, Some(pace.clone())));
            sources.push(activity::process::factory(
                activity::process::ProcessConfig {
                    threshold_percent: s.process_threshold_percent,
                    sustain: s.process_sustain,
                    ..activity::process::ProcessConfig::default()
                },
            ));
            // The idle policy ignores a full-screen window under `run_while_in_use` anyway;
            // not watching saves the polls.
            #[cfg(feature = "input")]
            if s.pause_on_fullscreen {
                sources.push(activity::fullscreen::factory());
            }
        }
        if !s.schedule.is_always() {
            sources.push(activity::schedule::factory(s.schedule.clone()));
        }
        if !s.exclusive_programs.is_empty() {
            sources.push(activity::exclusive::factory(s.exclusive_programs.clone()));
        }
        if let Some(limit) = s.temperature_limit_c {
            sources.push(activity::thermal::factory(limit as f32));
        }
        Self {
            idle: s.idle_config(),
            sources,
            power: !s.run_on_battery,
            pace,
        }
    }
}

/// How a worker connects and what it offers.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The supervisor's worker endpoint, `ws://HOST:PORT/worker` or `wss://`; `None` on a first
    /// run, until the volunteer configures one ([`UiCommand::Configure`]).
    pub server: Option<String>,
    /// A PEM file of CA certificates trusted for a `wss://` server besides the public roots
    /// (a pool's private CA); its bulk transfers over `https://` trust the same.
    pub ca_file: Option<PathBuf>,
    pub token: String,
    /// Shown to operators.
    pub name: String,
    pub worker_id: WorkerId,
    /// Tasks run at once.
    pub slots: u32,
    /// Where the worker keeps its id and unacknowledged outcomes; `None` keeps outcomes in
    /// memory only (in-process tests and benches).
    pub data_dir: Option<DataDir>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("data dir {}: {reason}", dir.display())]
    DataDir { dir: PathBuf, reason: String },
    #[error("invalid server URL {url:?}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("cannot start task threads: {0}")]
    Threads(std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot set up HTTP transfers: {0}")]
    Http(reqwest::Error),
}

/// Checks that `url` is a WebSocket URL, plain or TLS.
pub fn check_server_url(url: &str) -> Result<(), ClientError> {
    let bad = |reason| {
        Err(ClientError::BadUrl {
            url: url.to_owned(),
            reason,
        })
    };
    let Some(rest) = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
    else {
        return bad("it must start with ws:// or wss://, e.g. ws://127.0.0.1:7400/worker");
    };
    if rest.is_empty() || rest.starts_with('/') {
        return bad("it names no host");
    }
    Ok(())
}

/// A new worker id: the host name (made safe) and random digits, so that two workers on one
/// machine never collide. A client with a data dir makes one once and keeps it there.
pub fn new_worker_id(name: &str) -> WorkerId {
    let base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    let suffix: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let base = if base.is_empty() {
        "worker".to_owned()
    } else {
        base
    };
    WorkerId(format!("{base}-{suffix}"))
}

/// Lets this worker run the `abort` fault kernel, which kills its process (`--fault-kernels`,
/// for fault tests of a pool only).
pub fn enable_fault_kernels() {
    crate::runtime::set_fault_kernels(true);
    tracing::warn!("fault kernels enabled: an `abort` task will kill this worker process");
}

/// Makes this worker report a forged output for every task (`--lie-outputs`, for tests of the
/// supervisor's result validation only).
pub fn enable_lying() {
    executor::set_lie_outputs(true);
    tracing::warn!("lying enabled: every output this worker reports is forged");
}

/// The machine's host name, or "worker".
pub fn host_name() -> String {
    sysinfo::System::host_name().unwrap_or_else(|_| "worker".to_owned())
}

/// Runs a headless worker until `shutdown` resolves.
pub async fn run(
    cfg: ClientConfig,
    watch: Watch,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ClientError> {
    build(cfg, watch).await?.run(shutdown).await
}

/// Prepares a worker (hardware detection, task threads, activity sources) without connecting
/// yet, so that a caller can watch its [`Engine::handle`] from the start.
pub async fn build(cfg: ClientConfig, watch: Watch) -> Result<Engine, ClientError> {
    if let Some(server) = &cfg.server {
        check_server_url(server)?;
    }
    let slots = cfg.slots;
    let hw = tokio::task::spawn_blocking(move || hardware::detect(slots, &std::env::temp_dir()))
        .await
        .unwrap_or_else(|_| crate::proto::Hardware {
            cores: 1,
            memory_mb: 0,
            disk_mb: 0,
            os: std::env::consts::OS.to_owned(),
            slots,
            bench_mops: 0.0,
        });
    Engine::new(cfg, hw, watch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_are_safe_and_distinct() {
        let a = new_worker_id("my host.example");
        let b = new_worker_id("my host.example");
        assert_ne!(a, b);
        assert!(a.0.starts_with("my-host-example-"), "{a}");
        assert!(
            a.0.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[tokio::test]
    async fn the_settings_conditions_get_their_sources_even_when_the_machine_may_be_used() {
        let s = settings::Settings {
            run_while_in_use: true,
            schedule: schedule::Schedule::parse(&["mon-fri 18:00-08:00"]).unwrap(),
            exclusive_programs: vec!["blender".to_owned()],
            temperature_limit_c: Some(90.0),
            ..settings::Settings::default()
        };
        let watch = Watch::from_settings(&s);
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (_monitor, report) = activity::Monitor::start(watch.sources, tx);
        let mut names = report.running.clone();
        names.extend(
            report
                .failed
                .iter()
                .map(|(which, e)| format!("{which}: {e}")),
        );
        // Input, processes and full-screen windows are not watched: the owner may use it.
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names.contains(&"schedule (mon-fri 18:00-08:00)".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"exclusive programs (blender)".to_owned()),
            "{names:?}"
        );
        // This machine may have no sensor: then the source says so, by its name.
        assert!(
            names.iter().any(|n| n.starts_with("temperature (")
                || n.starts_with("thermal: no temperature sensor")),
            "{names:?}"
        );

        // Nothing configured, machine may be used: no source at all.
        let none = Watch::from_settings(&settings::Settings {
            run_while_in_use: true,
            ..settings::Settings::default()
        });
        assert!(none.sources.is_empty());
        // The default settings watch input (with feature `input`), processes and, with
        // `input`, full-screen windows.
        let defaults = Watch::from_settings(&settings::Settings::default());
        let expected = if cfg!(feature = "input") { 3 } else { 1 };
        assert_eq!(defaults.sources.len(), expected);
        let no_fullscreen = Watch::from_settings(&settings::Settings {
            pause_on_fullscreen: false,
            ..settings::Settings::default()
        });
        assert_eq!(no_fullscreen.sources.len(), expected.min(2));
    }

    #[test]
    fn server_urls_must_be_websocket_urls() {
        assert!(check_server_url("ws://127.0.0.1:7400/worker").is_ok());
        assert!(check_server_url("wss://grid.example/worker").is_ok());
        assert!(check_server_url("wss://").is_err());
        let err = check_server_url("http://127.0.0.1:7400")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http://127.0.0.1:7400") && err.contains("ws://"),
            "{err}"
        );
        assert!(check_server_url("ws://").is_err());
    }
}
