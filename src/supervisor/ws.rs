//! One worker's WebSocket connection: the upgrade, the hello checks (protocol version, token,
//! sane fields), then frames in both directions between the socket and the driver.
//!
//! A bad frame (malformed, binary not asked for, too large, out of order) gets an `Error`
//! message and closes this connection only; the driver then treats the worker as disconnected.
//! Nothing here decides anything about tasks.
//!
//! The connection also measures the worker's link ([`super::probe`]): the reader runs the
//! prober (its answers arrive here, and never reach the driver), the writer sends its messages
//! and payload between the driver's frames, and the measurement goes to the driver.

use std::sync::Arc;
use std::time::{Duration, Instant};

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

use super::driver::{ConnId, DriverMsg, Heard, Hello, Outgoing, Upload};
use super::limits::{Cause, Guard, Pending, RateLimiter};
use super::probe::{Action, ProbeConfig, Prober};
use super::volunteers::Credentials;
use crate::proto::{self, BlobRef, ErrorCode, Payload, SupervisorMsg, WorkerMsg};

/// How long a frame may wait for a worker to read it.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Read and write buffer of one connection: room for a link probe chunk and its header.
const WS_BUFFER_BYTES: usize = 2 * proto::LINK_CHUNK_BYTES;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Answers the HTTP upgrade request and spawns the connection task.
pub fn upgrade(
    mut req: Request<Body>,
    conn: ConnId,
    pending: Option<Pending>,
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
                // Per connection, and a pool has thousands. tungstenite zeroes its read buffer
                // up to this size before every read (128 KiB by default: most of a worker's
                // memory, and a memset per frame); it grows for the rare large frame.
                let config = WebSocketConfig::default()
                    .read_buffer_size(WS_BUFFER_BYTES)
                    .write_buffer_size(WS_BUFFER_BYTES)
                    .max_message_size(Some(proto::MAX_FRAME_BYTES))
                    .max_frame_size(Some(proto::MAX_FRAME_BYTES));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                serve(ws, conn, pending, ctx, driver).await;
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

/// A frame from the worker: a message, or a binary frame (link probe payload) of this length.
enum Incoming {
    Msg(WorkerMsg),
    Binary(usize),
}

/// Reads the next message as a worker message, or says why it is refused. `None` when the peer
/// closed the connection.
async fn next_frame<S>(ws: &mut S) -> Option<Result<Incoming, Refusal>>
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
                .map(Incoming::Msg)
                .map_err(|e| Refusal::new(ErrorCode::Malformed, e.to_string())),
            Message::Binary(bytes) => Ok(Incoming::Binary(bytes.len())),
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
fn check_hello(msg: WorkerMsg, credentials: &Credentials) -> Result<Hello, Refusal> {
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
    let auth = credentials
        .check(&token)
        .map_err(|e| Refusal::new(ErrorCode::Unauthorized, e.to_string()))?;
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
    // Checked again (and bound) by the driver; refused here at once when plainly wrong.
    credentials
        .may_use(&auth, &worker)
        .map_err(|e| Refusal::new(ErrorCode::Unauthorized, e.to_string()))?;
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
        auth,
    })
}

async fn serve(
    mut ws: Ws,
    conn: ConnId,
    pending: Option<Pending>,
    ctx: Arc<ConnContext>,
    driver: mpsc::Sender<DriverMsg>,
) {
    let deadline = ctx.guard.limits.hello_timeout;
    let hello = match tokio::time::timeout(deadline, next_frame(&mut ws)).await {
        Err(_) => {
            let what = format!("no hello within {} ms", deadline.as_millis());
            let who = pending
                .as_ref()
                .map_or_else(|| format!("connection {conn}"), |p| p.ip().to_string());
            ctx.guard.refuse(&who, Cause::HelloTimeout, &what);
            Err(Refusal::new(ErrorCode::Protocol, what))
        }
        Ok(None) => return,
        Ok(Some(Ok(Incoming::Msg(m)))) => check_hello(m, &ctx.credentials),
        Ok(Some(Ok(Incoming::Binary(_)))) => Err(Refusal::new(
            ErrorCode::Malformed,
            proto::ProtoError::Binary.to_string(),
        )),
        Ok(Some(Err(r))) => Err(r),
    };
    // Its hello time is over: its place among its address's waiting connections is free again
    // (before a refusal's goodbye, which may take a second).
    drop(pending);
    let hello = match hello {
        Ok(h) => h,
        Err(r) => {
            warn!(conn, "refused worker connection: {}", r.message);
            refuse(&mut ws, r).await;
            return;
        }
    };
    let mut rate = RateLimiter::new(ctx.guard.limits.max_msgs_per_s, Instant::now());
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = hello.worker.clone();
    let heard = Arc::new(Heard::new());
    heard.stamp(Instant::now());
    let joined = DriverMsg::Joined {
        conn,
        hello,
        tx: tx.clone(),
        heard: heard.clone(),
    };
    if driver.send(joined).await.is_err() {
        return;
    }
    // Reader and writer are separate tasks: a frame that is slow to leave (a throttled link, a
    // worker that reads slowly) never stops us from reading heartbeats and Activity, and a
    // frame being read never delays an Assign.
    let (sink, mut stream) = ws.split();
    let (probe_tx, probe_rx) = mpsc::unbounded_channel();
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
    let mut writer = tokio::spawn(write_frames(sink, rx, probe_rx, sent_tx, worker.clone()));
    let mut link = ctx.probe.map(|cfg| LinkProbe {
        prober: Prober::new(cfg, Instant::now()),
        to_writer: probe_tx,
    });
    // Why the connection ends on our side, if it does.
    let mut refusal = None;
    loop {
        let probe_at = link.as_ref().and_then(|l| l.prober.poll_timeout());
        let probe_timer = async {
            match probe_at {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let ended = tokio::select! {
            incoming = next_frame(&mut stream) => match incoming {
                None => break,
                Some(Ok(incoming)) => {
                    let now = Instant::now();
                    heard.stamp(now);
                    match incoming {
                        Incoming::Msg(
                            msg @ (WorkerMsg::LinkPong { .. }
                            | WorkerMsg::LinkReceived { .. }
                            | WorkerMsg::LinkSent { .. }),
                        ) => match &mut link {
                            Some(l) => l.take_stamps(&mut sent_rx).handle_msg(now, &msg),
                            None => Err(super::probe::Violation(
                                "link probe messages were not asked for (this supervisor does not probe links)".into(),
                            )),
                        },
                        Incoming::Binary(len) => match &mut link {
                            Some(l) => l.take_stamps(&mut sent_rx).handle_binary(now, len),
                            None => Err(super::probe::Violation(proto::ProtoError::Binary.to_string())),
                        },
                        Incoming::Msg(_) if !rate.allow(now) => {
                            let limit = ctx.guard.limits.max_msgs_per_s;
                            let what = format!(
                                "more than {limit} messages a second (bursts up to {}): this connection is closed; slow down",
                                2 * u64::from(limit)
                            );
                            ctx.guard.refuse(&worker.0, Cause::RateLimit, &what);
                            refusal = Some(Refusal::new(ErrorCode::Protocol, what));
                            break;
                        }
                        Incoming::Msg(msg) => {
                            let (msg, upload) = match resolve_blob(msg, &ctx).await {
                                Ok(resolved) => resolved,
                                Err(r) => {
                                    warn!(%worker, "closing connection: {}", r.message);
                                    refusal = Some(r);
                                    break;
                                }
                            };
                            let frame = DriverMsg::Frame { conn, worker: worker.clone(), at: now, msg, upload };
                            if driver.send(frame).await.is_err() {
                                break;
                            }
                            Ok(())
                        }
                    }
                }
                Some(Err(r)) => {
                    warn!(%worker, "closing connection: {}", r.message);
                    refusal = Some(r);
                    break;
                }
            },
            Some((nonce, at)) = sent_rx.recv() => {
                if let Some(l) = &mut link {
                    l.prober.handle_sent(nonce, at);
                }
                Ok(())
            }
            () = probe_timer => {
                if let Some(l) = &mut link {
                    l.prober.handle_timeout(Instant::now());
                }
                Ok(())
            }
            // The writer ends when the driver closes this connection or a send fails.
            _ = &mut writer => {
                // Let the peer's answer to our close frame arrive, briefly.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(Ok(_)) = stream.next().await {}
                })
                .await;
                break;
            }
        };
        if let Err(v) = ended {
            warn!(%worker, "closing connection: link probe: {}", v.0);
            let _ = driver
                .send(DriverMsg::Refused {
                    worker: worker.clone(),
                    kind: "link_probe",
                    what: v.0.clone(),
                })
                .await;
            refusal = Some(Refusal::new(
                ErrorCode::Protocol,
                format!("link probe: {}", v.0),
            ));
            break;
        }
        if let Some(l) = &mut link
            && !l.carry_out(conn, &worker, &driver).await
        {
            break;
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

/// What the reader's prober asks the writer to send.
#[derive(Debug)]
enum ProbeOut {
    /// A control message; its departure is reported back with its nonce.
    Text { nonce: u64, text: String },
    /// A control message (reported likewise), then `bytes` of payload for `nonce`.
    Payload {
        nonce: u64,
        text: String,
        bytes: u64,
    },
    /// No more payload for `nonce`.
    Stop { nonce: u64 },
}

/// The payload being sent.
struct Sending {
    nonce: u64,
    bytes: u64,
    offset: u64,
}

/// Sends what the driver queues for this connection, in order, until it asks to close or a send
/// fails or stalls. Between the driver's frames it sends the link probe's messages and payload,
/// one binary frame at a time, so that an Assign or a Cancel waits behind one frame at most;
/// nothing of the probe goes before the driver's first frame (the welcome).
async fn write_frames(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    mut probe: mpsc::UnboundedReceiver<ProbeOut>,
    sent: mpsc::UnboundedSender<(u64, Instant)>,
    worker: crate::proto::WorkerId,
) {
    let mut welcomed = false;
    let mut probe_open = true;
    let mut sending: Option<Sending> = None;
    loop {
        let msg = tokio::select! {
            biased;
            out = rx.recv() => match out {
                None => return,
                Some(Outgoing::Frame(text)) => {
                    welcomed = true;
                    Batch::One(Message::text(text))
                }
                Some(Outgoing::Frames(texts)) => {
                    welcomed = true;
                    Batch::Many(texts)
                }
                Some(Outgoing::Close { code, message }) => {
                    info!(%worker, "closing connection: {message}");
                    let r = Refusal { code, message };
                    let _ = tokio::time::timeout(SEND_TIMEOUT, send_refusal(&mut sink, &r)).await;
                    return;
                }
            },
            cmd = probe.recv(), if welcomed && probe_open => match cmd {
                None => {
                    probe_open = false;
                    continue;
                }
                Some(ProbeOut::Stop { nonce }) => {
                    if sending.as_ref().is_some_and(|s| s.nonce == nonce) {
                        sending = None;
                    }
                    continue;
                }
                Some(ProbeOut::Text { nonce, text }) => {
                    let _ = sent.send((nonce, Instant::now()));
                    Batch::One(Message::text(text))
                }
                Some(ProbeOut::Payload { nonce, text, bytes }) => {
                    let _ = sent.send((nonce, Instant::now()));
                    sending = Some(Sending { nonce, bytes, offset: 0 });
                    Batch::One(Message::text(text))
                }
            },
            () = std::future::ready(()), if sending.is_some() => {
                let Some(s) = &mut sending else { continue };
                let len = (s.bytes - s.offset).min(proto::LINK_CHUNK_BYTES as u64) as usize;
                let chunk = proto::link_chunk(s.nonce, s.offset, len);
                s.offset += len as u64;
                if s.offset >= s.bytes {
                    sending = None;
                }
                Batch::One(Message::binary(chunk))
            }
        };
        // A worker that stops reading (frozen, or its network cut) must not pin this task
        // forever once the socket buffers are full.
        let send = async {
            match msg {
                Batch::One(msg) => sink.send(msg).await,
                Batch::Many(texts) => {
                    // Buffered, then written at once.
                    for text in texts {
                        sink.feed(Message::text(text)).await?;
                    }
                    sink.flush().await
                }
            }
        };
        match tokio::time::timeout(SEND_TIMEOUT, send).await {
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
}

/// What the writer sends next: one frame, or a driver turn's frames for this connection.
enum Batch {
    One(Message),
    Many(Vec<String>),
}

/// The link probe of a connection: the prober and the way to its writer.
struct LinkProbe {
    prober: Prober,
    to_writer: mpsc::UnboundedSender<ProbeOut>,
}

impl LinkProbe {
    /// The prober, with every departure the writer reported so far taken in: an answer never
    /// arrives before the stamp of its request is read.
    fn take_stamps(&mut self, sent: &mut mpsc::UnboundedReceiver<(u64, Instant)>) -> &mut Prober {
        while let Ok((nonce, at)) = sent.try_recv() {
            self.prober.handle_sent(nonce, at);
        }
        &mut self.prober
    }

    /// Hands the prober's messages to the writer and its measurement to the driver. False when
    /// the driver is gone.
    async fn carry_out(
        &mut self,
        conn: ConnId,
        worker: &crate::proto::WorkerId,
        driver: &mpsc::Sender<DriverMsg>,
    ) -> bool {
        while let Some(action) = self.prober.poll_action() {
            let out = match action {
                Action::Send { nonce, msg } => ProbeOut::Text {
                    nonce,
                    text: proto::encode(&msg),
                },
                Action::SendPayload { nonce, msg, bytes } => ProbeOut::Payload {
                    nonce,
                    text: proto::encode(&msg),
                    bytes,
                },
                Action::StopPayload { nonce } => ProbeOut::Stop { nonce },
                Action::Measured(m) => {
                    info!(
                        %worker,
                        up_kbps = m.link.up_kbps.round(),
                        down_kbps = m.link.down_kbps.round(),
                        rtt_ms = m.rtt.as_secs_f64() * 1000.0,
                        took_ms = m.took.as_millis() as u64,
                        down_bytes = m.bytes.0,
                        up_bytes = m.bytes.1,
                        cut_short = m.cut_short,
                        "link measured"
                    );
                    let msg = DriverMsg::Link {
                        conn,
                        worker: worker.clone(),
                        measurement: m,
                    };
                    if driver.send(msg).await.is_err() {
                        return false;
                    }
                    continue;
                }
            };
            // The writer is gone when the connection is closing; the loop notices.
            let _ = self.to_writer.send(out);
        }
        true
    }
}

/// What a connection task needs besides the socket.
pub struct ConnContext {
    /// The shared worker token and the volunteers' tokens.
    pub credentials: Arc<Credentials>,
    /// The abuse limits and their counts.
    pub guard: Arc<Guard>,
    /// Where out-of-band result uploads land (`uploads/` in the data dir).
    pub uploads: std::path::PathBuf,
    /// How links are probed; `None`: they are not.
    pub probe: Option<ProbeConfig>,
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
