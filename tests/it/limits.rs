//! Abuse limits on the worker port: a flood beyond the message rate closes that connection
//! only; connections that never say hello are capped per address and dropped at the hello
//! deadline; each refusal is told to its sender, logged once and counted in /metrics, and the
//! pool's own workers carry on.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use idlegrid::job::{JobSpec, TaskSpec};
use idlegrid::proto::{self, SupervisorMsg, WorkerMsg};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn hello(sup: &SupervisorProc, id: &str) -> WorkerMsg {
    let token = std::fs::read_to_string(sup.worker_token_file()).unwrap();
    // Not available: it gets no tasks, so the job is the real workers' alone.
    test_hello(id, token.trim(), vec![], false)
}

/// The supervisor's messages until it closes the connection (or 10 s pass).
async fn until_closed(ws: &mut Ws) -> Vec<SupervisorMsg> {
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while let Ok(Some(frame)) = tokio::time::timeout_at(end.into(), ws.next()).await {
        match frame {
            Ok(Message::Text(t)) => got.extend(proto::decode_supervisor(&t).ok()),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    got
}

fn error_text(msgs: &[SupervisorMsg]) -> String {
    msgs.iter()
        .find_map(|m| match m {
            SupervisorMsg::Error { message, .. } => Some(message.clone()),
            _ => None,
        })
        .unwrap_or_else(|| format!("no error message in {msgs:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_the_message_rate_closes_that_connection_only_and_is_logged_once() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &["--max-msgs-per-s", "50"]);
    let _workers = start_workers(&sup, 2, 1).await;
    let op = sup.operator();
    let job = op
        .submit(&JobSpec {
            name: "beside-a-flood".into(),
            tasks: (0..6)
                .map(|k| TaskSpec::new(format!("t{k}"), "spin", serde_json::json!({ "ms": 300 })))
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Twice, from one worker id: closed each time, counted twice, logged once.
    for _ in 0..2 {
        let (mut ws, _) = tokio_tungstenite::connect_async(sup.ws_url())
            .await
            .unwrap();
        ws.send(Message::text(proto::encode(&hello(&sup, "flooder"))))
            .await
            .unwrap();
        let heartbeat = proto::encode(&WorkerMsg::Heartbeat { progress: vec![] });
        for _ in 0..1000 {
            if ws.send(Message::text(heartbeat.clone())).await.is_err() {
                break;
            }
        }
        let msgs = until_closed(&mut ws).await;
        let e = error_text(&msgs);
        assert!(e.contains("more than 50 messages a second"), "{e}");
    }
    let summary = wait_for_job(&op, &job, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "completed", "{summary:?}");
    let report = op.report(&job).await.unwrap();
    assert_eq!(
        report.reissued, 0,
        "the flood disturbed the pool: {report:?}"
    );
    let text = metrics_text(&sup).await;
    assert!(
        text.contains("idlegrid_refusals_total{cause=\"rate_limit\"} 2\n"),
        "{text}"
    );
    assert_eq!(
        sup.log().matches("cause=\"rate_limit\"").count(),
        1,
        "{}",
        sup.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_say_hello_are_capped_per_address_and_dropped_at_the_deadline() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(
        dir.path(),
        "127.0.0.1:0",
        &["--max-pending-per-ip", "3", "--hello-timeout-ms", "1500"],
    );
    let start = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(
            tokio_tungstenite::connect_async(sup.ws_url())
                .await
                .unwrap()
                .0,
        );
    }
    // A fourth from the same address is refused before any WebSocket.
    match tokio_tungstenite::connect_async(sup.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(
                body.contains("3 connections that have not said hello"),
                "{body}"
            );
        }
        other => panic!(
            "a fourth silent connection was accepted: {:?}",
            other.map(|_| ())
        ),
    }
    // The silent ones are told and closed at the deadline, not before.
    for ws in &mut silent {
        let e = error_text(&until_closed(ws).await);
        assert!(e.contains("no hello within 1500 ms"), "{e}");
    }
    assert!(
        start.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        start.elapsed()
    );
    // Their places are free again: a real worker joins and computes.
    let _worker = WorkerProc::start(&sup, "w1", 1);
    let op = sup.operator();
    let job = op
        .submit(&JobSpec {
            name: "after".into(),
            tasks: vec![TaskSpec::new("a", "spin", serde_json::json!({ "ms": 10 }))],
            ..Default::default()
        })
        .await
        .unwrap();
    let summary = wait_for_job(&op, &job, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "completed", "{summary:?}");
    let text = metrics_text(&sup).await;
    for (cause, n) in [("pending_per_ip", 1), ("hello_timeout", 3)] {
        assert!(
            text.contains(&format!(
                "idlegrid_refusals_total{{cause=\"{cause}\"}} {n}\n"
            )),
            "{cause} {n}: {text}"
        );
    }
    // One line per address and cause, however many refusals.
    assert_eq!(
        sup.log().matches("cause=\"hello_timeout\"").count(),
        1,
        "{}",
        sup.log()
    );
}
