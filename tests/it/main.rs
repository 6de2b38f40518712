//! casewatch integration tests: one binary, a module per capability.
//!
//! Tests that need ClickHouse or the broker use [`support`], which finds the services started
//! by `scripts/services up` and fails (never skips) when they are missing.

mod alerts;
mod bulletin;
mod calendar;
mod catch_up;
mod cli;
mod cluster;
mod console;
mod contract;
mod docker;
mod pipeline;
mod queries;
mod receiver;
mod service;
mod smoke;
mod supervision;
mod support;
mod takeover;
