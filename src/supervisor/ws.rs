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
use super::driver::{ConnId, DriverMsg, Hello, Outgoing};
use crate::proto::{self, ErrorCode, SupervisorMsg, WorkerMsg};

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a frame may wait for a worker to read it.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Answers the HTTP upgrade request and spawns the connection task.
pub fn upgrade(
    mut req: Request<Body>,
    conn: ConnId,
    worker_token: Arc<str>,
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
                serve(ws, conn, &worker_token, driver).await;
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
async fn next_msg(ws: &mut Ws) -> Option<Result<WorkerMsg, Refusal>> {
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

async fn refuse(ws: &mut Ws, r: Refusal) {
    let msg = SupervisorMsg::Error {
        code: r.code,
        message: r.message.clone(),
        fatal: true,
    };
    let _ = ws.send(Message::text(proto::encode(&msg))).await;
    let close_code = match r.code {
        ErrorCode::TooLarge => CloseCode::Size,
        ErrorCode::Malformed => CloseCode::Invalid,
        _ => CloseCode::Policy,
    };
    // Close reasons are limited to 123 bytes by the protocol.
    let reason: String = r.message.chars().take(100).collect();
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code: close_code,
            reason: reason.into(),
        })))
        .await;
    // Give the peer a moment to read the error before the socket goes away.
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
    let id_ok = !worker.0.is_empty()
        && worker.0.len() <= 64
        && worker
            .0
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !id_ok {
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
    Ok(Hello {
        worker,
        name,
        hardware,
        held,
        available,
    })
}

async fn serve(mut ws: Ws, conn: ConnId, worker_token: &str, driver: mpsc::Sender<DriverMsg>) {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, next_msg(&mut ws)).await {
        Err(_) => Err(Refusal::new(ErrorCode::Protocol, "no hello within 10 s")),
        Ok(None) => return,
        Ok(Some(msg)) => msg.and_then(|m| check_hello(m, worker_token)),
    };
    let hello = match hello {
        Ok(h) => h,
        Err(r) => {
            warn!(conn, "refused worker connection: {}", r.message);
            refuse(&mut ws, r).await;
            return;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = hello.worker.clone();
    let joined = DriverMsg::Joined { conn, hello, tx };
    if driver.send(joined).await.is_err() {
        return;
    }
    // Why the connection ends on our side, if it does.
    let mut refusal = None;
    loop {
        tokio::select! {
            incoming = next_msg(&mut ws) => match incoming {
                None => break,
                Some(Ok(msg)) => {
                    if driver.send(DriverMsg::Frame { conn, worker: worker.clone(), msg }).await.is_err() {
                        break;
                    }
                }
                Some(Err(r)) => {
                    warn!(%worker, "closing connection: {}", r.message);
                    refusal = Some(r);
                    break;
                }
            },
            out = rx.recv() => match out {
                Some(Outgoing::Frame(text)) => {
                    // A worker that stops reading (frozen, or its network cut) must not pin this
                    // task forever once the socket buffers are full.
                    match tokio::time::timeout(SEND_TIMEOUT, ws.send(Message::text(text))).await {
                        Ok(Ok(())) => {}
                        _ => break,
                    }
                }
                Some(Outgoing::Close { code, message }) => {
                    info!(%worker, "closing connection: {message}");
                    refusal = Some(Refusal { code, message });
                    break;
                }
                None => break,
            },
        }
    }
    // The driver hears first, so that a reissue never waits for the goodbye below.
    let _ = driver.send(DriverMsg::Closed { conn, worker }).await;
    if let Some(r) = refusal {
        let _ = tokio::time::timeout(SEND_TIMEOUT, refuse(&mut ws, r)).await;
    }
}
