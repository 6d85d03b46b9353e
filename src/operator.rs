//! The operator's side of the supervisor's HTTP API: submit a job, follow it, fetch its report,
//! results and files. Used by `idlegrid-supervisor submit`, the demo, the benches and tests.
//!
//! Only HTTP lives here; the API's shape is defined by `supervisor::http`.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::job::JobSpec;
use crate::proto::{JobId, TaskId};
use crate::supervisor::report::{JobSummary, Report};

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(
        "invalid server URL {url:?}: it must start with http:// or https://, e.g. http://127.0.0.1:7400"
    )]
    BadUrl { url: String },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot reach the supervisor at {url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    /// A TLS failure, in words that say what to do (`tls::describe_failure`).
    #[error("cannot reach the supervisor at {url}: {message}")]
    Untrusted { url: String, message: String },
    #[error("the supervisor answered {status} to {what}: {message}")]
    Refused {
        what: String,
        status: u16,
        message: String,
    },
    #[error("the supervisor's answer to {what} is not what this client expects: {source}")]
    Decode {
        what: String,
        source: serde_json::Error,
    },
}

/// Size of the pieces a job's JSON is sent in.
const SUBMIT_CHUNK_BYTES: usize = 64 << 10;

/// Writes into pieces of `SUBMIT_CHUNK_BYTES` for a streamed request body.
struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send_chunk(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(SUBMIT_CHUNK_BYTES));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the request ended before the job was sent",
            )
        })
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= SUBMIT_CHUNK_BYTES {
            self.send_chunk()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A client of one supervisor's API.
#[derive(Clone)]
pub struct Operator {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Operator {
    /// `server` is the supervisor's HTTP address, `http://HOST:PORT` (or `https://`, trusting
    /// the public roots).
    pub fn new(server: &str, token: &str) -> Result<Self, OperatorError> {
        Self::with_ca_file(server, token, None)
    }

    /// As [`Self::new`], trusting the certificates of `ca_file` (a private CA) besides the
    /// public roots for an `https://` server.
    pub fn with_ca_file(
        server: &str,
        token: &str,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, OperatorError> {
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(OperatorError::BadUrl {
                url: server.to_owned(),
            });
        }
        let http = crate::tls::ClientTls::new(ca_file)?
            .http_client(Duration::from_secs(60))
            .map_err(|source| OperatorError::Transport {
                url: server.to_owned(),
                source,
            })?;
        Ok(Self {
            base: server.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<reqwest::Body>,
    ) -> Result<Vec<u8>, OperatorError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let transport = |source: reqwest::Error| match crate::tls::describe_failure(
            &source,
            crate::tls::url_host(&self.base),
        ) {
            Some(message) => OperatorError::Untrusted {
                url: url.clone(),
                message,
            },
            None => OperatorError::Transport {
                url: url.clone(),
                source,
            },
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?.to_vec();
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
        Err(OperatorError::Refused {
            what: format!("{method} {path}"),
            status: status.as_u16(),
            message,
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, OperatorError> {
        let bytes = self.call(reqwest::Method::GET, path, None).await?;
        serde_json::from_slice(&bytes).map_err(|source| OperatorError::Decode {
            what: format!("GET {path}"),
            source,
        })
    }

    async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: String,
    ) -> Result<T, OperatorError> {
        let body = (!body.is_empty()).then(|| reqwest::Body::from(body));
        let bytes = self.call(reqwest::Method::POST, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|source| OperatorError::Decode {
            what: format!("POST {path}"),
            source,
        })
    }

    /// Submits a job; returns its id once the supervisor has stored it.
    pub async fn submit(&self, spec: &JobSpec) -> Result<JobId, OperatorError> {
        self.submit_owned(spec.clone()).await
    }

    /// Submits a job, streaming its JSON as it is written (in `SUBMIT_CHUNK_BYTES` pieces, on a
    /// blocking thread): a job of 100,000 tasks is never held as a whole JSON text as well.
    pub async fn submit_owned(&self, spec: JobSpec) -> Result<JobId, OperatorError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
        tokio::task::spawn_blocking(move || {
            let mut out = ChunkSender {
                tx,
                buf: Vec::with_capacity(SUBMIT_CHUNK_BYTES),
            };
            let written = serde_json::to_writer(&mut out, &spec)
                .map_err(std::io::Error::other)
                .and_then(|()| out.send_chunk());
            if let Err(e) = written {
                // The request fails with this error (unless it has already ended).
                let _ = out.tx.blocking_send(Err(e));
            }
        });
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        let bytes = self
            .call(
                reqwest::Method::POST,
                "/api/jobs",
                Some(reqwest::Body::wrap_stream(chunks)),
            )
            .await?;
        #[derive(serde::Deserialize)]
        struct Created {
            job_id: JobId,
        }
        let created: Created =
            serde_json::from_slice(&bytes).map_err(|source| OperatorError::Decode {
                what: "POST /api/jobs".into(),
                source,
            })?;
        Ok(created.job_id)
    }

    /// A new token for volunteer `name` (the only time the token is shown).
    pub async fn issue_token(
        &self,
        name: &str,
    ) -> Result<crate::supervisor::IssuedToken, OperatorError> {
        let body = serde_json::json!({ "name": name }).to_string();
        self.post_json("/api/tokens", body).await
    }

    /// Revokes volunteer `name`'s token: its workers are disconnected and their tasks reissued.
    pub async fn revoke_token(
        &self,
        name: &str,
    ) -> Result<crate::supervisor::Revoked, OperatorError> {
        self.post_json(&format!("/api/tokens/{name}/revoke"), String::new())
            .await
    }

    /// Every volunteer token: name, dates, worker ids, how many are connected.
    pub async fn tokens(&self) -> Result<Vec<crate::supervisor::TokenView>, OperatorError> {
        self.get("/api/tokens").await
    }

    /// The newest jobs (up to 1000), newest first.
    pub async fn jobs(&self) -> Result<Vec<JobSummary>, OperatorError> {
        self.get("/api/jobs").await
    }

    pub async fn summary(&self, job: &JobId) -> Result<JobSummary, OperatorError> {
        self.get(&format!("/api/jobs/{job}/summary")).await
    }

    /// The full status (summary and per-task replicas) as JSON.
    pub async fn status(&self, job: &JobId) -> Result<serde_json::Value, OperatorError> {
        self.get(&format!("/api/jobs/{job}")).await
    }

    pub async fn report(&self, job: &JobId) -> Result<Report, OperatorError> {
        self.get(&format!("/api/jobs/{job}/report")).await
    }

    pub async fn results(&self, job: &JobId) -> Result<serde_json::Value, OperatorError> {
        self.get(&format!("/api/jobs/{job}/results")).await
    }

    pub async fn result(
        &self,
        job: &JobId,
        task: &TaskId,
    ) -> Result<serde_json::Value, OperatorError> {
        self.get(&format!("/api/jobs/{job}/results/{task}")).await
    }

    /// The file carried by a task's output, as bytes.
    pub async fn file(&self, job: &JobId, task: &TaskId) -> Result<Vec<u8>, OperatorError> {
        self.call(
            reqwest::Method::GET,
            &format!("/api/jobs/{job}/files/{task}"),
            None,
        )
        .await
    }

    pub async fn cancel(&self, job: &JobId) -> Result<JobSummary, OperatorError> {
        let path = format!("/api/jobs/{job}/cancel");
        let bytes = self.call(reqwest::Method::POST, &path, None).await?;
        serde_json::from_slice(&bytes).map_err(|source| OperatorError::Decode {
            what: format!("POST {path}"),
            source,
        })
    }

    pub async fn workers(&self) -> Result<serde_json::Value, OperatorError> {
        self.get("/api/workers").await
    }

    /// The supervisor's counters: refused worker reports, results not stored, reissues by cause.
    pub async fn stats(&self) -> Result<serde_json::Value, OperatorError> {
        self.get("/api/stats").await
    }

    /// The newest `Activity` messages the supervisor recorded, newest first.
    pub async fn activity(
        &self,
    ) -> Result<Vec<crate::supervisor::store::ActivityRecord>, OperatorError> {
        self.get("/api/activity").await
    }

    /// Polls until the job finishes, calling `progress` with each summary; returns the report.
    pub async fn wait(
        &self,
        job: &JobId,
        mut progress: impl FnMut(&JobSummary),
    ) -> Result<Report, OperatorError> {
        loop {
            let summary = self.summary(job).await?;
            progress(&summary);
            if summary.is_finished() {
                return self.report(job).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
