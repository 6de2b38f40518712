//! Engine benchmarks: events/s on simulator output (pre-parsed and including JSON parsing),
//! timer advancement with 1 M open cases, and memory per open case (printed, from RSS).
//!
//! Run: `cargo bench --bench engine`. Numbers are reported, never asserted.

use std::hint::black_box;
use std::time::Duration;

use casewatch::core::calendar::DAY;
use casewatch::core::engine::Engine;
use casewatch::core::event::{parse_event, CaseEvent};
use casewatch::core::rules::Rules;
use criterion::{BatchSize, Criterion, Throughput};

mod common;
use common::{calendars, simulated_lines, NOW};

/// An acceptance of a promised item, as a validated event.
fn open_case(i: u64, t: i64) -> CaseEvent {
    let line = format!(
        r#"{{"version":1,"event_id":"a{i}","case_id":"case-{i:08}","type":"accepted","occurred_at":"{}","source":"hall","center_id":"C001","window_id":"W{:02}","item":{{"code":"I{:03}","kind":"promised","promised_days":{}}}}}"#,
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ"),
        i % 22,
        i % 330,
        1 + i % 20
    );
    parse_event(line.as_bytes(), NOW).unwrap()
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

/// Memory per open case: RSS growth while 1 M accepted, open cases are held, applied in batches
/// whose changes are drained as the pipeline drains them.
fn report_memory_per_open_case() {
    const N: u64 = 1_000_000;
    let events: Vec<CaseEvent> = (0..N)
        .map(|i| open_case(i, 1_546_300_800 + (i as i64 % 86_400) * 30))
        .collect();
    // As the pipeline runs: the changes are drained every batch (`pipeline.batch_events`), and
    // what stays is the engine's state of the open cases. Also printed: the growth before the
    // last drain, with a batch's pending change rows (anomalies raised as time passes).
    const BATCH: usize = 50_000;
    let before = rss_bytes();
    let mut engine = Engine::new(Rules::default(), calendars());
    let mut pending = 0;
    for batch in events.chunks(BATCH) {
        for e in batch {
            engine.apply(e);
        }
        pending = rss_bytes();
        black_box(engine.take_changes());
    }
    let after = rss_bytes();
    println!(
        "memory: {} open cases, RSS grew {:.1} MiB = {} bytes per open case \
         (changes drained every {BATCH} events; {} bytes before the last drain)",
        engine.case_count(),
        (after - before) as f64 / 1048576.0,
        (after - before) / N,
        (pending - before) / N
    );
    black_box(engine);
}

fn bench(c: &mut Criterion) {
    let lines = simulated_lines();
    let events: Vec<CaseEvent> = lines
        .iter()
        .filter_map(|l| parse_event(l.as_bytes(), NOW).ok())
        .collect();
    let cals = calendars();

    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("apply_preparsed_county_year", |b| {
        b.iter_batched(
            || Engine::with_capacity(Rules::default(), cals.clone(), 32_768),
            |mut engine| {
                for e in &events {
                    engine.apply(e);
                }
                black_box(engine.take_changes());
                engine
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("parse_and_apply_county_year", |b| {
        b.iter_batched(
            || Engine::with_capacity(Rules::default(), cals.clone(), 32_768),
            |mut engine| {
                for l in &lines {
                    if let Ok(e) = parse_event(l.as_bytes(), NOW) {
                        engine.apply(&e);
                    }
                }
                black_box(engine.take_changes());
                engine
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("parse_only_county_year", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(parse_event(l.as_bytes(), NOW).ok());
            }
        })
    });
    g.finish();

    // Timers: 1 M open cases, then engine time moves 30 days in one step and every deadline,
    // warning and legal instant in between fires.
    let mut g = c.benchmark_group("timers");
    const N: u64 = 1_000_000;
    let start = 1_546_300_800; // 2019-01-01
    let opens: Vec<CaseEvent> = (0..N)
        .map(|i| open_case(i, start + (i as i64 % 86_400)))
        .collect();
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.bench_function("advance_30_days_1m_open_cases", |b| {
        b.iter_batched(
            || {
                let mut engine = Engine::new(Rules::default(), cals.clone());
                for e in &opens {
                    engine.apply(e);
                }
                engine.take_changes();
                engine
            },
            |mut engine| {
                engine.advance_to(start + 30 * DAY);
                black_box(engine.take_changes().anomalies.len());
                engine
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn main() {
    // As the casewatch binary runs.
    casewatch::allocator::configure();
    report_memory_per_open_case();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
