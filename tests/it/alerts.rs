//! Webhook alerts against real HTTP receivers on loopback, the real broker and ClickHouse.

use std::collections::BTreeSet;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::pipeline::{casewatch, run_ok, simulated_lines};
use crate::receiver::{Receiver, Reply};
use crate::service::{free_port, metric, produce, service, spawn};
use crate::support::{TestDb, TestTopics};

fn ok() -> Reply {
    Reply::Status(200, vec![])
}

/// A DingTalk/WeCom robot's answer.
fn robot(errcode: i64, errmsg: &str) -> Reply {
    Reply::Json(
        200,
        format!(r#"{{"errcode":{errcode},"errmsg":"{errmsg}"}}"#),
    )
}

/// A config file with these webhooks (TOML tables) and routes.
fn config(dir: &std::path::Path, webhooks: &[String], routes: &[&str]) -> std::path::PathBuf {
    let mut toml = String::from("[alerts]\nhold_lag = 1000\nrescan_secs = 2\n");
    for w in webhooks {
        toml.push_str(&format!("[[alerts.webhooks]]\n{w}\n"));
    }
    for r in routes {
        toml.push_str(&format!("[[alerts.routes]]\n{r}\n"));
    }
    let path = dir.join("casewatch.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn hook(name: &str, url: &str, format: &str, extra: &str) -> String {
    format!("name = \"{name}\"\nurl = \"{url}\"\nformat = \"{format}\"\n{extra}")
}

fn hmac_hex(key: &str, data: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn deliveries(db: &TestDb, alert_id: &str) -> Vec<(u32, String, u16)> {
    db.client()
        .query("SELECT attempt, outcome, http_status FROM alert_deliveries WHERE alert_id = ? ORDER BY attempt")
        .bind(alert_id)
        .fetch_all()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_500_and_429_with_retry_after_then_delivers_once_signed() {
    let db = TestDb::new().await;
    run_ok(casewatch(&db).arg("migrate"));
    let receiver = Receiver::start(
        vec![
            Reply::Status(500, vec![]),
            Reply::Status(429, vec![("retry-after", "1".into())]),
        ],
        ok(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &[hook(
            "ops",
            &receiver.url,
            "generic",
            "secret_env = \"OPS_SECRET\"\nmax_attempts = 5",
        )],
        &["webhooks = [\"ops\"]"],
    );
    let out = casewatch(&db)
        .env("OPS_SECRET", "s3cret-value")
        .arg("--config")
        .arg(&cfg)
        .args(["alerts", "test", "--webhook", "ops"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("s3cret-value")
            && !String::from_utf8_lossy(&out.stderr).contains("s3cret-value")
    );

    let requests = receiver.requests();
    assert_eq!(requests.len(), 3, "500, 429, then 200");
    let id = requests[0]
        .header("x-casewatch-alert-id")
        .unwrap()
        .to_string();
    for r in &requests {
        assert_eq!(
            r.header("x-casewatch-alert-id"),
            Some(id.as_str()),
            "one alert id"
        );
        // The receiver checks the signature the documented way.
        let ts = r.header("x-casewatch-timestamp").unwrap();
        let expected = format!(
            "sha256={}",
            hmac_hex("s3cret-value", &format!("{ts}.{}", r.body))
        );
        assert_eq!(r.header("x-casewatch-signature"), Some(expected.as_str()));
        assert_eq!(r.json()["alert_id"], id.as_str());
    }
    assert!(
        requests[2].at - requests[1].at >= Duration::from_millis(950),
        "Retry-After: 1 is honoured"
    );
    assert_eq!(
        deliveries(&db, &id).await,
        vec![
            (1, "retry".into(), 500),
            (2, "retry".into(), 429),
            (3, "delivered".into(), 200)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_one_permanent_failure() {
    let db = TestDb::new().await;
    run_ok(casewatch(&db).arg("migrate"));
    let receiver = Receiver::start(vec![], Reply::Status(400, vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &[hook("ops", &receiver.url, "wecom", "")],
        &["webhooks = [\"ops\"]"],
    );
    let out = casewatch(&db)
        .arg("--config")
        .arg(&cfg)
        .args(["alerts", "test", "--webhook", "ops"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].json()["msgtype"], "markdown");
    let id = requests[0].header("x-casewatch-alert-id").unwrap();
    assert_eq!(deliveries(&db, id).await, vec![(1, "rejected".into(), 400)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dingtalk_requests_carry_a_valid_signature() {
    use base64::Engine as _;
    let db = TestDb::new().await;
    run_ok(casewatch(&db).arg("migrate"));
    let receiver = Receiver::start(vec![], robot(0, "ok")).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}?access_token=tok", receiver.url);
    let cfg = config(
        dir.path(),
        &[hook(
            "ding",
            &url,
            "dingtalk",
            "secret_env = \"DING_SECRET\"",
        )],
        &["webhooks = [\"ding\"]"],
    );
    let out = casewatch(&db)
        .env("DING_SECRET", "SEC123")
        .arg("--config")
        .arg(&cfg)
        .args(["alerts", "test", "--webhook", "ding"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let r = &receiver.requests()[0];
    // DingTalk's check: timestamp within an hour, sign = base64(HMAC-SHA256(secret, ts\nsecret)).
    let query: std::collections::HashMap<String, String> = r
        .target
        .split_once('?')
        .unwrap()
        .1
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    assert_eq!(query["access_token"], "tok");
    let ts: i64 = query["timestamp"].parse().unwrap();
    assert!((chrono::Utc::now().timestamp_millis() - ts).abs() < 3_600_000);
    let mut mac = Hmac::<Sha256>::new_from_slice(b"SEC123").unwrap();
    mac.update(format!("{ts}\nSEC123").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sign = query["sign"]
        .replace("%2B", "+")
        .replace("%2F", "/")
        .replace("%3D", "=");
    assert_eq!(sign, expected);
    let body = r.json();
    assert_eq!(body["msgtype"], "markdown");
    assert!(body["markdown"]["text"].as_str().unwrap().contains("黄牌"));
}

async fn codes(db: &TestDb, alert_id: &str) -> Vec<(u32, String, u16, i64)> {
    db.client()
        .query("SELECT attempt, outcome, http_status, errcode FROM alert_deliveries WHERE alert_id = ? ORDER BY attempt")
        .bind(alert_id)
        .fetch_all()
        .await
        .unwrap()
}

/// `casewatch alerts test` against one webhook: its exit code and the receiver's requests.
async fn alerts_test(
    db: &TestDb,
    receiver: &Receiver,
    format: &str,
    extra: &str,
) -> (Option<i32>, Vec<crate::receiver::Request>) {
    let dir = tempfile::tempdir().unwrap();
    // The robots' one-minute rate-limit window, shortened to a second by the Retry-After cap.
    let cfg = dir.path().join("casewatch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[alerts]\nretry_after_cap_secs = 1\n[[alerts.webhooks]]\n{}\n[[alerts.routes]]\nwebhooks = [\"robot\"]\n",
            hook("robot", &receiver.url, format, extra)
        ),
    )
    .unwrap();
    let out = casewatch(db)
        .arg("--config")
        .arg(&cfg)
        .args(["alerts", "test", "--webhook", "robot"])
        .output()
        .unwrap();
    (out.status.code(), receiver.requests())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_deliver_on_errcode_zero_only_and_redirects_are_permanent() {
    let db = TestDb::new().await;
    run_ok(casewatch(&db).arg("migrate"));
    // HTTP 200 with a bad-signature errcode: rejected with the code, never retried.
    let bad_sign = Receiver::start(vec![], robot(310_000, "sign not match")).await;
    let (code, requests) = alerts_test(&db, &bad_sign, "dingtalk", "").await;
    assert_eq!((code, requests.len()), (Some(1), 1));
    let id = requests[0]
        .header("x-casewatch-alert-id")
        .unwrap()
        .to_string();
    assert_eq!(
        codes(&db, &id).await,
        vec![(1, "rejected".into(), 200, 310_000)]
    );
    // Rate-limited, then accepted: retried after the window (capped by Retry-After here).
    let limited =
        Receiver::start(vec![robot(45_009, "api freq out of limit")], robot(0, "ok")).await;
    let (code, requests) = alerts_test(&db, &limited, "wecom", "").await;
    assert_eq!((code, requests.len()), (Some(0), 2));
    let id = requests[0]
        .header("x-casewatch-alert-id")
        .unwrap()
        .to_string();
    assert_eq!(
        codes(&db, &id).await,
        vec![
            (1, "retry".into(), 200, 45_009),
            (2, "delivered".into(), 200, 0)
        ]
    );
    // A 302 is not followed: one request, a permanent failure on record.
    let elsewhere = Receiver::start(vec![], robot(0, "ok")).await;
    let redirect = Receiver::start(
        vec![],
        Reply::Status(302, vec![("location", elsewhere.url.clone())]),
    )
    .await;
    let (code, requests) = alerts_test(&db, &redirect, "dingtalk", "").await;
    assert_eq!((code, requests.len()), (Some(1), 1));
    assert!(elsewhere.requests().is_empty());
    let id = requests[0]
        .header("x-casewatch-alert-id")
        .unwrap()
        .to_string();
    assert_eq!(codes(&db, &id).await, vec![(1, "rejected".into(), 302, 0)]);
}

/// Alert ids (raises, not revocations) a receiver got.
fn raised_ids(r: &Receiver) -> BTreeSet<String> {
    r.requests()
        .iter()
        .map(|q| q.json())
        .filter(|v| v["revocation"] == false)
        .map(|v| v["alert_id"].as_str().unwrap().to_string())
        .collect()
}

/// A case accepted 40 days ago with 3 promised days: deadline warning, overdue and legal
/// overdue all hold now (warning → yellow → red).
fn escalating_case() -> String {
    let accepted = (chrono::Utc::now() - chrono::Duration::days(40))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    serde_json::json!({
        "version": 1, "event_id": "esc-1", "case_id": "ESC-0001", "type": "accepted",
        "occurred_at": accepted, "source": "hall", "center_id": "C001", "window_id": "W99",
        "department": "县测试局",
        "item": {"code": "W99-001", "name": "测试事项", "kind": "promised", "promised_days": 3}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_their_audiences_despite_a_sigkill_and_a_dead_receiver() {
    let db = TestDb::new().await;
    let topics = TestTopics::new(1, 2).await;
    let topic = topics.name(0).to_string();
    run_ok(casewatch(&db).arg("migrate"));
    let mut lines = simulated_lines(31, 2, 0.3);
    lines.push(escalating_case());
    produce(&db, &topic, &lines).await;

    // Everyone answers 503 at first, so alerts are pending when the consumer is killed.
    let all = Receiver::start(vec![], Reply::Status(503, vec![])).await;
    let chief = Receiver::start(vec![], ok()).await;
    let director = Receiver::start(vec![], ok()).await;
    let dead = Receiver::start(vec![], Reply::Hang).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &[
            hook("all", &all.url, "generic", "max_attempts = 3"),
            hook("chief", &chief.url, "generic", ""),
            hook("director", &director.url, "generic", ""),
            hook(
                "dead",
                &dead.url,
                "generic",
                "timeout_ms = 60000\nqueue = 4\nconcurrency = 1",
            ),
        ],
        &[
            "webhooks = [\"all\", \"dead\"]",
            "levels = [\"yellow\", \"red\"]\nwebhooks = [\"chief\"]",
            "levels = [\"red\"]\nwebhooks = [\"director\"]",
        ],
    );
    let port = free_port();
    let run = |port: u16| {
        let mut c = service(&db, &topic);
        c.arg("--config")
            .arg(&cfg)
            .env("CASEWATCH__KAFKA__INSTANCE_ID", "alerts-test")
            .env("CASEWATCH__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .arg("run");
        c
    };
    let mut child = spawn(&mut run(port));
    let retried = r#"casewatch_alert_deliveries_total{webhook="all",outcome="retry"}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while metric(port, retried).unwrap_or(0) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no alert was attempted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill(); // SIGKILL with alerts pending
    all.set_default(ok());

    let port = free_port();
    let mut child = spawn(&mut run(port));
    let client = db.client();
    // Alerts of these levels (`held`: only those not revoked).
    let expected = |levels: &'static [&'static str], held: bool| {
        let client = client.clone();
        async move {
            let ids: Vec<String> = client
                .query(
                    "SELECT alert_id FROM alerts FINAL WHERE (revoked = 0 OR ?) AND has(?, level)",
                )
                .bind(u8::from(!held))
                .bind(levels)
                .fetch_all()
                .await
                .unwrap();
            ids.into_iter().collect::<BTreeSet<String>>()
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let want = expected(&["warning", "yellow", "red"], true).await;
        // The restarted process is up (it may have nothing left to read: the first one may
        // have checkpointed everything before it was killed).
        let up = metric(port, "casewatch_events_consumed_total").is_some();
        if up && !want.is_empty() && want.is_subset(&raised_ids(&all)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every alert reached `all`: {} of {} missing (process up: {up})",
            want.difference(&raised_ids(&all)).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Escalation: the chief got every yellow and red card that holds, the director every red
    // one, and neither anything of another level (a card revoked in the meantime may or may
    // not have reached them first).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let chief_ok = expected(&["yellow", "red"], true)
            .await
            .is_subset(&raised_ids(&chief));
        let director_ok = expected(&["red"], true)
            .await
            .is_subset(&raised_ids(&director));
        if chief_ok && director_ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "chief/director did not get their cards"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(raised_ids(&chief).is_subset(&expected(&["yellow", "red"], false).await));
    assert!(raised_ids(&director).is_subset(&expected(&["red"], false).await));
    let esc: Vec<(String, String)> = client
        .query("SELECT kind, alert_id FROM alerts FINAL WHERE case_id = 'ESC-0001' AND revoked = 0 ORDER BY kind")
        .fetch_all()
        .await
        .unwrap();
    let kinds: Vec<&str> = esc.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["deadline_warning", "legal_overdue", "overdue"]);
    for (kind, id) in &esc {
        assert!(
            raised_ids(&all).contains(id),
            "{kind} reached the window's supervisors"
        );
        assert_eq!(
            raised_ids(&chief).contains(id),
            kind != "deadline_warning",
            "{kind} and the chief"
        );
        assert_eq!(
            raised_ids(&director).contains(id),
            kind == "legal_overdue",
            "{kind} and the director"
        );
    }
    // The dead receiver held at most its concurrency, and held up nobody.
    assert!(!dead.requests().is_empty() && dead.requests().len() <= 6);
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    assert!(child.wait(Duration::from_secs(60)).success());
}

/// A `submitted` event `days` ago (late acceptance holds once 5 working days have passed) and,
/// optionally, its acceptance one hour after submission (which shows it never held).
fn submitted_case(case: &str, days: i64, accepted: bool) -> Vec<String> {
    let at = chrono::Utc::now() - chrono::Duration::days(days);
    let ts =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut lines = vec![serde_json::json!({
        "version": 1, "event_id": format!("{case}-1"), "case_id": case, "type": "submitted",
        "occurred_at": ts(at), "source": "online", "center_id": "C001", "window_id": "W01",
        "item_code": "W01-001"
    })
    .to_string()];
    if accepted {
        lines.push(
            serde_json::json!({
                "version": 1, "event_id": format!("{case}-2"), "case_id": case, "type": "accepted",
                "occurred_at": ts(at + chrono::Duration::hours(1)), "source": "hall",
                "center_id": "C001", "window_id": "W01",
                "item": {"code": "W01-001", "kind": "promised", "promised_days": 20}
            })
            .to_string(),
        );
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_alert_is_revoked_with_its_id_and_one_revoked_first_is_never_sent() {
    let db = TestDb::new().await;
    let topics = TestTopics::new(1, 1).await;
    let topic = topics.name(0).to_string();
    run_ok(casewatch(&db).arg("migrate"));
    let receiver = Receiver::start(vec![], ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &[hook("ops", &receiver.url, "generic", "")],
        &["webhooks = [\"ops\"]"],
    );
    // LATE-1 is submitted 20 days ago: the clock raises late_acceptance at once. QUICK-1's
    // acceptance arrives with it, in the same batch: its alert is revoked before any delivery.
    let mut first = submitted_case("LATE-1", 20, false);
    first.extend(submitted_case("QUICK-1", 20, true));
    produce(&db, &topic, &first).await;
    let port = free_port();
    let mut child = spawn(
        service(&db, &topic)
            .arg("--config")
            .arg(&cfg)
            .env("CASEWATCH__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .arg("run"),
    );
    let bodies =
        || -> Vec<serde_json::Value> { receiver.requests().iter().map(|r| r.json()).collect() };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !bodies()
        .iter()
        .any(|b| b["case_id"] == "LATE-1" && b["revocation"] == false)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the late acceptance was not alerted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let raised = bodies()
        .into_iter()
        .find(|b| b["case_id"] == "LATE-1")
        .unwrap();
    assert_eq!(raised["kind"], "late_acceptance");
    // The acceptance, one hour after submission, arrives late: the card never held.
    let late_acceptance = submitted_case("LATE-1", 20, true).pop().unwrap();
    produce(&db, &topic, &[late_acceptance]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !bodies()
        .iter()
        .any(|b| b["case_id"] == "LATE-1" && b["revocation"] == true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no revocation was sent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let revoked = bodies()
        .into_iter()
        .find(|b| b["case_id"] == "LATE-1" && b["revocation"] == true)
        .unwrap();
    assert_eq!(revoked["alert_id"], raised["alert_id"], "the same alert id");
    assert!(revoked["message"].as_str().unwrap().starts_with("【撤销】"));
    assert!(
        bodies().iter().all(|b| b["case_id"] != "QUICK-1"),
        "revoked before delivery: never sent"
    );
    // Attempts are recorded a moment after they happen.
    let want = vec![
        (0u8, "delivered".to_string()),
        (1u8, "delivered".to_string()),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows: Vec<(u8, String)> = db
            .client()
            .query("SELECT revocation, outcome FROM alert_deliveries WHERE alert_id = ? ORDER BY revocation")
            .bind(raised["alert_id"].as_str().unwrap())
            .fetch_all()
            .await
            .unwrap();
        if rows == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "recorded attempts: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill();
}

/// Cases each raising a red `overcharge` card at once (an hour ago).
fn overcharged_cases(prefix: &str, n: usize) -> Vec<String> {
    let at = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    (0..n)
        .flat_map(|i| {
            let case = format!("{prefix}-{i}");
            [
                serde_json::json!({
                    "version": 1, "event_id": format!("{case}-a"), "case_id": case, "type": "accepted",
                    "occurred_at": at, "source": "hall", "center_id": "C001", "window_id": "W01",
                    "item": {"code": "W01-001", "kind": "promised", "promised_days": 10}
                })
                .to_string(),
                serde_json::json!({
                    "version": 1, "event_id": format!("{case}-f"), "case_id": case, "type": "fee_charged",
                    "occurred_at": at, "source": "hall", "center_id": "C001",
                    "amount_cents": 5000, "standard_cents": 1000
                })
                .to_string(),
            ]
        })
        .collect()
}

/// Polls the outcomes recorded for a webhook until `done` holds (at most `secs`).
async fn wait_outcomes(
    db: &TestDb,
    webhook: &str,
    secs: u64,
    done: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let limit = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let rows: Vec<(String, String)> = db
            .client()
            .query("SELECT alert_id, outcome FROM alert_deliveries WHERE webhook = ? ORDER BY attempted_at, attempt")
            .bind(webhook)
            .fetch_all()
            .await
            .unwrap();
        if done(&rows) {
            return rows;
        }
        assert!(std::time::Instant::now() < limit, "{webhook}: {rows:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A database, a topic holding `cases`, and `casewatch run` with one generic webhook `name` at
/// `url` (`hook_extra` in its table) and `alerts` settings.
async fn run_with_one_webhook(
    cases: &[String],
    name: &str,
    url: &str,
    hook_extra: &str,
    alerts: &str,
) -> (
    TestDb,
    TestTopics,
    crate::service::Running,
    tempfile::TempDir,
) {
    let db = TestDb::new().await;
    let topics = TestTopics::new(1, 1).await;
    let topic = topics.name(0).to_string();
    run_ok(casewatch(&db).arg("migrate"));
    produce(&db, &topic, cases).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("casewatch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[alerts]\n{alerts}\n[[alerts.webhooks]]\n{}\n[[alerts.routes]]\nwebhooks = [\"{name}\"]\n",
            hook(name, url, "generic", hook_extra)
        ),
    )
    .unwrap();
    let child = spawn(service(&db, &topic).arg("--config").arg(&cfg).arg("run"));
    (db, topics, child, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_attempts_loses_no_card() {
    let down = Receiver::start(vec![], Reply::Status(503, vec![])).await;
    // The receiver's outage, fast-forwarded: two attempts, then the long backoff of 2 s.
    let (db, _topics, mut child, _dir) = run_with_one_webhook(
        &overcharged_cases("OUT", 4),
        "down",
        &down.url,
        "max_attempts = 2",
        "rescan_secs = 1\nlong_backoff_secs = 2",
    )
    .await;
    let exhausted = |rows: &[(String, String)]| {
        rows.iter()
            .filter(|r| r.1 == "exhausted")
            .map(|r| &r.0)
            .collect::<BTreeSet<_>>()
            .len()
            == 4
    };
    wait_outcomes(&db, "down", 90, exhausted).await;
    // Still down: tried again after the long backoff, and exhausted again.
    let again = |rows: &[(String, String)]| rows.iter().filter(|r| r.1 == "exhausted").count() >= 8;
    wait_outcomes(&db, "down", 60, again).await;
    down.set_default(ok());
    let delivered = |rows: &[(String, String)]| {
        rows.iter()
            .filter(|r| r.1 == "delivered")
            .map(|r| &r.0)
            .collect::<BTreeSet<_>>()
            .len()
            == 4
    };
    let rows = wait_outcomes(&db, "down", 60, delivered).await;
    assert!(rows.iter().all(|r| r.1 != "given_up"), "{rows:?}");
    child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_never_delivered_is_given_up_after_give_up_hours() {
    let never = Receiver::start(vec![], Reply::Status(503, vec![])).await;
    let (db, _topics, mut child, _dir) = run_with_one_webhook(
        &overcharged_cases("GIVE", 1),
        "never",
        &never.url,
        "max_attempts = 1",
        "rescan_secs = 1\nlong_backoff_secs = 1\ngive_up_hours = 0",
    )
    .await;
    let given_up = |rows: &[(String, String)]| rows.iter().any(|r| r.1 == "given_up");
    wait_outcomes(&db, "never", 90, given_up).await;
    let requests = never.requests().len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        never.requests().len(),
        requests,
        "attempted after giving up"
    );
    let rows = wait_outcomes(&db, "never", 5, |_| true).await;
    assert_eq!(
        rows.iter().filter(|r| r.1 == "given_up").count(),
        1,
        "{rows:?}"
    );
    child.kill();
}

/// `scripts/robot-sim` on a free port (killed when dropped); its log is read back as JSON.
struct RobotSim {
    child: std::process::Child,
    url: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl RobotSim {
    async fn start(format: &str, limit: u32, secret: &str, keyword: &str) -> RobotSim {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("robot.jsonl");
        let port = free_port();
        let child =
            std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/robot-sim"))
                .args([
                    "--port",
                    &port.to_string(),
                    "--format",
                    format,
                    "--limit",
                    &limit.to_string(),
                ])
                .args([
                    "--secret-env",
                    "ROBOT_SIM_SECRET",
                    "--keyword",
                    keyword,
                    "--quiet",
                    "--log",
                ])
                .arg(&log)
                .env("ROBOT_SIM_SECRET", secret)
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("python3 runs scripts/robot-sim");
        let limit_at = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < limit_at,
                "robot-sim did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        RobotSim {
            child,
            url: format!("http://127.0.0.1:{port}/robot/send?access_token=test"),
            log,
            _dir: dir,
        }
    }

    /// Every request: (seconds, errcode, alert ids).
    fn requests(&self) -> Vec<(f64, i64, Vec<String>)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let ids = v["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_str().unwrap().to_string())
                    .collect();
                (
                    v["at"].as_f64().unwrap(),
                    v["errcode"].as_i64().unwrap(),
                    ids,
                )
            })
            .collect()
    }
}

impl Drop for RobotSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_300_cards_reaches_a_20_a_minute_robot_in_digests() {
    let db = TestDb::new().await;
    let topics = TestTopics::new(1, 1).await;
    let topic = topics.name(0).to_string();
    run_ok(casewatch(&db).arg("migrate"));
    let robot = RobotSim::start("dingtalk", 20, "SECrobot", "告警").await;
    produce(&db, &topic, &overcharged_cases("BURST", 300)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &[hook(
            "robot",
            &robot.url,
            "dingtalk",
            "secret_env = \"CASEWATCH_ROBOT_SECRET\"",
        )],
        &["webhooks = [\"robot\"]"],
    );
    let mut child = spawn(
        service(&db, &topic)
            .env("CASEWATCH_ROBOT_SECRET", "SECrobot")
            .arg("--config")
            .arg(&cfg)
            .arg("run"),
    );
    let expected: BTreeSet<String> = {
        let limit = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let ids: Vec<String> = db
                .client()
                .query("SELECT alert_id FROM alerts FINAL")
                .fetch_all()
                .await
                .unwrap();
            if ids.len() == 300 {
                break ids.into_iter().collect();
            }
            assert!(std::time::Instant::now() < limit, "{} alerts", ids.len());
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let limit = std::time::Instant::now() + Duration::from_secs(150);
    let shown = loop {
        let shown: BTreeSet<String> = robot
            .requests()
            .into_iter()
            .filter(|r| r.1 == 0)
            .flat_map(|r| r.2)
            .collect();
        if shown == expected {
            break shown;
        }
        assert!(
            std::time::Instant::now() < limit,
            "{} of 300 cards shown",
            shown.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(shown.len(), 300);
    let requests = robot.requests();
    assert!(
        requests.iter().all(|r| r.1 != 310_000),
        "signature and keyword accepted"
    );
    assert!(requests.iter().any(|r| r.2.len() > 1), "digests were sent");
    assert!(
        requests.len() <= 30,
        "{} messages for 300 cards",
        requests.len()
    );
    // Never more than 20 messages in any minute.
    for (i, r) in requests.iter().enumerate() {
        let in_minute = requests[i..].iter().filter(|s| s.0 - r.0 < 60.0).count();
        assert!(in_minute <= 20, "{in_minute} messages within a minute");
    }
    // Each card delivered once on record, only where the robot said errcode 0 (the attempts
    // are recorded asynchronously: wait for the last digest's rows).
    let limit = std::time::Instant::now() + Duration::from_secs(30);
    let records = loop {
        let records: Vec<(String, String, i64)> = db
            .client()
            .query(
                "SELECT alert_id, outcome, errcode FROM alert_deliveries WHERE webhook = 'robot'",
            )
            .fetch_all()
            .await
            .unwrap();
        let done = records.iter().filter(|r| r.1 == "delivered").count() >= 300;
        if done || std::time::Instant::now() > limit {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let delivered: Vec<&(String, String, i64)> =
        records.iter().filter(|r| r.1 == "delivered").collect();
    assert_eq!(delivered.len(), 300);
    assert!(delivered.iter().all(|r| r.2 == 0));
    assert!(records
        .iter()
        .filter(|r| r.2 == 130_101)
        .all(|r| r.1 != "delivered"));
    child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_revoked_and_raised_again_the_last_message_says_it_holds() {
    let db = TestDb::new().await;
    let topics = TestTopics::new(1, 1).await;
    let topic = topics.name(0).to_string();
    run_ok(casewatch(&db).arg("migrate"));
    let receiver = Receiver::start(vec![], ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &[hook("ops", &receiver.url, "generic", "")],
        &["kinds = [\"overdue\"]\nwebhooks = [\"ops\"]"],
    );
    let event = crate::support::event_json;
    let item =
        serde_json::json!({"item": {"code": "W01-001", "kind": "promised", "promised_days": 7}});
    let mut child = spawn(
        service(&db, &topic)
            .env("CASEWATCH__ENGINE__CLOCK", "event")
            .arg("--config")
            .arg(&cfg)
            .arg("run"),
    );
    // Messages for ROUND-1's alert: (revocation, round) in arrival order.
    let messages = || {
        receiver
            .requests()
            .iter()
            .map(|r| r.json())
            .filter(|b| b["case_id"] == "ROUND-1")
            .map(|b| {
                (
                    b["revocation"].as_bool().unwrap(),
                    b["round"].as_u64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let wait = |n: usize| async move {
        let limit = std::time::Instant::now() + Duration::from_secs(90);
        while messages().len() < n {
            assert!(std::time::Instant::now() < limit, "{:?}", messages());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // Accepted Monday with 7 working days (deadline Wed 24 10:00); time passes it: round 1.
    produce(
        &db,
        &topic,
        &[
            event(
                "r1",
                "ROUND-1",
                "accepted",
                "2018-10-15T10:00:00+08:00",
                item.clone(),
            ),
            event(
                "t1",
                "TICK-1",
                "accepted",
                "2018-10-25T10:00:00+08:00",
                item.clone(),
            ),
        ],
    )
    .await;
    wait(1).await;
    // A late pause from before the deadline revokes it.
    produce(
        &db,
        &topic,
        &[event(
            "r2",
            "ROUND-1",
            "paused",
            "2018-10-16T10:00:00+08:00",
            serde_json::json!({"reason": "supplement"}),
        )],
    )
    .await;
    wait(2).await;
    // Resumed a day later, and time passes the new deadline (Thu 25 10:00): round 2.
    produce(
        &db,
        &topic,
        &[
            event(
                "r3",
                "ROUND-1",
                "resumed",
                "2018-10-17T10:00:00+08:00",
                serde_json::json!({"reason": "supplement"}),
            ),
            event(
                "t2",
                "TICK-2",
                "accepted",
                "2018-10-26T10:00:00+08:00",
                item.clone(),
            ),
        ],
    )
    .await;
    wait(3).await;
    assert_eq!(messages(), vec![(false, 1), (true, 1), (false, 2)]);
    // The attempts are recorded asynchronously: wait for the third row.
    let limit = std::time::Instant::now() + Duration::from_secs(30);
    let rounds = loop {
        let rounds: Vec<(u32, u8, String)> = db
            .client()
            .query("SELECT round, revocation, outcome FROM alert_deliveries WHERE alert_id IN (SELECT alert_id FROM alerts WHERE case_id = 'ROUND-1') ORDER BY round, revocation")
            .fetch_all()
            .await
            .unwrap();
        if rounds.len() >= 3 || std::time::Instant::now() > limit {
            break rounds;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        rounds,
        vec![
            (1, 0, "delivered".into()),
            (1, 1, "delivered".into()),
            (2, 0, "delivered".into())
        ]
    );
    child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_added_later_starts_from_now() {
    let db = TestDb::new().await;
    let topics = TestTopics::new(1, 1).await;
    let topic = topics.name(0).to_string();
    run_ok(casewatch(&db).arg("migrate"));
    let old = Receiver::start(vec![], ok()).await;
    let new = Receiver::start(vec![], ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let before = config(
        dir.path(),
        &[hook("old", &old.url, "generic", "")],
        &["webhooks = [\"old\"]"],
    );
    produce(&db, &topic, &overcharged_cases("HIST", 3)).await;
    let mut child = spawn(service(&db, &topic).arg("--config").arg(&before).arg("run"));
    let limit = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        // Settled: the partition's mark covers every alert written so far.
        let marked: Option<u8> = db
            .client()
            .query("SELECT toUInt8(any(settled_version) >= (SELECT max(version) FROM alerts)) FROM outbox_marks FINAL")
            .fetch_optional()
            .await
            .unwrap();
        if old.requests().len() == 3 && marked == Some(1) {
            break;
        }
        assert!(
            std::time::Instant::now() < limit,
            "{} requests, mark {marked:?}",
            old.requests().len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    assert!(child.wait(Duration::from_secs(60)).success());

    // A second webhook and its route: it gets the new card, not the history.
    let dir2 = tempfile::tempdir().unwrap();
    let after = config(
        dir2.path(),
        &[
            hook("old", &old.url, "generic", ""),
            hook("new", &new.url, "generic", ""),
        ],
        &["webhooks = [\"old\", \"new\"]"],
    );
    produce(&db, &topic, &overcharged_cases("NOW", 1)).await;
    let mut child = spawn(service(&db, &topic).arg("--config").arg(&after).arg("run"));
    let limit = std::time::Instant::now() + Duration::from_secs(60);
    while new.requests().is_empty() || old.requests().len() < 4 {
        assert!(
            std::time::Instant::now() < limit,
            "the new card was not delivered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Several outbox scans later (rescan_secs = 2), still only the new card.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cases = |r: &Receiver| {
        r.requests()
            .iter()
            .map(|q| q.json()["case_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(cases(&new), vec!["NOW-0".to_string()]);
    assert_eq!(old.requests().len(), 4, "{:?}", cases(&old));
    child.kill();
}
