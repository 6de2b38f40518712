//! `window_daily` counters (SPEC §5): what one case contributes to which (day, window, item)
//! row, and the `window_monthly` rates computed from summed counters.
//!
//! A case's contribution is a pure function of its facts, laid out in fixed slots so that the
//! engine can apply only the slots an event changed.

use super::calendar::WorkCalendar;
use super::case::{Facts, Status, Sym};
use super::rules::{AnomalyKind, Level, Rules};

/// The `window_daily` counters, in the SPEC's column order.
pub const COUNTER_NAMES: [&str; 22] = [
    "received",
    "accepted",
    "not_accepted",
    "completed",
    "completed_promised",
    "completed_on_time",
    "completed_early",
    "completed_on_site",
    "withdrawn",
    "became_overdue",
    "handling_seconds",
    "promised_seconds",
    "rating_1",
    "rating_2",
    "rating_3",
    "rating_4",
    "rating_5",
    "default_evaluations",
    "alerts_warning",
    "alerts_yellow",
    "alerts_red",
    "anomalies",
];

/// Index of each counter in [`Counters`].
pub mod counter {
    pub const RECEIVED: u8 = 0;
    pub const ACCEPTED: u8 = 1;
    pub const NOT_ACCEPTED: u8 = 2;
    pub const COMPLETED: u8 = 3;
    pub const COMPLETED_PROMISED: u8 = 4;
    pub const COMPLETED_ON_TIME: u8 = 5;
    pub const COMPLETED_EARLY: u8 = 6;
    pub const COMPLETED_ON_SITE: u8 = 7;
    pub const WITHDRAWN: u8 = 8;
    pub const BECAME_OVERDUE: u8 = 9;
    pub const HANDLING_SECONDS: u8 = 10;
    pub const PROMISED_SECONDS: u8 = 11;
    pub const RATING_1: u8 = 12;
    pub const DEFAULT_EVALUATIONS: u8 = 17;
    pub const ALERTS_WARNING: u8 = 18;
    pub const ANOMALIES: u8 = 21;
}

/// The counters of one `window_daily` row.
pub type Counters = [i64; 22];

/// The key of a `window_daily` row: local day (days since 1970-01-01), centre, window, item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DailyKey {
    pub day: i64,
    pub center: Sym,
    pub window: Sym,
    pub item_code: Sym,
}

/// One slot of a contribution: `value` added to `counter` on `day`; `counter == NONE` is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Local day (days since 1970-01-01; i32 covers ±5.8 million years).
    pub day: i32,
    pub counter: u8,
    pub value: i64,
}

impl Slot {
    /// An empty slot.
    pub const EMPTY: Slot = Slot {
        day: 0,
        counter: u8::MAX,
        value: 0,
    };

    fn is_empty(&self) -> bool {
        self.counter == u8::MAX
    }
}

/// Slots: 11 for lifecycle counters, then two (level, total) per anomaly kind.
pub const SLOTS: usize = 11 + 2 * 9;

/// What one case adds to `window_daily`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contribution {
    pub center: Sym,
    pub window: Sym,
    pub item_code: Sym,
    pub slots: [Slot; SLOTS],
}

impl Contribution {
    /// The contribution of a case with these facts.
    pub fn of(facts: &Facts, cal: &WorkCalendar, rules: &Rules) -> Self {
        use counter::*;
        let mut slots = [Slot::EMPTY; SLOTS];
        let mut put = |i: usize, t: i64, counter: u8, value: i64| {
            slots[i] = Slot {
                day: cal.local_day(t) as i32,
                counter,
                value,
            };
        };
        if let Some(s) = facts.submitted_at {
            put(0, s, RECEIVED, 1);
        }
        if let Some(a) = facts.accepted_at {
            put(1, a, ACCEPTED, 1);
        }
        if let Some(end) = facts.ended_at {
            let c = match facts.status {
                Status::Completed => COMPLETED,
                Status::NotAccepted => NOT_ACCEPTED,
                _ => WITHDRAWN,
            };
            put(2, end, c, 1);
        }
        if let Some(c) = facts.completed_at {
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
        if let Some(d) = facts.anomalies[AnomalyKind::Overdue as usize] {
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
        for kind in AnomalyKind::ALL {
            if let Some(at) = facts.anomalies[kind as usize] {
                let level = match rules.level(kind) {
                    Level::Warning => ALERTS_WARNING,
                    Level::Yellow => ALERTS_WARNING + 1,
                    Level::Red => ALERTS_WARNING + 2,
                };
                put(11 + 2 * kind as usize, at, level, 1);
                put(12 + 2 * kind as usize, at, ANOMALIES, 1);
            }
        }
        Self {
            center: facts.center,
            window: facts.window,
            item_code: facts.item_code,
            slots,
        }
    }

    /// Calls `f(key, counter, delta)` for every change that turns `old` into `new`.
    pub fn diff(old: Option<&Self>, new: Option<&Self>, mut f: impl FnMut(DailyKey, u8, i64)) {
        let same_key = match (old, new) {
            (Some(o), Some(n)) => {
                o.center == n.center && o.window == n.window && o.item_code == n.item_code
            }
            _ => false,
        };
        for i in 0..SLOTS {
            let (o, n) = (old.map(|c| c.slots[i]), new.map(|c| c.slots[i]));
            if same_key && o == n {
                continue;
            }
            if let (Some(c), Some(s)) = (old, o) {
                if !s.is_empty() {
                    f(c.key(s.day), s.counter, -s.value);
                }
            }
            if let (Some(c), Some(s)) = (new, n) {
                if !s.is_empty() {
                    f(c.key(s.day), s.counter, s.value);
                }
            }
        }
    }

    fn key(&self, day: i32) -> DailyKey {
        DailyKey {
            day: i64::from(day),
            center: self.center,
            window: self.window,
            item_code: self.item_code,
        }
    }
}

/// Rates of SPEC §5 `window_monthly`, each a ratio of summed counters.
pub const RATE_NAMES: [&str; 7] = [
    "completion_rate",
    "on_time_rate",
    "early_rate",
    "on_site_rate",
    "evaluation_rate",
    "satisfaction_rate",
    "speedup_rate",
];

/// Non-default evaluations of summed counters.
pub fn evaluations(c: &Counters) -> i64 {
    (0..5).map(|i| c[counter::RATING_1 as usize + i]).sum()
}

/// The seven rates as (numerator, denominator) pairs, in [`RATE_NAMES`] order.
pub fn rate_fractions(c: &Counters) -> [(i64, i64); 7] {
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
pub fn rate_e4(numerator: i64, denominator: i64) -> Option<i64> {
    if denominator == 0 {
        return None;
    }
    let (n, d) = (i128::from(numerator), i128::from(denominator));
    let (n, d) = if d < 0 { (-n, -d) } else { (n, d) };
    // floor((2 * 10000 * n + d) / (2 * d)) rounds half towards +infinity.
    Some((2 * 10_000 * n + d).div_euclid(2 * d) as i64)
}

/// Formats ten-thousandths as a decimal with 4 places (`9876` → `0.9876`).
pub fn format_e4(v: i64) -> String {
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
