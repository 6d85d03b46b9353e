//! STAND-IN for `client::settings::SettingsForm` (helper A's, not on this branch yet).
//!
//! The lead swaps this whole file for `pub use crate::client::settings::SettingsForm;`: the
//! settings page uses only the shape below (public text and bool fields, `from_settings`,
//! `check`). The checks here are a minimal copy of the file's rules so that the page can be
//! built and tested; the fields the current `Settings` cannot hold yet (cpu cap, schedule,
//! exclusive programs, temperature, full screen, screensaver) are checked but not carried.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::settings::Settings;
use crate::client::snapshot::FieldError;

/// The settings as a person edits them: text as typed, switches as set.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SettingsForm {
    pub idle_after_secs: String,
    /// Empty: one per logical CPU.
    pub cpus: String,
    pub cpu_cap_percent: String,
    pub run_while_in_use: bool,
    pub run_on_battery: bool,
    pub server: String,
    pub token_file: String,
    /// One rule a line: `mon-fri 18:00-08:00`, `sat,sun 00:00-24:00`.
    pub schedule: String,
    /// Process names, one a line.
    pub exclusive_programs: String,
    /// Empty: no limit.
    pub temperature_limit_c: String,
    pub pause_on_fullscreen: bool,
    pub screensaver: bool,
    /// Settings the form does not show, carried through unchanged.
    base: Settings,
}

impl SettingsForm {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            idle_after_secs: trim_float(s.idle_after.as_secs_f64()),
            cpus: s.cpus.map(|c| c.to_string()).unwrap_or_default(),
            cpu_cap_percent: "100".into(),
            run_while_in_use: s.run_while_in_use,
            run_on_battery: s.run_on_battery,
            server: s.server.clone().unwrap_or_default(),
            token_file: s
                .token_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            schedule: String::new(),
            exclusive_programs: String::new(),
            temperature_limit_c: String::new(),
            pause_on_fullscreen: true,
            screensaver: false,
            base: s.clone(),
        }
    }

    /// The settings the form says, or a message per field that is wrong.
    pub fn check(&self, base_dir: &Path) -> Result<Settings, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut err = |key: &'static str, message: String| {
            errors.push(FieldError {
                key: Some(key),
                message,
            })
        };
        let mut s = self.base.clone();
        match self.idle_after_secs.trim().parse::<f64>() {
            Ok(v) if (0.1..=86_400.0).contains(&v) => s.idle_after = Duration::from_secs_f64(v),
            _ => err(
                "idle_after_secs",
                format!(
                    "{:?} is not a number of seconds from 0.1 to 86400",
                    self.idle_after_secs
                ),
            ),
        }
        let cpus = self.cpus.trim();
        if cpus.is_empty() {
            s.cpus = None;
        } else {
            match cpus.parse::<u32>() {
                Ok(v) if (1..=4096).contains(&v) => s.cpus = Some(v),
                _ => err(
                    "cpus",
                    format!("{cpus:?} is not a whole number from 1 to 4096 (or empty for all)"),
                ),
            }
        }
        match self.cpu_cap_percent.trim().parse::<f64>() {
            Ok(v) if (1.0..=100.0).contains(&v) => {}
            _ => err(
                "cpu_cap_percent",
                format!(
                    "{:?} is not a percentage from 1 to 100",
                    self.cpu_cap_percent
                ),
            ),
        }
        s.run_while_in_use = self.run_while_in_use;
        s.run_on_battery = self.run_on_battery;
        let server = self.server.trim();
        if server.is_empty() {
            s.server = None;
        } else if let Err(e) = crate::client::check_server_url(server) {
            err("server", e.to_string());
        } else {
            s.server = Some(server.to_owned());
        }
        let token = self.token_file.trim();
        s.token_file = (!token.is_empty()).then(|| {
            let p = PathBuf::from(token);
            if p.is_relative() { base_dir.join(p) } else { p }
        });
        for (n, line) in self.schedule.lines().enumerate() {
            if !line.trim().is_empty() && !schedule_line_ok(line) {
                err(
                    "schedule",
                    format!(
                        "line {}: {:?} is not `DAYS HH:MM-HH:MM` (e.g. `mon-fri 18:00-08:00`)",
                        n + 1,
                        line.trim()
                    ),
                );
            }
        }
        for name in self.exclusive_programs.lines().map(str::trim) {
            if name.contains('/') {
                err(
                    "exclusive_programs",
                    format!("{name:?}: give the program's name, not a path"),
                );
            }
        }
        let temp = self.temperature_limit_c.trim();
        if !temp.is_empty() {
            match temp.parse::<f64>() {
                Ok(v) if (40.0..=110.0).contains(&v) => {}
                _ => err(
                    "temperature_limit_c",
                    format!("{temp:?} is not a temperature from 40 to 110 °C (or empty)"),
                ),
            }
        }
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(errors)
        }
    }
}

fn schedule_line_ok(line: &str) -> bool {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let Some((days, hours)) = line.trim().split_once(' ') else {
        return false;
    };
    let day_ok = |d: &str| DAYS.contains(&d.trim());
    let days_ok = days.split(',').all(|part| match part.split_once('-') {
        Some((a, b)) => day_ok(a) && day_ok(b),
        None => day_ok(part),
    });
    let hm = |t: &str| {
        t.trim().split_once(':').is_some_and(|(h, m)| {
            matches!((h.parse::<u32>(), m.parse::<u32>()), (Ok(h), Ok(m)) if (h < 24 && m < 60) || (h == 24 && m == 0))
        })
    };
    let hours_ok = hours
        .trim()
        .split_once('-')
        .is_some_and(|(a, b)| hm(a) && hm(b));
    days_ok && hours_ok
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}
