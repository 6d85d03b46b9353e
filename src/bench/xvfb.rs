//! A private X display for benchmarks and tests: an `Xvfb` server on a display number it picks
//! itself (`-displayfd`, so parallel runs never collide), and `xdotool` to type and move the
//! pointer on it. Both processes end when their handles drop.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Xvfb server.
pub struct Xvfb {
    child: Child,
    /// The display name, e.g. ":3".
    pub display: String,
}

impl Xvfb {
    /// Starts a server and waits until it accepts clients. `-noreset` keeps it from resetting
    /// (and forgetting state) whenever its last client leaves.
    pub fn start() -> std::io::Result<Self> {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-noreset",
                "-nolisten",
                "tcp",
                "-screen",
                "0",
                "1280x800x24",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot start Xvfb (apt-get install xvfb): {e}"),
                )
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("Xvfb has no stdout"))?;
        // Xvfb writes the display number once it is ready for clients.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) if !l.trim().is_empty() => l,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(std::io::Error::other(
                    "Xvfb did not report a display within 10 s",
                ));
            }
        };
        Ok(Self {
            child,
            display: format!(":{}", line.trim()),
        })
    }

    /// A long-lived `xdotool` reading commands from its standard input, so that each injected
    /// input costs a line written, not a process started.
    pub fn xdotool(&self) -> std::io::Result<XdoTool> {
        let mut child = Command::new("xdotool")
            .arg("-")
            .env("DISPLAY", &self.display)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot start xdotool (apt-get install xdotool): {e}"),
                )
            })?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("xdotool has no stdin"))?;
        Ok(XdoTool { child, stdin })
    }

    /// Runs one `xdotool` command to completion on this display.
    pub fn run_xdotool(&self, args: &[&str]) -> std::io::Result<()> {
        let status = Command::new("xdotool")
            .args(args)
            .env("DISPLAY", &self.display)
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "xdotool {} failed: {status}",
                args.join(" ")
            )))
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM first: Xvfb then removes its socket and lock file, which SIGKILL would leave
        // behind to hold the display number.
        if crate::local::signal_pid(self.child.id(), libc::SIGTERM).is_ok() {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(2) {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `xdotool -` process.
pub struct XdoTool {
    child: Child,
    stdin: ChildStdin,
}

impl XdoTool {
    /// Sends one command (e.g. `mousemove 10 20`, `key a`); returns the instant just before it
    /// was written.
    pub fn send(&mut self, command: &str) -> std::io::Result<Instant> {
        let at = Instant::now();
        self.stdin.write_all(command.as_bytes())?;
        self.stdin.write_all(b"\n")?;
        self.stdin.flush()?;
        Ok(at)
    }
}

impl Drop for XdoTool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
