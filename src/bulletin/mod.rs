//! The monthly bulletin (月简报) and quarterly report (季度通报) of SPEC §6, from ClickHouse only.
//!
//! `load` reads the figures of a period (and of the period before, for 环比, and of the
//! twelve months up to it, for the trend chart); `rank` scores the windows; `render` writes
//! Markdown, a self-contained HTML page with inline SVG charts, and the ranking as CSV. Every
//! rate is computed from the period's sums exactly as `window_monthly` does (ratio of sums,
//! half-up to 4 decimals, none on a zero denominator) and shown as a percentage with two
//! decimals, "—" when it has no denominator.
//!
//! Decisions where the SPEC is silent: days are the local days of `window_daily`; an instant
//! (a deadline, a detection) belongs to the period when its local day does, in the calendar
//! of the bulletin's centre (the default timezone without `--center`); windows are ranked when
//! they accepted at least one case in the period (the others are listed in 五、无业务窗口); a
//! rate without a denominator adds nothing to the score; ties go to more completed cases, then
//! to the window id.

pub(crate) mod document;
pub(crate) mod render;

use chrono::{Datelike, NaiveDate};
use clickhouse::Row;
use serde::Deserialize;

use crate::config::Config;
use crate::core::aggregate::rate_e4;
use crate::core::calendar::{day_number, DayUnit, WorkCalendar, DAY};

/// A month or a quarter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Period {
    Month { year: i32, month: u32 },
    Quarter { year: i32, quarter: u32 },
}

impl Period {
    /// `2014-10`, `2014-Q3`, or `last-month` / `last-quarter` relative to `today`.
    pub(crate) fn parse(s: &str, today: NaiveDate) -> anyhow::Result<Period> {
        let bad = || {
            anyhow::anyhow!(
                "--period must be YYYY-MM, YYYY-Qn, last-month or last-quarter, not {s:?}"
            )
        };
        match s {
            "last-month" => {
                return Ok(Period::Month {
                    year: today.year(),
                    month: today.month(),
                }
                .previous())
            }
            "last-quarter" => {
                return Ok(Period::Quarter {
                    year: today.year(),
                    quarter: (today.month() - 1) / 3 + 1,
                }
                .previous())
            }
            _ => {}
        }
        let (y, rest) = s.split_once('-').ok_or_else(bad)?;
        let year: i32 = y.parse().map_err(|_| bad())?;
        if !(1900..=2200).contains(&year) {
            return Err(bad());
        }
        if let Some(q) = rest.strip_prefix('Q') {
            let quarter: u32 = q.parse().map_err(|_| bad())?;
            if (1..=4).contains(&quarter) {
                return Ok(Period::Quarter { year, quarter });
            }
        } else if rest.len() == 2 {
            let month: u32 = rest.parse().map_err(|_| bad())?;
            if (1..=12).contains(&month) {
                return Ok(Period::Month { year, month });
            }
        }
        Err(bad())
    }

    /// The label of file names and titles: `2014-10` or `2014-Q3`.
    pub(crate) fn label(&self) -> String {
        match *self {
            Period::Month { year, month } => format!("{year}-{month:02}"),
            Period::Quarter { year, quarter } => format!("{year}-Q{quarter}"),
        }
    }

    /// The months it covers.
    pub(crate) fn months(&self) -> Vec<(i32, u32)> {
        match *self {
            Period::Month { year, month } => vec![(year, month)],
            Period::Quarter { year, quarter } => {
                (1..=3).map(|i| (year, (quarter - 1) * 3 + i)).collect()
            }
        }
    }

    /// First and last local day.
    pub(crate) fn days(&self) -> (NaiveDate, NaiveDate) {
        let months = self.months();
        let (y0, m0) = months[0];
        let (y1, m1) = months[months.len() - 1];
        (first_day(y0, m0), last_day(y1, m1))
    }

    /// The period before (the previous month or quarter, across a year end).
    pub(crate) fn previous(&self) -> Period {
        match *self {
            Period::Month { year, month: 1 } => Period::Month {
                year: year - 1,
                month: 12,
            },
            Period::Month { year, month } => Period::Month {
                year,
                month: month - 1,
            },
            Period::Quarter { year, quarter: 1 } => Period::Quarter {
                year: year - 1,
                quarter: 4,
            },
            Period::Quarter { year, quarter } => Period::Quarter {
                year,
                quarter: quarter - 1,
            },
        }
    }

    pub(crate) fn is_quarter(&self) -> bool {
        matches!(self, Period::Quarter { .. })
    }
}

fn first_day(year: i32, month: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, 1).expect("a valid month")
}

fn last_day(year: i32, month: u32) -> NaiveDate {
    let (y, m) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    first_day(y, m).pred_opt().expect("a day before")
}

macro_rules! sums {
    ($($name:ident $constant:ident),* $(,)?) => {
        /// Sums of `window_daily` over some days (one window, or the whole centre): every
        /// counter of [`crate::window_counters`], in its order.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Row, Deserialize)]
        pub(crate) struct Sums {
            $(pub $name: i64,)*
        }

        impl Sums {
            /// Adds another sum to this one.
            pub(crate) fn add(&mut self, other: &Sums) {
                $(self.$name += other.$name;)*
            }
        }
    };
}

crate::window_counters!(sums);

/// What sums of `window_daily` over some days read: the partitions' rows directly. Equal to
/// summing the `window_daily` view (which sums the same rows per day and key, leaving out only
/// all-zero ones), but ClickHouse 18.16 does not push a view's outer WHERE into it, so the
/// view reads every day of every month; here the day range prunes the monthly partitions.
pub(crate) const DAILY_SUMS_FROM: &str = "window_daily_parts FINAL";

/// `sum(received), sum(accepted), …`: the columns of [`Sums`], in order.
pub(crate) fn sums_sql() -> String {
    crate::core::aggregate::counter_sql(|c| format!("sum({c})"))
}

/// The seven rates, in ten-thousandths (None: no denominator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rates {
    pub(crate) completion: Option<i64>,
    pub(crate) on_time: Option<i64>,
    pub(crate) early: Option<i64>,
    pub(crate) on_site: Option<i64>,
    pub(crate) evaluation: Option<i64>,
    pub(crate) satisfaction: Option<i64>,
    pub(crate) speedup: Option<i64>,
}

impl Sums {
    pub(crate) fn evaluations(&self) -> i64 {
        self.rating_1 + self.rating_2 + self.rating_3 + self.rating_4 + self.rating_5
    }

    /// 不满意: ratings 1 and 2.
    pub(crate) fn unsatisfied(&self) -> i64 {
        self.rating_1 + self.rating_2
    }

    pub(crate) fn rates(&self) -> Rates {
        Rates {
            completion: rate_e4(self.completed, self.accepted),
            on_time: rate_e4(self.completed_on_time, self.completed),
            early: rate_e4(self.completed_early, self.completed_promised),
            on_site: rate_e4(self.completed_on_site, self.completed),
            evaluation: rate_e4(self.evaluations(), self.completed),
            satisfaction: rate_e4(
                self.rating_3 + self.rating_4 + self.rating_5,
                self.evaluations(),
            ),
            speedup: rate_e4(
                self.promised_seconds - self.handling_seconds,
                self.promised_seconds,
            ),
        }
    }
}

/// One window's figures.
#[derive(Debug, Clone)]
pub(crate) struct WindowFigures {
    pub(crate) center_id: String,
    pub(crate) window_id: String,
    /// From config; the id when the window is not configured.
    pub(crate) name: String,
    pub(crate) department: String,
    pub(crate) sums: Sums,
}

/// A case named in 三、超期及异常办件.
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub(crate) struct CaseLine {
    pub(crate) case_id: String,
    pub(crate) window_id: String,
    pub(crate) item_code: String,
    pub(crate) item_name: String,
    pub(crate) status: String,
    /// The promised deadline (overdue cases) or the red card's detection (red cases).
    pub(crate) at: u32,
    /// The case's promised deadline, if it has one.
    pub(crate) deadline: Option<u32>,
    /// The end of the case, if it ended.
    pub(crate) ended_at: Option<u32>,
    /// The alert level (overdue cases) or the red kinds (red cases), comma-separated.
    pub(crate) kinds: String,
}

/// Anomalies of one kind in one window.
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub(crate) struct AnomalyCount {
    pub(crate) kind: String,
    pub(crate) level: String,
    pub(crate) window_id: String,
    pub(crate) count: u64,
}

/// Everything a bulletin shows.
#[derive(Debug, Clone)]
pub(crate) struct Figures {
    pub(crate) period: Period,
    /// The centre's name for the title: `--center`'s, or the only configured centre's.
    pub(crate) center_name: String,
    pub(crate) totals: Sums,
    pub(crate) previous: Sums,
    /// Every configured window (of the centre) and every window with data.
    pub(crate) windows: Vec<WindowFigures>,
    /// Quarter only: each month's totals.
    pub(crate) by_month: Vec<(String, Sums)>,
    /// The twelve months up to the period's last: (label, totals).
    pub(crate) trend: Vec<(String, Sums)>,
    pub(crate) overdue: Vec<CaseLine>,
    pub(crate) red: Vec<CaseLine>,
    pub(crate) anomalies: Vec<AnomalyCount>,
    /// The calendar of the centre, for working days late.
    pub(crate) calendar: std::sync::Arc<WorkCalendar>,
    /// Engine-independent "now" for open cases: the end of the period or the wall clock,
    /// whichever is earlier.
    pub(crate) as_of: i64,
    /// Cases of the period (accepted, completed or due in it) whose deadlines depend on a year
    /// without holiday data (`cases.calendar_provisional`): the bulletin's footnote.
    pub(crate) provisional_cases: u64,
}

impl Figures {
    /// Working days from the promised deadline to the case's end (or `as_of` while open);
    /// None when it has no deadline or is not late.
    pub(crate) fn working_days_late(&self, c: &CaseLine) -> Option<f64> {
        let deadline = i64::from(c.deadline?);
        let end = c.ended_at.map_or(self.as_of, i64::from);
        if end <= deadline {
            return None;
        }
        let s = self
            .calendar
            .working_seconds(deadline, end, DayUnit::Working);
        Some((s as f64 / DAY as f64 * 100.0).round() / 100.0)
    }
}

async fn totals(
    client: &clickhouse::Client,
    center: Option<&str>,
    (from, to): (NaiveDate, NaiveDate),
) -> Result<Sums, clickhouse::error::Error> {
    let rows: Vec<Sums> = client
        .query(&format!(
            "SELECT {} FROM {DAILY_SUMS_FROM} WHERE day >= toDate(?) AND day <= toDate(?) AND (? = '' OR center_id = ?)",
            sums_sql()
        ))
        .bind(from.to_string())
        .bind(to.to_string())
        .bind(center.unwrap_or(""))
        .bind(center.unwrap_or(""))
        .fetch_all()
        .await?;
    Ok(rows.into_iter().next().unwrap_or_default())
}

#[derive(Row, Deserialize)]
struct WindowSums {
    center_id: String,
    window_id: String,
    sums: Sums,
}

/// Reads a period's figures.
pub(crate) async fn load(
    client: &clickhouse::Client,
    cfg: &Config,
    period: Period,
    center: Option<&str>,
) -> anyhow::Result<Figures> {
    let days = period.days();
    let calendars = cfg.calendars()?;
    let calendar = calendars.get(center.unwrap_or("")).clone();
    // The period's instants: [first local midnight, the midnight after its last day).
    let start = local_midnight(&calendar, days.0);
    let end = local_midnight(&calendar, days.1.succ_opt().expect("a next day"));
    let rows: Vec<WindowSums> = client
        .query(&format!(
            "SELECT center_id, window_id, {} FROM {DAILY_SUMS_FROM} \
             WHERE day >= toDate(?) AND day <= toDate(?) AND (? = '' OR center_id = ?) \
             GROUP BY center_id, window_id ORDER BY center_id, window_id",
            sums_sql()
        ))
        .bind(days.0.to_string())
        .bind(days.1.to_string())
        .bind(center.unwrap_or(""))
        .bind(center.unwrap_or(""))
        .fetch_all()
        .await?;
    let mut windows: Vec<WindowFigures> = Vec::new();
    for w in cfg
        .windows
        .iter()
        .filter(|w| center.is_none_or(|c| w.center.is_empty() || w.center == c))
    {
        windows.push(WindowFigures {
            center_id: w.center.clone(),
            window_id: w.id.clone(),
            name: if w.name.is_empty() {
                w.id.clone()
            } else {
                w.name.clone()
            },
            department: w.department.clone(),
            sums: Sums::default(),
        });
    }
    for r in rows {
        let found = windows.iter_mut().find(|w| {
            w.window_id == r.window_id && (w.center_id.is_empty() || w.center_id == r.center_id)
        });
        match found {
            Some(w) => {
                if w.center_id.is_empty() {
                    w.center_id = r.center_id.clone();
                }
                w.sums.add(&r.sums);
            }
            None => windows.push(WindowFigures {
                center_id: r.center_id,
                name: r.window_id.clone(),
                window_id: r.window_id,
                department: String::new(),
                sums: r.sums,
            }),
        }
    }
    let totals_now = totals(client, center, days).await?;
    let previous = totals(client, center, period.previous().days()).await?;
    let mut by_month = Vec::new();
    if period.is_quarter() {
        for (y, m) in period.months() {
            let p = Period::Month { year: y, month: m };
            by_month.push((p.label(), totals(client, center, p.days()).await?));
        }
    }
    let mut trend = Vec::new();
    let (mut y, mut m) = *period.months().last().expect("a month");
    for _ in 0..12 {
        let p = Period::Month { year: y, month: m };
        trend.push((p.label(), totals(client, center, p.days()).await?));
        (y, m) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
    }
    trend.reverse();
    let overdue: Vec<CaseLine> = period_query(
        client,
        "SELECT case_id, window_id, item_code, item_name, status, assumeNotNull(promised_deadline) AS at, \
             promised_deadline, ended_at, alert_level AS kinds \
             FROM cases FINAL WHERE overdue = 1 AND promised_deadline >= toDateTime(?) \
             AND promised_deadline < toDateTime(?) AND (? = '' OR center_id = ?) ORDER BY promised_deadline, case_id",
        (start, end),
        center,
    )
        .fetch_all()
        .await?;
    let red: Vec<CaseLine> = period_query(
        client,
        "SELECT a.case_id, any(a.window_id), any(a.item_code), any(c.item_name), any(c.status), \
             min(a.detected_at) AS at, any(c.promised_deadline), any(c.ended_at) AS end_at, \
             arrayStringConcat(groupArray(a.kind), ',') AS kinds \
             FROM (SELECT case_id, window_id, item_code, kind, detected_at FROM anomalies FINAL \
                   WHERE revoked = 0 AND level = 'red' AND detected_at >= toDateTime(?) AND detected_at < toDateTime(?) \
                   AND (? = '' OR center_id = ?) ORDER BY kind) AS a \
             ANY LEFT JOIN (SELECT case_id, item_name, status, promised_deadline, ended_at FROM cases FINAL) AS c USING case_id \
             GROUP BY a.case_id ORDER BY at, a.case_id",
        (start, end),
        center,
    )
        .fetch_all()
        .await?;
    let anomalies: Vec<AnomalyCount> = period_query(
        client,
        "SELECT kind, level, window_id, count() FROM anomalies FINAL \
             WHERE revoked = 0 AND detected_at >= toDateTime(?) AND detected_at < toDateTime(?) \
             AND (? = '' OR center_id = ?) GROUP BY kind, level, window_id ORDER BY kind, window_id",
        (start, end),
        center,
    )
        .fetch_all()
        .await?;
    let provisional_cases: u64 = client
        .query(
            "SELECT count() FROM cases FINAL WHERE calendar_provisional = 1 \
             AND (? = '' OR center_id = ?) \
             AND ((accepted_at >= toDateTime(?) AND accepted_at < toDateTime(?)) \
               OR (completed_at >= toDateTime(?) AND completed_at < toDateTime(?)) \
               OR (promised_deadline >= toDateTime(?) AND promised_deadline < toDateTime(?)))",
        )
        .bind(center.unwrap_or(""))
        .bind(center.unwrap_or(""))
        .bind(start)
        .bind(end)
        .bind(start)
        .bind(end)
        .bind(start)
        .bind(end)
        .fetch_one()
        .await?;
    Ok(Figures {
        provisional_cases,
        period,
        center_name: match center {
            Some(c) => cfg
                .centers
                .iter()
                .find(|x| x.id == c && !x.name.is_empty())
                .map_or_else(|| c.to_string(), |x| x.name.clone()),
            None if cfg.centers.len() == 1 => cfg.centers[0].name.clone(),
            None => String::new(),
        },
        totals: totals_now,
        previous,
        windows,
        by_month,
        trend,
        overdue,
        red,
        anomalies,
        calendar,
        as_of: end.min(chrono::Utc::now().timestamp()),
    })
}

/// A query over the instants [start, end) of one centre (all when None); its SQL ends with
/// `… >= toDateTime(?) AND … < toDateTime(?) AND (? = '' OR center_id = ?)` placeholders.
fn period_query(
    client: &clickhouse::Client,
    sql: &str,
    (start, end): (i64, i64),
    center: Option<&str>,
) -> clickhouse::query::Query {
    client
        .query(sql)
        .bind(start)
        .bind(end)
        .bind(center.unwrap_or(""))
        .bind(center.unwrap_or(""))
}

/// Unix seconds of a local midnight in a calendar's timezone.
fn local_midnight(calendar: &WorkCalendar, date: NaiveDate) -> i64 {
    use chrono::TimeZone;
    let naive = date.and_hms_opt(0, 0, 0).expect("midnight");
    calendar
        .tz()
        .from_local_datetime(&naive)
        .earliest()
        .map_or_else(|| (day_number(date)) * DAY, |d| d.timestamp())
}

/// Ranking weights of the five rates (`[bulletin.weights]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Weights {
    pub(crate) on_site: f64,
    pub(crate) on_time: f64,
    pub(crate) early: f64,
    pub(crate) evaluation: f64,
    pub(crate) satisfaction: f64,
}

impl Weights {
    /// `[bulletin.weights]`.
    pub(crate) fn of(cfg: &Config) -> Self {
        let w = cfg.bulletin.weights;
        Self {
            on_site: w.on_site,
            on_time: w.on_time,
            early: w.early,
            evaluation: w.evaluation,
            satisfaction: w.satisfaction,
        }
    }
}

/// A ranked window.
#[derive(Debug, Clone)]
pub(crate) struct Ranked {
    pub(crate) rank: usize,
    pub(crate) window: WindowFigures,
    pub(crate) rates: Rates,
    /// Σ weight × rate, in percent points (two decimals).
    pub(crate) score: f64,
}

/// Ranks the windows that accepted cases; ties: more completed first, then the window id.
pub(crate) fn rank(windows: &[WindowFigures], w: Weights) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = windows
        .iter()
        .filter(|x| x.sums.accepted > 0)
        .map(|x| {
            let r = x.sums.rates();
            let part = |rate: Option<i64>, weight: f64| rate.unwrap_or(0) as f64 / 100.0 * weight;
            let score = part(r.on_site, w.on_site)
                + part(r.on_time, w.on_time)
                + part(r.early, w.early)
                + part(r.evaluation, w.evaluation)
                + part(r.satisfaction, w.satisfaction);
            Ranked {
                rank: 0,
                window: x.clone(),
                rates: r,
                score: (score * 100.0).round() / 100.0,
            }
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.window.sums.completed.cmp(&a.window.sums.completed))
            .then(a.window.center_id.cmp(&b.window.center_id))
            .then(a.window.window_id.cmp(&b.window.window_id))
    });
    for (i, r) in ranked.iter_mut().enumerate() {
        r.rank = i + 1;
    }
    ranked
}

#[cfg(test)]
mod tests;
