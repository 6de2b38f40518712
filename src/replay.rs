//! Replay: an NDJSON file of events through the engine in event-clock mode, and the CSV
//! outputs of `casewatch replay --out DIR` (SPEC §5 column names, UTC timestamps).
//!
//! The reading and the row formatting live here; the engine does all the deciding.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use crate::core::aggregate::{
    evaluations, format_e4, rate_e4, rate_fractions, Counters, COUNTER_NAMES, RATE_NAMES,
};
use crate::core::calendar::{date_of_day, Instant};
use crate::core::case::Facts;
use crate::core::engine::{ApplyOutcome, CaseRow, Engine};
use crate::core::event::{parse_event, CaseEvent, Reason};
use crate::core::interner::Interner;
use crate::core::rules::Rules;

/// One non-blank line of an NDJSON file: its 1-based physical line number and its bytes.
pub(crate) struct Line {
    pub(crate) number: u64,
    pub(crate) bytes: Vec<u8>,
}

/// Reads NDJSON lines, skipping blank ones; line numbers count every physical line.
pub(crate) struct NdjsonLines<R> {
    reader: R,
    number: u64,
}

impl<R: BufRead> NdjsonLines<R> {
    /// Lines of a reader.
    pub(crate) fn new(reader: R) -> Self {
        Self { reader, number: 0 }
    }
}

impl<R: BufRead> Iterator for NdjsonLines<R> {
    type Item = std::io::Result<Line>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let mut bytes = Vec::new();
            match self.reader.read_until(b'\n', &mut bytes) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
            self.number += 1;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(Ok(Line {
                number: self.number,
                bytes,
            }));
        }
    }
}

/// A line that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    pub(crate) line: u64,
    pub(crate) reason: Reason,
    pub(crate) raw: Vec<u8>,
}

/// What a replay saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ReplaySummary {
    pub(crate) lines: u64,
    pub(crate) applied: u64,
    pub(crate) duplicates: u64,
    pub(crate) dead_letters: Vec<DeadLetter>,
}

/// Feeds every line into the engine (event clock), then advances engine time to `as_of` when
/// it is later. `wall_now` is the clock of the `future_timestamp` rule.
pub(crate) fn replay_lines<R: BufRead>(
    engine: &mut Engine,
    lines: NdjsonLines<R>,
    wall_now: Instant,
    as_of: Option<Instant>,
    mut on_line: impl FnMut(&ReplaySummary, Option<&CaseEvent>),
) -> std::io::Result<ReplaySummary> {
    let mut summary = ReplaySummary::default();
    for line in lines {
        let line = line?;
        summary.lines += 1;
        let event = parse_event(&line.bytes, wall_now).and_then(|event| {
            match engine.apply(&event) {
                ApplyOutcome::Applied => summary.applied += 1,
                ApplyOutcome::Duplicate => summary.duplicates += 1,
                // Replays never evict, so no case can be missing.
                ApplyOutcome::Evicted => summary.applied += 1,
                ApplyOutcome::InvalidAction => return Err(Reason::InvalidAction),
            }
            Ok(event)
        });
        if let Err(reason) = &event {
            summary.dead_letters.push(DeadLetter {
                line: line.number,
                reason: *reason,
                raw: line.bytes.clone(),
            });
        }
        on_line(&summary, event.as_ref().ok());
    }
    if let Some(t) = as_of {
        engine.advance_to(t);
    }
    Ok(summary)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn format_utc(t: Instant) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn opt_time(t: Option<Instant>) -> String {
    t.map(format_utc).unwrap_or_default()
}

fn flag(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

/// Columns of `cases.csv` (SPEC §5 `cases`).
pub(crate) const CASE_COLUMNS: [&str; 22] = [
    "case_id",
    "center_id",
    "window_id",
    "department",
    "item_code",
    "item_kind",
    "status",
    "submitted_at",
    "accepted_at",
    "promised_deadline",
    "legal_deadline",
    "completed_at",
    "outcome",
    "on_time",
    "early",
    "on_site",
    "overdue",
    "handling_seconds",
    "alert_level",
    "rating",
    "version",
    "calendar_provisional",
];

/// The `cases` fields of a row, in `CASE_COLUMNS` order.
pub fn case_fields(row: &CaseRow, syms: &Interner, rules: &Rules) -> Vec<String> {
    let f: &Facts = &row.facts;
    vec![
        row.case_id.to_string(),
        syms.resolve(f.center).to_string(),
        syms.resolve(f.window).to_string(),
        syms.resolve(f.department).to_string(),
        syms.resolve(f.item_code).to_string(),
        f.item_kind
            .map(|k| k.as_str())
            .unwrap_or_default()
            .to_string(),
        f.status.as_str().to_string(),
        opt_time(f.submitted_at.get()),
        opt_time(f.accepted_at.get()),
        opt_time(f.promised_deadline.get()),
        opt_time(f.legal_deadline.get()),
        opt_time(f.completed_at.get()),
        f.outcome
            .map(|o| o.as_str())
            .unwrap_or_default()
            .to_string(),
        flag(f.on_time).into(),
        flag(f.early).into(),
        flag(f.on_site).into(),
        flag(f.overdue()).into(),
        f.handling_seconds
            .map(|h| h.to_string())
            .unwrap_or_default(),
        f.alert_level(rules)
            .map(|l| l.as_str())
            .unwrap_or_default()
            .to_string(),
        f.rating.map(|r| r.value.to_string()).unwrap_or_default(),
        row.events.to_string(),
        flag(f.provisional_year.is_some()).into(),
    ]
}

/// A `window_monthly` row: (month `YYYY-MM`, centre, window) → summed counters.
pub(crate) fn monthly_sums(
    daily: &[(String, String, String, String, Counters)],
) -> BTreeMap<(String, String, String), Counters> {
    let mut months: BTreeMap<(String, String, String), Counters> = BTreeMap::new();
    for (day, center, window, _item, c) in daily {
        let sums = months
            .entry((day[..7].to_string(), center.clone(), window.clone()))
            .or_insert(crate::core::aggregate::ZERO);
        for (s, v) in sums.iter_mut().zip(c) {
            *s += v;
        }
    }
    months
}

/// Writes the five CSV files of `replay --out`.
pub(crate) fn write_csv_outputs(
    engine: &mut Engine,
    summary: &ReplaySummary,
    dir: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let rules = engine.rules().clone();

    let rows = engine.all_case_rows();
    let mut w = csv::Writer::from_path(dir.join("cases.csv"))?;
    w.write_record(CASE_COLUMNS)?;
    for row in &rows {
        w.write_record(case_fields(row, engine.syms(), &rules))?;
    }
    w.flush()?;

    let mut anomalies: Vec<Vec<String>> = Vec::new();
    for row in &rows {
        for kind in crate::core::rules::AnomalyKind::ALL {
            if let Some(at) = row.facts.anomalies.get(kind) {
                anomalies.push(vec![
                    row.case_id.to_string(),
                    kind.as_str().to_string(),
                    rules.level(kind).as_str().to_string(),
                    format_utc(at),
                    engine.syms().resolve(row.facts.window).to_string(),
                    engine.syms().resolve(row.facts.item_code).to_string(),
                ]);
            }
        }
    }
    anomalies.sort();
    let mut w = csv::Writer::from_path(dir.join("anomalies.csv"))?;
    w.write_record([
        "case_id",
        "kind",
        "level",
        "detected_at",
        "window_id",
        "item_code",
    ])?;
    for r in anomalies {
        w.write_record(r)?;
    }
    w.flush()?;

    let mut daily: Vec<(String, String, String, String, Counters)> = engine
        .daily_rows()
        .into_iter()
        .map(|(k, c)| {
            let s = engine.syms();
            (
                date_of_day(k.day).format("%Y-%m-%d").to_string(),
                s.resolve(k.center).to_string(),
                s.resolve(k.window).to_string(),
                s.resolve(k.item_code).to_string(),
                c,
            )
        })
        .collect();
    daily.sort();
    let mut w = csv::Writer::from_path(dir.join("window_daily.csv"))?;
    let mut header = vec!["day", "center_id", "window_id", "item_code"];
    header.extend(COUNTER_NAMES);
    w.write_record(&header)?;
    for (day, center, window, item, c) in &daily {
        let mut rec = vec![day.clone(), center.clone(), window.clone(), item.clone()];
        rec.extend(c.iter().map(i64::to_string));
        w.write_record(rec)?;
    }
    w.flush()?;

    let mut w = csv::Writer::from_path(dir.join("window_monthly.csv"))?;
    let mut header = vec!["month", "center_id", "window_id"];
    header.extend(COUNTER_NAMES);
    header.push("evaluations");
    header.extend(RATE_NAMES);
    w.write_record(&header)?;
    for ((month, center, window), c) in monthly_sums(&daily) {
        let mut rec = vec![month, center, window];
        rec.extend(c.iter().map(i64::to_string));
        rec.push(evaluations(&c).to_string());
        for (n, d) in rate_fractions(&c) {
            rec.push(rate_e4(n, d).map(format_e4).unwrap_or_default());
        }
        w.write_record(rec)?;
    }
    w.flush()?;

    let mut w = csv::Writer::from_path(dir.join("dead_letters.csv"))?;
    w.write_record(["line", "reason"])?;
    for d in &summary.dead_letters {
        w.write_record([d.line.to_string(), d.reason.to_string()])?;
    }
    w.flush()?;
    write_supervision_csv(engine, dir)
}

/// `supervision.csv`: one row per (case, kind) acted on, the columns of the `supervision`
/// table (SPEC §9) without the writer's topic, partition and version.
fn write_supervision_csv(engine: &mut Engine, dir: &Path) -> anyhow::Result<()> {
    use crate::sinks::clickhouse::rows::{Origin, SupervisionRecord};
    let origin = Origin {
        topic: String::new(),
        partition: 0,
    };
    let mut rows: Vec<SupervisionRecord> = engine
        .all_supervision_rows()
        .iter()
        .map(|r| SupervisionRecord::new(r, engine.syms(), &origin))
        .collect();
    rows.sort_by(|a, b| (&a.case_id, &a.kind).cmp(&(&b.case_id, &b.kind)));
    let time = |t: Option<u32>| opt_time(t.map(i64::from));
    let mut w = csv::Writer::from_path(dir.join("supervision.csv"))?;
    w.write_record(SUPERVISION_COLUMNS)?;
    for r in rows {
        w.write_record([
            r.case_id,
            r.kind,
            r.center_id,
            r.window_id,
            r.order_state,
            time(r.ordered_at),
            r.ordered_by,
            r.order_note,
            r.response_days.to_string(),
            time(r.response_due),
            time(r.responded_at),
            r.responded_by,
            r.response_note,
            r.response_late.to_string(),
            time(r.first_missed_deadline),
            r.reopens.to_string(),
            time(r.closed_at),
            r.closed_by,
            r.close_note,
            time(r.cancelled_at),
            r.appeal_state,
            time(r.appealed_at),
            r.appealed_by,
            r.appeal_reason,
            time(r.decided_at),
            r.decided_by,
            r.decision_note,
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// Columns of `supervision.csv`.
const SUPERVISION_COLUMNS: [&str; 27] = [
    "case_id",
    "kind",
    "center_id",
    "window_id",
    "order_state",
    "ordered_at",
    "ordered_by",
    "order_note",
    "response_days",
    "response_due",
    "responded_at",
    "responded_by",
    "response_note",
    "response_late",
    "first_missed_deadline",
    "reopens",
    "closed_at",
    "closed_by",
    "close_note",
    "cancelled_at",
    "appeal_state",
    "appealed_at",
    "appealed_by",
    "appeal_reason",
    "decided_at",
    "decided_by",
    "decision_note",
];
