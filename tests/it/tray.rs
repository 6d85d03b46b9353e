//! The tray icon of the real `idlegrid` binary on a private Xvfb display, inside a session bus of
//! its own (`dbus-run-session`) with no tray host on it: the client keeps running, says why the
//! icon is not shown, and its StatusNotifierItem is on the bus for a host to pick up.

use std::process::Command;

use idlegrid::bench::xvfb::Xvfb;

use crate::harness::CLIENT;

/// Runs the client (first run: no supervisor) for a few seconds inside `dbus-run-session`, and
/// prints what the bus says: `PID=...`, `ALIVE=yes|no`, then the names on the bus.
fn client_on_a_private_bus(dir: &std::path::Path, display: &str) -> (String, String) {
    let script = format!(
        r#"
"$CLIENT" --config "{dir}/settings.toml" --data-dir "{dir}/data" >"{dir}/client.log" 2>&1 &
pid=$!
sleep 6
echo "PID=$pid"
if kill -0 $pid 2>/dev/null; then echo ALIVE=yes; else echo ALIVE=no; fi
dbus-send --session --dest=org.freedesktop.DBus --print-reply /org/freedesktop/DBus org.freedesktop.DBus.ListNames
kill $pid
wait $pid
"#,
        dir = dir.display()
    );
    let out = Command::new("dbus-run-session")
        .args(["--", "sh", "-c", &script])
        .env("CLIENT", CLIENT)
        .env("DISPLAY", display)
        .env("RUST_LOG", "info")
        .output()
        .expect("dbus-run-session runs (apt-get install dbus-daemon)");
    let log = std::fs::read_to_string(dir.join("client.log")).unwrap_or_default();
    (String::from_utf8_lossy(&out.stdout).into_owned(), log)
}

#[test]
fn without_a_tray_host_the_client_keeps_running_says_why_and_registers_its_item() {
    let xvfb = Xvfb::start().expect("Xvfb");
    let dir = tempfile::tempdir().unwrap();
    let (bus, log) = client_on_a_private_bus(dir.path(), &xvfb.display);
    assert!(
        bus.contains("ALIVE=yes"),
        "the client stopped:\n{bus}\n{log}"
    );
    assert!(
        log.contains("tray icon not shown: no tray host"),
        "the log does not say why the tray is missing:\n{log}"
    );
    let pid = bus
        .lines()
        .find_map(|l| l.strip_prefix("PID="))
        .expect("the script printed the pid");
    let item = format!("org.kde.StatusNotifierItem-{pid}-");
    assert!(bus.contains(&item), "no {item}* on the bus:\n{bus}");
    // A negative control: no other process's item is there.
    assert_eq!(
        bus.matches("org.kde.StatusNotifierItem-").count(),
        1,
        "{bus}"
    );
    assert_eq!(
        log.matches("tray icon not shown").count(),
        1,
        "said once:\n{log}"
    );
}

#[test]
fn without_a_session_bus_the_client_keeps_running_without_a_tray() {
    let xvfb = Xvfb::start().expect("Xvfb");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(CLIENT)
        .arg("--config")
        .arg(dir.path().join("settings.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("DISPLAY", &xvfb.display)
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/idlegrid-test-bus",
        )
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("client.log")).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(6));
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.path().join("client.log")).unwrap();
    assert!(alive, "the client stopped without a session bus:\n{log}");
    assert!(log.contains("tray icon not shown"), "{log}");
}
