//! The client's settings file: where it lives, what it may say, and what it means.
//!
//! The file is TOML, at `settings.toml` in the OS config directory ([`default_path`]) unless the
//! user names another with `--config`. [`load`] reads it and [`parse`] checks every value, so the
//! rest of the client gets a [`Settings`] it can trust. A mistake is refused with the file, the
//! key, the value and what is allowed, never silently replaced by a default: a volunteer who
//! wrote `idle_after_secs = 600` must not get three minutes because of a typo elsewhere.
//!
//! ```toml
//! idle_after_secs = 180                # float, 0.1 ..= 86400
//! cpus = 4                             # 1 ..= 4096; absent = one per logical CPU
//! run_while_in_use = false
//! run_on_battery = false
//! input_poll_ms = 10                   # integer, 1 ..= 1000
//! process_threshold_percent = 25       # CPU of other processes, percent of one core, 1 ..= 100000
//! process_sustain_secs = 3             # float, 0.5 ..= 600
//! server = "ws://host:7400/worker"     # optional
//! token_file = "worker.token"          # optional; relative to the settings file's directory
//! ca_file = "pool-ca.pem"              # optional, for wss://; relative to the settings file's directory
//! cpu_cap_percent = 100                # share of each core's time tasks may use, 1 ..= 100
//! schedule = ["mon-fri 18:00-08:00", "sat,sun 00:00-24:00"]   # absent or [] = always
//! exclusive_programs = ["blender"]     # pause while any of these processes runs
//! temperature_limit_c = 85             # optional, 40 ..= 105; resume 5 °C below
//! pause_on_fullscreen = true
//! screensaver = false                  # show the screensaver view when the machine goes idle
//! step_aside = true                    # rest within ms whenever another program wants a CPU
//! ```
//!
//! The settings page edits the same values through [`SettingsForm`], whose
//! [`SettingsForm::check`] applies the very rules [`parse`] does (both go through one function
//! per key), so the page and the file can never disagree about what is allowed.
//!
//! Unknown keys are errors, because a misspelt key would otherwise be ignored without a word.
//! The file is written only by [`save`] (the engine, when the settings window applies a change),
//! and nothing but the settings file itself is read here: the token file is only located.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Spanned, Value};

use crate::client::ClientError;
use crate::client::idle::IdleConfig;
use crate::client::schedule::{Schedule, Window};
use crate::client::snapshot::FieldError;
use crate::job::{Position, position_in, read_capped};

/// What the client is allowed to do, as read from the settings file.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Owner inactivity before tasks run.
    pub idle_after: Duration,
    /// Tasks run at once; `None` means one per logical CPU.
    pub cpus: Option<u32>,
    pub run_while_in_use: bool,
    pub run_on_battery: bool,
    /// How often keyboard and mouse are sampled.
    pub input_poll: Duration,
    /// CPU use by other processes, in percent of one core, that counts as the owner working.
    pub process_threshold_percent: f64,
    /// How long other processes must stay above the threshold to count.
    pub process_sustain: Duration,
    /// The supervisor's worker endpoint, `ws://HOST:PORT/worker`.
    pub server: Option<String>,
    /// The file holding this worker's token, resolved against the settings file's directory.
    pub token_file: Option<PathBuf>,
    /// A PEM file of CA certificates trusted for a `wss://` server besides the public roots,
    /// resolved against the settings file's directory.
    pub ca_file: Option<PathBuf>,
    /// The share of each core's time that tasks may use, in percent (100 = no cap).
    pub cpu_cap_percent: u32,
    /// When computing is allowed; empty = always.
    pub schedule: Schedule,
    /// Pause while any of these programs (process names) runs.
    pub exclusive_programs: Vec<String>,
    /// Pause above this CPU temperature, in °C, until it falls 5 °C below; `None` = no limit.
    pub temperature_limit_c: Option<f64>,
    /// Pause while the focused window is full screen.
    pub pause_on_fullscreen: bool,
    /// Show the screensaver view when the machine goes idle.
    pub screensaver: bool,
    /// Tasks rest within milliseconds whenever another program wants a CPU
    /// (`client::contention`); ignored under `run_while_in_use`.
    pub step_aside: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            idle_after: IdleConfig::default().idle_after,
            cpus: None,
            run_while_in_use: false,
            run_on_battery: false,
            input_poll: Duration::from_millis(10),
            process_threshold_percent: 25.0,
            process_sustain: Duration::from_secs(3),
            server: None,
            token_file: None,
            ca_file: None,
            cpu_cap_percent: 100,
            schedule: Schedule::always(),
            exclusive_programs: Vec::new(),
            temperature_limit_c: None,
            pause_on_fullscreen: true,
            screensaver: false,
            step_aside: true,
        }
    }
}

// The keys, public so that a settings page can put a [`FieldError`] beside its field.
pub const IDLE_AFTER_SECS: &str = "idle_after_secs";
pub const CPUS: &str = "cpus";
pub const RUN_WHILE_IN_USE: &str = "run_while_in_use";
pub const RUN_ON_BATTERY: &str = "run_on_battery";
pub const INPUT_POLL_MS: &str = "input_poll_ms";
pub const PROCESS_THRESHOLD_PERCENT: &str = "process_threshold_percent";
pub const PROCESS_SUSTAIN_SECS: &str = "process_sustain_secs";
pub const SERVER: &str = "server";
pub const TOKEN_FILE: &str = "token_file";
pub const CA_FILE: &str = "ca_file";
pub const CPU_CAP_PERCENT: &str = "cpu_cap_percent";
pub const SCHEDULE: &str = "schedule";
pub const EXCLUSIVE_PROGRAMS: &str = "exclusive_programs";
pub const TEMPERATURE_LIMIT_C: &str = "temperature_limit_c";
pub const PAUSE_ON_FULLSCREEN: &str = "pause_on_fullscreen";
pub const SCREENSAVER: &str = "screensaver";
pub const STEP_ASIDE: &str = "step_aside";

/// Every key, in the order [`Settings::to_toml`] writes them.
pub const KEYS: [&str; 17] = [
    IDLE_AFTER_SECS,
    CPUS,
    RUN_WHILE_IN_USE,
    RUN_ON_BATTERY,
    INPUT_POLL_MS,
    PROCESS_THRESHOLD_PERCENT,
    PROCESS_SUSTAIN_SECS,
    SERVER,
    TOKEN_FILE,
    CA_FILE,
    CPU_CAP_PERCENT,
    SCHEDULE,
    EXCLUSIVE_PROGRAMS,
    TEMPERATURE_LIMIT_C,
    PAUSE_ON_FULLSCREEN,
    SCREENSAVER,
    STEP_ASIDE,
];

const IDLE_AFTER_RANGE: RangeInclusive<f64> = 0.1..=86_400.0;
const CPUS_RANGE: RangeInclusive<i64> = 1..=4096;
const INPUT_POLL_RANGE: RangeInclusive<i64> = 1..=1000;
const PROCESS_THRESHOLD_RANGE: RangeInclusive<f64> = 1.0..=100_000.0;
const PROCESS_SUSTAIN_RANGE: RangeInclusive<f64> = 0.5..=600.0;
const CPU_CAP_RANGE: RangeInclusive<i64> = 1..=100;
const TEMPERATURE_RANGE: RangeInclusive<f64> = 40.0..=105.0;
/// Enough for any real list; the bound keeps a pasted process table from costing every poll.
const MAX_EXCLUSIVE_PROGRAMS: usize = 64;

/// A settings file is a few hundred bytes; the cap keeps `--config /dev/zero` from eating memory.
const MAX_SETTINGS_BYTES: u64 = 1 << 20;

impl Settings {
    pub fn idle_config(&self) -> IdleConfig {
        IdleConfig {
            idle_after: self.idle_after,
            run_while_in_use: self.run_while_in_use,
            run_on_battery: self.run_on_battery,
        }
    }

    /// The settings as a file [`parse`] reads back to the same value, every key with a comment.
    /// Absent optional keys are written commented out, so the file shows what could be set.
    ///
    /// Two things do not survive the trip: `input_poll` is written in whole milliseconds, and a
    /// `token_file` that is not UTF-8 is written lossily; a relative `token_file` is read back
    /// relative to wherever the file is then put.
    pub fn to_toml(&self) -> String {
        let mut out = String::from("# idlegrid client settings. Unknown keys are errors.\n");
        let mut entry = |comment: String, line: String| {
            out.push_str(&format!("\n# {comment}\n{line}\n"));
        };
        let set = |key: &str, value: String| format!("{key} = {value}");
        // An absent optional key is shown commented out, with an example value.
        let optional = |key: &str, value: Option<String>, example: &str| match value {
            Some(value) => set(key, value),
            None => format!("# {key} = {example}"),
        };
        entry(
            format!(
                "Seconds without owner activity before tasks run ({}).",
                allowed(&IDLE_AFTER_RANGE)
            ),
            set(IDLE_AFTER_SECS, number(self.idle_after.as_secs_f64())),
        );
        entry(
            format!(
                "Tasks run at once ({}); absent = one per logical CPU.",
                allowed(&CPUS_RANGE)
            ),
            optional(CPUS, self.cpus.map(|cpus| cpus.to_string()), "4"),
        );
        entry(
            "Compute even while the machine is in use.".to_owned(),
            set(RUN_WHILE_IN_USE, self.run_while_in_use.to_string()),
        );
        entry(
            "Compute on battery power.".to_owned(),
            set(RUN_ON_BATTERY, self.run_on_battery.to_string()),
        );
        entry(
            format!(
                "Milliseconds between keyboard and mouse checks ({}).",
                allowed(&INPUT_POLL_RANGE)
            ),
            set(INPUT_POLL_MS, self.input_poll.as_millis().to_string()),
        );
        entry(
            format!(
                "CPU use of other processes, in percent of one core, that means the machine is in \
                 use ({}).",
                allowed(&PROCESS_THRESHOLD_RANGE)
            ),
            set(
                PROCESS_THRESHOLD_PERCENT,
                number(self.process_threshold_percent),
            ),
        );
        entry(
            format!(
                "Seconds that CPU use must last to count ({}).",
                allowed(&PROCESS_SUSTAIN_RANGE)
            ),
            set(
                PROCESS_SUSTAIN_SECS,
                number(self.process_sustain.as_secs_f64()),
            ),
        );
        entry(
            "The supervisor's worker endpoint.".to_owned(),
            optional(
                SERVER,
                self.server.as_deref().map(toml_string),
                "\"ws://127.0.0.1:7400/worker\"",
            ),
        );
        entry(
            "The file holding this worker's token; relative to this file's directory.".to_owned(),
            optional(
                TOKEN_FILE,
                self.token_file
                    .as_deref()
                    .map(|path| toml_string(&path.to_string_lossy())),
                "\"worker.token\"",
            ),
        );
        entry(
            "For a wss:// supervisor with a private CA: a PEM file of the CA certificates to \
             trust besides the public roots; relative to this file's directory."
                .to_owned(),
            optional(
                CA_FILE,
                self.ca_file
                    .as_deref()
                    .map(|path| toml_string(&path.to_string_lossy())),
                "\"pool-ca.pem\"",
            ),
        );
        entry(
            format!(
                "The share of each core's time tasks may use, in percent ({}).",
                allowed(&CPU_CAP_RANGE)
            ),
            set(CPU_CAP_PERCENT, self.cpu_cap_percent.to_string()),
        );
        entry(
            "When computing is allowed: windows of \"DAYS HH:MM-HH:MM\" (days mon..sun, ranges \
             such as mon-fri, daily, weekdays, weekend); a window ending before it starts runs \
             past midnight; empty = always. E.g. [\"mon-fri 18:00-08:00\", \"sat,sun \
             00:00-24:00\"]."
                .to_owned(),
            set(
                SCHEDULE,
                string_list(self.schedule.windows().iter().map(Window::to_string)),
            ),
        );
        entry(
            "Pause while any of these programs (process names) runs, e.g. [\"blender\"]."
                .to_owned(),
            set(
                EXCLUSIVE_PROGRAMS,
                string_list(self.exclusive_programs.iter().cloned()),
            ),
        );
        entry(
            format!(
                "Pause above this CPU temperature in °C ({}), until it is 5 °C below.",
                allowed(&TEMPERATURE_RANGE)
            ),
            optional(
                TEMPERATURE_LIMIT_C,
                self.temperature_limit_c.map(number),
                "85",
            ),
        );
        entry(
            "Pause while the focused window is full screen (films, games, calls).".to_owned(),
            set(PAUSE_ON_FULLSCREEN, self.pause_on_fullscreen.to_string()),
        );
        entry(
            "Show the screensaver view when the machine goes idle.".to_owned(),
            set(SCREENSAVER, self.screensaver.to_string()),
        );
        entry(
            "Step aside within milliseconds whenever another program wants a CPU.".to_owned(),
            set(STEP_ASIDE, self.step_aside.to_string()),
        );
        out
    }
}

/// `settings.toml` in the OS config directory, or `None` when the OS names no home directory.
pub fn default_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("org", "idlegrid", "idlegrid")
        .map(|dirs| dirs.config_dir().join("settings.toml"))
}

/// Writes `settings` to `path` ([`Settings::to_toml`]) so that a reader sees the old file or the
/// new one, never half of either: a temporary file beside it, flushed to disk, then renamed over
/// it. Creates the directory if needed.
pub fn save(path: &Path, settings: &Settings) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))?;
    tmp.write_all(settings.to_toml().as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Loads settings. With an explicit path, the file must exist. Without one, the default path is
/// used if it exists, else defaults.
///
/// Returns the settings and the path they came from (`None` = built-in defaults).
pub fn load(explicit: Option<&Path>) -> Result<(Settings, Option<PathBuf>), SettingsError> {
    match explicit {
        Some(path) => load_from(path, true),
        None => match default_path() {
            Some(path) => load_from(&path, false),
            None => Ok((Settings::default(), None)),
        },
    }
}

/// Reads `path`; a missing file gives the defaults unless it is `required`.
fn load_from(path: &Path, required: bool) -> Result<(Settings, Option<PathBuf>), SettingsError> {
    let failed = |kind| SettingsError {
        path: Some(path.to_owned()),
        position: None,
        kind,
    };
    // Reading and looking at the error, rather than checking existence first, leaves no gap
    // for the file to appear or vanish in between.
    let bytes = match read_capped(path, MAX_SETTINGS_BYTES) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(failed(SettingsErrorKind::TooLarge)),
        Err(error) if !required && error.kind() == io::ErrorKind::NotFound => {
            return Ok((Settings::default(), None));
        }
        Err(error) => return Err(failed(SettingsErrorKind::Read(error))),
    };
    let text = String::from_utf8(bytes).map_err(|error| SettingsError {
        path: Some(path.to_owned()),
        position: Some(position_in(
            error.as_bytes(),
            error.utf8_error().valid_up_to(),
        )),
        kind: SettingsErrorKind::Toml {
            message: format!("not UTF-8 text: {}", error.utf8_error()),
        },
    })?;
    let base_dir = path.parent().unwrap_or(Path::new(""));
    let settings = parse(&text, base_dir).map_err(|mut error| {
        error.path = Some(path.to_owned());
        error
    })?;
    Ok((settings, Some(path.to_owned())))
}

/// Reads settings text; a relative `token_file` is resolved against `base_dir`. Keys not in the
/// text keep their defaults.
pub fn parse(text: &str, base_dir: &Path) -> Result<Settings, SettingsError> {
    let table: BTreeMap<Spanned<String>, Spanned<Value>> =
        toml::from_str(text).map_err(|error| SettingsError {
            path: None,
            position: error
                .span()
                .map(|span| position_in(text.as_bytes(), span.start)),
            kind: SettingsErrorKind::Toml {
                message: error.message().to_owned(),
            },
        })?;
    // In file order, so that of several mistakes the first one is reported.
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);

    let mut settings = Settings::default();
    for (key, value) in entries {
        let at = key.span().start;
        read_key(&mut settings, key.as_ref(), value.as_ref(), base_dir).map_err(|kind| {
            SettingsError {
                path: None,
                position: Some(position_in(text.as_bytes(), at)),
                kind,
            }
        })?;
    }
    Ok(settings)
}

fn read_key(
    settings: &mut Settings,
    key: &str,
    value: &Value,
    base_dir: &Path,
) -> Result<(), SettingsErrorKind> {
    match key {
        IDLE_AFTER_SECS => {
            settings.idle_after = seconds(float_in(IDLE_AFTER_SECS, value, IDLE_AFTER_RANGE)?);
        }
        CPUS => {
            let cpus = integer_in(CPUS, value, CPUS_RANGE)?;
            settings.cpus = Some(u32::try_from(cpus).map_err(|_| out_of_range(CPUS, value))?);
        }
        RUN_WHILE_IN_USE => settings.run_while_in_use = boolean(RUN_WHILE_IN_USE, value)?,
        RUN_ON_BATTERY => settings.run_on_battery = boolean(RUN_ON_BATTERY, value)?,
        INPUT_POLL_MS => {
            let millis = integer_in(INPUT_POLL_MS, value, INPUT_POLL_RANGE)?;
            let millis = u64::try_from(millis).map_err(|_| out_of_range(INPUT_POLL_MS, value))?;
            settings.input_poll = Duration::from_millis(millis);
        }
        PROCESS_THRESHOLD_PERCENT => {
            settings.process_threshold_percent =
                float_in(PROCESS_THRESHOLD_PERCENT, value, PROCESS_THRESHOLD_RANGE)?;
        }
        PROCESS_SUSTAIN_SECS => {
            let secs = float_in(PROCESS_SUSTAIN_SECS, value, PROCESS_SUSTAIN_RANGE)?;
            settings.process_sustain = seconds(secs);
        }
        SERVER => {
            let url = string(SERVER, value)?;
            // The one URL check the client already makes when it connects, made here too so
            // that a bad URL is reported with the file and the key.
            super::check_server_url(url).map_err(|error| SettingsErrorKind::Invalid {
                key: SERVER,
                value: value.to_string(),
                reason: match error {
                    ClientError::BadUrl { reason, .. } => reason.to_owned(),
                    other => other.to_string(),
                },
            })?;
            settings.server = Some(url.to_owned());
        }
        TOKEN_FILE => {
            let file = string(TOKEN_FILE, value)?;
            if file.is_empty() {
                // Joined to the directory, an empty path would name the directory itself.
                return Err(SettingsErrorKind::Invalid {
                    key: TOKEN_FILE,
                    value: value.to_string(),
                    reason: "it names no file".to_owned(),
                });
            }
            settings.token_file = Some(base_dir.join(file));
        }
        CA_FILE => {
            let file = string(CA_FILE, value)?;
            if file.is_empty() {
                return Err(SettingsErrorKind::Invalid {
                    key: CA_FILE,
                    value: value.to_string(),
                    reason: "it names no file".to_owned(),
                });
            }
            settings.ca_file = Some(base_dir.join(file));
        }
        CPU_CAP_PERCENT => {
            let cap = integer_in(CPU_CAP_PERCENT, value, CPU_CAP_RANGE)?;
            settings.cpu_cap_percent =
                u32::try_from(cap).map_err(|_| out_of_range(CPU_CAP_PERCENT, value))?;
        }
        SCHEDULE => {
            let mut windows = Vec::new();
            for entry in strings(SCHEDULE, value)? {
                let window = Window::parse(entry).map_err(|reason| SettingsErrorKind::Invalid {
                    key: SCHEDULE,
                    value: toml_string(entry),
                    reason,
                })?;
                windows.push(window);
            }
            settings.schedule = Schedule::from_windows(windows);
        }
        EXCLUSIVE_PROGRAMS => {
            let names = strings(EXCLUSIVE_PROGRAMS, value)?;
            if names.len() > MAX_EXCLUSIVE_PROGRAMS {
                return Err(SettingsErrorKind::Invalid {
                    key: EXCLUSIVE_PROGRAMS,
                    value: format!("[{} names]", names.len()),
                    reason: format!("at most {MAX_EXCLUSIVE_PROGRAMS} programs"),
                });
            }
            let mut programs: Vec<String> = Vec::new();
            for name in names {
                let trimmed = name.trim();
                let reason = if trimmed.is_empty() {
                    Some("an empty name matches no program")
                } else if trimmed.contains(['/', '\\']) {
                    Some("give the program's name (e.g. blender), not a path")
                } else if trimmed.contains(',') {
                    Some("a program's name has no comma")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(SettingsErrorKind::Invalid {
                        key: EXCLUSIVE_PROGRAMS,
                        value: toml_string(name),
                        reason: reason.to_owned(),
                    });
                }
                if !programs.iter().any(|p| p == trimmed) {
                    programs.push(trimmed.to_owned());
                }
            }
            settings.exclusive_programs = programs;
        }
        TEMPERATURE_LIMIT_C => {
            settings.temperature_limit_c =
                Some(float_in(TEMPERATURE_LIMIT_C, value, TEMPERATURE_RANGE)?);
        }
        PAUSE_ON_FULLSCREEN => {
            settings.pause_on_fullscreen = boolean(PAUSE_ON_FULLSCREEN, value)?;
        }
        SCREENSAVER => settings.screensaver = boolean(SCREENSAVER, value)?,
        STEP_ASIDE => settings.step_aside = boolean(STEP_ASIDE, value)?,
        unknown => {
            return Err(SettingsErrorKind::UnknownKey {
                key: unknown.to_owned(),
            });
        }
    }
    Ok(())
}

/// The settings page's fields, each as its text box or checkbox holds it: numbers as typed,
/// `cpus` empty for one per CPU, `server`, `token_file` and `temperature_limit_c` empty for
/// none, `schedule` one window per line, `exclusive_programs` separated by commas or lines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SettingsForm {
    pub idle_after_secs: String,
    pub cpus: String,
    pub cpu_cap_percent: String,
    pub run_while_in_use: bool,
    pub run_on_battery: bool,
    pub input_poll_ms: String,
    pub process_threshold_percent: String,
    pub process_sustain_secs: String,
    pub server: String,
    pub token_file: String,
    pub ca_file: String,
    pub schedule: String,
    pub exclusive_programs: String,
    pub temperature_limit_c: String,
    pub pause_on_fullscreen: bool,
    pub screensaver: bool,
    pub step_aside: bool,
}

impl SettingsForm {
    /// The fields showing `s`.
    pub fn from_settings(s: &Settings) -> Self {
        let windows: Vec<String> = s.schedule.windows().iter().map(Window::to_string).collect();
        Self {
            idle_after_secs: number(s.idle_after.as_secs_f64()),
            cpus: s.cpus.map(|c| c.to_string()).unwrap_or_default(),
            cpu_cap_percent: s.cpu_cap_percent.to_string(),
            run_while_in_use: s.run_while_in_use,
            run_on_battery: s.run_on_battery,
            input_poll_ms: s.input_poll.as_millis().to_string(),
            process_threshold_percent: number(s.process_threshold_percent),
            process_sustain_secs: number(s.process_sustain.as_secs_f64()),
            server: s.server.clone().unwrap_or_default(),
            token_file: s
                .token_file
                .as_deref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            ca_file: s
                .ca_file
                .as_deref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            schedule: windows.join("\n"),
            exclusive_programs: s.exclusive_programs.join(", "),
            temperature_limit_c: s.temperature_limit_c.map(number).unwrap_or_default(),
            pause_on_fullscreen: s.pause_on_fullscreen,
            screensaver: s.screensaver,
            step_aside: s.step_aside,
        }
    }

    /// The settings the fields say, checked by the same rules as the settings file (a relative
    /// `token_file` is resolved against `base_dir`, the settings file's directory); or every
    /// field's mistake, each with its key.
    pub fn check(&self, base_dir: &Path) -> Result<Settings, Vec<FieldError>> {
        let text = |t: &str| Value::String(t.trim().to_owned());
        let mut values: Vec<(&'static str, &str, Value)> = vec![
            (
                IDLE_AFTER_SECS,
                &self.idle_after_secs,
                number_value(&self.idle_after_secs),
            ),
            (
                CPU_CAP_PERCENT,
                &self.cpu_cap_percent,
                number_value(&self.cpu_cap_percent),
            ),
            (RUN_WHILE_IN_USE, "", Value::Boolean(self.run_while_in_use)),
            (RUN_ON_BATTERY, "", Value::Boolean(self.run_on_battery)),
            (
                INPUT_POLL_MS,
                &self.input_poll_ms,
                number_value(&self.input_poll_ms),
            ),
            (
                PROCESS_THRESHOLD_PERCENT,
                &self.process_threshold_percent,
                number_value(&self.process_threshold_percent),
            ),
            (
                PROCESS_SUSTAIN_SECS,
                &self.process_sustain_secs,
                number_value(&self.process_sustain_secs),
            ),
            (
                SCHEDULE,
                "",
                Value::Array(
                    self.schedule
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(text)
                        .collect(),
                ),
            ),
            (
                EXCLUSIVE_PROGRAMS,
                "",
                Value::Array(
                    self.exclusive_programs
                        .split([',', '\n'])
                        .filter(|p| !p.trim().is_empty())
                        .map(text)
                        .collect(),
                ),
            ),
            (
                PAUSE_ON_FULLSCREEN,
                "",
                Value::Boolean(self.pause_on_fullscreen),
            ),
            (SCREENSAVER, "", Value::Boolean(self.screensaver)),
            (STEP_ASIDE, "", Value::Boolean(self.step_aside)),
        ];
        // Optional fields: empty means the key is absent.
        for (key, field, numeric) in [
            (CPUS, &self.cpus, true),
            (SERVER, &self.server, false),
            (TOKEN_FILE, &self.token_file, false),
            (CA_FILE, &self.ca_file, false),
            (TEMPERATURE_LIMIT_C, &self.temperature_limit_c, true),
        ] {
            if !field.trim().is_empty() {
                let value = if numeric {
                    number_value(field)
                } else {
                    text(field)
                };
                values.push((key, field.as_str(), value));
            }
        }
        let mut settings = Settings::default();
        let mut errors = Vec::new();
        for (key, typed, value) in values {
            if let Err(kind) = read_key(&mut settings, key, &value, base_dir) {
                let message = match kind {
                    // The form's text did not even read as a number.
                    SettingsErrorKind::WrongType { key, expected, .. } => {
                        format!("{key} must be {expected}, not {:?}", typed.trim())
                    }
                    other => other.to_string(),
                };
                errors.push(FieldError {
                    key: Some(key),
                    message,
                });
            }
        }
        // In the order the file lists the keys, as the page shows them.
        errors.sort_by_key(|e| KEYS.iter().position(|k| Some(*k) == e.key));
        if errors.is_empty() {
            Ok(settings)
        } else {
            Err(errors)
        }
    }
}

/// A text box's number as TOML would hold it: an integer, a float, or (not a number) the text,
/// which the key's rule then refuses as the wrong type.
fn number_value(text: &str) -> Value {
    let text = text.trim();
    if let Ok(i) = text.parse::<i64>() {
        Value::Integer(i)
    } else if let Ok(f) = text.parse::<f64>() {
        Value::Float(f)
    } else {
        Value::String(text.to_owned())
    }
}

/// A number of seconds within one of the ranges above, to the nearest nanosecond.
fn seconds(secs: f64) -> Duration {
    // Rounded rather than truncated (as `Duration::from_secs_f64` does): 0.3 must be 300 ms,
    // not 299.999999 ms, and `to_toml` must read back to the same duration. The ranges keep
    // the product far below `u64::MAX`.
    Duration::from_nanos((secs * 1e9).round() as u64)
}

/// A TOML number, integer or float, within `range`. NaN is in no range.
fn float_in(
    key: &'static str,
    value: &Value,
    range: RangeInclusive<f64>,
) -> Result<f64, SettingsErrorKind> {
    let number = match value {
        Value::Float(number) => *number,
        // Exact for every integer a range here allows; larger ones are refused anyway.
        Value::Integer(number) => *number as f64,
        other => return Err(wrong_type(key, "a number", other)),
    };
    if range.contains(&number) {
        Ok(number)
    } else {
        Err(SettingsErrorKind::OutOfRange {
            key,
            value: value.to_string(),
            allowed: allowed(&range),
        })
    }
}

fn integer_in(
    key: &'static str,
    value: &Value,
    range: RangeInclusive<i64>,
) -> Result<i64, SettingsErrorKind> {
    match value {
        Value::Integer(number) if range.contains(number) => Ok(*number),
        Value::Integer(_) => Err(SettingsErrorKind::OutOfRange {
            key,
            value: value.to_string(),
            allowed: allowed(&range),
        }),
        other => Err(wrong_type(key, "a whole number", other)),
    }
}

fn boolean(key: &'static str, value: &Value) -> Result<bool, SettingsErrorKind> {
    value
        .as_bool()
        .ok_or_else(|| wrong_type(key, "true or false", value))
}

fn string<'a>(key: &'static str, value: &'a Value) -> Result<&'a str, SettingsErrorKind> {
    value
        .as_str()
        .ok_or_else(|| wrong_type(key, "a string", value))
}

fn strings<'a>(key: &'static str, value: &'a Value) -> Result<Vec<&'a str>, SettingsErrorKind> {
    let expected = "a list of strings";
    let items = value
        .as_array()
        .ok_or_else(|| wrong_type(key, expected, value))?;
    items
        .iter()
        .map(|item| item.as_str().ok_or_else(|| wrong_type(key, expected, item)))
        .collect()
}

fn string_list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.map(|i| toml_string(&i)).collect();
    format!("[{}]", items.join(", "))
}

fn wrong_type(key: &'static str, expected: &'static str, found: &Value) -> SettingsErrorKind {
    SettingsErrorKind::WrongType {
        key,
        expected,
        found: found.type_str(),
    }
}

/// For a value inside its range that still does not fit the field; unreachable with the ranges
/// above, but a changed range must not become a panic.
fn out_of_range(key: &'static str, value: &Value) -> SettingsErrorKind {
    SettingsErrorKind::OutOfRange {
        key,
        value: value.to_string(),
        allowed: "a smaller value".to_owned(),
    }
}

fn allowed<T: Display>(range: &RangeInclusive<T>) -> String {
    format!("{} ..= {}", range.start(), range.end())
}

/// A number as a person would write it: `180`, not `180.0`. Both read back as the same float.
fn number(value: f64) -> String {
    // Below 2^53 a whole float is exactly an `i64`; beyond, or for NaN and infinities, let toml
    // spell it.
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        format!("{}", value as i64)
    } else {
        Value::Float(value).to_string()
    }
}

fn toml_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// A settings file that could not be used.
///
/// Displays as `PATH:LINE:COLUMN: problem` (the form editors and terminals link to), e.g.
/// `/home/a/.config/idlegrid/settings.toml:1:1: idle_after_secs = -3 is out of range (allowed
/// 0.1 ..= 86400)`. Each part is left out when unknown.
#[derive(Debug, thiserror::Error)]
#[error("{}{kind}", location(.path.as_deref(), *.position))]
pub struct SettingsError {
    /// The settings file; `None` when the text was handed to [`parse`] directly.
    pub path: Option<PathBuf>,
    /// The key at fault, or the exact place of a TOML syntax error; `None` when the file could
    /// not be read.
    pub position: Option<Position>,
    pub kind: SettingsErrorKind,
}

fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn location(path: Option<&Path>, position: Option<Position>) -> String {
    match (path, position) {
        (Some(path), Some(at)) => format!("{}:{}:{}: ", path.display(), at.line, at.column),
        (Some(path), None) => format!("{}: ", path.display()),
        (None, Some(at)) => format!("line {}, column {}: ", at.line, at.column),
        (None, None) => String::new(),
    }
}

/// What is wrong with a settings file.
// Not `#[source]`: the I/O error's text is already part of the message, and an error chain
// would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum SettingsErrorKind {
    #[error("cannot read the settings file: {0}")]
    Read(io::Error),
    #[error("the settings file is larger than {} MiB", MAX_SETTINGS_BYTES >> 20)]
    TooLarge,
    /// Not TOML at all.
    #[error("{message}")]
    Toml { message: String },
    #[error("unknown key `{key}` (the keys are {})", KEYS.join(", "))]
    UnknownKey { key: String },
    #[error("{key} must be {expected}, not {} {found}", article(found))]
    WrongType {
        key: &'static str,
        expected: &'static str,
        /// The TOML type found: `string`, `integer`, `table`...
        found: &'static str,
    },
    #[error("{key} = {value} is out of range (allowed {allowed})")]
    OutOfRange {
        key: &'static str,
        /// The value as written in TOML.
        value: String,
        allowed: String,
    },
    #[error("{key} = {value} is not allowed: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> PathBuf {
        std::env::temp_dir().join("idlegrid-settings-test")
    }

    fn parse_err(text: &str) -> String {
        match parse(text, &base()) {
            Ok(settings) => panic!("{text:?} was accepted: {settings:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn defaults() {
        let settings = Settings::default();
        assert_eq!(settings.idle_after, Duration::from_secs(180));
        assert_eq!(settings.cpus, None);
        assert!(!settings.run_while_in_use && !settings.run_on_battery);
        assert_eq!(settings.input_poll, Duration::from_millis(10));
        assert_eq!(settings.process_threshold_percent, 25.0);
        assert_eq!(settings.process_sustain, Duration::from_secs(3));
        assert_eq!((settings.server, settings.token_file), (None, None));
        assert_eq!(parse("", &base()).ok(), Some(Settings::default()));
        assert_eq!(
            parse("# nothing set\n", &base()).ok(),
            Some(Settings::default())
        );
        assert_eq!(Settings::default().idle_config(), IdleConfig::default());
    }

    #[test]
    fn every_key_is_parsed() {
        let text = r#"
            idle_after_secs = 0.3
            cpus = 6
            run_while_in_use = true
            run_on_battery = true
            input_poll_ms = 25
            process_threshold_percent = 150.5
            process_sustain_secs = 2
            server = "ws://grid.example:7400/worker"
            token_file = "/etc/idlegrid/worker.token"
            cpu_cap_percent = 60
            schedule = ["mon-fri 18:00-08:00", "sat,sun 00:00-24:00"]
            exclusive_programs = [" blender ", "steam", "blender"]
            temperature_limit_c = 85.5
            pause_on_fullscreen = false
            screensaver = true
            step_aside = false
        "#;
        let settings = parse(text, &base()).map_err(|e| e.to_string());
        assert_eq!(
            settings,
            Ok(Settings {
                idle_after: Duration::from_millis(300),
                cpus: Some(6),
                run_while_in_use: true,
                run_on_battery: true,
                input_poll: Duration::from_millis(25),
                process_threshold_percent: 150.5,
                process_sustain: Duration::from_secs(2),
                server: Some("ws://grid.example:7400/worker".to_owned()),
                token_file: Some(PathBuf::from("/etc/idlegrid/worker.token")),
                ca_file: None,
                cpu_cap_percent: 60,
                schedule: Schedule::parse(&["mon-fri 18:00-08:00", "sat,sun 00:00-24:00"]).unwrap(),
                // Trimmed, and a repeat dropped.
                exclusive_programs: vec!["blender".to_owned(), "steam".to_owned()],
                temperature_limit_c: Some(85.5),
                pause_on_fullscreen: false,
                screensaver: true,
                step_aside: false,
            })
        );
        let idle = parse(text, &base()).map(|s| s.idle_config()).ok();
        assert_eq!(
            idle,
            Some(IdleConfig {
                idle_after: Duration::from_millis(300),
                run_while_in_use: true,
                run_on_battery: true,
            })
        );
    }

    #[test]
    fn each_out_of_range_value_is_refused_with_key_and_range() {
        let cases = [
            (
                "idle_after_secs = -3",
                "idle_after_secs = -3",
                "0.1 ..= 86400",
            ),
            (
                "idle_after_secs = 0.05",
                "idle_after_secs = 0.05",
                "0.1 ..= 86400",
            ),
            (
                "idle_after_secs = 86401",
                "idle_after_secs = 86401",
                "0.1 ..= 86400",
            ),
            (
                "idle_after_secs = nan",
                "idle_after_secs = nan",
                "0.1 ..= 86400",
            ),
            ("cpus = 0", "cpus = 0", "1 ..= 4096"),
            ("cpus = 4097", "cpus = 4097", "1 ..= 4096"),
            ("input_poll_ms = 0", "input_poll_ms = 0", "1 ..= 1000"),
            ("input_poll_ms = 1001", "input_poll_ms = 1001", "1 ..= 1000"),
            (
                "process_threshold_percent = 0.5",
                "process_threshold_percent = 0.5",
                "1 ..= 100000",
            ),
            (
                "process_threshold_percent = 1e6",
                "process_threshold_percent = 1000000.0",
                "1 ..= 100000",
            ),
            (
                "process_sustain_secs = 0.4",
                "process_sustain_secs = 0.4",
                "0.5 ..= 600",
            ),
            (
                "process_sustain_secs = inf",
                "process_sustain_secs = inf",
                "0.5 ..= 600",
            ),
            ("cpu_cap_percent = 0", "cpu_cap_percent = 0", "1 ..= 100"),
            (
                "cpu_cap_percent = 101",
                "cpu_cap_percent = 101",
                "1 ..= 100",
            ),
            (
                "temperature_limit_c = 39.9",
                "temperature_limit_c = 39.9",
                "40 ..= 105",
            ),
            (
                "temperature_limit_c = 106",
                "temperature_limit_c = 106",
                "40 ..= 105",
            ),
        ];
        for (text, value, range) in cases {
            let error = parse_err(text);
            assert!(
                error.contains(&format!("{value} is out of range (allowed {range})")),
                "{text}: {error}"
            );
        }
        let error = parse_err("server = \"http://grid.example:7400\"");
        assert!(
            error.contains("server = \"http://grid.example:7400\"") && error.contains("ws://"),
            "{error}"
        );
        let error = parse_err("token_file = \"\"");
        assert!(error.contains("token_file"), "{error}");
        for (text, message) in [
            (
                "schedule = [\"mon-fri 18:00-08:00\", \"mon 25:00-26:00\"]",
                "schedule = \"mon 25:00-26:00\" is not allowed: `25:00` is not a time of day",
            ),
            (
                "schedule = [\"funday 10:00-11:00\"]",
                "schedule = \"funday 10:00-11:00\" is not allowed: `funday` is not a day",
            ),
            (
                "schedule = [\"mon 08:00-08:00\"]",
                "is not allowed: it starts and ends at the same time",
            ),
            (
                "exclusive_programs = [\"/usr/bin/blender\"]",
                "exclusive_programs = \"/usr/bin/blender\" is not allowed: give the program's name",
            ),
            (
                "exclusive_programs = [\"  \"]",
                "is not allowed: an empty name matches no program",
            ),
        ] {
            let error = parse_err(text);
            assert!(error.contains(message), "{text}: {error}");
        }
    }

    #[test]
    fn an_unknown_key_is_named() {
        let error = parse_err("cpus = 2\nidel_after_secs = 60\n");
        assert!(
            error.starts_with("line 2, column 1: unknown key `idel_after_secs`")
                && error.contains("idle_after_secs"),
            "{error}"
        );
        let error = parse_err("[client]\ncpus = 2\n");
        assert!(error.contains("unknown key `client`"), "{error}");
    }

    #[test]
    fn a_wrong_type_names_the_key_and_the_type_expected() {
        for (text, message) in [
            ("cpus = \"4\"", "cpus must be a whole number, not a string"),
            ("cpus = 2.5", "cpus must be a whole number, not a float"),
            (
                "idle_after_secs = \"3m\"",
                "idle_after_secs must be a number",
            ),
            ("run_on_battery = 1", "run_on_battery must be true or false"),
            ("server = 7400", "server must be a string, not an integer"),
            (
                "token_file = [\"a\"]",
                "token_file must be a string, not an array",
            ),
            (
                "input_poll_ms.x = 1",
                "input_poll_ms must be a whole number, not a table",
            ),
            (
                "schedule = \"mon-fri 18:00-08:00\"",
                "schedule must be a list of strings, not a string",
            ),
            (
                "exclusive_programs = [\"a\", 3]",
                "exclusive_programs must be a list of strings, not an integer",
            ),
            (
                "pause_on_fullscreen = \"yes\"",
                "pause_on_fullscreen must be true or false",
            ),
            ("screensaver = 0", "screensaver must be true or false"),
            (
                "cpu_cap_percent = 50.5",
                "cpu_cap_percent must be a whole number, not a float",
            ),
        ] {
            let error = parse_err(text);
            assert!(error.contains(message), "{text}: {error}");
        }
    }

    #[test]
    fn a_syntax_error_keeps_its_line_and_column() {
        let error = parse_err("cpus = 2\nidle_after_secs = = 3\n");
        assert!(error.starts_with("line 2, column "), "{error}");
    }

    #[test]
    fn a_missing_explicit_file_names_its_path() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("no-such-settings.toml");
        let error = load(Some(&path)).map(|_| ()).map_err(|e| e.to_string());
        let Err(error) = error else {
            panic!("a missing explicit file was accepted")
        };
        assert!(
            error.starts_with(&format!("{}: cannot read", path.display())),
            "{error}"
        );
        // Without `--config`, the same missing file means the built-in defaults.
        let loaded = load_from(&path, false).map_err(|e| e.to_string());
        assert_eq!(loaded, Ok((Settings::default(), None)));
    }

    #[test]
    fn a_file_error_names_the_path_and_the_key() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("settings.toml");
        std::fs::write(&path, "cpus = 2\nidle_after_secs = -3\n").expect("write settings");
        let error = load(Some(&path)).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(
            error,
            Err(format!(
                "{}:2:1: idle_after_secs = -3 is out of range (allowed 0.1 ..= 86400)",
                path.display()
            ))
        );
    }

    #[test]
    fn a_relative_token_file_is_resolved_against_the_files_directory() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("settings.toml");
        std::fs::write(
            &path,
            "token_file = \"tokens/worker.token\"\nserver = \"ws://127.0.0.1:7400/worker\"\n",
        )
        .expect("write settings");
        let (settings, from) = load(Some(&path)).expect("valid settings");
        assert_eq!(from.as_deref(), Some(path.as_path()));
        assert_eq!(
            settings.token_file,
            Some(dir.path().join("tokens").join("worker.token"))
        );
        assert_eq!(
            settings.server.as_deref(),
            Some("ws://127.0.0.1:7400/worker")
        );
        let settings = parse("token_file = \"/abs/worker.token\"", &base()).ok();
        assert_eq!(
            settings.and_then(|s| s.token_file),
            Some(PathBuf::from("/abs/worker.token"))
        );
    }

    #[test]
    fn to_toml_reads_back_to_the_same_settings() {
        let full = Settings {
            idle_after: Duration::from_nanos(1_000_000_001),
            cpus: Some(4096),
            run_while_in_use: true,
            run_on_battery: false,
            input_poll: Duration::from_millis(1000),
            process_threshold_percent: 33.3,
            process_sustain: Duration::from_millis(700),
            server: Some("ws://host:7400/worker".to_owned()),
            token_file: Some(base().join("a \"quoted\" \\ name.token")),
            ca_file: Some(base().join("pool ca.pem")),
            cpu_cap_percent: 1,
            schedule: Schedule::parse(&["fri-mon 22:00-06:30", "wed 12:00-24:00"]).unwrap(),
            exclusive_programs: vec!["blender".to_owned(), "Steam \"Big\" Picture".to_owned()],
            temperature_limit_c: Some(72.5),
            pause_on_fullscreen: false,
            screensaver: true,
            step_aside: false,
        };
        for settings in [Settings::default(), full] {
            let text = settings.to_toml();
            let back = parse(&text, Path::new("/elsewhere")).map_err(|e| e.to_string());
            assert_eq!(back, Ok(settings), "{text}");
            for key in KEYS {
                assert!(
                    text.contains(&format!("{key} = ")),
                    "{key} missing:\n{text}"
                );
            }
        }
        let text = Settings::default().to_toml();
        assert!(text.contains("idle_after_secs = 180\n"), "{text}");
        assert!(text.contains("# cpus = 4\n"), "{text}");
        assert!(text.contains("\nschedule = []\n"), "{text}");
        assert!(text.contains("# temperature_limit_c = 85\n"), "{text}");
        assert!(text.contains("\npause_on_fullscreen = true\n"), "{text}");
    }

    fn field_errors(form: &SettingsForm) -> Vec<(Option<&'static str>, String)> {
        match form.check(&base()) {
            Ok(s) => panic!("{form:?} was accepted: {s:?}"),
            Err(errors) => errors.into_iter().map(|e| (e.key, e.message)).collect(),
        }
    }

    #[test]
    fn the_form_shows_the_settings_and_reads_back_to_them() {
        let settings = Settings {
            idle_after: Duration::from_millis(1500),
            cpus: Some(3),
            cpu_cap_percent: 75,
            server: Some("ws://grid.example:7400/worker".to_owned()),
            token_file: Some(PathBuf::from("/etc/idlegrid/worker.token")),
            schedule: Schedule::parse(&["mon-fri 18:00-08:00", "sat,sun 00:00-24:00"]).unwrap(),
            exclusive_programs: vec!["blender".to_owned(), "steam".to_owned()],
            temperature_limit_c: Some(80.0),
            pause_on_fullscreen: false,
            screensaver: true,
            step_aside: false,
            ..Settings::default()
        };
        let form = SettingsForm::from_settings(&settings);
        assert_eq!(form.idle_after_secs, "1.5");
        assert_eq!(form.cpus, "3");
        assert_eq!(form.schedule, "mon-fri 18:00-08:00\nsat,sun 00:00-24:00");
        assert_eq!(form.exclusive_programs, "blender, steam");
        assert_eq!(form.temperature_limit_c, "80");
        assert_eq!(form.check(&base()), Ok(settings));

        let defaults = SettingsForm::from_settings(&Settings::default());
        assert_eq!(
            (
                defaults.cpus.as_str(),
                defaults.server.as_str(),
                defaults.schedule.as_str()
            ),
            ("", "", "")
        );
        assert_eq!(defaults.check(&base()), Ok(Settings::default()));
    }

    #[test]
    fn the_form_reads_text_as_a_person_types_it() {
        let form = SettingsForm {
            idle_after_secs: " 600 ".into(),
            cpus: "  ".into(),
            schedule: "\n  mon-fri 18:00-08:00  \n\nweekend 10:00-12:00\n".into(),
            exclusive_programs: "blender,, steam ,\n obs \n".into(),
            token_file: "tokens/worker.token".into(),
            ..SettingsForm::from_settings(&Settings::default())
        };
        let s = form.check(&base()).expect("valid");
        assert_eq!(s.idle_after, Duration::from_secs(600));
        assert_eq!(s.cpus, None);
        assert_eq!(s.schedule.windows().len(), 2);
        assert_eq!(s.exclusive_programs, vec!["blender", "steam", "obs"]);
        assert_eq!(s.token_file, Some(base().join("tokens/worker.token")));
    }

    #[test]
    fn the_form_reports_every_bad_field_with_its_key_by_the_files_rules() {
        let form = SettingsForm {
            idle_after_secs: "3m".into(),
            cpus: "0".into(),
            cpu_cap_percent: "150".into(),
            input_poll_ms: "2.5".into(),
            server: "http://grid.example".into(),
            schedule: "mon-fri 18:00-08:00\nmon 18:00".into(),
            exclusive_programs: "blender, /opt/x/bin/game".into(),
            temperature_limit_c: "nan".into(),
            ..SettingsForm::from_settings(&Settings::default())
        };
        let errors = field_errors(&form);
        let keys: Vec<Option<&str>> = errors.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            vec![
                Some(IDLE_AFTER_SECS),
                Some(CPUS),
                Some(INPUT_POLL_MS),
                Some(SERVER),
                Some(CPU_CAP_PERCENT),
                Some(SCHEDULE),
                Some(EXCLUSIVE_PROGRAMS),
                Some(TEMPERATURE_LIMIT_C),
            ],
            "{errors:#?}"
        );
        let message = |key: &str| {
            errors
                .iter()
                .find(|(k, _)| *k == Some(key))
                .map(|(_, m)| m.clone())
                .unwrap()
        };
        assert_eq!(
            message(IDLE_AFTER_SECS),
            "idle_after_secs must be a number, not \"3m\""
        );
        assert_eq!(
            message(INPUT_POLL_MS),
            "input_poll_ms must be a whole number, not \"2.5\""
        );
        // The same words as the file's errors: one rule, two ways in.
        for (key, text) in [
            (CPUS, "cpus = 0"),
            (CPU_CAP_PERCENT, "cpu_cap_percent = 150"),
            (SERVER, "server = \"http://grid.example\""),
            (
                SCHEDULE,
                "schedule = [\"mon-fri 18:00-08:00\", \"mon 18:00\"]",
            ),
            (
                EXCLUSIVE_PROGRAMS,
                "exclusive_programs = [\"blender\", \"/opt/x/bin/game\"]",
            ),
            (TEMPERATURE_LIMIT_C, "temperature_limit_c = nan"),
        ] {
            let from_file = parse(text, &base()).expect_err(text).kind.to_string();
            assert_eq!(message(key), from_file, "{key}");
        }
        // A valid form with one bad field names only that field.
        let one = SettingsForm {
            cpu_cap_percent: "0".into(),
            ..SettingsForm::from_settings(&Settings::default())
        };
        assert_eq!(
            field_errors(&one),
            vec![(
                Some(CPU_CAP_PERCENT),
                "cpu_cap_percent = 0 is out of range (allowed 1 ..= 100)".to_owned()
            )]
        );
    }

    #[test]
    fn the_default_path_is_settings_toml_in_the_config_dir() {
        // CI machines may have no home directory; then there is no default path at all.
        if let Some(path) = default_path() {
            assert!(path.ends_with("settings.toml"), "{}", path.display());
            assert!(path.to_string_lossy().contains("idlegrid"));
        }
    }
}
