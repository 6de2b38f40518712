//! Sinks: where the engine's results go. Thin adapters; no business rule lives here.

pub mod clickhouse;
