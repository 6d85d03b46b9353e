//! The supervisor's durable store: jobs, results and execution records in SQLite (WAL).
//!
//! The ordering rules that make a `kill -9` harmless live here and in the driver: a job is stored
//! before it is acknowledged, and a result is stored (with its execution record, in one
//! transaction) before the scheduler marks its task done. After a restart, [`Store::unfinished`]
//! gives back everything needed to resume. Only the driver thread uses the store; nothing here
//! knows about sockets or the scheduler.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::report::{CandidateRow, JobSummary, ReplicaRow, Report, Validation};
use super::volunteers::TokenRecord;
use crate::job::JobSpec;
use crate::proto::{Execution, JobId, ReplicaId, TaskId, WorkerId};
use crate::sched::{Candidate, CapacityClass, KindSpeed, Reputation};

/// 2: replica ids are `EPOCH.SEQ` text (64-bit per-boot counters).
/// 3: each replica's capacity class and reissue cause; measured speeds by worker and kind
/// (`worker_speeds`).
/// 4: each job's task count (`jobs.task_count`): a summary no longer parses the job's spec.
/// 5: quorum validation: the outputs of quorum tasks (`candidates`) and each worker's record
/// against quorums (`worker_reputation`).
/// An older store is migrated in place when opened.
const SCHEMA_VERSION: i64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("store {path} has schema version {found}, this supervisor knows {SCHEMA_VERSION}")]
    Schema { path: PathBuf, found: i64 },
    #[error(
        "cannot migrate the store {path} from schema version {from} to {SCHEMA_VERSION}: {source}"
    )]
    Migrate {
        path: PathBuf,
        from: i64,
        source: rusqlite::Error,
    },
    #[error("store query failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored job {job} is unreadable: {source}")]
    Corrupt {
        job: String,
        source: serde_json::Error,
    },
}

/// How a replica ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaEnd {
    /// Its result was the task's first (or, for a quorum task, gave the agreed output).
    Won,
    /// A quorum task's output, stored as a candidate until enough agree.
    Candidate,
    /// It finished after another replica had won.
    Late,
    Failed,
    Cancelled,
    /// Its worker was lost or dropped it.
    Lost,
}

impl ReplicaEnd {
    fn as_str(self) -> &'static str {
        match self {
            ReplicaEnd::Won => "won",
            ReplicaEnd::Candidate => "candidate",
            ReplicaEnd::Late => "late",
            ReplicaEnd::Failed => "failed",
            ReplicaEnd::Cancelled => "cancelled",
            ReplicaEnd::Lost => "lost",
        }
    }
}

/// A write the driver defers until the frames of a decision have left (see
/// [`Store::write_batch`]).
#[derive(Debug, Clone)]
pub enum Record {
    Started(ReplicaStart),
    Ended {
        replica: ReplicaId,
        end: ReplicaEnd,
        exec: Option<Execution>,
        error: Option<String>,
        at_ms: u64,
    },
    /// A replica recorded as lost came back with its worker.
    Reopened(ReplicaId),
    /// What a cancelled replica used before it stopped (kept once; for its cost).
    Measured {
        replica: ReplicaId,
        exec: Execution,
    },
    Activity(ActivityRecord),
    JobFinished {
        job: JobId,
        state: &'static str,
        error: Option<String>,
        at_ms: u64,
    },
}

/// One replica as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaInfo {
    pub job: JobId,
    pub task: TaskId,
    pub worker: WorkerId,
    pub started_ms: u64,
    /// `won`, `late`, `failed`, `cancelled`, `lost`, or none while it runs.
    pub outcome: Option<String>,
}

/// A job to resume after a restart.
#[derive(Debug)]
pub struct StoredJob {
    pub id: JobId,
    pub spec: JobSpec,
    pub done: BTreeMap<TaskId, serde_json::Value>,
    pub running: Vec<(ReplicaId, TaskId, WorkerId)>,
    /// Quorum tasks' outputs without a verdict yet, in the order they were stored.
    pub candidates: Vec<(TaskId, Candidate)>,
}

/// An `Activity` message as recorded: who, what kind, when seen (worker clock) and when
/// received (supervisor clock), both Unix milliseconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActivityRecord {
    pub worker: String,
    pub worker_name: String,
    pub kind: String,
    pub at_ms: u64,
    pub received_ms: u64,
}

/// One started replica, as recorded.
#[derive(Debug, Clone)]
pub struct ReplicaStart {
    pub replica: ReplicaId,
    pub job: JobId,
    pub task: TaskId,
    pub worker: WorkerId,
    pub worker_name: String,
    /// Credits per CPU-second: the rate of `class` when the replica was assigned.
    pub rate: f64,
    /// The worker's capacity class when the replica was assigned.
    pub class: CapacityClass,
    /// `first`, `redundant`, `saturation`, `speculative` or `reissue`.
    pub reason: &'static str,
    /// For a reissue: its cause's label (`worker_lost`, `straggler`, `stalled`, `deadline`, ...).
    pub cause: Option<&'static str>,
    /// For a reissue: why, in words.
    pub detail: Option<String>,
    pub at_ms: u64,
}

pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("idlegrid.sqlite3");
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(open_err)?;
        // WAL keeps readers off the writer's back; FULL makes every commit survive a power cut,
        // not just a process crash (an fsync costs ~0.1 ms here).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS jobs (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 id TEXT NOT NULL UNIQUE,
                 name TEXT NOT NULL,
                 spec TEXT NOT NULL,
                 state TEXT NOT NULL,
                 error TEXT,
                 submitted_ms INTEGER NOT NULL,
                 finished_ms INTEGER,
                 task_count INTEGER);
             CREATE TABLE IF NOT EXISTS results (
                 job TEXT NOT NULL REFERENCES jobs(id),
                 task TEXT NOT NULL,
                 output TEXT NOT NULL,
                 replica TEXT NOT NULL,
                 done_ms INTEGER NOT NULL,
                 PRIMARY KEY (job, task));
             CREATE TABLE IF NOT EXISTS replicas (
                 id TEXT PRIMARY KEY,
                 job TEXT NOT NULL REFERENCES jobs(id),
                 task TEXT NOT NULL,
                 worker TEXT NOT NULL,
                 worker_name TEXT NOT NULL,
                 rate REAL NOT NULL,
                 reason TEXT NOT NULL,
                 detail TEXT,
                 started_ms INTEGER NOT NULL,
                 ended_ms INTEGER,
                 outcome TEXT,
                 wall_ms INTEGER,
                 cpu_ms INTEGER,
                 error TEXT,
                 class TEXT,
                 cause TEXT);
             CREATE TABLE IF NOT EXISTS activity (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 worker TEXT NOT NULL,
                 worker_name TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 at_ms INTEGER NOT NULL,
                 received_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS worker_speeds (
                 worker TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 speed REAL NOT NULL,
                 samples INTEGER NOT NULL,
                 updated_ms INTEGER NOT NULL,
                 PRIMARY KEY (worker, kind));
             CREATE TABLE IF NOT EXISTS volunteer_tokens (
                 name TEXT PRIMARY KEY,
                 sha256 TEXT NOT NULL UNIQUE,
                 created_ms INTEGER NOT NULL,
                 revoked_ms INTEGER);
             CREATE TABLE IF NOT EXISTS worker_bindings (
                 worker TEXT PRIMARY KEY,
                 volunteer TEXT NOT NULL,
                 bound_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS candidates (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 replica TEXT NOT NULL UNIQUE,
                 job TEXT NOT NULL REFERENCES jobs(id),
                 task TEXT NOT NULL,
                 worker TEXT NOT NULL,
                 digest TEXT NOT NULL,
                 output TEXT NOT NULL,
                 received_ms INTEGER NOT NULL,
                 verdict TEXT);
             CREATE INDEX IF NOT EXISTS candidates_by_job ON candidates(job, task);
             CREATE TABLE IF NOT EXISTS worker_reputation (
                 worker TEXT PRIMARY KEY,
                 agreed INTEGER NOT NULL,
                 disagreed INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS replicas_by_job ON replicas(job);
             CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state);",
        )
        .map_err(open_err)?;
        let version: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(open_err)?;
        match version {
            None => {
                conn.execute("INSERT INTO meta VALUES ('schema', ?1)", [SCHEMA_VERSION])
                    .map_err(open_err)?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(from @ (2..=4)) => migrate(&conn, from).map_err(|source| StoreError::Migrate {
                path: path.clone(),
                from,
                source,
            })?,
            Some(found) => return Err(StoreError::Schema { path, found }),
        }
        Ok(Self { conn })
    }

    /// Every volunteer token (digests only), by name.
    pub fn volunteer_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, sha256, created_ms, revoked_ms FROM volunteer_tokens ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(TokenRecord {
                name: r.get(0)?,
                sha256: r.get(1)?,
                created_ms: r.get::<_, i64>(2)? as u64,
                revoked_ms: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
            })
        })?;
        rows.collect::<Result<_, _>>().map_err(Into::into)
    }

    /// A token for `name` (a new one replaces an earlier, revoked or not), kept as its digest.
    pub fn issue_token(
        &mut self,
        name: &str,
        sha256: &str,
        now_ms: u64,
    ) -> Result<TokenRecord, StoreError> {
        self.conn.execute(
            "INSERT INTO volunteer_tokens (name, sha256, created_ms, revoked_ms)
             VALUES (?1, ?2, ?3, NULL)
             ON CONFLICT(name) DO UPDATE SET sha256 = ?2, created_ms = ?3, revoked_ms = NULL",
            rusqlite::params![name, sha256, now_ms as i64],
        )?;
        Ok(TokenRecord {
            name: name.to_owned(),
            sha256: sha256.to_owned(),
            created_ms: now_ms,
            revoked_ms: None,
        })
    }

    /// Marks `name`'s token revoked (kept, so the refusal can say so). `None`: no such token.
    pub fn revoke_token(
        &mut self,
        name: &str,
        now_ms: u64,
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.conn.execute(
            "UPDATE volunteer_tokens SET revoked_ms = COALESCE(revoked_ms, ?2) WHERE name = ?1",
            rusqlite::params![name, now_ms as i64],
        )?;
        Ok(self
            .volunteer_tokens()?
            .into_iter()
            .find(|t| t.name == name))
    }

    /// Which volunteer each bound worker id belongs to.
    pub fn worker_bindings(&self) -> Result<Vec<(WorkerId, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT worker, volunteer FROM worker_bindings")?;
        let rows = stmt.query_map([], |r| Ok((WorkerId(r.get(0)?), r.get(1)?)))?;
        rows.collect::<Result<_, _>>().map_err(Into::into)
    }

    /// Binds a worker id to a volunteer for good.
    pub fn bind_worker(
        &mut self,
        worker: &WorkerId,
        volunteer: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO worker_bindings (worker, volunteer, bound_ms) VALUES (?1, ?2, ?3)",
            rusqlite::params![worker.0, volunteer, now_ms as i64],
        )?;
        Ok(())
    }

    /// Keeps a worker's measured speed for one task kind, under its stable id.
    pub fn save_speeds(
        &mut self,
        speeds: &[(WorkerId, KindSpeed)],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        if speeds.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO worker_speeds (worker, kind, speed, samples, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (worker, s) in speeds {
                stmt.execute(params![
                    worker.0,
                    s.kind,
                    s.speed,
                    i64::from(s.samples),
                    now_ms as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A worker's measured speeds by kind, as [`Store::save_speeds`] kept them.
    pub fn speeds(&self, worker: &WorkerId) -> Result<Vec<KindSpeed>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT kind, speed, samples FROM worker_speeds WHERE worker = ?1 ORDER BY kind",
        )?;
        let rows = stmt.query_map([&worker.0], |r| {
            Ok(KindSpeed {
                kind: r.get(0)?,
                speed: r.get(1)?,
                samples: u32::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
            })
        })?;
        rows.collect::<Result<_, _>>().map_err(Into::into)
    }

    /// Counts one more boot and returns its number, the epoch of this boot's replica ids.
    pub fn next_epoch(&mut self) -> Result<u32, StoreError> {
        let tx = self.conn.transaction()?;
        let epoch: i64 = tx
            .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0)
            + 1;
        tx.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?1)", [epoch])?;
        tx.commit()?;
        Ok(u32::try_from(epoch).unwrap_or(u32::MAX))
    }

    /// Stores a new job and returns its id. Durable when this returns.
    pub fn insert_job(&mut self, spec: &JobSpec, now_ms: u64) -> Result<JobId, StoreError> {
        let spec_json = serde_json::to_string(spec).map_err(|source| StoreError::Corrupt {
            job: spec.name.clone(),
            source,
        })?;
        self.insert_job_json(&spec.name, spec.tasks.len(), &spec_json, now_ms)
    }

    /// Stores a job whose spec is already JSON text (serialised off the driver thread: a job of
    /// 100,000 tasks takes a while).
    pub fn insert_job_json(
        &mut self,
        name: &str,
        task_count: usize,
        spec_json: &str,
        now_ms: u64,
    ) -> Result<JobId, StoreError> {
        let tx = self.conn.transaction()?;
        let seq: i64 = tx.query_row(
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0) + 1",
            [],
            |r| r.get(0),
        )?;
        let id = JobId(format!("job-{seq}"));
        tx.execute(
            "INSERT INTO jobs (seq, id, name, spec, state, submitted_ms, task_count)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)",
            params![seq, id.0, name, spec_json, now_ms as i64, task_count as i64],
        )?;
        tx.commit()?;
        Ok(id)
    }

    pub fn record_replica_started(&mut self, s: &ReplicaStart) -> Result<(), StoreError> {
        insert_replica(&self.conn, s)
    }

    /// Stores a task's result and the execution record of the replica that produced it, in one
    /// transaction. If the task already has a result, only the execution record is kept (as
    /// late). Returns whether this result was the task's first.
    /// `output` is the output's JSON text.
    pub fn record_result(
        &mut self,
        replica: ReplicaId,
        job: &JobId,
        task: &TaskId,
        output: &str,
        exec: Execution,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let row = ResultRow {
            replica,
            job,
            task,
            output,
            exec,
            now_ms,
            quorum: None,
        };
        let tx = self.conn.transaction()?;
        let first = insert_result(&tx, &row)?;
        tx.commit()?;
        Ok(first)
    }

    /// Stores many results as [`Store::record_result`] does each, in one transaction (group
    /// commit: one fsync for all of them). All or none: on an error nothing is stored.
    pub fn record_results(&mut self, results: &[ResultRow<'_>]) -> Result<(), StoreError> {
        if results.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        for r in results {
            insert_result(&tx, r)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records how a replica ended, unless it already has an end.
    pub fn record_replica_end(
        &mut self,
        replica: ReplicaId,
        end: ReplicaEnd,
        exec: Option<Execution>,
        error: Option<&str>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        end_replica(&self.conn, replica, end, exec, error, now_ms)
    }

    /// Writes a batch of records in one transaction (one fsync for all of them).
    pub fn write_batch(&mut self, records: &[Record]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        for r in records {
            match r {
                Record::Started(s) => insert_replica(&tx, s)?,
                Record::Ended {
                    replica,
                    end,
                    exec,
                    error,
                    at_ms,
                } => end_replica(&tx, *replica, *end, *exec, error.as_deref(), *at_ms)?,
                Record::Measured { replica, exec } => {
                    run(
                        &tx,
                        "UPDATE replicas SET wall_ms = ?2, cpu_ms = ?3
                         WHERE id = ?1 AND outcome = 'cancelled' AND cpu_ms IS NULL",
                        params![replica.key(), exec.wall_ms as i64, exec.cpu_ms as i64],
                    )?;
                }
                Record::Reopened(replica) => {
                    run(
                        &tx,
                        "UPDATE replicas SET ended_ms = NULL, outcome = NULL WHERE id = ?1 AND outcome = 'lost'",
                        [replica.key()],
                    )?;
                }
                Record::Activity(a) => insert_activity(&tx, a)?,
                Record::JobFinished {
                    job,
                    state,
                    error,
                    at_ms,
                } => finish_job(&tx, job, state, error.as_deref(), *at_ms)?,
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// What the store knows of one replica: where it ran, when it started, how it ended.
    pub fn replica_info(&self, replica: ReplicaId) -> Result<Option<ReplicaInfo>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT job, task, worker, started_ms, outcome FROM replicas WHERE id = ?1",
            )?
            .query_row([replica.key()], |r| {
                Ok(ReplicaInfo {
                    job: JobId(r.get(0)?),
                    task: TaskId(r.get(1)?),
                    worker: WorkerId(r.get(2)?),
                    started_ms: r.get::<_, i64>(3)? as u64,
                    outcome: r.get(4)?,
                })
            })
            .optional()
            .map_err(Into::into)
    }

    /// The newest activity records, of one worker or of all, at most `limit`.
    pub fn activity(
        &self,
        worker: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ActivityRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT worker, worker_name, kind, at_ms, received_ms FROM activity
             WHERE ?1 IS NULL OR worker = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![worker, limit as i64], |r| {
            Ok(ActivityRecord {
                worker: r.get(0)?,
                worker_name: r.get(1)?,
                kind: r.get(2)?,
                at_ms: r.get::<_, i64>(3)? as u64,
                received_ms: r.get::<_, i64>(4)? as u64,
            })
        })?;
        rows.collect::<Result<_, _>>().map_err(Into::into)
    }

    /// Marks a job finished: `completed`, `failed` or `cancelled`.
    pub fn finish_job(
        &mut self,
        job: &JobId,
        state: &str,
        error: Option<&str>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        finish_job(&tx, job, state, error, now_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// Every job not finished yet, with what is needed to resume it.
    pub fn unfinished(&self) -> Result<Vec<StoredJob>, StoreError> {
        let mut jobs = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT id, spec FROM jobs WHERE state = 'running' ORDER BY seq")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (id, spec) = row?;
            let id = JobId(id);
            let spec: JobSpec = parse_stored(&id, &spec)?;
            let done = self.results(&id)?;
            let mut running = Vec::new();
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, task, worker FROM replicas WHERE job = ?1 AND ended_ms IS NULL",
            )?;
            for r in stmt.query_map([&id.0], |r| {
                Ok((
                    stored_replica_id(r, 0)?,
                    TaskId(r.get(1)?),
                    WorkerId(r.get(2)?),
                ))
            })? {
                running.push(r?);
            }
            let mut candidates = Vec::new();
            let mut stmt = self.conn.prepare_cached(
                "SELECT task, replica, worker, output FROM candidates
                 WHERE job = ?1 AND verdict IS NULL ORDER BY seq",
            )?;
            for c in stmt.query_map([&id.0], |r| {
                Ok((
                    TaskId(r.get(0)?),
                    stored_replica_id(r, 1)?,
                    WorkerId(r.get(2)?),
                    r.get::<_, String>(3)?,
                ))
            })? {
                let (task, replica, worker, output) = c?;
                let output = parse_stored(&id, &output)?;
                candidates.push((
                    task,
                    Candidate {
                        replica,
                        worker,
                        output,
                    },
                ));
            }
            jobs.push(StoredJob {
                id,
                spec,
                done,
                running,
                candidates,
            });
        }
        Ok(jobs)
    }

    /// Outputs stored for a job, by task.
    pub fn results(&self, job: &JobId) -> Result<BTreeMap<TaskId, serde_json::Value>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT task, output FROM results WHERE job = ?1")?;
        let mut out = BTreeMap::new();
        for row in stmt.query_map([&job.0], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })? {
            let (task, output) = row?;
            out.insert(TaskId(task), parse_stored(job, &output)?);
        }
        Ok(out)
    }

    /// One task's stored output.
    pub fn result(
        &self,
        job: &JobId,
        task: &TaskId,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT output FROM results WHERE job = ?1 AND task = ?2",
                params![job.0, task.0],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| parse_stored(job, &t)).transpose()
    }

    /// The spec a job was submitted with.
    pub fn spec(&self, job: &JobId) -> Result<Option<JobSpec>, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT spec FROM jobs WHERE id = ?1", [&job.0], |r| {
                r.get(0)
            })
            .optional()?;
        text.map(|t| parse_stored(job, &t)).transpose()
    }

    pub fn summary(&self, job: &JobId) -> Result<Option<JobSummary>, StoreError> {
        self.conn
            .query_row(
                &format!("{SUMMARY_SELECT} WHERE j.id = ?1"),
                [&job.0],
                summary_row,
            )
            .optional()
            .map_err(Into::into)
    }

    /// The newest jobs first, at most `limit`.
    pub fn list_jobs(&self, limit: usize) -> Result<Vec<JobSummary>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("{SUMMARY_SELECT} ORDER BY j.seq DESC LIMIT ?1"))?;
        let rows = stmt.query_map([limit as i64], summary_row)?;
        rows.collect::<Result<_, _>>().map_err(Into::into)
    }

    /// The job report from its replica records: makespan, replicas, reissues and why, cost by
    /// worker, class, outcome and reason. `now_ms` stands in for the end of a job still running.
    /// What needs the job's plan (critical tasks, tasks not needed) is added by
    /// [`Report::with_plan`].
    pub fn report(&self, job: &JobId, now_ms: u64) -> Result<Option<Report>, StoreError> {
        let Some(summary) = self.summary(job)? else {
            return Ok(None);
        };
        let rows = self.replica_rows(job)?;
        let mut report = Report::build(summary, &rows, now_ms);
        report.validation = Validation::build(&self.candidates(job)?);
        Ok(Some(report))
    }

    /// Every replica record of a job, in the order they started.
    pub fn replica_rows(&self, job: &JobId) -> Result<Vec<ReplicaRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT task, worker, worker_name, rate, class, reason, cause, detail, started_ms,
                    ended_ms, outcome, wall_ms, cpu_ms
             FROM replicas WHERE job = ?1 ORDER BY started_ms, id",
        )?;
        let ms = |v: Option<i64>| v.map(|v| v.max(0) as u64);
        let rows = stmt.query_map([&job.0], |r| {
            Ok(ReplicaRow {
                task: r.get(0)?,
                worker: r.get(1)?,
                worker_name: r.get(2)?,
                rate: r.get(3)?,
                class: r.get(4)?,
                reason: r.get(5)?,
                cause: r.get(6)?,
                detail: r.get(7)?,
                started_ms: r.get::<_, i64>(8)?.max(0) as u64,
                ended_ms: ms(r.get(9)?),
                outcome: r.get(10)?,
                wall_ms: ms(r.get(11)?),
                cpu_ms: ms(r.get(12)?),
            })
        })?;
        rows.collect::<Result<_, _>>().map_err(Into::into)
    }

    /// What a job's replicas cost so far (as [`Report::build`] charges them: CPU seconds times
    /// rate) and how many were reissues, in one indexed aggregate: the dashboard's job list
    /// without building every report.
    pub fn job_totals(&self, job: &JobId) -> Result<(f64, u32), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT COALESCE(SUM(COALESCE(cpu_ms, 0) / 1000.0 * rate), 0.0),
                    COALESCE(SUM(reason = 'reissue'), 0)
             FROM replicas WHERE job = ?1",
        )?;
        stmt.query_row([&job.0], |r| {
            Ok((r.get::<_, f64>(0)?, r.get::<_, i64>(1)?.max(0) as u32))
        })
        .map_err(Into::into)
    }

    /// A worker's record against quorums.
    pub fn reputation(&self, worker: &WorkerId) -> Result<Reputation, StoreError> {
        self.conn
            .prepare_cached("SELECT agreed, disagreed FROM worker_reputation WHERE worker = ?1")?
            .query_row([&worker.0], |r| {
                Ok(Reputation {
                    agreed: r.get::<_, i64>(0)?.clamp(0, u32::MAX.into()) as u32,
                    disagreed: r.get::<_, i64>(1)?.clamp(0, u32::MAX.into()) as u32,
                })
            })
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(Into::into)
    }

    /// The stored outputs of a job's quorum tasks, in the order they were stored.
    pub fn candidates(&self, job: &JobId) -> Result<Vec<CandidateRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.task, c.worker, COALESCE(r.worker_name, ''), c.digest, c.verdict
             FROM candidates c LEFT JOIN replicas r ON r.id = c.replica
             WHERE c.job = ?1 ORDER BY c.seq",
        )?;
        let rows = stmt.query_map([&job.0], |r| {
            Ok(CandidateRow {
                task: TaskId(r.get(0)?),
                worker: WorkerId(r.get(1)?),
                worker_name: r.get(2)?,
                digest: r.get(3)?,
                verdict: r.get(4)?,
            })
        })?;
        rows.collect::<Result<_, _>>().map_err(Into::into)
    }

    /// The tasks of a job that have a result.
    pub fn done_tasks(
        &self,
        job: &JobId,
    ) -> Result<std::collections::BTreeSet<TaskId>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT task FROM results WHERE job = ?1")?;
        let rows = stmt.query_map([&job.0], |r| Ok(TaskId(r.get(0)?)))?;
        rows.collect::<Result<_, _>>().map_err(Into::into)
    }
}

/// Schema 2 -> 3: replicas get their class and reissue cause (unknown for those recorded
/// before), and measured speeds get their table (made by the `CREATE ... IF NOT EXISTS` above).
/// One result for [`Store::record_results`].
#[derive(Debug, Clone, Copy)]
pub struct ResultRow<'a> {
    pub replica: ReplicaId,
    pub job: &'a JobId,
    pub task: &'a TaskId,
    /// The output's JSON text.
    pub output: &'a str,
    pub exec: Execution,
    pub now_ms: u64,
    /// For a quorum task's output: stored as a candidate, not as the task's result.
    pub quorum: Option<QuorumRow<'a>>,
}

/// A quorum task's output ([`ResultRow::quorum`]).
#[derive(Debug, Clone, Copy)]
pub struct QuorumRow<'a> {
    pub worker: &'a WorkerId,
    /// SHA-256 of its canonical JSON.
    pub digest: &'a str,
    /// When it completes a quorum: what was agreed.
    pub agreement: Option<Agreement<'a>>,
}

/// A quorum reached: the agreed output becomes the task's result, the candidates get their
/// verdicts, the workers their records.
#[derive(Debug, Clone, Copy)]
pub struct Agreement<'a> {
    /// The agreed output's JSON text (that of `agreed[0]`, which gave it).
    pub output: &'a str,
    pub agreed: &'a [(ReplicaId, WorkerId)],
    pub dissent: &'a [(ReplicaId, WorkerId)],
}

/// The task's result (if it is the first) and the replica's end; returns whether it was first.
/// A quorum task's output is stored as a candidate instead, and, when it completes the quorum,
/// the agreed output as the task's result (returning true).
fn insert_result(conn: &Connection, r: &ResultRow<'_>) -> Result<bool, StoreError> {
    if let Some(q) = r.quorum {
        return insert_candidate(conn, r, &q);
    }
    let first = run(
        conn,
        "INSERT OR IGNORE INTO results (job, task, output, replica, done_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            r.job.0,
            r.task.0,
            r.output,
            r.replica.key(),
            r.now_ms as i64
        ],
    )? == 1;
    let end = if first {
        ReplicaEnd::Won
    } else {
        ReplicaEnd::Late
    };
    end_replica(conn, r.replica, end, Some(r.exec), None, r.now_ms)?;
    Ok(first)
}

fn insert_candidate(
    conn: &Connection,
    r: &ResultRow<'_>,
    q: &QuorumRow<'_>,
) -> Result<bool, StoreError> {
    run(
        conn,
        "INSERT OR IGNORE INTO candidates (replica, job, task, worker, digest, output, received_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            r.replica.key(),
            r.job.0,
            r.task.0,
            q.worker.0,
            q.digest,
            r.output,
            r.now_ms as i64
        ],
    )?;
    end_replica(
        conn,
        r.replica,
        ReplicaEnd::Candidate,
        Some(r.exec),
        None,
        r.now_ms,
    )?;
    let Some(a) = q.agreement else {
        return Ok(false);
    };
    let Some((winner, _)) = a.agreed.first() else {
        return Ok(false);
    };
    let first = run(
        conn,
        "INSERT OR IGNORE INTO results (job, task, output, replica, done_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![r.job.0, r.task.0, a.output, winner.key(), r.now_ms as i64],
    )? == 1;
    let verdicts = a
        .agreed
        .iter()
        .enumerate()
        .map(|(i, x)| (x, "agreed", if i == 0 { "won" } else { "agreed" }, 1, 0))
        .chain(a.dissent.iter().map(|x| (x, "dissent", "dissent", 0, 1)));
    for ((replica, worker), verdict, outcome, agreed, disagreed) in verdicts {
        run(
            conn,
            "UPDATE candidates SET verdict = ?2 WHERE replica = ?1",
            params![replica.key(), verdict],
        )?;
        run(
            conn,
            "UPDATE replicas SET outcome = ?2 WHERE id = ?1 AND outcome = 'candidate'",
            params![replica.key(), outcome],
        )?;
        run(
            conn,
            "INSERT INTO worker_reputation (worker, agreed, disagreed) VALUES (?1, ?2, ?3)
             ON CONFLICT (worker) DO UPDATE
             SET agreed = agreed + excluded.agreed, disagreed = disagreed + excluded.disagreed",
            params![worker.0, agreed, disagreed],
        )?;
    }
    Ok(first)
}

/// From schema `from` (2, 3 or 4) to 5, in one transaction: a failure leaves the store as it
/// was. 4 -> 5 only adds tables, which the `CREATE ... IF NOT EXISTS` at open has made.
fn migrate(conn: &Connection, from: i64) -> rusqlite::Result<()> {
    let to_3 = "ALTER TABLE replicas ADD COLUMN class TEXT;
         ALTER TABLE replicas ADD COLUMN cause TEXT;";
    let to_4 = "ALTER TABLE jobs ADD COLUMN task_count INTEGER;
         UPDATE jobs SET task_count = json_array_length(json_extract(spec, '$.tasks'));";
    let steps = match from {
        2 => [to_3, to_4].concat(),
        3 => to_4.to_owned(),
        _ => String::new(),
    };
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {steps} UPDATE meta SET value = {SCHEMA_VERSION} WHERE key = 'schema'; COMMIT;"
    ))
    .inspect_err(|_| {
        let _ = conn.execute_batch("ROLLBACK");
    })
}

/// The columns [`summary_row`] reads, from `jobs j`.
const SUMMARY_SELECT: &str = "SELECT j.id, j.name, j.state, j.error, j.submitted_ms, j.finished_ms,
        COALESCE(j.task_count, json_array_length(json_extract(j.spec, '$.tasks'))),
        (SELECT COUNT(*) FROM results r WHERE r.job = j.id)
    FROM jobs j";

/// Reads JSON the store wrote; failing, the store was tampered with or damaged.
fn parse_stored<T: serde::de::DeserializeOwned>(job: &JobId, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        job: job.0.clone(),
        source,
    })
}

fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobSummary> {
    Ok(JobSummary {
        job_id: r.get(0)?,
        name: r.get(1)?,
        state: r.get(2)?,
        error: r.get(3)?,
        submitted_ms: r.get::<_, i64>(4)? as u64,
        finished_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        tasks: r.get::<_, i64>(6)? as u32,
        tasks_done: r.get::<_, i64>(7)? as u32,
    })
}

fn insert_replica(conn: &Connection, s: &ReplicaStart) -> Result<(), StoreError> {
    run(
        conn,
        "INSERT OR REPLACE INTO replicas (id, job, task, worker, worker_name, rate, class, reason, cause, detail, started_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            s.replica.key(),
            s.job.0,
            s.task.0,
            s.worker.0,
            s.worker_name,
            s.rate,
            s.class.as_str(),
            s.reason,
            s.cause,
            s.detail,
            s.at_ms as i64
        ],
    )?;
    Ok(())
}

fn insert_activity(conn: &Connection, a: &ActivityRecord) -> Result<(), StoreError> {
    run(
        conn,
        "INSERT INTO activity (worker, worker_name, kind, at_ms, received_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            a.worker,
            a.worker_name,
            a.kind,
            a.at_ms as i64,
            a.received_ms as i64
        ],
    )?;
    Ok(())
}

fn finish_job(
    conn: &Connection,
    job: &JobId,
    state: &str,
    error: Option<&str>,
    now_ms: u64,
) -> Result<(), StoreError> {
    run(
        conn,
        "UPDATE jobs SET state = ?2, error = ?3, finished_ms = ?4 WHERE id = ?1 AND state = 'running'",
        params![job.0, state, error, now_ms as i64],
    )?;
    // Replicas still open when their job ends were stopped by it.
    run(
        conn,
        "UPDATE replicas SET ended_ms = ?2, outcome = 'cancelled' WHERE job = ?1 AND ended_ms IS NULL",
        params![job.0, now_ms as i64],
    )?;
    Ok(())
}

/// Runs a write the store makes again and again (per replica, result, activity or job) from the
/// connection's statement cache: parsing the SQL each time cost about 5% of the supervisor's CPU
/// at 8,700 tasks/s.
fn run(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<usize, StoreError> {
    Ok(conn.prepare_cached(sql)?.execute(params)?)
}

/// A replica id the store wrote, from column `i`.
fn stored_replica_id(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<ReplicaId> {
    let text: String = r.get(i)?;
    ReplicaId::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("replica id {text:?} is not EPOCH.SEQ").into(),
        )
    })
}

fn end_replica(
    conn: &Connection,
    replica: ReplicaId,
    end: ReplicaEnd,
    exec: Option<Execution>,
    error: Option<&str>,
    now_ms: u64,
) -> Result<(), StoreError> {
    run(
        conn,
        "UPDATE replicas SET ended_ms = ?2, outcome = ?3, wall_ms = ?4, cpu_ms = ?5, error = ?6
         WHERE id = ?1 AND ended_ms IS NULL",
        params![
            replica.key(),
            now_ms as i64,
            end.as_str(),
            exec.map(|e| e.wall_ms as i64),
            exec.map(|e| e.cpu_ms as i64),
            error
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::TaskSpec;

    fn spec() -> JobSpec {
        let task = |id: &str| TaskSpec::new(id, "spin", serde_json::json!({ "ms": 1 }));
        JobSpec {
            name: "j".into(),
            tasks: vec![task("a"), task("b")],
            ..Default::default()
        }
    }

    /// Replica `r` (number 3 is a reissue after a lost worker), on a worker of the class whose
    /// default rate is `rate`.
    fn start(
        r: u64,
        job: &JobId,
        task: &TaskId,
        worker: &WorkerId,
        rate: f64,
        at_ms: u64,
    ) -> ReplicaStart {
        let rates = crate::sched::ClassRates::default();
        let class = CapacityClass::ALL
            .into_iter()
            .find(|c| c.rate(&rates) == rate)
            .unwrap_or(CapacityClass::Standard);
        ReplicaStart {
            replica: ReplicaId::new(0, r),
            job: job.clone(),
            task: task.clone(),
            worker: worker.clone(),
            worker_name: "w".into(),
            rate,
            class,
            reason: if r == 3 { "reissue" } else { "first" },
            cause: (r == 3).then_some("worker_lost"),
            detail: (r == 3).then(|| "worker w1 lost (connection closed)".to_owned()),
            at_ms,
        }
    }

    #[test]
    fn every_boot_gets_a_new_epoch_that_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.next_epoch().unwrap(), 1);
        assert_eq!(s.next_epoch().unwrap(), 2);
        drop(s);
        assert_eq!(Store::open(dir.path()).unwrap().next_epoch().unwrap(), 3);
    }

    #[test]
    fn an_unfinished_job_comes_back_with_its_results_and_running_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let job = s.insert_job(&spec(), 1000).unwrap();
        assert_eq!(job, JobId::from("job-1"));
        let (a, b, w1, w2) = (
            TaskId::from("a"),
            TaskId::from("b"),
            WorkerId::from("w1"),
            WorkerId::from("w2"),
        );
        s.record_replica_started(&start(1, &job, &a, &w1, 1.0, 1000))
            .unwrap();
        s.record_replica_started(&start(2, &job, &b, &w2, 1.0, 1000))
            .unwrap();
        let exec = Execution {
            wall_ms: 500,
            cpu_ms: 490,
        };
        assert!(
            s.record_result(ReplicaId::new(0, 1), &job, &a, "7", exec, 1500)
                .unwrap()
        );
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        let jobs = s.unfinished().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].spec, spec());
        assert_eq!(jobs[0].done, BTreeMap::from([(a, serde_json::json!(7))]));
        assert_eq!(jobs[0].running, vec![(ReplicaId::new(0, 2), b, w2)]);
    }

    #[test]
    fn a_group_of_results_is_stored_all_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let job = s.insert_job(&spec(), 1000).unwrap();
        let (a, b, w) = (TaskId::from("a"), TaskId::from("b"), WorkerId::from("w1"));
        s.record_replica_started(&start(1, &job, &a, &w, 1.0, 1000))
            .unwrap();
        s.record_replica_started(&start(2, &job, &b, &w, 1.0, 1000))
            .unwrap();
        let exec = Execution {
            wall_ms: 5,
            cpu_ms: 4,
        };
        let row = |seq, job, task, output| ResultRow {
            replica: ReplicaId::new(0, seq),
            job,
            task,
            output,
            exec,
            now_ms: 1500,
            quorum: None,
        };
        // One row names a job the store does not have: the transaction fails, nothing stays.
        let ghost = JobId::from("job-404");
        let bad = [
            row(1, &job, &a, "1"),
            row(2, &job, &b, "2"),
            row(3, &ghost, &a, "3"),
        ];
        assert!(s.record_results(&bad).is_err());
        assert_eq!(s.result(&job, &a).unwrap(), None);
        assert_eq!(s.result(&job, &b).unwrap(), None);
        s.record_results(&[row(1, &job, &a, "1"), row(2, &job, &b, "2")])
            .unwrap();
        assert_eq!(s.result(&job, &a).unwrap(), Some(serde_json::json!(1)));
        assert_eq!(s.result(&job, &b).unwrap(), Some(serde_json::json!(2)));
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.unfinished().unwrap()[0].done.len(), 2, "durable");
    }

    #[test]
    fn the_first_result_of_a_task_stays_and_later_ones_are_late() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let job = s.insert_job(&spec(), 0).unwrap();
        let (a, w1, w2) = (
            TaskId::from("a"),
            WorkerId::from("w1"),
            WorkerId::from("w2"),
        );
        s.record_replica_started(&start(1, &job, &a, &w1, 1.0, 0))
            .unwrap();
        s.record_replica_started(&start(2, &job, &a, &w2, 1.0, 0))
            .unwrap();
        let exec = Execution::default();
        assert!(
            s.record_result(ReplicaId::new(0, 1), &job, &a, "1", exec, 10)
                .unwrap()
        );
        assert!(
            !s.record_result(ReplicaId::new(0, 2), &job, &a, "2", exec, 20)
                .unwrap()
        );
        assert_eq!(s.result(&job, &a).unwrap(), Some(serde_json::json!(1)));
    }

    #[test]
    fn the_report_charges_cpu_time_at_each_replicas_class_rate_and_lists_reissues() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let job = s.insert_job(&spec(), 1_000).unwrap();
        let (a, b) = (TaskId::from("a"), TaskId::from("b"));
        let (w1, w2) = (WorkerId::from("w1"), WorkerId::from("w2"));
        // w1 (rate 2) ran a for 1 s, then was lost while running b; w2 (rate 0.5) redid b in 4 s.
        s.record_replica_started(&start(1, &job, &a, &w1, 2.0, 1_000))
            .unwrap();
        s.record_result(
            ReplicaId::new(0, 1),
            &job,
            &a,
            "1",
            Execution {
                wall_ms: 1_000,
                cpu_ms: 900,
            },
            2_000,
        )
        .unwrap();
        s.record_replica_started(&start(2, &job, &b, &w1, 2.0, 2_000))
            .unwrap();
        s.record_replica_end(ReplicaId::new(0, 2), ReplicaEnd::Lost, None, None, 2_500)
            .unwrap();
        s.record_replica_started(&start(3, &job, &b, &w2, 0.5, 2_500))
            .unwrap();
        s.record_result(
            ReplicaId::new(0, 3),
            &job,
            &b,
            "2",
            Execution {
                wall_ms: 4_000,
                cpu_ms: 3_900,
            },
            6_500,
        )
        .unwrap();
        s.finish_job(&job, "completed", None, 6_500).unwrap();
        let r = s.report(&job, 99_999).unwrap().unwrap();
        assert_eq!(r.summary.state, "completed");
        assert_eq!((r.summary.tasks, r.summary.tasks_done), (2, 2));
        assert_eq!(r.makespan_ms, 5_500);
        assert_eq!(r.replicas_started, 3);
        assert_eq!(r.reissued, 1);
        assert_eq!(r.reissues[0].why, "worker w1 lost (connection closed)");
        assert_eq!(r.reissues[0].cause, "worker_lost");
        assert_eq!(r.reissues_by_cause["worker_lost"], 1);
        // w1 (high, 2/s) used 0.9 s of CPU on a, and reported nothing for the b it lost; w2
        // (low, 0.5/s) used 3.9 s. Wall time (1 + 0.5 + 4 s) is not what is charged.
        let w1c = r.workers.iter().find(|w| w.worker == "w1").unwrap();
        assert_eq!((w1c.replicas, w1c.won, w1c.exec_ms), (2, 1, 1_500));
        assert!((w1c.cost - 1.8).abs() < 1e-9, "{w1c:?}");
        assert!((r.cost - 3.75).abs() < 1e-9, "{r:?}");
        assert!((r.cost_by_class["high"].cost - 1.8).abs() < 1e-9);
        assert!((r.cost_by_class["low"].cost - 1.95).abs() < 1e-9);
        assert_eq!(r.cost_by_outcome["won"].replicas, 2);
        assert_eq!(r.cost_by_outcome["lost"].replicas, 1);
        // The lost replica was assigned for 0.5 s: not charged, counted as such.
        assert_eq!((r.unmeasured_replicas, r.unmeasured_ms), (1, 500));
        assert!(s.unfinished().unwrap().is_empty());
    }

    /// The tables of a schema-2 store, as that supervisor made them.
    const SCHEMA_2: &str = "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL, spec TEXT NOT NULL, state TEXT NOT NULL, error TEXT,
            submitted_ms INTEGER NOT NULL, finished_ms INTEGER);
        CREATE TABLE results (job TEXT NOT NULL REFERENCES jobs(id), task TEXT NOT NULL,
            output TEXT NOT NULL, replica TEXT NOT NULL, done_ms INTEGER NOT NULL,
            PRIMARY KEY (job, task));
        CREATE TABLE replicas (id TEXT PRIMARY KEY, job TEXT NOT NULL REFERENCES jobs(id),
            task TEXT NOT NULL, worker TEXT NOT NULL, worker_name TEXT NOT NULL,
            rate REAL NOT NULL, reason TEXT NOT NULL, detail TEXT, started_ms INTEGER NOT NULL,
            ended_ms INTEGER, outcome TEXT, wall_ms INTEGER, cpu_ms INTEGER, error TEXT);
        CREATE TABLE activity (id INTEGER PRIMARY KEY AUTOINCREMENT, worker TEXT NOT NULL,
            worker_name TEXT NOT NULL, kind TEXT NOT NULL, at_ms INTEGER NOT NULL,
            received_ms INTEGER NOT NULL);
        CREATE INDEX replicas_by_job ON replicas(job);
        CREATE INDEX jobs_by_state ON jobs(state);
        INSERT INTO meta VALUES ('schema', 2), ('epoch', 4);";

    #[test]
    fn a_schema_3_store_gets_its_jobs_task_counts_from_their_specs() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path()).unwrap();
            s.insert_job(&spec(), 1000).unwrap();
            // Back to what a schema-3 supervisor made.
            s.conn
                .execute_batch(
                    "ALTER TABLE jobs DROP COLUMN task_count;
                     UPDATE meta SET value = 3 WHERE key = 'schema';",
                )
                .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let (version, count): (i64, Option<i64>) = s
            .conn
            .query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'schema'), task_count FROM jobs",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((version, count), (SCHEMA_VERSION, Some(2)));
        assert_eq!(s.summary(&JobId::from("job-1")).unwrap().unwrap().tasks, 2);
    }

    #[test]
    fn a_schema_2_store_is_migrated_to_the_current_one_and_keeps_its_jobs_results_and_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let spec_json = serde_json::to_string(&spec()).unwrap();
        {
            let conn = Connection::open(dir.path().join("idlegrid.sqlite3")).unwrap();
            conn.execute_batch(SCHEMA_2).unwrap();
            conn.execute(
                "INSERT INTO jobs (seq, id, name, spec, state, submitted_ms) VALUES (1, 'job-1', 'j', ?1, 'running', 1000)",
                [&spec_json],
            )
            .unwrap();
            conn.execute_batch(
                "INSERT INTO results VALUES ('job-1', 'a', '7', '4.1', 2000);
                 INSERT INTO replicas (id, job, task, worker, worker_name, rate, reason, started_ms, ended_ms, outcome, wall_ms, cpu_ms)
                     VALUES ('4.1', 'job-1', 'a', 'w1', 'one', 1.0, 'first', 1000, 2000, 'won', 1000, 800);
                 INSERT INTO replicas (id, job, task, worker, worker_name, rate, reason, started_ms)
                     VALUES ('4.2', 'job-1', 'b', 'w2', 'two', 1.0, 'first', 1000);",
            )
            .unwrap();
        }
        let mut s = Store::open(dir.path()).unwrap();
        let version: i64 = s
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        // The job's task count was filled in from its spec.
        let stored: Option<i64> = s
            .conn
            .query_row("SELECT task_count FROM jobs WHERE id = 'job-1'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(stored, Some(2));
        assert_eq!(s.summary(&JobId::from("job-1")).unwrap().unwrap().tasks, 2);
        // The boot counter goes on from where it was.
        assert_eq!(s.next_epoch().unwrap(), 5);
        let jobs = s.unfinished().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].spec, spec());
        assert_eq!(
            jobs[0].done,
            BTreeMap::from([(TaskId::from("a"), serde_json::json!(7))])
        );
        assert_eq!(
            jobs[0].running,
            vec![(
                ReplicaId::new(4, 2),
                TaskId::from("b"),
                WorkerId::from("w2")
            )]
        );
        // Old replicas have no class: their cost shows under `unknown`.
        let r = s.report(&JobId::from("job-1"), 3000).unwrap().unwrap();
        assert!(
            (r.cost_by_class["unknown"].cost - 0.8).abs() < 1e-9,
            "{r:?}"
        );
        // New records and the new table work on the migrated store, and it opens again as is.
        let job = JobId::from("job-1");
        let (b, w3) = (TaskId::from("b"), WorkerId::from("w3"));
        s.record_replica_started(&start(3, &job, &b, &w3, 2.0, 3000))
            .unwrap();
        let speed = KindSpeed {
            kind: "spin".into(),
            speed: 1.5,
            samples: 2,
        };
        s.save_speeds(&[(w3.clone(), speed.clone())], 3000).unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.speeds(&w3).unwrap(), vec![speed]);
        let r = s.report(&job, 4000).unwrap().unwrap();
        assert_eq!(r.replicas_started, 3);
        assert_eq!(r.cost_by_class["high"].replicas, 1);
    }

    #[test]
    fn measured_speeds_are_kept_by_worker_and_kind_and_replaced_by_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let (w1, w2) = (WorkerId::from("w1"), WorkerId::from("w2"));
        let ks = |kind: &str, speed, samples| KindSpeed {
            kind: kind.into(),
            speed,
            samples,
        };
        s.save_speeds(
            &[
                (w1.clone(), ks("spin", 1.0, 1)),
                (w1.clone(), ks("primes", 0.5, 1)),
                (w2.clone(), ks("spin", 3.0, 1)),
            ],
            10,
        )
        .unwrap();
        s.save_speeds(&[(w1.clone(), ks("spin", 1.3, 2))], 20)
            .unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.speeds(&w1).unwrap(),
            vec![ks("primes", 0.5, 1), ks("spin", 1.3, 2)]
        );
        assert_eq!(s.speeds(&w2).unwrap(), vec![ks("spin", 3.0, 1)]);
        assert!(s.speeds(&WorkerId::from("w3")).unwrap().is_empty());
    }

    #[test]
    fn quorum_outputs_wait_as_candidates_until_agreed_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let job = s.insert_job(&spec(), 1000).unwrap();
        let a = TaskId::from("a");
        let (honest, liar, other) = (
            WorkerId::from("honest"),
            WorkerId::from("liar"),
            WorkerId::from("other"),
        );
        for (r, w) in [(1, &honest), (2, &liar), (3, &other)] {
            s.record_replica_started(&start(r, &job, &a, w, 1.0, 1000))
                .unwrap();
        }
        let exec = Execution {
            wall_ms: 500,
            cpu_ms: 400,
        };
        let candidate = |r: u64, worker, output, agreement| ResultRow {
            replica: ReplicaId::new(0, r),
            job: &job,
            task: &a,
            output,
            exec,
            now_ms: 1500,
            quorum: Some(QuorumRow {
                worker,
                digest: "d",
                agreement,
            }),
        };
        s.record_results(&[candidate(1, &honest, r#"{"count":5}"#, None)])
            .unwrap();
        s.record_results(&[candidate(2, &liar, r#"{"count":6}"#, None)])
            .unwrap();
        drop(s);
        // Neither is the task's result; both come back as candidates, in order.
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.result(&job, &a).unwrap(), None);
        let jobs = s.unfinished().unwrap();
        let back: Vec<(&str, serde_json::Value)> = jobs[0]
            .candidates
            .iter()
            .map(|(_, c)| (c.worker.0.as_str(), c.output.clone()))
            .collect();
        assert_eq!(
            back,
            vec![
                ("honest", serde_json::json!({"count": 5})),
                ("liar", serde_json::json!({"count": 6}))
            ]
        );
        assert!(jobs[0].running.iter().all(|(r, ..)| r.seq == 3));
        // The third agrees with the first: the agreed output is the result, the verdicts and
        // records are kept, and nothing is a candidate any more.
        let agreed = [
            (ReplicaId::new(0, 1), honest.clone()),
            (ReplicaId::new(0, 3), other.clone()),
        ];
        let dissent = [(ReplicaId::new(0, 2), liar.clone())];
        s.record_results(&[candidate(
            3,
            &other,
            r#"{"count":5}"#,
            Some(Agreement {
                output: r#"{"count":5}"#,
                agreed: &agreed,
                dissent: &dissent,
            }),
        )])
        .unwrap();
        assert_eq!(
            s.result(&job, &a).unwrap(),
            Some(serde_json::json!({"count": 5}))
        );
        assert!(s.unfinished().unwrap()[0].candidates.is_empty());
        assert_eq!(
            s.reputation(&liar).unwrap(),
            Reputation {
                agreed: 0,
                disagreed: 1
            }
        );
        assert_eq!(s.reputation(&other).unwrap().agreed, 1);
        let outcomes: Vec<Option<String>> = s
            .replica_rows(&job)
            .unwrap()
            .into_iter()
            .map(|r| r.outcome)
            .collect();
        let want = ["won", "dissent", "agreed"].map(|o| Some(o.to_owned()));
        assert_eq!(outcomes, want);
        let v = s.report(&job, 2000).unwrap().unwrap().validation.unwrap();
        assert_eq!(
            (v.tasks_agreed, v.outputs_agreed, v.outputs_rejected),
            (1, 2, 1)
        );
        assert_eq!(v.rejected_workers[0].worker, "liar");
    }

    #[test]
    fn a_schema_4_store_opens_as_5_with_its_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let job = s.insert_job(&spec(), 1000).unwrap();
        drop(s);
        let conn = Connection::open(dir.path().join("idlegrid.sqlite3")).unwrap();
        conn.execute_batch(
            "DROP TABLE candidates; DROP TABLE worker_reputation;
             UPDATE meta SET value = 4 WHERE key = 'schema'",
        )
        .unwrap();
        drop(conn);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.unfinished().unwrap()[0].id, job);
        assert!(s.candidates(&job).unwrap().is_empty());
        assert_eq!(
            s.reputation(&WorkerId::from("w")).unwrap(),
            Reputation::default()
        );
    }

    #[test]
    fn a_store_from_a_newer_schema_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("idlegrid.sqlite3")).unwrap();
        conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema'", [])
            .unwrap();
        drop(conn);
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }
}
