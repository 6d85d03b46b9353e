//! The scheduler: which replica of which task runs on which worker, and what happens when a worker
//! is lost, busy or fails.
//!
//! A sans-IO state machine. It never reads a clock, touches a socket, a file or tokio: time comes
//! in as the `now` argument of every `handle_*` call, randomness as a seed, and decisions leave
//! through [`Scheduler::poll_output`]. [`Scheduler::poll_timeout`] says when it next needs
//! [`Scheduler::handle_timeout`]. The supervisor's driver feeds it wall-clock time and WebSocket
//! messages; tests (and the simulator to come) feed it virtual time.
//!
//! The method (DESIGN.md):
//! - every task of a job is assigned once its dependencies are done, with their outputs as inputs;
//! - a critical task starts on `critical_replicas` distinct workers at once, the highest-capacity
//!   free ones first; a worker runs at most `min(slots, cores)` replicas at once;
//! - a worker silent for `heartbeat × miss_limit`, disconnected, or whose owner came back, no longer
//!   counts as running its replicas: every task left without a live replica is reissued in the same
//!   call, and a critical task is topped up to its replica count as workers allow;
//! - after a supervisor restart, restored replicas count as live on their reconnecting workers
//!   until `restart_grace` after [`Scheduler::begin_restart_grace`]; a worker that comes back
//!   holding them keeps them;
//! - the first replica to finish wins and the others are cancelled; a failed replica is retried on
//!   a worker that has not failed it, until `max_failures`, when the job fails with the task's error.
//!   A connection that closes within `poison_window` of an assignment, and an assignment the shell
//!   could not send, count as failures too; a result the store could not commit does not (its task
//!   is simply reissued).
//!
//! Files: the state machine is here; `config` (parameters), `capacity` (speed, rate, slots from
//! the hardware), `output` (decisions and their causes), `view` (read-only views for the API),
//! `rng` (the seeded randomness), `tests` (scenarios and the churn simulation).

mod capacity;
mod config;
pub mod criticality;
mod output;
mod qos;
pub mod quorum;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_qos;
#[cfg(test)]
mod tests_quorum;
mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound::{Excluded, Unbounded};
use std::time::{Duration, Instant};

use crate::job::{Job, Quorum};
use crate::proto::{
    ActivityKind, Assignment, Hardware, JobId, Payload, Progress, ReplicaId, TaskId, WorkerId,
};
use crate::rng::Rng;
use capacity::slot_cap;
pub use capacity::{
    CapacityClass, History, KindSpeed, Link, REFERENCE_MOPS, bench_speed, class_of, expected_speed,
};
pub use config::{ClassRates, Config, Policy};
use criticality::Plan;
pub use output::{AssignReason, JobOutcome, LossCause, Output, ReissueCause};
pub use quorum::max_candidates;
pub use view::{JobView, ReplicaView, TaskPhase, TaskView, WorkerState, WorkerView};

#[derive(Debug)]
struct Worker {
    name: String,
    hardware: Option<Hardware>,
    state: WorkerState,
    last_heard: Instant,
    /// A status request went out since the worker was last heard from.
    probe_sent: bool,
    /// The nonce of the last status request not yet acknowledged.
    probe_nonce: Option<u64>,
    /// While `Reconnecting`: when it is lost if it has not reconnected. `None` until the restart
    /// grace begins (the server is not accepting connections yet, so nobody could reconnect).
    reconnect_by: Option<Instant>,
    /// Replicas attached to this worker, whatever its state.
    replicas: BTreeSet<ReplicaId>,
    /// Its link as last measured.
    link: Option<Link>,
    /// Its key in the scheduler's indexes (`Scheduler::timers`, `Scheduler::handles`).
    handle: u64,
    /// What the indexes hold for it, as `Scheduler::reindex` last set them: its deadline in
    /// `timers`, its free slots in `free_total`, whether it is in `pickable` (its slots then in
    /// `free_ok`), whether it counts in `live_workers`.
    timer: Option<Instant>,
    counted_free: usize,
    counted_ok: bool,
    counted_live: bool,
}

impl Worker {
    fn new(now: Instant, state: WorkerState, handle: u64) -> Self {
        Worker {
            name: String::new(),
            hardware: None,
            state,
            last_heard: now,
            probe_sent: false,
            probe_nonce: None,
            reconnect_by: None,
            replicas: BTreeSet::new(),
            link: None,
            handle,
            timer: None,
            counted_free: 0,
            counted_ok: false,
            counted_live: false,
        }
    }

    fn free_slots(&self) -> usize {
        match (&self.state, &self.hardware) {
            (WorkerState::Live, Some(hw)) => slot_cap(hw).saturating_sub(self.replicas.len()),
            _ => 0,
        }
    }
}

#[derive(Debug)]
struct Replica {
    job: u64,
    task: usize,
    worker: WorkerId,
    progress: f32,
    /// When `progress` was reported (projections divide the time up to then by it, not the
    /// time up to now: a report is up to a heartbeat old).
    progress_at: Instant,
    /// When it was assigned (for a restored replica: when it was restored).
    started: Instant,
    /// Why it was started beyond the task's plan, if it was.
    extra: Extra,
    /// `deadline` policy: when it stops counting as live (it may still finish and win).
    deadline: Option<Instant>,
    /// Its deadline passed: attached, but no longer counted as running.
    expired: bool,
}

/// Replicas started beyond a task's planned count, by what started them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extra {
    /// Planned (first, a critical task's redundancy) or a reissue of a task left with none.
    No,
    /// On a worker that would otherwise idle; the first to be given back when work arrives.
    Saturation,
    /// `speculative` policy.
    Speculative,
    /// Progress monitor: the task was straggling or its job stalled.
    Monitor,
}

#[derive(Debug, Default)]
struct Task {
    missing_deps: usize,
    replicas: Vec<ReplicaId>,
    failures: u32,
    failed_on: BTreeSet<WorkerId>,
    /// Its result is stored.
    done: bool,
    /// Its output, kept while a dependent not done yet will need it (an out-of-band reference
    /// for a large one, which lives in a file in the data dir, not here).
    output: Option<Payload>,
    /// Why the task lost its last live replica, until it gets a new one.
    pending_cause: Option<ReissueCause>,
    /// When the scheduler learnt that (stamped by the next `schedule`), for the reissue's
    /// latency.
    orphaned_at: Option<Instant>,
    ever_started: bool,
    /// The key under which the task waits in `Scheduler::wanting`, if it does.
    queued: Option<WantKey>,
    /// Copies started beyond the plan (saturation, monitor, speculative), ever.
    extras: u32,
    /// Workers whose copy was cancelled for being far behind: none goes there again.
    trimmed_on: BTreeSet<WorkerId>,
    /// A quorum task's outputs so far, in arrival order, while not enough agree.
    candidates: Vec<Candidate>,
    /// A quorum task's: how many more agreeing outputs it needs (the quorum less the best
    /// support among its candidates). `None` for a task whose first result is its output.
    quorum_need: Option<usize>,
}

/// One worker's output for a quorum task, waiting for others to agree.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub replica: ReplicaId,
    pub worker: WorkerId,
    pub output: serde_json::Value,
}

/// How a worker's outputs fared against quorums: the outputs that agreed with the quorum, and
/// those that did not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reputation {
    pub agreed: u32,
    pub disagreed: u32,
}

impl Reputation {
    /// Gets no quorum tasks: at least `distrust_after` disagreements, and fewer than ten
    /// agreements for each (an honest machine's rare fault is forgiven, a liar is not).
    pub fn flagged(&self, distrust_after: u32) -> bool {
        self.disagreed >= distrust_after.max(1)
            && u64::from(self.agreed) < 10 * u64::from(self.disagreed)
    }
}

/// What a quorum task's candidates add up to once one more arrives ([`Scheduler::judge`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough agree yet: the task runs on another worker.
    Open,
    /// Enough agree: the task keeps `output`, that of `agreed[0]`; the workers of `dissent`
    /// are marked down.
    Agreed {
        output: serde_json::Value,
        agreed: Vec<(ReplicaId, WorkerId)>,
        dissent: Vec<(ReplicaId, WorkerId)>,
    },
    /// Too many outputs and no quorum: the job fails with this error.
    Hopeless { error: String },
}

#[derive(Debug)]
struct JobState {
    id: JobId,
    job: Job,
    tasks: Vec<Task>,
    /// Position of each task in the job's topological order, for fair ordering.
    topo_pos: Vec<usize>,
    /// Which tasks are critical and how many replicas each gets from the start.
    plan: Plan,
    /// Tasks done so far.
    done: usize,
    /// Tasks not marked optional and not done yet.
    required_left: usize,
    /// When a task of the job last finished (or the job arrived): the progress monitor's clock.
    last_done: Instant,
    /// Wall time from assignment to result of each winning replica, seconds, for medians.
    durations: Vec<f64>,
    /// Whether saturation could ever copy one of its tasks: it has a CPU estimate (a copy can
    /// be judged a likely winner) or a critical task (copies insure it).
    saturable: bool,
    /// The mean of its tasks' known CPU estimates (`Scheduler::est_cpu` of a task without one).
    mean_est_cpu: Option<f64>,
}

impl JobState {
    /// Enough tasks are done for the job to complete (`min_complete`, optional tasks).
    fn complete(&self) -> bool {
        self.required_left == 0 && self.done >= self.job.min_complete()
    }
}

/// Ordering of tasks that want another replica: first those with none running (critical first),
/// then critical tasks short of their replica count; within a class, older jobs first and a job's
/// tasks in dependency order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct WantKey {
    class: u8,
    job: u64,
    topo_pos: usize,
    task: usize,
}

/// The scheduler. See the module documentation.
pub struct Scheduler {
    cfg: Config,
    rng: Rng,
    epoch: u32,
    next_replica: u64,
    next_job_seq: u64,
    next_nonce: u64,
    /// When the restart grace ends, once [`Scheduler::begin_restart_grace`] was called.
    grace_until: Option<Instant>,
    workers: BTreeMap<WorkerId, Worker>,
    jobs: BTreeMap<u64, JobState>,
    job_seq: HashMap<JobId, u64>,
    replicas: BTreeMap<ReplicaId, Replica>,
    wanting: BTreeSet<WantKey>,
    /// Tasks that just lost their last live replica (a cause was noted): the next `schedule`
    /// stamps when, with its `now`, the one of the event that caused it.
    orphaned: Vec<(u64, usize)>,
    outputs: VecDeque<Output>,
    /// Measured speeds by worker, kept while the worker is away (it may come back).
    history: HashMap<WorkerId, History>,
    /// `deadline` policy: replicas by deadline.
    deadlines: BTreeSet<(Instant, ReplicaId)>,
    /// When the progress monitor next looks at the running jobs.
    next_check: Option<Instant>,
    // Indexes over `workers`, kept by `reindex` and `forget_worker` so that no event scans
    // every worker: each is what a scan would compute.
    /// Each worker's next deadline (probe, loss, reconnect), by handle.
    timers: BTreeSet<(Instant, u64)>,
    handles: HashMap<u64, WorkerId>,
    next_handle: u64,
    /// Workers that can take a replica now (live, a free slot, link fast enough), in id order:
    /// the order `pick_worker` breaks ties in.
    pickable: BTreeSet<WorkerId>,
    /// Free slots over all workers, and over the `pickable` ones.
    free_total: usize,
    free_ok: usize,
    /// Workers in state `Live`.
    live_workers: usize,
    /// Saturation replicas, the ones `preempt_saturation` may take back.
    saturation: BTreeSet<ReplicaId>,
    /// Jobs whose `saturable` is set: with none, `saturate` has nothing to look at.
    saturable_jobs: usize,
    /// The `pickable` workers in `pick_worker`'s order of preference, one ordering per task
    /// kind and [`Rank`] asked for so far (built on first use, then kept by `reindex`).
    pick_index: HashMap<(String, Rank), PickIndex>,
    /// Quorum record by worker, kept while the worker is away (the shell restores it from the
    /// store before its join).
    reputation: HashMap<WorkerId, Reputation>,
    /// Who answers for each worker (its volunteer token's name), where known: no two workers
    /// of one owner give outputs to one quorum.
    owners: HashMap<WorkerId, String>,
}

/// What `pick_worker` ranks workers by for a task (see there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Rank {
    /// Policies blind to speed: most free slots.
    Spread,
    /// Critical: capacity class, then speed, then free slots.
    Critical,
    /// Network-heavy: link, then speed, then free slots.
    NetHeavy,
    /// Any other task: speed, then free slots.
    Plain,
}

/// A worker's preference under one [`Rank`]: compared with `cmp3` (a total order on floats).
#[derive(Debug, Clone, Copy)]
struct Pref([f64; 3]);

impl PartialEq for Pref {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Pref {}
impl PartialOrd for Pref {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pref {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        cmp3(&self.0, &other.0)
    }
}

/// Pickable workers in groups of equal preference, best group first, and each one's key.
#[derive(Debug, Default)]
struct PickIndex {
    groups: BTreeMap<std::cmp::Reverse<Pref>, TieGroup>,
    key: HashMap<WorkerId, Pref>,
}

/// Workers of equal preference: any member is drawn in O(1), added and removed in O(1).
#[derive(Debug, Default)]
struct TieGroup {
    members: Vec<WorkerId>,
    at: HashMap<WorkerId, usize>,
}

impl TieGroup {
    fn insert(&mut self, id: &WorkerId) {
        self.at.insert(id.clone(), self.members.len());
        self.members.push(id.clone());
    }

    fn remove(&mut self, id: &WorkerId) {
        if let Some(i) = self.at.remove(id) {
            self.members.swap_remove(i);
            if let Some(moved) = self.members.get(i) {
                self.at.insert(moved.clone(), i);
            }
        }
    }
}

impl PickIndex {
    fn set(&mut self, id: &WorkerId, pref: Option<Pref>) {
        // The common case (a heartbeat of an idle worker) changes nothing and allocates nothing.
        if self.key.get(id) == pref.as_ref() {
            return;
        }
        let old = match pref {
            Some(p) => self.key.insert(id.clone(), p),
            None => self.key.remove(id),
        };
        if let Some(o) = old
            && let Some(group) = self.groups.get_mut(&std::cmp::Reverse(o))
        {
            group.remove(id);
            if group.members.is_empty() {
                self.groups.remove(&std::cmp::Reverse(o));
            }
        }
        if let Some(p) = pref {
            self.groups
                .entry(std::cmp::Reverse(p))
                .or_default()
                .insert(id);
        }
    }
}

/// Tie groups up to this size are drawn from exactly as a scan of every worker would (one draw
/// among the members that may take the task, in id order); larger ones by drawing members until
/// one may (uniform too, and O(1) when most may), so a pool of thousands of alike workers costs
/// no scan. Above the simulator's largest scenario pool (120 workers), so its runs draw as before.
const EXACT_TIES: usize = 128;
/// Draws from a large tie group before it is scanned after all.
const TIE_DRAWS: usize = 8;

impl Scheduler {
    /// A scheduler for one supervisor boot. `epoch` must differ on every boot (the store counts
    /// them) so that replica ids never repeat across restarts.
    pub fn new(cfg: Config, epoch: u32) -> Self {
        Self {
            rng: Rng::new(cfg.seed),
            cfg,
            epoch,
            next_replica: 0,
            next_job_seq: 0,
            next_nonce: 0,
            grace_until: None,
            workers: BTreeMap::new(),
            jobs: BTreeMap::new(),
            job_seq: HashMap::new(),
            replicas: BTreeMap::new(),
            wanting: BTreeSet::new(),
            orphaned: Vec::new(),
            outputs: VecDeque::new(),
            history: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_check: None,
            timers: BTreeSet::new(),
            handles: HashMap::new(),
            next_handle: 0,
            pickable: BTreeSet::new(),
            free_total: 0,
            free_ok: 0,
            live_workers: 0,
            saturation: BTreeSet::new(),
            saturable_jobs: 0,
            pick_index: HashMap::new(),
            reputation: HashMap::new(),
            owners: HashMap::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The next decision to carry out.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Scheduler::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        #[cfg(test)]
        self.check_indexes();
        let workers = self.timers.first().map(|(t, _)| *t);
        let replicas = self.deadlines.first().map(|(t, _)| *t);
        [workers, replicas, self.next_check]
            .into_iter()
            .flatten()
            .min()
    }

    fn next_deadline(&self, w: &Worker) -> Option<Instant> {
        let lost_at = w.last_heard + self.cfg.loss_after();
        match w.state {
            WorkerState::Lost => None,
            WorkerState::Reconnecting => w.reconnect_by,
            _ if !self.cfg.policy.detects_loss() => None,
            _ if !w.probe_sent => Some((w.last_heard + self.cfg.probe_after()).min(lost_at)),
            _ => Some(lost_at),
        }
    }

    /// Workers whose deadline (a status request, loss, a reconnect) is due at `now`. Their
    /// connections may have heard from them after the driver last did: the driver says so
    /// ([`Scheduler::handle_heard`]) before [`Scheduler::handle_timeout`], so a worker is judged
    /// by when its frames arrived, not by how long they queued.
    pub fn due_workers(&self, now: Instant) -> Vec<WorkerId> {
        self.timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .filter_map(|(_, h)| self.handles.get(h).cloned())
            .collect()
    }

    /// The worker's connection received a frame at `at` (any frame: a sign of life), which the
    /// driver has not handled yet. Never moves the worker's clock back.
    pub fn handle_heard(&mut self, at: Instant, id: &WorkerId) {
        // `touch` ignores a worker that is not connected.
        if self.workers.get(id).is_some_and(|w| at > w.last_heard) {
            self.touch(at, id);
        }
    }

    /// Checks deadlines: probes workers that missed a heartbeat, loses those past the limit,
    /// expires replicas past their deadline (`deadline` policy), and runs the progress monitor
    /// when it is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut lost = Vec::new();
        let mut probe = Vec::new();
        let detects_loss = self.cfg.policy.detects_loss();
        // Only workers whose deadline is due can be probed or lost; in id order, as a scan of
        // every worker would take them.
        let mut due: Vec<&WorkerId> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .filter_map(|(_, h)| self.handles.get(h))
            .collect();
        due.sort();
        for id in due {
            let Some(w) = self.workers.get(id) else {
                continue;
            };
            match w.state {
                WorkerState::Lost => continue,
                WorkerState::Reconnecting => {
                    if w.reconnect_by.is_some_and(|t| now >= t) {
                        lost.push((id.clone(), LossCause::NotReconnected));
                    }
                    continue;
                }
                _ if !detects_loss => continue,
                _ => {}
            }
            let silent = now.saturating_duration_since(w.last_heard);
            if silent >= self.cfg.loss_after() {
                lost.push((id.clone(), LossCause::Silent(silent)));
            } else if !w.probe_sent && silent >= self.cfg.probe_after() {
                probe.push(id.clone());
            }
        }
        for id in probe {
            self.next_nonce += 1;
            if let Some(w) = self.workers.get_mut(&id) {
                w.probe_sent = true;
                w.probe_nonce = Some(self.next_nonce);
            }
            self.reindex(&id);
            self.outputs.push_back(Output::StatusRequest {
                worker: id,
                nonce: self.next_nonce,
            });
        }
        for (id, cause) in lost {
            self.lose(now, &id, cause);
        }
        while let Some(&(at, r)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            self.expire(r);
        }
        if self.next_check.is_some_and(|t| now >= t) {
            self.check_progress(now);
            self.next_check = (!self.jobs.is_empty()).then(|| now + self.cfg.progress_interval);
        }
        self.schedule(now);
    }

    /// A worker said hello (authenticated by the shell). `held` are the replicas it still has
    /// from an earlier connection; `available` is false while its machine is not idle yet.
    pub fn handle_worker_joined(
        &mut self,
        now: Instant,
        id: WorkerId,
        name: String,
        hardware: Hardware,
        held: &[ReplicaId],
        available: bool,
    ) {
        let held: BTreeSet<ReplicaId> = held.iter().copied().collect();
        let mut keep = Vec::new();
        let mut drop = Vec::new();
        let attached: Vec<ReplicaId> = self
            .workers
            .get(&id)
            .map(|w| w.replicas.iter().copied().collect())
            .unwrap_or_default();
        // Replicas we thought it had but it no longer does: gone with its old process state.
        for r in attached.iter().filter(|r| !held.contains(r)) {
            self.remove_replica(*r, Some(ReissueCause::Dropped { worker: id.clone() }));
        }
        for r in &held {
            if attached.contains(r) {
                keep.push(*r);
            } else {
                drop.push(*r);
            }
        }
        self.ensure_worker(now, &id, WorkerState::Live);
        let worker = self.workers.get_mut(&id).expect("ensured above");
        worker.name = name;
        worker.hardware = Some(hardware);
        worker.state = if available {
            WorkerState::Live
        } else {
            WorkerState::Waiting
        };
        worker.last_heard = now;
        worker.probe_sent = false;
        worker.probe_nonce = None;
        worker.reconnect_by = None;
        self.reindex(&id);
        self.outputs.push_back(Output::Welcome {
            worker: id.clone(),
            keep: keep.clone(),
            drop,
        });
        for r in keep {
            self.refresh_replica_task(r);
        }
        self.schedule(now);
    }

    /// The worker's connection closed.
    /// Whether the worker is connected now (whether or not it takes tasks).
    pub fn is_connected(&self, id: &WorkerId) -> bool {
        self.workers.get(id).is_some_and(|w| w.state.is_connected())
    }

    pub fn handle_worker_left(&mut self, now: Instant, id: &WorkerId) {
        if self
            .workers
            .get(id)
            .is_some_and(|w| w.state != WorkerState::Lost)
        {
            self.lose(now, id, LossCause::Disconnected);
            self.schedule(now);
        }
    }

    /// The worker said it is leaving (its volunteer quit): every replica it still holds is
    /// taken from it and its task reissued at once (cause `left`), and the worker is forgotten
    /// rather than kept for a reconnect or a silence bound. Returns the replicas taken.
    pub fn handle_worker_leaving(&mut self, now: Instant, id: &WorkerId) -> Vec<ReplicaId> {
        let Some(w) = self.workers.get(id).filter(|w| w.state.is_connected()) else {
            return Vec::new();
        };
        let replicas: Vec<ReplicaId> = w.replicas.iter().copied().collect();
        self.lose(now, id, LossCause::Left);
        for r in &replicas {
            self.remove_replica(*r, Some(ReissueCause::Left { worker: id.clone() }));
        }
        self.forget_worker(id);
        self.schedule(now);
        replicas
    }

    pub fn handle_heartbeat(&mut self, now: Instant, id: &WorkerId, progress: &[Progress]) {
        if !self.touch(now, id) {
            return;
        }
        for p in progress {
            self.set_progress(now, id, *p);
        }
    }

    /// The supervisor measured the worker's link. Below `min_link_kbps` it takes no tasks (it
    /// stays connected, and its running replicas run on).
    pub fn handle_link(&mut self, now: Instant, id: &WorkerId, link: Link) {
        let Some(w) = self.workers.get_mut(id).filter(|w| w.state.is_connected()) else {
            return;
        };
        w.link = Some(link);
        self.reindex(id);
        self.schedule(now);
    }

    /// Gives back a worker's measured speeds (from the store, under its stable id), before or
    /// after it joins.
    pub fn restore_history(&mut self, id: &WorkerId, speeds: Vec<KindSpeed>) {
        let history = History::from_speeds(speeds);
        if history.is_empty() {
            self.history.remove(id);
        } else {
            self.history.insert(id.clone(), history);
        }
        self.reindex(id);
    }

    /// The worker's quorum record as stored (the shell calls it before the worker's join).
    pub fn restore_reputation(&mut self, id: &WorkerId, reputation: Reputation) {
        if reputation == Reputation::default() {
            self.reputation.remove(id);
        } else {
            self.reputation.insert(id.clone(), reputation);
        }
    }

    /// Who answers for the worker (its volunteer's name; `None` for the shared token). A
    /// quorum task's replicas and candidates all come from workers of different owners (workers
    /// of the shared token count as owners of their own).
    pub fn set_owner(&mut self, id: &WorkerId, owner: Option<String>) {
        match owner {
            Some(o) => self.owners.insert(id.clone(), o),
            None => self.owners.remove(id),
        };
    }

    /// The worker's quorum record, and whether it is flagged (gets no quorum tasks).
    pub fn reputation(&self, id: &WorkerId) -> (Reputation, bool) {
        let r = self.reputation.get(id).copied().unwrap_or_default();
        (r, r.flagged(self.cfg.distrust_after))
    }

    /// Whether quorum validation keeps `id` off another replica of the task: it gave the task
    /// an output already, it is flagged, or a worker of its owner runs or answered the task.
    /// (`pick_worker` applies the same rules over a whole group at once.)
    fn quorum_bars(&self, seq: u64, ti: usize, id: &WorkerId) -> bool {
        let Some(task) = self.jobs.get(&seq).map(|j| &j.tasks[ti]) else {
            return false;
        };
        if task.quorum_need.is_none() {
            return false;
        }
        let owner = self.owners.get(id);
        let same_owner = |w: &WorkerId| owner.is_some() && self.owners.get(w) == owner;
        task.candidates
            .iter()
            .any(|c| &c.worker == id || same_owner(&c.worker))
            || task.replicas.iter().any(|r| {
                self.replicas
                    .get(r)
                    .is_some_and(|r| r.worker != *id && same_owner(&r.worker))
            })
            || self.is_flagged(id)
    }

    fn is_flagged(&self, id: &WorkerId) -> bool {
        self.reputation
            .get(id)
            .is_some_and(|r| r.flagged(self.cfg.distrust_after))
    }

    /// The worker acknowledged a status request. True if `nonce` is that of the outstanding
    /// request, which it then answers; a stale or made-up nonce leaves the request outstanding,
    /// though the frame itself still shows the worker is alive.
    pub fn handle_status_ack(&mut self, now: Instant, id: &WorkerId, nonce: u64) -> bool {
        let Some(w) = self.workers.get_mut(id).filter(|w| w.state.is_connected()) else {
            return false;
        };
        if w.probe_nonce != Some(nonce) {
            w.last_heard = now;
            self.reindex(id);
            return false;
        }
        w.probe_nonce = None;
        self.touch(now, id)
    }

    pub fn handle_progress(&mut self, now: Instant, id: &WorkerId, progress: Progress) {
        if self.touch(now, id) {
            self.set_progress(now, id, progress);
        }
    }

    /// Where a result from `worker` for `replica` belongs, if the scheduler would accept it now:
    /// the replica is attached to that worker and its task is not done. The shell stores the
    /// result durably before calling [`Scheduler::handle_result`].
    pub fn result_target(&self, worker: &WorkerId, replica: ReplicaId) -> Option<(JobId, TaskId)> {
        let r = self
            .replicas
            .get(&replica)
            .filter(|r| &r.worker == worker)?;
        let job = self.jobs.get(&r.job)?;
        let task = &job.tasks[r.task];
        if task.done {
            return None;
        }
        Some((job.id.clone(), job.job.tasks()[r.task].id.clone()))
    }

    /// The quorum rule of the task a result from `worker` for `replica` would be for, if it
    /// would be accepted ([`Scheduler::result_target`]) and its task is validated by quorum:
    /// such a result is a candidate ([`Scheduler::handle_candidate`]), not the task's output.
    pub fn quorum_target(&self, worker: &WorkerId, replica: ReplicaId) -> Option<Quorum> {
        self.result_target(worker, replica)?;
        let r = self.replicas.get(&replica)?;
        self.jobs.get(&r.job)?.job.quorum(r.task)
    }

    /// What the task's candidates would add up to with `output` from `worker`'s `replica`
    /// added; `None` unless that is a candidate ([`Scheduler::quorum_target`]). The shell
    /// stores the candidate and what the verdict decides (the agreed output, the reputations)
    /// in one transaction before it calls [`Scheduler::handle_candidate`], which reaches the
    /// same verdict.
    pub fn judge(
        &self,
        worker: &WorkerId,
        replica: ReplicaId,
        output: &serde_json::Value,
    ) -> Option<Verdict> {
        let rule = self.quorum_target(worker, replica)?;
        let r = self.replicas.get(&replica)?;
        let job = self.jobs.get(&r.job)?;
        let task = &job.tasks[r.task];
        let mut outputs: Vec<&serde_json::Value> =
            task.candidates.iter().map(|c| &c.output).collect();
        outputs.push(output);
        let who = |i: usize| match task.candidates.get(i) {
            Some(c) => (c.replica, c.worker.clone()),
            None => (replica, worker.clone()),
        };
        Some(match quorum::tally(&outputs, &rule) {
            quorum::Tally::Open { .. } => Verdict::Open,
            quorum::Tally::Agreed { agreed, dissent } => Verdict::Agreed {
                output: outputs[agreed[0]].clone(),
                agreed: agreed.into_iter().map(who).collect(),
                dissent: dissent.into_iter().map(who).collect(),
            },
            quorum::Tally::Hopeless => Verdict::Hopeless {
                error: format!(
                    "task {} got {} outputs from distinct workers and no {} of them agree \
                     (is its kernel deterministic? declare a `tolerance` for numbers)",
                    job.job.tasks()[r.task].id,
                    outputs.len(),
                    rule.n
                ),
            },
        })
    }

    /// A quorum task's replica finished with `output` (stored as a candidate): the replica ends
    /// and, by [`Scheduler::judge`]'s verdict, the task runs on another worker, is done with
    /// the agreed output (its other replicas cancelled, the workers' reputations updated), or
    /// fails its job.
    pub fn handle_candidate(
        &mut self,
        now: Instant,
        id: &WorkerId,
        replica: ReplicaId,
        output: serde_json::Value,
        busy: Duration,
    ) {
        if !self.touch(now, id) {
            return;
        }
        let Some(verdict) = self.judge(id, replica, &output) else {
            return;
        };
        let Some((seq, ti, started)) = self.end_finished(id, replica, busy) else {
            return;
        };
        let Some(job) = self.jobs.get_mut(&seq) else {
            return;
        };
        job.tasks[ti].candidates.push(Candidate {
            replica,
            worker: id.clone(),
            output,
        });
        match verdict {
            Verdict::Open => {
                job.tasks[ti].quorum_need = quorum_need(&job.job, ti, &job.tasks[ti].candidates);
                self.refresh_task(seq, ti);
                self.schedule(now);
            }
            Verdict::Hopeless { error } => {
                let task = job.job.tasks()[ti].id.clone();
                self.finish_job(seq, JobOutcome::Failed { task, error });
                self.schedule(now);
            }
            Verdict::Agreed {
                output,
                agreed,
                dissent,
            } => {
                job.tasks[ti].candidates.clear();
                let task = job.job.tasks()[ti].id.clone();
                let job_id = job.id.clone();
                let (winner, winner_worker) = agreed[0].clone();
                for (_, w) in &agreed {
                    self.reputation.entry(w.clone()).or_default().agreed += 1;
                }
                for (_, w) in &dissent {
                    let flagged_before = self.is_flagged(w);
                    let r = self.reputation.entry(w.clone()).or_default();
                    r.disagreed += 1;
                    let r = *r;
                    if !flagged_before && self.is_flagged(w) {
                        self.outputs.push_back(Output::WorkerFlagged {
                            worker: w.clone(),
                            agreed: r.agreed,
                            disagreed: r.disagreed,
                        });
                    }
                }
                self.outputs.push_back(Output::Validated {
                    job: job_id,
                    task,
                    agreed: agreed.into_iter().map(|(_, w)| w).collect(),
                    dissent: dissent.into_iter().map(|(_, w)| w).collect(),
                });
                // The job's durations get the replica that completed the quorum.
                self.task_done(now, seq, ti, winner, &winner_worker, output.into(), started);
            }
        }
    }

    /// A replica finished after `busy` of CPU time. The first result of a task wins; the task's
    /// other replicas are cancelled and its dependents may become ready. The worker's measured
    /// speed for the task's kind is updated (when the task has a CPU estimate). A quorum task's
    /// result goes to [`Scheduler::handle_candidate`] instead.
    pub fn handle_result(
        &mut self,
        now: Instant,
        id: &WorkerId,
        replica: ReplicaId,
        output: impl Into<Payload>,
        busy: Duration,
    ) {
        if self.quorum_target(id, replica).is_some() {
            match output.into() {
                Payload::Inline(value) => self.handle_candidate(now, id, replica, value, busy),
                // An output by reference cannot be compared here: the shell passes candidates
                // inline.
                Payload::Blob(_) => {}
            }
            return;
        }
        if !self.touch(now, id) || self.result_target(id, replica).is_none() {
            return;
        }
        let Some((seq, ti, started)) = self.end_finished(id, replica, busy) else {
            return;
        };
        self.task_done(now, seq, ti, replica, id, output.into(), started);
    }

    /// A replica of `id` finished after `busy`: the worker's speed is observed and the replica
    /// detached (no reissue cause: it ended well). Returns its job, task and start.
    fn end_finished(
        &mut self,
        id: &WorkerId,
        replica: ReplicaId,
        busy: Duration,
    ) -> Option<(u64, usize, Instant)> {
        let r = self.replicas.get(&replica)?;
        let (seq, ti, started) = (r.job, r.task, r.started);
        self.observe_speed(id, seq, ti, busy);
        self.remove_replica(replica, None);
        Some((seq, ti, started))
    }

    /// The task is done with `output`, from `replica` on `worker` (started at `started`): its
    /// other replicas are cancelled, its dependents may become ready, its job may complete.
    #[allow(clippy::too_many_arguments)]
    fn task_done(
        &mut self,
        now: Instant,
        seq: u64,
        ti: usize,
        replica: ReplicaId,
        id: &WorkerId,
        output: Payload,
        started: Instant,
    ) {
        let Some(job) = self.jobs.get_mut(&seq) else {
            return;
        };
        let task_id = job.job.tasks()[ti].id.clone();
        job.tasks[ti].done = true;
        job.tasks[ti].candidates.clear();
        if !job.job.dependents(ti).is_empty() {
            job.tasks[ti].output = Some(output);
        }
        job.tasks[ti].pending_cause = None;
        job.tasks[ti].orphaned_at = None;
        job.done += 1;
        if !job.job.tasks()[ti].optional {
            job.required_left -= 1;
        }
        job.last_done = now;
        job.durations
            .push(now.saturating_duration_since(started).as_secs_f64());
        let job_id = job.id.clone();
        let others = std::mem::take(&mut job.tasks[ti].replicas);
        self.outputs.push_back(Output::TaskDone {
            job: job_id.clone(),
            task: task_id.clone(),
            replica,
            worker: id.clone(),
        });
        for other in others {
            self.cancel_replica(other, format!("task {task_id} finished on another worker"));
        }
        self.refresh_task(seq, ti);
        let dependents: Vec<usize> = self.jobs[&seq].job.dependents(ti).to_vec();
        for d in dependents {
            let Some(job) = self.jobs.get_mut(&seq) else {
                break;
            };
            job.tasks[d].missing_deps -= 1;
            self.refresh_task(seq, d);
        }
        // A dependency's output is kept only while a dependent not done yet needs it.
        if let Some(job) = self.jobs.get_mut(&seq) {
            let spent: Vec<usize> = job.job.tasks()[ti]
                .deps
                .iter()
                .filter_map(|d| job.job.index_of(d))
                .filter(|di| job.job.dependents(*di).iter().all(|x| job.tasks[*x].done))
                .collect();
            for di in spent {
                job.tasks[di].output = None;
            }
        }
        if self.jobs[&seq].complete() {
            self.finish_job(seq, JobOutcome::Completed);
        }
        self.schedule(now);
    }

    /// A replica failed. The task is retried elsewhere until it has failed `max_failures` times.
    pub fn handle_failure(
        &mut self,
        now: Instant,
        id: &WorkerId,
        replica: ReplicaId,
        error: String,
    ) {
        if !self.touch(now, id) || self.result_target(id, replica).is_none() {
            return;
        }
        let Some(r) = self.replicas.get(&replica) else {
            return;
        };
        let (seq, ti) = (r.job, r.task);
        self.remove_replica(
            replica,
            Some(ReissueCause::Failed {
                worker: id.clone(),
                error: error.clone(),
            }),
        );
        self.count_failure(seq, ti, id, &error);
        self.schedule(now);
    }

    /// The shell could not send this replica's `Assign` (the frame exceeds the size limit, say).
    /// The replica is detached without a `Cancel` (the worker never had it) and counts as a
    /// failure of its task on that worker: a task that cannot be sent to anyone fails its job at
    /// `max_failures` instead of being reissued forever.
    pub fn handle_undeliverable(&mut self, now: Instant, replica: ReplicaId, error: String) {
        let Some(r) = self.replicas.get(&replica) else {
            return;
        };
        let (seq, ti, worker) = (r.job, r.task, r.worker.clone());
        self.remove_replica(
            replica,
            Some(ReissueCause::Failed {
                worker: worker.clone(),
                error: error.clone(),
            }),
        );
        self.count_failure(seq, ti, &worker, &error);
        self.schedule(now);
    }

    /// The worker's result for `replica` could not be committed to the store. Nobody's fault, so
    /// not a failure: the worker is told to forget the replica and the task is reissued at once
    /// (a task is done only once its result is stored).
    pub fn handle_not_stored(
        &mut self,
        now: Instant,
        worker: &WorkerId,
        replica: ReplicaId,
        error: String,
    ) {
        // The result frame arrived: a sign of life, whatever becomes of it.
        self.touch(now, worker);
        if self.result_target(worker, replica).is_none() {
            return;
        }
        self.remove_replica(
            replica,
            Some(ReissueCause::NotStored {
                worker: worker.clone(),
                error: error.clone(),
            }),
        );
        self.outputs.push_back(Output::Cancel {
            worker: worker.clone(),
            replica,
            reason: format!("result could not be stored: {error}"),
        });
        self.schedule(now);
    }

    /// The worker's owner came back: its replicas pause, and tasks with no other live replica are
    /// reissued now. The worker takes no tasks until [`Scheduler::handle_available`]. For a
    /// worker still waiting for idle, only the kind is noted.
    pub fn handle_activity(&mut self, now: Instant, id: &WorkerId, kind: ActivityKind) {
        if !self.touch(now, id) {
            return;
        }
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        let was_live = w.state == WorkerState::Live;
        if !matches!(w.state, WorkerState::Live | WorkerState::Waiting) {
            return;
        }
        w.state = WorkerState::Busy(kind);
        self.reindex(id);
        if !was_live || !self.cfg.policy.detects_loss() {
            return;
        }
        let cause = ReissueCause::OwnerActive {
            worker: id.clone(),
            kind,
        };
        self.worker_stopped_hosting(id, cause);
        self.schedule(now);
    }

    /// The worker's machine is idle again: its paused replicas count again and it takes tasks.
    pub fn handle_available(&mut self, now: Instant, id: &WorkerId) {
        if !self.touch(now, id) {
            return;
        }
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        if !matches!(w.state, WorkerState::Busy(_) | WorkerState::Waiting) {
            return;
        }
        w.state = WorkerState::Live;
        let replicas: Vec<ReplicaId> = w.replicas.iter().copied().collect();
        self.reindex(id);
        for r in replicas {
            self.refresh_replica_task(r);
        }
        self.schedule(now);
    }

    /// Accepts a new (stored) job.
    pub fn submit_job(&mut self, now: Instant, id: JobId, job: Job) {
        self.restore_job(now, id, job, BTreeMap::new(), &[], Vec::new());
    }

    /// Re-creates a job after a supervisor restart at `now`: `done` are the outputs already
    /// stored, `running` the replicas that were running, with their workers. Those workers are
    /// `Reconnecting`: their replicas count as live, with no deadline until
    /// [`Scheduler::begin_restart_grace`], then for `restart_grace`. `candidates` are the stored
    /// outputs of quorum tasks not agreed yet, in arrival order.
    pub fn restore_job(
        &mut self,
        now: Instant,
        id: JobId,
        job: Job,
        mut done: BTreeMap<TaskId, serde_json::Value>,
        running: &[(ReplicaId, TaskId, WorkerId)],
        candidates: Vec<(TaskId, Candidate)>,
    ) {
        let seq = self.next_job_seq;
        self.next_job_seq += 1;
        let n = job.tasks().len();
        let mut topo_pos = vec![0; n];
        for (pos, &ti) in job.topo_order().iter().enumerate() {
            topo_pos[ti] = pos;
        }
        let mut tasks: Vec<Task> = (0..n).map(|_| Task::default()).collect();
        for (ti, spec) in job.tasks().iter().enumerate() {
            if let Some(output) = done.remove(&spec.id) {
                tasks[ti].done = true;
                tasks[ti].output = Some(Payload::Inline(output));
            }
        }
        for (task, c) in candidates {
            if let Some(ti) = job.index_of(&task)
                && !tasks[ti].done
            {
                tasks[ti].candidates.push(c);
            }
        }
        for (ti, task) in tasks.iter_mut().enumerate() {
            task.quorum_need = quorum_need(&job, ti, &task.candidates);
        }
        for (ti, spec) in job.tasks().iter().enumerate() {
            tasks[ti].missing_deps = spec
                .deps
                .iter()
                .filter(|d| job.index_of(d).is_some_and(|di| !tasks[di].done))
                .count();
        }
        // Outputs no dependent still needs are not kept.
        for ti in 0..n {
            if !job.dependents(ti).iter().any(|d| !tasks[*d].done) {
                tasks[ti].output = None;
            }
        }
        let done = tasks.iter().filter(|t| t.done).count();
        let required_left = job
            .tasks()
            .iter()
            .zip(&tasks)
            .filter(|(spec, t)| !spec.optional && !t.done)
            .count();
        let plan = criticality::plan(&job, self.cfg.critical_replicas, self.cfg.redundancy_budget);
        self.job_seq.insert(id.clone(), seq);
        let mean_est_cpu = Self::mean_est_cpu(&job);
        let saturable = mean_est_cpu.is_some()
            || (self.cfg.policy.replicates_critical() && plan.tasks.iter().any(|t| t.replicas > 1));
        self.saturable_jobs += usize::from(saturable);
        let state = JobState {
            id,
            job,
            tasks,
            topo_pos,
            plan,
            done,
            required_left,
            last_done: now,
            durations: Vec::new(),
            saturable,
            mean_est_cpu,
        };
        let complete = state.complete();
        self.jobs.insert(seq, state);
        if self.cfg.policy.monitors_progress() && self.next_check.is_none() {
            self.next_check = Some(now + self.cfg.progress_interval);
        }
        for (replica, task, worker) in running {
            let Some(ti) = self.jobs[&seq].job.index_of(task) else {
                continue;
            };
            if self.jobs[&seq].tasks[ti].done || self.replicas.contains_key(replica) {
                continue;
            }
            if self.ensure_worker(now, worker, WorkerState::Reconnecting) {
                // A job restored after the grace began shares its deadline.
                let grace_until = self.grace_until;
                if let Some(w) = self.workers.get_mut(worker) {
                    w.reconnect_by = grace_until;
                }
            }
            if let Some(w) = self.workers.get_mut(worker) {
                w.replicas.insert(*replica);
            }
            self.reindex(worker);
            self.replicas.insert(
                *replica,
                Replica {
                    job: seq,
                    task: ti,
                    worker: worker.clone(),
                    progress: 0.0,
                    progress_at: now,
                    started: now,
                    extra: Extra::No,
                    deadline: None,
                    expired: false,
                },
            );
            self.set_deadline(now, *replica);
            let task = &mut self.jobs.get_mut(&seq).expect("inserted above").tasks[ti];
            task.replicas.push(*replica);
            task.ever_started = true;
        }
        if complete {
            self.finish_job(seq, JobOutcome::Completed);
        } else {
            for ti in 0..n {
                self.refresh_task(seq, ti);
            }
        }
        self.schedule(now);
    }

    /// The server is accepting connections again after a restart: every worker still
    /// `Reconnecting` has `restart_grace` from `now` to come back before its replicas are
    /// reissued (cause [`LossCause::NotReconnected`]). Calling it again restarts the grace.
    pub fn begin_restart_grace(&mut self, now: Instant) {
        let until = now + self.cfg.restart_grace;
        self.grace_until = Some(until);
        let mut reconnecting = Vec::new();
        for (id, w) in &mut self.workers {
            if w.state == WorkerState::Reconnecting {
                w.reconnect_by = Some(until);
                reconnecting.push(id.clone());
            }
        }
        for id in reconnecting {
            self.reindex(&id);
        }
    }

    /// Stops a job at the operator's request. Returns false if no such job is running.
    pub fn cancel_job(&mut self, now: Instant, id: &JobId) -> bool {
        let Some(&seq) = self.job_seq.get(id) else {
            return false;
        };
        self.finish_job(seq, JobOutcome::Cancelled);
        self.schedule(now);
        true
    }

    /// Tasks of the unfinished jobs by phase: waiting, ready, running, done (in that order).
    /// Walks their tasks (a scrape's worth of work, not an event's).
    pub fn task_counts(&self) -> [u64; 4] {
        let mut counts = [0; 4];
        for job in self.jobs.values() {
            for t in &job.tasks {
                let i = if t.done {
                    3
                } else if t.missing_deps > 0 {
                    0
                } else if t.replicas.is_empty() {
                    1
                } else {
                    2
                };
                counts[i] += 1;
            }
        }
        counts
    }

    /// Unfinished jobs.
    pub fn running_jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Live view of an unfinished job.
    pub fn job_view(&self, id: &JobId) -> Option<JobView> {
        let seq = self.job_seq.get(id)?;
        let job = self.jobs.get(seq)?;
        let tasks = job
            .job
            .tasks()
            .iter()
            .zip(&job.tasks)
            .zip(&job.plan.tasks)
            .map(|((spec, t), plan)| {
                let replicas: Vec<ReplicaView> = t
                    .replicas
                    .iter()
                    .filter_map(|r| {
                        let rep = self.replicas.get(r)?;
                        let w = self.workers.get(&rep.worker)?;
                        Some(ReplicaView {
                            replica: *r,
                            worker: rep.worker.clone(),
                            worker_state: w.state,
                            progress: rep.progress,
                        })
                    })
                    .collect();
                let phase = if t.done {
                    TaskPhase::Done
                } else if t.missing_deps > 0 {
                    TaskPhase::Waiting
                } else if replicas.is_empty() {
                    TaskPhase::Ready
                } else {
                    TaskPhase::Running
                };
                TaskView {
                    id: spec.id.clone(),
                    phase,
                    deps: spec.deps.clone(),
                    critical: plan.critical(),
                    critical_reasons: plan.reasons.iter().map(ToString::to_string).collect(),
                    planned_replicas: plan.replicas,
                    failures: t.failures,
                    replicas,
                }
            })
            .collect();
        Some(JobView { tasks })
    }

    /// Every known worker, lost ones included while they still hold replicas.
    pub fn workers(&self) -> Vec<WorkerView> {
        self.workers
            .iter()
            .map(|(id, w)| {
                let history = self.history.get(id);
                WorkerView {
                    id: id.clone(),
                    name: w.name.clone(),
                    state: w.state,
                    hardware: w.hardware.clone(),
                    replicas: w.replicas.iter().copied().collect(),
                    bench_speed: bench_speed(w.hardware.as_ref()),
                    history: history.map(History::speeds).unwrap_or_default(),
                    speed: expected_speed(w.hardware.as_ref(), history, None),
                    link: w.link,
                    class: self.class(id, w, None),
                    held_back: self.held_back(w),
                }
            })
            .collect()
    }

    /// The job and task a replica belongs to (a view for the dashboard's pool: what each worker
    /// runs).
    pub fn replica_task(&self, r: ReplicaId) -> Option<(&JobId, &TaskId)> {
        let rep = self.replicas.get(&r)?;
        let job = self.jobs.get(&rep.job)?;
        Some((&job.id, &job.job.tasks().get(rep.task)?.id))
    }

    /// The worker a replica is attached to, unless that worker is lost (whether the replica is
    /// running, paused or awaited from a reconnecting worker).
    pub fn replica_holder(&self, r: ReplicaId) -> Option<&WorkerId> {
        let rep = self.replicas.get(&r)?;
        self.workers
            .get(&rep.worker)
            .filter(|w| w.state != WorkerState::Lost)
            .map(|_| &rep.worker)
    }

    /// When a replica was assigned (for one restored after a restart: when it was restored).
    pub fn replica_started(&self, r: ReplicaId) -> Option<Instant> {
        self.replicas.get(&r).map(|rep| rep.started)
    }

    /// Ids of the jobs not finished yet, oldest first.
    pub fn unfinished_jobs(&self) -> Vec<JobId> {
        self.jobs.values().map(|j| j.id.clone()).collect()
    }

    // ----- internals -----

    /// Folds one execution into the worker's measured speed for the task's kind.
    fn observe_speed(&mut self, id: &WorkerId, seq: u64, ti: usize, busy: Duration) {
        let Some(spec) = self.jobs.get(&seq).map(|j| &j.job.tasks()[ti]) else {
            return;
        };
        let est = spec.estimates.cpu_s;
        if est <= 0.0 || busy.is_zero() {
            return;
        }
        let kind = spec.kind.clone();
        let sample = est / busy.as_secs_f64();
        if let Some(speed) = self
            .history
            .entry(id.clone())
            .or_default()
            .observe(&kind, sample)
        {
            self.outputs.push_back(Output::Speed {
                worker: id.clone(),
                speed,
            });
        }
        self.reindex(id);
    }

    /// Whether an idle, connected worker takes no tasks (`held_back` says why).
    fn is_held_back(&self, w: &Worker) -> bool {
        w.state == WorkerState::Live
            && match &w.link {
                None => self.cfg.require_link,
                Some(link) => link.kbps() < self.cfg.min_link_kbps,
            }
    }

    /// Why an idle, connected worker takes no tasks, if it does not.
    fn held_back(&self, w: &Worker) -> Option<String> {
        if !self.is_held_back(w) {
            return None;
        }
        match &w.link {
            None if self.cfg.require_link => Some("link not measured yet".to_owned()),
            Some(link) if link.kbps() < self.cfg.min_link_kbps => Some(format!(
                "link {:.0} kbit/s is below the pool's minimum of {:.0} kbit/s",
                link.kbps(),
                self.cfg.min_link_kbps
            )),
            _ => None,
        }
    }

    /// The worker's capacity class for a task of `kind` (any kind: `None`).
    fn class(&self, id: &WorkerId, w: &Worker, kind: Option<&str>) -> CapacityClass {
        let speed = expected_speed(w.hardware.as_ref(), self.history.get(id), kind);
        class_of(speed, w.link.as_ref())
    }

    /// Adds the worker in `state` if the scheduler does not know it. True if it was added.
    fn ensure_worker(&mut self, now: Instant, id: &WorkerId, state: WorkerState) -> bool {
        if self.workers.contains_key(id) {
            return false;
        }
        self.next_handle += 1;
        let handle = self.next_handle;
        self.handles.insert(handle, id.clone());
        self.workers
            .insert(id.clone(), Worker::new(now, state, handle));
        self.reindex(id);
        true
    }

    /// Removes the worker and its entries in the indexes.
    fn forget_worker(&mut self, id: &WorkerId) {
        let Some(w) = self.workers.remove(id) else {
            return;
        };
        if let Some(t) = w.timer {
            self.timers.remove(&(t, w.handle));
        }
        self.handles.remove(&w.handle);
        self.free_total -= w.counted_free;
        if w.counted_ok {
            self.free_ok -= w.counted_free;
            self.pickable.remove(id);
        }
        if w.counted_live {
            self.live_workers -= 1;
        }
        for index in self.pick_index.values_mut() {
            index.set(id, None);
        }
    }

    /// Brings the indexes up to date with the worker after a change to its state, clock,
    /// probe, link or replicas: O(log workers).
    fn reindex(&mut self, id: &WorkerId) {
        let Some(w) = self.workers.get(id) else {
            return;
        };
        let timer = self.next_deadline(w);
        let free = w.free_slots();
        let ok = free > 0 && !self.is_held_back(w);
        let live = w.state == WorkerState::Live;
        let (handle, old_timer, old_free, old_ok, old_live) = (
            w.handle,
            w.timer,
            w.counted_free,
            w.counted_ok,
            w.counted_live,
        );
        if old_timer != timer {
            if let Some(t) = old_timer {
                self.timers.remove(&(t, handle));
            }
            if let Some(t) = timer {
                self.timers.insert((t, handle));
            }
        }
        self.free_total = self.free_total - old_free + free;
        if old_ok {
            self.free_ok -= old_free;
        }
        if ok {
            self.free_ok += free;
        }
        if old_ok != ok {
            if ok {
                self.pickable.insert(id.clone());
            } else {
                self.pickable.remove(id);
            }
        }
        if old_live != live {
            if live {
                self.live_workers += 1;
            } else {
                self.live_workers -= 1;
            }
        }
        let w = self.workers.get_mut(id).expect("looked up above");
        w.timer = timer;
        w.counted_free = free;
        w.counted_ok = ok;
        w.counted_live = live;
        if self.pick_index.is_empty() {
            return;
        }
        // Taken out while it is updated: `pref` reads the rest of the scheduler.
        let mut indexes = std::mem::take(&mut self.pick_index);
        for ((kind, rank), index) in &mut indexes {
            let pref = ok.then(|| self.pref(id, kind, *rank)).flatten();
            index.set(id, pref);
        }
        self.pick_index = indexes;
    }

    /// The worker's preference for a task of `kind` under `rank`; `None` if it is unknown.
    fn pref(&self, id: &WorkerId, kind: &str, rank: Rank) -> Option<Pref> {
        let w = self.workers.get(id)?;
        let free = w.free_slots() as f64;
        if rank == Rank::Spread {
            return Some(Pref([free, 0.0, 0.0]));
        }
        let speed = expected_speed(w.hardware.as_ref(), self.history.get(id), Some(kind));
        Some(Pref(match rank {
            Rank::NetHeavy => [w.link.map_or(0.0, |l| l.kbps()), speed, free],
            Rank::Critical => [
                f64::from(class_of(speed, w.link.as_ref()) as u8),
                speed,
                free,
            ],
            Rank::Plain | Rank::Spread => [speed, free, 0.0],
        }))
    }

    /// The ordering of pickable workers for `kind` under `rank`, built from `pickable` the first
    /// time it is asked for.
    fn pick_index(&mut self, kind: &str, rank: Rank) -> &PickIndex {
        let key = (kind.to_owned(), rank);
        if !self.pick_index.contains_key(&key) {
            let mut index = PickIndex::default();
            for id in &self.pickable {
                index.set(id, self.pref(id, kind, rank));
            }
            self.pick_index.insert(key.clone(), index);
        }
        &self.pick_index[&key]
    }

    /// Tests only: the indexes hold what a scan of every worker computes.
    #[cfg(test)]
    fn check_indexes(&self) {
        let timers: BTreeSet<(Instant, u64)> = self
            .workers
            .values()
            .filter_map(|w| self.next_deadline(w).map(|t| (t, w.handle)))
            .collect();
        assert_eq!(timers, self.timers, "worker deadlines");
        let pickable: BTreeSet<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.free_slots() > 0 && self.held_back(w).is_none())
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(pickable, self.pickable, "pickable workers");
        let total: usize = self.workers.values().map(Worker::free_slots).sum();
        assert_eq!(total, self.free_total, "free slots");
        let ok: usize = self
            .workers
            .values()
            .filter(|w| self.held_back(w).is_none())
            .map(Worker::free_slots)
            .sum();
        assert_eq!(ok, self.free_ok, "free slots of pickable workers");
        let live = self
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Live)
            .count();
        assert_eq!(live, self.live_workers, "live workers");
        assert_eq!(self.handles.len(), self.workers.len(), "handles");
        let saturation: BTreeSet<ReplicaId> = self
            .replicas
            .iter()
            .filter(|(_, r)| r.extra == Extra::Saturation)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(saturation, self.saturation, "saturation replicas");
        let saturable = self.jobs.values().filter(|j| j.saturable).count();
        assert_eq!(saturable, self.saturable_jobs, "saturable jobs");
        for ((kind, rank), index) in &self.pick_index {
            let want: BTreeSet<(std::cmp::Reverse<Pref>, WorkerId)> = self
                .pickable
                .iter()
                .map(|id| {
                    let pref = self
                        .pref(id, kind, *rank)
                        .expect("a pickable worker exists");
                    (std::cmp::Reverse(pref), id.clone())
                })
                .collect();
            let have: BTreeSet<(std::cmp::Reverse<Pref>, WorkerId)> = index
                .groups
                .iter()
                .flat_map(|(p, g)| g.members.iter().map(|id| (*p, id.clone())))
                .collect();
            assert_eq!(want, have, "pick order for {kind} under {rank:?}");
            assert_eq!(index.key.len(), want.len(), "pick keys for {kind}");
            for g in index.groups.values() {
                assert!(!g.members.is_empty(), "an empty tie group is kept");
                assert_eq!(g.at.len(), g.members.len(), "tie group positions");
                for (i, id) in g.members.iter().enumerate() {
                    assert_eq!(g.at.get(id), Some(&i), "position of {id}");
                }
            }
        }
    }

    /// Records that the worker was heard from. False if the scheduler does not know it as
    /// connected (never joined, or already lost: its messages no longer count).
    fn touch(&mut self, now: Instant, id: &WorkerId) -> bool {
        match self.workers.get_mut(id) {
            Some(w) if w.state.is_connected() => {
                w.last_heard = now;
                w.probe_sent = false;
                self.reindex(id);
                true
            }
            _ => false,
        }
    }

    fn set_progress(&mut self, now: Instant, worker: &WorkerId, p: Progress) {
        if let Some(r) = self
            .replicas
            .get_mut(&p.replica)
            .filter(|r| &r.worker == worker)
            && p.fraction.is_finite()
        {
            r.progress = p.fraction.clamp(0.0, 1.0);
            r.progress_at = now;
        }
    }

    fn lose(&mut self, now: Instant, id: &WorkerId, cause: LossCause) {
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        let was_hosting = w.state.hosts_live_replicas();
        w.state = WorkerState::Lost;
        w.probe_sent = false;
        w.probe_nonce = None;
        w.reconnect_by = None;
        let replicas: Vec<ReplicaId> = w.replicas.iter().copied().collect();
        self.reindex(id);
        self.outputs.push_back(Output::WorkerLost {
            worker: id.clone(),
            cause: cause.clone(),
            replicas: replicas.clone(),
        });
        let poisoned = cause == LossCause::Disconnected;
        let reissue = if cause == LossCause::Left {
            ReissueCause::Left { worker: id.clone() }
        } else {
            ReissueCause::WorkerLost {
                worker: id.clone(),
                cause,
            }
        };
        if was_hosting {
            self.worker_stopped_hosting(id, reissue);
        }
        if poisoned {
            self.count_poison(now, id, &replicas);
        }
        if self.workers.get(id).is_some_and(|w| w.replicas.is_empty()) {
            self.forget_worker(id);
        }
    }

    /// A worker's connection closed: each of `replicas` assigned to it less than
    /// `poison_window` ago counts as a failure of its task there. The replicas stay attached
    /// (a network reset does not lose them), but a task that kills every worker it lands on
    /// must reach `max_failures`. Silence and owner activity say nothing about the task.
    fn count_poison(&mut self, now: Instant, id: &WorkerId, replicas: &[ReplicaId]) {
        for r in replicas {
            let Some(rep) = self.replicas.get(r) else {
                continue;
            };
            let after = now.saturating_duration_since(rep.started);
            if after >= self.cfg.poison_window {
                continue;
            }
            let error = format!(
                "worker {id} lost {} ms after this task was assigned (the task may crash its worker)",
                after.as_millis()
            );
            let (seq, ti) = (rep.job, rep.task);
            self.count_failure(seq, ti, id, &error);
        }
    }

    /// One more failure of a task, on `worker`; at `max_failures` its job fails with `error`.
    fn count_failure(&mut self, seq: u64, ti: usize, worker: &WorkerId, error: &str) {
        let Some(job) = self.jobs.get_mut(&seq) else {
            return;
        };
        let task = &mut job.tasks[ti];
        task.failures += 1;
        task.failed_on.insert(worker.clone());
        if task.failures >= self.cfg.max_failures {
            let task_id = job.job.tasks()[ti].id.clone();
            let error = format!(
                "task {task_id} failed {} times, last on worker {worker}: {error}",
                task.failures
            );
            self.finish_job(
                seq,
                JobOutcome::Failed {
                    task: task_id,
                    error,
                },
            );
        }
    }

    /// The worker's replicas stopped counting as live: note why on each task left with none.
    fn worker_stopped_hosting(&mut self, id: &WorkerId, cause: ReissueCause) {
        let replicas: Vec<ReplicaId> = self
            .workers
            .get(id)
            .map(|w| w.replicas.iter().copied().collect())
            .unwrap_or_default();
        for r in replicas {
            let Some(rep) = self.replicas.get(&r) else {
                continue;
            };
            let (seq, ti) = (rep.job, rep.task);
            if self.live_replicas(seq, ti) == 0
                && let Some(task) = self.jobs.get_mut(&seq).map(|j| &mut j.tasks[ti])
            {
                task.pending_cause.get_or_insert_with(|| cause.clone());
                self.orphaned.push((seq, ti));
            }
            self.refresh_task(seq, ti);
        }
    }

    fn live_replicas(&self, seq: u64, ti: usize) -> usize {
        let Some(job) = self.jobs.get(&seq) else {
            return 0;
        };
        job.tasks[ti]
            .replicas
            .iter()
            .filter(|r| self.is_live(r))
            .count()
    }

    /// Whether a replica counts as running: not past its deadline, on a worker that hosts.
    fn is_live(&self, r: &ReplicaId) -> bool {
        self.replicas.get(r).is_some_and(|rep| {
            !rep.expired
                && self
                    .workers
                    .get(&rep.worker)
                    .is_some_and(|w| self.hosts(w.state))
        })
    }

    /// Whether replicas on a worker in this state count as running. Under `deadline` a worker
    /// whose owner came back keeps its (paused) replicas until their deadline.
    fn hosts(&self, state: WorkerState) -> bool {
        state.hosts_live_replicas()
            || (!self.cfg.policy.detects_loss() && matches!(state, WorkerState::Busy(_)))
    }

    /// Replicas the task gets from the start: its plan under `idlegrid`, one otherwise.
    /// A quorum task's: as many as agreement still lacks, whatever the policy.
    fn target_replicas(&self, seq: u64, ti: usize) -> usize {
        if let Some(need) = self.jobs[&seq].tasks[ti].quorum_need {
            need.max(1)
        } else if self.cfg.policy.replicates_critical() {
            self.jobs[&seq].plan.tasks[ti].replicas.max(1) as usize
        } else {
            1
        }
    }

    fn is_critical(&self, seq: u64, ti: usize) -> bool {
        self.target_replicas(seq, ti) > 1
    }

    fn refresh_replica_task(&mut self, r: ReplicaId) {
        if let Some(rep) = self.replicas.get(&r) {
            self.refresh_task(rep.job, rep.task);
        }
    }

    /// Puts the task in `wanting` under its current key, or takes it out if it wants nothing.
    fn refresh_task(&mut self, seq: u64, ti: usize) {
        let live = self.live_replicas(seq, ti);
        let critical = self.jobs.contains_key(&seq) && self.is_critical(seq, ti);
        let Some(job) = self.jobs.get(&seq) else {
            return;
        };
        let task = &job.tasks[ti];
        let wants = !task.done && task.missing_deps == 0;
        let key = if !wants {
            None
        } else if live == 0 {
            Some(if critical { 0 } else { 1 })
        } else if live < self.target_replicas(seq, ti) {
            Some(2)
        } else {
            None
        }
        .map(|class| WantKey {
            class,
            job: seq,
            topo_pos: job.topo_pos[ti],
            task: ti,
        });
        let old = self
            .jobs
            .get_mut(&seq)
            .map(|j| std::mem::replace(&mut j.tasks[ti].queued, key));
        if let Some(Some(old)) = old {
            self.wanting.remove(&old);
        }
        if let Some(key) = key {
            self.wanting.insert(key);
        }
    }

    /// Detaches a replica from its worker and task. `cause` is recorded on the task if this
    /// leaves it without a live replica.
    fn remove_replica(&mut self, r: ReplicaId, cause: Option<ReissueCause>) {
        let Some(rep) = self.replicas.remove(&r) else {
            return;
        };
        if let Some(at) = rep.deadline {
            self.deadlines.remove(&(at, r));
        }
        if rep.extra == Extra::Saturation {
            self.saturation.remove(&r);
        }
        if let Some(w) = self.workers.get_mut(&rep.worker) {
            w.replicas.remove(&r);
            if w.state == WorkerState::Lost && w.replicas.is_empty() {
                self.forget_worker(&rep.worker);
            } else {
                self.reindex(&rep.worker);
            }
        }
        let live = self.live_replicas(rep.job, rep.task);
        if let Some(task) = self.jobs.get_mut(&rep.job).map(|j| &mut j.tasks[rep.task]) {
            task.replicas.retain(|x| *x != r);
            if live == 0
                && !task.done
                && let Some(cause) = cause
            {
                task.pending_cause.get_or_insert(cause);
                self.orphaned.push((rep.job, rep.task));
            }
        }
        self.refresh_task(rep.job, rep.task);
    }

    fn cancel_replica(&mut self, r: ReplicaId, reason: String) {
        if let Some(worker) = self.replicas.get(&r).map(|rep| rep.worker.clone()) {
            self.remove_replica(r, None);
            self.outputs.push_back(Output::Cancel {
                worker,
                replica: r,
                reason,
            });
        }
    }

    fn finish_job(&mut self, seq: u64, outcome: JobOutcome) {
        let Some(job) = self.jobs.get(&seq) else {
            return;
        };
        let replicas: Vec<ReplicaId> = job
            .tasks
            .iter()
            .flat_map(|t| t.replicas.iter().copied())
            .collect();
        let keys: Vec<WantKey> = job.tasks.iter().filter_map(|t| t.queued).collect();
        let reason = match &outcome {
            JobOutcome::Completed => "job completed".to_owned(),
            JobOutcome::Failed { task, .. } => format!("job failed (task {task})"),
            JobOutcome::Cancelled => "job cancelled".to_owned(),
        };
        for r in replicas {
            self.cancel_replica(r, reason.clone());
        }
        for k in keys {
            self.wanting.remove(&k);
        }
        if let Some(job) = self.jobs.remove(&seq) {
            self.job_seq.remove(&job.id);
            self.saturable_jobs -= usize::from(job.saturable);
            self.outputs.push_back(Output::JobFinished {
                job: job.id,
                outcome,
            });
        }
    }

    /// Gives every task that wants a replica one, as far as free workers allow; then, under
    /// `idlegrid`, hands workers held by saturation replicas to tasks that have none, and lets
    /// workers that would still idle take saturation replicas.
    fn schedule(&mut self, now: Instant) {
        #[cfg(test)]
        self.check_indexes();
        for (seq, ti) in std::mem::take(&mut self.orphaned) {
            if let Some(task) = self.jobs.get_mut(&seq).and_then(|j| j.tasks.get_mut(ti))
                && task.pending_cause.is_some()
            {
                task.orphaned_at.get_or_insert(now);
            }
        }
        // Each task that wants a replica, in `wanting` order, until no worker could take one
        // (a slot of a held-back worker takes nothing). A task's key only moves later when it
        // gets a replica (to class 2): `visited` keeps it from being taken twice.
        let mut visited: BTreeSet<(u64, usize)> = BTreeSet::new();
        let mut after: Option<WantKey> = None;
        while self.free_ok > 0 {
            let next = match after {
                None => self.wanting.first(),
                Some(k) => self.wanting.range((Excluded(k), Unbounded)).next(),
            };
            let Some(&key) = next else {
                break;
            };
            after = Some(key);
            if key.class == 2 && visited.contains(&(key.job, key.task)) {
                continue;
            }
            if key.class < 2 {
                visited.insert((key.job, key.task));
            }
            while self.free_ok > 0
                && self
                    .jobs
                    .get(&key.job)
                    .is_some_and(|j| j.tasks[key.task].queued.is_some())
            {
                let Some(worker) = self.pick_worker(key.job, key.task, Pick::Any) else {
                    break;
                };
                self.start_replica(now, key.job, key.task, worker, Extra::No, None);
            }
        }
        if self.cfg.policy.saturates() {
            self.preempt_saturation(now);
            self.saturate(now);
        }
    }

    /// The best worker for another replica of the task: live, with a free slot, its link fast
    /// enough, its memory and disk no smaller than the task's estimates, not already running it;
    /// preferably one that has not failed it. Under `idlegrid`, critical tasks go to the highest
    /// capacity class, network-heavy ones to the fastest links, and every task to the fastest
    /// worker for its kind; the other policies spread tasks over the workers with the most free
    /// slots, blind to speed. `Pick::FasterThan` takes only workers expected to be faster.
    fn pick_worker(&mut self, seq: u64, ti: usize, pick: Pick) -> Option<WorkerId> {
        let spec = &self.jobs[&seq].job.tasks()[ti];
        let rank = if !self.cfg.policy.replicates_critical() {
            Rank::Spread
        } else if spec.estimates.net_kb >= NET_HEAVY_KB {
            Rank::NetHeavy
        } else if self.is_critical(seq, ti) {
            Rank::Critical
        } else {
            Rank::Plain
        };
        let kind = spec.kind.clone();
        // Built (or found) first: the rest only reads.
        self.pick_index(&kind, rank);
        let index = &self.pick_index[&(kind, rank)];
        let job = &self.jobs[&seq];
        let task = &job.tasks[ti];
        let spec = &job.job.tasks()[ti];
        // Distinct workers: none runs it twice, nor again once it gave a candidate output.
        let running_on: BTreeSet<&WorkerId> = task
            .replicas
            .iter()
            .filter_map(|r| self.replicas.get(r).map(|r| &r.worker))
            .chain(task.candidates.iter().map(|c| &c.worker))
            .collect();
        let quorum = task.quorum_need.is_some();
        // A quorum's owners: none may give it a second output through another worker.
        let owners_in: BTreeSet<&String> = if quorum {
            running_on
                .iter()
                .filter_map(|w| self.owners.get(*w))
                .collect()
        } else {
            BTreeSet::new()
        };
        // A task that failed on every live worker may go back to one of them rather than wait
        // forever for a new worker.
        let failed_live = task
            .failed_on
            .iter()
            .filter(|id| {
                self.workers
                    .get(*id)
                    .is_some_and(|w| w.state == WorkerState::Live)
            })
            .count();
        let avoid_failed = self.live_workers > failed_live;
        // Pickable workers (a free slot, a fast enough link) by preference, best first: the
        // first group with a worker that may take the task gives it one of those, at random.
        let may = |id: &WorkerId| {
            let Some(w) = self.workers.get(id) else {
                return false;
            };
            let failed_here = avoid_failed && task.failed_on.contains(id);
            let distrusted = quorum
                && (self
                    .reputation
                    .get(id)
                    .is_some_and(|r| r.flagged(self.cfg.distrust_after))
                    || self.owners.get(id).is_some_and(|o| owners_in.contains(o)));
            fits(w.hardware.as_ref(), spec)
                && !running_on.contains(id)
                && !task.trimmed_on.contains(id)
                && !failed_here
                && !distrusted
                && match pick {
                    Pick::Any => true,
                    Pick::FasterThan(min) => {
                        expected_speed(w.hardware.as_ref(), self.history.get(id), Some(&spec.kind))
                            > min
                    }
                }
        };
        let rng = &mut self.rng;
        for group in index.groups.values() {
            let n = group.members.len();
            if n > EXACT_TIES {
                for _ in 0..TIE_DRAWS {
                    let id = &group.members[rng.below(n as u64) as usize];
                    if may(id) {
                        return Some(id.clone());
                    }
                }
            }
            let mut ok: Vec<&WorkerId> = group.members.iter().filter(|id| may(id)).collect();
            if ok.is_empty() {
                continue;
            }
            if n <= EXACT_TIES {
                ok.sort();
            }
            let pick = rng.below(ok.len() as u64) as usize;
            return Some(ok[pick].clone());
        }
        None
    }

    /// Starts a replica of the task on `worker`. `reason` is given for extras; a planned replica
    /// is a first, a reissue (the task had none live) or a redundant one.
    fn start_replica(
        &mut self,
        now: Instant,
        seq: u64,
        ti: usize,
        worker: WorkerId,
        extra: Extra,
        reason: Option<AssignReason>,
    ) {
        self.next_replica += 1;
        let replica = ReplicaId::new(self.epoch, self.next_replica);
        let had_live = self.live_replicas(seq, ti) > 0;
        let job = self.jobs.get_mut(&seq).expect("scheduled job exists");
        let spec = &job.job.tasks()[ti];
        let deps = spec
            .deps
            .iter()
            .filter_map(|d| {
                let di = job.job.index_of(d)?;
                Some((d.clone(), job.tasks[di].output.clone()?))
            })
            .collect();
        let assignment = Assignment {
            replica,
            job: job.id.clone(),
            task: spec.id.clone(),
            kind: spec.kind.clone(),
            input: spec.input.clone(),
            deps,
        };
        let task = &mut job.tasks[ti];
        let reason = match reason {
            Some(reason) => {
                // A task that lost its last live replica and gets one from the monitor is
                // still a reissue for that loss.
                if let (false, Some(cause)) = (had_live, task.pending_cause.take()) {
                    AssignReason::Reissue(cause)
                } else {
                    reason
                }
            }
            None => match (task.ever_started, had_live, task.pending_cause.take()) {
                (false, _, _) => AssignReason::First,
                (true, false, Some(cause)) => AssignReason::Reissue(cause),
                _ => AssignReason::Redundant,
            },
        };
        // How long the task went without a live replica, for a reissue (not stamped yet: it
        // lost it in this same event). Every start takes the cause, and so the stamp.
        let orphaned_at = task.orphaned_at.take();
        let waited = match &reason {
            AssignReason::Reissue(_) => {
                Some(orphaned_at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at)))
            }
            _ => None,
        };
        task.ever_started = true;
        task.replicas.push(replica);
        if extra != Extra::No {
            task.extras += 1;
        }
        self.replicas.insert(
            replica,
            Replica {
                job: seq,
                task: ti,
                worker: worker.clone(),
                progress: 0.0,
                progress_at: now,
                started: now,
                extra,
                deadline: None,
                expired: false,
            },
        );
        self.set_deadline(now, replica);
        let kind = assignment.kind.clone();
        if extra == Extra::Saturation {
            self.saturation.insert(replica);
        }
        let w = self.workers.get_mut(&worker).expect("picked worker exists");
        w.replicas.insert(replica);
        self.reindex(&worker);
        let w = &self.workers[&worker];
        let class = self.class(&worker, w, Some(&kind));
        let rate = class.rate(&self.cfg.class_rates);
        self.outputs.push_back(Output::Assign {
            worker,
            assignment,
            reason,
            class,
            rate,
            waited,
        });
        self.refresh_task(seq, ti);
    }
}

/// How many more agreeing outputs a quorum task needs, given its candidates; `None` for a task
/// not validated by quorum.
fn quorum_need(job: &Job, ti: usize, candidates: &[Candidate]) -> Option<usize> {
    let rule = job.quorum(ti)?;
    let outputs: Vec<&serde_json::Value> = candidates.iter().map(|c| &c.output).collect();
    let best = match quorum::tally(&outputs, &rule) {
        quorum::Tally::Open { best } => best,
        _ => rule.n as usize,
    };
    Some((rule.n as usize).saturating_sub(best))
}

/// Tasks expected to move at least this much over the network (kB) go to the fastest links.
const NET_HEAVY_KB: u64 = 10 * 1024;

/// Which workers a replica may go to.
#[derive(Debug, Clone, Copy)]
enum Pick {
    Any,
    /// Only workers expected to run the task's kind faster than this (relative speed).
    FasterThan(f64),
}

fn cmp3(a: &[f64; 3], b: &[f64; 3]) -> std::cmp::Ordering {
    a[0].total_cmp(&b[0])
        .then(a[1].total_cmp(&b[1]))
        .then(a[2].total_cmp(&b[2]))
}

/// Whether a worker's memory and disk are no smaller than the task's estimates (zero: unknown,
/// no constraint). A worker that reported no hardware fits nothing with an estimate.
fn fits(hw: Option<&Hardware>, spec: &crate::job::TaskSpec) -> bool {
    let e = &spec.estimates;
    match hw {
        Some(hw) => hw.memory_mb >= e.mem_mb && hw.disk_mb >= e.disk_mb,
        None => e.mem_mb == 0 && e.disk_mb == 0,
    }
}
