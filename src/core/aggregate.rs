//! `window_daily` counters (SPEC §5): what one case contributes to which (day, window, item)
//! row, and the `window_monthly` rates computed from summed counters.
//!
//! A case's contribution is a pure function of its facts, laid out in fixed slots so that the
//! engine can apply only the slots an event changed (`diff`).

use super::calendar::{Instant, WorkCalendar};
use super::case::{Facts, Status, Sym};
use super::rules::{AnomalyKind, Level, Rules};

/// The one list of `window_daily` counters, in the SPEC's column order: `name CONSTANT`.
///
/// Every other definition derives from it by handing a macro to this one (`$then!` receives
/// the list): the index constants, [`COUNTER_NAMES`] and [`Counters`] here, the ClickHouse row
/// (`sinks::clickhouse::rows::DailyRecord`), the bulletin's sums and SQL, and `verify`. A new
/// counter is one line here, its rule in `diff`'s inputs, and a migration for the columns.
#[macro_export]
macro_rules! window_counters {
    ($then:ident) => {
        $then! {
            received RECEIVED,
            accepted ACCEPTED,
            not_accepted NOT_ACCEPTED,
            completed COMPLETED,
            completed_promised COMPLETED_PROMISED,
            completed_on_time COMPLETED_ON_TIME,
            completed_early COMPLETED_EARLY,
            completed_on_site COMPLETED_ON_SITE,
            withdrawn WITHDRAWN,
            became_overdue BECAME_OVERDUE,
            handling_seconds HANDLING_SECONDS,
            promised_seconds PROMISED_SECONDS,
            rating_1 RATING_1,
            rating_2 RATING_2,
            rating_3 RATING_3,
            rating_4 RATING_4,
            rating_5 RATING_5,
            default_evaluations DEFAULT_EVALUATIONS,
            alerts_warning ALERTS_WARNING,
            alerts_yellow ALERTS_YELLOW,
            alerts_red ALERTS_RED,
            anomalies ANOMALIES,
            orders ORDERS,
            orders_responded_on_time ORDERS_RESPONDED_ON_TIME,
            orders_overdue ORDERS_OVERDUE,
            appeals APPEALS,
            appeals_granted APPEALS_GRANTED,
            appeals_rejected APPEALS_REJECTED,
        }
    };
}

macro_rules! counter_definitions {
    ($($name:ident $constant:ident),* $(,)?) => {
        /// The `window_daily` counter columns, in the SPEC's order.
        pub const COUNTER_NAMES: [&str; COUNTERS] = [$(stringify!($name)),*];

        /// Index of each counter in [`Counters`].
        pub mod counter {
            #[repr(u8)]
            #[allow(clippy::upper_case_acronyms, non_camel_case_types, dead_code)]
            enum Index {
                $($constant),*
            }
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                pub const $constant: u8 = Index::$constant as u8;
            )*
        }

        /// Number of counters.
        pub const COUNTERS: usize = [$(stringify!($name)),*].len();
    };
}

window_counters!(counter_definitions);

/// The counters of one `window_daily` row, indexed by [`counter`].
pub type Counters = [i64; COUNTERS];

/// All counters zero.
pub const ZERO: Counters = [0; COUNTERS];

/// The counter columns as a SQL list, each written by `column` (e.g. `sum(received)`).
pub(crate) fn counter_sql(column: impl Fn(&str) -> String) -> String {
    COUNTER_NAMES
        .iter()
        .map(|c| column(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key of a `window_daily` row: local day (days since 1970-01-01), centre, window, item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DailyKey {
    pub day: i64,
    pub center: Sym,
    pub window: Sym,
    pub item_code: Sym,
}

/// One entry of a case's contribution: `value` added to `counter` on the local day of `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) at: Instant,
    pub(crate) counter: u8,
    pub(crate) value: i64,
}

/// No entry in a slot.
const EMPTY: Entry = Entry {
    at: 0,
    counter: u8::MAX,
    value: 0,
};

/// The lifecycle slots (0–10) of a case with these facts; anomaly slots are read from
/// `facts.anomalies` directly.
fn lifecycle(facts: &Facts) -> [Entry; 11] {
    use counter::*;
    let mut slots = [EMPTY; 11];
    let mut put = |slot: usize, at: Instant, counter: u8, value: i64| {
        slots[slot] = Entry { at, counter, value };
    };
    if let Some(s) = facts.submitted_at.get() {
        put(0, s, RECEIVED, 1);
    }
    if let Some(a) = facts.accepted_at.get() {
        put(1, a, ACCEPTED, 1);
    }
    if let Some(end) = facts.ended_at.get() {
        let c = match facts.status {
            Status::Completed => COMPLETED,
            Status::NotAccepted => NOT_ACCEPTED,
            _ => WITHDRAWN,
        };
        put(2, end, c, 1);
    }
    if let Some(c) = facts.completed_at.get() {
        if let (Some(h), Some(p)) = (facts.handling_seconds, facts.promised_seconds) {
            put(3, c, COMPLETED_PROMISED, 1);
            put(7, c, HANDLING_SECONDS, h);
            put(8, c, PROMISED_SECONDS, p);
        }
        if facts.on_time {
            put(4, c, COMPLETED_ON_TIME, 1);
        }
        if facts.early {
            put(5, c, COMPLETED_EARLY, 1);
        }
        if facts.on_site {
            put(6, c, COMPLETED_ON_SITE, 1);
        }
    }
    // The overdue anomaly's instant is the promised deadline it passed.
    if let Some(d) = facts.anomalies.get(AnomalyKind::Overdue) {
        put(9, d, BECAME_OVERDUE, 1);
    }
    if let Some(r) = facts.rating {
        let c = if r.is_default {
            DEFAULT_EVALUATIONS
        } else {
            RATING_1 + r.value.clamp(1, 5) - 1
        };
        put(10, r.at, c, 1);
    }
    slots
}

/// Whether two facts differ in anything [`lifecycle`] reads.
fn lifecycle_inputs_differ(a: &Facts, b: &Facts) -> bool {
    let overdue = AnomalyKind::Overdue;
    a.submitted_at != b.submitted_at
        || a.accepted_at != b.accepted_at
        || a.ended_at != b.ended_at
        || a.status != b.status
        || a.completed_at != b.completed_at
        || a.handling_seconds != b.handling_seconds
        || a.promised_seconds != b.promised_seconds
        || a.on_time != b.on_time
        || a.early != b.early
        || a.on_site != b.on_site
        || a.anomalies.get(overdue) != b.anomalies.get(overdue)
        || a.rating != b.rating
}

/// The two entries (alert level, anomaly total) of an anomaly detected at `at`.
fn anomaly_entries(rules: &Rules, kind: AnomalyKind, at: Instant) -> [Entry; 2] {
    let level = match rules.level(kind) {
        Level::Warning => counter::ALERTS_WARNING,
        Level::Yellow => counter::ALERTS_YELLOW,
        Level::Red => counter::ALERTS_RED,
    };
    [
        Entry {
            at,
            counter: level,
            value: 1,
        },
        Entry {
            at,
            counter: counter::ANOMALIES,
            value: 1,
        },
    ]
}

/// The facts of a case as they fall on `window_daily`: the row key and the centre's calendar.
#[derive(Clone, Copy)]
pub(crate) struct Placed<'a> {
    pub(crate) facts: &'a Facts,
    pub(crate) calendar: &'a WorkCalendar,
}

impl Placed<'_> {
    fn key(&self, at: Instant) -> DailyKey {
        DailyKey {
            day: self.calendar.local_day(at),
            center: self.facts.center,
            window: self.facts.window,
            item_code: self.facts.item_code,
        }
    }
}

/// Calls `f(key, counter, delta)` for every change of `window_daily` that turns the
/// contribution of a case with facts `old` (none: a new case) into that of `new`.
///
/// Slots whose entry is unchanged are skipped without placing them on a day, so an event
/// costs only the counters it moves.
pub(crate) fn diff(
    old: Option<Placed<'_>>,
    new: Placed<'_>,
    rules: &Rules,
    mut f: impl FnMut(DailyKey, u8, i64),
) {
    let same_row = old.is_some_and(|o| {
        std::ptr::eq(o.calendar, new.calendar)
            && o.facts.center == new.facts.center
            && o.facts.window == new.facts.window
            && o.facts.item_code == new.facts.item_code
    });
    let mut emit = |o: Option<(DailyKey, Entry)>, n: Option<(DailyKey, Entry)>| {
        let same = match (o, n) {
            (Some((ka, a)), Some((kb, b))) => {
                ka == kb && a.counter == b.counter && a.value == b.value
            }
            _ => false,
        };
        if !same {
            if let Some((k, e)) = o {
                f(k, e.counter, -e.value);
            }
            if let Some((k, e)) = n {
                f(k, e.counter, e.value);
            }
        }
    };
    let place = |p: Placed<'_>, e: Entry| (e.counter != u8::MAX).then(|| (p.key(e.at), e));
    // Most events move no lifecycle counter (a step, a fee): the slots are built only when
    // one may have moved.
    if !same_row || old.is_some_and(|o| lifecycle_inputs_differ(o.facts, new.facts)) {
        let new_slots = lifecycle(new.facts);
        let old_slots = old.map(|o| (o, lifecycle(o.facts)));
        for (slot, &n) in new_slots.iter().enumerate() {
            let o = old_slots.as_ref().map(|(p, slots)| (*p, slots[slot]));
            if same_row && o.map(|(_, e)| e) == Some(n) {
                continue;
            }
            emit(o.and_then(|(p, e)| place(p, e)), place(new, n));
        }
    }
    if same_row && old.is_some_and(|o| o.facts.anomalies == new.facts.anomalies) {
        return;
    }
    for kind in AnomalyKind::ALL {
        let o = old.and_then(|p| p.facts.anomalies.get(kind).map(|at| (p, at)));
        let n = new.facts.anomalies.get(kind);
        if same_row && o.map(|(_, at)| at) == n {
            continue;
        }
        for part in 0..2 {
            emit(
                o.map(|(p, at)| {
                    let e = anomaly_entries(rules, kind, at)[part];
                    (p.key(at), e)
                }),
                n.map(|at| (new.key(at), anomaly_entries(rules, kind, at)[part])),
            );
        }
    }
}

/// Calls `f(key, counter, delta)` for every change of `window_daily` that turns a case's
/// supervision entries (`core::supervision::entries`) `old` into `new`. Cases without
/// supervision have none, and cost nothing.
pub(crate) fn diff_entries(
    old: Option<(Placed<'_>, &[Entry])>,
    new: (Placed<'_>, &[Entry]),
    mut f: impl FnMut(DailyKey, u8, i64),
) {
    if let Some((o, entries)) = old {
        let same_row = std::ptr::eq(o.calendar, new.0.calendar)
            && o.facts.center == new.0.facts.center
            && o.facts.window == new.0.facts.window
            && o.facts.item_code == new.0.facts.item_code;
        if same_row && entries == new.1 {
            return;
        }
        for e in entries {
            f(o.key(e.at), e.counter, -e.value);
        }
    }
    for e in new.1 {
        f(new.0.key(e.at), e.counter, e.value);
    }
}

/// Rates of SPEC §5 `window_monthly`, each a ratio of summed counters.
pub(crate) const RATE_NAMES: [&str; 7] = [
    "completion_rate",
    "on_time_rate",
    "early_rate",
    "on_site_rate",
    "evaluation_rate",
    "satisfaction_rate",
    "speedup_rate",
];

/// Non-default evaluations of summed counters.
pub(crate) fn evaluations(c: &Counters) -> i64 {
    (0..5).map(|i| c[counter::RATING_1 as usize + i]).sum()
}

/// The seven rates as (numerator, denominator) pairs, in [`RATE_NAMES`] order.
pub(crate) fn rate_fractions(c: &Counters) -> [(i64, i64); 7] {
    use counter::*;
    let get = |i: u8| c[i as usize];
    let evals = evaluations(c);
    let satisfied = get(RATING_1 + 2) + get(RATING_1 + 3) + get(RATING_1 + 4);
    [
        (get(COMPLETED), get(ACCEPTED)),
        (get(COMPLETED_ON_TIME), get(COMPLETED)),
        (get(COMPLETED_EARLY), get(COMPLETED_PROMISED)),
        (get(COMPLETED_ON_SITE), get(COMPLETED)),
        (evals, get(COMPLETED)),
        (satisfied, evals),
        (
            get(PROMISED_SECONDS) - get(HANDLING_SECONDS),
            get(PROMISED_SECONDS),
        ),
    ]
}

/// A ratio rounded half-up to 4 decimals, in ten-thousandths; none when the denominator is 0.
pub(crate) fn rate_e4(numerator: i64, denominator: i64) -> Option<i64> {
    if denominator == 0 {
        return None;
    }
    let (n, d) = (i128::from(numerator), i128::from(denominator));
    let (n, d) = if d < 0 { (-n, -d) } else { (n, d) };
    // floor((2 * 10000 * n + d) / (2 * d)) rounds half towards +infinity.
    Some((2 * 10_000 * n + d).div_euclid(2 * d) as i64)
}

/// Formats ten-thousandths as a decimal with 4 places (`9876` → `0.9876`).
pub(crate) fn format_e4(v: i64) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:04}", a / 10_000, a % 10_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_round_half_up_and_are_null_on_zero_denominator() {
        assert_eq!(rate_e4(1, 3), Some(3333));
        assert_eq!(rate_e4(2, 3), Some(6667));
        assert_eq!(rate_e4(1, 8), Some(1250));
        assert_eq!(rate_e4(1, 20_000), Some(1)); // 0.00005 rounds up
        assert_eq!(rate_e4(-1, 20_000), Some(0)); // -0.00005 rounds up to 0
        assert_eq!(rate_e4(5, 0), None);
        assert_eq!(format_e4(10_000), "1.0000");
        assert_eq!(format_e4(-125), "-0.0125");
    }
}
