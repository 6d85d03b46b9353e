//! The dashboard's HTML, rendered on the server from the driver's views: the login form, the
//! front page (pool, jobs, activity feed) and a job's page (DAG, tasks, reissue timeline, time
//! per worker). Pure functions from views to text; no I/O.
//!
//! Every string that came from outside (worker names, job names, task ids, reissue details) goes
//! through [`Esc`]: a `<script>` in a worker's name is shown as text. The same markup is the
//! whole page without JavaScript and the fragment the page's script swaps in when something
//! changes, so there is one renderer for both.

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use super::super::driver::{JobLine, JobStatus, Overview, WorkerStatus};
use super::super::report::Report;
use super::dag;

/// Rows a table shows at most; the JSON API has the rest.
pub const MAX_ROWS: usize = 500;

/// Text made safe for HTML element content and quoted attribute values.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// A path segment made safe for a URL inside an attribute: everything but unreserved
/// characters percent-encoded.
pub struct UrlPart<'a>(pub &'a str);

impl fmt::Display for UrlPart<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                f.write_char(char::from(b))?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

/// A duration for people: `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 07 min`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {:02} s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{} h {:02} min", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// A link speed for people, from kbit/s.
fn speed(kbps: f64) -> String {
    if kbps >= 1_000_000.0 {
        format!("{:.1} Gbit/s", kbps / 1_000_000.0)
    } else if kbps >= 1000.0 {
        format!("{:.1} Mbit/s", kbps / 1000.0)
    } else {
        format!("{kbps:.0} kbit/s")
    }
}

/// The page around a body: head, header with the live indicator and the logout button.
/// `live` carries the attributes the script reads (`data-job` for a job page, `data-min-ms`,
/// the shortest time between two refreshes).
fn shell(title: &str, signed_in: bool, live: &str, body: &str) -> String {
    let mut h = String::with_capacity(body.len() + 1500);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/assets/dashboard.css\">",
        Esc(title)
    );
    if signed_in {
        // Without JavaScript the page is plain tables that reload themselves now and then.
        h.push_str(
            "<noscript><meta http-equiv=\"refresh\" content=\"10\"></noscript>\
             <script src=\"/assets/dashboard.js\" defer></script>",
        );
    }
    h.push_str("</head><body><header><a class=\"brand\" href=\"/\">idlegrid</a>");
    if signed_in {
        h.push_str(
            "<span id=\"live\" class=\"live off\">static</span>\
             <form method=\"post\" action=\"/logout\"><button type=\"submit\">Log out</button></form>",
        );
    }
    let _ = writeln!(
        h,
        "</header><main id=\"main\" {live}>{body}</main></body></html>"
    );
    h
}

/// The login form; `error` is shown above it (a wrong token).
pub fn login(error: Option<&str>) -> String {
    let mut b = String::from("<section class=\"login\"><h1>Operator sign-in</h1>");
    if let Some(e) = error {
        let _ = write!(b, "<p class=\"error\" role=\"alert\">{}</p>", Esc(e));
    }
    b.push_str(
        "<form method=\"post\" action=\"/login\">\
         <label for=\"token\">Operator token (in <code>DATA/operator.token</code>)</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <button type=\"submit\">Sign in</button></form></section>",
    );
    shell("idlegrid: sign in", false, "", &b)
}

/// The front page, whole or (`fragment`) only what goes inside `<main>`.
pub fn overview(v: &Overview, fragment: bool) -> String {
    let mut b = String::with_capacity(8192);
    pool(&mut b, &v.workers);
    jobs(&mut b, &v.jobs, v.now_ms);
    activity(&mut b, v);
    if fragment {
        b
    } else {
        shell(
            "idlegrid: pool and jobs",
            true,
            "data-live=\"overview\"",
            &b,
        )
    }
}

fn state_rank(state: &str) -> u8 {
    match state {
        "live" => 0,
        "busy" => 1,
        "waiting" => 2,
        "reconnecting" => 3,
        _ => 4,
    }
}

fn pool(b: &mut String, workers: &[WorkerStatus]) {
    let mut ws: Vec<&WorkerStatus> = workers.iter().collect();
    ws.sort_by(|a, c| {
        (state_rank(a.state), &a.name, &a.worker).cmp(&(state_rank(c.state), &c.name, &c.worker))
    });
    let connected = ws.iter().filter(|w| w.heard_ms_ago.is_some()).count();
    let _ = write!(
        b,
        "<section id=\"pool\"><h2>Pool <small>{connected} connected, {} known</small></h2>",
        ws.len()
    );
    if ws.is_empty() {
        b.push_str("<p class=\"empty\">No worker has joined yet.</p></section>");
        return;
    }
    b.push_str(
        "<table><thead><tr><th>worker</th><th>state</th><th>owner activity</th><th>class</th>\
         <th>slots</th><th>link</th><th>current tasks</th><th>last heard</th></tr></thead><tbody>",
    );
    for w in ws.iter().take(MAX_ROWS) {
        let _ = write!(
            b,
            "<tr data-worker=\"{}\"><td title=\"{}\">{}</td><td><span class=\"ws ws-{}\">{}</span>",
            Esc(&w.worker),
            Esc(&w.worker),
            Esc(&w.name),
            w.state,
            w.state
        );
        if let Some(why) = &w.held_back {
            let _ = write!(b, " <small>({})</small>", Esc(why));
        }
        if w.flagged {
            let _ = write!(
                b,
                " <strong class=\"flagged\">flagged: {} output(s) rejected by quorums, no quorum tasks</strong>",
                w.disagreed
            );
        }
        let _ = write!(
            b,
            "</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>",
            w.activity.unwrap_or("–"),
            w.class.as_str(),
            w.hardware
                .as_ref()
                .map_or_else(|| "–".to_owned(), |h| format!("{} of {}", h.slots, h.cores)),
            w.link.map_or_else(
                || "not measured".to_owned(),
                |l| format!("↓ {} ↑ {}", speed(l.down_kbps), speed(l.up_kbps))
            ),
        );
        for (i, t) in w.tasks.iter().enumerate() {
            if i > 0 {
                b.push_str(", ");
            }
            let (job, task) = t.split_once('/').unwrap_or((t, ""));
            let _ = write!(b, "<a href=\"/jobs/{}\">{}</a>", UrlPart(job), Esc(task));
        }
        if w.tasks.is_empty() {
            b.push('–');
        }
        let _ = write!(
            b,
            "</td><td>{}</td></tr>",
            w.heard_ms_ago.map_or_else(
                || "not connected".to_owned(),
                |ms| format!("{} ago", duration(ms))
            )
        );
    }
    b.push_str("</tbody></table>");
    more(b, ws.len(), "workers", "/api/workers");
    b.push_str("</section>");
}

fn more(b: &mut String, n: usize, what: &str, api: &str) {
    if n > MAX_ROWS {
        let _ = write!(
            b,
            "<p class=\"more\">and {} more {what} (all of them: <code>{api}</code>)</p>",
            n - MAX_ROWS
        );
    }
}

fn progress(b: &mut String, done: u32, tasks: u32) {
    let _ = write!(
        b,
        "<progress value=\"{done}\" max=\"{}\"></progress> <span class=\"count\">{done} / {tasks}</span>",
        tasks.max(1)
    );
}

fn makespan(submitted_ms: u64, finished_ms: Option<u64>, now_ms: u64) -> String {
    duration(finished_ms.unwrap_or(now_ms).saturating_sub(submitted_ms))
}

fn jobs(b: &mut String, jobs: &[JobLine], now_ms: u64) {
    b.push_str("<section id=\"jobs\"><h2>Jobs</h2>");
    if jobs.is_empty() {
        b.push_str("<p class=\"empty\">No job submitted yet.</p></section>");
        return;
    }
    b.push_str(
        "<table><thead><tr><th>job</th><th>state</th><th>progress</th><th>makespan</th>\
         <th>reissued</th><th>cost</th></tr></thead><tbody>",
    );
    for j in jobs {
        let s = &j.summary;
        let _ = write!(
            b,
            "<tr data-job=\"{}\" data-done=\"{}\"><td><a href=\"/jobs/{}\">{}</a> <small>{}</small></td>\
             <td><span class=\"js js-{}\">{}</span></td><td>",
            Esc(&s.job_id),
            s.tasks_done,
            UrlPart(&s.job_id),
            Esc(&s.name),
            Esc(&s.job_id),
            Esc(&s.state),
            Esc(&s.state),
        );
        progress(b, s.tasks_done, s.tasks);
        let _ = write!(
            b,
            "</td><td>{}</td><td>{}</td><td>{:.2}</td></tr>",
            makespan(s.submitted_ms, s.finished_ms, now_ms),
            j.reissued,
            j.cost
        );
    }
    b.push_str("</tbody></table></section>");
}

fn activity(b: &mut String, v: &Overview) {
    b.push_str("<section id=\"activity\"><h2>Owner activity</h2>");
    if v.activity.is_empty() {
        b.push_str("<p class=\"empty\">No owner has come back to a machine yet.</p></section>");
        return;
    }
    b.push_str("<ol class=\"feed\">");
    for a in &v.activity {
        let _ = write!(
            b,
            "<li><span class=\"when\">{} ago</span> <b>{}</b> {}</li>",
            duration(v.now_ms.saturating_sub(a.received_ms)),
            Esc(&a.worker_name),
            Esc(&a.kind)
        );
    }
    b.push_str("</ol></section>");
}

/// Jobs of more tasks than this get no drawn DAG (the table still lists their tasks).
pub const MAX_DAG_TASKS: usize = 400;

/// A job's page, whole or (`fragment`) only what goes inside `<main>`.
pub fn job(status: &JobStatus, report: &Report, now_ms: u64, fragment: bool) -> String {
    let s = &status.summary;
    let mut b = String::with_capacity(16384);
    let _ = write!(
        b,
        "<section id=\"summary\"><h1>{} <small>{}</small></h1><dl>\
         <dt>state</dt><dd><span class=\"js js-{}\">{}</span></dd><dt>progress</dt><dd id=\"progress\" data-done=\"{}\">",
        Esc(&s.name),
        Esc(&s.job_id),
        Esc(&s.state),
        Esc(&s.state),
        s.tasks_done
    );
    progress(&mut b, s.tasks_done, s.tasks);
    let _ = write!(
        b,
        "</dd><dt>makespan</dt><dd>{}</dd><dt>replicas started</dt><dd>{}</dd>\
         <dt>reissued</dt><dd id=\"reissued\">{}</dd><dt>cost</dt><dd>{:.2}</dd></dl>",
        makespan(s.submitted_ms, s.finished_ms, now_ms),
        report.replicas_started,
        report.reissued,
        report.cost
    );
    if let Some(e) = &s.error {
        let _ = write!(b, "<p class=\"error\">{}</p>", Esc(e));
    }
    b.push_str("</section>");

    b.push_str("<section id=\"dag\"><h2>Graph</h2>");
    if status.task_states.len() <= MAX_DAG_TASKS {
        b.push_str(&dag::svg(&status.task_states));
        b.push_str(
            "<p class=\"legend\"><span class=\"key t-done\"></span>done \
             <span class=\"key t-running\"></span>running <span class=\"key t-ready\"></span>ready \
             <span class=\"key t-waiting\"></span>waiting <span class=\"key crit\"></span>critical \
             · ×N: live replicas</p>",
        );
    } else {
        let _ = write!(
            b,
            "<p class=\"more\">The graph is drawn for jobs of up to {MAX_DAG_TASKS} tasks.</p>"
        );
    }
    let names: HashMap<&str, &str> = report
        .workers
        .iter()
        .map(|w| (w.worker.as_str(), w.name.as_str()))
        .collect();
    b.push_str("</section>");
    reissues(&mut b, report, &names);
    per_worker(&mut b, report);
    // The long list last: what a glance needs comes first.
    b.push_str("<section id=\"tasks\"><h2>Tasks</h2>");
    tasks(&mut b, status, &names);
    b.push_str("</section>");
    if fragment {
        b
    } else {
        let min_ms = refresh_interval_ms(status.task_states.len());
        let live = format!(
            "data-live=\"job\" data-job=\"{}\" data-min-ms=\"{min_ms}\"",
            Esc(&s.job_id)
        );
        shell(&format!("idlegrid: {}", s.name), true, &live, &b)
    }
}

/// The shortest time between two refreshes of a job's page: a quarter second for small jobs,
/// growing with the number of tasks so that a viewer of a 100,000-task job costs the driver
/// one walk of it every 25 s at most.
pub fn refresh_interval_ms(tasks: usize) -> u64 {
    (tasks as u64 / 4).clamp(250, 25_000)
}

fn tasks(b: &mut String, status: &JobStatus, names: &HashMap<&str, &str>) {
    b.push_str(
        "<table class=\"tasks\"><thead><tr><th>task</th><th>state</th><th>critical</th>\
         <th>waits for</th><th>replicas (worker: progress)</th></tr></thead><tbody>",
    );
    for t in status.task_states.iter().take(MAX_ROWS) {
        let _ = write!(
            b,
            "<tr data-task=\"{}\"><td>{}</td><td><span class=\"ts t-{}\">{}</span>",
            Esc(&t.id),
            Esc(&t.id),
            t.state,
            t.state
        );
        if t.failures > 0 {
            let _ = write!(b, " <small>{} failed</small>", t.failures);
        }
        b.push_str("</td><td>");
        if t.critical {
            let _ = write!(b, "<b>×{}</b> ", t.planned_replicas);
            for (i, r) in t.critical_reasons.iter().enumerate() {
                let _ = write!(b, "{}{}", if i > 0 { ", " } else { "" }, Esc(r));
            }
        } else {
            b.push('–');
        }
        b.push_str("</td><td>");
        for (i, d) in t.deps.iter().enumerate() {
            let _ = write!(b, "{}{}", if i > 0 { ", " } else { "" }, Esc(d));
        }
        b.push_str("</td><td>");
        for (i, r) in t.replicas.iter().enumerate() {
            let _ = write!(
                b,
                "{}<span class=\"ws ws-{}\" title=\"{}\">{}</span>: {:.0}%",
                if i > 0 { "; " } else { "" },
                r.worker_state,
                Esc(&r.replica),
                Esc(names.get(r.worker.as_str()).copied().unwrap_or(&r.worker)),
                (r.progress.clamp(0.0, 1.0) * 100.0)
            );
        }
        b.push_str("</td></tr>");
    }
    b.push_str("</tbody></table>");
    more(b, status.task_states.len(), "tasks", "/api/jobs/ID");
}

/// The reissue timeline: a strip over the job's makespan with a mark per reissue, coloured by
/// cause, and the same reissues as a table.
fn reissues(b: &mut String, report: &Report, names: &HashMap<&str, &str>) {
    let _ = write!(
        b,
        "<section id=\"reissues\"><h2>Reissues <small>{}</small></h2>",
        report.reissued
    );
    if report.reissues.is_empty() {
        b.push_str("<p class=\"empty\">No task has been reissued.</p></section>");
        return;
    }
    let start = report.summary.submitted_ms;
    let span = report.makespan_ms.max(1) as f64;
    const W: f64 = 800.0;
    b.push_str(
        "<svg class=\"timeline\" viewBox=\"0 0 820 40\" width=\"820\" height=\"40\" role=\"img\" \
         aria-label=\"reissues over the job's makespan\"><line class=\"axis\" x1=\"10\" y1=\"30\" x2=\"810\" y2=\"30\"/>",
    );
    for r in &report.reissues {
        let x = 10.0 + (r.at_ms.saturating_sub(start) as f64 / span).min(1.0) * W;
        let _ = write!(
            b,
            "<line class=\"mark c-{}\" x1=\"{x:.1}\" y1=\"6\" x2=\"{x:.1}\" y2=\"30\"><title>+{} {}: {}</title></line>",
            Esc(&r.cause),
            duration(r.at_ms.saturating_sub(start)),
            Esc(&r.task),
            Esc(&r.cause)
        );
    }
    b.push_str(
        "</svg><table><thead><tr><th>when</th><th>task</th><th>cause</th><th>why</th>\
         <th>new replica on</th></tr></thead><tbody>",
    );
    for r in report.reissues.iter().take(MAX_ROWS) {
        let _ = write!(
            b,
            "<tr class=\"reissue\"><td>+{}</td><td>{}</td><td><span class=\"cause c-{}\">{}</span></td>\
             <td>{}</td><td>{}</td></tr>",
            duration(r.at_ms.saturating_sub(start)),
            Esc(&r.task),
            Esc(&r.cause),
            Esc(&r.cause),
            Esc(&r.why),
            Esc(names.get(r.worker.as_str()).copied().unwrap_or(&r.worker))
        );
    }
    b.push_str("</tbody></table>");
    more(b, report.reissues.len(), "reissues", "/api/jobs/ID/report");
    b.push_str("</section>");
}

fn per_worker(b: &mut String, report: &Report) {
    b.push_str("<section id=\"workers\"><h2>Execution time per worker</h2>");
    if report.workers.is_empty() {
        b.push_str("<p class=\"empty\">No replica has started yet.</p></section>");
        return;
    }
    let most = report.workers.iter().map(|w| w.exec_ms).max().unwrap_or(0);
    b.push_str(
        "<table><thead><tr><th>worker</th><th>replicas</th><th>won</th><th>execution time</th>\
         <th>CPU time</th><th>cost</th></tr></thead><tbody>",
    );
    for w in report.workers.iter().take(MAX_ROWS) {
        let _ = write!(
            b,
            "<tr><td title=\"{}\">{}</td><td>{}</td><td>{}</td><td><meter value=\"{}\" max=\"{}\"></meter> {}</td>\
             <td>{}</td><td>{:.2}</td></tr>",
            Esc(&w.worker),
            Esc(&w.name),
            w.replicas,
            w.won,
            w.exec_ms,
            most.max(1),
            duration(w.exec_ms),
            duration(w.cpu_ms),
            w.cost
        );
    }
    b.push_str("</tbody></table>");
    more(b, report.workers.len(), "workers", "/api/jobs/ID/report");
    b.push_str("</section>");
}

/// A page for a missing job or a driver that cannot answer.
pub fn problem(message: &str) -> String {
    let b = format!(
        "<p class=\"error\">{}</p><p><a href=\"/\">Back to the pool</a></p>",
        Esc(message)
    );
    shell("idlegrid", true, "", &b)
}
