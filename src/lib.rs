//! casewatch: the electronic-supervision (电子监察) event-stream processor of a government
//! service centre.
//!
//! # Layout
//!
//! * [`core`] — the pure core, no I/O: wire format v1 ([`core::event`]), the working calendar
//!   ([`core::calendar`]), per-case state and facts ([`core::case`]), anomaly kinds and levels
//!   ([`core::rules`]), `window_daily` counters ([`core::aggregate`]) and the engine that ties
//!   them together ([`core::engine`]).
//! * [`holidays`] — the holiday files on disk: importing the State Council's notice
//!   ([`core::notice`] reads it) and the coverage report.
//! * [`config`] — layered configuration (embedded defaults → file → `CASEWATCH__…` env).
//! * [`replay`] — NDJSON files through the engine in event-clock mode, and the CSV outputs.
//! * [`simulate`] — a reproducible, realistic event stream of a county centre.
//! * [`cli`] — the `casewatch` command line; `main.rs` only calls it.
//! * [`allocator`] — glibc malloc thresholds, set once at start.
//!
//! Data flows one way: sources (Kafka, NDJSON files) → [`core::event::parse_event`] →
//! [`core::engine::Engine`] → sinks (ClickHouse, CSV, webhooks).

pub mod alerts;
pub mod allocator;
pub mod bulletin;
pub mod cli;
pub mod config;
pub mod core;
pub mod holidays;
pub mod metrics;
pub mod pipeline;
pub mod replay;
pub mod simulate;
pub mod sinks;
pub mod verify;
