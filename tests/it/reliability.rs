//! Faults the core loop claims to survive: results acknowledged only once stored and accepted
//! again idempotently, reports about replicas a worker does not hold refused, and a supervisor
//! restart after an outage longer than the loss bound that keeps every running replica.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use idlegrid::job::{JobSpec, TaskSpec};
use idlegrid::proto::{self, Execution, Payload, Progress, ReplicaId, SupervisorMsg, WorkerMsg};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A hand-driven worker speaking the protocol frame by frame.
struct RawWorker {
    ws: Ws,
    /// Messages that arrived between link probe payload frames, not yet returned.
    pending: std::collections::VecDeque<SupervisorMsg>,
}

impl RawWorker {
    /// Connects and says hello as `id`; returns after the welcome, with its keep list.
    async fn join(
        sup: &SupervisorProc,
        id: &str,
        held: Vec<ReplicaId>,
        available: bool,
    ) -> (Self, Vec<ReplicaId>) {
        let (mut ws, _) = tokio_tungstenite::connect_async(sup.ws_url())
            .await
            .unwrap();
        let token = std::fs::read_to_string(sup.worker_token_file()).unwrap();
        let hello = test_hello(id, token.trim(), held, available);
        ws.send(Message::text(proto::encode(&hello))).await.unwrap();
        let mut me = Self {
            ws,
            pending: Default::default(),
        };
        match me.next().await {
            SupervisorMsg::Welcome { keep, .. } => (me, keep),
            other => panic!("expected a welcome, got {other:?}"),
        }
    }

    async fn send(&mut self, msg: &WorkerMsg) {
        self.ws
            .send(Message::text(proto::encode(msg)))
            .await
            .unwrap();
    }

    /// The next message from the supervisor (within 10 s).
    async fn next(&mut self) -> SupervisorMsg {
        if let Some(msg) = self.pending.pop_front() {
            return msg;
        }
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a message within 10 s")
                .expect("connection open")
                .unwrap();
            if let Message::Text(t) = frame {
                match proto::decode_supervisor(&t).unwrap() {
                    // The supervisor measures every worker's link: answer as a worker does.
                    SupervisorMsg::LinkPing { nonce } => {
                        self.send(&WorkerMsg::LinkPong { nonce }).await
                    }
                    SupervisorMsg::LinkDown { nonce, bytes, .. } => {
                        let mut digest = proto::LinkDigest::default();
                        // The supervisor's other messages may come between payload frames.
                        while digest.bytes() < bytes {
                            match self.ws.next().await {
                                Some(Ok(Message::Binary(b))) => digest.update(&b),
                                Some(Ok(Message::Text(t))) => self
                                    .pending
                                    .push_back(proto::decode_supervisor(&t).unwrap()),
                                Some(Ok(_)) => {}
                                other => panic!("connection ended during a link probe: {other:?}"),
                            }
                        }
                        let digest = digest.finish();
                        self.send(&WorkerMsg::LinkReceived {
                            nonce,
                            bytes,
                            digest,
                        })
                        .await;
                    }
                    SupervisorMsg::LinkUp { nonce, bytes, .. } => {
                        let chunk = proto::LINK_CHUNK_BYTES as u64;
                        for offset in (0..bytes).step_by(chunk as usize) {
                            let len = chunk.min(bytes - offset) as usize;
                            let payload = proto::link_chunk(nonce, offset, len);
                            self.ws.send(Message::binary(payload)).await.unwrap();
                        }
                        self.send(&WorkerMsg::LinkSent { nonce, bytes }).await;
                    }
                    msg => self.pending.push_back(msg),
                }
                if let Some(msg) = self.pending.pop_front() {
                    return msg;
                }
            }
        }
    }

    /// Waits for a message matching `f`, skipping others.
    async fn expect<T>(&mut self, what: &str, mut f: impl FnMut(SupervisorMsg) -> Option<T>) -> T {
        for _ in 0..100 {
            if let Some(v) = f(self.next().await) {
                return v;
            }
        }
        panic!("no {what}");
    }
}

fn spin(id: &str, ms: u64) -> TaskSpec {
    TaskSpec::new(id, "spin", serde_json::json!({ "ms": ms }))
}

/// Replica ids as the status API shows them (`r3.12`), per task.
async fn running_replicas(
    op: &idlegrid::operator::Operator,
    job: &idlegrid::proto::JobId,
) -> Vec<(String, ReplicaId)> {
    let status = op.status(job).await.unwrap();
    status["task_states"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| {
            let task = t["id"].as_str().unwrap().to_owned();
            t["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |r| {
                    let text = r["replica"].as_str().unwrap();
                    (task.clone(), ReplicaId::parse(&text[1..]).unwrap())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_is_acknowledged_once_stored_and_a_resent_result_changes_nothing() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &[]);
    let op = sup.operator();
    let (mut w, _) = RawWorker::join(&sup, "raw-1", vec![], true).await;
    let job = op
        .submit(&JobSpec {
            name: "acked".into(),
            tasks: vec![spin("a", 10)],
            ..Default::default()
        })
        .await
        .unwrap();
    let replica = w
        .expect("assign", |m| match m {
            SupervisorMsg::Assign(a) => Some(a.replica),
            _ => None,
        })
        .await;
    let result = WorkerMsg::Result {
        replica,
        output: Payload::Inline(serde_json::json!({"spun_ms": 10})),
        execution: Execution {
            wall_ms: 10,
            cpu_ms: 10,
        },
    };
    w.send(&result).await;
    let acked = w
        .expect("ack", |m| match m {
            SupervisorMsg::ResultAck { replica } => Some(replica),
            _ => None,
        })
        .await;
    assert_eq!(acked, replica);
    // By the time of the ack the result is in the store.
    assert_eq!(
        op.results(&job).await.unwrap(),
        serde_json::json!({"a": {"spun_ms": 10}})
    );
    // The ack was lost, say: the worker sends the same result again, and again after a
    // reconnect. Each time it is acknowledged, and nothing is stored twice.
    w.send(&result).await;
    assert_eq!(
        w.expect("second ack", |m| match m {
            SupervisorMsg::ResultAck { replica } => Some(replica),
            _ => None,
        })
        .await,
        replica
    );
    drop(w);
    let (mut w, keep) = RawWorker::join(&sup, "raw-1", vec![replica], true).await;
    assert!(keep.is_empty(), "a stored replica is not kept: {keep:?}");
    w.send(&result).await;
    w.expect("ack after reconnect", |m| {
        matches!(m, SupervisorMsg::ResultAck { .. }).then_some(())
    })
    .await;
    let report = op.report(&job).await.unwrap();
    assert_eq!(report.summary.state, "completed");
    assert_eq!(report.replicas_started, 1);
    let won: u32 = report.workers.iter().map(|w| w.won).sum();
    assert_eq!(won, 1, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_about_replicas_a_worker_does_not_hold_are_refused_and_stored_nowhere() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &["--heartbeat-ms", "200"]);
    let _workers = start_workers(&sup, 2, 1).await;
    let op = sup.operator();
    let spec = JobSpec {
        name: "honest".into(),
        tasks: vec![spin("a", 1500), spin("b", 1500)],
        ..Default::default()
    };
    let job = op.submit(&spec).await.unwrap();
    let running = eventually(Duration::from_secs(20), "both tasks running", || async {
        let r = running_replicas(&op, &job).await;
        (r.len() == 2).then_some(r)
    })
    .await;
    // A liar that takes no tasks reports on every running replica: failures with huge
    // execution times and a multi-megabyte error, results with wrong outputs, progress.
    let (mut liar, _) = RawWorker::join(&sup, "liar", vec![], false).await;
    for (_, replica) in &running {
        liar.send(&WorkerMsg::Failure {
            replica: *replica,
            error: "x".repeat(4 << 20),
            execution: Execution {
                wall_ms: u64::MAX,
                cpu_ms: u64::MAX,
            },
        })
        .await;
        liar.send(&WorkerMsg::Result {
            replica: *replica,
            output: Payload::Inline(serde_json::json!({"spun_ms": 666})),
            execution: Execution::default(),
        })
        .await;
        liar.send(&WorkerMsg::Progress(Progress {
            replica: *replica,
            fraction: 1.0,
        }))
        .await;
    }
    let summary = wait_for_job(&op, &job, Duration::from_secs(30)).await;
    assert_eq!(summary.state, "completed", "{summary:?}");
    assert_eq!(
        op.results(&job).await.unwrap(),
        serde_json::json!({"a": {"spun_ms": 1500}, "b": {"spun_ms": 1500}})
    );
    let report = op.report(&job).await.unwrap();
    assert_eq!(report.reissued, 0, "the lies caused reissues: {report:?}");
    assert_eq!(report.replicas_started, 2);
    assert!(
        report.workers.iter().all(|w| w.exec_ms < 10_000),
        "a lie reached the cost: {report:?}"
    );
    let stats = op.stats().await.unwrap();
    for kind in ["failure", "result", "progress"] {
        assert_eq!(stats["refused"][kind], 2, "{kind}: {stats}");
    }
    // The supervisor logged the liar once per kind, not once per lie.
    let log = sup.log();
    assert_eq!(log.matches("refused a report: failure").count(), 1, "{log}");
}

/// Sends a right output for `replica` claiming endless time, and waits for its ack.
async fn claim_endless_time(w: &mut RawWorker, replica: ReplicaId) {
    w.send(&WorkerMsg::Result {
        replica,
        output: Payload::Inline(serde_json::json!({"spun_ms": 10})),
        execution: Execution {
            wall_ms: u64::MAX,
            cpu_ms: u64::MAX,
        },
    })
    .await;
    w.expect("ack", |m| {
        matches!(m, SupervisorMsg::ResultAck { .. }).then_some(())
    })
    .await;
}

/// Checks that the job's report charges at least `held_ms` of CPU time and no more than the
/// time since `submitted`.
async fn assert_charged(
    op: &idlegrid::operator::Operator,
    job: &proto::JobId,
    held_ms: u64,
    submitted: std::time::Instant,
) {
    let report = op.report(job).await.unwrap();
    assert_eq!(report.summary.state, "completed", "{report:?}");
    let cpu: u64 = report.workers.iter().map(|w| w.cpu_ms).sum();
    let bound = submitted.elapsed().as_millis() as u64;
    assert!(
        (held_ms..=bound).contains(&cpu),
        "charged {cpu} ms of CPU for a replica held {held_ms} ms (at most {bound} ms observed)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_claiming_endless_cpu_time_is_charged_what_the_supervisor_saw_even_across_a_restart()
 {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &[]);
    let addr = sup.addr;
    let op = sup.operator();
    let (mut w, _) = RawWorker::join(&sup, "raw-1", vec![], true).await;
    let assigned = |m: SupervisorMsg| match m {
        SupervisorMsg::Assign(a) => Some(a.replica),
        _ => None,
    };
    let one_task = |name: &str| JobSpec {
        name: name.into(),
        tasks: vec![spin("a", 10)],
        ..Default::default()
    };

    // Held 500 ms in this run of the supervisor.
    let submitted = std::time::Instant::now();
    let first = op.submit(&one_task("first")).await.unwrap();
    let replica = w.expect("first assign", assigned).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    claim_endless_time(&mut w, replica).await;
    assert_charged(&op, &first, 500, submitted).await;

    // Held 500 ms, a restart, and 500 ms more: the restarted supervisor reads the start from
    // its store.
    let submitted = std::time::Instant::now();
    let second = op.submit(&one_task("second")).await.unwrap();
    let replica = w.expect("second assign", assigned).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sup.kill9();
    drop(w);
    let sup = SupervisorProc::start(dir.path(), &addr.to_string(), &[]);
    let op = sup.operator();
    let (mut w, keep) = RawWorker::join(&sup, "raw-1", vec![replica], true).await;
    assert_eq!(
        keep,
        vec![replica],
        "the restarted supervisor dropped the replica"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    claim_endless_time(&mut w, replica).await;
    assert_charged(&op, &second, 1000, submitted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_8_s_supervisor_outage_a_restart_keeps_every_running_replica() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let args = ["--heartbeat-ms", "100"];
    let mut sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &args);
    let addr = sup.addr;
    let _workers = start_workers(&sup, 2, 1).await;
    let op = sup.operator();
    // Two tasks that outlast the outage: 8 s down, then the grace, then the rest of the run.
    let spec = JobSpec {
        name: "outage".into(),
        tasks: vec![spin("a", 14_000), spin("b", 14_000)],
        ..Default::default()
    };
    let job = op.submit(&spec).await.unwrap();
    // Running on the workers, not only assigned: a replica whose assignment was stored but
    // never reached its worker before the kill is rightly reissued as dropped (seen under load).
    eventually(
        Duration::from_secs(20),
        "both tasks running on their workers",
        || async {
            let replicas = replica_progress(&op, &job).await?;
            let progressed = replicas.iter().filter(|(_, p)| *p > 0.0).count();
            (progressed == 2).then_some(())
        },
    )
    .await;
    sup.kill9();
    tokio::time::sleep(Duration::from_secs(8)).await;
    // 8 s is far beyond the loss bound (300 ms) and the client's longest backoff (6.25 s).
    let sup = SupervisorProc::start(dir.path(), &addr.to_string(), &args);
    let op = sup.operator();
    let summary = wait_for_job(&op, &job, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "completed", "{summary:?}");
    let report = op.report(&job).await.unwrap();
    assert_eq!(
        report.reissued, 0,
        "a running replica was reissued: {report:?}"
    );
    assert_eq!(report.replicas_started, 2, "{report:?}");
    for w in ["w1", "w2"] {
        let log = std::fs::read_to_string(dir.path().join(format!("{w}.log"))).unwrap();
        assert!(
            log.contains("kept=1"),
            "{w} did not keep its replica: {log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_result_over_a_slow_link_arrives_without_a_false_loss_and_owner_input_is_not_held_up()
 {
    let _machine = whole_machine().await;
    // 4 MiB over 8 Mbit/s: four seconds of upload, more than ten times the loss bound (300 ms).
    let r = idlegrid::bench::bulk::measure(&idlegrid::bench::bulk::BulkArgs {
        mb: 4,
        kbps: 8_000,
        heartbeat_ms: 100,
        touch_ms: 400,
        json: false,
    })
    .await
    .unwrap();
    assert_eq!(r.job_state, "completed", "{r:?}");
    assert!(r.result_correct, "{r:?}");
    assert_eq!(r.false_losses, 0, "{r:?}");
    assert_eq!(r.reissued, 0, "{r:?}");
    assert!(r.transfer_s > 3.0, "the link was not slow: {r:?}");
    assert!(r.touches >= 3, "{r:?}");
    // Each 1 MiB chunk of the upload takes about a second on this link: an Activity queued
    // behind the transfer would take that long.
    assert!(r.notify_max_ms < 300.0, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_full_of_made_up_replicas_is_refused_beyond_the_workers_slots() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &[]);
    let op = sup.operator();
    let (mut liar, _) = RawWorker::join(&sup, "liar", vec![], false).await;
    // One slot; ten thousand replicas it never ran.
    let progress = (0..10_000)
        .map(|i| Progress {
            replica: ReplicaId::new(77, i),
            fraction: 0.5,
        })
        .collect();
    liar.send(&WorkerMsg::Heartbeat { progress }).await;
    let stats = eventually(Duration::from_secs(10), "the refusals counted", || async {
        let s = op.stats().await.ok()?;
        (s["refused"]["progress"] == 10_000).then_some(s)
    })
    .await;
    // The one entry within its slot was looked up and refused; the rest were not read.
    assert_eq!(stats["refused"]["progress"], 10_000, "{stats}");
    let log = sup.log();
    assert!(
        log.contains("a heartbeat with 9999 progress entries beyond its 1 slots"),
        "{log}"
    );
}
