//! The operator's dashboard on the supervisor's port: `/` (the pool, the jobs, the owner
//! activity feed), `/jobs/{id}` (a job's DAG, tasks, reissue timeline, time per worker), a
//! login form, and `/events`, a server-sent event stream that says *what* changed.
//!
//! Signing in: the operator token is POSTed by the form (never in a URL), compared in constant
//! time, and answered with a random session id in an HttpOnly, SameSite=Strict cookie; the id
//! maps to an expiry here, in memory (a restart signs everyone out). `/api` keeps its Bearer
//! token and knows nothing of sessions.
//!
//! Pages are rendered on the server (`page`, `dag`) from the driver's existing views, so they
//! work as plain tables without JavaScript. With it, `assets/dashboard/dashboard.js` listens to
//! `/events` and fetches the same page's `<main>` again when something it shows changed, no more
//! often than the page allows (longer for big jobs): the driver never walks a job's tasks for
//! every event, only for a viewer's throttled refresh. Static files are compiled in.

mod dag;
pub mod page;

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::broadcast;

use super::Event;
use super::auth::{generate_token, token_matches};
use super::driver::{ApiError, ApiRequest};
use super::http::{AppState, ask};
use crate::proto::JobId;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "idlegrid_session";
/// How long a session lasts from sign-in.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; signing in beyond that ends the oldest.
const MAX_SESSIONS: usize = 256;
/// Events are gathered this long into one message, so a burst costs one refresh.
const COALESCE: Duration = Duration::from_millis(150);
/// Jobs named in one change message at most; beyond, it says "everything".
const MAX_JOBS_PER_CHANGE: usize = 64;
/// Jobs on the front page.
const FRONT_PAGE_JOBS: usize = 50;
/// Owner activity messages on the front page.
const FRONT_PAGE_ACTIVITY: usize = 20;

const CSS: &str = include_str!("../../../assets/dashboard/dashboard.css");
const JS: &str = include_str!("../../../assets/dashboard/dashboard.js");

/// Signed-in sessions: random ids and when they expire.
#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    /// A new session, or `None` without randomness.
    fn start(&self, now: Instant) -> Option<String> {
        let id = generate_token().ok()?;
        let mut s = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|_, until| *until > now);
        if s.len() >= MAX_SESSIONS {
            // The one that expires first is the oldest: all last as long.
            if let Some(oldest) = s.iter().min_by_key(|(_, u)| **u).map(|(k, _)| k.clone()) {
                s.remove(&oldest);
            }
        }
        s.insert(id.clone(), now + SESSION_LIFETIME);
        Some(id)
    }

    /// Whether `id` is a session that has not expired. The lookup hashes the id with a random
    /// key, so its timing says nothing about which ids exist.
    fn is_valid(&self, id: &str, now: Instant) -> bool {
        let s = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        s.get(id).is_some_and(|until| *until > now)
    }

    fn end(&self, id: &str) {
        let mut s = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        s.remove(id);
    }
}

/// The session id in a request's `Cookie` headers.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim())
}

fn signed_in(state: &AppState, headers: &HeaderMap) -> bool {
    session_id(headers).is_some_and(|id| state.sessions.is_valid(id, Instant::now()))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(front_page))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/jobs/{id}", get(job_page))
        .route("/events", get(events))
        .route("/assets/dashboard.css", get(|| asset(CSS, "text/css")))
        .route("/assets/dashboard.js", get(|| asset(JS, "text/javascript")))
}

async fn asset(body: &'static str, media_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(media_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// An HTML answer with the headers every dashboard page carries: no caching, no framing, and a
/// policy that allows only this origin's script and stylesheet (nothing inline runs, whatever
/// a worker's name holds).
fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn see_other(to: &'static str, cookie: Option<String>) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// Whether the script asks for the inside of `<main>` only.
fn wants_fragment(headers: &HeaderMap) -> bool {
    headers.contains_key("x-idlegrid-fragment")
}

async fn front_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !signed_in(&state, &headers) {
        return html(StatusCode::OK, page::login(None));
    }
    match ask(&state, |reply| ApiRequest::Overview {
        jobs: FRONT_PAGE_JOBS,
        activity: FRONT_PAGE_ACTIVITY,
        reply,
    })
    .await
    {
        Ok(Ok(view)) => html(
            StatusCode::OK,
            page::overview(&view, wants_fragment(&headers)),
        ),
        Ok(Err(e)) => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            page::problem(&e.to_string()),
        ),
        Err(_) => html(
            StatusCode::SERVICE_UNAVAILABLE,
            page::problem("the supervisor is shutting down"),
        ),
    }
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(state): State<AppState>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return html(
            StatusCode::BAD_REQUEST,
            page::login(Some("Send the operator token from the form.")),
        );
    };
    if !token_matches(form.token.trim(), &state.operator_token) {
        tracing::warn!("dashboard sign-in refused: wrong operator token");
        return html(
            StatusCode::UNAUTHORIZED,
            page::login(Some("That is not this supervisor's operator token.")),
        );
    }
    let Some(id) = state.sessions.start(Instant::now()) else {
        return html(
            StatusCode::INTERNAL_SERVER_ERROR,
            page::login(Some("No randomness to make a session with: try again.")),
        );
    };
    // No `Secure` attribute: the port may serve plain HTTP on 127.0.0.1, where a browser would
    // drop such a cookie.
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    );
    see_other("/", Some(cookie))
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        state.sessions.end(id);
    }
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    see_other("/", Some(cookie))
}

async fn job_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !signed_in(&state, &headers) {
        return see_other("/", None);
    }
    let job = JobId(id);
    let status = ask(&state, |reply| ApiRequest::Status {
        job: job.clone(),
        reply,
    })
    .await;
    let report = ask(&state, |reply| ApiRequest::Report {
        job: job.clone(),
        reply,
    })
    .await;
    match (status, report) {
        (Ok(Ok(status)), Ok(Ok(report))) => html(
            StatusCode::OK,
            page::job(&status, &report, super::unix_ms(), wants_fragment(&headers)),
        ),
        (Ok(Err(e @ ApiError::NoJob(_))), _) | (_, Ok(Err(e @ ApiError::NoJob(_)))) => {
            html(StatusCode::NOT_FOUND, page::problem(&e.to_string()))
        }
        (Ok(Err(e)), _) | (_, Ok(Err(e))) => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            page::problem(&e.to_string()),
        ),
        (Err(_), _) | (_, Err(_)) => html(
            StatusCode::SERVICE_UNAVAILABLE,
            page::problem("the supervisor is shutting down"),
        ),
    }
}

/// What changed during one coalescing window: the pool, and which jobs.
#[derive(Default, serde::Serialize)]
struct Change {
    pool: bool,
    jobs: BTreeSet<String>,
    /// Too much to name (or events were missed): every page refreshes.
    all: bool,
}

impl Change {
    fn add(&mut self, ev: &Event) {
        let job = match ev {
            Event::WorkerJoined { .. }
            | Event::WorkerLost { .. }
            | Event::LinkMeasured { .. }
            | Event::Activity { .. } => {
                self.pool = true;
                return;
            }
            Event::Assigned { job, .. } => {
                // A new replica is on some worker's list of current tasks too.
                self.pool = true;
                job
            }
            Event::JobSubmitted { job }
            | Event::TaskDone { job, .. }
            | Event::JobFinished { job, .. } => job,
        };
        if self.jobs.len() < MAX_JOBS_PER_CHANGE {
            self.jobs.insert(job.0.clone());
        } else {
            self.all = true;
        }
    }
}

/// The next change message: waits for an event, then gathers what follows for [`COALESCE`].
/// `None` once the supervisor stops.
async fn next_change(
    rx: &mut broadcast::Receiver<Event>,
    closing: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<Change> {
    let mut change = Change::default();
    let first = tokio::select! {
        r = rx.recv() => r,
        _ = closing.wait_for(|c| *c) => return None,
    };
    match first {
        Ok(ev) => change.add(&ev),
        Err(broadcast::error::RecvError::Lagged(_)) => change.all = true,
        Err(broadcast::error::RecvError::Closed) => return None,
    }
    let until = tokio::time::Instant::now() + COALESCE;
    loop {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Err(_) => break,
            Ok(Ok(ev)) => change.add(&ev),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => change.all = true,
            Ok(Err(broadcast::error::RecvError::Closed)) => break,
        }
    }
    Some(change)
}

/// Server-sent events: one `change` message per burst of supervisor events, naming what
/// changed; the page decides whether to fetch itself again.
async fn events(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !signed_in(&state, &headers) {
        return (StatusCode::UNAUTHORIZED, "sign in first\n").into_response();
    }
    let rx = state.events.subscribe();
    let closing = state.closing.clone();
    let stream = futures_util::stream::unfold((rx, closing), |(mut rx, mut closing)| async move {
        let change = next_change(&mut rx, &mut closing).await?;
        let data = serde_json::to_string(&change).unwrap_or_else(|_| "{\"all\":true}".into());
        let ev = SseEvent::default().event("change").data(data);
        Some((Ok::<_, Infallible>(ev), (rx, closing)))
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests;
