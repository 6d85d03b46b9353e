//! The dashboard at `/`: signing in with the operator token through the form (never in a URL,
//! never in a page), pages that escape what workers and jobs call themselves, and a real
//! headless Chromium (Debian's `chromium` and `chromium-driver`, over WebDriver) that watches a
//! job progress and a reissue appear without reloading.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idlegrid::job::{JobSpec, TaskSpec};

use crate::harness::*;

/// A worker name that would run script if it were pasted into a page unescaped (no `/`: the
/// harness makes files named after workers).
const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)>";

/// A client that shows redirects instead of following them (on the crate's TLS setup, as
/// `harness::http` explains).
fn http() -> reqwest::Client {
    let tls = idlegrid::tls::ClientTls::new(None).unwrap();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_backend_preconfigured((*tls.config).clone())
        .build()
        .unwrap()
}

async fn post_login(sup: &SupervisorProc, token: &str) -> reqwest::Response {
    // A browser's form encoding; the token is printable ASCII, hex in practice.
    let body = format!("token={}", token.replace('%', "%25").replace('&', "%26"));
    http()
        .post(format!("{}/login", sup.http_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn get(sup: &SupervisorProc, path: &str, cookie: Option<&str>) -> (u16, String) {
    let mut req = http().get(format!("{}{path}", sup.http_url()));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

fn spin(id: &str, ms: u64, deps: &[&str]) -> TaskSpec {
    let mut t = TaskSpec::new(id, "spin", serde_json::json!({ "ms": ms }));
    t.deps = deps.iter().map(|d| (*d).into()).collect();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_signs_in_by_form_and_never_shows_the_token() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &["--heartbeat-ms", "100"]);
    let _worker = WorkerProc::start(&sup, HOSTILE_NAME, 1);
    let op = sup.operator();
    wait_for_workers(&op, 1).await;
    let token = sup.operator_token();
    let spec = JobSpec {
        name: "<script>alert('job')</script>".into(),
        tasks: vec![spin("a", 50, &[]), spin("b", 50, &["a"])],
        ..Default::default()
    };
    let job = op.submit(&spec).await.unwrap();
    wait_for_job(&op, &job, Duration::from_secs(30)).await;

    // Without a session: the login form, and nothing else.
    let (status, page) = get(&sup, "/", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("method=\"post\" action=\"/login\""), "{page}");
    assert!(!page.contains("Pool"), "{page}");
    assert_eq!(get(&sup, &format!("/jobs/{job}"), None).await.0, 303);
    assert_eq!(get(&sup, "/events", None).await.0, 401);
    // A cookie the supervisor never issued is no session.
    let forged = format!("idlegrid_session={token}");
    assert!(!get(&sup, "/", Some(&forged)).await.1.contains("Pool"));

    // A wrong token is refused, with no cookie.
    let wrong = post_login(&sup, "not-the-token").await;
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    // The right one: a session cookie, HttpOnly and SameSite=Strict, that is not the token.
    let ok = post_login(&sup, &token).await;
    assert_eq!(ok.status().as_u16(), 303);
    let location = ok.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, "/");
    let set_cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.starts_with("idlegrid_session="), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(!set_cookie.contains(&token), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let (status, front) = get(&sup, "/", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(front.contains("Pool") && front.contains(&format!("href=\"/jobs/{job}\"")));
    let (status, job_page) = get(&sup, &format!("/jobs/{job}"), Some(&cookie)).await;
    assert_eq!(status, 200, "{job_page}");
    assert!(job_page.contains("<svg class=\"dag\""), "{job_page}");
    for page in [&front, &job_page] {
        // The token is in no page and in no link.
        assert!(!page.contains(&token));
        // What workers and jobs call themselves is text, never markup.
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img src=x"), "{page}");
    }
    assert!(
        front.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{front}"
    );
    assert!(
        front.contains("&lt;script&gt;alert(&#39;job&#39;)&lt;/script&gt;"),
        "{front}"
    );
    let (_, script) = get(&sup, "/assets/dashboard.js", None).await;
    assert!(script.contains("EventSource") && !script.contains(&token));

    // The API keeps its Bearer token: a session cookie opens nothing there.
    assert_eq!(get(&sup, "/api/workers", Some(&cookie)).await.0, 401);
    assert!(op.workers().await.is_ok());

    // Logging out ends the session on the server, not only in the browser.
    let out = http()
        .post(format!("{}/logout", sup.http_url()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status().as_u16(), 303);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert!(!get(&sup, "/", Some(&cookie)).await.1.contains("Pool"));
}

/// Where chromedriver is: `$CHROMEDRIVER`, else Debian's `/usr/bin/chromedriver`.
fn chromedriver_path() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("CHROMEDRIVER") {
        return Some(p.into());
    }
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

/// A chromedriver process in a process group of its own, so that the browsers it starts go
/// with it even when a test fails half-way.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start(path: &std::path::Path, log: &std::path::Path) -> Self {
        use std::os::unix::process::CommandExt as _;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test started; no memory is involved.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

async fn text_of(browser: &fantoccini::Client, script: &str) -> Option<String> {
    match browser.execute(script, Vec::new()).await {
        Ok(serde_json::Value::String(s)) => Some(s),
        Ok(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_a_job_progress_and_a_reissue_appear_without_reloading() {
    let Some(driver_path) = chromedriver_path() else {
        if std::env::var_os("IDLEGRID_SKIP_BROWSER_TESTS").is_some() {
            eprintln!(
                "skipped: no chromedriver, and IDLEGRID_SKIP_BROWSER_TESTS is set \
                 (install chromium and chromium-driver to run this test)"
            );
            return;
        }
        panic!(
            "chromedriver not found (neither $CHROMEDRIVER nor /usr/bin/chromedriver): install \
             Debian's chromium and chromium-driver (setup.sh does), or set \
             IDLEGRID_SKIP_BROWSER_TESTS=1 to skip this test knowingly"
        );
    };
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &["--heartbeat-ms", "100"]);
    let mut workers = start_workers(&sup, 3, 1).await;
    let op = sup.operator();
    // A DAG: one task first, a dozen tiles, one merge; more tiles than workers, so every worker
    // is busy and the one killed leaves a task with no other replica.
    let mut tasks = vec![spin("prepare", 600, &[])];
    tasks.extend((0..12).map(|k| spin(&format!("tile-{k:02}"), 1500, &["prepare"])));
    let tiles: Vec<String> = (0..12).map(|k| format!("tile-{k:02}")).collect();
    let tile_refs: Vec<&str> = tiles.iter().map(String::as_str).collect();
    tasks.push(spin("merge", 600, &tile_refs));
    let spec = JobSpec {
        name: "dashboard demo".into(),
        tasks,
        ..Default::default()
    };

    let driver = ChromeDriver::start(&driver_path, &dir.path().join("chromedriver.log"));
    let profile = dir.path().join("chromium-profile");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1500", "--hide-scrollbars",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let browser = eventually(
        Duration::from_secs(20),
        "chromedriver to start a browser",
        || {
            let caps = caps.clone();
            let url = driver.url.clone();
            async move {
                fantoccini::ClientBuilder::new(
                    hyper_util::client::legacy::connect::HttpConnector::new(),
                )
                .capabilities(caps)
                .connect(&url)
                .await
                .ok()
            }
        },
    )
    .await;
    use fantoccini::Locator;

    // Sign in through the form.
    browser.goto(&sup.http_url()).await.unwrap();
    let token = sup.operator_token();
    browser
        .find(Locator::Css("input#token"))
        .await
        .unwrap()
        .send_keys(&token)
        .await
        .unwrap();
    browser
        .find(Locator::Css("form[action='/login'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Id("pool"))
        .await
        .unwrap();
    let url = browser.current_url().await.unwrap();
    assert!(!url.as_str().contains(&token), "{url}");
    // The session cookie is HttpOnly: the page's script cannot read it.
    let cookies = text_of(&browser, "return document.cookie;").await.unwrap();
    assert!(!cookies.contains("idlegrid_session"), "{cookies}");

    // The job appears on the front page by itself, and its link leads to its page.
    browser
        .execute("window.__sameDocument = 'yes';", Vec::new())
        .await
        .unwrap();
    let job = op.submit(&spec).await.unwrap();
    let link = format!("tr[data-job='{job}'] a");
    browser
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css(&link))
        .await
        .expect("the new job shows on the front page without a reload");
    assert_eq!(
        text_of(&browser, "return window.__sameDocument;")
            .await
            .as_deref(),
        Some("yes")
    );
    browser
        .find(Locator::Css(&link))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Css("#summary"))
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Css("#live.on"))
        .await
        .unwrap();
    browser
        .execute("window.__sameDocument = 'job';", Vec::new())
        .await
        .unwrap();

    // Progress advances in place.
    let done = || async {
        text_of(
            &browser,
            "return document.getElementById('progress').dataset.done;",
        )
        .await
        .and_then(|s| s.parse::<u32>().ok())
    };
    let first = done().await.unwrap();
    let advanced = eventually(
        Duration::from_secs(60),
        "the page's progress to advance",
        || {
            let done = done();
            async move { done.await.filter(|&d| d > first.max(1)) }
        },
    )
    .await;
    assert_eq!(
        text_of(&browser, "return window.__sameDocument;")
            .await
            .as_deref(),
        Some("job"),
        "the page was reloaded"
    );

    // A worker killed with a task in hand: its task is reissued, and the page shows it.
    let victim = eventually(
        Duration::from_secs(30),
        "a worker holding a tile",
        || async {
            let ws = op.workers().await.ok()?;
            ws.as_array()?.iter().find_map(|w| {
                let name = w["name"].as_str()?;
                let tile = w["tasks"]
                    .as_array()?
                    .iter()
                    .any(|t| t.as_str().is_some_and(|t| t.contains("tile-")));
                (tile && w["replicas"] == 1).then(|| name.to_owned())
            })
        },
    )
    .await;
    let killed_at = Instant::now();
    workers
        .iter_mut()
        .find(|w| w.name == victim)
        .unwrap()
        .kill9();
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#reissues tr.reissue"))
        .await
        .expect("a reissue row appears on the job page");
    let shown_after = killed_at.elapsed();
    let reissued = text_of(
        &browser,
        "return document.getElementById('reissued').textContent;",
    )
    .await
    .unwrap();
    assert!(reissued.trim().parse::<u32>().unwrap() >= 1, "{reissued}");
    let cause = text_of(
        &browser,
        "return document.querySelector('#reissues tr.reissue .cause').textContent;",
    )
    .await
    .unwrap();
    assert!(
        ["worker_lost", "dropped"].contains(&cause.as_str()),
        "{cause}"
    );
    assert_eq!(
        text_of(&browser, "return window.__sameDocument;")
            .await
            .as_deref(),
        Some("job"),
        "the page was reloaded"
    );
    eprintln!(
        "dashboard: progress {first} -> {advanced} in place; reissue ({cause}) shown {shown_after:?} after the kill"
    );

    // The picture for the README: the job page with the reissue on it, once a few more tiles
    // are done (a mix of states).
    let target = done().await.unwrap_or(0) + 2;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while done().await.unwrap_or(0) < target {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let png = browser.screenshot().await.unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    let out = std::env::var_os("IDLEGRID_DASHBOARD_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("dashboard.png"));
    std::fs::write(&out, &png).unwrap();
    eprintln!("dashboard: screenshot in {}", out.display());
    browser.close().await.unwrap();
    let summary = wait_for_job(&op, &job, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "completed");
}
