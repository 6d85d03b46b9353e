//! The supervisor measures each worker's link over its WebSocket (a timed transfer both ways) at
//! join and every `link_probe`; workers below `min_link_kbps` stay connected and get no tasks.
//! An in-process supervisor and in-process workers, with a throttling proxy between them.

use std::time::{Duration, Instant};

use idlegrid::bench::proxy::{Mode, Proxy};
use idlegrid::job::{JobSpec, TaskSpec};
use idlegrid::operator::Operator;
use idlegrid::proto::WorkerId;
use idlegrid::sched::Link;
use idlegrid::supervisor::{Event, Supervisor, next_event};
use tokio::sync::broadcast;

use crate::harness::*;

struct Pool {
    sup: Supervisor,
    cfg: idlegrid::supervisor::Config,
    _dir: tempfile::TempDir,
}

impl Pool {
    async fn start(heartbeat: Duration, probe_every: Duration, min_link_kbps: f64) -> Pool {
        let dir = tempfile::tempdir().unwrap();
        let sched = idlegrid::sched::Config {
            heartbeat,
            min_link_kbps,
            ..Default::default()
        };
        let mut cfg = idlegrid::supervisor::Config::with_tokens_in(dir.path(), sched).unwrap();
        cfg.link_probe = Some(probe_every);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sup = Supervisor::start(listener, cfg.clone()).await.unwrap();
        Pool {
            sup,
            cfg,
            _dir: dir,
        }
    }

    fn operator(&self) -> Operator {
        Operator::new(
            &format!("http://{}", self.sup.addr()),
            &self.cfg.operator_token,
        )
        .unwrap()
    }

    /// A proxy in front of the supervisor, in `mode`.
    fn proxy(&self, mode: Mode) -> Proxy {
        let p = Proxy::start(self.sup.addr()).unwrap();
        p.set_mode(mode);
        p
    }

    /// A one-slot worker connecting to `addr` (the supervisor or a proxy); stops when the
    /// returned sender drops.
    async fn worker(&self, name: &str, addr: std::net::SocketAddr) -> (WorkerId, Stop) {
        let worker_id = idlegrid::client::new_worker_id(name);
        let engine = idlegrid::client::build(
            idlegrid::client::ClientConfig {
                server: Some(format!("ws://{addr}/worker")),
                ca_file: None,
                token: self.cfg.worker_token.clone(),
                name: name.into(),
                worker_id: worker_id.clone(),
                slots: 1,
                data_dir: None,
            },
            idlegrid::client::Watch::always(),
        )
        .await
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(engine.run(async {
            let _ = stopped.await;
        }));
        (worker_id, Stop(Some(stop)))
    }
}

struct Stop(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            let _ = s.send(());
        }
    }
}

/// The next link measurement of `worker`; panics on a loss of it meanwhile.
async fn next_link(
    events: &mut broadcast::Receiver<Event>,
    worker: &WorkerId,
    limit: Duration,
) -> (Link, Duration, bool) {
    let deadline = Instant::now() + limit;
    loop {
        match next_event(events, deadline).await {
            Ok(Event::LinkMeasured {
                worker: w,
                link,
                rtt,
                cut_short,
            }) if w == *worker => return (link, rtt, cut_short),
            Ok(Event::WorkerLost { worker: w, cause }) if w == *worker => {
                panic!("{w} was lost while its link was probed: {cause}")
            }
            Ok(_) => {}
            Err(e) => panic!("no link measurement of {worker} within {limit:?}: {e}"),
        }
    }
}

fn assert_near(what: &str, measured: f64, want: f64, tolerance: f64) {
    assert!(
        (measured - want).abs() <= want * tolerance,
        "{what}: measured {measured:.0} kbit/s, the link is {want:.0} kbit/s (tolerance {:.0}%)",
        tolerance * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_mbit_link_is_measured_both_ways_within_15_percent_and_a_direct_one_far_faster() {
    let _machine = shared_machine().await;
    let pool = Pool::start(Duration::from_secs(1), Duration::from_secs(600), 100.0).await;
    let mut events = pool.sup.subscribe();
    // 2 Mbit/s = 250,000 bytes a second, each way.
    let proxy = pool.proxy(Mode::Throttle {
        bytes_per_s: 250_000,
    });
    let (slow, _s1) = pool.worker("slow", proxy.addr()).await;
    let started = Instant::now();
    let (link, rtt, cut_short) = next_link(&mut events, &slow, Duration::from_secs(20)).await;
    let took = started.elapsed();
    println!(
        "2 Mbit/s link: down {:.0} kbit/s, up {:.0} kbit/s, rtt {rtt:?}, measured {took:?} after start",
        link.down_kbps, link.up_kbps
    );
    assert!(!cut_short, "{link:?}");
    assert_near("down", link.down_kbps, 2000.0, 0.15);
    assert_near("up", link.up_kbps, 2000.0, 0.15);
    assert!(took < Duration::from_secs(5), "the probe took {took:?}");

    // The same pool without the proxy: loopback, far beyond 2 Mbit/s, and quick.
    let (fast, _s2) = pool.worker("fast", pool.sup.addr()).await;
    let started = Instant::now();
    let (link, rtt, _) = next_link(&mut events, &fast, Duration::from_secs(20)).await;
    let took = started.elapsed();
    println!(
        "loopback: down {:.0} kbit/s, up {:.0} kbit/s, rtt {rtt:?}, measured {took:?} after start",
        link.down_kbps, link.up_kbps
    );
    assert!(
        link.kbps() > 100_000.0,
        "loopback measured below 100 Mbit/s: {link:?}"
    );
    assert!(took < Duration::from_secs(2), "the probe took {took:?}");
    // Both are connected and the API shows them live.
    let op = pool.operator();
    wait_for_workers(&op, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_below_the_minimum_link_stays_connected_and_gets_no_task_while_a_fast_one_does_the_job()
 {
    let _machine = shared_machine().await;
    let pool = Pool::start(Duration::from_secs(1), Duration::from_secs(600), 100.0).await;
    let mut events = pool.sup.subscribe();
    // 50 kbit/s: half the pool's minimum.
    let proxy = pool.proxy(Mode::Throttle { bytes_per_s: 6_250 });
    let (slow, _s1) = pool.worker("slow", proxy.addr()).await;
    let (fast, _s2) = pool.worker("fast", pool.sup.addr()).await;
    let op = pool.operator();
    wait_for_live_workers(&op, 2).await;
    let spec = JobSpec {
        name: "six".into(),
        tasks: (0..6)
            .map(|i| TaskSpec::new(format!("t{i}"), "spin", serde_json::json!({ "ms": 300 })))
            .collect(),
        ..Default::default()
    };
    let job = op.submit(&spec).await.unwrap();
    let mut slow_link = None;
    let mut assigned = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match next_event(&mut events, deadline).await.unwrap() {
            Event::LinkMeasured { worker, link, .. } if worker == slow => slow_link = Some(link),
            Event::Assigned { worker, .. } => assigned.push(worker),
            Event::WorkerLost { worker, cause } => panic!("{worker} lost: {cause}"),
            Event::JobFinished { job: j, state } if j == job => {
                assert_eq!(state, "completed");
                break;
            }
            _ => {}
        }
    }
    assert!(
        assigned.iter().all(|w| *w == fast),
        "a task went to the slow worker: {assigned:?}"
    );
    assert_eq!(assigned.len(), 6);
    // Its link was measured (the probe takes several seconds at this speed) and is below the
    // minimum; it is still connected.
    let link = match slow_link {
        Some(l) => l,
        None => {
            next_link(&mut events, &slow, Duration::from_secs(20))
                .await
                .0
        }
    };
    println!(
        "50 kbit/s link: down {:.0} kbit/s, up {:.0} kbit/s",
        link.down_kbps, link.up_kbps
    );
    assert!(link.kbps() < 100.0, "{link:?}");
    assert_near("slow link", link.kbps(), 50.0, 0.3);
    let workers = op.workers().await.unwrap();
    let state = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worker"] == slow.0.as_str())
        .map(|w| w["state"].clone());
    assert_eq!(state, Some(serde_json::json!("live")), "{workers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probing_a_200_kbit_link_every_few_seconds_never_makes_its_worker_look_lost() {
    let _machine = shared_machine().await;
    // Heartbeats every 500 ms: lost after 1.5 s of silence. A probe every 2 s.
    let pool = Pool::start(Duration::from_millis(500), Duration::from_secs(2), 100.0).await;
    let mut events = pool.sup.subscribe();
    let proxy = pool.proxy(Mode::Throttle {
        bytes_per_s: 25_000,
    });
    let (worker, _stop) = pool.worker("thin", proxy.addr()).await;
    let started = Instant::now();
    let mut measured = Vec::new();
    // Four probes back to back (each about 1.5 s at this speed, 2 s apart): next_link panics
    // on a loss of the worker in between.
    while measured.len() < 4 {
        let (link, _, cut_short) = next_link(&mut events, &worker, Duration::from_secs(20)).await;
        assert!(!cut_short, "{link:?}");
        measured.push(link);
    }
    println!(
        "200 kbit/s, 4 probes in {:?}: {:?}",
        started.elapsed(),
        measured
            .iter()
            .map(|l| (l.down_kbps.round(), l.up_kbps.round()))
            .collect::<Vec<_>>()
    );
    for l in &measured {
        assert_near("down", l.down_kbps, 200.0, 0.2);
        assert_near("up", l.up_kbps, 200.0, 0.2);
    }
    // The worker is live and was never reconnected (one join).
    let op = pool.operator();
    wait_for_workers(&op, 1).await;
    assert_eq!(proxy.connections(), 1);
}

/// A raw WebSocket client that says hello as `id` and reads up to the welcome.
async fn raw_join(
    pool: &Pool,
    id: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::{SinkExt, StreamExt};
    use idlegrid::proto::{self, SupervisorMsg};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{}/worker", pool.sup.addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello = crate::harness::test_hello(id, &pool.cfg.worker_token, vec![], true);
    ws.send(Message::text(proto::encode(&hello))).await.unwrap();
    loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await
            && matches!(
                proto::decode_supervisor(&t),
                Ok(SupervisorMsg::Welcome { .. })
            )
        {
            return ws;
        }
    }
}

/// Reads until the supervisor's fatal error; its message.
async fn fatal_error(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> String {
    use futures_util::StreamExt;
    use idlegrid::proto::{self, SupervisorMsg};
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Text(t) = frame
            && let Ok(SupervisorMsg::Error { message, fatal, .. }) = proto::decode_supervisor(&t)
        {
            assert!(fatal, "{message}");
            return message;
        }
    }
    panic!("no error before the connection ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_not_asked_for_and_probe_answers_with_a_wrong_nonce_close_that_connection_and_are_counted()
 {
    use futures_util::{SinkExt, StreamExt};
    use idlegrid::proto::{self, SupervisorMsg, WorkerMsg};
    use tokio_tungstenite::tungstenite::Message;
    let _machine = shared_machine().await;
    let pool = Pool::start(Duration::from_secs(1), Duration::from_secs(600), 100.0).await;
    let op = pool.operator();
    let (good, _stop) = pool.worker("good", pool.sup.addr()).await;

    // Binary frames nobody asked for (the probe has not sent its ping yet, or is waiting for
    // the pong).
    let mut ws = raw_join(&pool, "raw-binary").await;
    ws.send(Message::binary(vec![7u8; 100])).await.unwrap();
    let message = fatal_error(&mut ws).await;
    assert!(message.contains("binary frame not asked for"), "{message}");

    // A pong with a nonce that was not asked for.
    let mut ws = raw_join(&pool, "raw-nonce").await;
    let nonce = loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await
            && let Ok(SupervisorMsg::LinkPing { nonce }) = proto::decode_supervisor(&t)
        {
            break nonce;
        }
    };
    let wrong = WorkerMsg::LinkPong { nonce: nonce + 100 };
    ws.send(Message::text(proto::encode(&wrong))).await.unwrap();
    let message = fatal_error(&mut ws).await;
    assert!(
        message.contains(&format!("link_pong for link probe {}", nonce + 100))
            && message.contains("not asked for"),
        "{message}"
    );

    // Both counted; the well-behaved worker was measured and is still live.
    let stats = eventually(Duration::from_secs(10), "two refusals counted", || async {
        let s = op.stats().await.ok()?;
        (s["refused"]["link_probe"] == 2).then_some(s)
    })
    .await;
    println!("{stats}");
    let workers = op.workers().await.unwrap();
    let live: Vec<&str> = workers
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "live")
        .filter_map(|w| w["worker"].as_str())
        .collect();
    assert_eq!(live, vec![good.0.as_str()], "{workers}");
}
