//! One worker's WebSocket connection: the upgrade, the hello checks (protocol version, token,
//! sane fields), then frames in both directions between the socket and the driver.
//!
//! A bad frame (malformed, binary, too large, out of order) gets an `Error` message and closes
//! this connection only; the driver then treats the worker as disconnected. Nothing here decides
//! anything about tasks.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, info, warn};

use super::auth::token_matches;
use super::driver::{ConnId, DriverMsg, Hello, Outgoing, Upload};
use crate::proto::{self, BlobRef, ErrorCode, Payload, SupervisorMsg, WorkerMsg};

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a frame may wait for a worker to read it.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Answers the HTTP upgrade request and spawns the connection task.
pub fn upgrade(
    mut req: Request<Body>,
    conn: ConnId,
    ctx: Arc<ConnContext>,
    driver: mpsc::Sender<DriverMsg>,
) -> Response<Body> {
    let headers = req.headers();
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let (Some(key), true, true) = (key, is_upgrade, version_ok) else {
        return plain(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket (version 13) only",
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .max_message_size(Some(proto::MAX_FRAME_BYTES))
                    .max_frame_size(Some(proto::MAX_FRAME_BYTES));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                serve(ws, conn, ctx, driver).await;
            }
            Err(e) => debug!("websocket upgrade failed: {e}"),
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

fn plain(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::from(msg));
    *resp.status_mut() = status;
    resp
}

/// What went wrong with a frame, as told to the worker before closing.
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Reads the next message as a worker message, or says why it is refused. `None` when the peer
/// closed the connection.
async fn next_msg<S>(ws: &mut S) -> Option<Result<WorkerMsg, Refusal>>
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        let frame = match ws.next().await? {
            Ok(f) => f,
            Err(tungstenite::Error::Capacity(e)) => {
                return Some(Err(Refusal::new(
                    ErrorCode::TooLarge,
                    format!(
                        "frame refused: {e} (limit {} bytes)",
                        proto::MAX_FRAME_BYTES
                    ),
                )));
            }
            Err(e) => {
                debug!("websocket read failed: {e}");
                return None;
            }
        };
        return Some(match frame {
            Message::Text(text) => proto::decode_worker(&text)
                .map_err(|e| Refusal::new(ErrorCode::Malformed, e.to_string())),
            Message::Binary(_) => Err(Refusal::new(
                ErrorCode::Malformed,
                proto::ProtoError::Binary.to_string(),
            )),
            Message::Close(_) => return None,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        });
    }
}

/// Sends the refusal as an `Error` message and a close frame.
async fn send_refusal<S>(sink: &mut S, r: &Refusal)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let msg = SupervisorMsg::Error {
        code: r.code,
        message: r.message.clone(),
        fatal: true,
    };
    let _ = sink.send(Message::text(proto::encode(&msg))).await;
    let close_code = match r.code {
        ErrorCode::TooLarge => CloseCode::Size,
        ErrorCode::Malformed => CloseCode::Invalid,
        _ => CloseCode::Policy,
    };
    // Close reasons are limited to 123 bytes by the protocol.
    let reason: String = r.message.chars().take(100).collect();
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: close_code,
            reason: reason.into(),
        })))
        .await;
}

/// Refuses a connection before it joined: error, close, and a moment for the peer to read it.
async fn refuse(ws: &mut Ws, r: Refusal) {
    send_refusal(ws, &r).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Checks a hello's fields; returns what the driver needs.
fn check_hello(msg: WorkerMsg, worker_token: &str) -> Result<Hello, Refusal> {
    let WorkerMsg::Hello {
        protocol,
        worker,
        name,
        token,
        hardware,
        held,
        available,
    } = msg
    else {
        return Err(Refusal::new(
            ErrorCode::Protocol,
            "the first message must be a hello",
        ));
    };
    if protocol != proto::PROTOCOL_VERSION {
        return Err(Refusal::new(
            ErrorCode::VersionMismatch,
            format!(
                "protocol version {protocol} is not supported; this supervisor speaks {}",
                proto::PROTOCOL_VERSION
            ),
        ));
    }
    if !token_matches(&token, worker_token) {
        return Err(Refusal::new(
            ErrorCode::Unauthorized,
            "invalid worker token",
        ));
    }
    if !proto::valid_worker_id(&worker.0) {
        return Err(Refusal::new(
            ErrorCode::Protocol,
            format!(
                "worker id {:?} must be 1-64 characters of A-Z a-z 0-9 - _ .",
                worker.0
            ),
        ));
    }
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Refusal::new(
            ErrorCode::Protocol,
            "worker name must be at most 100 printable characters",
        ));
    }
    if hardware.slots == 0 || hardware.slots > 4096 {
        return Err(Refusal::new(
            ErrorCode::Protocol,
            format!("hardware.slots {} must be 1..=4096", hardware.slots),
        ));
    }
    if held.len() > 100_000 {
        return Err(Refusal::new(ErrorCode::Protocol, "too many held replicas"));
    }
    let name = if name.is_empty() {
        worker.0.clone()
    } else {
        name
    };
    // A worker never runs more tasks at once than it has cores, whatever it asks for.
    let mut hardware = hardware;
    let cores = hardware.cores.max(1);
    if hardware.slots > cores {
        info!(%worker, slots = hardware.slots, cores, "slots capped by the worker's cores");
        hardware.slots = cores;
    }
    Ok(Hello {
        worker,
        name,
        hardware,
        held,
        available,
    })
}

async fn serve(mut ws: Ws, conn: ConnId, ctx: Arc<ConnContext>, driver: mpsc::Sender<DriverMsg>) {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, next_msg(&mut ws)).await {
        Err(_) => Err(Refusal::new(ErrorCode::Protocol, "no hello within 10 s")),
        Ok(None) => return,
        Ok(Some(msg)) => msg.and_then(|m| check_hello(m, &ctx.worker_token)),
    };
    let hello = match hello {
        Ok(h) => h,
        Err(r) => {
            warn!(conn, "refused worker connection: {}", r.message);
            refuse(&mut ws, r).await;
            return;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = hello.worker.clone();
    let joined = DriverMsg::Joined {
        conn,
        hello,
        tx: tx.clone(),
    };
    if driver.send(joined).await.is_err() {
        return;
    }
    // Reader and writer are separate tasks: a frame that is slow to leave (a throttled link, a
    // worker that reads slowly) never stops us from reading heartbeats and Activity, and a
    // frame being read never delays an Assign.
    let (sink, mut stream) = ws.split();
    let mut writer = tokio::spawn(write_frames(sink, rx, worker.clone()));
    // Why the connection ends on our side, if it does.
    let mut refusal = None;
    loop {
        tokio::select! {
            incoming = next_msg(&mut stream) => match incoming {
                None => break,
                Some(Ok(msg)) => {
                    let (msg, upload) = match resolve_blob(msg, &ctx).await {
                        Ok(resolved) => resolved,
                        Err(r) => {
                            warn!(%worker, "closing connection: {}", r.message);
                            refusal = Some(r);
                            break;
                        }
                    };
                    let frame = DriverMsg::Frame { conn, worker: worker.clone(), msg, upload };
                    if driver.send(frame).await.is_err() {
                        break;
                    }
                }
                Some(Err(r)) => {
                    warn!(%worker, "closing connection: {}", r.message);
                    refusal = Some(r);
                    break;
                }
            },
            // The writer ends when the driver closes this connection or a send fails.
            _ = &mut writer => {
                // Let the peer's answer to our close frame arrive, briefly.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(Ok(_)) = stream.next().await {}
                })
                .await;
                break;
            }
        }
    }
    // The driver hears first, so that a reissue never waits for the goodbye below.
    let _ = driver.send(DriverMsg::Closed { conn, worker }).await;
    if !writer.is_finished() {
        let Refusal { code, message } =
            refusal.unwrap_or_else(|| Refusal::new(ErrorCode::Protocol, "connection closed"));
        let _ = tx.send(Outgoing::Close { code, message });
        drop(tx);
        if tokio::time::timeout(SEND_TIMEOUT, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
}

/// Sends what the driver queues for this connection, in order, until it asks to close or a send
/// fails or stalls.
async fn write_frames(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    worker: crate::proto::WorkerId,
) {
    while let Some(out) = rx.recv().await {
        match out {
            Outgoing::Frame(text) => {
                // A worker that stops reading (frozen, or its network cut) must not pin this
                // task forever once the socket buffers are full.
                match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::text(text))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        debug!(%worker, "send failed: {e}");
                        return;
                    }
                    Err(_) => {
                        warn!(%worker, "a frame waited {} s to be sent: closing", SEND_TIMEOUT.as_secs());
                        return;
                    }
                }
            }
            Outgoing::Close { code, message } => {
                info!(%worker, "closing connection: {message}");
                let r = Refusal { code, message };
                let _ = tokio::time::timeout(SEND_TIMEOUT, send_refusal(&mut sink, &r)).await;
                return;
            }
        }
    }
}

/// What a connection task needs besides the socket.
pub struct ConnContext {
    pub worker_token: Arc<str>,
    /// Where out-of-band result uploads land (`uploads/` in the data dir).
    pub uploads: std::path::PathBuf,
}

/// A result whose output was uploaded out of band is checked (length, SHA-256) and read here,
/// off the driver thread, so the driver only ever sees inline values. Returns the message and
/// the upload it came from (with its text, which the driver stores as it is). A result that does
/// not match its upload closes the connection; the upload is deleted so the worker sends it
/// again from the start.
async fn resolve_blob(
    msg: WorkerMsg,
    ctx: &ConnContext,
) -> Result<(WorkerMsg, Option<Upload>), Refusal> {
    let WorkerMsg::Result {
        replica,
        output: Payload::Blob(blob),
        execution,
    } = msg
    else {
        return Ok((msg, None));
    };
    let path = super::http::upload_path(&ctx.uploads, replica);
    let checked = {
        let path = path.clone();
        let blob = blob.clone();
        tokio::task::spawn_blocking(move || read_upload(&path, &blob))
            .await
            .unwrap_or_else(|e| Err(format!("checking the upload failed: {e}")))
    };
    match checked {
        Ok((value, text)) => Ok((
            WorkerMsg::Result {
                replica,
                output: Payload::Inline(value),
                execution,
            },
            Some(Upload { path, blob, text }),
        )),
        Err(why) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(Refusal::new(
                ErrorCode::Protocol,
                format!("result of {replica} does not match its upload: {why}; upload it again"),
            ))
        }
    }
}

/// The upload's value and its text, once its length and digest match `blob`.
fn read_upload(
    path: &std::path::Path,
    blob: &BlobRef,
) -> Result<(serde_json::Value, String), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("no complete upload ({e})"))?;
    if bytes.len() as u64 != blob.bytes {
        return Err(format!(
            "{} bytes received, the result says {}",
            bytes.len(),
            blob.bytes
        ));
    }
    let digest = proto::sha256_hex(&bytes);
    if digest != blob.sha256 {
        return Err(format!("SHA-256 {digest}, the result says {}", blob.sha256));
    }
    let text = String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))?;
    let value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    Ok((value, text))
}
