//! Profiling harness for the engine alone: the simulated county year (seed 42, 2019) applied
//! N times (`profile_engine N`). For repeatable instruction counts on a noisy VM:
//!
//! ```sh
//! cargo build --release --example profile_engine
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*Engine::apply*' \
//!   --toggle-collect='*Engine::take_changes*' target/release/examples/profile_engine 1
//! ```

use casewatch::config::EMBEDDED_HOLIDAYS;
use casewatch::core::calendar::{HolidayTable, WorkCalendar};
use casewatch::core::engine::{Calendars, Engine};
use casewatch::core::event::{parse_event, CaseEvent};
use casewatch::core::rules::Rules;
use casewatch::simulate::{generate, Profile, SimOptions};
use std::sync::Arc;
fn main() {
    let mut t = HolidayTable::new();
    for b in EMBEDDED_HOLIDAYS {
        t.merge_json(b).unwrap();
    }
    let cals = Calendars::new(Arc::new(WorkCalendar::new(
        chrono_tz::Asia::Shanghai,
        &t,
        &Default::default(),
    )));
    let opts = SimOptions {
        seed: 42,
        start: chrono::NaiveDate::from_ymd_opt(2019, 1, 1).unwrap(),
        months: 12,
        scale: 1.0,
        invalid_rate: 0.0,
        duplicate_rate: 0.002,
    };
    let lines: Vec<String> = generate(&Profile::county(), &opts)
        .into_iter()
        .map(|e| e.line)
        .collect();
    let events: Vec<CaseEvent> = lines
        .iter()
        .filter_map(|l| parse_event(l.as_bytes(), 4_000_000_000).ok())
        .collect();
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let start = std::time::Instant::now();
    for _ in 0..reps {
        let mut engine = Engine::with_capacity(Rules::default(), cals.clone(), 32_768);
        for e in &events {
            engine.apply(e);
        }
        std::hint::black_box(engine.take_changes());
    }
    let el = start.elapsed().as_secs_f64();
    eprintln!(
        "{} events x {reps} in {el:.3}s = {:.0} ev/s",
        events.len(),
        (events.len() * reps) as f64 / el
    );
}
