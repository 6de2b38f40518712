//! Working-day calendar of SPEC §2: which local days are working days, and working-time
//! arithmetic between instants (`working_seconds`, `add_working`).
//!
//! Pure: no I/O (holiday files are parsed from bytes by [`HolidayTable::parse_json`]), no clock.
//! All instants are whole UTC seconds ([`Instant`]); arithmetic happens on the centre's *local
//! naive* timeline, where every day is exactly 86 400 s, because the SPEC counts each working day
//! as 24 hours from local 00:00 to 24:00.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;

/// An instant: whole seconds since the Unix epoch, UTC.
pub type Instant = i64;

/// Seconds in one (local) day.
pub const DAY: i64 = 86_400;

/// How an item counts its days (`item.day_unit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DayUnit {
    /// Only working days count (the default).
    #[default]
    Working,
    /// Every day counts.
    Calendar,
}

/// Public holidays and make-up working days: local date → is it a day off.
///
/// Built from holiday-cn JSON files (`days[]` of `{date, isOffDay}`); a date listed twice takes
/// the entry of the file merged later.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HolidayTable {
    days: BTreeMap<NaiveDate, bool>,
    /// The years some file declared whole (its `year`, else the years of its dates): the
    /// calendar's coverage (SPEC §2, "Calendar coverage").
    years: BTreeSet<i32>,
}

/// Why a holiday file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HolidayError {
    /// Not JSON, or not of the holiday-cn shape.
    #[error("holiday file is not holiday-cn json: {0}")]
    Format(String),
    /// A `date` that is not `YYYY-MM-DD`.
    #[error("holiday file has an invalid date {0:?}")]
    Date(String),
}

#[derive(serde::Deserialize)]
struct HolidayFile {
    year: Option<i32>,
    days: Vec<HolidayDay>,
}

#[derive(serde::Deserialize)]
struct HolidayDay {
    date: String,
    #[serde(rename = "isOffDay")]
    is_off_day: bool,
}

impl HolidayTable {
    /// An empty table: every day follows Monday–Friday.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses one holiday-cn file and merges it in (its entries win over earlier ones). The
    /// file's `year` becomes covered; a file without one covers the years of its dates.
    pub fn merge_json(&mut self, bytes: &[u8]) -> Result<(), HolidayError> {
        let file: HolidayFile =
            serde_json::from_slice(bytes).map_err(|e| HolidayError::Format(e.to_string()))?;
        let mut dates = Vec::with_capacity(file.days.len());
        for day in file.days {
            let date = NaiveDate::parse_from_str(&day.date, "%Y-%m-%d")
                .map_err(|_| HolidayError::Date(day.date.clone()))?;
            dates.push((date, day.is_off_day));
        }
        match file.year {
            Some(year) => {
                self.years.insert(year);
            }
            None => self.years.extend(dates.iter().map(|(d, _)| d.year())),
        }
        self.days.extend(dates);
        Ok(())
    }

    /// Declares a year covered (a test or a caller that builds a table by hand).
    pub fn cover_year(&mut self, year: i32) {
        self.years.insert(year);
    }

    /// The years with holiday data, ascending.
    pub fn covered_years(&self) -> impl Iterator<Item = i32> + '_ {
        self.years.iter().copied()
    }

    /// A table from one file.
    pub fn parse_json(bytes: &[u8]) -> Result<Self, HolidayError> {
        let mut table = Self::new();
        table.merge_json(bytes)?;
        Ok(table)
    }

    /// Marks a date as a day off (`true`) or a working day (`false`), overriding any entry.
    pub fn set(&mut self, date: NaiveDate, is_off_day: bool) {
        self.days.insert(date, is_off_day);
    }

    /// Number of dated entries.
    pub fn len(&self) -> usize {
        self.days.len()
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.days.is_empty()
    }
}

/// A centre's closures and make-up days on top of the national holiday data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CentreDays {
    /// Extra days the centre is closed.
    pub closed: Vec<NaiveDate>,
    /// Extra weekend days the centre works.
    pub working: Vec<NaiveDate>,
}

/// Converts between UTC instants and the centre's local naive seconds.
#[derive(Debug, Clone)]
enum LocalClock {
    /// The zone has one offset for every instant from `since` on (e.g. Asia/Shanghai since 1991).
    Fixed { tz: Tz, offset: i64, since: Instant },
    /// A zone with daylight saving in the range we care about.
    Zone(Tz),
}

impl LocalClock {
    fn new(tz: Tz) -> Self {
        // Probe monthly from 1992 to 2100; a zone whose offset never changes there gets a fast path.
        let since = 694_224_000; // 1992-01-01T00:00:00Z
        let first = offset_at(tz, since);
        let stable = (0..(109 * 12))
            .map(|month| since + month * 30 * DAY)
            .all(|t| offset_at(tz, t) == first);
        if stable {
            LocalClock::Fixed {
                tz,
                offset: first,
                since,
            }
        } else {
            LocalClock::Zone(tz)
        }
    }

    fn to_local(&self, t: Instant) -> i64 {
        match *self {
            LocalClock::Fixed { offset, since, .. } if t >= since => t + offset,
            LocalClock::Fixed { tz, .. } | LocalClock::Zone(tz) => t + offset_at(tz, t),
        }
    }

    /// The earliest instant whose local time is `local` (or, in a DST gap, the first instant after it).
    fn to_utc(&self, local: i64) -> Instant {
        match *self {
            LocalClock::Fixed { offset, since, .. } if local - offset >= since => local - offset,
            LocalClock::Fixed { tz, .. } | LocalClock::Zone(tz) => {
                let Some(naive) = chrono::DateTime::from_timestamp(local, 0) else {
                    return local;
                };
                let naive = naive.naive_utc();
                match tz.from_local_datetime(&naive) {
                    chrono::LocalResult::Single(t) => t.timestamp(),
                    chrono::LocalResult::Ambiguous(a, b) => a.timestamp().min(b.timestamp()),
                    // In a spring-forward gap the local time does not exist: the first instant
                    // after the gap is the one that reaches it.
                    chrono::LocalResult::None => local - offset_at(tz, local - 3 * 3600),
                }
            }
        }
    }

    fn tz(&self) -> Tz {
        match *self {
            LocalClock::Fixed { tz, .. } | LocalClock::Zone(tz) => tz,
        }
    }
}

fn offset_at(tz: Tz, t: Instant) -> i64 {
    match chrono::DateTime::from_timestamp(t, 0) {
        Some(utc) => i64::from(
            tz.offset_from_utc_datetime(&utc.naive_utc())
                .fix()
                .local_minus_utc(),
        ),
        None => 0,
    }
}

/// First day of the precomputed table (1900-01-01) and its length (to 2200-01-01).
const TABLE_FIRST_DAY: i64 = -25_567;
const TABLE_DAYS: i64 = 109_574;

/// Mon–Fri working days in `[0, day)`, counting days from 1970-01-01 (a Thursday).
fn weekdays_before(day: i64) -> i64 {
    // Days 0..7 are Thu Fri Sat Sun Mon Tue Wed; prefix counts of working ones.
    const PREFIX: [i64; 8] = [0, 1, 2, 2, 2, 3, 4, 5];
    5 * day.div_euclid(7) + PREFIX[day.rem_euclid(7) as usize]
}

fn is_weekday(day: i64) -> bool {
    // 0 = Monday.
    (day + 3).rem_euclid(7) < 5
}

/// Days since 1970-01-01 of a date.
pub(crate) fn day_number(date: NaiveDate) -> i64 {
    i64::from(date.num_days_from_ce()) - 719_163
}

/// The date of a day number.
pub(crate) fn date_of_day(day: i64) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt((day + 719_163).clamp(1, 3_000_000) as i32)
        .unwrap_or(NaiveDate::MIN)
}

use chrono::Datelike;

/// One centre's working calendar: its timezone and which local days are working days.
#[derive(Debug, Clone)]
pub struct WorkCalendar {
    clock: LocalClock,
    /// The years with holiday data, ascending.
    covered: Vec<i32>,
    /// When they are one run of years: its first and end instants (UTC), so a span inside it
    /// is known to be covered without converting to local days.
    covered_run: Option<(Instant, Instant)>,
    /// `uncovered[i]`: days of years without data in `[TABLE_FIRST_DAY, TABLE_FIRST_DAY + i)`.
    uncovered: Vec<i32>,
    /// `cum[i]`: working days in `[TABLE_FIRST_DAY, TABLE_FIRST_DAY + i)`; one longer than the table.
    cum: Vec<i32>,
    /// `nth[k]`: table index of the (k+1)-th working day (the inverse of `cum`).
    nth: Vec<i32>,
}

impl WorkCalendar {
    /// Builds the calendar of a centre in `tz` from national holidays and the centre's own days.
    pub fn new(tz: Tz, holidays: &HolidayTable, centre: &CentreDays) -> Self {
        let mut table = holidays.clone();
        for &date in &centre.working {
            table.set(date, false);
        }
        for &date in &centre.closed {
            table.set(date, true);
        }
        let mut working: Vec<bool> = (0..TABLE_DAYS)
            .map(|i| is_weekday(TABLE_FIRST_DAY + i))
            .collect();
        for (&date, &off) in &table.days {
            let index = day_number(date) - TABLE_FIRST_DAY;
            if (0..TABLE_DAYS).contains(&index) {
                working[index as usize] = !off;
            }
        }
        let covered: Vec<i32> = table.years.iter().copied().collect();
        let mut uncovered = Vec::with_capacity(TABLE_DAYS as usize + 1);
        uncovered.push(0);
        let mut missing = 0i32;
        let mut date = date_of_day(TABLE_FIRST_DAY);
        for _ in 0..TABLE_DAYS {
            missing += i32::from(covered.binary_search(&date.year()).is_err());
            uncovered.push(missing);
            date = date.succ_opt().unwrap_or(date);
        }
        let mut cum = Vec::with_capacity(TABLE_DAYS as usize + 1);
        let mut nth = Vec::with_capacity(TABLE_DAYS as usize * 5 / 7 + 64);
        let mut count = 0i32;
        cum.push(0);
        for (i, w) in working.into_iter().enumerate() {
            if w {
                nth.push(i as i32);
            }
            count += i32::from(w);
            cum.push(count);
        }
        let clock = LocalClock::new(tz);
        let covered_run = match (covered.first(), covered.last()) {
            (Some(&first), Some(&last)) if (last - first + 1) as usize == covered.len() => {
                let start = |year: i32| {
                    NaiveDate::from_ymd_opt(year, 1, 1).map(|d| clock.to_utc(day_number(d) * DAY))
                };
                start(first).zip(start(last + 1))
            }
            _ => None,
        };
        Self {
            clock,
            covered,
            covered_run,
            uncovered,
            cum,
            nth,
        }
    }

    /// A calendar in `tz` with only weekends off.
    pub fn weekends_only(tz: Tz) -> Self {
        Self::new(tz, &HolidayTable::new(), &CentreDays::default())
    }

    /// The years with holiday data (national data; a centre's own days add no year), ascending.
    pub fn covered_years(&self) -> &[i32] {
        &self.covered
    }

    /// Whether a year has holiday data.
    pub fn covers(&self, year: i32) -> bool {
        self.covered.binary_search(&year).is_ok()
    }

    /// The first year without holiday data among the local days from the one of `a` to the
    /// one of `b` (inclusive): the year a working-time computation over `[a, b]` had to guess
    /// as Monday–Friday. `None` when every day of the span is covered.
    pub fn first_uncovered_year(&self, a: Instant, b: Instant) -> Option<i32> {
        if let Some((start, end)) = self.covered_run {
            if a.min(b) >= start && a.max(b) < end {
                return None;
            }
        }
        let (da, db) = (self.local_day(a.min(b)), self.local_day(a.max(b)));
        let index = |day: i64| (day - TABLE_FIRST_DAY).clamp(0, TABLE_DAYS) as usize;
        let outside = da < TABLE_FIRST_DAY || db >= TABLE_FIRST_DAY + TABLE_DAYS;
        if !outside && self.uncovered[index(db + 1)] == self.uncovered[index(da)] {
            return None;
        }
        let (ya, yb) = (date_of_day(da).year(), date_of_day(db).year());
        (ya..=yb).find(|&y| !self.covers(y))
    }

    /// The centre's timezone.
    pub fn tz(&self) -> Tz {
        self.clock.tz()
    }

    /// Working days in `[TABLE_FIRST_DAY, day)`, extended outside the table by Mon–Fri.
    fn cum(&self, day: i64) -> i64 {
        let index = day - TABLE_FIRST_DAY;
        if index < 0 {
            weekdays_before(day) - weekdays_before(TABLE_FIRST_DAY)
        } else if index > TABLE_DAYS {
            let end = TABLE_FIRST_DAY + TABLE_DAYS;
            i64::from(self.cum[TABLE_DAYS as usize]) + weekdays_before(day) - weekdays_before(end)
        } else {
            i64::from(self.cum[index as usize])
        }
    }

    /// Is this local day (days since 1970-01-01) a working day?
    pub fn is_working_day(&self, day: i64) -> bool {
        self.cum(day + 1) > self.cum(day)
    }

    /// Is this date a working day?
    pub fn is_working_date(&self, date: NaiveDate) -> bool {
        self.is_working_day(day_number(date))
    }

    /// Local naive seconds of an instant.
    pub fn to_local(&self, t: Instant) -> i64 {
        self.clock.to_local(t)
    }

    /// The local day (days since 1970-01-01) an instant falls on.
    pub fn local_day(&self, t: Instant) -> i64 {
        self.to_local(t).div_euclid(DAY)
    }

    /// The local date an instant falls on.
    pub fn local_date(&self, t: Instant) -> NaiveDate {
        date_of_day(self.local_day(t))
    }

    /// Working time of `[a, b)` in seconds (0 when `b <= a`).
    pub fn working_seconds(&self, a: Instant, b: Instant, unit: DayUnit) -> i64 {
        if b <= a {
            return 0;
        }
        let (la, lb) = (self.to_local(a), self.to_local(b));
        if unit == DayUnit::Calendar {
            return (lb - la).max(0);
        }
        self.working_seconds_local(la, lb)
    }

    fn working_seconds_local(&self, la: i64, lb: i64) -> i64 {
        if lb <= la {
            return 0;
        }
        let (da, db) = (la.div_euclid(DAY), lb.div_euclid(DAY));
        if da == db {
            return if self.is_working_day(da) { lb - la } else { 0 };
        }
        let head = if self.is_working_day(da) {
            (da + 1) * DAY - la
        } else {
            0
        };
        let middle = (self.cum(db) - self.cum(da + 1)) * DAY;
        let tail = if self.is_working_day(db) {
            lb - db * DAY
        } else {
            0
        };
        head + middle + tail
    }

    /// The earliest instant `x >= a` with `working_seconds(a, x) == amount` (`a` itself for 0).
    ///
    /// A deadline that ends exactly at the end of a working day is therefore the next day's
    /// 00:00 local, as SPEC Appendix A asks.
    pub fn add_working(&self, a: Instant, amount: i64, unit: DayUnit) -> Instant {
        if amount <= 0 {
            return a;
        }
        let la = self.to_local(a);
        let local = if unit == DayUnit::Calendar {
            la + amount
        } else {
            self.add_working_local(la, amount)
        };
        self.clock.to_utc(local)
    }

    fn add_working_local(&self, la: i64, amount: i64) -> i64 {
        let da = la.div_euclid(DAY);
        let mut remaining = amount;
        if self.is_working_day(da) {
            let head = (da + 1) * DAY - la;
            if remaining <= head {
                return la + remaining;
            }
            remaining -= head;
        }
        let start = da + 1;
        // Skip `full` whole working days, then `rest` (0 < rest <= DAY) into the next one.
        let full = (remaining - 1) / DAY;
        let rest = remaining - full * DAY;
        let target = self.cum(start) + full + 1;
        // Inside the table the target-th working day is a lookup.
        if start >= TABLE_FIRST_DAY {
            if let Some(&index) = usize::try_from(target - 1)
                .ok()
                .and_then(|k| self.nth.get(k))
            {
                return (TABLE_FIRST_DAY + i64::from(index)) * DAY + rest;
            }
        }
        // Smallest day w >= start with cum(w + 1) >= target: that day is a working day.
        let mut span = (full + 1) * 2 + 32;
        while self.cum(start + span + 1) < target {
            span *= 2;
        }
        let (mut lo, mut hi) = (start, start + span);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.cum(mid + 1) >= target {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo * DAY + rest
    }
}

/// The years a running service reports as missing holiday data on `today` (SPEC §2): this
/// year when it has none, and from `warn_from` (month, day) on, the next year.
pub(crate) fn missing_years(covered: &[i32], today: NaiveDate, warn_from: (u32, u32)) -> Vec<i32> {
    let year = today.year();
    let mut out = Vec::new();
    if covered.binary_search(&year).is_err() {
        out.push(year);
    }
    let warn = NaiveDate::from_ymd_opt(year, warn_from.0, warn_from.1)
        // 02-29 in a common year: from 03-01.
        .or_else(|| NaiveDate::from_ymd_opt(year, warn_from.0 + 1, 1))
        .unwrap_or(NaiveDate::MAX);
    if today >= warn && covered.binary_search(&(year + 1)).is_err() {
        out.push(year + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Asia::Shanghai;

    fn at(s: &str) -> Instant {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    fn holidays() -> HolidayTable {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config/holidays");
        let mut table = HolidayTable::new();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for f in files {
            table.merge_json(&std::fs::read(f).unwrap()).unwrap();
        }
        table
    }

    fn shanghai() -> &'static WorkCalendar {
        static CAL: std::sync::OnceLock<WorkCalendar> = std::sync::OnceLock::new();
        CAL.get_or_init(|| WorkCalendar::new(Shanghai, &holidays(), &CentreDays::default()))
    }

    #[test]
    fn spec_worked_example_seven_working_days() {
        let cal = shanghai();
        let deadline = cal.add_working(at("2018-10-15T10:00:00+08:00"), 7 * DAY, DayUnit::Working);
        assert_eq!(deadline, at("2018-10-24T10:00:00+08:00"));
    }

    #[test]
    fn national_day_2014_with_makeup_saturday() {
        let cal = shanghai();
        // 2014-09-28 (Sun) and 2014-10-11 (Sat) are make-up working days; Oct 1–7 are off.
        assert!(cal.is_working_date(NaiveDate::from_ymd_opt(2014, 9, 28).unwrap()));
        assert!(cal.is_working_date(NaiveDate::from_ymd_opt(2014, 10, 11).unwrap()));
        assert!(!cal.is_working_date(NaiveDate::from_ymd_opt(2014, 10, 6).unwrap()));
        // Accepted Tue 2014-09-30 09:00 + 3 working days: Sep 30 (rest), Oct 8, 9, 10 09:00.
        let d = cal.add_working(at("2014-09-30T09:00:00+08:00"), 3 * DAY, DayUnit::Working);
        assert_eq!(d, at("2014-10-10T09:00:00+08:00"));
        // + 4 working days lands on the make-up Saturday.
        let d = cal.add_working(at("2014-09-30T09:00:00+08:00"), 4 * DAY, DayUnit::Working);
        assert_eq!(d, at("2014-10-11T09:00:00+08:00"));
        // Accepted on the make-up Sunday.
        let d = cal.add_working(at("2014-09-28T15:00:00+08:00"), DAY, DayUnit::Working);
        assert_eq!(d, at("2014-09-29T15:00:00+08:00"));
    }

    #[test]
    fn spring_festival_2020_extension() {
        let cal = shanghai();
        // The State Council extended the 2020 holiday to Feb 2 (Jan 31 was made a day off).
        assert!(!cal.is_working_date(NaiveDate::from_ymd_opt(2020, 1, 31).unwrap()));
        assert!(cal.is_working_date(NaiveDate::from_ymd_opt(2020, 2, 3).unwrap()));
        let d = cal.add_working(at("2020-01-23T12:00:00+08:00"), DAY, DayUnit::Working);
        assert_eq!(d, at("2020-02-03T12:00:00+08:00"));
    }

    #[test]
    fn acceptance_on_a_saturday_starts_counting_on_monday() {
        let cal = shanghai();
        let d = cal.add_working(at("2018-10-20T10:00:00+08:00"), DAY, DayUnit::Working);
        assert_eq!(d, at("2018-10-23T00:00:00+08:00"));
        assert_eq!(
            cal.working_seconds(
                at("2018-10-20T10:00:00+08:00"),
                at("2018-10-22T10:00:00+08:00"),
                DayUnit::Working
            ),
            10 * 3600
        );
    }

    #[test]
    fn deadline_at_end_of_working_day_is_next_midnight() {
        let cal = shanghai();
        // Friday 00:00 + 1 working day ends at Friday 24:00 = Saturday 00:00.
        let d = cal.add_working(at("2018-10-19T00:00:00+08:00"), DAY, DayUnit::Working);
        assert_eq!(d, at("2018-10-20T00:00:00+08:00"));
    }

    #[test]
    fn centre_closure_and_makeup_from_config() {
        let centre = CentreDays {
            closed: vec![NaiveDate::from_ymd_opt(2018, 10, 16).unwrap()],
            working: vec![NaiveDate::from_ymd_opt(2018, 10, 20).unwrap()],
        };
        let cal = WorkCalendar::new(Shanghai, &holidays(), &centre);
        assert!(!cal.is_working_date(NaiveDate::from_ymd_opt(2018, 10, 16).unwrap()));
        assert!(cal.is_working_date(NaiveDate::from_ymd_opt(2018, 10, 20).unwrap()));
        // Mon 10:00 + 7 working days: the closed Tuesday is skipped, the Saturday counts.
        let d = cal.add_working(at("2018-10-15T10:00:00+08:00"), 7 * DAY, DayUnit::Working);
        assert_eq!(d, at("2018-10-24T10:00:00+08:00"));
        let d = cal.add_working(at("2018-10-15T10:00:00+08:00"), 5 * DAY, DayUnit::Working);
        assert_eq!(d, at("2018-10-22T10:00:00+08:00"));
    }

    #[test]
    fn calendar_day_unit_counts_every_day() {
        let cal = shanghai();
        let d = cal.add_working(at("2014-09-30T09:00:00+08:00"), 3 * DAY, DayUnit::Calendar);
        assert_eq!(d, at("2014-10-03T09:00:00+08:00"));
    }

    #[test]
    fn later_file_wins_for_a_repeated_date() {
        let mut t = HolidayTable::new();
        t.merge_json(br#"{"days":[{"date":"2030-01-07","isOffDay":true}]}"#)
            .unwrap();
        t.merge_json(br#"{"days":[{"date":"2030-01-07","isOffDay":false}]}"#)
            .unwrap();
        let cal = WorkCalendar::new(Shanghai, &t, &CentreDays::default());
        assert!(cal.is_working_date(NaiveDate::from_ymd_opt(2030, 1, 7).unwrap()));
    }

    #[test]
    fn far_dates_follow_monday_to_friday() {
        let cal = shanghai();
        assert!(cal.is_working_date(NaiveDate::from_ymd_opt(1800, 1, 6).unwrap())); // a Monday
        assert!(!cal.is_working_date(NaiveDate::from_ymd_opt(2300, 1, 6).unwrap())); // a Saturday
        let t = at("2300-01-01T10:00:00+08:00"); // a Monday
        assert_eq!(
            cal.add_working(t, 5 * DAY, DayUnit::Working),
            at("2300-01-08T10:00:00+08:00")
        );
    }

    #[test]
    fn dst_zone_counts_local_days() {
        let cal = WorkCalendar::weekends_only(chrono_tz::Europe::Berlin);
        // 2024-03-29 is a Friday; DST starts Sunday 2024-03-31. One working day from Friday noon
        // ends Monday noon local, whatever the UTC offset did in between.
        let d = cal.add_working(at("2024-03-29T12:00:00+01:00"), DAY, DayUnit::Working);
        assert_eq!(d, at("2024-04-01T12:00:00+02:00"));
    }

    #[test]
    fn coverage_is_the_years_of_the_files() {
        let cal = shanghai();
        assert_eq!(cal.covered_years(), (2007..=2026).collect::<Vec<_>>());
        let t = |s: &str| at(s);
        // Inside the data: nothing provisional.
        assert_eq!(
            cal.first_uncovered_year(
                t("2026-01-05T09:00:00+08:00"),
                t("2026-12-31T23:59:59+08:00")
            ),
            None
        );
        // A span that reaches 2027 (local days), or starts before 2007.
        assert_eq!(
            cal.first_uncovered_year(
                t("2026-12-20T09:00:00+08:00"),
                t("2027-01-12T09:00:00+08:00")
            ),
            Some(2027)
        );
        assert_eq!(
            cal.first_uncovered_year(
                t("2026-12-31T23:59:59+08:00"),
                t("2027-01-01T00:00:00+08:00")
            ),
            Some(2027)
        );
        assert_eq!(
            cal.first_uncovered_year(
                t("2006-12-31T10:00:00+08:00"),
                t("2007-01-05T00:00:00+08:00")
            ),
            Some(2006)
        );
        // 2027-01-01 00:00 local is still 2026 in UTC: days are local.
        assert_eq!(
            cal.first_uncovered_year(t("2026-12-30T00:00:00Z"), t("2026-12-31T20:00:00Z")),
            Some(2027)
        );
        // Far outside the precomputed table.
        assert_eq!(
            cal.first_uncovered_year(t("2300-01-01T00:00:00Z"), t("2300-01-02T00:00:00Z")),
            Some(2300)
        );
        // A centre's closures add no year; a file without `year` covers the years of its dates.
        let mut h = HolidayTable::new();
        h.merge_json(br#"{"days":[{"date":"2030-10-01","isOffDay":true}]}"#)
            .unwrap();
        let centre = CentreDays {
            closed: vec![NaiveDate::from_ymd_opt(2031, 1, 2).unwrap()],
            working: vec![],
        };
        let cal = WorkCalendar::new(Shanghai, &h, &centre);
        assert_eq!(cal.covered_years(), &[2030]);
        assert_eq!(
            cal.first_uncovered_year(
                t("2030-12-30T00:00:00+08:00"),
                t("2031-01-03T00:00:00+08:00")
            ),
            Some(2031)
        );
    }

    #[test]
    fn a_missing_next_year_is_reported_from_warn_from() {
        let covered: Vec<i32> = (2007..=2026).collect();
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(
            missing_years(&covered, day(2026, 10, 31), (11, 1)),
            Vec::<i32>::new()
        );
        assert_eq!(
            missing_years(&covered, day(2026, 11, 1), (11, 1)),
            vec![2027]
        );
        assert_eq!(
            missing_years(&covered, day(2027, 1, 4), (11, 1)),
            vec![2027]
        );
        assert_eq!(
            missing_years(&covered, day(2027, 12, 1), (11, 1)),
            vec![2027, 2028]
        );
        let with_2027: Vec<i32> = (2007..=2027).collect();
        assert_eq!(
            missing_years(&with_2027, day(2026, 11, 30), (11, 1)),
            Vec::<i32>::new()
        );
        assert_eq!(
            missing_years(&covered, day(2026, 2, 28), (2, 29)),
            Vec::<i32>::new()
        );
        assert_eq!(
            missing_years(&covered, day(2026, 3, 1), (2, 29)),
            vec![2027]
        );
    }

    mod laws {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn elapsed_working_time_of_added_span_is_exact(
                start in 1_167_580_800i64..1_798_761_600, // 2007..2027
                amount in 1i64..(60 * DAY),
            ) {
                let cal = shanghai();
                let end = cal.add_working(start, amount, DayUnit::Working);
                prop_assert_eq!(cal.working_seconds(start, end, DayUnit::Working), amount);
                // Earliest: one second earlier has not reached it.
                prop_assert!(cal.working_seconds(start, end - 1, DayUnit::Working) < amount);
            }

            #[test]
            fn working_time_is_monotone_and_additive(
                a in 1_167_580_800i64..1_798_761_600,
                x in 0i64..(40 * DAY),
                y in 0i64..(40 * DAY),
            ) {
                let cal = shanghai();
                let (b, c) = (a + x, a + x + y);
                let ab = cal.working_seconds(a, b, DayUnit::Working);
                let bc = cal.working_seconds(b, c, DayUnit::Working);
                prop_assert_eq!(ab + bc, cal.working_seconds(a, c, DayUnit::Working));
                prop_assert!(ab <= x);
            }
        }
    }
}
