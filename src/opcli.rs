//! The operator's everyday verbs over the HTTP API: `jobs`, `status JOB`, `results JOB --out
//! DIR`, `cancel JOB`, `workers`. Each prints a short table for a person, or with `--json` one
//! JSON document for a script; every verb shares the connection flags of `submit` (`--server`,
//! `--token-file`, `--ca-file`).
//!
//! `results` writes what workers sent to the operator's disk, so it trusts none of it: a file
//! name a worker put in an output is reduced to a plain name inside DIR (never `../x` or an
//! absolute path), and each file is written to a temporary name first and renamed, so a
//! half-written picture is never left under its real name.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::operator::Operator;
use crate::proto::JobId;
use crate::supervisor::{self, report::JobSummary};

/// How to reach the supervisor: the flags every operator verb takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnArgs {
    /// The supervisor, http://HOST:PORT or https://HOST:PORT.
    #[arg(long, default_value = "http://127.0.0.1:7400")]
    pub server: String,
    /// Trust the CA certificates in this PEM file (a private CA) for an https:// server, besides
    /// the public roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// File holding the operator token (the supervisor's DATA_DIR/operator.token). Not needed
    /// for a supervisor on this machine started by the same user: it leaves its token where
    /// these commands find it.
    #[arg(long, env = "IDLEGRID_OPERATOR_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

impl ConnArgs {
    /// The operator token file: the one named, else the one a supervisor on this machine left
    /// for local use.
    pub fn token_file(&self) -> anyhow::Result<PathBuf> {
        if let Some(f) = &self.token_file {
            return Ok(f.clone());
        }
        let url = reqwest::Url::parse(&self.server).with_context(|| {
            format!(
                "invalid --server {:?}: expected http://HOST:PORT or https://HOST:PORT",
                self.server
            )
        })?;
        let local = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        let found = match (local, url.port_or_known_default()) {
            (true, Some(port)) => {
                supervisor::local_operator_token_path(port).filter(|p| p.is_file())
            }
            _ => None,
        };
        found.with_context(|| {
            format!(
                "no operator token for {}: pass --token-file (the supervisor's DATA_DIR/operator.token)",
                self.server
            )
        })
    }

    /// An operator client for the supervisor these flags name.
    pub fn operator(&self) -> anyhow::Result<Operator> {
        let token = supervisor::read_token(&self.token_file()?)?;
        Ok(Operator::with_ca_file(
            &self.server,
            &token,
            self.ca_file.as_deref(),
        )?)
    }
}

/// A job id as the supervisor makes them (`job-12`), checked before it goes into a URL: a
/// mistyped argument must not become some other request.
pub fn job_id(arg: &str) -> anyhow::Result<JobId> {
    let ok = !arg.is_empty()
        && arg.len() <= 64
        && !arg.starts_with('.')
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        anyhow::bail!(
            "invalid job id {arg:?}: a job id is letters, digits, '-', '_' and '.' (as `submit` printed it, e.g. job-1)"
        );
    }
    Ok(JobId(arg.to_owned()))
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Seconds for a person: `12.3 s`, `4 min 05 s`, `2 h 03 min`.
fn duration_text(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

/// How long a job has run: to its end, or to `now_ms` while it runs.
fn elapsed_ms(s: &JobSummary, now_ms: u64) -> u64 {
    s.finished_ms
        .unwrap_or(now_ms)
        .saturating_sub(s.submitted_ms)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Columns padded to their widest cell; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// The jobs table: newest first.
pub fn jobs_text(jobs: &[JobSummary], now_ms: u64) -> String {
    if jobs.is_empty() {
        return "no jobs yet\n".into();
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.job_id.clone(),
                j.state.clone(),
                format!("{}/{}", j.tasks_done, j.tasks),
                duration_text(elapsed_ms(j, now_ms)),
                j.name.clone(),
            ]
        })
        .collect();
    table(&["job", "state", "tasks", "time", "name"], &rows)
}

pub async fn jobs(conn: &ConnArgs, json: bool) -> anyhow::Result<()> {
    let jobs = conn.operator()?.jobs().await?;
    if json {
        return print_json(&jobs);
    }
    print!("{}", jobs_text(&jobs, now_ms()));
    Ok(())
}

/// What `status` shows for a person: the summary, tasks by state, and each running replica.
pub fn status_text(status: &serde_json::Value, now_ms: u64) -> anyhow::Result<String> {
    let summary: JobSummary =
        serde_json::from_value(status.clone()).context("the supervisor's status has no summary")?;
    let mut out = format!(
        "{} {:?}: {}, {}/{} tasks done, {}{}\n",
        summary.job_id,
        summary.name,
        summary.state,
        summary.tasks_done,
        summary.tasks,
        duration_text(elapsed_ms(&summary, now_ms)),
        if summary.is_finished() { "" } else { " so far" },
    );
    if let Some(e) = &summary.error {
        let _ = writeln!(out, "error: {e}");
    }
    let tasks = status["task_states"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &tasks {
        *by_state
            .entry(t["state"].as_str().unwrap_or("?"))
            .or_default() += 1;
    }
    if !by_state.is_empty() {
        let counts: Vec<String> = ["waiting", "ready", "running", "done"]
            .iter()
            .map(|s| format!("{s} {}", by_state.get(s).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(out, "tasks: {}", counts.join(", "));
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .flat_map(|t| {
            let task = t["id"].as_str().unwrap_or("?").to_owned();
            let critical = if t["critical"].as_bool() == Some(true) {
                "critical"
            } else {
                ""
            };
            t["replicas"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |r| {
                    vec![
                        task.clone(),
                        r["replica"].as_str().unwrap_or("?").to_owned(),
                        r["worker"].as_str().unwrap_or("?").to_owned(),
                        r["worker_state"].as_str().unwrap_or("?").to_owned(),
                        format!("{:.0}%", r["progress"].as_f64().unwrap_or(0.0) * 100.0),
                        critical.to_owned(),
                    ]
                })
        })
        .collect();
    if !rows.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["task", "replica", "worker", "worker state", "progress", ""],
            &rows,
        ));
    }
    Ok(out)
}

pub async fn status(conn: &ConnArgs, job: &str, json: bool) -> anyhow::Result<()> {
    let job = job_id(job)?;
    let status = conn.operator()?.status(&job).await?;
    if json {
        return print_json(&status);
    }
    print!("{}", status_text(&status, now_ms())?);
    Ok(())
}

pub async fn cancel(conn: &ConnArgs, job: &str, json: bool) -> anyhow::Result<()> {
    let job = job_id(job)?;
    let summary = conn.operator()?.cancel(&job).await?;
    if json {
        return print_json(&summary);
    }
    println!(
        "{}: {} ({}/{} tasks were done)",
        summary.job_id, summary.state, summary.tasks_done, summary.tasks
    );
    Ok(())
}

/// The workers table from `/api/workers`.
pub fn workers_text(workers: &serde_json::Value) -> String {
    let list = workers.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "no workers\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| {
            let hw = &w["hardware"];
            let slots = hw["slots"].as_u64().map_or("?".into(), |s| s.to_string());
            let link = match (
                w["link"]["up_kbps"].as_f64(),
                w["link"]["down_kbps"].as_f64(),
            ) {
                (Some(up), Some(down)) => format!("{up:.0}/{down:.0} kbit/s"),
                _ => "-".into(),
            };
            let agreed = w["agreed"].as_u64().unwrap_or(0);
            let disagreed = w["disagreed"].as_u64().unwrap_or(0);
            let quorums = match (agreed + disagreed, w["flagged"] == true) {
                (0, _) => "-".to_owned(),
                (_, false) => format!("{agreed}/{disagreed}"),
                (_, true) => format!("{agreed}/{disagreed} FLAGGED"),
            };
            vec![
                w["name"].as_str().unwrap_or("?").to_owned(),
                w["state"].as_str().unwrap_or("?").to_owned(),
                format!("{}/{slots}", w["replicas"].as_u64().unwrap_or(0)),
                format!("{:.2}", w["speed"].as_f64().unwrap_or(0.0)),
                link,
                quorums,
                w["worker"].as_str().unwrap_or("?").to_owned(),
            ]
        })
        .collect();
    table(
        &[
            "name",
            "state",
            "tasks/slots",
            "speed",
            "link up/down",
            "quorums agreed/rejected",
            "id",
        ],
        &rows,
    )
}

pub async fn workers(conn: &ConnArgs, json: bool) -> anyhow::Result<()> {
    let workers = conn.operator()?.workers().await?;
    if json {
        return print_json(&workers);
    }
    print!("{}", workers_text(&workers));
    Ok(())
}

/// A volunteer name checked before it goes into a request (and a URL).
fn volunteer_name(name: &str) -> anyhow::Result<()> {
    if !supervisor::volunteers::valid_name(name) {
        anyhow::bail!("invalid volunteer name {name:?}: 1-64 characters of A-Z a-z 0-9 . - _");
    }
    Ok(())
}

/// `token issue --name N`: prints the new token alone on stdout (for a file or a pipe), and on
/// stderr what to do with it.
pub async fn token_issue(conn: &ConnArgs, name: &str, json: bool) -> anyhow::Result<()> {
    volunteer_name(name)?;
    let issued = conn.operator()?.issue_token(name).await?;
    if json {
        return print_json(&issued);
    }
    println!("{}", issued.token);
    eprintln!(
        "worker token for {:?}: give it to that volunteer (their client's --token-file); it is not shown again",
        issued.name
    );
    Ok(())
}

pub async fn token_revoke(conn: &ConnArgs, name: &str, json: bool) -> anyhow::Result<()> {
    volunteer_name(name)?;
    let revoked = conn.operator()?.revoke_token(name).await?;
    if json {
        return print_json(&revoked);
    }
    let ids: Vec<&str> = revoked.disconnected.iter().map(|w| w.0.as_str()).collect();
    println!(
        "revoked {:?}; {} worker(s) disconnected{}",
        revoked.name,
        ids.len(),
        if ids.is_empty() {
            String::new()
        } else {
            format!(": {}", ids.join(", "))
        }
    );
    Ok(())
}

/// The `token list` table.
pub fn tokens_text(tokens: &[supervisor::TokenView]) -> String {
    if tokens.is_empty() {
        return "no volunteer tokens (workers use the shared worker token)\n".into();
    }
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.token.name.clone(),
                if t.token.revoked_ms.is_some() {
                    "revoked".into()
                } else {
                    "valid".into()
                },
                format!("{}/{}", t.connected, t.workers.len()),
                t.workers
                    .iter()
                    .map(|w| w.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    table(&["name", "state", "connected/workers", "worker ids"], &rows)
}

pub async fn token_list(conn: &ConnArgs, json: bool) -> anyhow::Result<()> {
    let tokens = conn.operator()?.tokens().await?;
    if json {
        return print_json(&tokens);
    }
    print!("{}", tokens_text(&tokens));
    Ok(())
}

/// A name from outside made safe as one file name inside a directory: its last path component,
/// with anything but letters, digits, `.`, `-` and `_` turned into `_`, no leading dot, at most
/// 100 characters. `None` when nothing is left.
pub fn safe_file_name(raw: &str) -> Option<String> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    let name: String = trimmed.chars().take(100).collect();
    (!name.is_empty() && name.chars().any(|c| c != '_')).then_some(name)
}

/// Writes `bytes` to `path` by way of a temporary file in the same directory, so that `path`
/// holds either nothing or all of it.
fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A file `results` wrote for a task.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Written {
    pub task: String,
    /// Its path under the output directory.
    pub path: PathBuf,
    pub bytes: u64,
    /// `result` (the task's output as JSON) or `file` (a file the output carried).
    pub what: &'static str,
}

/// Writes each task's output under `dir` as `TASK.json`, and each file an output carries
/// (`{"file": {"name", "media_type", "base64"}}`) as its own file, named after the sanitised
/// name it came with (prefixed with the task id when two tasks bring the same name); in the
/// JSON the file's bytes are replaced by `saved_as`. Returns what it wrote, in task order.
pub fn write_results(
    dir: &Path,
    results: &serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<Vec<Written>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for (task, output) in results {
        let stem = safe_file_name(task).unwrap_or_else(|| "task".into());
        let mut json_name = format!("{stem}.json");
        if !taken.insert(json_name.clone()) {
            json_name = format!("{stem}-{}.json", taken.len());
            taken.insert(json_name.clone());
        }
        let mut output = output.clone();
        if output.get("file").is_some() {
            let (name, _media_type, bytes) = supervisor::http::decode_file(&output)
                .map_err(|e| anyhow::anyhow!("task {task}: {e}"))?;
            let base = safe_file_name(&name).unwrap_or_else(|| format!("{stem}.bin"));
            let mut file_name = base.clone();
            if taken.contains(&file_name) {
                file_name = format!("{stem}-{base}");
            }
            taken.insert(file_name.clone());
            let path = dir.join(&file_name);
            write_whole(&path, &bytes)?;
            written.push(Written {
                task: task.clone(),
                path,
                bytes: bytes.len() as u64,
                what: "file",
            });
            if let Some(file) = output.get_mut("file").and_then(|f| f.as_object_mut()) {
                file.remove("base64");
                file.insert("saved_as".into(), file_name.into());
            }
        }
        let text = serde_json::to_vec_pretty(&output)?;
        let path = dir.join(&json_name);
        write_whole(&path, &text)?;
        written.push(Written {
            task: task.clone(),
            path,
            bytes: text.len() as u64,
            what: "result",
        });
    }
    Ok(written)
}

pub async fn results(conn: &ConnArgs, job: &str, out: &Path, json: bool) -> anyhow::Result<()> {
    let job = job_id(job)?;
    let op = conn.operator()?;
    let summary = op.summary(&job).await?;
    let all = op.results(&job).await?;
    let map = all
        .as_object()
        .context("the supervisor's results are not a JSON object")?;
    let written = write_results(out, map)?;
    if json {
        return print_json(&serde_json::json!({
            "job_id": summary.job_id,
            "state": summary.state,
            "dir": out,
            "results": written.iter().filter(|w| w.what == "result").count(),
            "written": written,
        }));
    }
    let files: Vec<&Written> = written.iter().filter(|w| w.what == "file").collect();
    println!(
        "{}: {} results of {} tasks ({}) written to {}",
        summary.job_id,
        written.len() - files.len(),
        summary.tasks,
        summary.state,
        out.display()
    );
    for f in files {
        println!(
            "{} ({} bytes, from task {})",
            f.path.display(),
            f.bytes,
            f.task
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::json;

    #[test]
    fn names_from_workers_stay_inside_the_output_directory() {
        assert_eq!(
            safe_file_name("mandelbrot.png").as_deref(),
            Some("mandelbrot.png")
        );
        assert_eq!(
            safe_file_name("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(safe_file_name("/abs/x.png").as_deref(), Some("x.png"));
        assert_eq!(safe_file_name("..\\win\\y.txt").as_deref(), Some("y.txt"));
        assert_eq!(safe_file_name(".hidden").as_deref(), Some("hidden"));
        assert_eq!(safe_file_name("a b;c$.png").as_deref(), Some("a_b_c_.png"));
        assert_eq!(safe_file_name(".."), None);
        assert_eq!(safe_file_name(""), None);
        assert_eq!(safe_file_name("../"), None);
        assert_eq!(safe_file_name(&"x".repeat(500)).map(|n| n.len()), Some(100));
    }

    #[test]
    fn results_are_written_as_json_and_carried_files_as_files_without_escaping() {
        let dir = tempfile::tempdir().unwrap();
        let png = b"\x89PNG\r\n\x1a\nrest of a picture";
        let b64 = base64::engine::general_purpose::STANDARD.encode(png);
        let results = json!({
            "merge": {"file": {"name": "mandelbrot.png", "media_type": "image/png", "base64": b64}, "width": 4},
            "evil": {"file": {"name": "../../outside.png", "media_type": "image/png", "base64": b64}},
            "same": {"file": {"name": "mandelbrot.png", "base64": b64}},
            "tile-0": {"iterations": 17},
        });
        let written = write_results(dir.path(), results.as_object().unwrap()).unwrap();
        // Everything is inside the directory.
        for w in &written {
            assert_eq!(w.path.parent(), Some(dir.path()), "{w:?}");
        }
        assert_eq!(
            std::fs::read(dir.path().join("mandelbrot.png")).unwrap(),
            png
        );
        assert_eq!(std::fs::read(dir.path().join("outside.png")).unwrap(), png);
        assert!(!dir.path().parent().unwrap().join("outside.png").exists());
        // The second task with the same file name gets its own, prefixed with its id.
        assert_eq!(
            std::fs::read(dir.path().join("same-mandelbrot.png")).unwrap(),
            png
        );
        let merge: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("merge.json")).unwrap()).unwrap();
        assert_eq!(merge["file"]["saved_as"], "mandelbrot.png");
        assert!(merge["file"].get("base64").is_none(), "{merge}");
        assert_eq!(merge["width"], 4);
        let tile: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("tile-0.json")).unwrap())
                .unwrap();
        assert_eq!(tile, json!({"iterations": 17}));
        assert_eq!(written.iter().filter(|w| w.what == "file").count(), 3);
        // No temporary files are left behind.
        let names: BTreeSet<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 7, "{names:?}");
    }

    #[test]
    fn an_output_whose_file_is_not_base64_is_an_error_naming_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let results = json!({"bad": {"file": {"name": "x.png", "base64": "%%%"}}});
        let e = write_results(dir.path(), results.as_object().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("task bad") && e.contains("base64"), "{e}");
    }

    #[test]
    fn a_job_id_that_is_not_one_is_refused_before_any_request() {
        assert_eq!(job_id("job-12").unwrap(), JobId("job-12".into()));
        for bad in ["", "../api/workers", "job 1", "job/1", ".hidden", "job?x=1"] {
            let e = job_id(bad).unwrap_err().to_string();
            assert!(e.contains("invalid job id"), "{bad}: {e}");
        }
    }

    fn summary(id: &str, state: &str, done: u32, finished: Option<u64>) -> JobSummary {
        JobSummary {
            job_id: id.into(),
            name: "render".into(),
            state: state.into(),
            error: None,
            submitted_ms: 1_000,
            finished_ms: finished,
            tasks: 14,
            tasks_done: done,
        }
    }

    #[test]
    fn the_tables_show_state_progress_and_time() {
        let text = jobs_text(
            &[
                summary("job-2", "running", 3, None),
                summary("job-1", "completed", 14, Some(126_000)),
            ],
            61_000,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("job ") && lines[0].contains("state"),
            "{text}"
        );
        assert!(
            lines[1].contains("job-2")
                && lines[1].contains("3/14")
                && lines[1].contains("1 min 00 s"),
            "{text}"
        );
        assert!(
            lines[2].contains("completed") && lines[2].contains("2 min 05 s"),
            "{text}"
        );
        assert_eq!(jobs_text(&[], 0), "no jobs yet\n");

        let status = json!({
            "job_id": "job-2", "name": "render", "state": "running", "submitted_ms": 1000,
            "tasks": 3, "tasks_done": 1,
            "task_states": [
                {"id": "a", "state": "done", "critical": false, "replicas": []},
                {"id": "b", "state": "running", "critical": true, "replicas": [
                    {"replica": "r1.4", "worker": "w1", "worker_state": "live", "progress": 0.5},
                    {"replica": "r1.5", "worker": "w2", "worker_state": "busy", "progress": 0.25}
                ]},
                {"id": "c", "state": "waiting", "critical": false, "replicas": []}
            ]
        });
        let text = status_text(&status, 11_000).unwrap();
        assert!(
            text.starts_with("job-2 \"render\": running, 1/3 tasks done, 10.0 s so far"),
            "{text}"
        );
        assert!(
            text.contains("tasks: waiting 1, ready 0, running 1, done 1"),
            "{text}"
        );
        assert!(
            text.contains("r1.4") && text.contains("50%") && text.contains("critical"),
            "{text}"
        );
        assert!(status_text(&json!({"nope": 1}), 0).is_err());
    }
}
