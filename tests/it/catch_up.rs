//! The catch-up clock (SPEC §2): a backlog is consumed on its own events' time, so the live
//! clock raises no card that the backlog then revokes, and a catching-up partition's cards wait
//! until it has caught up.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::pipeline::{casewatch, run_ok};
use crate::receiver::{Receiver, Reply};
use crate::service::{free_port, metric, produce, service, spawn};
use crate::support::{TestDb, TestTopics};

fn event(
    id: &str,
    case: &str,
    ty: &str,
    at: chrono::DateTime<chrono::Utc>,
    extra: serde_json::Value,
) -> String {
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    crate::support::event_json(id, case, ty, &at, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_under_the_live_clock_raises_no_card_it_then_revokes() {
    let db = TestDb::new().await;
    let topics = TestTopics::new(1, 1).await;
    let topic = topics.name(0).to_string();
    run_ok(casewatch(&db).arg("migrate"));
    let now = chrono::Utc::now();
    let month_ago = now - chrono::Duration::days(30);
    let item =
        serde_json::json!({"item": {"code": "W01-001", "kind": "promised", "promised_days": 1}});
    let mut lines = Vec::new();
    // Five cases that really are late: their cards hold.
    for i in 0..5 {
        lines.push(event(
            &format!("late-{i}"),
            &format!("LATE-{i}"),
            "accepted",
            month_ago,
            item.clone(),
        ));
    }
    // 8,000 cases accepted a month ago and completed an hour later: in time. Their completions
    // come after all the acceptances, so a live clock would find them overdue meanwhile.
    for i in 0..8000 {
        lines.push(event(
            &format!("bl-{i}-a"),
            &format!("BL-{i}"),
            "accepted",
            month_ago,
            item.clone(),
        ));
    }
    let done = month_ago + chrono::Duration::hours(1);
    for i in 0..8000 {
        lines.push(event(
            &format!("bl-{i}-c"),
            &format!("BL-{i}"),
            "completed",
            done,
            serde_json::json!({"outcome": "approved"}),
        ));
    }
    // A tail of harmless events: the completions are all read while the backlog is long.
    for i in 0..300 {
        lines.push(event(
            &format!("tail-{i}"),
            &format!("TAIL-{i}"),
            "submitted",
            now - chrono::Duration::minutes(1),
            serde_json::json!({"item_code": "W01-001"}),
        ));
    }
    produce(&db, &topic, &lines).await;

    let receiver = Receiver::start(vec![], Reply::Status(200, vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("casewatch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[pipeline]\ncatch_up_lag = 100\ntick_millis = 10\n[alerts]\nhold_lag = 100\nrescan_secs = 2\n[[alerts.webhooks]]\nname = \"ops\"\nurl = \"{}\"\nformat = \"generic\"\n[[alerts.routes]]\nwebhooks = [\"ops\"]\n",
            receiver.url
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = spawn(
        service(&db, &topic)
            .arg("--config")
            .arg(&cfg)
            .env("CASEWATCH__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .arg("run"),
    );
    let limit = std::time::Instant::now() + Duration::from_secs(120);
    while metric(port, "casewatch_events_consumed_total").unwrap_or(0) < lines.len() as u64 {
        assert!(
            std::time::Instant::now() < limit,
            "the backlog was not consumed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Caught up: the late cases' cards (warning, overdue, legal overdue) are delivered.
    let client = db.client();
    let limit = std::time::Instant::now() + Duration::from_secs(60);
    let late: BTreeSet<String> = loop {
        let ids: Vec<String> = client
            .query("SELECT alert_id FROM alerts FINAL WHERE revoked = 0")
            .fetch_all()
            .await
            .unwrap();
        let received: BTreeSet<String> = receiver
            .requests()
            .iter()
            .map(|r| r.json()["alert_id"].as_str().unwrap().to_string())
            .collect();
        if ids.len() == 15 && received == ids.iter().cloned().collect() {
            break received;
        }
        assert!(
            std::time::Instant::now() < limit,
            "{} holding alerts, {} received",
            ids.len(),
            received.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(late.len(), 15);
    // No card was raised and then revoked by the backlog's own events.
    let revoked: u64 = client
        .query("SELECT count() FROM anomalies FINAL WHERE revoked = 1")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(revoked, 0);
    let cases: Vec<String> = client
        .query("SELECT DISTINCT case_id FROM alerts FINAL")
        .fetch_all()
        .await
        .unwrap();
    assert!(cases.iter().all(|c| c.starts_with("LATE-")), "{cases:?}");
    child.kill();
}
