use super::super::driver::{JobLine, JobStatus, Overview, ReplicaStatus, TaskStatus, WorkerStatus};
use super::super::report::{JobSummary, Report};
use super::super::store::ActivityRecord;
use super::*;
use crate::sched::CapacityClass;

const HOSTILE: &str = "<script>alert(\"x\")</script>&'";

fn summary(name: &str) -> JobSummary {
    JobSummary {
        job_id: "j-1".into(),
        name: name.into(),
        state: "running".into(),
        error: None,
        submitted_ms: 1_000,
        finished_ms: None,
        tasks: 3,
        tasks_done: 1,
    }
}

fn worker(name: &str) -> WorkerStatus {
    WorkerStatus {
        worker: format!("id-{name}"),
        name: name.into(),
        state: "busy",
        hardware: None,
        replicas: 1,
        bench_speed: 1.0,
        history: Vec::new(),
        speed: 1.0,
        link: None,
        class: CapacityClass::Standard,
        held_back: Some(name.into()),
        activity: Some("keyboard"),
        tasks: vec![format!("j-1/{name}")],
        heard_ms_ago: Some(20),
        agreed: 0,
        disagreed: 0,
        flagged: false,
    }
}

/// No markup from outside survives: the hostile text appears only escaped.
fn assert_escaped(html: &str) {
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"),
        "{html}"
    );
}

#[test]
fn worker_and_job_names_are_shown_as_text_on_the_front_page() {
    let view = Overview {
        workers: vec![worker(HOSTILE)],
        jobs: vec![JobLine {
            summary: summary(HOSTILE),
            cost: 1.5,
            reissued: 2,
        }],
        activity: vec![ActivityRecord {
            worker: "id".into(),
            worker_name: HOSTILE.into(),
            kind: HOSTILE.into(),
            at_ms: 0,
            received_ms: 0,
        }],
        now_ms: 5_000,
    };
    for fragment in [false, true] {
        let html = page::overview(&view, fragment);
        assert_escaped(&html);
        assert!(html.contains("<progress value=\"1\" max=\"3\">"), "{html}");
    }
    // The link to a task's job percent-encodes what is not plain.
    assert!(page::overview(&view, true).contains("href=\"/jobs/j-1\""));
}

#[test]
fn task_ids_worker_names_and_reissue_reasons_are_text_on_a_job_page() {
    let status = JobStatus {
        summary: summary(HOSTILE),
        task_states: vec![TaskStatus {
            id: HOSTILE.into(),
            state: "running",
            deps: vec![HOSTILE.into()],
            critical: true,
            critical_reasons: vec![HOSTILE.into()],
            planned_replicas: 2,
            failures: 0,
            replicas: vec![ReplicaStatus {
                replica: "1.2".into(),
                worker: "id-w".into(),
                worker_state: "live",
                progress: 0.5,
            }],
        }],
    };
    let mut report = Report::build(summary(HOSTILE), &[], 5_000);
    report.reissues.push(super::super::report::Reissue {
        task: HOSTILE.into(),
        worker: "id-w".into(),
        at_ms: 2_000,
        cause: HOSTILE.into(),
        why: HOSTILE.into(),
    });
    report.workers.push(super::super::report::WorkerCost {
        worker: "id-w".into(),
        name: HOSTILE.into(),
        ..Default::default()
    });
    let html = page::job(&status, &report, 5_000, false);
    assert_escaped(&html);
    assert!(html.contains("data-job=\"j-1\""), "{html}");
    assert!(html.contains("class=\"task t-running crit\""), "{html}");
}

#[test]
fn the_login_page_shows_an_error_as_text() {
    let html = page::login(Some(HOSTILE));
    assert_escaped(&html);
    assert!(html.contains("method=\"post\" action=\"/login\""));
}

#[test]
fn durations_read_like_people_write_them() {
    assert_eq!(page::duration(850), "850 ms");
    assert_eq!(page::duration(12_345), "12.3 s");
    assert_eq!(page::duration(245_000), "4 min 05 s");
    assert_eq!(page::duration(7_620_000), "2 h 07 min");
}

#[test]
fn big_jobs_refresh_less_often() {
    assert_eq!(page::refresh_interval_ms(10), 250);
    assert_eq!(page::refresh_interval_ms(4_000), 1_000);
    assert_eq!(page::refresh_interval_ms(100_000), 25_000);
}

#[test]
fn a_session_is_valid_until_it_expires_or_ends() {
    let s = Sessions::default();
    let now = Instant::now();
    let id = s.start(now).unwrap();
    assert_eq!(id.len(), 64);
    assert!(s.is_valid(&id, now));
    assert!(!s.is_valid("nope", now));
    assert!(!s.is_valid(&id, now + SESSION_LIFETIME));
    s.end(&id);
    assert!(!s.is_valid(&id, now));
}

#[test]
fn sessions_are_capped_oldest_out() {
    let s = Sessions::default();
    let t0 = Instant::now();
    let first = s.start(t0).unwrap();
    for k in 1..=MAX_SESSIONS {
        s.start(t0 + Duration::from_millis(k as u64)).unwrap();
    }
    assert!(!s.is_valid(&first, t0));
}

#[test]
fn the_session_cookie_is_found_among_others() {
    let mut h = HeaderMap::new();
    h.append(
        header::COOKIE,
        HeaderValue::from_static("a=1; idlegrid_session=abc ; b=2"),
    );
    assert_eq!(session_id(&h), Some("abc"));
    let mut h = HeaderMap::new();
    h.append(
        header::COOKIE,
        HeaderValue::from_static("idlegrid_sessionx=abc"),
    );
    assert_eq!(session_id(&h), None);
}

#[test]
fn a_burst_of_events_names_its_jobs_and_the_pool() {
    let mut c = Change::default();
    c.add(&Event::TaskDone {
        job: JobId("j".into()),
        task: crate::proto::TaskId("t".into()),
        worker: crate::proto::WorkerId("w".into()),
    });
    assert!(!c.pool);
    c.add(&Event::WorkerLost {
        worker: crate::proto::WorkerId("w".into()),
        cause: "silent".into(),
    });
    assert!(c.pool && c.jobs.contains("j") && !c.all);
}
