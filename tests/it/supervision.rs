//! The supervision loop (SPEC §9) end to end: a live consumer, the console in headless
//! Chromium producing actions to the events topic, the page following each action until the
//! consumer applied it, the board's figures after a granted appeal, role checks on the server,
//! and an unanswered order that becomes `supervision_overdue` and reaches the director's
//! webhook.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};

use crate::console::{browser, click_through, driver, login, screenshot, serve, text};
use crate::pipeline::{casewatch, run_ok};
use crate::receiver::{Receiver, Reply};
use crate::service::{produce, service, spawn};
use crate::support::{event_json, TestDb, TestTopics};

/// An instant `days` ago, RFC 3339 in UTC.
fn ago(days: i64, seconds: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(days) - chrono::Duration::seconds(seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn accepted(case: &str, days_ago: i64) -> String {
    event_json(
        &format!("{case}-a"),
        case,
        "accepted",
        &ago(days_ago, 0),
        serde_json::json!({"item": {"code": "W01-001", "name": "测试事项", "kind": "promised", "promised_days": 1}}),
    )
}

/// Fills a card's note, submits its action and waits until the page says the consumer applied
/// it (the page follows the action live).
async fn act(b: &Client, action: &str, kind: &str, note: &str) {
    let field = format!("#note-{action}-{kind}");
    b.find(Locator::Css(&field))
        .await
        .unwrap_or_else(|_| panic!("no form for {action} on {kind}"))
        .send_keys(note)
        .await
        .unwrap();
    click_through(b, &format!("#do-{action}-{kind}")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The live refresh may swap the element out between two reads: read again then.
        if let Ok(p) = b.find(Locator::Css("#pending")).await {
            let class = p.attr("class").await.ok().flatten().unwrap_or_default();
            if class.contains("applied") {
                return;
            }
            assert!(
                !class.contains("refused"),
                "{action} refused: {}",
                p.text().await.unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{action} was never applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn card_state(b: &Client, kind: &str) -> String {
    text(b, &format!("#card-{kind} .state")).await
}

async fn has(b: &Client, css: &str) -> bool {
    b.find(Locator::Css(css)).await.is_ok()
}

/// The window user's POST of an action, with its own session and CSRF token.
async fn post_action(b: &Client, base: &str, case: &str, action: &str) -> reqwest::StatusCode {
    let csrf = b
        .find(Locator::Css("input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let session = b.get_named_cookie("cw_session").await.unwrap();
    reqwest::Client::new()
        .post(format!("{base}/case/{case}/action"))
        .header("cookie", format!("cw_session={}", session.value()))
        .form(&[
            ("csrf", csrf.as_str()),
            ("action", action),
            ("kind", "overdue"),
            ("response_days", "2"),
            ("note", "x"),
        ])
        .send()
        .await
        .unwrap()
        .status()
}

async fn board_yellow(b: &Client, base: &str) -> i64 {
    b.goto(&format!("{base}/?center=C001")).await.unwrap();
    text(b, "tr[data-window=\"W01\"] td[data-col=\"yellow\"]")
        .await
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_respond_close_appeal_grant_and_an_overdue_order_in_chromium() {
    let db = TestDb::new().await;
    let topics = TestTopics::new(1, 1).await;
    let topic = topics.names[0].clone();
    let dir = tempfile::tempdir().unwrap();
    run_ok(casewatch(&db).arg("migrate"));
    let director = Receiver::start(vec![], Reply::Status(200, vec![])).await;
    let cfg = dir.path().join("consumer.toml");
    std::fs::write(
        &cfg,
        format!(
            "[alerts]\nrescan_secs = 1\n[[alerts.webhooks]]\nname = \"director\"\nurl = \"{}\"\nformat = \"generic\"\n\
             [[alerts.routes]]\nkinds = [\"supervision_overdue\", \"overdue\"]\nwebhooks = [\"director\"]\n",
            director.url
        ),
    )
    .unwrap();
    let _consumer = spawn(service(&db, &topic).arg("--config").arg(&cfg).arg("run"));

    // Three overdue cases of W01 (yellow cards). SV-LATE was ordered 15 days ago with one
    // working day to respond and never answered.
    let late_order = event_json(
        "SV-LATE-o",
        "SV-LATE",
        "supervision",
        &ago(15, 0),
        serde_json::json!({"source": "supervision", "action": "order", "kind": "overdue",
            "actor": {"id": "sup", "role": "supervisor"}, "response_days": 1, "note": "请反馈"}),
    );
    let completed = event_json(
        "SV-APPEAL-c",
        "SV-APPEAL",
        "completed",
        &ago(0, 120),
        serde_json::json!({"outcome": "approved"}),
    );
    let lines = [
        accepted("SV-ORDER", 20),
        accepted("SV-APPEAL", 20),
        completed,
        accepted("SV-LATE", 30),
        late_order,
    ];
    produce(&db, &topic, &lines).await;

    // The director hears of the unanswered order.
    let deadline = Instant::now() + Duration::from_secs(90);
    let alert = loop {
        let found = director
            .requests()
            .into_iter()
            .map(|r| r.json())
            .find(|j| j["kind"] == "supervision_overdue" && j["case_id"] == "SV-LATE");
        if let Some(j) = found {
            break j;
        }
        assert!(
            Instant::now() < deadline,
            "no supervision_overdue at the director's webhook"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(alert["level"], "red");

    let kafka = [
        ("CASEWATCH__KAFKA__BROKERS", topics.brokers.clone()),
        ("CASEWATCH__KAFKA__TOPIC", topic.clone()),
    ];
    let extra: Vec<(&str, &str)> = kafka.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_serve, base) = serve(&db, dir.path(), &extra);
    let d = driver();
    let b = browser(&d).await;

    // The supervisor orders; the window answers; the supervisor closes.
    login(&b, &base, "sup", "sup-password").await;
    b.goto(&format!("{base}/case/SV-ORDER")).await.unwrap();
    assert!(
        !has(&b, "#do-appeal-overdue").await,
        "a supervisor does not appeal"
    );
    act(&b, "order", "overdue", "请两个工作日内说明超期原因").await;
    assert!(card_state(&b, "overdue").await.contains("待反馈"));
    assert!(text(&b, "#history-overdue")
        .await
        .contains("请两个工作日内说明超期原因"));
    click_through(&b, "#logout").await;

    login(&b, &base, "w01", "w01-password").await;
    b.goto(&format!("{base}/case/SV-ORDER")).await.unwrap();
    assert!(
        !has(&b, "#do-close-overdue").await,
        "a window does not close"
    );
    act(&b, "respond", "overdue", "已办结，系材料补正所致").await;
    assert!(card_state(&b, "overdue").await.contains("已反馈"));
    // A window user can neither order nor grant, whatever it posts.
    b.goto(&format!("{base}/case/SV-APPEAL")).await.unwrap();
    assert!(!has(&b, "#do-order-overdue").await);
    assert_eq!(
        post_action(&b, &base, "SV-APPEAL", "order").await,
        reqwest::StatusCode::FORBIDDEN
    );
    // The window appeals SV-APPEAL's card.
    act(&b, "appeal", "overdue", "申请人补正材料耗时，非窗口原因").await;
    assert_eq!(
        post_action(&b, &base, "SV-APPEAL", "grant").await,
        reqwest::StatusCode::FORBIDDEN
    );
    click_through(&b, "#logout").await;

    login(&b, &base, "sup", "sup-password").await;
    b.goto(&format!("{base}/case/SV-ORDER")).await.unwrap();
    act(&b, "close", "overdue", "").await;
    assert!(card_state(&b, "overdue").await.contains("已办结"));

    // The supervisor grants the appeal: the card is annulled and W01's figures change.
    let yellow_before = board_yellow(&b, &base).await;
    b.goto(&format!("{base}/case/SV-APPEAL")).await.unwrap();
    act(&b, "grant", "overdue", "申诉成立").await;
    assert!(card_state(&b, "overdue").await.contains("已作废"));
    assert!(text(&b, "#anomalies").await.contains("申诉成立，已作废"));
    screenshot(&b, "console-supervision").await;
    assert_eq!(board_yellow(&b, &base).await, yellow_before - 1);
    let client = db.client();
    let (on_time, overdue): (u8, u8) = client
        .query("SELECT on_time, overdue FROM cases FINAL WHERE case_id = 'SV-APPEAL'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!((on_time, overdue), (1, 0), "an annulled overdue card");
    let annulled: u8 = client
        .query(
            "SELECT annulled FROM anomalies FINAL WHERE case_id = 'SV-APPEAL' AND kind = 'overdue'",
        )
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(annulled, 1);
    // The annulment reaches the webhook as the card's revocation, marked annulled.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !director.requests().into_iter().map(|r| r.json()).any(|j| {
        j["case_id"] == "SV-APPEAL"
            && j["kind"] == "overdue"
            && j["revocation"] == true
            && j["annulled"] == true
    }) {
        assert!(
            Instant::now() < deadline,
            "no revocation of the annulled card at the webhook"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The supervision rows say who did what.
    let rows: Vec<(String, String, String, String)> = client
        .query("SELECT case_id, order_state, appeal_state, decided_by FROM supervision FINAL ORDER BY case_id")
        .fetch_all()
        .await
        .unwrap();
    let want = |c: &str, o: &str, a: &str, d: &str| {
        (c.to_string(), o.to_string(), a.to_string(), d.to_string())
    };
    assert_eq!(
        rows,
        vec![
            want("SV-APPEAL", "", "granted", "sup"),
            want("SV-LATE", "ordered", "", ""),
            want("SV-ORDER", "closed", "", ""),
        ]
    );
    b.close().await.unwrap();
}

/// The statements of a migration file, split as `casewatch migrate` splits them.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            out.push(current.trim().trim_end_matches(';').to_string());
            current.clear();
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_previous_schema_migrates_in_place() {
    let db = TestDb::new().await;
    let client = db.client();
    // The schema as it was before the supervision loop (migrations 1–9), with rows in it.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/clickhouse");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 11);
    client
        .query("CREATE TABLE schema_migrations (version UInt32, name String, applied_at DateTime) ENGINE = ReplacingMergeTree ORDER BY version")
        .execute()
        .await
        .unwrap();
    for (i, file) in files[..9].iter().enumerate() {
        for s in statements(&std::fs::read_to_string(file).unwrap()) {
            client.query(&s).execute().await.unwrap();
        }
        client
            .query("INSERT INTO schema_migrations VALUES (?, 'old', now())")
            .bind(i as u32 + 1)
            .execute()
            .await
            .unwrap();
    }
    client
        .query("INSERT INTO window_daily_parts (day, center_id, window_id, item_code, received, accepted, topic, partition, version) VALUES ('2019-12-02', 'C001', 'W01', 'W01-001', 3, 2, 't', 0, 1)")
        .execute()
        .await
        .unwrap();
    // A stored event, indexed by 0009's materialized view; 0011 indexes it again.
    client
        .query("INSERT INTO events (event_id, case_id, type, occurred_at, recorded_at, payload, topic, partition, offset, version) VALUES ('e1', 'OLD-1', 'submitted', '2019-12-02 10:00:00', '2019-12-02 10:00:00', '{}', 't', 0, 41, 7)")
        .execute()
        .await
        .unwrap();

    run_ok(casewatch(&db).arg("migrate"));
    let index: Vec<(String, u32, u64, String)> = client
        .query("SELECT case_id, partition, first_offset, toString(offsets) FROM case_event_offsets")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        index,
        vec![("OLD-1".to_string(), 0, 41, "[41]".to_string())]
    );
    let old_index: u64 = client
        .query("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name LIKE 'case_offsets%'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(old_index, 0, "0009's table and view are dropped");
    let row: (i64, i64, i64, i64) = client
        .query("SELECT received, accepted, orders, appeals_granted FROM window_daily WHERE day = '2019-12-02'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(row, (3, 2, 0, 0), "the old row, with the new counts at 0");
    let monthly: (i64, i64) = client
        .query("SELECT received, orders FROM window_monthly WHERE month = '2019-12-01'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(monthly, (3, 0));
    // Migrating again changes nothing; the new tables take a replay with actions.
    run_ok(casewatch(&db).arg("migrate"));
    let dir = tempfile::tempdir().unwrap();
    let file =
        crate::service::write_lines(dir.path(), &crate::pipeline::simulated_lines(32, 3, 0.4));
    run_ok(
        casewatch(&db)
            .args(["replay", "--sink", "clickhouse"])
            .arg(&file),
    );
    let orders: u64 = client
        .query("SELECT count() FROM supervision FINAL WHERE order_state != ''")
        .fetch_one()
        .await
        .unwrap();
    assert!(orders > 0);
}
