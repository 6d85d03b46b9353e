//! The HTTP side of the supervisor's port: `/worker` (the WebSocket upgrade), the operators' JSON
//! API under `/api` (bearer token), `/healthz`, and the dashboard's pages (`dashboard`: `/`,
//! `/jobs/{id}`, `/events`, signed in by a session cookie).
//!
//! Handlers validate what they can see (token, body size, JSON shape) and ask the driver for the
//! rest; they hold no state of their own. Every error is a JSON object `{"error": "..."}` with a
//! fitting status code.
//!
//! | method | path | answer |
//! | --- | --- | --- |
//! | POST | /api/jobs | submit a `JobSpec` (JSON); 201 `{"job_id"}` once stored |
//! | GET | /api/jobs | the newest jobs |
//! | GET | /api/jobs/{id} | status: summary and per-task state with replicas |
//! | GET | /api/jobs/{id}/summary | the summary alone: state, tasks, tasks done (what `--wait` polls) |
//! | GET | /api/jobs/{id}/report | the job report (makespan, reissues, cost) |
//! | GET | /api/jobs/{id}/results[/{task}] | stored outputs |
//! | GET | /api/jobs/{id}/files/{task} | the file a task's output carries, decoded |
//! | POST | /api/jobs/{id}/cancel | stop a running job |
//! | GET | /api/workers | connected and recently lost workers |
//! | GET | /api/activity[?worker=ID] | the newest `Activity` messages |
//! | GET | /api/stats | counters: refused worker reports, reissues by cause |
//! | GET | /metrics | the same counters and more, in the Prometheus text format (operator token) |
//!
//! Bulk transfers for workers (worker token as `Authorization: Bearer`, the worker id in
//! `X-Idlegrid-Worker`), so that large payloads never hold up the WebSocket:
//!
//! | method | path | answer |
//! | --- | --- | --- |
//! | GET | /worker/uploads/{replica} | `{"received": N}`: bytes of that replica's result uploaded so far |
//! | PUT | /worker/uploads/{replica}?offset=N | appends the body at N (409 with `received` if N is not that) |
//! | GET | /worker/outputs/{job}/{task} | a dependency output's JSON text; `Range: bytes=N-` resumes |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::MAX_BODY_BYTES;
use super::auth::token_matches;
use super::driver::{ApiError, ApiRequest, DriverMsg};
use super::ws;
use crate::job::JobSpec;
use crate::proto::{JobId, ReplicaId, TaskId, WORKER_HEADER, WorkerId};

#[derive(Clone)]
pub struct AppState {
    pub driver: mpsc::Sender<DriverMsg>,
    pub conn: Arc<ws::ConnContext>,
    pub operator_token: Arc<str>,
    pub next_conn: Arc<AtomicU64>,
    /// Where dependency outputs sent out of band are kept (`outputs/` in the data dir).
    pub outputs: Arc<std::path::Path>,
    pub max_output_bytes: u64,
    /// Replicas whose upload is being written now: one request at a time per replica.
    pub uploading: Arc<std::sync::Mutex<std::collections::HashSet<ReplicaId>>>,
    /// The dashboard's signed-in sessions.
    pub sessions: Arc<super::dashboard::Sessions>,
    /// What happens, for the dashboard's event stream.
    pub events: tokio::sync::broadcast::Sender<super::Event>,
    /// Becomes true when the supervisor stops: long-lived streams end, so that the graceful
    /// shutdown need not wait for them.
    pub closing: tokio::sync::watch::Receiver<bool>,
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/jobs", post(submit).get(jobs))
        .route("/jobs/{id}", get(status))
        .route("/jobs/{id}/summary", get(summary))
        .route("/jobs/{id}/report", get(report))
        .route("/jobs/{id}/results", get(all_results))
        .route("/jobs/{id}/results/{task}", get(task_result))
        .route("/jobs/{id}/files/{task}", get(task_file))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/workers", get(workers))
        .route("/tokens", post(issue_token).get(tokens))
        .route("/tokens/{name}/revoke", post(revoke_token))
        .route("/activity", get(activity))
        .route("/stats", get(stats))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_operator,
        ))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such API endpoint") });
    let bulk = Router::new()
        .route(
            "/worker/uploads/{replica}",
            get(upload_status)
                .put(upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/worker/outputs/{job}/{task}", get(output))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_worker,
        ));
    let metrics =
        Router::new()
            .route("/metrics", get(metrics))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                require_operator,
            ));
    Router::new()
        .route("/worker", get(worker_socket))
        .merge(bulk)
        .merge(metrics)
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(super::dashboard::routes())
        .nest("/api", api)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NoJob(_) | ApiError::NoResult { .. } => StatusCode::NOT_FOUND,
            ApiError::Finished(_) => StatusCode::CONFLICT,
            ApiError::Store(_) | ApiError::NoRandomness(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::BadName(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NoToken(_) => StatusCode::NOT_FOUND,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status(), self.to_string())
    }
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

async fn require_operator(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    match bearer(&headers) {
        Some(token) if token_matches(token, &state.operator_token) => next.run(req).await,
        Some(_) => error(StatusCode::UNAUTHORIZED, "invalid operator token"),
        None => error(
            StatusCode::UNAUTHORIZED,
            "missing operator token: send Authorization: Bearer <token from operator.token>",
        ),
    }
}

async fn worker_socket(State(state): State<AppState>, req: Request) -> Response {
    // Both accept loops (plain and TLS) put the peer's address on every request.
    let pending = match req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
    {
        Some(ip) => match state.conn.guard.admit(ip) {
            Ok(p) => Some(p),
            Err(why) => return error(StatusCode::TOO_MANY_REQUESTS, why),
        },
        None => None,
    };
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    ws::upgrade(req, conn, pending, state.conn.clone(), state.driver.clone())
}

/// The worker a bulk request comes from, once its token checked out.
#[derive(Clone)]
struct BulkWorker(WorkerId);

/// Bulk transfers carry the worker token (`Authorization: Bearer`) and the worker's id
/// (`X-Idlegrid-Worker`).
async fn require_worker(
    State(state): State<AppState>,
    headers: HeaderMap,
    mut req: Request,
    next: Next,
) -> Response {
    let auth = match state
        .conn
        .credentials
        .check(bearer(&headers).unwrap_or_default())
    {
        Ok(auth) => auth,
        Err(e) => return error(StatusCode::UNAUTHORIZED, e.to_string()),
    };
    let Some(worker) = headers
        .get(WORKER_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|w| crate::proto::valid_worker_id(w))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("missing or invalid {WORKER_HEADER} header"),
        );
    };
    // A volunteer's token moves only that volunteer's workers' data.
    let worker = WorkerId(worker.to_owned());
    if let Err(e) = state.conn.credentials.may_use(&auth, &worker) {
        return error(StatusCode::FORBIDDEN, e.to_string());
    }
    req.extensions_mut().insert(BulkWorker(worker));
    next.run(req).await
}

/// Where the upload of a replica's result is written.
pub fn upload_path(dir: &std::path::Path, replica: ReplicaId) -> std::path::PathBuf {
    dir.join(format!("{}.part", replica.key()))
}

/// Where a task's output is kept for workers that need it as a dependency. The name is a digest
/// of the ids, so no task id can name a path outside the directory.
pub fn output_path(dir: &std::path::Path, job: &JobId, task: &TaskId) -> std::path::PathBuf {
    let digest = crate::proto::sha256_hex(format!("{job}/{task}").as_bytes());
    dir.join(format!("{}.json", &digest[..32]))
}

fn bad_replica(key: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        format!("{key:?} is not a replica id"),
    )
}

fn received(status: StatusCode, n: u64, message: Option<String>) -> Response {
    let body = match message {
        Some(m) => json!({ "received": n, "error": m }),
        None => json!({ "received": n }),
    };
    (status, axum::Json(body)).into_response()
}

async fn upload_status(State(state): State<AppState>, Path(key): Path<String>) -> Response {
    let Some(replica) = ReplicaId::parse(&key) else {
        return bad_replica(&key);
    };
    let len = tokio::fs::metadata(upload_path(&state.conn.uploads, replica))
        .await
        .map_or(0, |m| m.len());
    received(StatusCode::OK, len, None)
}

#[derive(serde::Deserialize)]
struct OffsetQuery {
    #[serde(default)]
    offset: u64,
}

/// Appends the body to a replica's upload at `offset`, which must be what was received so far:
/// an interrupted upload resumes where the server's copy ends.
async fn upload(
    State(state): State<AppState>,
    axum::Extension(BulkWorker(worker)): axum::Extension<BulkWorker>,
    Path(key): Path<String>,
    Query(q): Query<OffsetQuery>,
    body: Body,
) -> Response {
    let Some(replica) = ReplicaId::parse(&key) else {
        return bad_replica(&key);
    };
    match ask(&state, |reply| ApiRequest::MayUpload {
        worker: worker.clone(),
        replica,
        reply,
    })
    .await
    {
        Ok(true) => {}
        Ok(false) => {
            return error(
                StatusCode::FORBIDDEN,
                format!("replica {replica} is not running on worker {worker}"),
            );
        }
        Err(resp) => return resp,
    }
    let Some(_guard) = UploadGuard::take(&state.uploading, replica) else {
        return error(
            StatusCode::CONFLICT,
            format!("replica {replica} is being uploaded by another request"),
        );
    };
    let path = upload_path(&state.conn.uploads, replica);
    match append_upload(&path, q.offset, state.max_output_bytes, body).await {
        Ok(total) => received(StatusCode::OK, total, None),
        Err(UploadError::Offset(have)) => received(
            StatusCode::CONFLICT,
            have,
            Some(format!(
                "offset {} is not the {have} bytes received so far",
                q.offset
            )),
        ),
        Err(UploadError::TooLarge) => {
            let _ = tokio::fs::remove_file(&path).await;
            let what = format!(
                "the result of {replica} exceeds this pool's output limit of {} bytes",
                state.max_output_bytes
            );
            state
                .conn
                .guard
                .refuse(&worker.0, super::limits::Cause::OutputTooLarge, &what);
            error(StatusCode::PAYLOAD_TOO_LARGE, what)
        }
        Err(UploadError::Io(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot store the upload of {replica}: {e}"),
        ),
        Err(UploadError::Body(e)) => {
            // The transfer broke off; what arrived is kept and the worker resumes from there.
            let have = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
            received(
                StatusCode::BAD_REQUEST,
                have,
                Some(format!("the upload broke off: {e}")),
            )
        }
    }
}

/// Marks a replica as being uploaded for the life of one request.
struct UploadGuard {
    set: Arc<std::sync::Mutex<std::collections::HashSet<ReplicaId>>>,
    replica: ReplicaId,
}

impl UploadGuard {
    fn take(
        set: &Arc<std::sync::Mutex<std::collections::HashSet<ReplicaId>>>,
        replica: ReplicaId,
    ) -> Option<Self> {
        let mut s = set.lock().unwrap_or_else(|p| p.into_inner());
        s.insert(replica).then(|| Self {
            set: set.clone(),
            replica,
        })
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        let mut s = self.set.lock().unwrap_or_else(|p| p.into_inner());
        s.remove(&self.replica);
    }
}

enum UploadError {
    Offset(u64),
    TooLarge,
    Io(std::io::Error),
    Body(String),
}

async fn append_upload(
    path: &std::path::Path,
    offset: u64,
    limit: u64,
    body: Body,
) -> Result<u64, UploadError> {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(UploadError::Io)?;
    let mut have = file.metadata().await.map_err(UploadError::Io)?.len();
    if have != offset {
        return Err(UploadError::Offset(have));
    }
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = file.flush().await;
                return Err(UploadError::Body(e.to_string()));
            }
        };
        have += chunk.len() as u64;
        if have > limit {
            return Err(UploadError::TooLarge);
        }
        file.write_all(&chunk).await.map_err(UploadError::Io)?;
    }
    file.flush().await.map_err(UploadError::Io)?;
    Ok(have)
}

/// A dependency output kept out of band, from `Range: bytes=N-` on when given, so an
/// interrupted download resumes.
async fn output(
    State(state): State<AppState>,
    Path((job, task)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let path = output_path(&state.outputs, &JobId(job.clone()), &TaskId(task.clone()));
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no out-of-band output for task {task} of job {job}"),
            );
        }
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let from = match headers
        .get(header::RANGE)
        .map(|v| v.to_str().map(parse_range_start))
    {
        None => None,
        Some(Ok(Some(n))) if n <= len => Some(n),
        Some(_) => {
            return error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("only `Range: bytes=N-` with N <= {len} is served"),
            );
        }
    };
    let start = from.unwrap_or(0);
    if let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    let stream = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = (len - start).to_string().parse() {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if from.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        let range = if len == 0 {
            format!("bytes */{len}")
        } else {
            format!("bytes {start}-{}/{len}", len.saturating_sub(1))
        };
        if let Ok(v) = range.parse() {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

/// `bytes=N-` -> N.
fn parse_range_start(v: &str) -> Option<u64> {
    v.trim()
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()
}

/// Sends a request to the driver and waits for its answer.
pub(super) async fn ask<T>(
    state: &AppState,
    make: impl FnOnce(oneshot::Sender<T>) -> ApiRequest,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    let unavailable = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "supervisor is shutting down",
        )
    };
    state
        .driver
        .send(DriverMsg::Api(make(tx)))
        .await
        .map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

fn respond<T: serde::Serialize>(r: Result<Result<T, ApiError>, Response>) -> Response {
    match r {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(resp) => resp,
    }
}

async fn submit(
    State(state): State<AppState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                e.status(),
                format!(
                    "invalid job: {} (limit {MAX_BODY_BYTES} bytes)",
                    e.body_text()
                ),
            );
        }
    };
    // Parsing, validating and serialising a big job takes a while: on a blocking thread, never
    // on the driver's (whose heartbeats would wait) nor on the runtime's.
    let prepared = tokio::task::spawn_blocking(move || prepare_job(body)).await;
    let (job, spec_json) = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err((status, msg))) => return error(status, msg),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the job could not be read: {e}"),
            );
        }
    };
    match ask(&state, |reply| ApiRequest::Submit {
        job: Box::new(job),
        spec_json,
        reply,
    })
    .await
    {
        Ok(Ok(id)) => (StatusCode::CREATED, axum::Json(json!({ "job_id": id }))).into_response(),
        other => respond(other),
    }
}

/// A submitted body as a valid job and its spec's JSON text for the store, or the status and
/// message to answer with. The body is let go once parsed: one JSON text at a time.
fn prepare_job(body: Bytes) -> Result<(crate::job::Job, String), (StatusCode, String)> {
    let spec: JobSpec = serde_json::from_slice(&body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("invalid job: the body is not a job spec: {e}"),
        )
    })?;
    drop(body);
    let job = crate::runtime::validate_job(spec).map_err(|e| {
        let e = ApiError::Invalid(e);
        (e.status(), e.to_string())
    })?;
    let spec_json = serde_json::to_string(job.spec()).map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the job's spec cannot be stored: {e}"),
        )
    })?;
    Ok((job, spec_json))
}

async fn jobs(State(state): State<AppState>) -> Response {
    respond(ask(&state, |reply| ApiRequest::Jobs { reply }).await)
}

async fn status(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    respond(
        ask(&state, |reply| ApiRequest::Status {
            job: JobId(id),
            reply,
        })
        .await,
    )
}

/// Prometheus text format (operator token as `Authorization: Bearer`, as for `/api`).
async fn metrics(State(state): State<AppState>) -> Response {
    match ask(&state, |reply| ApiRequest::Metrics { reply }).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        Err(unavailable) => unavailable,
    }
}

async fn summary(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    respond(
        ask(&state, |reply| ApiRequest::Summary {
            job: JobId(id),
            reply,
        })
        .await,
    )
}

async fn report(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    respond(
        ask(&state, |reply| ApiRequest::Report {
            job: JobId(id),
            reply,
        })
        .await,
    )
}

async fn all_results(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    respond(
        ask(&state, |reply| ApiRequest::Results {
            job: JobId(id),
            task: None,
            reply,
        })
        .await,
    )
}

async fn task_result(
    State(state): State<AppState>,
    Path((id, task)): Path<(String, String)>,
) -> Response {
    respond(
        ask(&state, |reply| ApiRequest::Results {
            job: JobId(id),
            task: Some(TaskId(task)),
            reply,
        })
        .await,
    )
}

/// Serves the file a task's output carries as `{"file": {"name", "media_type", "base64"}}`.
async fn task_file(
    State(state): State<AppState>,
    Path((id, task)): Path<(String, String)>,
) -> Response {
    let output = match ask(&state, |reply| ApiRequest::Results {
        job: JobId(id),
        task: Some(TaskId(task.clone())),
        reply,
    })
    .await
    {
        Ok(Ok(v)) => v,
        other => return respond(other),
    };
    match decode_file(&output) {
        Ok((name, media_type, bytes)) => {
            let disposition = format!(
                "attachment; filename=\"{}\"",
                name.replace(['"', '\\', '\r', '\n'], "_")
            );
            let mut resp = Response::new(Body::from(bytes));
            if let Ok(v) = media_type.parse() {
                resp.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            if let Ok(v) = disposition.parse() {
                resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            resp
        }
        Err(e) => error(StatusCode::NOT_FOUND, format!("task {task}: {e}")),
    }
}

/// The `file` a task output carries: its name, media type and bytes.
pub fn decode_file(output: &serde_json::Value) -> Result<(String, String, Vec<u8>), String> {
    let file = output.get("file").ok_or("its output carries no file")?;
    let field = |k: &str| {
        file.get(k)
            .and_then(|v| v.as_str())
            .ok_or(format!("its output's file has no {k}"))
    };
    let name = field("name")?.to_owned();
    let media_type = field("media_type")
        .unwrap_or("application/octet-stream")
        .to_owned();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(field("base64")?)
        .map_err(|e| format!("its output's file is not valid base64: {e}"))?;
    Ok((name, media_type, bytes))
}

#[derive(serde::Deserialize)]
struct IssueRequest {
    name: String,
}

/// `POST /api/tokens {"name"}`: a new volunteer token, shown once.
async fn issue_token(
    State(state): State<AppState>,
    body: Result<axum::Json<IssueRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let name = match body {
        Ok(axum::Json(r)) => r.name,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"name\": \"VOLUNTEER\"}}: {}", e.body_text()),
            );
        }
    };
    match ask(&state, |reply| ApiRequest::IssueToken { name, reply }).await {
        Ok(Ok(issued)) => (StatusCode::CREATED, axum::Json(issued)).into_response(),
        other => respond(other),
    }
}

async fn revoke_token(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    respond(ask(&state, |reply| ApiRequest::RevokeToken { name, reply }).await)
}

async fn tokens(State(state): State<AppState>) -> Response {
    respond(ask(&state, |reply| ApiRequest::Tokens { reply }).await)
}

async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    respond(
        ask(&state, |reply| ApiRequest::Cancel {
            job: JobId(id),
            reply,
        })
        .await,
    )
}

#[derive(serde::Deserialize)]
struct ActivityQuery {
    worker: Option<String>,
}

/// The newest `Activity` messages, of one worker (`?worker=ID`) or all.
async fn activity(State(state): State<AppState>, Query(q): Query<ActivityQuery>) -> Response {
    respond(
        ask(&state, |reply| ApiRequest::Activity {
            worker: q.worker,
            reply,
        })
        .await,
    )
}

async fn workers(State(state): State<AppState>) -> Response {
    match ask(&state, |reply| ApiRequest::Workers { reply }).await {
        Ok(w) => axum::Json(w).into_response(),
        Err(resp) => resp,
    }
}

async fn stats(State(state): State<AppState>) -> Response {
    match ask(&state, |reply| ApiRequest::Stats { reply }).await {
        Ok(s) => axum::Json(s).into_response(),
        Err(resp) => resp,
    }
}
