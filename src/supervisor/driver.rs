//! The driver: the one place where the scheduler meets the world. It owns the scheduler and the
//! store, turns connection events and API requests into `handle_*` calls, and carries out the
//! scheduler's outputs (frames to workers, store writes, events).
//!
//! Ordering rules kept here: a job is stored before it is handed to the scheduler and
//! acknowledged; a result is stored before the scheduler hears of it; an Assign is sent before
//! its record is written, so a store write never delays a reissue.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::report::{JobSummary, Report};
use super::store::{ActivityRecord, ReplicaEnd, ReplicaStart, Store, StoreError};
use super::{Config, Event, SupervisorError, unix_ms};
use crate::job::{self, JobSpec};
use crate::proto::{
    self, ErrorCode, Hardware, JobId, ReplicaId, SupervisorMsg, TaskId, WorkerId, WorkerMsg,
};
use crate::runtime;
use crate::sched::{AssignReason, JobOutcome, Output, Scheduler};

/// Identifies one WebSocket connection (a worker may reconnect on a new one).
pub type ConnId = u64;

/// What the driver sends to a connection task.
#[derive(Debug)]
pub enum Outgoing {
    Frame(String),
    /// Send this error, then close the connection.
    Close {
        code: ErrorCode,
        message: String,
    },
}

/// An operator's request, answered on `reply`.
#[derive(Debug)]
pub enum ApiRequest {
    Submit {
        spec: JobSpec,
        reply: oneshot::Sender<Result<JobId, ApiError>>,
    },
    Status {
        job: JobId,
        reply: oneshot::Sender<Result<JobStatus, ApiError>>,
    },
    Report {
        job: JobId,
        reply: oneshot::Sender<Result<Report, ApiError>>,
    },
    Results {
        job: JobId,
        task: Option<TaskId>,
        reply: oneshot::Sender<Result<serde_json::Value, ApiError>>,
    },
    Cancel {
        job: JobId,
        reply: oneshot::Sender<Result<JobSummary, ApiError>>,
    },
    Jobs {
        reply: oneshot::Sender<Result<Vec<JobSummary>, ApiError>>,
    },
    Workers {
        reply: oneshot::Sender<Vec<WorkerStatus>>,
    },
    Activity {
        worker: Option<String>,
        reply: oneshot::Sender<Result<Vec<ActivityRecord>, ApiError>>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid job: {0}")]
    Invalid(#[from] job::JobError),
    #[error("no job {0}")]
    NoJob(JobId),
    #[error("job {job} has no result for task {task}")]
    NoResult { job: JobId, task: TaskId },
    #[error("job {0} has already finished")]
    Finished(JobId),
    #[error("store error: {0}")]
    Store(#[from] StoreError),
}

/// A job's status: its summary and, while it runs, where each task stands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobStatus {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub task_states: Vec<TaskStatus>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskStatus {
    pub id: String,
    pub state: &'static str,
    pub critical: bool,
    pub failures: u32,
    pub replicas: Vec<ReplicaStatus>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaStatus {
    pub replica: String,
    pub worker: String,
    /// The worker's state: `live`, `busy`, `reconnecting` or `lost`.
    pub worker_state: &'static str,
    pub progress: f32,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerStatus {
    pub worker: String,
    pub name: String,
    pub state: &'static str,
    pub hardware: Option<Hardware>,
    pub replicas: usize,
}

/// What a checked hello says.
#[derive(Debug)]
pub struct Hello {
    pub worker: WorkerId,
    pub name: String,
    pub hardware: Hardware,
    pub held: Vec<ReplicaId>,
    pub available: bool,
}

#[derive(Debug)]
pub enum DriverMsg {
    /// A worker passed the hello checks.
    Joined {
        conn: ConnId,
        hello: Hello,
        tx: mpsc::UnboundedSender<Outgoing>,
    },
    Frame {
        conn: ConnId,
        worker: WorkerId,
        msg: WorkerMsg,
    },
    Closed {
        conn: ConnId,
        worker: WorkerId,
    },
    Api(ApiRequest),
    Shutdown,
}

struct Conn {
    id: ConnId,
    name: String,
    tx: mpsc::UnboundedSender<Outgoing>,
}

struct Driver {
    sched: Scheduler,
    store: Store,
    conns: HashMap<WorkerId, Conn>,
    events: broadcast::Sender<Event>,
}

/// Opens the store, resumes unfinished jobs, and runs the driver on its own thread.
pub fn spawn(
    cfg: &Config,
    rx: mpsc::Receiver<DriverMsg>,
    events: broadcast::Sender<Event>,
) -> Result<std::thread::JoinHandle<()>, SupervisorError> {
    let mut store = Store::open(&cfg.data_dir)?;
    let epoch = store.next_epoch()?;
    let sched = Scheduler::new(cfg.sched.clone(), epoch);
    let mut driver = Driver {
        sched,
        store,
        conns: HashMap::new(),
        events,
    };
    driver.resume()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SupervisorError::Thread)?;
    std::thread::Builder::new()
        .name("idlegrid-driver".into())
        .spawn(move || runtime.block_on(driver.run(rx)))
        .map_err(SupervisorError::Thread)
}

impl Driver {
    /// Hands every unfinished stored job back to the scheduler.
    fn resume(&mut self) -> Result<(), SupervisorError> {
        let now = Instant::now();
        for stored in self.store.unfinished()? {
            let done = stored.done.len();
            match job::validate(stored.spec, runtime::is_known_kind) {
                Ok(job) => {
                    info!(
                        job = %stored.id,
                        done,
                        running = stored.running.len(),
                        "resuming job after restart"
                    );
                    self.sched
                        .restore_job(now, stored.id, job, stored.done, &stored.running);
                }
                Err(e) => {
                    // A job this build cannot run (say, a kind it no longer knows) fails alone.
                    error!(job = %stored.id, "cannot resume job: {e}");
                    let msg = format!("cannot resume after restart: {e}");
                    self.store
                        .finish_job(&stored.id, "failed", Some(&msg), unix_ms())?;
                }
            }
        }
        self.drain();
        Ok(())
    }

    async fn run(mut self, mut rx: mpsc::Receiver<DriverMsg>) {
        loop {
            let deadline = self.sched.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                msg = rx.recv() => match msg {
                    Some(DriverMsg::Shutdown) | None => break,
                    Some(msg) => self.handle(msg),
                },
                () = sleep => self.sched.handle_timeout(Instant::now()),
            }
            self.drain();
        }
        for (_, conn) in self.conns.drain() {
            let _ = conn.tx.send(Outgoing::Close {
                code: ErrorCode::Protocol,
                message: "supervisor shutting down".into(),
            });
        }
        info!("driver stopped");
    }

    fn handle(&mut self, msg: DriverMsg) {
        let now = Instant::now();
        match msg {
            DriverMsg::Joined { conn, hello, tx } => {
                let Hello {
                    worker,
                    name,
                    hardware,
                    held,
                    available,
                } = hello;
                if let Some(old) = self.conns.insert(
                    worker.clone(),
                    Conn {
                        id: conn,
                        name: name.clone(),
                        tx,
                    },
                ) {
                    let _ = old.tx.send(Outgoing::Close {
                        code: ErrorCode::Protocol,
                        message: "replaced by a newer connection of the same worker".into(),
                    });
                }
                info!(%worker, %name, slots = hardware.slots, cores = hardware.cores, mops = hardware.bench_mops, available, "worker joined");
                let _ = self.events.send(Event::WorkerJoined {
                    worker: worker.clone(),
                    name: name.clone(),
                });
                self.sched
                    .handle_worker_joined(now, worker, name, hardware, &held, available);
            }
            DriverMsg::Frame { conn, worker, msg } => {
                if self.conns.get(&worker).is_some_and(|c| c.id == conn) {
                    self.handle_frame(now, &worker, msg);
                }
            }
            DriverMsg::Closed { conn, worker } => {
                if self.conns.get(&worker).is_some_and(|c| c.id == conn) {
                    self.conns.remove(&worker);
                    self.sched.handle_worker_left(now, &worker);
                }
            }
            DriverMsg::Api(req) => self.handle_api(now, req),
            DriverMsg::Shutdown => {}
        }
    }

    fn handle_frame(&mut self, now: Instant, worker: &WorkerId, msg: WorkerMsg) {
        match msg {
            WorkerMsg::Hello { .. } => {
                self.close(
                    worker,
                    ErrorCode::Protocol,
                    "hello sent twice on one connection",
                );
                self.sched.handle_worker_left(now, worker);
            }
            WorkerMsg::Heartbeat { progress } => {
                self.sched.handle_heartbeat(now, worker, &progress)
            }
            WorkerMsg::StatusAck { .. } => self.sched.handle_status_ack(now, worker),
            WorkerMsg::Progress(p) => self.sched.handle_progress(now, worker, p),
            WorkerMsg::Result {
                replica,
                output: proto::Payload::Inline(output),
                execution,
            } => {
                match self.sched.result_target(worker, replica) {
                    Some((job, task)) => {
                        // Durable first: once the scheduler marks the task done, a crash must
                        // not lose the result.
                        match self.store.record_result(
                            replica,
                            &job,
                            &task,
                            &output,
                            execution,
                            unix_ms(),
                        ) {
                            Ok(_) => self.sched.handle_result(now, worker, replica, output),
                            Err(e) => {
                                error!(%job, %task, %replica, "cannot store result, task stays open: {e}")
                            }
                        }
                    }
                    None => {
                        debug!(%worker, %replica, "result of a replica that no longer counts");
                        log_store(self.store.record_replica_end(
                            replica,
                            ReplicaEnd::Late,
                            Some(execution),
                            None,
                            unix_ms(),
                        ));
                        self.sched.handle_heartbeat(now, worker, &[]);
                    }
                }
            }
            WorkerMsg::Result {
                output: proto::Payload::Blob(_),
                ..
            } => {
                warn!(%worker, "out-of-band results are not accepted yet");
            }
            WorkerMsg::Failure {
                replica,
                error,
                execution,
            } => {
                if self.sched.result_target(worker, replica).is_some() {
                    warn!(%worker, %replica, "replica failed: {error}");
                }
                log_store(self.store.record_replica_end(
                    replica,
                    ReplicaEnd::Failed,
                    Some(execution),
                    Some(&error),
                    unix_ms(),
                ));
                self.sched.handle_failure(now, worker, replica, error);
            }
            WorkerMsg::Activity { kind, at_ms } => {
                info!(%worker, kind = kind.as_str(), "owner activity: worker paused");
                let _ = self.events.send(Event::Activity {
                    at: now,
                    worker: worker.clone(),
                    kind,
                    at_ms,
                });
                self.sched.handle_activity(now, worker, kind);
                // Reissues go out before the record is written.
                self.drain();
                let record = ActivityRecord {
                    worker: worker.0.clone(),
                    worker_name: self
                        .conns
                        .get(worker)
                        .map(|c| c.name.clone())
                        .unwrap_or_default(),
                    kind: kind.as_str().to_owned(),
                    at_ms,
                    received_ms: unix_ms(),
                };
                log_store(self.store.record_activity(&record));
            }
            WorkerMsg::Available { .. } => {
                info!(%worker, "worker idle again");
                self.sched.handle_available(now, worker);
            }
        }
    }

    fn handle_api(&mut self, now: Instant, req: ApiRequest) {
        match req {
            ApiRequest::Submit { spec, reply } => {
                let _ = reply.send(self.submit(now, spec));
            }
            ApiRequest::Status { job, reply } => {
                let _ = reply.send(self.status(&job));
            }
            ApiRequest::Report { job, reply } => {
                let r = self
                    .store
                    .report(&job, unix_ms())
                    .map_err(ApiError::from)
                    .and_then(|r| r.ok_or(ApiError::NoJob(job)));
                let _ = reply.send(r);
            }
            ApiRequest::Results { job, task, reply } => {
                let _ = reply.send(self.results(&job, task));
            }
            ApiRequest::Cancel { job, reply } => {
                let r = if self.sched.cancel_job(&job) {
                    self.drain();
                    self.summary(&job)
                } else {
                    match self.summary(&job) {
                        Ok(_) => Err(ApiError::Finished(job)),
                        Err(e) => Err(e),
                    }
                };
                let _ = reply.send(r);
            }
            ApiRequest::Jobs { reply } => {
                let _ = reply.send(self.store.list_jobs(1000).map_err(Into::into));
            }
            ApiRequest::Activity { worker, reply } => {
                let _ = reply.send(
                    self.store
                        .activity(worker.as_deref(), 1000)
                        .map_err(Into::into),
                );
            }
            ApiRequest::Workers { reply } => {
                let workers = self
                    .sched
                    .workers()
                    .into_iter()
                    .map(|w| WorkerStatus {
                        worker: w.id.0,
                        name: w.name,
                        state: w.state.as_str(),
                        hardware: w.hardware,
                        replicas: w.replicas.len(),
                    })
                    .collect();
                let _ = reply.send(workers);
            }
        }
    }

    fn submit(&mut self, now: Instant, spec: JobSpec) -> Result<JobId, ApiError> {
        let job = job::validate(spec, runtime::is_known_kind)?;
        let id = self.store.insert_job(job.spec(), unix_ms())?;
        info!(job = %id, name = job.name(), tasks = job.tasks().len(), "job accepted");
        self.sched.submit_job(now, id.clone(), job);
        Ok(id)
    }

    fn summary(&self, job: &JobId) -> Result<JobSummary, ApiError> {
        self.store
            .summary(job)?
            .ok_or_else(|| ApiError::NoJob(job.clone()))
    }

    fn status(&self, job: &JobId) -> Result<JobStatus, ApiError> {
        let summary = self.summary(job)?;
        let task_states = match self.sched.job_view(job) {
            Some(view) => view
                .tasks
                .into_iter()
                .map(|t| TaskStatus {
                    id: t.id.0,
                    state: t.phase.as_str(),
                    critical: t.critical,
                    failures: t.failures,
                    replicas: t
                        .replicas
                        .into_iter()
                        .map(|r| ReplicaStatus {
                            replica: r.replica.to_string(),
                            worker: r.worker.0,
                            worker_state: r.worker_state.as_str(),
                            progress: r.progress,
                        })
                        .collect(),
                })
                .collect(),
            None => {
                let spec = self.store.spec(job)?;
                let done = self.store.results(job)?;
                spec.map(|s| s.tasks)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| TaskStatus {
                        state: if done.contains_key(&t.id) {
                            "done"
                        } else {
                            "not_done"
                        },
                        id: t.id.0,
                        critical: t.critical,
                        failures: 0,
                        replicas: Vec::new(),
                    })
                    .collect()
            }
        };
        Ok(JobStatus {
            summary,
            task_states,
        })
    }

    fn results(&self, job: &JobId, task: Option<TaskId>) -> Result<serde_json::Value, ApiError> {
        self.summary(job)?;
        match task {
            None => {
                let all: BTreeMap<String, serde_json::Value> = self
                    .store
                    .results(job)?
                    .into_iter()
                    .map(|(k, v)| (k.0, v))
                    .collect();
                Ok(serde_json::to_value(all).unwrap_or_default())
            }
            Some(task) => self.store.result(job, &task)?.ok_or(ApiError::NoResult {
                job: job.clone(),
                task,
            }),
        }
    }

    /// Carries out everything the scheduler decided.
    fn drain(&mut self) {
        while let Some(out) = self.sched.poll_output() {
            self.carry_out(out);
        }
    }

    fn carry_out(&mut self, out: Output) {
        match out {
            Output::Welcome { worker, keep, drop } => {
                for r in &keep {
                    log_store(self.store.reopen_replica(*r));
                }
                let hb = self.sched.config().heartbeat.as_millis() as u64;
                self.send(
                    &worker,
                    &SupervisorMsg::Welcome {
                        protocol: proto::PROTOCOL_VERSION,
                        heartbeat_ms: hb,
                        keep,
                        drop,
                        max_output_bytes: proto::DEFAULT_MAX_OUTPUT_BYTES,
                    },
                );
            }
            Output::Assign {
                worker,
                assignment,
                reason,
                rate,
            } => {
                self.send(&worker, &SupervisorMsg::Assign(assignment.clone()));
                let at = Instant::now();
                let (label, detail) = match &reason {
                    AssignReason::First => ("first", None),
                    AssignReason::Redundant => ("redundant", None),
                    AssignReason::Reissue(cause) => ("reissue", Some(cause.to_string())),
                };
                if let Some(d) = &detail {
                    info!(job = %assignment.job, task = %assignment.task, to = %worker, "reissued: {d}");
                }
                let _ = self.events.send(Event::Assigned {
                    at,
                    job: assignment.job.clone(),
                    task: assignment.task.clone(),
                    replica: assignment.replica,
                    worker: worker.clone(),
                    reason: label,
                    detail: detail.clone(),
                });
                let worker_name = self
                    .conns
                    .get(&worker)
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                log_store(self.store.record_replica_started(&ReplicaStart {
                    replica: assignment.replica,
                    job: &assignment.job,
                    task: &assignment.task,
                    worker: &worker,
                    worker_name: &worker_name,
                    rate,
                    reason: label,
                    detail,
                    at_ms: unix_ms(),
                }));
            }
            Output::Cancel {
                worker,
                replica,
                reason,
            } => {
                self.send(&worker, &SupervisorMsg::Cancel { replica, reason });
                log_store(self.store.record_replica_end(
                    replica,
                    ReplicaEnd::Cancelled,
                    None,
                    None,
                    unix_ms(),
                ));
            }
            Output::StatusRequest { worker, nonce } => {
                self.send(&worker, &SupervisorMsg::StatusRequest { nonce });
            }
            Output::WorkerLost {
                worker,
                cause,
                replicas,
            } => {
                warn!(%worker, "worker lost: {cause}");
                for r in replicas {
                    log_store(self.store.record_replica_end(
                        r,
                        ReplicaEnd::Lost,
                        None,
                        None,
                        unix_ms(),
                    ));
                }
                // A silent worker's connection may still be open: close it, so the worker (if it
                // wakes up) reconnects and says what it still holds.
                self.close(
                    &worker,
                    ErrorCode::Protocol,
                    &format!("worker declared lost: {cause}"),
                );
                let _ = self.events.send(Event::WorkerLost {
                    worker,
                    cause: cause.to_string(),
                });
            }
            Output::TaskDone {
                job, task, worker, ..
            } => {
                debug!(%job, %task, %worker, "task done");
                let _ = self.events.send(Event::TaskDone { job, task, worker });
            }
            Output::JobFinished { job, outcome } => {
                let (state, error) = match &outcome {
                    JobOutcome::Completed => ("completed", None),
                    JobOutcome::Failed { error, .. } => ("failed", Some(error.as_str())),
                    JobOutcome::Cancelled => ("cancelled", None),
                };
                info!(%job, state, "job finished{}", error.map(|e| format!(": {e}")).unwrap_or_default());
                log_store(self.store.finish_job(&job, state, error, unix_ms()));
                let _ = self.events.send(Event::JobFinished { job, state });
            }
        }
    }

    fn send(&self, worker: &WorkerId, msg: &SupervisorMsg) {
        if let Some(conn) = self.conns.get(worker) {
            let _ = conn.tx.send(Outgoing::Frame(proto::encode(msg)));
        }
    }

    fn close(&mut self, worker: &WorkerId, code: ErrorCode, message: &str) {
        if let Some(conn) = self.conns.remove(worker) {
            let _ = conn.tx.send(Outgoing::Close {
                code,
                message: message.to_owned(),
            });
        }
    }
}

/// Store writes outside the acknowledgement path are logged, not fatal: the scheduler's state is
/// still right, and the next write may succeed.
fn log_store(r: Result<(), StoreError>) {
    if let Err(e) = r {
        error!("store write failed: {e}");
    }
}
