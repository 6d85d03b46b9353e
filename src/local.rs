//! Local worker processes, for the demo and the benchmarks: real `idlegrid --headless`
//! processes on this machine, started, signalled (SIGKILL, SIGSTOP) and reaped.
//!
//! The worker binary is the `idlegrid` beside the running executable; when it is missing (say
//! `cargo run --bin idlegrid-supervisor` built only that one), the running executable is started
//! with its hidden `worker` subcommand, which runs the same client library.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// One worker process.
pub struct LocalWorker {
    pub name: String,
    child: Child,
}

/// How to start a worker: the program and the arguments that come before the client's flags.
pub fn worker_program() -> std::io::Result<(PathBuf, Vec<&'static str>)> {
    match client_beside()? {
        // Local workers share the machine with whoever runs the demo: they compute regardless.
        Some(sibling) => Ok((sibling, vec!["--headless", "--run-while-in-use"])),
        None => Ok((std::env::current_exe()?, vec!["worker"])),
    }
}

/// What [`LocalWorker::spawn_scripted`] starts.
pub struct ScriptedClient<'a> {
    /// The `idlegrid` client binary.
    pub program: &'a Path,
    /// ws://.../worker
    pub server: &'a str,
    pub token_file: &'a Path,
    pub name: &'a str,
    pub cpus: u32,
    /// One per worker; the same one again after a restart keeps its id and outbox.
    pub data_dir: &'a Path,
    /// Its settings file (`--config`).
    pub settings: &'a Path,
    /// Its owner's spells (`--scripted-activity`).
    pub script: &'a Path,
    pub log: &'a Path,
}

/// The `idlegrid` client beside the running executable, if there is one.
pub fn client_beside() -> std::io::Result<Option<PathBuf>> {
    let me = std::env::current_exe()?;
    let sibling = me.with_file_name(format!("idlegrid{}", std::env::consts::EXE_SUFFIX));
    Ok(sibling.is_file().then_some(sibling))
}

impl LocalWorker {
    /// Starts a headless worker connected to `server` (ws://.../worker) running `cpus` tasks at
    /// once, keeping its id and outbox in `data_dir` (one per worker); its log goes to `log`.
    pub fn spawn(
        server: &str,
        token_file: &Path,
        name: &str,
        cpus: u32,
        data_dir: &Path,
        log: &Path,
    ) -> std::io::Result<Self> {
        let (program, pre) = worker_program()?;
        let log_file = std::fs::File::create(log)?;
        let child = Command::new(program)
            .args(pre)
            .args([
                "--server",
                server,
                "--name",
                name,
                "--cpus",
                &cpus.to_string(),
            ])
            .arg("--token-file")
            .arg(token_file)
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    /// Starts the `idlegrid` client `s.program` headless, its owner following a spell script
    /// (its hidden `--scripted-activity`), with the settings file `s.settings` (for the quiet
    /// period after a spell).
    pub fn spawn_scripted(s: &ScriptedClient<'_>) -> std::io::Result<Self> {
        let log_file = std::fs::File::create(s.log)?;
        let child = Command::new(s.program)
            .args(["--headless", "--server", s.server, "--name", s.name])
            .args(["--cpus", &s.cpus.to_string()])
            .arg("--token-file")
            .arg(s.token_file)
            .arg("--data-dir")
            .arg(s.data_dir)
            .arg("--config")
            .arg(s.settings)
            .arg("--scripted-activity")
            .arg(s.script)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()?;
        Ok(Self {
            name: s.name.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`libc::SIGKILL`, `libc::SIGSTOP`, ...).
    pub fn signal(&self, sig: i32) -> std::io::Result<()> {
        signal_pid(self.child.id(), sig)
    }

    /// Kills the process (a stopped one too) and reaps it.
    pub fn kill(mut self) {
        let _ = self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for LocalWorker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The child of process `pid` whose command name is `name`: for instance the client that
/// `dbus-run-session` started, which does not pass signals on to it.
pub fn child_named(pid: u32, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .find(|c| {
            std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|comm| comm.trim() == name)
        })
}

/// Sends `sig` to process `pid`.
pub fn signal_pid(pid: u32, sig: i32) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) only sends a signal; a wrong pid yields an error code, not UB.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
