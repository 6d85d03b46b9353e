//! Bad input from outside — malformed and oversized frames, a wrong token, invalid jobs — gets a
//! clear error and leaves every other connection and job as it was.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use idlegrid::job::{JobSpec, TaskSpec};
use idlegrid::operator::{Operator, OperatorError};
use idlegrid::proto::{self, ErrorCode, Hardware, SupervisorMsg, WorkerMsg};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::harness::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(sup: &SupervisorProc) -> Ws {
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    tokio_tungstenite::connect_async_with_config(sup.ws_url(), Some(config), true)
        .await
        .unwrap()
        .0
}

fn hello(token: &str) -> String {
    proto::encode(&WorkerMsg::Hello {
        protocol: proto::PROTOCOL_VERSION,
        worker: "raw-test-client".into(),
        name: "raw".into(),
        token: token.into(),
        hardware: Hardware {
            cores: 1,
            memory_mb: 1,
            disk_mb: 1,
            os: "test".into(),
            slots: 1,
            bench_mops: 0.0,
        },
        held: vec![],
        available: true,
    })
}

/// Reads frames until the supervisor's error message and the close that follows it.
async fn expect_error(ws: &mut Ws) -> (ErrorCode, String) {
    let mut error = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, ws.next()).await {
        match frame {
            Ok(Message::Text(t)) => {
                if let Ok(SupervisorMsg::Error {
                    code,
                    message,
                    fatal,
                }) = proto::decode_supervisor(&t)
                {
                    assert!(fatal);
                    error = Some((code, message));
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    error.expect("an error message before the connection closed")
}

fn spin(id: &str, ms: u64) -> TaskSpec {
    TaskSpec::new(id, "spin", serde_json::json!({ "ms": ms }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_tokens_and_jobs_get_clear_errors_and_harm_nothing_else() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &[]);
    let _workers = start_workers(&sup, 2, 2).await;
    let op = sup.operator();
    let before = worker_names(&op).await;
    // A job that keeps both workers' four slots busy while the bad input arrives.
    let spec = JobSpec {
        name: "bystander".into(),
        tasks: (0..4).map(|i| spin(&format!("s{i}"), 3000)).collect(),
        ..Default::default()
    };
    let job = op.submit(&spec).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "all four tasks running",
        || async {
            let status = op.status(&job).await.ok()?;
            let running = status["task_states"]
                .as_array()?
                .iter()
                .filter(|t| t["state"] == "running")
                .count();
            (running == 4).then_some(())
        },
    )
    .await;
    let token = std::fs::read_to_string(sup.worker_token_file())
        .unwrap()
        .trim()
        .to_owned();

    // A malformed first frame.
    let mut ws = connect(&sup).await;
    ws.send(Message::text("{this is not json")).await.unwrap();
    let (code, message) = expect_error(&mut ws).await;
    assert_eq!(code, ErrorCode::Malformed);
    assert!(message.starts_with("malformed message:"), "{message}");

    // A malformed frame after a valid hello.
    let mut ws = connect(&sup).await;
    ws.send(Message::text(hello(&token))).await.unwrap();
    ws.send(Message::text("{\"type\":\"result\",\"replica\":\"x\"}"))
        .await
        .unwrap();
    let (code, message) = expect_error(&mut ws).await;
    assert_eq!(code, ErrorCode::Malformed);
    assert!(message.contains("malformed message"), "{message}");

    // An oversized frame.
    let mut ws = connect(&sup).await;
    ws.send(Message::text(hello(&token))).await.unwrap();
    let huge = format!(
        "{{\"type\":\"heartbeat\",\"pad\":\"{}\"}}",
        "x".repeat(proto::MAX_FRAME_BYTES + 1024)
    );
    let _ = ws.send(Message::text(huge)).await;
    let (code, message) = expect_error(&mut ws).await;
    assert_eq!(code, ErrorCode::TooLarge, "{message}");
    assert!(message.contains("limit"), "{message}");

    // A wrong token.
    let mut ws = connect(&sup).await;
    ws.send(Message::text(hello("not-the-token")))
        .await
        .unwrap();
    let (code, message) = expect_error(&mut ws).await;
    assert_eq!(code, ErrorCode::Unauthorized);
    assert_eq!(message, "invalid worker token");

    // The real client with a wrong token says so, and keeps asking (a fixed token file is
    // picked up by a restart, a fixed supervisor by the next attempt).
    let bad_token = dir.path().join("bad.token");
    std::fs::write(&bad_token, "wrong\n").unwrap();
    let log_path = dir.path().join("refused.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut refused = std::process::Command::new(CLIENT)
        .args(["--headless", "--server", &sup.ws_url(), "--token-file"])
        .arg(&bad_token)
        .arg("--data-dir")
        .arg(dir.path().join("refused.client"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let said = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("refused this worker: invalid worker token") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused.try_wait().unwrap().is_none(), "exited: {said}");
    refused.kill().unwrap();
    refused.wait().unwrap();

    // An invalid job: a dependency cycle, over the API and through the CLI.
    let mut cyclic = spec.clone();
    cyclic.name = "cyclic".into();
    cyclic.tasks[0].deps = vec!["s1".into()];
    cyclic.tasks[1].deps = vec!["s0".into()];
    match op.submit(&cyclic).await {
        Err(OperatorError::Refused {
            status: 422,
            message,
            ..
        }) => assert!(message.contains("cycle"), "{message}"),
        other => panic!("cyclic job not refused: {other:?}"),
    }
    // A kernel input beyond the kernel's limits is refused at submission, naming the task.
    let mut too_long = spec.clone();
    too_long.name = "too-long".into();
    too_long.tasks[0].input = serde_json::json!({ "ms": 86_400_001 });
    match op.submit(&too_long).await {
        Err(OperatorError::Refused {
            status: 422,
            message,
            ..
        }) => assert!(
            message.contains(&format!("task `{}`", too_long.tasks[0].id))
                && message.contains("\"ms\""),
            "{message}"
        ),
        other => panic!("out-of-range input not refused: {other:?}"),
    }
    let manifest = dir.path().join("cyclic.toml");
    std::fs::write(
        &manifest,
        "name = \"cyclic\"\n[[task]]\nid = \"a\"\nkind = \"spin\"\ninput = { ms = 1 }\ndeps = [\"b\"]\n[[task]]\nid = \"b\"\nkind = \"spin\"\ninput = { ms = 1 }\ndeps = [\"a\"]\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(SUPERVISOR)
        .arg("submit")
        .arg(&manifest)
        .args(["--server", &sup.http_url(), "--token-file"])
        .arg(dir.path().join("operator.token"))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cycle") && stderr.contains("cyclic.toml"),
        "{stderr}"
    );
    // A body that is not a job at all, and a wrong operator token.
    let raw = crate::harness::http()
        .post(format!("{}/api/jobs", sup.http_url()))
        .bearer_auth(sup.operator_token())
        .body("[1,2,3]")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    assert!(raw.text().await.unwrap().contains("not a job spec"));
    let intruder = Operator::new(&sup.http_url(), "wrong").unwrap();
    match intruder.summary(&job).await {
        Err(OperatorError::Refused {
            status: 401,
            message,
            ..
        }) => assert_eq!(message, "invalid operator token"),
        other => panic!("wrong operator token accepted: {other:?}"),
    }

    // Nothing else was touched: the job completes and the same two workers are still live.
    let summary = wait_for_job(&op, &job, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "completed");
    let workers = op.workers().await.unwrap();
    let live: std::collections::BTreeMap<String, String> = workers
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "live")
        .map(|w| {
            (
                w["worker"].as_str().unwrap().to_owned(),
                w["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (id, name) in &before {
        assert_eq!(live.get(id), Some(name), "worker {name} was disturbed");
    }
    let report = op.report(&job).await.unwrap();
    assert!(
        report
            .workers
            .iter()
            .all(|w| before.contains_key(&w.worker)),
        "{report:?}"
    );
    assert_eq!(report.reissued, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_job_is_refused_by_its_size_before_it_is_read() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &[]);
    let body = format!(
        "{{\"name\":\"big\",\"tasks\":[],\"pad\":\"{}\"}}",
        "x".repeat(17 << 20)
    );
    let resp = crate::harness::http()
        .post(format!("{}/api/jobs", sup.http_url()))
        .bearer_auth(sup.operator_token())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let text = resp.text().await.unwrap();
    assert!(text.contains("limit 16777216 bytes"), "{text}");
}
