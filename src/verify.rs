//! `casewatch verify`: recounts `window_daily` from `cases`, `anomalies` and `supervision` in ClickHouse,
//! independently of the engine's incremental aggregation, and reports every differing row.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use chrono::NaiveDate;

use crate::config::Config;
use crate::core::aggregate::{counter, Counters, COUNTER_NAMES};
use crate::core::calendar::{date_of_day, day_number};
use crate::core::engine::Calendars;
use crate::sinks::clickhouse::rows::CaseRecord;

/// (day, centre, window, item) → counters.
pub(crate) type DailyTable = BTreeMap<(i64, String, String, String), Counters>;

/// A holding anomaly: (case, level, detected_at).
pub(crate) type HeldAnomaly = (String, String, u32);

/// What a `supervision` row contributes: (case, ordered_at, response_late,
/// first_missed_deadline, responded_at, appeal_state, appealed_at, decided_at).
pub(crate) type SupervisionFacts = (
    String,
    Option<u32>,
    u8,
    Option<u32>,
    Option<u32>,
    String,
    Option<u32>,
    Option<u32>,
);

/// The columns of [`SupervisionFacts`].
const SUPERVISION_FACTS: &str = "case_id, ordered_at, response_late, first_missed_deadline, \
     responded_at, appeal_state, appealed_at, decided_at";

/// The `window_daily` rows that `cases`, the holding anomalies and `supervision` imply.
pub(crate) fn expected_daily(
    cases: &[CaseRecord],
    anomalies: &[HeldAnomaly],
    supervision: &[SupervisionFacts],
    calendars: &Calendars,
) -> DailyTable {
    let mut out: DailyTable = BTreeMap::new();
    let by_id: HashMap<&str, &CaseRecord> = cases.iter().map(|c| (c.case_id.as_str(), c)).collect();
    let mut add = |c: &CaseRecord, t: u32, counter: u8, v: i64| {
        let day = calendars.get(&c.center_id).local_day(i64::from(t));
        let key = (
            day,
            c.center_id.to_string(),
            c.window_id.to_string(),
            c.item_code.to_string(),
        );
        out.entry(key).or_insert(crate::core::aggregate::ZERO)[counter as usize] += v;
    };
    for c in cases {
        if let Some(t) = c.submitted_at {
            add(c, t, counter::RECEIVED, 1);
        }
        if let Some(t) = c.accepted_at {
            add(c, t, counter::ACCEPTED, 1);
        }
        match (c.status.as_str(), c.ended_at) {
            ("not_accepted", Some(t)) => add(c, t, counter::NOT_ACCEPTED, 1),
            ("withdrawn", Some(t)) => add(c, t, counter::WITHDRAWN, 1),
            _ => {}
        }
        if let Some(t) = c.completed_at {
            add(c, t, counter::COMPLETED, 1);
            add(c, t, counter::COMPLETED_ON_TIME, i64::from(c.on_time));
            add(c, t, counter::COMPLETED_EARLY, i64::from(c.early));
            add(c, t, counter::COMPLETED_ON_SITE, i64::from(c.on_site));
            if let (Some(h), Some(p)) = (c.handling_seconds, c.promised_seconds) {
                add(c, t, counter::COMPLETED_PROMISED, 1);
                add(c, t, counter::HANDLING_SECONDS, h);
                add(c, t, counter::PROMISED_SECONDS, p);
            }
        }
        if c.overdue == 1 {
            if let Some(d) = c.promised_deadline {
                add(c, d, counter::BECAME_OVERDUE, 1);
            }
        }
        if let (Some(r), Some(t)) = (c.rating, c.rated_at) {
            let k = if c.rating_is_default == 1 {
                counter::DEFAULT_EVALUATIONS
            } else {
                counter::RATING_1 + r.clamp(1, 5) - 1
            };
            add(c, t, k, 1);
        }
    }
    for (case_id, level, detected_at) in anomalies {
        let Some(c) = by_id.get(case_id.as_str()) else {
            continue;
        };
        let k = match level.as_str() {
            "warning" => counter::ALERTS_WARNING,
            "yellow" => counter::ALERTS_YELLOW,
            _ => counter::ALERTS_RED,
        };
        add(c, *detected_at, k, 1);
        add(c, *detected_at, counter::ANOMALIES, 1);
    }
    for row in supervision {
        if let Some(c) = by_id.get(row.0.as_str()) {
            for (t, counter) in supervision_counts(row) {
                add(c, t, counter, 1);
            }
        }
    }
    out.retain(|_, c| c.iter().any(|v| *v != 0));
    out
}

/// The `window_daily` counts one `supervision` row implies: (instant, counter).
fn supervision_counts(row: &SupervisionFacts) -> Vec<(u32, u8)> {
    let (_, ordered_at, late, missed, responded_at, appeal, appealed_at, decided_at) = row;
    let mut out = Vec::new();
    if let Some(t) = ordered_at {
        out.push((*t, counter::ORDERS));
    }
    match (late, missed, responded_at) {
        (1, Some(t), _) => out.push((*t, counter::ORDERS_OVERDUE)),
        (_, None, Some(t)) => out.push((*t, counter::ORDERS_RESPONDED_ON_TIME)),
        _ => {}
    }
    if let Some(t) = appealed_at {
        out.push((*t, counter::APPEALS));
    }
    match (appeal.as_str(), decided_at) {
        ("granted", Some(t)) => out.push((*t, counter::APPEALS_GRANTED)),
        ("rejected", Some(t)) => out.push((*t, counter::APPEALS_REJECTED)),
        _ => {}
    }
    out
}

/// Differences between the expected and the stored rows, as printable lines.
pub(crate) fn compare(expected: &DailyTable, actual: &DailyTable) -> Vec<String> {
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<_> = expected.keys().chain(actual.keys()).collect();
    for k in keys {
        let (e, a) = (
            expected
                .get(k)
                .copied()
                .unwrap_or(crate::core::aggregate::ZERO),
            actual
                .get(k)
                .copied()
                .unwrap_or(crate::core::aggregate::ZERO),
        );
        if e != a {
            let fields: Vec<String> = (0..crate::core::aggregate::COUNTERS)
                .filter(|&i| e[i] != a[i])
                .map(|i| format!("{} expected {} found {}", COUNTER_NAMES[i], e[i], a[i]))
                .collect();
            out.push(format!(
                "{} {} {} {}: {}",
                date_of_day(k.0),
                k.1,
                k.2,
                k.3,
                fields.join(", ")
            ));
        }
    }
    out
}

/// Reads ClickHouse and compares the days `from..=to`; exit code 0 when they agree, 1 if not.
pub(crate) async fn verify_command(
    cfg: &Config,
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<i32> {
    let client = crate::sinks::clickhouse::client(&cfg.clickhouse);
    let calendars = cfg.calendars()?;
    let cases: Vec<CaseRecord> = client
        .query("SELECT ?fields FROM cases FINAL")
        .fetch_all()
        .await
        .with_context(|| format!("cannot read cases from {}", cfg.clickhouse.url))?;
    let anomalies: Vec<HeldAnomaly> = client
        .query("SELECT case_id, level, detected_at FROM anomalies FINAL WHERE revoked = 0")
        .fetch_all()
        .await?;
    let supervision: Vec<SupervisionFacts> = client
        .query(&format!(
            "SELECT {SUPERVISION_FACTS} FROM supervision FINAL"
        ))
        .fetch_all()
        .await?;
    let (first, last) = (day_number(from), day_number(to));
    let mut expected = expected_daily(&cases, &anomalies, &supervision, &calendars);
    expected.retain(|k, _| (first..=last).contains(&k.0));
    let rows: Vec<crate::sinks::clickhouse::rows::DailyRecord> = client
        .query(&format!(
            "SELECT day, center_id, window_id, item_code, {}, '' AS topic, toUInt32(0) AS partition, \
             toUInt64(0) AS version FROM window_daily WHERE day >= toDate(?) AND day <= toDate(?)",
            crate::core::aggregate::counter_sql(str::to_string)
        ))
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all()
        .await?;
    let mut actual: DailyTable = BTreeMap::new();
    for r in rows {
        let c = r.counters();
        if c.iter().any(|v| *v != 0) {
            actual.insert((i64::from(r.day), r.center_id, r.window_id, r.item_code), c);
        }
    }
    let diff = compare(&expected, &actual);
    if diff.is_empty() {
        println!(
            "window_daily agrees with cases, anomalies and supervision: {} rows from {from} to {to}",
            actual.len()
        );
        Ok(0)
    } else {
        for d in &diff {
            println!("{d}");
        }
        println!(
            "{} window_daily rows differ from what cases, anomalies and supervision imply",
            diff.len()
        );
        Ok(1)
    }
}
