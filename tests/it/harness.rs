//! Real processes on 127.0.0.1 for the integration tests: an `idlegrid-supervisor serve` and
//! `idlegrid --headless` workers, with helpers to signal them and to talk to the API.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idlegrid::operator::Operator;
use idlegrid::proto::JobId;
use idlegrid::supervisor::report::JobSummary;

pub const SUPERVISOR: &str = env!("CARGO_BIN_EXE_idlegrid-supervisor");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_idlegrid");

/// A supervisor process.
pub struct SupervisorProc {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Whether it serves `https://` and `wss://` (started with `--tls-cert`).
    pub tls: bool,
}

impl SupervisorProc {
    /// Starts `serve` on `listen` (use port 0 for a free one) with extra flags.
    pub fn start(data_dir: &Path, listen: &str, extra: &[&str]) -> Self {
        std::fs::create_dir_all(data_dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("supervisor.log"))
            .unwrap();
        let mut child = Command::new(SUPERVISOR)
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start supervisor");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("supervisor printed nothing").unwrap();
        let addr = idlegrid::supervisor::parse_listening_line(&first)
            .unwrap_or_else(|| panic!("unexpected first line: {first}"));
        let tls = first.contains("https://");
        // Keep draining stdout so the supervisor never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            addr,
            data_dir: data_dir.to_owned(),
            tls,
        }
    }

    pub fn ws_url(&self) -> String {
        let s = if self.tls { "s" } else { "" };
        format!("ws{s}://{}/worker", self.addr)
    }

    pub fn http_url(&self) -> String {
        let s = if self.tls { "s" } else { "" };
        format!("http{s}://{}", self.addr)
    }

    pub fn worker_token_file(&self) -> PathBuf {
        self.data_dir.join("worker.token")
    }

    pub fn operator_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("operator.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub fn operator(&self) -> Operator {
        Operator::new(&self.http_url(), &self.operator_token()).unwrap()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("supervisor.log")).unwrap_or_default()
    }
}

impl Drop for SupervisorProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A headless worker process.
pub struct WorkerProc {
    child: Child,
    pub name: String,
}

impl WorkerProc {
    /// A worker that computes regardless of activity on this machine (the tests' machine is
    /// busy with the tests themselves).
    pub fn start(sup: &SupervisorProc, name: &str, cpus: u32) -> Self {
        Self::start_args(sup, name, cpus, &["--run-while-in-use"], &[])
    }

    /// A worker with extra flags and environment variables (an empty value removes one).
    pub fn start_args(
        sup: &SupervisorProc,
        name: &str,
        cpus: u32,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_with_token(sup, name, cpus, &sup.worker_token_file(), extra, env)
    }

    /// As [`Self::start_args`], with the worker token in `token_file` (a volunteer's own).
    pub fn start_with_token(
        sup: &SupervisorProc,
        name: &str,
        cpus: u32,
        token_file: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let log = std::fs::File::create(sup.data_dir.join(format!("{name}.log"))).unwrap();
        let mut cmd = Command::new(CLIENT);
        for (k, _) in env.iter().filter(|(_, v)| v.is_empty()) {
            cmd.env_remove(k);
        }
        let child = cmd
            .args(["--headless", "--server", &sup.ws_url(), "--name", name])
            .args(["--cpus", &cpus.to_string()])
            .arg("--token-file")
            .arg(token_file)
            .arg("--data-dir")
            .arg(sup.data_dir.join(format!("{name}.client")))
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().filter(|(_, v)| !v.is_empty()).copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start worker");
        Self {
            child,
            name: name.to_owned(),
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The worker's process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An HTTP client for raw requests in tests. The crate's reqwest has no crypto provider of its
/// own (`rustls-no-provider`): `reqwest::Client::new()` would panic, so every client is built
/// on the crate's TLS setup, as the binaries' are.
pub fn http() -> reqwest::Client {
    idlegrid::tls::ClientTls::new(None)
        .unwrap()
        .http_client(Duration::from_secs(60))
        .unwrap()
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `limit` saying what it waited for.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `n` workers are live and take tasks (their link measured, fast enough).
pub async fn wait_for_workers(op: &Operator, n: usize) -> serde_json::Value {
    wait_for(op, n, true).await
}

/// Waits until at least `n` workers are live, whether or not they take tasks (a worker held
/// back by a slow link counts).
pub async fn wait_for_live_workers(op: &Operator, n: usize) -> serde_json::Value {
    wait_for(op, n, false).await
}

async fn wait_for(op: &Operator, n: usize, taking_tasks: bool) -> serde_json::Value {
    eventually(
        Duration::from_secs(30),
        &format!("{n} live workers"),
        || async {
            let w = op.workers().await.ok()?;
            // Live, and unless asked otherwise not held back (its link measured): it takes
            // tasks from now on.
            let live = w
                .as_array()?
                .iter()
                .filter(|w| w["state"] == "live" && (!taking_tasks || w["held_back"].is_null()))
                .count();
            (live >= n).then_some(w)
        },
    )
    .await
}

/// Starts `n` workers named w1..wN running `cpus` tasks each, and waits until all are live.
pub async fn start_workers(sup: &SupervisorProc, n: usize, cpus: u32) -> Vec<WorkerProc> {
    let workers = (1..=n)
        .map(|i| WorkerProc::start(sup, &format!("w{i}"), cpus))
        .collect();
    wait_for_workers(&sup.operator(), n).await;
    workers
}

/// Waits until the job finishes; returns its summary.
pub async fn wait_for_job(op: &Operator, job: &JobId, limit: Duration) -> JobSummary {
    eventually(limit, &format!("job {job} to finish"), || async {
        let s = op.summary(job).await.ok()?;
        s.is_finished().then_some(s)
    })
    .await
}

/// The worker name for each worker id, from the API.
pub async fn worker_names(op: &Operator) -> std::collections::BTreeMap<String, String> {
    let w = op.workers().await.unwrap();
    w.as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["worker"].as_str().unwrap().to_owned(),
                w["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Tests that measure the machine itself (CPU use of other processes) run alone; the others
/// share it. Each test takes one of these guards first.
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub async fn shared_machine() -> tokio::sync::RwLockReadGuard<'static, ()> {
    MACHINE.read().await
}

pub async fn whole_machine() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    MACHINE.write().await
}

/// Every replica of `job` the status API shows: its worker's id and its progress.
pub async fn replica_progress(op: &Operator, job: &JobId) -> Option<Vec<(String, f64)>> {
    let status = op.status(job).await.ok()?;
    Some(
        status["task_states"]
            .as_array()?
            .iter()
            .flat_map(|t| t["replicas"].as_array().into_iter().flatten())
            .map(|r| {
                (
                    r["worker"].as_str().unwrap_or_default().to_owned(),
                    r["progress"].as_f64().unwrap_or(0.0),
                )
            })
            .collect(),
    )
}

/// The hello of a hand-driven worker: one slot, one core, 1 GiB of memory and disk.
pub fn test_hello(
    id: &str,
    token: &str,
    held: Vec<idlegrid::proto::ReplicaId>,
    available: bool,
) -> idlegrid::proto::WorkerMsg {
    idlegrid::proto::WorkerMsg::Hello {
        protocol: idlegrid::proto::PROTOCOL_VERSION,
        worker: id.into(),
        name: id.into(),
        token: token.into(),
        hardware: idlegrid::proto::Hardware {
            cores: 1,
            memory_mb: 1024,
            disk_mb: 1024,
            os: "test".into(),
            slots: 1,
            bench_mops: 0.0,
        },
        held,
        available,
    }
}

/// Runs `idlegrid-supervisor ARGS --server SUP` as an operator on the supervisor's machine would
/// (the token found where the supervisor left it): success, stdout, stderr.
pub async fn supervisor_cli(sup: &SupervisorProc, args: &[&str]) -> (bool, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(SUPERVISOR)
            .args(args)
            .args(["--server", &sup.http_url()])
            .env_remove("IDLEGRID_OPERATOR_TOKEN_FILE")
            .output(),
    )
    .await
    .expect("the command finished within 60 s")
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The supervisor's `/metrics` text, read with the operator token.
pub async fn metrics_text(sup: &SupervisorProc) -> String {
    http()
        .get(format!("{}/metrics", sup.http_url()))
        .bearer_auth(sup.operator_token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
