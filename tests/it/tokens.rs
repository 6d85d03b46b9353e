//! Per-volunteer worker tokens: issued and listed by the operator's CLI, stored as digests, a
//! worker id bound to the first volunteer token that uses it, and a revocation that disconnects
//! that volunteer's worker at once and reissues its task while everyone else carries on.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use idlegrid::job::{JobSpec, TaskSpec};
use idlegrid::proto::{self, SupervisorMsg};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// Says hello as `worker` with `token` and returns the supervisor's first answer.
async fn hello_answer(sup: &SupervisorProc, worker: &str, token: &str) -> SupervisorMsg {
    let (mut ws, _) = tokio_tungstenite::connect_async(sup.ws_url())
        .await
        .unwrap();
    let hello = test_hello(worker, token, vec![], true);
    ws.send(Message::text(proto::encode(&hello))).await.unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer within 10 s")
            .expect("an answer, not the end of the connection")
            .unwrap();
        if let Message::Text(t) = frame {
            return proto::decode_supervisor(&t).unwrap();
        }
    }
}

/// The id a client keeps in its data dir.
fn worker_id_of(sup: &SupervisorProc, name: &str) -> String {
    let path = sup
        .data_dir
        .join(format!("{name}.client"))
        .join("worker-id");
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_volunteer_token_disconnects_its_worker_at_once_and_its_task_is_reissued() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &["--heartbeat-ms", "100"]);
    let op = sup.operator();

    // Issued by the CLI: the token alone on stdout, kept only as a digest.
    let (ok, token, err) = supervisor_cli(&sup, &["token", "issue", "--name", "alice"]).await;
    assert!(ok, "{err}");
    let token = token.trim().to_owned();
    assert_eq!(token.len(), 64, "{token}");
    let alice_file = dir.path().join("alice.token");
    std::fs::write(&alice_file, &token).unwrap();
    for file in ["idlegrid.sqlite3", "idlegrid.sqlite3-wal"] {
        let bytes = std::fs::read(sup.data_dir.join(file)).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&token),
            "the token itself is in {file}"
        );
    }
    let digest = idlegrid::supervisor::volunteers::digest(&token);
    let wal = std::fs::read(sup.data_dir.join("idlegrid.sqlite3-wal")).unwrap_or_default();
    let db = std::fs::read(sup.data_dir.join("idlegrid.sqlite3")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&wal).contains(&digest)
            || String::from_utf8_lossy(&db).contains(&digest),
        "the digest is not stored either: the check above proves nothing"
    );
    let (ok, _, err) = supervisor_cli(&sup, &["token", "issue", "--name", "../bob"]).await;
    assert!(
        !ok && err.contains("invalid volunteer name \"../bob\""),
        "{err}"
    );

    let _alice = WorkerProc::start_with_token(
        &sup,
        "alice-desk",
        1,
        &alice_file,
        &["--run-while-in-use"],
        &[],
    );
    let _other = WorkerProc::start(&sup, "shared-1", 1);
    wait_for_live_workers(&op, 2).await;
    let alice_id = worker_id_of(&sup, "alice-desk");

    let (ok, out, err) = supervisor_cli(&sup, &["token", "list", "--json"]).await;
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["name"], "alice", "{list}");
    assert_eq!(list[0]["connected"], 1, "{list}");
    assert_eq!(list[0]["workers"][0], alice_id.as_str(), "{list}");
    assert!(
        list[0].get("sha256").is_none() && !out.contains(&token),
        "{out}"
    );

    // Alice's id is hers now: the shared token cannot take it, nor can another volunteer.
    let shared = std::fs::read_to_string(sup.worker_token_file()).unwrap();
    match hello_answer(&sup, &alice_id, shared.trim()).await {
        SupervisorMsg::Error { message, .. } => {
            assert!(
                message.contains("belongs to another volunteer"),
                "{message}"
            )
        }
        other => panic!("the shared token took alice's worker id: {other:?}"),
    }
    let (_, mallory, _) = supervisor_cli(&sup, &["token", "issue", "--name", "mallory"]).await;
    match hello_answer(&sup, &alice_id, mallory.trim()).await {
        SupervisorMsg::Error { message, .. } => {
            assert!(
                message.contains("belongs to another volunteer"),
                "{message}"
            )
        }
        other => panic!("mallory took alice's worker id: {other:?}"),
    }

    // One task each; alice's is running on her machine when her token is revoked.
    let spec = JobSpec {
        name: "revoke".into(),
        tasks: vec![
            TaskSpec::new("a", "spin", serde_json::json!({ "ms": 3000 })),
            TaskSpec::new("b", "spin", serde_json::json!({ "ms": 3000 })),
        ],
        ..Default::default()
    };
    let job = op.submit(&spec).await.unwrap();
    eventually(
        Duration::from_secs(20),
        "a replica running on alice's worker",
        || async {
            let replicas = replica_progress(&op, &job).await?;
            replicas
                .iter()
                .any(|(w, p)| *w == alice_id && *p > 0.0)
                .then_some(())
        },
    )
    .await;
    let revoked_at = Instant::now();
    let (ok, out, err) = supervisor_cli(&sup, &["token", "revoke", "alice"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("1 worker(s) disconnected") && out.contains(&alice_id),
        "{out}"
    );
    // At once: by the time the revocation is answered, no replica is on her worker any more.
    let replicas = replica_progress(&op, &job).await.unwrap();
    let on_alice = replicas.iter().filter(|(w, _)| *w == alice_id).count();
    assert_eq!(on_alice, 0, "{replicas:?}");
    // Reissued as soon as the other worker has a free slot (its own task takes 3 s).
    let reissue = eventually(Duration::from_secs(10), "alice's task reissued", || async {
        let report = op.report(&job).await.ok()?;
        report.reissues.into_iter().next()
    })
    .await;
    assert_eq!(reissue.cause, "left", "{reissue:?}");
    assert!(reissue.why.contains(&alice_id), "{reissue:?}");
    assert_ne!(reissue.worker, alice_id, "{reissue:?}");
    eprintln!("revocation to reissue: {:?}", revoked_at.elapsed());

    let summary = wait_for_job(&op, &job, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "completed", "{summary:?}");
    let report = op.report(&job).await.unwrap();
    assert_eq!(
        report.reissued, 1,
        "only alice's task was reissued: {report:?}"
    );

    // Her client is told why, keeps asking and keeps being refused; the other never noticed.
    let alice_log = sup.data_dir.join("alice-desk.log");
    eventually(
        Duration::from_secs(20),
        "alice's client says why",
        || async {
            let log = std::fs::read_to_string(&alice_log).ok()?;
            log.contains("was revoked by the operator").then_some(())
        },
    )
    .await;
    let workers = op.workers().await.unwrap();
    let names: Vec<&str> = workers
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "live")
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, ["shared-1"], "{workers}");
    let other_log = std::fs::read_to_string(sup.data_dir.join("shared-1.log")).unwrap();
    assert_eq!(
        other_log.matches("connected to supervisor").count(),
        1,
        "the shared worker was disturbed: {other_log}"
    );
    let (ok, out, _) = supervisor_cli(&sup, &["token", "list"]).await;
    assert!(
        ok && out.contains("alice") && out.contains("revoked"),
        "{out}"
    );
}
