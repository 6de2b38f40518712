//! The workload shared by the engine benchmark and `examples/profile_engine.rs`: the county
//! profile's simulated year (seed 42, 2019) and the embedded holiday calendar.

use std::sync::Arc;

use casewatch::config::EMBEDDED_HOLIDAYS;
use casewatch::core::calendar::{HolidayTable, WorkCalendar};
use casewatch::core::engine::Calendars;
use casewatch::simulate::{county_lines, SimOptions};

/// Wall clock for `parse_event`: far enough ahead that no simulated event is in the future.
pub const NOW: i64 = 4_000_000_000;

/// Every centre on the embedded mainland calendar.
pub fn calendars() -> Calendars {
    let mut t = HolidayTable::new();
    for b in EMBEDDED_HOLIDAYS {
        t.merge_json(b).unwrap();
    }
    Calendars::new(Arc::new(WorkCalendar::new(
        chrono_tz::Asia::Shanghai,
        &t,
        &Default::default(),
    )))
}

/// The simulated county year, as NDJSON lines.
pub fn simulated_lines() -> Vec<String> {
    let opts = SimOptions {
        seed: 42,
        start: chrono::NaiveDate::from_ymd_opt(2019, 1, 1).unwrap(),
        months: 12,
        scale: 1.0,
        invalid_rate: 0.0,
        duplicate_rate: 0.002,
    };
    county_lines(&opts)
}
