//! Calendar coverage (SPEC §2): `casewatch calendar import` of the State Council's notice, and a
//! running consumer whose provisional deadlines are recomputed once the next year is imported.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::{Datelike, TimeZone};

use crate::pipeline::{casewatch, run_ok};
use crate::service::{free_port, metric, produce, service, spawn};
use crate::support::{TestDb, TestTopics};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/holidays");
const NOTICES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/notices");

fn import(holidays_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_casewatch"))
        .env("CASEWATCH__CALENDAR__HOLIDAYS_DIR", holidays_dir)
        .args(["calendar", "import"])
        .args(args)
        .output()
        .unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn past_notices_import_to_the_shipped_files_and_bad_ones_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for year in 2015..=2026 {
        let shipped = std::fs::read_to_string(format!("{SHIPPED}/{year}.json")).unwrap();
        let papers: serde_json::Value = serde_json::from_str(&shipped).unwrap();
        let notice = format!("{NOTICES}/{year}.txt");
        let mut args = vec![notice.as_str()];
        for p in papers["papers"].as_array().unwrap() {
            args.extend(["--paper", p.as_str().unwrap()]);
        }
        let out = import(dir.path(), &args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{year}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!(
                "wrote {}",
                dir.path().join(format!("{year}.json")).display()
            )),
            "{stdout}"
        );
        let written = std::fs::read_to_string(dir.path().join(format!("{year}.json"))).unwrap();
        assert_eq!(written, shipped, "{year}");
    }
    let out = import(dir.path(), &[&format!("{NOTICES}/2026.txt")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("2026-02-15  周日     放假 off   春节"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2026-02-14  周六     上班 work  春节"),
        "{stdout}"
    );
    assert!(stdout.contains("replaced"), "{stdout}");

    // Refused: exit 2, the line quoted, nothing written (not even a temporary file).
    let empty = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(format!("{NOTICES}/2026.txt")).unwrap();
    let bad_line = "四、劳动节：5月1日（周五）至5日（周二）放假调休，共6天。5月9日（周六）上班。";
    let bad = good.replace(
        "四、劳动节：5月1日（周五）至5日（周二）放假调休，共5天。5月9日（周六）上班。",
        bad_line,
    );
    assert_ne!(bad, good);
    let file = empty.path().join("notice.txt");
    std::fs::write(&file, &bad).unwrap();
    let holidays = empty.path().join("holidays");
    std::fs::create_dir(&holidays).unwrap();
    let out = import(&holidays, &[file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(bad_line), "{stderr}");
    assert!(
        stderr.contains("共6天, but the dates give 5 days off"),
        "{stderr}"
    );
    assert!(files_in(&holidays).is_empty());

    // A dry run reads and prints, and writes nothing.
    let out = import(&holidays, &[&format!("{NOTICES}/2026.txt"), "--dry-run"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("dry run: nothing written"));
    assert!(files_in(&holidays).is_empty());

    // Without a holidays directory (the binary's own data) there is nowhere to write.
    let out = Command::new(env!("CARGO_BIN_EXE_casewatch"))
        .args(["calendar", "import", &format!("{NOTICES}/2026.txt")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("calendar.holidays_dir is not set"));
}

/// A synthetic notice for `year` (all seven holidays; the first week of January off), with
/// the weekdays of that year, so the test runs whatever the date.
fn synthetic_notice(year: i32) -> String {
    let weekday = |m: u32, d: u32| {
        let date = chrono::NaiveDate::from_ymd_opt(year, m, d).unwrap();
        ["周一", "周二", "周三", "周四", "周五", "周六", "周日"]
            [date.weekday().num_days_from_monday() as usize]
    };
    let holidays = [
        ("元旦", 1, 1, 7),
        ("春节", 2, 10, 16),
        ("清明节", 4, 4, 6),
        ("劳动节", 5, 1, 5),
        ("端午节", 6, 10, 12),
        ("中秋节", 9, 20, 22),
        ("国庆节", 10, 1, 7),
    ];
    let numbers = ["一", "二", "三", "四", "五", "六", "七"];
    let mut text = format!("国务院办公厅关于{year}年部分节假日安排的通知（测试用的虚构安排）\n");
    for (i, (name, m, a, b)) in holidays.into_iter().enumerate() {
        text.push_str(&format!(
            "{}、{name}：{m}月{a}日（{}）至{b}日（{}）放假，共{}天。\n",
            numbers[i],
            weekday(m, a),
            weekday(m, b),
            b - a + 1
        ));
    }
    text
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Polls `check` every 300 ms until it returns Some, for at most `secs`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let limit = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(std::time::Instant::now() < limit, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
struct Flagged {
    deadline: u32,
    calendar_provisional: u8,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_the_next_year_clears_provisional_deadlines_in_a_running_consumer() {
    let db = TestDb::new().await;
    let topics = TestTopics::new(1, 1).await;
    let topic = topics.name(0).to_string();
    run_ok(casewatch(&db).arg("migrate"));
    let shanghai = chrono_tz::Asia::Shanghai;
    let now = chrono::Utc::now();
    let year = now.with_timezone(&shanghai).year();
    // The holidays directory knows this year only.
    let holidays = tempfile::tempdir().unwrap();
    let this_year = std::fs::read_to_string(format!("{SHIPPED}/{year}.json"))
        .unwrap_or_else(|_| format!("{{\"year\": {year}, \"days\": []}}"));
    std::fs::write(holidays.path().join(format!("{year}.json")), this_year).unwrap();
    // Promised days: every weekday left this year, plus eight: the deadline is in January.
    let today = now.with_timezone(&shanghai).date_naive();
    let weekdays_left = today
        .iter_days()
        .skip(1)
        .take_while(|d| d.year() == year)
        .filter(|d| d.weekday().num_days_from_monday() < 5)
        .count();
    let accepted = now - chrono::Duration::hours(1);
    let event = serde_json::json!({
        "version": 1, "event_id": "prov-1", "case_id": "PROV-1", "type": "accepted",
        "occurred_at": accepted.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "source": "hall", "center_id": "C001", "window_id": "W01",
        "item": {"code": "W01-001", "kind": "promised", "promised_days": weekdays_left + 8}
    })
    .to_string();
    produce(&db, &topic, &[event]).await;
    let port = free_port();
    let mut child = spawn(
        service(&db, &topic)
            .env("CASEWATCH__CALENDAR__HOLIDAYS_DIR", holidays.path())
            .env("CASEWATCH__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .arg("run"),
    );
    let client = db.client();
    let row = || {
        let client = client.clone();
        async move {
            client
                .query("SELECT toUInt32(assumeNotNull(promised_deadline)) AS deadline, calendar_provisional \
                        FROM cases FINAL WHERE case_id = 'PROV-1'")
                .fetch_optional::<Flagged>()
                .await
                .unwrap()
        }
    };
    let guessed = eventually(90, "the case row", || async { row().await }).await;
    assert_eq!(guessed.calendar_provisional, 1, "{guessed:?}");
    let deadline_year = shanghai
        .timestamp_opt(i64::from(guessed.deadline), 0)
        .unwrap()
        .year();
    assert_eq!(deadline_year, year + 1);
    eventually(30, "the provisional metric", || async {
        (metric(port, "casewatch_calendar_provisional_open_cases") == Some(1)).then_some(())
    })
    .await;
    let ready = http_get(port, "/readyz").unwrap();
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(
        ready.contains(&format!("1 open cases need {}", year + 1)),
        "{ready}"
    );

    // `calendar coverage` names the years and the open case that reaches beyond them.
    let coverage = Command::new(env!("CARGO_BIN_EXE_casewatch"))
        .env("CASEWATCH__CLICKHOUSE__URL", &db.url)
        .env("CASEWATCH__CLICKHOUSE__DATABASE", &db.name)
        .env("CASEWATCH__CALENDAR__HOLIDAYS_DIR", holidays.path())
        .args(["calendar", "coverage"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&coverage.stdout);
    assert!(
        coverage.status.success(),
        "{}",
        String::from_utf8_lossy(&coverage.stderr)
    );
    assert!(
        text.contains(&format!("(default)   Asia/Shanghai     {year}\n")),
        "{text}"
    );
    assert!(text.contains("C001                 1  "), "{text}");

    // The bulletin of the acceptance's month says its numbers are partly provisional.
    let out = tempfile::tempdir().unwrap();
    let month = accepted
        .with_timezone(&shanghai)
        .format("%Y-%m")
        .to_string();
    run_ok(
        casewatch(&db)
            .env("CASEWATCH__CALENDAR__HOLIDAYS_DIR", holidays.path())
            .args(["bulletin", "--period", &month, "--out"])
            .arg(out.path()),
    );
    let md = std::fs::read_to_string(out.path().join(format!("bulletin-{month}.md"))).unwrap();
    assert!(
        md.contains("注：本期有 1 件办件的办理时限涉及尚未导入节假日安排的年份"),
        "{md}"
    );

    // The operator imports the next year's notice; the running consumer reloads it.
    let notice = out.path().join("notice.txt");
    std::fs::write(&notice, synthetic_notice(year + 1)).unwrap();
    let out = import(holidays.path(), &[notice.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let real = eventually(60, "the recomputed row", || async {
        row().await.filter(|r| r.calendar_provisional == 0)
    })
    .await;
    // January 1–7 are now days off: the deadline moves by at least four working days.
    assert!(
        real.deadline >= guessed.deadline + 4 * 86_400,
        "{guessed:?} -> {real:?}"
    );
    eventually(30, "the metric back to 0", || async {
        (metric(port, "casewatch_calendar_provisional_open_cases") == Some(0)).then_some(())
    })
    .await;
    let ready = http_get(port, "/readyz").unwrap();
    assert!(
        ready.starts_with("HTTP/1.1 200") && !ready.contains("open cases need"),
        "{ready}"
    );
    child.kill();
}

#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
struct Card {
    kind: String,
    detected_at: u32,
    revoked: u8,
    calendar_provisional: u8,
}

/// The case one year earlier, so it is in the past whatever today is: accepted Saturday
/// 2025-12-20 with 15 working days while the directory ends with 2025; engine time (event
/// clock) 2026-01-10 12:00. Mon–Fri guesses the deadline 2026-01-10 00:00 and raises `overdue`;
/// the 2026 notice (New Year Jan 1–3 off, Sunday Jan 4 worked) puts it at 2026-01-13 00:00, so
/// importing it revokes the card and clears the flag, in the running consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_the_notice_revokes_the_cards_a_guessed_calendar_raised() {
    let db = TestDb::new().await;
    let topics = TestTopics::new(1, 1).await;
    let topic = topics.name(0).to_string();
    run_ok(casewatch(&db).arg("migrate"));
    let holidays = tempfile::tempdir().unwrap();
    for year in 2007..=2025 {
        std::fs::copy(
            format!("{SHIPPED}/{year}.json"),
            holidays.path().join(format!("{year}.json")),
        )
        .unwrap();
    }
    let event = |id: &str, case: &str, at: &str| {
        serde_json::json!({
            "version": 1, "event_id": id, "case_id": case, "type": "accepted",
            "occurred_at": at, "source": "hall", "center_id": "C001", "window_id": "W01",
            "item": {"code": "W01-001", "kind": "promised", "promised_days": 15}
        })
        .to_string()
    };
    produce(
        &db,
        &topic,
        &[
            event("g-1", "GUESS-1", "2025-12-20T10:00:00+08:00"),
            // Another case's event moves engine time to 2026-01-10 12:00.
            event("g-2", "LATER-1", "2026-01-10T12:00:00+08:00"),
        ],
    )
    .await;
    let mut child = spawn(
        service(&db, &topic)
            .env("CASEWATCH__CALENDAR__HOLIDAYS_DIR", holidays.path())
            .env("CASEWATCH__ENGINE__CLOCK", "event")
            .arg("run"),
    );
    let client = db.client();
    let cards = || {
        let client = client.clone();
        async move {
            client
                .query(
                    "SELECT kind, toUInt32(detected_at) AS detected_at, revoked, calendar_provisional \
                     FROM alerts FINAL WHERE case_id = 'GUESS-1' ORDER BY kind",
                )
                .fetch_all::<Card>()
                .await
                .unwrap()
        }
    };
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp() as u32;
    let guessed = eventually(90, "the guessed overdue card", || async {
        let c = cards().await;
        c.iter().any(|c| c.kind == "overdue").then_some(c)
    })
    .await;
    let overdue = guessed.iter().find(|c| c.kind == "overdue").unwrap();
    assert_eq!(
        (
            overdue.detected_at,
            overdue.revoked,
            overdue.calendar_provisional
        ),
        (at("2026-01-10T00:00:00+08:00"), 0, 1)
    );

    let out = import(holidays.path(), &[&format!("{NOTICES}/2026.txt")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let real = eventually(60, "the revocation", || async {
        let c = cards().await;
        c.iter()
            .any(|c| c.kind == "overdue" && c.revoked == 1)
            .then_some(c)
    })
    .await;
    // The warning still holds, from its real instant, and is no longer provisional.
    let warning = real.iter().find(|c| c.kind == "deadline_warning").unwrap();
    assert_eq!(
        (
            warning.detected_at,
            warning.revoked,
            warning.calendar_provisional
        ),
        (at("2026-01-09T00:00:00+08:00"), 0, 0)
    );
    // The batch's tables are written concurrently: the case row may land just after the alerts.
    let row = eventually(30, "the recomputed case row", || async {
        let row: Flagged = client
            .query(
                "SELECT toUInt32(assumeNotNull(promised_deadline)) AS deadline, calendar_provisional \
                    FROM cases FINAL WHERE case_id = 'GUESS-1'",
            )
            .fetch_one()
            .await
            .unwrap();
        (row.calendar_provisional == 0).then_some(row)
    })
    .await;
    assert_eq!(
        row,
        Flagged {
            deadline: at("2026-01-13T00:00:00+08:00"),
            calendar_provisional: 0
        }
    );
    child.kill();
}
