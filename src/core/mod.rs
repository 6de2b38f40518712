//! The pure core: wire format, calendar, case state, rules, aggregates and the engine.
//!
//! Nothing in here does I/O, spawns tasks or reads the wall clock: time is always an argument.
//! The pipeline, replay and tests all drive the same code.

pub mod aggregate;
pub mod calendar;
pub mod case;
pub mod engine;
pub mod event;
pub(crate) mod interner;
pub mod notice;
pub mod rules;
pub mod supervision;
