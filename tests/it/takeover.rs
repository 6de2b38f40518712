//! Takeovers and fenced writes (SPEC §7): a consumer that lost a partition cannot make its late
//! rows win over the new owner's. Two owners of one partition are played by hand against the
//! real ClickHouse, message by message and flush by flush.

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
