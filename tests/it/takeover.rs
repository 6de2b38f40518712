//! Takeovers and fenced writes (SPEC §7): a consumer that lost a partition cannot make its late
//! rows win over the new owner's. Two owners of one partition are played by hand against the
//! real ClickHouse, message by message and flush by flush; replays resume from snapshots, and
//! a snapshot of another format is ignored, never misread.

use std::sync::Arc;

use casewatch::core::calendar::{HolidayTable, WorkCalendar};
use casewatch::core::engine::{Calendars, Engine};
use casewatch::core::rules::Rules;
use casewatch::pipeline::ManualOwner;
use serde_json::json;

use crate::pipeline::{casewatch, run_ok};
use crate::support::{event_json, TestDb};

fn engine() -> Engine {
    let mut t = HolidayTable::new();
    for b in casewatch::config::EMBEDDED_HOLIDAYS {
        t.merge_json(b).unwrap();
    }
    let cal = WorkCalendar::new(chrono_tz::Asia::Shanghai, &t, &Default::default());
    Engine::new(Rules::default(), Calendars::new(Arc::new(cal)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owners_late_write_loses_against_the_new_owner() {
    let db = TestDb::new().await;
    run_ok(casewatch(&db).arg("migrate"));
    let topic = "fenced";
    let item = json!({"item": {"code": "W01-001", "kind": "promised", "promised_days": 7}});
    let accepted = event_json("f-a", "F-1", "accepted", "2018-10-15T10:00:00+08:00", item);
    let completed = event_json(
        "f-c",
        "F-1",
        "completed",
        "2018-10-16T10:00:00+08:00",
        json!({"outcome": "approved"}),
    );
    let rating = |id: &str, value: u8| {
        event_json(
            id,
            "F-1",
            "evaluated",
            "2018-10-17T10:00:00+08:00",
            json!({ "rating": value }),
        )
    };

    // The first owner writes the acceptance.
    let mut old = ManualOwner::take_over(db.client(), topic, 0, engine())
        .await
        .unwrap();
    old.handle(0, &accepted);
    old.flush().await.unwrap();
    // A second consumer takes the partition over (the first one is, say, paused for longer
    // than its session) and writes the completion and an evaluation of 5.
    let mut new = ManualOwner::take_over(db.client(), topic, 0, engine())
        .await
        .unwrap();
    assert!(
        new.epoch() > old.epoch(),
        "{} > {}",
        new.epoch(),
        old.epoch()
    );
    new.handle(1, &completed);
    new.handle(2, &rating("f-e5", 5));
    new.flush().await.unwrap();
    // The first owner wakes up with other rows in hand and writes them after the new owner.
    old.handle(1, &completed);
    old.handle(2, &rating("f-e1", 1));
    old.flush().await.unwrap();

    let client = db.client();
    let case: (Option<u8>, u32) = client
        .query("SELECT rating, events FROM cases FINAL WHERE case_id = 'F-1'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(case, (Some(5), 3), "the new owner's case row stands");
    let sums: (i64, i64, i64) = client
        .query("SELECT sum(completed), sum(rating_5), sum(rating_1) FROM window_daily")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(sums, (1, 1, 0), "the new owner's aggregates stand");
    let checkpoint: (u64, u64) = client
        .query("SELECT next_offset, epoch FROM checkpoints FINAL WHERE topic = ?")
        .bind(topic)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        checkpoint,
        (3, new.epoch()),
        "the new owner's checkpoint stands"
    );

    // The next owner continues from the new owner's checkpoint and state.
    let mut next = ManualOwner::take_over(db.client(), topic, 0, engine())
        .await
        .unwrap();
    assert!(next.epoch() > new.epoch());
    next.handle(2, &rating("f-e5", 5));
    next.flush().await.unwrap();
    let case: (Option<u8>, u32) = client
        .query("SELECT rating, events FROM cases FINAL WHERE case_id = 'F-1'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(case, (Some(5), 3));
}

/// `replay --sink clickhouse` resumed twice on a growing file with a snapshot written every
/// 300 lines: once from a good snapshot, once after the stored snapshot was marked with a
/// format this build does not read, which it must ignore (re-applying the stored events)
/// rather than misread. Both times the tables equal a clean replay of the whole file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_from_a_snapshot_and_ignores_one_of_another_format() {
    use crate::pipeline::{assert_same, replay_csv, tables_as_csv};
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let lines = crate::pipeline::simulated_lines(41, 3, 0.2);
    let file = dir.path().join("events.ndjson");
    run_ok(casewatch(&db).arg("migrate"));
    let replay_upto = |n: usize| {
        std::fs::write(&file, lines[..n].join("\n") + "\n").unwrap();
        run_ok(
            casewatch(&db)
                .args(["replay", "--sink", "clickhouse"])
                .env("CASEWATCH__PIPELINE__BATCH_EVENTS", "500")
                .env("CASEWATCH__PIPELINE__SNAPSHOT_EVERY_EVENTS", "300")
                .env("RUST_LOG", "warn,casewatch=info")
                .arg(&file),
        )
    };
    let compare = |n: usize| {
        let out = dir.path().join(format!("out{n}"));
        let file = dir.path().join(format!("clean{n}.ndjson"));
        std::fs::write(&file, lines[..n].join("\n") + "\n").unwrap();
        run_ok(
            casewatch(&db)
                .args(["replay", "--out"])
                .arg(&out)
                .arg(&file),
        );
        replay_csv(&out)
    };
    let client = db.client();
    let (a, b) = (lines.len() / 3, lines.len() * 2 / 3);
    replay_upto(a);
    let (offset, format): (u64, u32) = client
        .query("SELECT c.snapshot_offset, s.format FROM checkpoints AS c FINAL ANY INNER JOIN (SELECT topic, partition, epoch AS snapshot_epoch, next_offset AS snapshot_offset, format FROM snapshots FINAL) AS s USING (topic, partition, snapshot_epoch, snapshot_offset)")
        .fetch_one()
        .await
        .unwrap();
    assert!(offset > 0 && format == casewatch::core::engine::snapshot::FORMAT);

    // Resumed from that snapshot.
    let log = replay_upto(b);
    assert!(!log.contains("snapshot not used"), "{log}");
    assert_same(&compare(b), &tables_as_csv(&db).await);

    // The stored snapshot now says another format: ignored, the stored events re-applied.
    client
        .query("ALTER TABLE snapshots UPDATE format = 999 WHERE 1")
        .execute()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left: u64 = client
            .query("SELECT count() FROM snapshots WHERE format != 999")
            .fetch_one()
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the mutation did not run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let log = replay_upto(lines.len());
    assert!(log.contains("snapshot not used (format 999"), "{log}");
    assert_same(&compare(lines.len()), &tables_as_csv(&db).await);
}
