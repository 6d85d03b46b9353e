//! The discrete-event engine: plays a [`World`] against the real [`Scheduler`] on virtual time.
//!
//! Time is integer nanoseconds from the start of the run; the scheduler sees `base + t`. Events
//! at the same instant run in the order they were scheduled (a sequence number breaks ties), so a
//! seed always gives the same run. Every message between a worker and the supervisor, either way,
//! arrives `delay` after it was sent, on the connection it was sent on: a message for a connection
//! that has since closed is dropped, as a socket would.
//!
//! What a simulated worker does is what the client does: it runs each assigned replica at its
//! true speed (a straggler's divided by its slowdown), pauses them while its owner is active and
//! says so (`Activity`, then `Available`), sends every running replica's progress with each
//! heartbeat, sends a result with the execution's CPU time when a replica finishes (and again
//! after a reconnect until the supervisor has it), stops a replica on `Cancel`, answers a
//! `StatusRequest`, and reconnects holding its replicas when the supervisor closed its
//! connection. A crashed worker's connection closes and its replicas die; a frozen one says
//! nothing and computes nothing until it thaws, and the scheduler must notice by its own
//! timeouts.
//!
//! The heartbeats of one tick are one event (one pass over the connected workers), so a large
//! pool costs one event per heartbeat interval, not one per worker; everything else costs
//! O(log events) plus whatever the scheduler itself does.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use super::SimError;
use super::world::World;
use crate::proto::{ActivityKind, Hardware, JobId, Progress, ReplicaId, WorkerId};
use crate::sched::{CapacityClass, Config, JobOutcome, Output, Policy, Scheduler};

const NS: f64 = 1e9;

fn ns(s: f64) -> u64 {
    if s <= 0.0 { 0 } else { (s * NS).round() as u64 }
}

fn secs(t: u64) -> f64 {
    t as f64 / NS
}

/// How a replica ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReplicaOutcome {
    /// Its result was the one its task kept.
    Won,
    /// Stopped by a `Cancel`, or finished after another replica had won.
    Cancelled,
    /// Died with its worker (crash, leaving, dropped on reconnect, frozen at the end), or never
    /// reached it.
    Lost,
}

impl ReplicaOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaOutcome::Won => "won",
            ReplicaOutcome::Cancelled => "cancelled",
            ReplicaOutcome::Lost => "lost",
        }
    }
}

/// One replica, as the run saw it.
#[derive(Debug, Clone)]
pub struct ReplicaRecord {
    pub replica: ReplicaId,
    pub task: usize,
    pub worker: usize,
    /// `AssignReason::label`.
    pub reason: &'static str,
    pub class: CapacityClass,
    pub rate: f64,
    pub assigned_s: f64,
    /// When the worker got it (`None`: it never did).
    pub started_s: Option<f64>,
    pub ended_s: Option<f64>,
    /// CPU time it actually used (not time paused or frozen).
    pub cpu_s: f64,
    pub outcome: ReplicaOutcome,
}

/// Everything a run produced; [`super::report`] turns it into figures.
#[derive(Debug, Clone)]
pub struct RunLog {
    pub policy: Policy,
    pub seed: u64,
    /// Submission to the supervisor's `JobFinished`.
    pub makespan_s: f64,
    pub outcome: JobOutcome,
    pub replicas: Vec<ReplicaRecord>,
    /// Per task: first assignment and completion, in seconds from submission.
    pub task_times: Vec<(Option<f64>, Option<f64>)>,
    /// Assignments by `AssignReason::label`, reissues included.
    pub assigns: BTreeMap<&'static str, u64>,
    /// Reissues (`AssignReason::Reissue`) by cause label.
    pub reissues: BTreeMap<&'static str, u64>,
    /// Workers the scheduler declared lost, by cause.
    pub losses: BTreeMap<&'static str, u64>,
    pub events: u64,
    /// Per worker: owner-busy spells, clipped to the run, from submission.
    pub busy: Vec<Vec<(f64, f64)>>,
}

#[derive(Debug)]
enum Ev {
    Submit,
    // The worker's own life.
    Join(usize),
    Leave(usize),
    Crash(usize),
    Restart(usize),
    Freeze(usize),
    Thaw(usize),
    OwnerReturns(usize),
    OwnerLeaves(usize),
    Finish {
        w: usize,
        replica: ReplicaId,
        turn: u64,
    },
    // Worker -> supervisor, on connection `conn`.
    Hello {
        w: usize,
        conn: u64,
        held: Vec<ReplicaId>,
        available: bool,
    },
    Closed {
        w: usize,
        conn: u64,
    },
    Activity {
        w: usize,
        conn: u64,
    },
    Available {
        w: usize,
        conn: u64,
    },
    Result {
        w: usize,
        conn: u64,
        replica: ReplicaId,
        cpu_s: f64,
    },
    Ack {
        w: usize,
        conn: u64,
        nonce: u64,
    },
    // Supervisor -> worker.
    ToWorker {
        w: usize,
        conn: u64,
        msg: Down,
    },
}

#[derive(Debug, Clone)]
enum Down {
    Assign {
        replica: ReplicaId,
    },
    Cancel {
        replica: ReplicaId,
    },
    Probe {
        nonce: u64,
    },
    Welcome {
        drop: Vec<ReplicaId>,
    },
    /// The supervisor closed the connection (it lost the worker).
    Close,
}

struct Queued {
    t: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.t, self.seq).cmp(&(o.t, o.seq))
    }
}

/// A replica executing (or paused) on a worker.
#[derive(Debug)]
struct Run {
    rec: usize,
    size: f64,
    /// Work left, in CPU-seconds at speed 1.0, as of `since` (or now, when paused).
    left: f64,
    /// Executing since then; `None` while paused or frozen.
    since: Option<u64>,
    /// Invalidates a scheduled `Finish` when the run pauses.
    turn: u64,
}

#[derive(Debug, Default)]
struct WState {
    alive: bool,
    frozen: bool,
    owner_busy: bool,
    /// What the supervisor was last told (Activity / Available / the hello's `available`).
    reported_busy: bool,
    /// The worker believes this connection is open.
    connected: bool,
    conn: u64,
    /// The connection the supervisor considers open.
    sup_conn: Option<u64>,
    runs: BTreeMap<ReplicaId, Run>,
    /// Results not yet received by the supervisor (the client's outbox).
    outbox: Vec<(ReplicaId, f64)>,
    /// Messages that arrived while frozen, handled at the thaw.
    inbox: Vec<Down>,
    next_busy: usize,
    turn: u64,
}

pub(super) struct Engine<'a> {
    world: &'a World,
    sched: Scheduler,
    base: Instant,
    now: u64,
    seq: u64,
    heap: BinaryHeap<Reverse<Queued>>,
    delay: u64,
    tick: u64,
    next_tick: u64,
    next_timeout: Option<u64>,
    ids: Vec<WorkerId>,
    by_id: BTreeMap<WorkerId, usize>,
    ws: Vec<WState>,
    /// Workers whose heartbeats go out: alive, not frozen, connected.
    beating: BTreeSet<usize>,
    recs: Vec<ReplicaRecord>,
    /// Replica to its record.
    rec_of: BTreeMap<ReplicaId, usize>,
    /// Whether each record's outcome is final.
    settled: Vec<bool>,
    task_times: Vec<(Option<f64>, Option<f64>)>,
    assigns: BTreeMap<&'static str, u64>,
    reissues: BTreeMap<&'static str, u64>,
    losses: BTreeMap<&'static str, u64>,
    finished: Option<(u64, JobOutcome)>,
    events: u64,
    submit: u64,
    progress: Vec<Progress>,
}

const JOB: &str = "sim";

impl<'a> Engine<'a> {
    pub(super) fn new(world: &'a World, policy: Policy, seed: u64) -> Self {
        let heartbeat = Duration::from_millis(world.heartbeat_ms.max(1));
        let cfg = Config {
            heartbeat,
            miss_limit: world.miss_limit,
            seed,
            policy,
            ..Config::default()
        };
        let ids: Vec<WorkerId> = world
            .workers
            .iter()
            .map(|w| WorkerId::from(w.name.as_str()))
            .collect();
        let by_id = ids
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect();
        let mut e = Engine {
            world,
            sched: Scheduler::new(cfg, 1),
            // Only an origin: nothing measured depends on it.
            base: Instant::now(),
            now: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            delay: ns(world.delay_s),
            tick: heartbeat.as_nanos() as u64,
            next_tick: heartbeat.as_nanos() as u64,
            next_timeout: None,
            ids,
            by_id,
            ws: (0..world.workers.len())
                .map(|_| WState::default())
                .collect(),
            beating: BTreeSet::new(),
            recs: Vec::new(),
            rec_of: BTreeMap::new(),
            settled: Vec::new(),
            task_times: vec![(None, None); world.tasks.len()],
            assigns: BTreeMap::new(),
            reissues: BTreeMap::new(),
            losses: BTreeMap::new(),
            finished: None,
            events: 0,
            submit: ns(world.submit_s),
            progress: Vec::new(),
        };
        e.push(e.submit, Ev::Submit);
        for (i, p) in world.workers.iter().enumerate() {
            e.push(ns(p.join_s), Ev::Join(i));
            if let Some(t) = p.leave_s {
                e.push(ns(t), Ev::Leave(i));
            }
            if let Some(c) = p.crash {
                e.push(ns(c.at_s), Ev::Crash(i));
                if let Some(t) = c.until_s {
                    e.push(ns(t), Ev::Restart(i));
                }
            }
            if let Some(f) = p.freeze {
                e.push(ns(f.at_s), Ev::Freeze(i));
                if let Some(t) = f.until_s {
                    e.push(ns(t), Ev::Thaw(i));
                }
            }
            if let Some(&(start, _)) = p.busy.first() {
                e.push(ns(start), Ev::OwnerReturns(i));
            }
        }
        e
    }

    fn at(&self, t: u64) -> Instant {
        self.base + Duration::from_nanos(t)
    }

    fn push(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse(Queued {
            t,
            seq: self.seq,
            ev,
        }));
    }

    fn send(&mut self, ev: Ev) {
        self.push(self.now + self.delay, ev);
    }

    fn tell_worker(&mut self, w: usize, msg: Down) {
        let conn = self.ws[w].sup_conn.unwrap_or(self.ws[w].conn);
        self.send(Ev::ToWorker { w, conn, msg });
    }

    fn rate(&self, w: usize) -> f64 {
        let p = &self.world.workers[w];
        p.speed / p.slowdown
    }

    fn computing(&self, w: usize) -> bool {
        let s = &self.ws[w];
        s.alive && !s.frozen && !s.owner_busy
    }

    fn update_beating(&mut self, w: usize) {
        let s = &self.ws[w];
        if s.alive && !s.frozen && s.connected {
            self.beating.insert(w);
        } else {
            self.beating.remove(&w);
        }
    }

    /// Runs the world until its job finishes (and the last cancels are delivered).
    pub(super) fn run(mut self) -> Result<RunLog, SimError> {
        let limit = self.submit + ns(self.world.limit_s);
        let mut end: Option<u64> = None;
        let mut timeouts_at_once = 0u32;
        loop {
            let next_ev = self.heap.peek().map(|q| q.0.t);
            let tick = (!self.beating.is_empty()).then_some(self.next_tick);
            // At one instant: messages and events first, then the heartbeats, then the
            // scheduler's timers (it sees everything that arrived by then).
            let Some(t) = [next_ev, tick, self.next_timeout]
                .into_iter()
                .flatten()
                .min()
            else {
                if self.finished.is_some() {
                    break;
                }
                return Err(self.stuck("nothing more can happen"));
            };
            if end.is_some_and(|end| t > end) {
                break;
            }
            if t > limit {
                return Err(SimError::TimeLimit {
                    limit_h: self.world.limit_s / 3600.0,
                    done: self.done_tasks(),
                    total: self.world.tasks.len(),
                });
            }
            if next_ev.is_none() && self.finished.is_none() {
                if tick.is_none() {
                    // Only the scheduler's own timers are left: nothing connected, nothing coming.
                    return Err(self.stuck("no worker is connected and none will come"));
                }
                if self.next_timeout.is_none() {
                    // Nothing is running, nothing will change, and the scheduler waits for
                    // nothing: heartbeats alone would go on to the time limit.
                    return Err(self.stuck("the scheduler gives no worker a task"));
                }
            }
            let t = t.max(self.now);
            self.events += 1;
            if next_ev.is_some_and(|e| e <= t) {
                timeouts_at_once = 0;
                if let Some(Reverse(q)) = self.heap.pop() {
                    self.now = t;
                    self.handle(q.ev);
                }
            } else if tick.is_some_and(|k| k <= t) {
                timeouts_at_once = 0;
                self.now = t;
                self.heartbeats();
                self.next_tick += self.tick;
            } else {
                timeouts_at_once += 1;
                if timeouts_at_once > 10_000 {
                    return Err(SimError::Engine(format!(
                        "the scheduler keeps asking for a timeout at {:.3} s and makes no progress",
                        secs(t)
                    )));
                }
                self.now = t;
                self.sched.handle_timeout(self.at(t));
                self.drain();
            }
            if end.is_none()
                && let Some((at, _)) = &self.finished
            {
                end = Some(*at + self.delay);
            }
        }
        Ok(self.finish())
    }

    fn done_tasks(&self) -> usize {
        self.task_times.iter().filter(|t| t.1.is_some()).count()
    }

    fn stuck(&self, why: &str) -> SimError {
        SimError::Stuck {
            at_s: secs(self.now.saturating_sub(self.submit)),
            why: why.to_owned(),
            done: self.done_tasks(),
            total: self.world.tasks.len(),
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Submit => match self.world.job() {
                Ok(job) => {
                    self.sched
                        .submit_job(self.at(self.now), JobId::from(JOB), job);
                    self.drain();
                }
                Err(e) => {
                    self.finished = Some((
                        self.now,
                        JobOutcome::Failed {
                            task: "".into(),
                            error: e.to_string(),
                        },
                    ))
                }
            },
            Ev::Join(w) => {
                let s = &mut self.ws[w];
                s.alive = true;
                self.connect(w, Vec::new());
            }
            Ev::Restart(w) => {
                if !self.ws[w].alive {
                    self.ws[w].alive = true;
                    self.connect(w, Vec::new());
                }
            }
            Ev::Leave(w) | Ev::Crash(w) => self.die(w),
            Ev::Freeze(w) => {
                if self.ws[w].alive && !self.ws[w].frozen {
                    self.pause(w);
                    self.ws[w].frozen = true;
                    self.update_beating(w);
                }
            }
            Ev::Thaw(w) => {
                if self.ws[w].alive && self.ws[w].frozen {
                    self.ws[w].frozen = false;
                    self.update_beating(w);
                    if self.computing(w) {
                        self.resume(w);
                    }
                    for msg in std::mem::take(&mut self.ws[w].inbox) {
                        self.worker_receives(w, msg);
                    }
                    self.report_owner(w);
                }
            }
            Ev::OwnerReturns(w) => {
                let s = &mut self.ws[w];
                let spell = self.world.workers[w].busy.get(s.next_busy).copied();
                s.owner_busy = true;
                if let Some((_, until)) = spell {
                    self.push(ns(until), Ev::OwnerLeaves(w));
                }
                self.pause(w);
                self.report_owner(w);
            }
            Ev::OwnerLeaves(w) => {
                let s = &mut self.ws[w];
                s.owner_busy = false;
                s.next_busy += 1;
                if let Some(&(start, _)) = self.world.workers[w].busy.get(s.next_busy) {
                    self.push(ns(start), Ev::OwnerReturns(w));
                }
                if self.computing(w) {
                    self.resume(w);
                }
                self.report_owner(w);
            }
            Ev::Finish { w, replica, turn } => self.finish_run(w, replica, turn),
            Ev::Hello {
                w,
                conn,
                held,
                available,
            } => {
                if self.ws[w].conn != conn || !self.ws[w].alive {
                    return;
                }
                self.ws[w].sup_conn = Some(conn);
                let p = &self.world.workers[w];
                let hw = Hardware {
                    cores: p.slots,
                    memory_mb: p.memory_mb,
                    disk_mb: p.disk_mb,
                    os: "simulated".to_owned(),
                    slots: p.slots,
                    bench_mops: p.speed * crate::sched::REFERENCE_MOPS,
                };
                let link = crate::sched::Link {
                    up_kbps: p.link_kbps,
                    down_kbps: p.link_kbps,
                };
                let now = self.at(self.now);
                let id = self.ids[w].clone();
                self.sched.handle_worker_joined(
                    now,
                    id.clone(),
                    p.name.clone(),
                    hw,
                    &held,
                    available,
                );
                self.sched.handle_link(now, &id, link);
                self.drain();
            }
            Ev::Closed { w, conn } => {
                if self.ws[w].sup_conn == Some(conn) {
                    self.ws[w].sup_conn = None;
                    self.sched
                        .handle_worker_left(self.at(self.now), &self.ids[w]);
                    self.drain();
                }
            }
            Ev::Activity { w, conn } => {
                if self.ws[w].sup_conn == Some(conn) {
                    self.sched.handle_activity(
                        self.at(self.now),
                        &self.ids[w],
                        ActivityKind::Keyboard,
                    );
                    self.drain();
                }
            }
            Ev::Available { w, conn } => {
                if self.ws[w].sup_conn == Some(conn) {
                    self.sched.handle_available(self.at(self.now), &self.ids[w]);
                    self.drain();
                }
            }
            Ev::Result {
                w,
                conn,
                replica,
                cpu_s,
            } => {
                if self.ws[w].sup_conn != Some(conn) {
                    return;
                }
                self.ws[w].outbox.retain(|(r, _)| *r != replica);
                let output = serde_json::Value::from(replica.seq);
                self.sched.handle_result(
                    self.at(self.now),
                    &self.ids[w],
                    replica,
                    output,
                    Duration::from_secs_f64(cpu_s),
                );
                self.drain();
            }
            Ev::Ack { w, conn, nonce } => {
                if self.ws[w].sup_conn == Some(conn) {
                    self.sched
                        .handle_status_ack(self.at(self.now), &self.ids[w], nonce);
                    self.drain();
                }
            }
            Ev::ToWorker { w, conn, msg } => {
                let s = &self.ws[w];
                if !s.alive || !s.connected || s.conn != conn {
                    // The connection it was sent on is gone: the worker never sees it.
                    if let Down::Assign { replica } = msg {
                        self.settle(replica, ReplicaOutcome::Lost);
                    }
                    return;
                }
                if s.frozen {
                    self.ws[w].inbox.push(msg);
                } else {
                    self.worker_receives(w, msg);
                }
            }
        }
    }

    /// Opens a new connection: hello (with the replicas still held), then the outbox again.
    fn connect(&mut self, w: usize, held: Vec<ReplicaId>) {
        let s = &mut self.ws[w];
        s.conn += 1;
        s.connected = true;
        s.reported_busy = s.owner_busy;
        let (conn, available) = (s.conn, !s.owner_busy);
        let outbox = s.outbox.clone();
        self.send(Ev::Hello {
            w,
            conn,
            held,
            available,
        });
        for (replica, cpu_s) in outbox {
            self.send(Ev::Result {
                w,
                conn,
                replica,
                cpu_s,
            });
        }
        self.update_beating(w);
        if self.computing(w) {
            self.resume(w);
        }
    }

    /// The process ends (crash or shutdown): its replicas die, its connection closes.
    fn die(&mut self, w: usize) {
        if !self.ws[w].alive {
            return;
        }
        self.pause(w);
        let runs = std::mem::take(&mut self.ws[w].runs);
        for r in runs.into_keys() {
            self.settle(r, ReplicaOutcome::Lost);
        }
        let s = &mut self.ws[w];
        s.alive = false;
        s.frozen = false;
        s.inbox.clear();
        let was = s.connected.then_some(s.conn);
        s.connected = false;
        self.update_beating(w);
        if let Some(conn) = was {
            self.send(Ev::Closed { w, conn });
        }
    }

    /// Tells the supervisor whether the owner is busy, if it was not told yet and can be.
    fn report_owner(&mut self, w: usize) {
        let s = &self.ws[w];
        if !s.alive || s.frozen || !s.connected || s.reported_busy == s.owner_busy {
            return;
        }
        let conn = s.conn;
        let busy = s.owner_busy;
        self.ws[w].reported_busy = busy;
        if busy {
            self.send(Ev::Activity { w, conn });
        } else {
            self.send(Ev::Available { w, conn });
        }
    }

    fn worker_receives(&mut self, w: usize, msg: Down) {
        match msg {
            Down::Assign { replica } => {
                let Some(&rec) = self.rec_of.get(&replica) else {
                    return;
                };
                let size = self.world.tasks[self.recs[rec].task].size_s;
                self.recs[rec].started_s = Some(secs(self.now));
                self.ws[w].runs.insert(
                    replica,
                    Run {
                        rec,
                        size,
                        left: size,
                        since: None,
                        turn: 0,
                    },
                );
                if self.computing(w) {
                    self.start(w, replica);
                }
            }
            Down::Cancel { replica } => {
                if let Some(run) = self.stop(w, replica) {
                    self.settle_rec(run.rec, ReplicaOutcome::Cancelled);
                }
            }
            Down::Probe { nonce } => {
                let conn = self.ws[w].conn;
                self.send(Ev::Ack { w, conn, nonce });
            }
            Down::Welcome { drop } => {
                for r in drop {
                    if let Some(run) = self.stop(w, r) {
                        self.settle_rec(run.rec, ReplicaOutcome::Lost);
                    }
                }
            }
            Down::Close => {
                let held: Vec<ReplicaId> = self.ws[w].runs.keys().copied().collect();
                self.connect(w, held);
            }
        }
    }

    /// Stops a run now, counting the CPU it used; `None` if the worker does not have it.
    fn stop(&mut self, w: usize, replica: ReplicaId) -> Option<Run> {
        let now = self.now;
        let mut run = self.ws[w].runs.remove(&replica)?;
        if let Some(since) = run.since.take() {
            self.recs[run.rec].cpu_s += secs(now - since);
        }
        Some(run)
    }

    fn start(&mut self, w: usize, replica: ReplicaId) {
        let rate = self.rate(w);
        let now = self.now;
        let s = &mut self.ws[w];
        s.turn += 1;
        let turn = s.turn;
        let Some(run) = s.runs.get_mut(&replica) else {
            return;
        };
        if run.since.is_some() {
            return;
        }
        run.since = Some(now);
        run.turn = turn;
        let done = now + ns(run.left / rate).max(1);
        self.push(done, Ev::Finish { w, replica, turn });
    }

    fn resume(&mut self, w: usize) {
        let replicas: Vec<ReplicaId> = self.ws[w].runs.keys().copied().collect();
        for r in replicas {
            self.start(w, r);
        }
    }

    /// Pauses every run of the worker (owner back, frozen, dying), counting their CPU time.
    fn pause(&mut self, w: usize) {
        let rate = self.rate(w);
        let now = self.now;
        let s = &mut self.ws[w];
        for run in s.runs.values_mut() {
            if let Some(since) = run.since.take() {
                let dt = secs(now - since);
                run.left = (run.left - dt * rate).max(0.0);
                self.recs[run.rec].cpu_s += dt;
            }
        }
    }

    fn finish_run(&mut self, w: usize, replica: ReplicaId, turn: u64) {
        let valid = self.ws[w]
            .runs
            .get(&replica)
            .is_some_and(|r| r.turn == turn && r.since.is_some());
        if !valid {
            return;
        }
        let Some(run) = self.stop(w, replica) else {
            return;
        };
        let rec = run.rec;
        self.recs[rec].ended_s = Some(secs(self.now));
        let cpu_s = self.recs[rec].cpu_s;
        let s = &mut self.ws[w];
        s.outbox.push((replica, cpu_s));
        if s.connected {
            let conn = s.conn;
            self.send(Ev::Result {
                w,
                conn,
                replica,
                cpu_s,
            });
        }
    }

    /// One heartbeat from every connected worker, each carrying its replicas' progress.
    fn heartbeats(&mut self) {
        let now = self.at(self.now);
        let beating: Vec<usize> = self.beating.iter().copied().collect();
        for w in beating {
            let s = &self.ws[w];
            if s.sup_conn != Some(s.conn) {
                continue;
            }
            let rate = self.rate(w);
            self.progress.clear();
            for (r, run) in &s.runs {
                let left = match run.since {
                    Some(since) => run.left - secs(self.now - since) * rate,
                    None => run.left,
                };
                let fraction = if run.size > 0.0 {
                    (1.0 - left / run.size).clamp(0.0, 1.0)
                } else {
                    1.0
                };
                self.progress.push(Progress {
                    replica: *r,
                    fraction: fraction as f32,
                });
            }
            self.sched
                .handle_heartbeat(now, &self.ids[w], &self.progress);
        }
        self.drain();
    }

    fn settle(&mut self, replica: ReplicaId, outcome: ReplicaOutcome) {
        if let Some(&rec) = self.rec_of.get(&replica) {
            self.settle_rec(rec, outcome);
        }
    }

    /// Sets how a replica ended, once.
    fn settle_rec(&mut self, rec: usize, outcome: ReplicaOutcome) {
        if !self.settled[rec] {
            self.settled[rec] = true;
            self.recs[rec].outcome = outcome;
            if self.recs[rec].ended_s.is_none() {
                self.recs[rec].ended_s = Some(secs(self.now));
            }
        }
    }

    /// Carries out the scheduler's decisions.
    fn drain(&mut self) {
        while let Some(out) = self.sched.poll_output() {
            match out {
                Output::Welcome { worker, drop, .. } => {
                    if let Some(&w) = self.by_id.get(&worker) {
                        self.tell_worker(w, Down::Welcome { drop });
                    }
                }
                Output::Assign {
                    worker,
                    assignment,
                    reason,
                    class,
                    rate,
                    ..
                } => {
                    let Some(&w) = self.by_id.get(&worker) else {
                        continue;
                    };
                    let task = self.task_index(&assignment.task.0);
                    let label = reason.label();
                    *self.assigns.entry(label).or_default() += 1;
                    if let crate::sched::AssignReason::Reissue(cause) = &reason {
                        *self.reissues.entry(cause.label()).or_default() += 1;
                    }
                    let now_s = secs(self.now.saturating_sub(self.submit));
                    if let Some(t) = task {
                        self.task_times[t].0.get_or_insert(now_s);
                    }
                    let rec = self.recs.len();
                    self.recs.push(ReplicaRecord {
                        replica: assignment.replica,
                        task: task.unwrap_or(0),
                        worker: w,
                        reason: label,
                        class,
                        rate,
                        assigned_s: secs(self.now),
                        started_s: None,
                        ended_s: None,
                        cpu_s: 0.0,
                        outcome: ReplicaOutcome::Cancelled,
                    });
                    self.settled.push(false);
                    self.rec_of.insert(assignment.replica, rec);
                    self.tell_worker(
                        w,
                        Down::Assign {
                            replica: assignment.replica,
                        },
                    );
                }
                Output::Cancel {
                    worker, replica, ..
                } => {
                    if let Some(&w) = self.by_id.get(&worker) {
                        self.tell_worker(w, Down::Cancel { replica });
                    }
                }
                Output::StatusRequest { worker, nonce } => {
                    if let Some(&w) = self.by_id.get(&worker) {
                        self.tell_worker(w, Down::Probe { nonce });
                    }
                }
                Output::WorkerLost { worker, cause, .. } => {
                    let label = match cause {
                        crate::sched::LossCause::Disconnected => "disconnected",
                        crate::sched::LossCause::Silent(_) => "silent",
                        crate::sched::LossCause::NotReconnected => "not_reconnected",
                        crate::sched::LossCause::Left => "left",
                    };
                    *self.losses.entry(label).or_default() += 1;
                    if let Some(&w) = self.by_id.get(&worker)
                        && let Some(conn) = self.ws[w].sup_conn.take()
                    {
                        // The shell closes the connection of a worker it lost.
                        self.send(Ev::ToWorker {
                            w,
                            conn,
                            msg: Down::Close,
                        });
                    }
                }
                Output::TaskDone { task, replica, .. } => {
                    if let Some(t) = self.task_index(&task.0) {
                        let now_s = secs(self.now.saturating_sub(self.submit));
                        self.task_times[t].1.get_or_insert(now_s);
                    }
                    self.settle(replica, ReplicaOutcome::Won);
                }
                Output::JobFinished { outcome, .. } => {
                    if self.finished.is_none() {
                        self.finished = Some((self.now, outcome));
                    }
                }
                Output::Speed { .. } | Output::Validated { .. } | Output::WorkerFlagged { .. } => {}
            }
        }
        self.next_timeout = self.sched.poll_timeout().map(|t| {
            let d = t.saturating_duration_since(self.base);
            (d.as_nanos() as u64).max(self.now)
        });
    }

    /// `t00042` -> 41.
    fn task_index(&self, id: &str) -> Option<usize> {
        let i: usize = id.strip_prefix('t')?.parse().ok()?;
        (1..=self.world.tasks.len()).contains(&i).then(|| i - 1)
    }

    fn finish(mut self) -> RunLog {
        // Whatever is still attached somewhere: a result that never got in lost the race; a
        // replica still on a frozen or unreachable worker is lost with it.
        for w in 0..self.ws.len() {
            self.pause(w);
            let runs = std::mem::take(&mut self.ws[w].runs);
            for (_, run) in runs {
                self.settle_rec(run.rec, ReplicaOutcome::Lost);
            }
        }
        for rec in 0..self.recs.len() {
            if !self.settled[rec] {
                let outcome = if self.recs[rec].started_s.is_some() {
                    ReplicaOutcome::Cancelled
                } else {
                    ReplicaOutcome::Lost
                };
                self.settle_rec(rec, outcome);
            }
        }
        let (end, outcome) = self.finished.clone().unwrap_or((
            self.now,
            JobOutcome::Failed {
                task: "".into(),
                error: "did not finish".to_owned(),
            },
        ));
        let submit = self.submit;
        let makespan = secs(end.saturating_sub(submit));
        let end_s = secs(end);
        let submit_s = secs(submit);
        let busy = self
            .world
            .workers
            .iter()
            .map(|p| {
                p.busy
                    .iter()
                    .filter(|(a, _)| *a < end_s)
                    .map(|&(a, b)| ((a - submit_s).max(0.0), (b.min(end_s) - submit_s).max(0.0)))
                    .collect()
            })
            .collect();
        for r in &mut self.recs {
            r.assigned_s -= submit_s;
            r.started_s = r.started_s.map(|t| t - submit_s);
            r.ended_s = r.ended_s.map(|t| t - submit_s);
        }
        RunLog {
            policy: self.sched.config().policy,
            seed: self.sched.config().seed,
            makespan_s: makespan,
            outcome,
            replicas: self.recs,
            task_times: self.task_times,
            assigns: self.assigns,
            reissues: self.reissues,
            losses: self.losses,
            events: self.events,
            busy,
        }
    }
}
