//! Whether the machine runs on battery, from Linux's `/sys/class/power_supply`.
//!
//! This is one read of the power supplies, for the engine to decide whether to compute at all (a
//! volunteer's laptop should not drain its battery for us). It is not an activity source: running
//! on battery says nothing about the owner being there. It never fails: anything unreadable is
//! treated as absent.

use std::fs;
use std::path::Path;

/// `Some(true)` when the machine is on battery, `Some(false)` when it has a battery but runs on
/// mains, `None` when it has no battery (desktops) or the platform is not Linux.
pub fn on_battery() -> Option<bool> {
    if cfg!(target_os = "linux") {
        on_battery_in(Path::new("/sys/class/power_supply"))
    } else {
        None
    }
}

/// [`on_battery`] over a `power_supply` directory: one subdirectory per supply, each with a
/// `type` file ("Battery", "Mains", "USB", ...) and, depending on the type, `online`, `status`,
/// `present` and `scope`.
///
/// A machine is on battery when a system battery exists and either it is discharging or no mains
/// or USB supply is online. When the machine exposes no mains or USB supply at all (some do not
/// expose their AC adapter), the battery's own status decides.
pub fn on_battery_in(dir: &Path) -> Option<bool> {
    let entries = fs::read_dir(dir).ok()?;
    let mut batteries = 0;
    let mut discharging = false;
    let mut external_supplies = 0;
    let mut external_online = false;
    for entry in entries.flatten() {
        let supply = entry.path();
        let Some(kind) = read_attr(&supply, "type") else {
            continue;
        };
        match kind.as_str() {
            "Battery" => {
                // Wireless mice, keyboards and headsets report their batteries here too, with
                // scope "Device": they do not power the machine.
                if read_attr(&supply, "scope").as_deref() == Some("Device") {
                    continue;
                }
                // An empty battery bay on a laptop running from its charger.
                if read_attr(&supply, "present").as_deref() == Some("0") {
                    continue;
                }
                batteries += 1;
                discharging |= read_attr(&supply, "status").as_deref() == Some("Discharging");
            }
            "Mains" | "USB" => {
                external_supplies += 1;
                external_online |= read_attr(&supply, "online").as_deref() == Some("1");
            }
            _ => {}
        }
    }
    if batteries == 0 {
        return None;
    }
    Some(discharging || (external_supplies > 0 && !external_online))
}

/// One attribute file, trimmed; `None` if it cannot be read.
fn read_attr(supply: &Path, name: &str) -> Option<String> {
    fs::read_to_string(supply.join(name))
        .ok()
        .map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a fake supply: `attrs` are (file, content) pairs.
    fn supply(root: &Path, name: &str, attrs: &[(&str, &str)]) {
        let dir = root.join(name);
        fs::create_dir_all(&dir).expect("create a fake supply directory");
        for (file, content) in attrs {
            fs::write(dir.join(file), format!("{content}\n")).expect("write a fake attribute");
        }
    }

    fn tree() -> tempfile::TempDir {
        tempfile::tempdir().expect("create a temporary directory")
    }

    #[test]
    fn a_desktop_without_battery_is_neither() {
        let root = tree();
        supply(root.path(), "AC", &[("type", "Mains"), ("online", "1")]);
        assert_eq!(on_battery_in(root.path()), None);
        let empty = tree();
        assert_eq!(on_battery_in(empty.path()), None);
        assert_eq!(on_battery_in(&empty.path().join("missing")), None);
    }

    #[test]
    fn a_laptop_on_its_charger_is_not_on_battery() {
        let root = tree();
        supply(root.path(), "AC", &[("type", "Mains"), ("online", "1")]);
        supply(
            root.path(),
            "BAT0",
            &[
                ("type", "Battery"),
                ("status", "Charging"),
                ("present", "1"),
            ],
        );
        assert_eq!(on_battery_in(root.path()), Some(false));
    }

    #[test]
    fn a_laptop_unplugged_is_on_battery() {
        let root = tree();
        supply(root.path(), "AC", &[("type", "Mains"), ("online", "0")]);
        supply(
            root.path(),
            "ucsi-source-psy-USBC000:001",
            &[("type", "USB"), ("online", "0")],
        );
        supply(
            root.path(),
            "BAT0",
            &[("type", "Battery"), ("status", "Unknown")],
        );
        assert_eq!(on_battery_in(root.path()), Some(true));
    }

    #[test]
    fn charging_over_usb_c_counts_as_mains() {
        let root = tree();
        supply(root.path(), "AC", &[("type", "Mains"), ("online", "0")]);
        supply(root.path(), "usbc", &[("type", "USB"), ("online", "1")]);
        supply(
            root.path(),
            "BAT0",
            &[("type", "Battery"), ("status", "Charging")],
        );
        assert_eq!(on_battery_in(root.path()), Some(false));
    }

    #[test]
    fn a_discharging_battery_is_on_battery_even_with_a_weak_charger_online() {
        let root = tree();
        supply(root.path(), "AC", &[("type", "Mains"), ("online", "1")]);
        supply(
            root.path(),
            "BAT1",
            &[("type", "Battery"), ("status", "Discharging")],
        );
        assert_eq!(on_battery_in(root.path()), Some(true));
    }

    #[test]
    fn without_a_visible_charger_the_battery_status_decides() {
        let root = tree();
        supply(
            root.path(),
            "BAT0",
            &[("type", "Battery"), ("status", "Full")],
        );
        assert_eq!(on_battery_in(root.path()), Some(false));
        supply(root.path(), "BAT0", &[("status", "Discharging")]);
        assert_eq!(on_battery_in(root.path()), Some(true));
    }

    #[test]
    fn a_wireless_mouse_battery_does_not_make_a_desktop_a_laptop() {
        let root = tree();
        supply(root.path(), "AC", &[("type", "Mains"), ("online", "1")]);
        supply(
            root.path(),
            "hidpp_battery_0",
            &[
                ("type", "Battery"),
                ("scope", "Device"),
                ("status", "Discharging"),
            ],
        );
        supply(
            root.path(),
            "BAT0",
            &[("type", "Battery"), ("present", "0")],
        );
        assert_eq!(on_battery_in(root.path()), None);
    }

    #[test]
    fn the_real_machine_answers_without_failing() {
        // Whatever this machine is, asking must not panic; print it for the curious.
        println!("on_battery() on this machine: {:?}", on_battery());
    }
}
