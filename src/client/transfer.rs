//! Out-of-band transfers over HTTP on the supervisor's port, for payloads above
//! `BULK_THRESHOLD_BYTES`, so the WebSocket keeps carrying heartbeats and `Activity` promptly:
//!
//! - a big result goes up in chunks with `PUT /worker/uploads/{replica}?offset=N`, resuming from
//!   the server's `received` after an interruption (`GET /worker/uploads/{replica}`);
//! - a dependency output comes down with `GET /worker/outputs/{job}/{task}`, resuming with
//!   `Range: bytes=N-`, and is checked against its length and SHA-256.
//!
//! Each call retries transient trouble (connection errors, 5xx) with backoff and returns the
//! errors that retrying cannot fix. Knows HTTP and nothing about the engine.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use tracing::debug;

use crate::proto::{BlobRef, JobId, ReplicaId, TaskId, WORKER_HEADER, WorkerId, sha256_hex};
use crate::tls::ClientTls;

/// Bytes per `PUT`: what an interrupted upload may have to send again.
pub const UPLOAD_CHUNK_BYTES: usize = 1 << 20;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(10);
/// Attempts in a row without progress before a transfer gives up.
const ATTEMPTS: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("the supervisor refused the transfer ({status}): {body}")]
    Refused { status: StatusCode, body: String },
    /// A certificate this worker does not trust: retrying cannot fix it.
    #[error("{0}")]
    Untrusted(String),
    #[error("{0}")]
    Failed(String),
}

/// The supervisor's HTTP side, as this worker.
#[derive(Debug, Clone)]
pub struct Transfer {
    http: reqwest::Client,
    base: String,
    token: String,
    worker: WorkerId,
}

#[derive(Deserialize)]
struct Received {
    received: u64,
}

/// `ws://h:p/worker` → `http://h:p`; `wss://h:p/worker` → `https://h:p`.
pub fn http_base(ws_url: &str) -> Option<String> {
    let (scheme, rest) = match ws_url.strip_prefix("wss://") {
        Some(rest) => ("https", rest),
        None => ("http", ws_url.strip_prefix("ws://")?),
    };
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}"))
}

impl Transfer {
    /// Transfers for the supervisor at `ws_url`, trusting what `tls` does over `https://`.
    /// Fails only when the HTTP client cannot start with that TLS configuration.
    pub fn new(
        ws_url: &str,
        token: String,
        worker: WorkerId,
        tls: &ClientTls,
    ) -> Result<Self, reqwest::Error> {
        let http = tls.http_client(REQUEST_TIMEOUT)?;
        Ok(Self {
            http,
            // `check_server_url` vetted the URL before the engine was built.
            base: http_base(ws_url).unwrap_or_else(|| "http://127.0.0.1".into()),
            token,
            worker,
        })
    }

    /// A request that failed before an answer: a TLS failure in words, or the error.
    fn failed(&self, e: reqwest::Error) -> TransferError {
        match crate::tls::describe_failure(&e, crate::tls::url_host(&self.base)) {
            Some(why) => TransferError::Untrusted(why),
            None => TransferError::Failed(e.to_string()),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header(WORKER_HEADER, &self.worker.0)
    }

    /// Uploads a result's JSON text, from wherever the supervisor says it has got to.
    pub async fn upload(&self, replica: ReplicaId, text: &[u8]) -> Result<(), TransferError> {
        let path = format!("/worker/uploads/{}", replica.key());
        let total = text.len() as u64;
        let mut offset: Option<u64> = None;
        let mut retry = Retry::new();
        loop {
            let at = match offset {
                Some(n) => n,
                None => match self.uploaded(&path).await {
                    Ok(n) => n,
                    Err(e) => {
                        retry.wait(e).await?;
                        continue;
                    }
                },
            };
            offset = Some(at);
            if at >= total {
                debug!(%replica, bytes = total, "upload complete");
                return Ok(());
            }
            let end = (at as usize + UPLOAD_CHUNK_BYTES).min(text.len());
            let chunk = text[at as usize..end].to_vec();
            let sent = self
                .request(reqwest::Method::PUT, &format!("{path}?offset={at}"))
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(chunk)
                .send()
                .await;
            match sent {
                Err(e) => {
                    offset = None;
                    retry.wait(self.failed(e)).await?;
                }
                Ok(resp) if resp.status() == StatusCode::OK => {
                    match resp.json::<Received>().await {
                        Ok(r) => {
                            offset = Some(r.received);
                            retry = Retry::new();
                        }
                        Err(e) => {
                            offset = None;
                            retry.wait(TransferError::Failed(e.to_string())).await?;
                        }
                    }
                }
                // The server got more or less than we thought: carry on from what it has.
                Ok(resp) if resp.status() == StatusCode::CONFLICT => {
                    offset = resp.json::<Received>().await.ok().map(|r| r.received);
                    retry
                        .wait(TransferError::Failed("offset conflict".into()))
                        .await?;
                }
                Ok(resp) => retry.wait(refusal(resp).await).await?,
            }
        }
    }

    async fn uploaded(&self, path: &str) -> Result<u64, TransferError> {
        let resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| self.failed(e))?;
        if resp.status() != StatusCode::OK {
            return Err(refusal(resp).await);
        }
        resp.json::<Received>()
            .await
            .map(|r| r.received)
            .map_err(|e| TransferError::Failed(format!("bad upload status: {e}")))
    }

    /// Downloads a dependency's output and checks it against `blob`.
    pub async fn download(
        &self,
        job: &JobId,
        task: &TaskId,
        blob: &BlobRef,
    ) -> Result<serde_json::Value, TransferError> {
        let path = format!("/worker/outputs/{job}/{task}");
        let mut text: Vec<u8> = Vec::new();
        let mut retry = Retry::new();
        loop {
            if text.len() as u64 >= blob.bytes {
                break;
            }
            let mut req = self.request(reqwest::Method::GET, &path);
            if !text.is_empty() {
                req = req.header(reqwest::header::RANGE, format!("bytes={}-", text.len()));
            }
            let mut resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    retry.wait(self.failed(e)).await?;
                    continue;
                }
            };
            match resp.status() {
                StatusCode::OK => text.clear(),
                StatusCode::PARTIAL_CONTENT => {}
                _ => {
                    retry.wait(refusal(resp).await).await?;
                    continue;
                }
            }
            loop {
                match resp.chunk().await {
                    Ok(Some(bytes)) => {
                        if (text.len() + bytes.len()) as u64 > blob.bytes {
                            return Err(TransferError::Failed(format!(
                                "the output of {task} is longer than its {} bytes",
                                blob.bytes
                            )));
                        }
                        text.extend_from_slice(&bytes);
                        retry = Retry::new();
                    }
                    Ok(None) => break,
                    Err(e) => {
                        retry.wait(TransferError::Failed(e.to_string())).await?;
                        break;
                    }
                }
            }
        }
        if sha256_hex(&text) != blob.sha256 {
            return Err(TransferError::Failed(format!(
                "the output of {task} does not match its sha256"
            )));
        }
        serde_json::from_slice(&text)
            .map_err(|e| TransferError::Failed(format!("the output of {task} is not JSON: {e}")))
    }
}

async fn refusal(resp: reqwest::Response) -> TransferError {
    let status = resp.status();
    let body: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect();
    if status.is_server_error() {
        TransferError::Failed(format!("{status}: {body}"))
    } else {
        TransferError::Refused { status, body }
    }
}

/// Backoff for one transfer: a refusal (4xx) ends it at once, other trouble is retried a few
/// times in a row.
struct Retry {
    left: u32,
    wait: Duration,
}

impl Retry {
    fn new() -> Self {
        Self {
            left: ATTEMPTS,
            wait: FIRST_RETRY,
        }
    }

    async fn wait(&mut self, e: TransferError) -> Result<(), TransferError> {
        if matches!(
            e,
            TransferError::Refused { .. } | TransferError::Untrusted(_)
        ) || self.left == 0
        {
            return Err(e);
        }
        debug!(
            "transfer interrupted: {e}; retrying in {} ms",
            self.wait.as_millis()
        );
        self.left -= 1;
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(MAX_RETRY);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_base_is_the_websocket_host_and_port() {
        assert_eq!(
            http_base("ws://127.0.0.1:7400/worker").as_deref(),
            Some("http://127.0.0.1:7400")
        );
        assert_eq!(http_base("ws://h:1").as_deref(), Some("http://h:1"));
        assert_eq!(
            http_base("wss://grid.example:7400/worker").as_deref(),
            Some("https://grid.example:7400")
        );
        assert_eq!(http_base("ws:///worker"), None);
        assert_eq!(http_base("wss:///worker"), None);
        assert_eq!(http_base("http://h:1"), None);
    }
}
