//! What the supervisor tells operators about a job: its summary and its report (makespan,
//! replicas, reissues and why, execution time and cost per worker), as JSON over HTTP and as a
//! human table. Shared by the HTTP API, `submit --wait`, `demo` and the benches. Pure data and
//! formatting: no I/O.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub job_id: String,
    pub name: String,
    /// `running`, `completed`, `failed` or `cancelled`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub submitted_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    pub tasks: u32,
    pub tasks_done: u32,
}

impl JobSummary {
    pub fn is_finished(&self) -> bool {
        self.state != "running"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reissue {
    pub task: String,
    /// The worker that got the new replica.
    pub worker: String,
    pub at_ms: u64,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WorkerCost {
    pub worker: String,
    pub name: String,
    pub replicas: u32,
    /// Replicas whose result was their task's first.
    pub won: u32,
    pub exec_ms: u64,
    pub cpu_ms: u64,
    pub cost: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub makespan_ms: u64,
    pub replicas_started: u32,
    pub reissued: u32,
    pub reissues: Vec<Reissue>,
    pub workers: Vec<WorkerCost>,
    /// Credits: a second of execution on the reference worker costs one.
    pub cost: f64,
}

impl Report {
    /// The report as a table for people.
    pub fn to_text(&self) -> String {
        let s = &self.summary;
        let mut out = String::new();
        let _ = writeln!(out, "job {} ({}): {}", s.job_id, s.name, s.state);
        if let Some(e) = &s.error {
            let _ = writeln!(out, "  error: {e}");
        }
        let _ = writeln!(
            out,
            "  tasks {}/{}   makespan {:.3} s   replicas started {}   reissued {}   cost {:.2} credits",
            s.tasks_done,
            s.tasks,
            self.makespan_ms as f64 / 1000.0,
            self.replicas_started,
            self.reissued,
            self.cost
        );
        if !self.reissues.is_empty() {
            let _ = writeln!(out, "  reissues:");
            for r in &self.reissues {
                let at = r.at_ms.saturating_sub(s.submitted_ms) as f64 / 1000.0;
                let _ = writeln!(
                    out,
                    "    +{at:.3} s  task {} -> {}: {}",
                    r.task, r.worker, r.why
                );
            }
        }
        let _ = writeln!(
            out,
            "  {:<28} {:>8} {:>5} {:>10} {:>10} {:>8}",
            "worker", "replicas", "won", "exec s", "cpu s", "cost"
        );
        for w in &self.workers {
            let label = if w.name.is_empty() || w.name == w.worker {
                w.worker.clone()
            } else {
                format!("{} ({})", w.name, w.worker)
            };
            let _ = writeln!(
                out,
                "  {:<28} {:>8} {:>5} {:>10.3} {:>10.3} {:>8.2}",
                label,
                w.replicas,
                w.won,
                w.exec_ms as f64 / 1000.0,
                w.cpu_ms as f64 / 1000.0,
                w.cost
            );
        }
        out
    }
}
