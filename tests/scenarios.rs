//! Scenario tests of the engine (a test target of their own: no services needed): every rule on its boundary, order tolerance, pauses,
//! revocations; and property tests over simulated streams (duplicates, split replay with
//! snapshot/restore, interleaving, aggregates = per-case facts).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};

use casewatch::core::aggregate::{counter, Counters};
use casewatch::core::calendar::{HolidayTable, Instant, WorkCalendar, DAY};
use casewatch::core::case::{Anomalies, Facts};
use casewatch::core::engine::snapshot::{EngineSnapshot, SnapshotError, FORMAT};
use casewatch::core::engine::{ApplyOutcome, Calendars, Engine};
use casewatch::core::event::{parse_event, parse_timestamp, CaseEvent};
use casewatch::core::rules::{AnomalyKind, Rules};

fn calendars() -> Calendars {
    static CAL: OnceLock<Arc<WorkCalendar>> = OnceLock::new();
    let cal = CAL.get_or_init(|| {
        let mut t = HolidayTable::new();
        for b in casewatch::config::EMBEDDED_HOLIDAYS {
            t.merge_json(b).unwrap();
        }
        Arc::new(WorkCalendar::new(
            chrono_tz::Asia::Shanghai,
            &t,
            &Default::default(),
        ))
    });
    Calendars::new(cal.clone())
}

fn at(s: &str) -> Instant {
    parse_timestamp(s).unwrap()
}

fn ts(t: Instant) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A validated event of centre C1, window W1, with `extra` fields added.
fn scenario_event(
    seq: u32,
    case: &str,
    ty: &str,
    t: Instant,
    source: &str,
    extra: Value,
) -> CaseEvent {
    let mut v = json!({
        "version": 1, "event_id": format!("e{seq}"), "case_id": case, "type": ty,
        "occurred_at": ts(t), "source": source, "center_id": "C1", "window_id": "W1",
    });
    if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
        v.extend(extra);
    }
    parse_event(v.to_string().as_bytes(), i64::MAX / 2).expect("valid scenario event")
}

/// A small DSL over one engine.
struct Scenario {
    engine: Engine,
    seq: u32,
}

impl Scenario {
    fn new() -> Self {
        Self {
            engine: Engine::new(Rules::default(), calendars()),
            seq: 0,
        }
    }

    fn event(
        &mut self,
        case: &str,
        ty: &str,
        t: Instant,
        source: &str,
        extra: Value,
    ) -> ApplyOutcome {
        self.seq += 1;
        let e = scenario_event(self.seq, case, ty, t, source, extra);
        self.engine.apply(&e)
    }

    fn accept(&mut self, case: &str, t: Instant, promised_days: i64) {
        self.event(
            case,
            "accepted",
            t,
            "hall",
            json!({"item": {"code": "I1", "kind": "promised", "promised_days": promised_days}}),
        );
    }

    fn facts(&mut self, case: &str) -> Facts {
        self.engine
            .all_case_rows()
            .into_iter()
            .find(|r| r.case_id == case)
            .expect("case exists")
            .facts
    }

    fn anomaly(&mut self, case: &str, kind: AnomalyKind) -> Option<Instant> {
        self.facts(case).anomalies.get(kind)
    }
}

const MON: &str = "2018-10-15T10:00:00+08:00";

#[test]
fn spec_worked_example_deadline() {
    let mut s = Scenario::new();
    s.accept("c", at(MON), 7);
    assert_eq!(
        s.facts("c").promised_deadline.get(),
        Some(at("2018-10-24T10:00:00+08:00"))
    );
}

#[test]
fn overdue_on_its_boundary_by_engine_time_and_by_completion() {
    let d = at("2018-10-24T10:00:00+08:00");
    let mut s = Scenario::new();
    s.accept("c", at(MON), 7);
    s.engine.advance_to(d);
    assert_eq!(s.anomaly("c", AnomalyKind::Overdue), None);
    s.engine.advance_to(d + 1);
    assert_eq!(s.anomaly("c", AnomalyKind::Overdue), Some(d));
    assert!(s.facts("c").overdue());

    for (completion, late) in [(d, false), (d + 1, true)] {
        let mut s = Scenario::new();
        s.accept("c", at(MON), 7);
        s.event(
            "c",
            "completed",
            completion,
            "hall",
            json!({"outcome": "approved"}),
        );
        let f = s.facts("c");
        assert_eq!(f.on_time, !late);
        assert_eq!(f.overdue(), late);
    }
}

#[test]
fn deadline_warning_two_days_before_or_half_the_time() {
    // 7 days: warning when 5 working days have run (Mon 22 10:00).
    let w = at("2018-10-22T10:00:00+08:00");
    let mut s = Scenario::new();
    s.accept("c", at(MON), 7);
    s.engine.advance_to(w);
    assert_eq!(s.anomaly("c", AnomalyKind::DeadlineWarning), None);
    s.engine.advance_to(w + 1);
    assert_eq!(s.anomaly("c", AnomalyKind::DeadlineWarning), Some(w));
    // 3 days: lead is min(2 days, 1.5 days) → warning after 1.5 working days (Tue 22:00).
    let mut s = Scenario::new();
    s.accept("c", at(MON), 3);
    s.engine.advance_to(at("2018-10-17T00:00:00+08:00"));
    assert_eq!(
        s.anomaly("c", AnomalyKind::DeadlineWarning),
        Some(at("2018-10-16T22:00:00+08:00"))
    );
}

#[test]
fn legal_overdue_uses_legal_days_or_promised_plus_five() {
    let mut s = Scenario::new();
    s.event(
        "a",
        "accepted",
        at(MON),
        "hall",
        json!({"item": {"code": "I", "kind": "promised", "promised_days": 7, "legal_days": 10}}),
    );
    s.accept("b", at(MON), 7);
    let legal_a = at("2018-10-29T10:00:00+08:00"); // 10 working days
    let legal_b = at("2018-10-31T10:00:00+08:00"); // 12 working days
    assert_eq!(s.facts("a").legal_deadline.get(), Some(legal_a));
    assert_eq!(
        s.facts("b").legal_deadline.get(),
        None,
        "no legal_days: the fallback is not a legal deadline"
    );
    s.engine.advance_to(legal_a + 1);
    assert_eq!(s.anomaly("a", AnomalyKind::LegalOverdue), Some(legal_a));
    s.engine.advance_to(legal_b);
    assert_eq!(s.anomaly("b", AnomalyKind::LegalOverdue), None);
    s.engine.advance_to(legal_b + 1);
    assert_eq!(s.anomaly("b", AnomalyKind::LegalOverdue), Some(legal_b));
}

#[test]
fn out_of_loop_after_grace_and_revoked_by_a_late_hall_acceptance() {
    let c = at(MON);
    let mut s = Scenario::new();
    s.event(
        "x",
        "completed",
        c,
        "department",
        json!({"outcome": "approved"}),
    );
    s.engine.advance_to(c + 3600);
    assert_eq!(s.anomaly("x", AnomalyKind::OutOfLoop), None);
    s.engine.advance_to(c + 3601);
    assert_eq!(s.anomaly("x", AnomalyKind::OutOfLoop), Some(c + 3600));
    assert!(
        !s.facts("x").on_time,
        "a completed case with no acceptance is never on time"
    );
    // The hall's acceptance (it happened before the completion) arrives late.
    s.accept("x", c - 3 * 3600, 7);
    assert_eq!(s.anomaly("x", AnomalyKind::OutOfLoop), None);
    let f = s.facts("x");
    assert!(f.on_time && f.early);
    assert_eq!(f.handling_seconds, Some(3 * 3600));
    let changes = s.engine.take_changes();
    let revoked: Vec<_> = changes
        .anomalies
        .iter()
        .filter(|a| a.change.revoked_at.is_some())
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].change.kind, AnomalyKind::OutOfLoop);
}

#[test]
fn department_completion_before_hall_acceptance_within_grace_raises_nothing() {
    let c = at(MON);
    let mut s = Scenario::new();
    s.event(
        "x",
        "completed",
        c,
        "department",
        json!({"outcome": "approved"}),
    );
    s.engine.advance_to(c + 1800);
    s.accept("x", c - 7200, 5);
    s.engine.advance_to(c + 10 * DAY);
    let f = s.facts("x");
    assert_eq!(f.anomalies, Anomalies::NONE);
    assert_eq!(f.status, casewatch::core::case::Status::Completed);
    assert_eq!(f.accepted_at.get(), Some(c - 7200));
}

#[test]
fn a_step_without_acceptance_is_out_of_loop_even_with_a_department_acceptance() {
    let t = at(MON);
    let mut s = Scenario::new();
    s.event(
        "x",
        "accepted",
        t,
        "department",
        json!({"item": {"code": "I", "kind": "instant"}}),
    );
    s.event("x", "step", t + 60, "department", json!({"step": "审核"}));
    s.engine.advance_to(t + 60 + 3601);
    assert_eq!(s.anomaly("x", AnomalyKind::OutOfLoop), Some(t + 60 + 3600));
}

#[test]
fn double_acceptance_at_the_second_acceptance() {
    let mut s = Scenario::new();
    s.accept("c", at(MON), 7);
    s.event(
        "c",
        "accepted",
        at(MON) + 500,
        "department",
        json!({"window_id": "W2", "item": {"code": "I9", "kind": "instant"}}),
    );
    let f = s.facts("c");
    assert_eq!(
        f.anomalies.get(AnomalyKind::DoubleAcceptance),
        Some(at(MON) + 500)
    );
    assert_eq!(
        f.promised_deadline.get(),
        Some(at("2018-10-24T10:00:00+08:00")),
        "the first acceptance stays authoritative"
    );
    assert_eq!(s.engine.syms().resolve(f.window).as_ref(), "W1");
}

#[test]
fn backfilled_on_its_boundaries() {
    let t = at(MON);
    for (lag, expected) in [(24 * 3600, None), (24 * 3600 + 1, Some(t))] {
        let mut s = Scenario::new();
        s.event(
            "c",
            "accepted",
            t,
            "hall",
            json!({"recorded_at": ts(t + lag), "item": {"code": "I", "kind": "instant"}}),
        );
        assert_eq!(s.anomaly("c", AnomalyKind::Backfilled), expected);
    }
    for (elapsed, expected) in [(599, true), (600, false)] {
        let mut s = Scenario::new();
        s.accept("c", t, 3);
        s.event(
            "c",
            "completed",
            t + elapsed,
            "hall",
            json!({"outcome": "approved"}),
        );
        assert_eq!(
            s.anomaly("c", AnomalyKind::Backfilled),
            expected.then_some(t + elapsed)
        );
    }
    // An instant item completed at once is normal.
    let mut s = Scenario::new();
    s.event(
        "c",
        "accepted",
        t,
        "hall",
        json!({"item": {"code": "I", "kind": "instant"}}),
    );
    s.event(
        "c",
        "completed",
        t + 30,
        "hall",
        json!({"outcome": "approved"}),
    );
    assert_eq!(s.anomaly("c", AnomalyKind::Backfilled), None);
    assert!(
        s.facts("c").on_site,
        "instant item completed the day it was accepted"
    );
}

#[test]
fn late_acceptance_on_its_boundary_and_revoked_by_an_earlier_acceptance() {
    let sub = at(MON);
    let limit = at("2018-10-22T10:00:00+08:00"); // 5 working days
    for (accepted, late) in [(limit, false), (limit + 1, true)] {
        let mut s = Scenario::new();
        s.event("c", "submitted", sub, "hall", json!({"item_code": "I"}));
        s.accept("c", accepted, 3);
        assert_eq!(
            s.anomaly("c", AnomalyKind::LateAcceptance),
            late.then_some(limit)
        );
    }
    let mut s = Scenario::new();
    s.event("c", "submitted", sub, "hall", json!({"item_code": "I"}));
    s.engine.advance_to(limit + 1);
    assert_eq!(s.anomaly("c", AnomalyKind::LateAcceptance), Some(limit));
    assert_eq!(
        s.facts("c").status,
        casewatch::core::case::Status::Submitted
    );
    s.accept("c", sub + 3600, 3);
    assert_eq!(s.anomaly("c", AnomalyKind::LateAcceptance), None);
}

#[test]
fn overcharge_only_above_a_published_standard() {
    let mut s = Scenario::new();
    s.accept("c", at(MON), 3);
    s.event(
        "c",
        "fee_charged",
        at(MON) + 60,
        "hall",
        json!({"amount_cents": 1000, "standard_cents": 1000}),
    );
    s.event(
        "c",
        "fee_charged",
        at(MON) + 70,
        "hall",
        json!({"amount_cents": 5000}),
    );
    assert_eq!(s.anomaly("c", AnomalyKind::Overcharge), None);
    s.event(
        "c",
        "fee_charged",
        at(MON) + 80,
        "hall",
        json!({"amount_cents": 1001, "standard_cents": 1000}),
    );
    assert_eq!(s.anomaly("c", AnomalyKind::Overcharge), Some(at(MON) + 80));
}

#[test]
fn special_procedure_overrun_on_its_boundary() {
    let p = at("2018-10-16T10:00:00+08:00");
    let limit = at("2018-10-19T10:00:00+08:00"); // 3 working days
    for (resume, overrun) in [(limit, false), (limit + 1, true)] {
        let mut s = Scenario::new();
        s.accept("c", at(MON), 20);
        s.event(
            "c",
            "paused",
            p,
            "department",
            json!({"reason": "special_procedure", "approved_days": 3}),
        );
        s.event(
            "c",
            "resumed",
            resume,
            "department",
            json!({"reason": "special_procedure"}),
        );
        assert_eq!(
            s.anomaly("c", AnomalyKind::SpecialProcedureOverrun),
            overrun.then_some(limit)
        );
    }
    // Still open: engine time passing the limit raises it.
    let mut s = Scenario::new();
    s.accept("c", at(MON), 20);
    s.event(
        "c",
        "paused",
        p,
        "department",
        json!({"reason": "special_procedure", "approved_days": 3}),
    );
    s.engine.advance_to(limit + 1);
    assert_eq!(
        s.anomaly("c", AnomalyKind::SpecialProcedureOverrun),
        Some(limit)
    );
}

#[test]
fn a_pause_stops_the_clock_and_hides_the_deadline_until_resumed() {
    let mut s = Scenario::new();
    s.accept("c", at(MON), 7);
    s.event(
        "c",
        "paused",
        at("2018-10-16T10:00:00+08:00"),
        "department",
        json!({"reason": "supplement"}),
    );
    assert_eq!(s.facts("c").promised_deadline.get(), None);
    assert_eq!(s.facts("c").status, casewatch::core::case::Status::Paused);
    // Far past the original deadline: not overdue while the clock is stopped.
    s.engine.advance_to(at("2018-11-30T00:00:00+08:00"));
    assert_eq!(s.anomaly("c", AnomalyKind::Overdue), None);
    // Overlapping pause of another reason counts once.
    s.event(
        "c",
        "paused",
        at("2018-10-17T10:00:00+08:00"),
        "department",
        json!({"reason": "suspension"}),
    );
    s.event(
        "c",
        "resumed",
        at("2018-10-18T10:00:00+08:00"),
        "department",
        json!({"reason": "suspension"}),
    );
    s.event(
        "c",
        "resumed",
        at("2018-10-18T10:00:00+08:00"),
        "department",
        json!({"reason": "supplement"}),
    );
    // 2 working days paused: deadline moves from Wed 24 to Fri 26 10:00 — already passed.
    let d = at("2018-10-26T10:00:00+08:00");
    let f = s.facts("c");
    assert_eq!(f.promised_deadline.get(), Some(d));
    assert_eq!(f.anomalies.get(AnomalyKind::Overdue), Some(d));
}

#[test]
fn a_deadline_passed_before_the_pause_stays() {
    let d = at("2018-10-24T10:00:00+08:00");
    let mut s = Scenario::new();
    s.accept("c", at(MON), 7);
    s.event(
        "c",
        "paused",
        d + 3600,
        "department",
        json!({"reason": "supplement"}),
    );
    let f = s.facts("c");
    assert_eq!(f.promised_deadline.get(), Some(d));
    assert_eq!(f.anomalies.get(AnomalyKind::Overdue), Some(d));
}

#[test]
fn extensions_add_to_promised_and_legal_time() {
    let mut s = Scenario::new();
    s.event(
        "c",
        "accepted",
        at(MON),
        "hall",
        json!({"item": {"code": "I", "kind": "promised", "promised_days": 7, "legal_days": 7}}),
    );
    s.event(
        "c",
        "extended",
        at(MON) + 60,
        "department",
        json!({"extra_days": 2}),
    );
    let f = s.facts("c");
    assert_eq!(
        f.promised_deadline.get(),
        Some(at("2018-10-26T10:00:00+08:00"))
    );
    assert_eq!(
        f.legal_deadline.get(),
        Some(at("2018-10-26T10:00:00+08:00"))
    );
}

#[test]
fn early_needs_a_full_working_day_left() {
    let d = at("2018-10-24T10:00:00+08:00");
    for (completion, early) in [(d - DAY, true), (d - DAY + 1, false)] {
        let mut s = Scenario::new();
        s.accept("c", at(MON), 7);
        s.event(
            "c",
            "completed",
            completion,
            "hall",
            json!({"outcome": "approved"}),
        );
        assert_eq!(s.facts("c").early, early);
    }
}

#[test]
fn duplicates_have_no_effect_and_evaluations_prefer_non_default() {
    let mut s = Scenario::new();
    s.accept("c", at(MON), 3);
    let e = parse_event(
        json!({"version": 1, "event_id": "dup", "case_id": "c", "type": "evaluated", "occurred_at": ts(at(MON) + 100),
               "source": "online", "center_id": "C1", "rating": 2}).to_string().as_bytes(),
        i64::MAX / 2,
    )
    .unwrap();
    assert_eq!(s.engine.apply(&e), ApplyOutcome::Applied);
    assert_eq!(s.engine.apply(&e), ApplyOutcome::Duplicate);
    s.event(
        "c",
        "evaluated",
        at(MON) + 200,
        "online",
        json!({"rating": 5, "is_default": true}),
    );
    assert_eq!(s.facts("c").rating.map(|r| r.value), Some(2));
    s.event(
        "c",
        "evaluated",
        at(MON) + 300,
        "online",
        json!({"rating": 4}),
    );
    assert_eq!(s.facts("c").rating.map(|r| r.value), Some(4));
    assert_eq!(s.engine.stats().duplicates, 1);
}

#[test]
fn later_terminal_events_are_ignored_for_the_end() {
    let mut s = Scenario::new();
    s.accept("c", at(MON), 3);
    assert_eq!(s.engine.open_case_count(), 1);
    s.event("c", "withdrawn", at(MON) + 100, "hall", json!({}));
    s.event(
        "c",
        "completed",
        at(MON) + 200,
        "hall",
        json!({"outcome": "approved"}),
    );
    assert_eq!(s.engine.open_case_count(), 0, "ended once, counted once");
    let f = s.facts("c");
    assert_eq!(f.status, casewatch::core::case::Status::Withdrawn);
    assert_eq!(f.completed_at.get(), None);
    assert_eq!(f.handling_seconds, None);
}

#[test]
fn calendar_reload_recomputes_open_deadlines_and_aggregates() {
    let mut s = Scenario::new();
    s.accept("c", at(MON), 7);
    let before = s.facts("c").promised_deadline.get();
    let mut t = HolidayTable::new();
    for b in casewatch::config::EMBEDDED_HOLIDAYS {
        t.merge_json(b).unwrap();
    }
    t.set(chrono::NaiveDate::from_ymd_opt(2018, 10, 17).unwrap(), true);
    let cal = Arc::new(WorkCalendar::new(
        chrono_tz::Asia::Shanghai,
        &t,
        &Default::default(),
    ));
    s.engine.reload_calendars(Calendars::new(cal));
    let after = s.facts("c").promised_deadline.get();
    assert_eq!(before, Some(at("2018-10-24T10:00:00+08:00")));
    assert_eq!(after, Some(at("2018-10-25T10:00:00+08:00")));
    assert_aggregates_match_cases(&mut s.engine);
}

/// The shipped data plus a synthetic 2027 notice read by the notice reader.
fn calendars_with_2027() -> Calendars {
    let notice =
        casewatch::core::notice::parse_notice(include_str!("fixtures/notices/synthetic-2027.txt"))
            .unwrap();
    let mut t = HolidayTable::new();
    for b in casewatch::config::EMBEDDED_HOLIDAYS {
        t.merge_json(b).unwrap();
    }
    t.merge_json(notice.to_holiday_cn_json(&[]).as_bytes())
        .unwrap();
    Calendars::new(Arc::new(WorkCalendar::new(
        chrono_tz::Asia::Shanghai,
        &t,
        &Default::default(),
    )))
}

#[test]
fn a_deadline_in_a_year_without_data_is_provisional_until_the_notice_is_loaded() {
    let mut s = Scenario::new();
    // Sunday 2026-12-20, 15 working days: 9 in 2026, the rest in 2027 (no data: Mon–Fri).
    s.accept("c", at("2026-12-20T10:00:00+08:00"), 15);
    let guessed = s.facts("c");
    assert_eq!(guessed.provisional_year, Some(2027));
    assert_eq!(
        guessed.promised_deadline.get(),
        Some(at("2027-01-09T00:00:00+08:00"))
    );
    assert_eq!(
        s.engine.provisional_open_cases().iter().collect::<Vec<_>>(),
        vec![(&2027, &1)]
    );
    // Engine time between the guessed and the real deadline: the guess raises a yellow card.
    s.engine.advance_to(at("2027-01-10T12:00:00+08:00"));
    assert_eq!(
        s.anomaly("c", AnomalyKind::Overdue),
        Some(at("2027-01-09T00:00:00+08:00"))
    );
    s.engine.take_changes();

    // The notice makes 2027-01-01 (a Friday) a holiday: one working day later, not overdue.
    s.engine.reload_calendars(calendars_with_2027());
    let real = s.facts("c");
    assert_eq!(real.provisional_year, None);
    assert_eq!(
        real.promised_deadline.get(),
        Some(at("2027-01-12T00:00:00+08:00"))
    );
    assert!(s.engine.provisional_open_cases().is_empty());
    let changes = s.engine.take_changes();
    assert_eq!(
        changes.cases.len(),
        1,
        "the row is written again without the flag"
    );
    let overdue = changes
        .anomalies
        .iter()
        .find(|a| a.change.kind == AnomalyKind::Overdue)
        .expect("the overdue card changes");
    assert_eq!(
        overdue.change.revoked_at,
        Some(at("2027-01-10T12:00:00+08:00"))
    );
    // The warning still holds, from its real instant (13 working days: 2027-01-08 00:00).
    let warning = changes
        .anomalies
        .iter()
        .find(|a| a.change.kind == AnomalyKind::DeadlineWarning)
        .expect("the warning moves");
    assert_eq!(warning.change.revoked_at, None);
    assert_eq!(warning.change.detected_at, at("2027-01-08T00:00:00+08:00"));
    // Once the real deadline passes, the card is raised again.
    s.engine.advance_to(at("2027-01-12T00:00:01+08:00"));
    assert_eq!(
        s.anomaly("c", AnomalyKind::Overdue),
        Some(at("2027-01-12T00:00:00+08:00"))
    );
    assert_aggregates_match_cases(&mut s.engine);
}

#[test]
fn only_what_a_case_reports_or_still_waits_for_makes_it_provisional() {
    let mut s = Scenario::new();
    // Deadline 2026-12-29 00:00; the legal fallback (5 working days later) is in 2027.
    s.accept("open", at("2026-12-22T10:00:00+08:00"), 5);
    assert_eq!(s.facts("open").provisional_year, Some(2027));
    // Completed in 2026: the fallback no longer matters, and nothing it reports needs 2027.
    s.accept("done", at("2026-12-22T10:00:00+08:00"), 5);
    s.event(
        "done",
        "completed",
        at("2026-12-28T10:00:00+08:00"),
        "hall",
        json!({"outcome": "approved"}),
    );
    assert_eq!(s.facts("done").provisional_year, None);
    // Ended cases are not counted as provisional open cases.
    assert_eq!(
        s.engine.provisional_open_cases().iter().collect::<Vec<_>>(),
        vec![(&2027, &1)]
    );
    // A calendar-day item never asks the working calendar for its deadline.
    s.event(
        "days",
        "accepted",
        at("2026-12-22T10:00:00+08:00"),
        "hall",
        json!({"item": {"code": "I1", "kind": "promised", "promised_days": 30, "day_unit": "calendar"}}),
    );
    assert_eq!(s.facts("days").provisional_year, None);
    // Before 2007 there is no data either.
    s.accept("old", at("2006-12-20T10:00:00+08:00"), 5);
    assert_eq!(s.facts("old").provisional_year, Some(2006));
}

// ---- properties over simulated streams ----

fn simulated_lines(seed: u64, months: u32) -> Vec<String> {
    use casewatch::simulate::{county_lines, SimOptions};
    let opts = SimOptions {
        seed,
        start: chrono::NaiveDate::from_ymd_opt(2019, 11, 1).unwrap(),
        months,
        scale: 0.08,
        invalid_rate: 0.0,
        duplicate_rate: 0.0,
    };
    county_lines(&opts)
}

/// Everything an engine would write, with strings resolved (independent of interning order).
#[derive(Debug, PartialEq, Eq)]
struct Output {
    cases: Vec<Vec<String>>,
    daily: BTreeMap<(i64, String, String, String), Counters>,
}

fn output(engine: &mut Engine) -> Output {
    let rules = engine.rules().clone();
    let rows = engine.all_case_rows();
    let cases = rows
        .iter()
        .map(|r| casewatch::replay::case_fields(r, engine.syms(), &rules))
        .collect();
    let daily = engine
        .daily_rows()
        .into_iter()
        .map(|(k, c)| {
            let s = engine.syms();
            (
                (
                    k.day,
                    s.resolve(k.center).to_string(),
                    s.resolve(k.window).to_string(),
                    s.resolve(k.item_code).to_string(),
                ),
                c,
            )
        })
        .collect();
    Output { cases, daily }
}

/// The rows that differ between two outputs (empty when equal).
fn differences(a: &Output, b: &Output) -> Vec<String> {
    let mut out = Vec::new();
    let (ca, cb): (BTreeMap<_, _>, BTreeMap<_, _>) = (
        a.cases.iter().map(|r| (r[0].clone(), r)).collect(),
        b.cases.iter().map(|r| (r[0].clone(), r)).collect(),
    );
    for k in ca
        .keys()
        .chain(cb.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if ca.get(k) != cb.get(k) {
            out.push(format!("case {k}: {:?} != {:?}", ca.get(k), cb.get(k)));
        }
    }
    for k in a
        .daily
        .keys()
        .chain(b.daily.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if a.daily.get(k) != b.daily.get(k) {
            out.push(format!(
                "daily {k:?}: {:?} != {:?}",
                a.daily.get(k),
                b.daily.get(k)
            ));
        }
    }
    out.truncate(12);
    out
}

fn run(lines: &[String], as_of: Instant) -> Engine {
    let mut engine = Engine::new(Rules::default(), calendars());
    for l in lines {
        let e = parse_event(l.as_bytes(), i64::MAX / 2).unwrap();
        engine.apply(&e);
    }
    engine.advance_to(as_of);
    engine
}

const AS_OF: &str = "2020-03-15T00:00:00Z";

/// window_daily equals what the case rows imply, counted independently of `Contribution`.
fn assert_aggregates_match_cases(engine: &mut Engine) {
    let rules = engine.rules().clone();
    let mut expected: BTreeMap<(i64, u32, u32, u32), Counters> = BTreeMap::new();
    for row in engine.all_case_rows() {
        let f = row.facts;
        let cal = engine.calendar_of(f.center);
        let mut add = |t: Instant, c: u8, v: i64| {
            expected
                .entry((cal.local_day(t), f.center, f.window, f.item_code))
                .or_insert(casewatch::core::aggregate::ZERO)[c as usize] += v;
        };
        if let Some(t) = f.submitted_at.get() {
            add(t, counter::RECEIVED, 1);
        }
        if let Some(t) = f.accepted_at.get() {
            add(t, counter::ACCEPTED, 1);
        }
        if let Some(t) = f.completed_at.get() {
            add(t, counter::COMPLETED, 1);
            add(t, counter::COMPLETED_ON_TIME, i64::from(f.on_time));
            add(t, counter::COMPLETED_EARLY, i64::from(f.early));
            add(t, counter::COMPLETED_ON_SITE, i64::from(f.on_site));
            if f.item_kind == Some(casewatch::core::event::ItemKind::Promised) {
                add(t, counter::COMPLETED_PROMISED, 1);
                add(t, counter::HANDLING_SECONDS, f.handling_seconds.unwrap());
                add(t, counter::PROMISED_SECONDS, f.promised_seconds.unwrap());
            }
        }
        if f.overdue() {
            add(
                f.promised_deadline.get().unwrap(),
                counter::BECAME_OVERDUE,
                1,
            );
        }
        if let Some(r) = f.rating {
            let c = if r.is_default {
                counter::DEFAULT_EVALUATIONS
            } else {
                counter::RATING_1 + r.value - 1
            };
            add(r.at, c, 1);
        }
        for k in AnomalyKind::ALL {
            if let Some(t) = f.anomalies.get(k) {
                add(t, counter::ANOMALIES, 1);
                add(t, counter::ALERTS_WARNING + rules.level(k) as u8, 1);
            }
        }
        match f.status {
            casewatch::core::case::Status::NotAccepted => {
                add(f.ended_at.get().unwrap(), counter::NOT_ACCEPTED, 1)
            }
            casewatch::core::case::Status::Withdrawn => {
                add(f.ended_at.get().unwrap(), counter::WITHDRAWN, 1)
            }
            _ => {}
        }
    }
    let items: BTreeMap<_, _> = engine
        .all_case_rows()
        .into_iter()
        .map(|r| (r.case_id, r.facts.item_code))
        .collect();
    for s in engine.all_supervision_rows() {
        let cal = engine.calendar_of(s.center);
        let item_code = items[&s.case_id];
        let mut add = |t: Instant, c: u8| {
            expected
                .entry((cal.local_day(t), s.center, s.window, item_code))
                .or_insert(casewatch::core::aggregate::ZERO)[c as usize] += 1;
        };
        if let Some(t) = s.ordered_at() {
            add(t, counter::ORDERS);
        }
        match (s.first_missed_deadline(), s.responded_at()) {
            (Some(t), _) if s.overdue_holds => add(t, counter::ORDERS_OVERDUE),
            (None, Some(t)) => add(t, counter::ORDERS_RESPONDED_ON_TIME),
            _ => {}
        }
        if let Some(t) = s.appealed_at() {
            add(t, counter::APPEALS);
        }
        match s.decision() {
            Some((true, t)) => add(t, counter::APPEALS_GRANTED),
            Some((false, t)) => add(t, counter::APPEALS_REJECTED),
            None => {}
        }
    }
    expected.retain(|_, c| c.iter().any(|v| *v != 0));
    let actual: BTreeMap<(i64, u32, u32, u32), Counters> = engine
        .daily_rows()
        .into_iter()
        .map(|(k, c)| ((k.day, k.center, k.window, k.item_code), c))
        .collect();
    assert_eq!(actual.len(), expected.len());
    for (k, c) in &expected {
        assert_eq!(actual.get(k), Some(c), "window_daily row {k:?}");
    }
}

#[test]
fn aggregates_equal_the_counts_the_case_rows_imply() {
    let lines = simulated_lines(3, 4);
    let mut engine = run(&lines, at(AS_OF));
    assert!(engine.case_count() > 300);
    assert!(
        !engine.all_supervision_rows().is_empty(),
        "the stream carries supervision actions"
    );
    assert_aggregates_match_cases(&mut engine);
}

#[test]
fn a_persisted_snapshot_keeps_evicted_cases_and_refuses_other_formats() {
    let lines = simulated_lines(7, 3);
    let mut first = run(&lines, at(AS_OF));
    first.take_changes();
    let evicted = first.evict_ended_before(at(AS_OF));
    assert!(evicted > 100, "the stream has ended cases: {evicted}");
    let bytes = first.export_snapshot().encode().unwrap();
    let snapshot = EngineSnapshot::decode(&bytes).unwrap();
    assert_eq!(snapshot.case_count(), first.case_count());
    let mut second = Engine::new(Rules::default(), calendars());
    second.import_snapshot(&snapshot);
    assert_eq!(second.case_count(), first.case_count());
    // A late event for an evicted case asks for a restore in both, instead of opening a case.
    let late = lines
        .iter()
        .map(|l| parse_event(l.as_bytes(), i64::MAX / 2).unwrap())
        .find(|e| first.snapshot_case(&e.case_id).is_none())
        .unwrap();
    assert_eq!(first.apply(&late), ApplyOutcome::Evicted);
    assert_eq!(second.apply(&late), ApplyOutcome::Evicted);
    // Another format, a truncation or foreign bytes are errors, never a misread.
    let mut other = bytes.clone();
    other[4..8].copy_from_slice(&(FORMAT + 1).to_le_bytes());
    assert_eq!(
        EngineSnapshot::decode(&other),
        Err(SnapshotError::OtherFormat { found: FORMAT + 1 })
    );
    assert!(matches!(
        EngineSnapshot::decode(&bytes[..bytes.len() / 2]),
        Err(SnapshotError::Damaged(_))
    ));
    assert_eq!(
        EngineSnapshot::decode(b"{\"cases\": []}"),
        Err(SnapshotError::NotASnapshot)
    );
}

#[path = "scenarios/supervision.rs"]
mod supervision;

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        #[test]
        fn duplicating_any_subset_of_events_changes_nothing(seed in 0u64..1000, picks in proptest::collection::vec(any::<prop::sample::Index>(), 1..200)) {
            let lines = simulated_lines(seed, 3);
            // A redelivery right after the original, or at the very end of the stream.
            let chosen: std::collections::BTreeSet<usize> = picks.iter().map(|p| p.index(lines.len())).collect();
            let mut with_dups = Vec::new();
            for (i, l) in lines.iter().enumerate() {
                with_dups.push(l.clone());
                if chosen.contains(&i) && i % 2 == 0 {
                    with_dups.push(l.clone());
                }
            }
            with_dups.extend(chosen.iter().filter(|i| *i % 2 == 1).map(|i| lines[*i].clone()));
            let a = output(&mut run(&lines, at(AS_OF)));
            let b = output(&mut run(&with_dups, at(AS_OF)));
            let diff = differences(&a, &b);
            prop_assert!(diff.is_empty(), "{}", diff.join("\n"));
        }

        #[test]
        fn split_replay_through_a_persisted_snapshot_equals_one_pass(seed in 0u64..1000, split in 0.0f64..1.0) {
            let lines = simulated_lines(seed, 3);
            let cut = (lines.len() as f64 * split) as usize;
            let first = run(&lines[..cut], i64::MIN);
            // Through the persisted form: bytes as written to ClickHouse, read back.
            let bytes = first.export_snapshot().encode().unwrap();
            let mut second = Engine::new(Rules::default(), calendars());
            second.import_snapshot(&EngineSnapshot::decode(&bytes).unwrap());
            for l in &lines[cut..] {
                second.apply(&parse_event(l.as_bytes(), i64::MAX / 2).unwrap());
            }
            second.advance_to(at(AS_OF));
            let one_pass = output(&mut run(&lines, at(AS_OF)));
            let diff = differences(&output(&mut second), &one_pass);
            prop_assert!(diff.is_empty(), "{}", diff.join("\n"));
        }

        #[test]
        fn output_does_not_depend_on_how_cases_interleave(seed in 0u64..1000, shuffle_seed in any::<u64>()) {
            use rand::{seq::SliceRandom, SeedableRng};
            let lines = simulated_lines(seed, 3);
            // Keep each case's own order; shuffle which case goes next.
            let mut by_case: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for l in &lines {
                let v: Value = serde_json::from_str(l).unwrap();
                by_case.entry(v["case_id"].as_str().unwrap().to_string()).or_default().push(l.clone());
            }
            let mut slots: Vec<String> = by_case.iter().flat_map(|(k, v)| std::iter::repeat_n(k.clone(), v.len())).collect();
            slots.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(shuffle_seed));
            let mut cursors: BTreeMap<String, usize> = BTreeMap::new();
            let shuffled: Vec<String> = slots.iter().map(|k| {
                let i = cursors.entry(k.clone()).or_default();
                *i += 1;
                by_case[k][*i - 1].clone()
            }).collect();
            let mut a = run(&lines, at(AS_OF));
            let mut b = run(&shuffled, at(AS_OF));
            assert_aggregates_match_cases(&mut b);
            let diff = differences(&output(&mut a), &output(&mut b));
            prop_assert!(diff.is_empty(), "{}", diff.join("\n"));
        }
    }
}

#[test]
fn touched_rows_are_emitted_again_and_holds_answers_at_engine_time() {
    let sub = at(MON);
    let limit = at("2018-10-22T10:00:00+08:00");
    let mut s = Scenario::new();
    s.event("c", "submitted", sub, "hall", json!({"item_code": "I"}));
    assert_eq!(
        s.engine.holds("c", AnomalyKind::LateAcceptance),
        Some(false)
    );
    s.engine.advance_to(limit + 1);
    assert_eq!(s.engine.holds("c", AnomalyKind::LateAcceptance), Some(true));
    assert_eq!(s.engine.holds("unknown", AnomalyKind::LateAcceptance), None);
    s.engine.take_changes();
    assert!(s.engine.take_changes().is_empty());
    assert!(s.engine.touch_case("c"));
    assert!(!s.engine.touch_case("unknown"));
    s.engine.touch_daily(17_000, "C9", "W9", "I9");
    let changes = s.engine.take_changes();
    assert_eq!(changes.cases.len(), 1);
    assert_eq!(changes.cases[0].case_id, "c");
    assert_eq!(changes.window_daily.len(), 1, "the touched key, with zeros");
    assert!(changes.window_daily[0].1.iter().all(|&v| v == 0));
}

#[test]
fn a_card_raised_again_after_its_revocation_is_a_new_round() {
    let mut s = Scenario::new();
    s.accept("c", at(MON), 7); // deadline Wed 2018-10-24 10:00
    s.engine.advance_to(at("2018-10-25T10:00:00+08:00"));
    let overdue = |changes: &casewatch::core::engine::Changes| {
        changes
            .anomalies
            .iter()
            .filter(|a| a.change.kind == AnomalyKind::Overdue)
            .map(|a| (a.change.round, a.change.revoked_at.is_some()))
            .collect::<Vec<_>>()
    };
    assert_eq!(overdue(&s.engine.take_changes()), vec![(1, false)]);
    // A late pause from before the deadline: the clock stopped, the card is revoked …
    s.event(
        "c",
        "paused",
        at("2018-10-16T10:00:00+08:00"),
        "department",
        json!({"reason": "supplement"}),
    );
    assert_eq!(overdue(&s.engine.take_changes()), vec![(1, true)]);
    // … the resumption a day later moves the deadline to Thu 25 10:00, and once engine time
    // passes it the card is raised again: round 2.
    s.event(
        "c",
        "resumed",
        at("2018-10-17T10:00:00+08:00"),
        "department",
        json!({"reason": "supplement"}),
    );
    s.engine.advance_to(at("2018-10-26T10:00:00+08:00"));
    let changes = s.engine.take_changes();
    assert_eq!(overdue(&changes), vec![(2, false)]);
    assert_eq!(changes.cases[0].rounds[AnomalyKind::Overdue as usize], 2);
}
