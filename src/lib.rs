//! casewatch: the electronic-supervision (电子监察) event-stream processor of a government
//! service centre.
//!
//! # Layout
//!
//! * [`core`] — the pure core, no I/O: wire format v1 ([`core::event`]), the working calendar
//!   ([`core::calendar`]) and the holiday notice ([`core::notice`]), per-case state and facts
//!   ([`core::case`]), anomaly kinds and levels ([`core::rules`]), `window_daily` counters
//!   ([`core::aggregate`]) and the engine that ties them together ([`core::engine`]).
//! * [`pipeline`] — sources to ClickHouse exactly once in effect: the consumer of
//!   `casewatch run` (`pipeline::consumer`, `pipeline::service`), the shared flush
//!   (`pipeline::flush`) and `replay --sink clickhouse` (`pipeline::replay`).
//! * [`sinks`] — ClickHouse rows, writer and migrations.
//! * [`alerts`] — the outbox dispatcher and the webhook formats.
//! * [`bulletin`] — the monthly bulletin and quarterly report.
//! * [`console`] — the supervision console of `casewatch serve` (pages over ClickHouse).
//! * [`replay`] (CSV outputs), [`verify`], [`simulate`], [`holidays`] (the holiday files on
//!   disk), [`markdown`] (escaping), [`metrics`], [`config`], [`allocator`].
//! * [`cli`] — the `casewatch` command line; `main.rs` only calls it.
//!
//! Data flows one way: sources (Kafka, NDJSON files) → [`core::event::parse_event`] →
//! [`core::engine::Engine`] → sinks (ClickHouse, CSV, webhooks). ARCHITECTURE.md has the
//! shape and the invariants.

pub mod alerts;
pub mod allocator;
pub mod bulletin;
pub mod cli;
pub mod config;
pub mod console;
pub mod core;
pub mod holidays;
pub mod markdown;
pub mod metrics;
pub mod pipeline;
pub mod replay;
pub mod simulate;
pub mod sinks;
pub mod verify;
