//! Finished outcomes (results and failures) that the supervisor has not acknowledged yet. The
//! engine keeps each one until a `ResultAck` (or a `Cancel`, or the welcome's `drop`), sends it
//! again on every connection, and lists it in the hello's `held`.
//!
//! Outcomes are kept in memory and, when the worker has a data dir, on disk, so that a restart
//! (even after SIGKILL) loses no finished work:
//!
//! ```text
//! outbox/EPOCH.SEQ.outcome   JSON: replica, execution, and the failure, inline output or blob ref
//! outbox/EPOCH.SEQ.output    a big output's JSON text (> BULK_THRESHOLD_BYTES), uploaded from here
//! ```
//!
//! Each file is written to a temp file, fsynced and renamed; the `.output` before its `.outcome`,
//! so an `.outcome` never names text that is not there. Shaping an outcome (serialising the
//! output, the size limit, cutting the error) lives here too; it runs on the task thread that
//! produced it, never on the async runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::datadir::{sync_dir, write_durably};
use crate::proto::{
    self, BlobRef, Execution, Payload, ReplicaId, WorkerMsg, cut_error, sha256_hex,
};

/// A finished replica's outcome, ready to report.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub replica: ReplicaId,
    pub execution: Execution,
    pub kind: OutcomeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeKind {
    /// Output small enough to go inline.
    Inline(serde_json::Value),
    /// Output uploaded out of band: its JSON text and reference.
    Big {
        text: Arc<[u8]>,
        blob: BlobRef,
    },
    Failure(String),
}

impl Outcome {
    /// Shapes what a task returned: an output above `max_output_bytes` becomes a failure, a big
    /// one keeps its text for the upload, an error is cut to [`proto::MAX_ERROR_CHARS`].
    pub fn new(
        replica: ReplicaId,
        execution: Execution,
        result: Result<serde_json::Value, String>,
        max_output_bytes: u64,
    ) -> Self {
        let kind = match result {
            Err(error) => OutcomeKind::Failure(cut_error(error)),
            Ok(value) => match serde_json::to_vec(&value) {
                Err(e) => OutcomeKind::Failure(format!("cannot encode the output: {e}")),
                Ok(text) if text.len() as u64 > max_output_bytes => OutcomeKind::Failure(format!(
                    "output of {} bytes exceeds this pool's limit of {max_output_bytes} bytes",
                    text.len()
                )),
                Ok(text) if text.len() > proto::BULK_THRESHOLD_BYTES => OutcomeKind::Big {
                    blob: BlobRef {
                        bytes: text.len() as u64,
                        sha256: sha256_hex(&text),
                    },
                    text: text.into(),
                },
                Ok(_) => OutcomeKind::Inline(value),
            },
        };
        Self {
            replica,
            execution,
            kind,
        }
    }

    /// The message that reports it (for a big output: once its upload is complete).
    pub fn message(&self) -> WorkerMsg {
        let (replica, execution) = (self.replica, self.execution);
        match &self.kind {
            OutcomeKind::Inline(v) => WorkerMsg::Result {
                replica,
                output: Payload::Inline(v.clone()),
                execution,
            },
            OutcomeKind::Big { blob, .. } => WorkerMsg::Result {
                replica,
                output: Payload::Blob(blob.clone()),
                execution,
            },
            OutcomeKind::Failure(error) => WorkerMsg::Failure {
                replica,
                error: error.clone(),
                execution,
            },
        }
    }
}

/// The `.outcome` file.
#[derive(Serialize, Deserialize)]
struct Record {
    replica: ReplicaId,
    execution: Execution,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blob: Option<BlobRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Where outcomes are kept on disk; `None` keeps them in memory only (in-process tests and
/// benches). Cheap to clone: task threads save through their own copy.
#[derive(Debug, Clone, Default)]
pub struct Store {
    dir: Option<PathBuf>,
}

impl Store {
    pub fn in_memory() -> Self {
        Self { dir: None }
    }

    pub fn on_disk(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir: Some(dir) })
    }

    fn paths(dir: &Path, r: ReplicaId) -> (PathBuf, PathBuf) {
        let key = r.key();
        (
            dir.join(format!("{key}.outcome")),
            dir.join(format!("{key}.output")),
        )
    }

    /// Writes an outcome durably (blocking: call it from a task thread).
    pub fn save(&self, o: &Outcome) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let (outcome_path, output_path) = Self::paths(dir, o.replica);
        let mut record = Record {
            replica: o.replica,
            execution: o.execution,
            output: None,
            blob: None,
            error: None,
        };
        match &o.kind {
            OutcomeKind::Inline(v) => record.output = Some(v.clone()),
            OutcomeKind::Big { text, blob } => {
                write_durably(&output_path, text)?;
                record.blob = Some(blob.clone());
            }
            OutcomeKind::Failure(e) => record.error = Some(e.clone()),
        }
        let bytes = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        write_durably(&outcome_path, &bytes)
    }

    /// Forgets an outcome's files (acknowledged, dropped or cancelled).
    pub fn delete(&self, r: ReplicaId) {
        let Some(dir) = &self.dir else {
            return;
        };
        let (outcome_path, output_path) = Self::paths(dir, r);
        for p in [outcome_path, output_path] {
            if let Err(e) = std::fs::remove_file(&p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!("cannot delete {}: {e}", p.display());
            }
        }
        let _ = sync_dir(dir);
    }

    /// Every outcome kept from an earlier run. Unreadable files are logged and left alone
    /// (for someone to look at); leftover temp files are removed.
    pub fn load(&self) -> BTreeMap<ReplicaId, Outcome> {
        let mut out = BTreeMap::new();
        let Some(dir) = &self.dir else {
            return out;
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                warn!("cannot read the outbox {}: {e}", dir.display());
                return out;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("tmp") => {
                    let _ = std::fs::remove_file(&path);
                }
                Some("outcome") => match load_one(&path) {
                    Ok(o) => {
                        out.insert(o.replica, o);
                    }
                    Err(e) => warn!("ignoring outbox file {}: {e}", path.display()),
                },
                _ => {}
            }
        }
        out
    }
}

fn load_one(path: &Path) -> Result<Outcome, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let r: Record = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let kind = match (r.output, r.blob, r.error) {
        (Some(v), None, None) => OutcomeKind::Inline(v),
        (None, None, Some(e)) => OutcomeKind::Failure(e),
        (None, Some(blob), None) => {
            let text_path = path.with_extension("output");
            let text = std::fs::read(&text_path)
                .map_err(|e| format!("cannot read {}: {e}", text_path.display()))?;
            if text.len() as u64 != blob.bytes || sha256_hex(&text) != blob.sha256 {
                return Err(format!(
                    "{} does not match its recorded length and sha256",
                    text_path.display()
                ));
            }
            OutcomeKind::Big {
                text: text.into(),
                blob,
            }
        }
        _ => return Err("it holds no single output, blob or error".into()),
    };
    Ok(Outcome {
        replica: r.replica,
        execution: r.execution,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::MAX_ERROR_CHARS;

    fn exec() -> Execution {
        Execution {
            wall_ms: 5,
            cpu_ms: 4,
        }
    }

    #[test]
    fn outcomes_survive_a_reload_and_are_gone_once_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::on_disk(tmp.path().join("outbox")).unwrap();
        let big = "x".repeat(proto::BULK_THRESHOLD_BYTES + 10);
        let outcomes = [
            Outcome::new(
                ReplicaId::new(1, 1),
                exec(),
                Ok(serde_json::json!({"n": 1})),
                u64::MAX,
            ),
            Outcome::new(ReplicaId::new(1, 2), exec(), Err("boom".into()), u64::MAX),
            Outcome::new(
                ReplicaId::new(1, 3),
                exec(),
                Ok(serde_json::json!(big)),
                u64::MAX,
            ),
        ];
        assert!(matches!(outcomes[2].kind, OutcomeKind::Big { .. }));
        for o in &outcomes {
            store.save(o).unwrap();
        }
        let loaded = Store::on_disk(tmp.path().join("outbox")).unwrap().load();
        assert_eq!(loaded.values().cloned().collect::<Vec<_>>(), outcomes);
        for o in &outcomes {
            store.delete(o.replica);
        }
        assert!(store.load().is_empty());
        assert_eq!(
            std::fs::read_dir(tmp.path().join("outbox"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_big_output_whose_text_was_damaged_is_not_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::on_disk(tmp.path().to_owned()).unwrap();
        let big = "y".repeat(proto::BULK_THRESHOLD_BYTES + 1);
        let o = Outcome::new(
            ReplicaId::new(0, 9),
            exec(),
            Ok(serde_json::json!(big)),
            u64::MAX,
        );
        store.save(&o).unwrap();
        std::fs::write(tmp.path().join("0.9.output"), b"\"short\"").unwrap();
        assert!(store.load().is_empty());
    }

    #[test]
    fn an_output_above_the_pools_limit_becomes_a_failure_naming_both_sizes() {
        let o = Outcome::new(
            ReplicaId::new(0, 1),
            exec(),
            Ok(serde_json::json!("abcdefgh")),
            5,
        );
        assert_eq!(
            o.kind,
            OutcomeKind::Failure("output of 10 bytes exceeds this pool's limit of 5 bytes".into())
        );
    }

    #[test]
    fn failure_messages_are_cut_to_the_protocols_limit() {
        let o = Outcome::new(
            ReplicaId::new(0, 1),
            exec(),
            Err("é".repeat(MAX_ERROR_CHARS + 50)),
            100,
        );
        let OutcomeKind::Failure(e) = o.kind else {
            panic!("not a failure");
        };
        assert_eq!(e.chars().count(), MAX_ERROR_CHARS);
    }
}
