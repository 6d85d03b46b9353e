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
//! ```
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
        }
    }
}

const IDLE_AFTER_SECS: &str = "idle_after_secs";
const CPUS: &str = "cpus";
const RUN_WHILE_IN_USE: &str = "run_while_in_use";
const RUN_ON_BATTERY: &str = "run_on_battery";
const INPUT_POLL_MS: &str = "input_poll_ms";
const PROCESS_THRESHOLD_PERCENT: &str = "process_threshold_percent";
const PROCESS_SUSTAIN_SECS: &str = "process_sustain_secs";
const SERVER: &str = "server";
const TOKEN_FILE: &str = "token_file";

/// Every key, in the order [`Settings::to_toml`] writes them.
const KEYS: [&str; 9] = [
    IDLE_AFTER_SECS,
    CPUS,
    RUN_WHILE_IN_USE,
    RUN_ON_BATTERY,
    INPUT_POLL_MS,
    PROCESS_THRESHOLD_PERCENT,
    PROCESS_SUSTAIN_SECS,
    SERVER,
    TOKEN_FILE,
];

const IDLE_AFTER_RANGE: RangeInclusive<f64> = 0.1..=86_400.0;
const CPUS_RANGE: RangeInclusive<i64> = 1..=4096;
const INPUT_POLL_RANGE: RangeInclusive<i64> = 1..=1000;
const PROCESS_THRESHOLD_RANGE: RangeInclusive<f64> = 1.0..=100_000.0;
const PROCESS_SUSTAIN_RANGE: RangeInclusive<f64> = 0.5..=600.0;

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
        unknown => {
            return Err(SettingsErrorKind::UnknownKey {
                key: unknown.to_owned(),
            });
        }
    }
    Ok(())
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
