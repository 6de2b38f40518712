//! The supervision console (SPEC §8) in real headless Chromium through WebDriver (Debian's
//! chromium-driver), against real ClickHouse filled by a replay: login, the board's numbers
//! against SQL, a case's timeline, alerts to cases, window scoping by URL, logged-out
//! redirects, CSRF refusals, login rate limits, and live refresh after a consumer's flush.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::pipeline::{casewatch, run_ok, simulated_lines};
use crate::service::{free_port, spawn, write_lines, Running};
use crate::support::TestDb;

const KEY: &str = "test-session-key-0123456789abcdef-0123456789";

/// A chromedriver process, stopped with the test.
pub struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn driver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver; scripts/test installs it)");
    wait_for_port(port);
    Driver(child, port)
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub async fn browser(d: &Driver) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000", "--lang=zh-CN"]
        }
    });
    ClientBuilder::rustls()
        .expect("a TLS config")
        .capabilities(caps.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{}", d.1))
        .await
        .expect("a WebDriver session")
}

/// The password hash of `password`, as an operator makes it.
fn hash(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_casewatch"))
        .args(["console", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `casewatch serve` on a free port with a supervisor `sup` and a window user `w01` (W01).
pub fn serve(db: &TestDb, dir: &std::path::Path, extra: &[(&str, &str)]) -> (Running, String) {
    let port = free_port();
    let cfg = dir.join("console.toml");
    std::fs::write(
        &cfg,
        format!(
            "[console]\nlisten = \"127.0.0.1:{port}\"\n\
             [[console.users]]\nname = \"sup\"\npassword_hash = \"{}\"\nrole = \"supervisor\"\n\
             [[console.users]]\nname = \"w01\"\npassword_hash = \"{}\"\nrole = \"window\"\nwindows = [\"W01\"]\n",
            hash("sup-password"),
            hash("w01-password")
        ),
    )
    .unwrap();
    let mut c = casewatch(db);
    c.env("CASEWATCH_CONSOLE_SESSION_KEY", KEY);
    for (k, v) in extra {
        c.env(k, v);
    }
    let child = spawn(c.arg("--config").arg(&cfg).arg("serve"));
    wait_for_port(port);
    (child, format!("http://127.0.0.1:{port}"))
}

/// Clicks and waits until the page it leads to has replaced this one.
pub async fn click_through(b: &Client, css: &str) {
    let old = b.find(Locator::Css("html")).await.unwrap();
    b.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while old.text().await.is_ok() {
        assert!(Instant::now() < deadline, "clicking {css} led nowhere");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.wait().for_element(Locator::Css("body")).await.unwrap();
}

pub async fn login(b: &Client, base: &str, name: &str, password: &str) {
    b.goto(&format!("{base}/login")).await.unwrap();
    b.find(Locator::Css("#name"))
        .await
        .unwrap()
        .send_keys(name)
        .await
        .unwrap();
    b.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    click_through(b, "#submit").await;
}

/// With CASEWATCH_SCREENSHOTS=DIR, saves the page as DIR/NAME.png (the README's pictures).
pub async fn screenshot(b: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("CASEWATCH_SCREENSHOTS") {
        let png = b.screenshot().await.unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

pub async fn text(b: &Client, css: &str) -> String {
    b.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn cell(b: &Client, window: &str, col: &str) -> i64 {
    let css = format!("tr[data-window=\"{window}\"] td[data-col=\"{col}\"]");
    text(b, &css).await.trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_as_a_supervisor_and_a_window_user() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_lines(dir.path(), &simulated_lines(31, 2, 0.4));
    run_ok(casewatch(&db).arg("migrate"));
    run_ok(
        casewatch(&db)
            .args([
                "replay",
                "--sink",
                "clickhouse",
                "--as-of",
                "2020-01-25T18:00:00+08:00",
            ])
            .arg(&file),
    );
    let (_serve, base) = serve(
        &db,
        dir.path(),
        &[("CASEWATCH__CONSOLE__LOGIN_ATTEMPTS", "3")],
    );
    let d = driver();
    let b = browser(&d).await;
    let client = db.client();

    // Logged out: every page leads to the login.
    b.goto(&format!("{base}/alerts")).await.unwrap();
    assert!(b.current_url().await.unwrap().path().ends_with("/login"));

    // The supervisor's board for a day of the stream: window W01's numbers are the SQL's.
    login(&b, &base, "sup", "sup-password").await;
    assert_eq!(text(&b, "#user").await, "sup");
    b.goto(&format!("{base}/?center=C001&day=2020-01-15"))
        .await
        .unwrap();
    let sums = |from: &'static str, to: &'static str| {
        let client = client.clone();
        async move {
            client
                .query("SELECT sum(accepted), sum(completed), sum(completed_on_time) FROM window_daily WHERE center_id = 'C001' AND window_id = 'W01' AND day >= toDate(?) AND day <= toDate(?)")
                .bind(from)
                .bind(to)
                .fetch_one::<(i64, i64, i64)>()
                .await
                .unwrap()
        }
    };
    let day = sums("2020-01-15", "2020-01-15").await;
    let month = sums("2020-01-01", "2020-01-15").await;
    assert!(month.0 > 0, "the stream has acceptances in W01 in January");
    assert_eq!(cell(&b, "W01", "day_accepted").await, day.0);
    assert_eq!(cell(&b, "W01", "day_completed").await, day.1);
    assert_eq!(cell(&b, "W01", "month_accepted").await, month.0);
    assert_eq!(cell(&b, "W01", "month_completed").await, month.1);
    assert_eq!(cell(&b, "W01", "month_completed_on_time").await, month.2);
    let red: u64 = client
        .query("SELECT count() FROM alerts FINAL WHERE revoked = 0 AND level = 'red' AND center_id = 'C001'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(text(&b, "#cards-red").await, red.to_string());
    screenshot(&b, "console-board").await;

    // A case by its id: every event of its timeline, in order.
    let case_id: String = client
        .query("SELECT case_id FROM events FINAL WHERE case_id IN (SELECT case_id FROM alerts FINAL) GROUP BY case_id ORDER BY count() DESC, case_id LIMIT 1")
        .fetch_one()
        .await
        .unwrap();
    let want: Vec<String> = client
        .query("SELECT event_id FROM events FINAL WHERE case_id = ? ORDER BY occurred_at, offset")
        .bind(&case_id)
        .fetch_all()
        .await
        .unwrap();
    b.goto(&format!("{base}/case")).await.unwrap();
    b.find(Locator::Css("#case-id"))
        .await
        .unwrap()
        .send_keys(&case_id)
        .await
        .unwrap();
    click_through(&b, "#search").await;
    let mut got = Vec::new();
    for e in b
        .find_all(Locator::Css("#timeline .event-id"))
        .await
        .unwrap()
    {
        got.push(e.text().await.unwrap());
    }
    assert!(want.len() >= 4, "{want:?}");
    assert_eq!(got, want);
    screenshot(&b, "console-case").await;

    // An alert leads to its case.
    b.goto(&format!("{base}/alerts?revoked=1")).await.unwrap();
    let link = b
        .find(Locator::Css("#alert-list .case-link"))
        .await
        .unwrap();
    let alert_case = link.text().await.unwrap();
    click_through(&b, "#alert-list .case-link").await;
    assert!(text(&b, "#case-title").await.contains(&alert_case));

    // A form without the session's CSRF token is refused.
    let session = b.get_named_cookie("cw_session").await.unwrap();
    let http = reqwest::Client::new();
    let refused = http
        .post(format!("{base}/logout"))
        .header("cookie", format!("cw_session={}", session.value()))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);

    // The window user: its own window's case opens; another window's is a 404, by URL too.
    click_through(&b, "#logout").await;
    assert!(b.current_url().await.unwrap().path().ends_with("/login"));
    login(&b, &base, "w01", "w01-password").await;
    let pick = |window: &'static str| {
        let client = client.clone();
        async move {
            client
                .query(
                    "SELECT case_id FROM cases FINAL WHERE window_id = ? ORDER BY case_id LIMIT 1",
                )
                .bind(window)
                .fetch_one::<String>()
                .await
                .unwrap()
        }
    };
    let (own, other) = (pick("W01").await, pick("W02").await);
    b.goto(&format!("{base}/case/{own}")).await.unwrap();
    assert!(text(&b, "#case-title").await.contains(&own));
    let answer = http
        .get(format!("{base}/case/{other}"))
        .header(
            "cookie",
            format!(
                "cw_session={}",
                b.get_named_cookie("cw_session").await.unwrap().value()
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::NOT_FOUND);
    b.goto(&format!("{base}/case/{other}")).await.unwrap();
    assert!(b.find(Locator::Css("#case-title")).await.is_err());
    assert!(text(&b, "#message").await.contains("未找到"));
    // Its board has W01 only.
    b.goto(&format!("{base}/?center=C001&day=2020-01-15"))
        .await
        .unwrap();
    let rows = b.find_all(Locator::Css("#windows tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(cell(&b, "W01", "month_accepted").await, month.0);
    click_through(&b, "#logout").await;

    // Wrong passwords: after three, even the right one waits.
    for _ in 0..3 {
        login(&b, &base, "sup", "wrong").await;
        assert!(text(&b, "#login-error").await.contains("错误"));
    }
    login(&b, &base, "sup", "sup-password").await;
    assert!(text(&b, "#login-error").await.contains("过多"));
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_shows_a_new_flush_within_two_seconds() {
    let db = TestDb::new().await;
    let topics = crate::support::TestTopics::new(1, 1).await;
    let topic = topics.name(0).to_string();
    let dir = tempfile::tempdir().unwrap();
    run_ok(casewatch(&db).arg("migrate"));
    let _consumer = spawn(crate::service::service(&db, &topic).arg("run"));
    let accepted = |case: &str| {
        let at = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai);
        crate::support::event_json(
            &format!("{case}-a"),
            case,
            "accepted",
            &at.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            serde_json::json!({"item": {"code": "W01-001", "kind": "promised", "promised_days": 5}}),
        )
    };
    let client = db.client();
    let landed = |offsets: u64| {
        let client = client.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let done: u64 = client
                    .query("SELECT sum(next_offset) FROM checkpoints FINAL")
                    .fetch_one()
                    .await
                    .unwrap();
                if done >= offsets {
                    return Instant::now();
                }
                assert!(Instant::now() < deadline, "the consumer never flushed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    crate::service::produce(&db, &topic, &[accepted("LIVE-1")]).await;
    landed(1).await;

    let (_serve, base) = serve(&db, dir.path(), &[]);
    let d = driver();
    let b = browser(&d).await;
    login(&b, &base, "sup", "sup-password").await;
    b.goto(&format!("{base}/?center=C001")).await.unwrap();
    assert_eq!(cell(&b, "W01", "day_accepted").await, 1);

    // Another acceptance: once its flush has landed, the open page shows it within 2 s.
    crate::service::produce(&db, &topic, &[accepted("LIVE-2")]).await;
    let flushed = landed(2).await;
    loop {
        let shown = b
            .find(Locator::Css(
                "tr[data-window=\"W01\"] td[data-col=\"day_accepted\"]",
            ))
            .await
            .ok();
        let value = match shown {
            Some(e) => e.text().await.unwrap_or_default(),
            None => String::new(),
        };
        if value.trim() == "2" {
            break;
        }
        assert!(
            flushed.elapsed() < Duration::from_secs(2),
            "the board still shows {value:?} 2 s after the flush"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.close().await.unwrap();
}
