//! The HTTP side of the supervisor's port: `/worker` (the WebSocket upgrade), the operators' JSON
//! API under `/api` (bearer token), and `/healthz`.
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
//! | GET | /api/jobs/{id}/report | the job report (makespan, reissues, cost) |
//! | GET | /api/jobs/{id}/results[/{task}] | stored outputs |
//! | GET | /api/jobs/{id}/files/{task} | the file a task's output carries, decoded |
//! | POST | /api/jobs/{id}/cancel | stop a running job |
//! | GET | /api/workers | connected and recently lost workers |
//! | GET | /api/activity[?worker=ID] | the newest `Activity` messages |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
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
use crate::proto::{JobId, TaskId};

#[derive(Clone)]
pub struct AppState {
    pub driver: mpsc::Sender<DriverMsg>,
    pub worker_token: Arc<str>,
    pub operator_token: Arc<str>,
    pub next_conn: Arc<AtomicU64>,
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/jobs", post(submit).get(jobs))
        .route("/jobs/{id}", get(status))
        .route("/jobs/{id}/report", get(report))
        .route("/jobs/{id}/results", get(all_results))
        .route("/jobs/{id}/results/{task}", get(task_result))
        .route("/jobs/{id}/files/{task}", get(task_file))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/workers", get(workers))
        .route("/activity", get(activity))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_operator,
        ))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such API endpoint") });
    Router::new()
        .route("/worker", get(worker_socket))
        .route("/healthz", get(|| async { "ok\n" }))
        .nest("/api", api)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NoJob(_) | ApiError::NoResult { .. } => StatusCode::NOT_FOUND,
            ApiError::Finished(_) => StatusCode::CONFLICT,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(status, self.to_string())
    }
}

async fn require_operator(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if token_matches(token.trim(), &state.operator_token) => next.run(req).await,
        Some(_) => error(StatusCode::UNAUTHORIZED, "invalid operator token"),
        None => error(
            StatusCode::UNAUTHORIZED,
            "missing operator token: send Authorization: Bearer <token from operator.token>",
        ),
    }
}

async fn worker_socket(State(state): State<AppState>, req: Request) -> Response {
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    ws::upgrade(req, conn, state.worker_token.clone(), state.driver.clone())
}

/// Sends a request to the driver and waits for its answer.
async fn ask<T>(
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
    let spec: JobSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid job: the body is not a job spec: {e}"),
            );
        }
    };
    match ask(&state, |reply| ApiRequest::Submit { spec, reply }).await {
        Ok(Ok(id)) => (StatusCode::CREATED, axum::Json(json!({ "job_id": id }))).into_response(),
        other => respond(other),
    }
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
