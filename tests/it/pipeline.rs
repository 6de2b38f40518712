//! The ClickHouse sink against the real server: `replay --sink clickhouse` writes exactly the
//! rows `replay --out` writes, a second run changes nothing, and an interrupted run resumes
//! from its checkpoint to the same end state.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use casewatch::sinks::clickhouse::rows::CaseRecord;

use crate::support::TestDb;

pub const AS_OF: &str = "2020-03-01T00:00:00+08:00";

/// Simulated events (with duplicates and invalid lines) as NDJSON lines.
pub fn simulated_lines(seed: u64, months: u32, scale: f64) -> Vec<String> {
    use casewatch::simulate::{county_lines, SimOptions};
    let opts = SimOptions {
        seed,
        start: chrono::NaiveDate::from_ymd_opt(2019, 12, 1).unwrap(),
        months,
        scale,
        invalid_rate: 0.01,
        duplicate_rate: 0.01,
    };
    county_lines(&opts)
}

/// The `casewatch` binary pointed at a test database.
pub fn casewatch(db: &TestDb) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_casewatch"));
    c.env("CASEWATCH__CLICKHOUSE__URL", &db.url)
        .env("CASEWATCH__CLICKHOUSE__DATABASE", &db.name)
        .env("RUST_LOG", "warn");
    c
}

/// Writes the lines to `dir/events.ndjson`, migrates, and replays the file both into
/// ClickHouse and to CSV in `dir/out`, engine time advanced to `as_of`. Returns the file.
pub fn replay_both(db: &TestDb, dir: &Path, lines: &[String], as_of: &str) -> std::path::PathBuf {
    let file = dir.join("events.ndjson");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    run_ok(casewatch(db).arg("migrate"));
    run_ok(
        casewatch(db)
            .args(["replay", "--sink", "clickhouse", "--as-of", as_of])
            // Small batches: several writes, each in flight while the next batch is built.
            .env("CASEWATCH__PIPELINE__BATCH_EVENTS", "2000")
            .arg(&file),
    );
    run_ok(
        casewatch(db)
            .args(["replay", "--as-of", as_of, "--out"])
            .arg(dir.join("out"))
            .arg(&file),
    );
    file
}

/// The tables in ClickHouse equal `replay --out` of `file` (as of [`AS_OF`]) into `dir/out`.
async fn assert_tables_equal_csv_replay(db: &TestDb, dir: &Path, file: &Path) {
    run_ok(
        casewatch(db)
            .args(["replay", "--as-of", AS_OF, "--out"])
            .arg(dir.join("out"))
            .arg(file),
    );
    assert_same(&replay_csv(&dir.join("out")), &tables_as_csv(db).await);
    assert_case_index_complete(db).await;
}

/// The case index (`case_event_offsets`) holds every stored event's offset under its case, and
/// nothing else.
async fn assert_case_index_complete(db: &TestDb) {
    let c = db.client();
    let stored: Vec<(String, u32, u64)> = c
        .query("SELECT case_id, partition, offset FROM events FINAL ORDER BY case_id, partition, offset")
        .fetch_all()
        .await
        .unwrap();
    let indexed: Vec<(String, u32, u64)> = c
        .query("SELECT DISTINCT case_id, partition, arrayJoin(offsets) AS offset FROM case_event_offsets ORDER BY case_id, partition, offset")
        .fetch_all()
        .await
        .unwrap();
    assert!(!stored.is_empty());
    assert_eq!(indexed, stored, "the case index and the stored events");
}

pub fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ts(t: Option<u32>) -> String {
    t.map(|t| casewatch::replay::format_utc(i64::from(t)))
        .unwrap_or_default()
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    r.records()
        .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
        .collect()
}

/// The tables as the CSV outputs would show them, read back from ClickHouse.
pub async fn tables_as_csv(db: &TestDb) -> BTreeMap<&'static str, Vec<Vec<String>>> {
    let c = db.client();
    let mut out = BTreeMap::new();
    let cases: Vec<CaseRecord> = c
        .query("SELECT ?fields FROM cases FINAL ORDER BY case_id")
        .fetch_all()
        .await
        .unwrap();
    out.insert(
        "cases",
        cases
            .iter()
            .map(|r| {
                vec![
                    r.case_id.to_string(),
                    r.center_id.to_string(),
                    r.window_id.to_string(),
                    r.department.to_string(),
                    r.item_code.to_string(),
                    r.item_kind.to_string(),
                    r.status.to_string(),
                    ts(r.submitted_at),
                    ts(r.accepted_at),
                    ts(r.promised_deadline),
                    ts(r.legal_deadline),
                    ts(r.completed_at),
                    r.outcome.to_string(),
                    r.on_time.to_string(),
                    r.early.to_string(),
                    r.on_site.to_string(),
                    r.overdue.to_string(),
                    r.handling_seconds
                        .map(|h| h.to_string())
                        .unwrap_or_default(),
                    r.alert_level.to_string(),
                    r.rating.map(|v| v.to_string()).unwrap_or_default(),
                    r.events.to_string(),
                    r.calendar_provisional.to_string(),
                ]
            })
            .collect(),
    );
    let counters = casewatch::core::aggregate::COUNTER_NAMES;
    let daily: Vec<String> = c
        .query(&format!(
            "SELECT arrayStringConcat([toString(day), center_id, window_id, item_code, {}], ',') \
             FROM window_daily WHERE {} != 0 ORDER BY day, center_id, window_id, item_code",
            counters.map(|c| format!("toString({c})")).join(", "),
            counters
                .iter()
                .filter(|c| !c.ends_with("_seconds"))
                .copied()
                .collect::<Vec<_>>()
                .join(" + "),
        ))
        .fetch_all()
        .await
        .unwrap();
    out.insert(
        "window_daily",
        daily
            .iter()
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect(),
    );
    let anomalies: Vec<(String, String, String, u32, String, String)> = c
        .query("SELECT case_id, kind, level, detected_at, window_id, item_code FROM anomalies FINAL WHERE revoked = 0 ORDER BY case_id, kind")
        .fetch_all()
        .await
        .unwrap();
    out.insert(
        "anomalies",
        anomalies
            .into_iter()
            .map(|(c, k, l, d, w, i)| {
                vec![c, k, l, casewatch::replay::format_utc(i64::from(d)), w, i]
            })
            .collect(),
    );
    // The supervision table as `supervision.csv` writes it (times in UTC).
    let supervision: Vec<String> = c
        .query(
            "SELECT arrayStringConcat([case_id, kind, center_id, window_id, order_state, \
             ifNull(toString(ordered_at, 'UTC'), ''), ordered_by, order_note, toString(response_days), \
             ifNull(toString(response_due, 'UTC'), ''), ifNull(toString(responded_at, 'UTC'), ''), \
             responded_by, response_note, toString(response_late), \
             ifNull(toString(first_missed_deadline, 'UTC'), ''), toString(reopens), \
             ifNull(toString(closed_at, 'UTC'), ''), closed_by, close_note, \
             ifNull(toString(cancelled_at, 'UTC'), ''), appeal_state, \
             ifNull(toString(appealed_at, 'UTC'), ''), appealed_by, appeal_reason, \
             ifNull(toString(decided_at, 'UTC'), ''), decided_by, decision_note], '\t') \
             FROM supervision FINAL ORDER BY case_id, kind",
        )
        .fetch_all()
        .await
        .unwrap();
    out.insert(
        "supervision",
        supervision
            .iter()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect(),
    );
    let dead: Vec<(u64, String)> = c
        .query("SELECT line, reason FROM dead_letters FINAL ORDER BY line")
        .fetch_all()
        .await
        .unwrap();
    out.insert(
        "dead_letters",
        dead.into_iter()
            .map(|(l, r)| vec![l.to_string(), r])
            .collect(),
    );
    let monthly: Vec<String> = c
        .query(
            "SELECT arrayStringConcat([formatDateTime(month, '%Y-%m'), center_id, window_id, toString(completed), \
             toString(evaluations), ifNull(toString(on_time_rate), ''), ifNull(toString(early_rate), ''), \
             ifNull(toString(satisfaction_rate), ''), ifNull(toString(speedup_rate), '')], ',') \
             FROM window_monthly ORDER BY month, center_id, window_id",
        )
        .fetch_all()
        .await
        .unwrap();
    out.insert(
        "window_monthly",
        monthly
            .iter()
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect(),
    );
    out
}

/// The CSV outputs of `replay --out`, in the same shape as [`tables_as_csv`].
pub fn replay_csv(dir: &Path) -> BTreeMap<&'static str, Vec<Vec<String>>> {
    let mut out = BTreeMap::new();
    out.insert("cases", csv_rows(&dir.join("cases.csv")));
    let mut anomalies = csv_rows(&dir.join("anomalies.csv"));
    anomalies.sort();
    out.insert("anomalies", anomalies);
    out.insert("window_daily", csv_rows(&dir.join("window_daily.csv")));
    out.insert("dead_letters", csv_rows(&dir.join("dead_letters.csv")));
    out.insert("supervision", csv_rows(&dir.join("supervision.csv")));
    // completed, evaluations and four rates; ClickHouse prints rates without trailing zeros.
    let header: Vec<String> = csv::Reader::from_path(dir.join("window_monthly.csv"))
        .unwrap()
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let pick = [
        col("completed"),
        col("evaluations"),
        col("on_time_rate"),
        col("early_rate"),
        col("satisfaction_rate"),
        col("speedup_rate"),
    ];
    let trim = |v: &str| -> String {
        if v.is_empty() {
            return String::new();
        }
        let f: f64 = v.parse().unwrap();
        format!("{f}")
    };
    out.insert(
        "window_monthly",
        csv_rows(&dir.join("window_monthly.csv"))
            .into_iter()
            .map(|r| {
                let mut row = vec![r[0].clone(), r[1].clone(), r[2].clone()];
                row.extend(pick.iter().enumerate().map(|(i, &c)| {
                    if i < 2 {
                        r[c].clone()
                    } else {
                        trim(&r[c])
                    }
                }));
                row
            })
            .collect(),
    );
    out
}

pub fn assert_same(
    a: &BTreeMap<&'static str, Vec<Vec<String>>>,
    b: &BTreeMap<&'static str, Vec<Vec<String>>>,
) {
    for (table, rows) in a {
        let other = &b[table];
        assert!(
            !rows.is_empty() || table == &"dead_letters",
            "{table} is empty"
        );
        if rows != other {
            let first = rows.iter().zip(other).find(|(x, y)| x != y);
            panic!(
                "{table} differs: {} vs {} rows; first difference {first:?}",
                rows.len(),
                other.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_into_clickhouse_equals_the_csv_replay_and_is_idempotent() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    run_ok(casewatch(&db).arg("migrate")); // and again in replay_both: idempotent
    let file = replay_both(&db, dir.path(), &simulated_lines(11, 3, 0.3), AS_OF);
    let expected = replay_csv(&dir.path().join("out"));
    let first = tables_as_csv(&db).await;
    assert_same(&expected, &first);

    // A second run resumes after the last line: nothing changes.
    let log = run_ok(
        casewatch(&db)
            .args(["replay", "--sink", "clickhouse", "--as-of", AS_OF])
            .arg(&file),
    );
    assert!(log.contains("0 applied"), "{log}");
    assert_same(&first, &tables_as_csv(&db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_replay_resumes_to_the_same_tables() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let lines = simulated_lines(12, 3, 0.2);
    let full = dir.path().join("full").join("events.ndjson");
    let part = dir.path().join("part").join("events.ndjson");
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&full, lines.join("\n") + "\n").unwrap();
    // The same file (same name) cut after 40 % of its lines: the first run stops there.
    std::fs::write(&part, lines[..lines.len() * 2 / 5].join("\n") + "\n").unwrap();

    run_ok(casewatch(&db).arg("migrate"));
    run_ok(
        casewatch(&db)
            .args(["replay", "--sink", "clickhouse"])
            .arg(&part),
    );
    let log = run_ok(
        casewatch(&db)
            .args(["replay", "--sink", "clickhouse", "--as-of", AS_OF])
            .arg(&full),
    );
    assert!(log.contains("resumed at line"), "{log}");
    assert_tables_equal_csv_replay(&db, dir.path(), &full).await;
}

/// `clickhouse.log_queries`: every insert lands in the server's query log with its CPU, which
/// is how `scripts/bench-e2e` says what each table costs. And `clickhouse.parallel_insert_rows`:
/// a table's rows of a flush split into two inserts (here, with `concurrent_inserts` 1, one
/// after the other) still store every row once, exactly as the CSV replay says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_inserts_store_every_row_once_and_log_their_cpu() {
    use crate::support::http_query;
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, simulated_lines(13, 3, 0.3).join("\n") + "\n").unwrap();
    run_ok(casewatch(&db).arg("migrate"));
    let since = http_query(&db.url, &db.name, "SELECT toUInt32(now())");
    run_ok(
        casewatch(&db)
            .args(["replay", "--sink", "clickhouse", "--as-of", AS_OF])
            .env("CASEWATCH__CLICKHOUSE__LOG_QUERIES", "true")
            .env("CASEWATCH__CLICKHOUSE__PARALLEL_INSERT_ROWS", "100")
            // One insert at a time: the two halves wait for each other's permit.
            .env("CASEWATCH__CLICKHOUSE__CONCURRENT_INSERTS", "1")
            .env("CASEWATCH__PIPELINE__BATCH_EVENTS", "500")
            .arg(&file),
    );
    assert_tables_equal_csv_replay(&db, dir.path(), &file).await;
    db.admin()
        .query("SYSTEM FLUSH LOGS")
        .execute()
        .await
        .unwrap();
    let stored = http_query(&db.url, &db.name, "SELECT count() FROM events");
    // Only this test turns the setting on, so every logged insert into `events` is this
    // replay's (the other tests' queries are not logged).
    let logged = http_query(
        &db.url,
        &db.name,
        &format!(
            "SELECT count(), sum(written_rows), \
                    sum(ProfileEvents.Values[indexOf(ProfileEvents.Names, 'UserTimeMicroseconds')] \
                      + ProfileEvents.Values[indexOf(ProfileEvents.Names, 'SystemTimeMicroseconds')]) > 0, \
                    max(written_rows) \
             FROM system.query_log \
             WHERE type = 2 AND event_time >= toDateTime({}) AND query LIKE 'INSERT INTO `events`%'",
            since.trim()
        ),
    );
    let fields: Vec<&str> = logged.trim().split('\t').collect();
    let inserts: u64 = fields[0].parse().unwrap();
    assert!(inserts >= 2, "several batches, each an insert: {logged}");
    assert_eq!(
        fields[1],
        stored.trim(),
        "every stored event row was logged once"
    );
    // A split insert of a few rows may take less than a microsecond of CPU: the inserts
    // together carry their CPU time.
    assert_eq!(fields[2], "1", "the inserts carry their CPU time");
    let largest: u64 = fields[3].parse().unwrap();
    assert!(
        largest <= 250,
        "batches of 500 events went in two inserts each: {logged}"
    );
}
