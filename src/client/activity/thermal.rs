//! Overheat protection: pause while the CPU is hotter than the settings' limit.
//!
//! [`ThermalGate`] is the pure decision with hysteresis: hot above the limit, and hot until the
//! temperature falls 5 °C below it, so that a CPU hovering at the limit does not pause and
//! resume every few seconds. [`ThermalSource`] reads the sensors every [`POLL`]: sysinfo's
//! components (hwmon on Linux) first, else the kernel's thermal zones
//! (`/sys/class/thermal/thermal_zone*/temp`). Of the sensors found it takes the CPU's (by their
//! labels: `coretemp`, `k10temp`, `Package`, `Tctl`, `x86_pkg_temp`, `cpu`...), or every sensor
//! when none is labelled as the CPU's.

use std::path::Path;
use std::time::{Duration, Instant};

use super::SourceFactory;
use super::{ActivitySource, Condition, ConditionDetail, Observation, Signal, SourceError};
use crate::client::idle::Busy;

/// How far below the limit the CPU must cool before computing resumes.
pub const HYSTERESIS_C: f32 = 5.0;
/// Between two readings: temperature changes over seconds, and reading sensors costs a few
/// file reads.
pub const POLL: Duration = Duration::from_secs(5);
/// A new reading is reported (for the status) when it differs this much from the last one.
const REPORT_STEP_C: f32 = 1.0;

/// Hot above `limit`, cool again below `limit - 5`. Pure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThermalGate {
    limit: f32,
    hot: bool,
}

impl ThermalGate {
    pub fn new(limit_c: f32) -> Self {
        Self {
            limit: limit_c,
            hot: false,
        }
    }

    /// Takes a reading; returns whether the machine is too hot now. A reading that is not a
    /// number changes nothing.
    pub fn push(&mut self, celsius: f32) -> bool {
        if self.hot {
            if celsius < self.limit - HYSTERESIS_C {
                self.hot = false;
            }
        } else if celsius > self.limit {
            self.hot = true;
        }
        self.hot
    }

    pub fn is_hot(&self) -> bool {
        self.hot
    }
}

/// The temperature that counts among `(label, °C)` readings: the hottest of those labelled as
/// the CPU's, or of all when none is; `None` without a plausible reading.
pub fn hottest_cpu(readings: &[(String, f32)]) -> Option<f32> {
    const CPU_WORDS: [&str; 10] = [
        "cpu", "core", "package", "tctl", "tdie", "k10temp", "coretemp", "x86_pkg", "soc",
        "zenpower",
    ];
    let plausible: Vec<&(String, f32)> = readings
        .iter()
        .filter(|(_, c)| c.is_finite() && (-50.0..=200.0).contains(c))
        .collect();
    let is_cpu = |label: &str| {
        let label = label.to_ascii_lowercase();
        CPU_WORDS.iter().any(|w| label.contains(w))
    };
    let cpu: Vec<f32> = plausible
        .iter()
        .filter(|(l, _)| is_cpu(l))
        .map(|(_, c)| *c)
        .collect();
    let pool: Vec<f32> = if cpu.is_empty() {
        plausible.iter().map(|(_, c)| *c).collect()
    } else {
        cpu
    };
    pool.into_iter().reduce(f32::max)
}

/// The kernel's thermal zones under `root` (normally `/sys/class/thermal`): each
/// `thermal_zone*/temp` (millidegrees) with its `type` as the label. Unreadable zones are
/// skipped.
pub fn thermal_zones(root: &Path) -> Vec<(String, f32)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("thermal_zone") {
            continue;
        }
        let dir = entry.path();
        let Some(milli) = std::fs::read_to_string(dir.join("temp"))
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())
        else {
            continue;
        };
        let label = std::fs::read_to_string(dir.join("type"))
            .map(|t| t.trim().to_owned())
            .unwrap_or_else(|_| name.to_string_lossy().into_owned());
        out.push((label, milli as f32 / 1000.0));
    }
    out
}

/// Where readings come from.
enum Sensors {
    Components(sysinfo::Components),
    Zones(std::path::PathBuf),
}

impl Sensors {
    fn read(&mut self) -> Vec<(String, f32)> {
        match self {
            Sensors::Components(components) => {
                components.refresh(false);
                components
                    .iter()
                    .filter_map(|c| Some((c.label().to_owned(), c.temperature()?)))
                    .collect()
            }
            Sensors::Zones(root) => thermal_zones(root),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Sensors::Components(_) => "sensors",
            Sensors::Zones(_) => "/sys/class/thermal",
        }
    }
}

/// Reports [`Busy::Thermal`] while the CPU is too hot (see [`ThermalGate`]).
pub struct ThermalSource {
    sensors: Sensors,
    gate: ThermalGate,
    /// What was last reported: whether hot, at which temperature.
    reported: Option<(bool, f32)>,
    /// Whether a poll without any reading was already logged.
    said_unreadable: bool,
}

impl ThermalSource {
    /// Finds the sensors; none at all is an error the caller shows once.
    pub fn new(limit_c: f32) -> Result<Self, SourceError> {
        Self::with_zones_root(limit_c, Path::new("/sys/class/thermal"), true)
    }

    /// Thermal zones under `root` only (sysinfo too when `components`): for tests with a
    /// directory of their own.
    pub fn with_zones_root(
        limit_c: f32,
        root: &Path,
        components: bool,
    ) -> Result<Self, SourceError> {
        let from_components = components
            .then(|| sysinfo::Components::new_with_refreshed_list().ok())
            .flatten()
            .filter(|c| c.iter().any(|c| c.temperature().is_some()));
        let mut sensors = match from_components {
            Some(c) => Sensors::Components(c),
            None => Sensors::Zones(root.to_owned()),
        };
        if hottest_cpu(&sensors.read()).is_none() {
            return Err(SourceError::Unavailable {
                which: "thermal",
                reason: format!(
                    "no temperature sensor (sysinfo lists no component with a temperature, and \
                     {} has no readable thermal_zone*/temp): temperature_limit_c cannot be \
                     enforced on this machine",
                    root.display()
                ),
            });
        }
        Ok(Self {
            sensors,
            gate: ThermalGate::new(limit_c),
            reported: None,
            said_unreadable: false,
        })
    }
}

impl ActivitySource for ThermalSource {
    fn name(&self) -> String {
        format!(
            "temperature ({}, limit {} °C)",
            self.sensors.describe(),
            self.gate.limit
        )
    }

    fn interval(&self) -> Duration {
        POLL
    }

    fn poll(&mut self, _now: Instant) -> Option<Observation> {
        None
    }

    fn signal(&mut self, now: Instant) -> Option<Signal> {
        let Some(celsius) = hottest_cpu(&self.sensors.read()) else {
            // Keeps the last state: a sensor that vanishes says nothing about the heat.
            if !self.said_unreadable {
                tracing::warn!("the temperature sensors gave no reading; keeping the last state");
                self.said_unreadable = true;
            }
            return None;
        };
        self.said_unreadable = false;
        let hot = self.gate.push(celsius);
        let changed = match self.reported {
            None => true,
            Some((was_hot, was_c)) => was_hot != hot || (was_c - celsius).abs() >= REPORT_STEP_C,
        };
        if !changed {
            return None;
        }
        self.reported = Some((hot, celsius));
        Some(Signal::Condition(Condition {
            reason: Busy::Thermal,
            on: hot,
            at: now,
            detail: ConditionDetail::Temperature(celsius),
        }))
    }
}

/// A factory for a [`ThermalSource`] pausing above `limit_c`.
pub fn factory(limit_c: f32) -> SourceFactory {
    Box::new(move || Ok(Box::new(ThermalSource::new(limit_c)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_above_the_limit_and_cool_only_five_degrees_below_it() {
        let mut gate = ThermalGate::new(80.0);
        let readings = [
            (70.0, false),
            (80.0, false), // at the limit is not above it
            (80.5, true),
            (78.0, true), // below the limit, but not by 5 °C
            (75.0, true), // exactly limit - 5 is not below it
            (85.0, true),
            (74.9, false),
            (79.0, false), // hovering under the limit does not flip back
            (f32::NAN, false),
            (81.0, true),
            (f32::NAN, true),
        ];
        for (i, (c, hot)) in readings.into_iter().enumerate() {
            assert_eq!(gate.push(c), hot, "reading #{i}: {c} °C");
        }
    }

    #[test]
    fn a_sawtooth_around_the_limit_pauses_once_and_resumes_once() {
        let mut gate = ThermalGate::new(60.0);
        let mut flips = 0;
        let mut was = false;
        // Up and down by 3 °C around the limit for a while, then well below.
        let wave = (0..40).map(|i| if i % 2 == 0 { 58.0 } else { 61.0 });
        for c in wave.chain([50.0, 50.0]) {
            let hot = gate.push(c);
            flips += usize::from(hot != was);
            was = hot;
        }
        assert_eq!(flips, 2);
        assert!(!gate.is_hot());
    }

    #[test]
    fn the_cpu_sensors_count_and_others_only_when_there_is_no_cpu_sensor() {
        let r = |pairs: &[(&str, f32)]| -> Vec<(String, f32)> {
            pairs.iter().map(|(l, c)| (l.to_string(), *c)).collect()
        };
        let mixed = r(&[
            ("nvme Composite", 70.0),
            ("coretemp Package id 0", 55.0),
            ("acpitz", 40.0),
        ]);
        assert_eq!(hottest_cpu(&mixed), Some(55.0));
        assert_eq!(
            hottest_cpu(&r(&[("acpitz", 40.0), ("nvme", 48.0)])),
            Some(48.0)
        );
        assert_eq!(
            hottest_cpu(&r(&[("k10temp Tctl", f32::NAN), ("x", 1000.0)])),
            None
        );
        assert_eq!(hottest_cpu(&[]), None);
    }

    fn zone(root: &Path, n: u32, kind: &str, milli: &str) {
        let dir = root.join(format!("thermal_zone{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("type"), format!("{kind}\n")).unwrap();
        std::fs::write(dir.join("temp"), format!("{milli}\n")).unwrap();
    }

    #[test]
    fn thermal_zones_are_read_in_millidegrees_with_their_type() {
        let dir = tempfile::tempdir().unwrap();
        zone(dir.path(), 0, "acpitz", "27800");
        zone(dir.path(), 1, "x86_pkg_temp", "51000");
        zone(dir.path(), 2, "broken", "n/a");
        std::fs::create_dir_all(dir.path().join("cooling_device0")).unwrap();
        let mut zones = thermal_zones(dir.path());
        zones.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            zones,
            vec![
                ("acpitz".to_owned(), 27.8),
                ("x86_pkg_temp".to_owned(), 51.0)
            ]
        );
        assert_eq!(hottest_cpu(&zones), Some(51.0));
    }

    #[test]
    fn the_source_reports_the_first_state_then_changes_with_hysteresis() {
        let dir = tempfile::tempdir().unwrap();
        zone(dir.path(), 0, "x86_pkg_temp", "70000");
        let mut s = ThermalSource::with_zones_root(80.0, dir.path(), false).unwrap();
        assert!(s.name().contains("limit 80 °C"), "{}", s.name());
        let t0 = Instant::now();
        let state = |s: &mut ThermalSource| match s.signal(t0) {
            Some(Signal::Condition(c)) => {
                assert_eq!(c.reason, Busy::Thermal);
                let ConditionDetail::Temperature(t) = c.detail else {
                    panic!("{c:?}")
                };
                Some((c.on, t))
            }
            other => {
                assert_eq!(other, None);
                None
            }
        };
        assert_eq!(state(&mut s), Some((false, 70.0)));
        assert_eq!(state(&mut s), None, "nothing changed");
        zone(dir.path(), 0, "x86_pkg_temp", "85000");
        assert_eq!(state(&mut s), Some((true, 85.0)));
        zone(dir.path(), 0, "x86_pkg_temp", "77000");
        assert_eq!(state(&mut s), Some((true, 77.0)), "cooler, still hot");
        zone(dir.path(), 0, "x86_pkg_temp", "77400");
        assert_eq!(state(&mut s), None, "under a degree: not worth a report");
        zone(dir.path(), 0, "x86_pkg_temp", "74000");
        assert_eq!(state(&mut s), Some((false, 74.0)));
        // A sensor that disappears keeps the state and reports nothing.
        std::fs::remove_dir_all(dir.path().join("thermal_zone0")).unwrap();
        assert_eq!(state(&mut s), None);
    }

    #[test]
    fn no_sensor_is_an_error_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = ThermalSource::with_zones_root(80.0, dir.path(), false)
            .err()
            .expect("an empty directory has no sensor");
        assert!(matches!(
            err,
            SourceError::Unavailable {
                which: "thermal",
                ..
            }
        ));
        assert!(err.to_string().contains("no temperature sensor"), "{err}");
    }

    #[test]
    fn this_machines_sensors_are_found_or_their_absence_is_reported() {
        // The real sysinfo components and /sys/class/thermal of whatever machine runs this.
        let components = sysinfo::Components::new_with_refreshed_list()
            .map(|c| {
                c.iter()
                    .map(|c| format!("{} = {:?}", c.label(), c.temperature()))
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.to_string());
        let zones = thermal_zones(Path::new("/sys/class/thermal"));
        println!("sysinfo components: {components:?}; thermal zones: {zones:?}");
        match ThermalSource::new(80.0) {
            Ok(mut s) => {
                println!("{}", s.name());
                assert!(matches!(
                    s.signal(Instant::now()),
                    Some(Signal::Condition(_))
                ));
            }
            Err(e) => {
                println!("{e}");
                assert!(zones.is_empty(), "zones were there: {zones:?}");
            }
        }
    }
}
