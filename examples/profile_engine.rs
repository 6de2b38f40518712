//! Profiling harness for the engine alone: the simulated county year (seed 42, 2019) applied
//! N times (`profile_engine N`). For repeatable instruction counts on a noisy VM:
//!
//! ```sh
//! cargo build --release --example profile_engine
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*Engine::apply' \
//!   --toggle-collect='*Engine::take_changes' target/release/examples/profile_engine 1
//! ```
//!
//! (The patterns must not match a function that `apply` calls: a nested match toggles the
//! collection off.)

use casewatch::core::engine::Engine;
use casewatch::core::event::{parse_event, CaseEvent};
use casewatch::core::rules::Rules;

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    // As the casewatch binary runs.
    casewatch::allocator::configure();
    let cals = common::calendars();
    let lines = common::simulated_lines();
    let events: Vec<CaseEvent> = lines
        .iter()
        .filter_map(|l| parse_event(l.as_bytes(), common::NOW).ok())
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
