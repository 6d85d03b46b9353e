//! TLS end to end: a supervisor serving `https://` and `wss://` with a certificate made at test
//! time by a private CA; workers, the operator API and `submit` trusting that CA by `--ca-file`;
//! clients that trust something else refused with words that say what to do.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use idlegrid::job::{JobSpec, TaskSpec};
use idlegrid::operator::Operator;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::io::AsyncReadExt;

use crate::harness::{
    SUPERVISOR, SupervisorProc, WorkerProc, eventually, shared_machine, wait_for_job,
    wait_for_workers,
};

/// A private CA (its certificate in `DIR/NAME-ca.pem`) that can sign server certificates.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: PathBuf,
}

impl TestCa {
    fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, format!("idlegrid test CA {name}"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, issuer.pem()).unwrap();
        Self { issuer, pem }
    }

    /// A certificate for 127.0.0.1 signed by this CA: the paths of its PEM chain and key.
    fn server_cert(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (dir.join("server-cert.pem"), dir.join("server-key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

/// A supervisor serving TLS with a certificate of `ca`.
fn tls_supervisor(dir: &Path, ca: &TestCa) -> SupervisorProc {
    let (cert, key) = ca.server_cert(dir);
    let sup = SupervisorProc::start(
        &dir.join("sup"),
        "127.0.0.1:0",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        sup.tls,
        "the supervisor did not say https:// on its first line"
    );
    sup
}

fn tls_worker(sup: &SupervisorProc, name: &str, ca_file: &Path) -> WorkerProc {
    WorkerProc::start_args(
        sup,
        name,
        1,
        &["--run-while-in-use", "--ca-file", ca_file.to_str().unwrap()],
        &[],
    )
}

fn spin(id: &str, ms: u64) -> TaskSpec {
    TaskSpec::new(id, "spin", serde_json::json!({ "ms": ms }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_over_wss_and_https_with_a_private_ca() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "private");
    let sup = tls_supervisor(dir.path(), &ca);
    assert!(sup.ws_url().starts_with("wss://"), "{}", sup.ws_url());
    let _workers = [
        tls_worker(&sup, "w1", &ca.pem),
        tls_worker(&sup, "w2", &ca.pem),
    ];
    let op = Operator::with_ca_file(&sup.http_url(), &sup.operator_token(), Some(&ca.pem)).unwrap();
    wait_for_workers(&op, 2).await;
    let spec = JobSpec {
        name: "over-tls".into(),
        tasks: (0..4).map(|i| spin(&format!("t{i}"), 50)).collect(),
        ..Default::default()
    };
    let job = op.submit(&spec).await.unwrap();
    let summary = wait_for_job(&op, &job, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "completed", "{summary:?}");
    assert_eq!(summary.tasks_done, 4, "{summary:?}");

    // `submit` from the command line, over https:// with the same CA file.
    let manifest = dir.path().join("job.toml");
    std::fs::write(
        &manifest,
        "name = \"cli-over-tls\"\n[[task]]\nid = \"one\"\nkind = \"spin\"\ninput = { ms = 20 }\n",
    )
    .unwrap();
    let out = Command::new(SUPERVISOR)
        .arg("submit")
        .arg(&manifest)
        .args(["--server", &sup.http_url(), "--wait", "--json"])
        .arg("--ca-file")
        .arg(&ca.pem)
        .arg("--token-file")
        .arg(sup.data_dir.join("operator.token"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "submit failed: {stdout}\n{stderr}");
    assert!(stdout.contains("\"completed\""), "{stdout}\n{stderr}");

    // The port speaks only TLS: plain HTTP to it gets no answer from the API, only a sentence
    // saying what to use instead.
    let plain = Operator::new(&format!("http://{}", sup.addr), &sup.operator_token()).unwrap();
    let e = plain.summary(&job).await.unwrap_err().to_string();
    assert!(
        e.contains("400") && e.contains("this port serves TLS only: use https://"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_another_ca_is_refused_with_a_clear_error_and_others_are_served() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "right");
    let other = TestCa::new(dir.path(), "other");
    let sup = tls_supervisor(dir.path(), &ca);
    let token = sup.operator_token();
    let advice = "is not trusted (unknown issuer); pass --ca-file";

    // The operator API: a wrong CA, and no CA at all (the public roots only).
    for ca_file in [Some(other.pem.as_path()), None] {
        let op = Operator::with_ca_file(&sup.http_url(), &token, ca_file).unwrap();
        let e = op.workers().await.unwrap_err().to_string();
        assert!(
            e.contains("TLS: certificate of 127.0.0.1") && e.contains(advice),
            "{ca_file:?}: {e}"
        );
    }
    let out = Command::new(SUPERVISOR)
        .arg("submit")
        .arg(dir.path().join("never-read.toml"))
        .args(["--server", &sup.http_url()])
        .arg("--ca-file")
        .arg(&other.pem)
        .output()
        .unwrap();
    assert!(!out.status.success());

    // A worker with the wrong CA says why in its log and never joins; one with the right CA
    // joins and computes beside it.
    let _bad = tls_worker(&sup, "bad", &other.pem);
    let _good = tls_worker(&sup, "good", &ca.pem);
    let op = Operator::with_ca_file(&sup.http_url(), &token, Some(&ca.pem)).unwrap();
    let bad_log = sup.data_dir.join("bad.log");
    eventually(
        Duration::from_secs(30),
        "the bad worker's refusal",
        || async {
            let log = std::fs::read_to_string(&bad_log).unwrap_or_default();
            log.contains(advice).then_some(())
        },
    )
    .await;
    let job = op
        .submit(&JobSpec {
            name: "beside-a-refused-worker".into(),
            tasks: vec![spin("a", 20), spin("b", 20)],
            ..Default::default()
        })
        .await
        .unwrap();
    let summary = wait_for_job(&op, &job, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "completed", "{summary:?}");
    let workers = op.workers().await.unwrap();
    let names: Vec<&str> = workers
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, ["good"], "{workers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_starts_its_handshake_is_dropped_and_holds_nothing_up() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "private");
    let sup = tls_supervisor(dir.path(), &ca);
    let op = Operator::with_ca_file(&sup.http_url(), &sup.operator_token(), Some(&ca.pem)).unwrap();
    let start = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(sup.addr).await.unwrap();
    // While it sits there, the API answers.
    op.workers().await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(30), silent.read(&mut buf))
        .await
        .expect("the silent connection was still open after 30 s");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the supervisor sent bytes to a client that said nothing: {read:?}"
    );
    // The handshake deadline (10 s), not some earlier refusal.
    assert!(
        start.elapsed() >= Duration::from_secs(9),
        "dropped after {:?}",
        start.elapsed()
    );
}
