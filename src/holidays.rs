//! The holiday files on disk, for the operator (SPEC §2, "Calendar coverage"):
//! `casewatch calendar import` (a State Council notice into `calendar.holidays_dir`, written
//! atomically) and `casewatch calendar coverage` (the years with data per centre, and the open
//! cases in ClickHouse whose deadlines reach beyond them).
//!
//! Reading the notice is pure ([`crate::core::notice`]); this module only prints and writes.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::Datelike;

use crate::config::Config;
use crate::core::notice::{weekday_name, Notice};

/// Every day a notice lists, one line each: date, weekday, 放假/上班, holiday.
pub(crate) fn days_table(notice: &Notice) -> String {
    let mut out = format!("{}年 holiday data read from the notice:\n", notice.year);
    out.push_str("date        weekday  day        holiday\n");
    for &(date, off, name) in &notice.days() {
        let _ = writeln!(
            out,
            "{date}  {}     {}  {name}",
            weekday_name(date.weekday()),
            if off { "放假 off " } else { "上班 work" }
        );
    }
    let days = notice.days();
    let off = days.iter().filter(|d| d.1).count();
    let _ = writeln!(
        out,
        "{} holidays, {off} days off, {} working weekend days",
        notice.holidays.len(),
        days.len() - off
    );
    out
}

/// Writes the year's holiday-cn file into `dir` as `YYYY.json`: a temporary file in the same
/// directory, synced, then renamed over the old one, so a reader (the running service's hot
/// reload) sees the old file or the whole new one, never a part. Returns the path and whether
/// a file of that year was replaced.
pub(crate) fn write_year(
    dir: &Path,
    notice: &Notice,
    papers: &[String],
) -> std::io::Result<(PathBuf, bool)> {
    let path = dir.join(format!("{}.json", notice.year));
    let replaced = path.exists();
    // Not `*.json`: the calendar never reads a half-written temporary file.
    let tmp = dir.join(format!(".{}.json.{}.tmp", notice.year, std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(notice.to_holiday_cn_json(papers).as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // The rename itself is durable once the directory is synced.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| (path, replaced))
}

/// `2007–2019, 2021–2026`.
pub(crate) fn year_ranges(years: &[i32]) -> String {
    let mut runs: Vec<(i32, i32)> = Vec::new();
    for &y in years {
        match runs.last_mut() {
            Some(run) if run.1 + 1 == y => run.1 = y,
            _ => runs.push((y, y)),
        }
    }
    if runs.is_empty() {
        return "none".into();
    }
    runs.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}–{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The years covered per centre (the default calendar and every configured centre).
pub(crate) fn coverage_table(cfg: &Config) -> anyhow::Result<String> {
    let calendars = cfg.calendars()?;
    let mut rows: Vec<(String, &crate::core::calendar::WorkCalendar)> =
        vec![("(default)".to_string(), &calendars.default)];
    let mut centres: Vec<_> = calendars.by_center.iter().collect();
    centres.sort_by(|a, b| a.0.cmp(b.0));
    rows.extend(centres.into_iter().map(|(id, cal)| (id.clone(), &**cal)));
    let source = if cfg.calendar.holidays_dir.is_empty() {
        "the data shipped in the binary".to_string()
    } else {
        cfg.calendar.holidays_dir.clone()
    };
    let mut out =
        format!("holiday data: {source}\ncentre      timezone          years with holiday data\n");
    for (id, cal) in rows {
        let _ = writeln!(
            out,
            "{id:<11} {:<17} {}",
            cal.tz().name(),
            year_ranges(cal.covered_years())
        );
    }
    Ok(out)
}

/// Open cases whose deadlines depend on a year without holiday data, per centre, from
/// ClickHouse (`cases FINAL`, `calendar_provisional = 1`).
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
pub(crate) struct ProvisionalCentre {
    pub(crate) center_id: String,
    pub(crate) open_cases: u64,
    /// The latest promised deadline among them (Unix seconds; 0 when none is set).
    pub(crate) latest_deadline: u32,
}

/// Reads [`ProvisionalCentre`] rows.
pub(crate) async fn provisional_open_cases(
    client: &clickhouse::Client,
) -> Result<Vec<ProvisionalCentre>, clickhouse::error::Error> {
    client
        .query(
            "SELECT center_id, count() AS open_cases, \
             toUInt32(max(ifNull(promised_deadline, toDateTime(0)))) AS latest_deadline \
             FROM cases FINAL \
             WHERE calendar_provisional = 1 AND status IN ('submitted', 'accepted', 'paused', 'unaccepted') \
             GROUP BY center_id ORDER BY center_id",
        )
        .fetch_all()
        .await
}

/// The open-cases part of `casewatch calendar coverage`.
pub(crate) fn provisional_table(
    cfg: &Config,
    rows: &[ProvisionalCentre],
) -> anyhow::Result<String> {
    let calendars = cfg.calendars()?;
    if rows.is_empty() {
        return Ok("open cases with provisional deadlines: none\n".into());
    }
    let mut out = String::from(
        "open cases with provisional deadlines (a year without holiday data, guessed Monday–Friday):\n\
         centre      open cases  latest promised deadline\n",
    );
    for r in rows {
        let cal = calendars.get(&r.center_id);
        let latest = if r.latest_deadline == 0 {
            "—".to_string()
        } else {
            chrono::DateTime::from_timestamp(i64::from(r.latest_deadline), 0)
                .map(|d| {
                    d.with_timezone(&cal.tz())
                        .format("%Y-%m-%d %H:%M")
                        .to_string()
                })
                .unwrap_or_default()
        };
        let _ = writeln!(out, "{:<11} {:>10}  {latest}", r.center_id, r.open_cases);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn year_ranges_join_consecutive_years() {
        assert_eq!(
            year_ranges(&[2007, 2008, 2009, 2011, 2013, 2014]),
            "2007–2009, 2011, 2013–2014"
        );
        assert_eq!(year_ranges(&[]), "none");
    }
}
