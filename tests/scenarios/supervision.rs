//! The supervision loop (SPEC §9) on its boundaries: response deadlines, annulment by a granted
//! appeal, reopening, invalid actions and actions for evicted cases.

use super::*;
use casewatch::core::engine::Changes;

/// Accepted Monday 2018-10-15 10:00 with one promised day: overdue from Tuesday 10:00.
const ACCEPTED: &str = "2018-10-15T10:00:00+08:00";
/// The order: Tuesday 11:00, two working days to respond (due Thursday 11:00).
const ORDERED: &str = "2018-10-16T11:00:00+08:00";
const DUE: &str = "2018-10-18T11:00:00+08:00";

impl Scenario {
    fn act(
        &mut self,
        case: &str,
        action: &str,
        kind: &str,
        role: &str,
        t: Instant,
    ) -> ApplyOutcome {
        let mut extra = json!({
            "action": action, "kind": kind,
            "actor": {"id": format!("{role}-user"), "role": role},
            "note": format!("{action} by {role}"),
        });
        if matches!(action, "order" | "reopen") {
            extra["response_days"] = json!(2);
        }
        self.event(case, "supervision", t, "supervision", extra)
    }

    /// A case whose `overdue` card (yellow) holds, with engine time just past the order.
    fn overdue_case(case: &str) -> Self {
        let mut s = Scenario::new();
        s.accept(case, at(ACCEPTED), 1);
        s.engine.advance_to(at(ORDERED) - 60);
        assert!(s.facts(case).overdue());
        s
    }

    fn totals(&self) -> Counters {
        let mut sum = [0; casewatch::core::aggregate::COUNTERS];
        for (_, c) in self.engine.daily_rows() {
            for (s, v) in sum.iter_mut().zip(c) {
                *s += v;
            }
        }
        sum
    }
}

fn count(c: &Counters, i: u8) -> i64 {
    c[i as usize]
}

#[test]
fn a_response_at_the_deadline_is_on_time_and_one_second_later_is_overdue() {
    for (response, late) in [(at(DUE), false), (at(DUE) + 1, true)] {
        let mut s = Scenario::overdue_case("c");
        assert_eq!(
            s.act("c", "order", "overdue", "supervisor", at(ORDERED)),
            ApplyOutcome::Applied
        );
        assert_eq!(
            s.act("c", "respond", "overdue", "window", response),
            ApplyOutcome::Applied
        );
        let so = s.anomaly("c", AnomalyKind::SupervisionOverdue);
        assert_eq!(so, late.then_some(at(DUE)), "response at {}", ts(response));
        let c = s.totals();
        assert_eq!(count(&c, counter::ORDERS), 1);
        assert_eq!(count(&c, counter::ORDERS_OVERDUE), i64::from(late));
        assert_eq!(
            count(&c, counter::ORDERS_RESPONDED_ON_TIME),
            i64::from(!late)
        );
        // supervision_overdue is red by default, on the day of the deadline it passed.
        assert_eq!(count(&c, counter::ALERTS_RED), i64::from(late));
    }
}

#[test]
fn an_unanswered_order_becomes_supervision_overdue_when_engine_time_passes_its_deadline() {
    let mut s = Scenario::overdue_case("c");
    s.act("c", "order", "overdue", "supervisor", at(ORDERED));
    s.engine.take_changes();
    s.engine.advance_to(at(DUE));
    assert_eq!(s.anomaly("c", AnomalyKind::SupervisionOverdue), None);
    s.engine.advance_to(at(DUE) + 1);
    assert_eq!(
        s.anomaly("c", AnomalyKind::SupervisionOverdue),
        Some(at(DUE))
    );
    let changes: Changes = s.engine.take_changes();
    let raised: Vec<_> = changes
        .anomalies
        .iter()
        .filter(|a| a.change.kind == AnomalyKind::SupervisionOverdue)
        .collect();
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].change.revoked_at, None);
    assert_eq!(count(&s.totals(), counter::ORDERS_OVERDUE), 1);
    assert_eq!(
        changes.supervision.len(),
        1,
        "the supervision row is written again"
    );

    // A response that happened before the deadline but arrives late revokes it (event time).
    s.act("c", "respond", "overdue", "window", at(DUE) - 5);
    assert_eq!(s.anomaly("c", AnomalyKind::SupervisionOverdue), None);
    let c = s.totals();
    assert_eq!(
        (
            count(&c, counter::ORDERS_OVERDUE),
            count(&c, counter::ORDERS_RESPONDED_ON_TIME)
        ),
        (0, 1)
    );
}

#[test]
fn a_granted_appeal_annuls_the_card_everywhere_and_for_good() {
    let mut s = Scenario::overdue_case("c");
    assert_eq!(
        s.act("c", "appeal", "overdue", "window", at(ORDERED)),
        ApplyOutcome::Applied
    );
    s.event(
        "c",
        "completed",
        at(ORDERED) + 3600,
        "hall",
        json!({"outcome": "approved"}),
    );
    let before = s.totals();
    assert_eq!(count(&before, counter::BECAME_OVERDUE), 1);
    assert_eq!(count(&before, counter::COMPLETED_ON_TIME), 0);
    s.engine.take_changes();

    assert_eq!(
        s.act("c", "grant", "overdue", "supervisor", at(ORDERED) + 7200),
        ApplyOutcome::Applied
    );
    let f = s.facts("c");
    assert!(!f.overdue());
    assert!(f.on_time, "an annulled overdue card excuses the lateness");
    let c = s.totals();
    assert_eq!(count(&c, counter::BECAME_OVERDUE), 0);
    assert_eq!(count(&c, counter::COMPLETED_ON_TIME), 1);
    assert_eq!(count(&c, counter::ALERTS_YELLOW), 0);
    assert_eq!(
        (
            count(&c, counter::APPEALS),
            count(&c, counter::APPEALS_GRANTED)
        ),
        (1, 1)
    );
    let changes = s.engine.take_changes();
    let revoked: Vec<_> = changes
        .anomalies
        .iter()
        .filter(|a| a.change.kind == AnomalyKind::Overdue)
        .collect();
    assert_eq!(revoked.len(), 1);
    assert!(revoked[0].change.revoked_at.is_some() && revoked[0].change.annulled);

    // Annulled for good: the card cannot be appealed or ordered again.
    assert_eq!(
        s.act("c", "order", "overdue", "supervisor", at(ORDERED) + 9000),
        ApplyOutcome::InvalidAction
    );
    assert_eq!(
        s.act("c", "appeal", "overdue", "window", at(ORDERED) + 9000),
        ApplyOutcome::InvalidAction
    );
}

#[test]
fn an_annulled_card_stays_annulled_when_its_condition_holds_again() {
    let mut s = Scenario::overdue_case("c");
    s.act("c", "appeal", "overdue", "window", at(ORDERED));
    s.act("c", "grant", "overdue", "supervisor", at(ORDERED) + 60);
    // A pause that began before the deadline hides it; its resume would raise it again.
    s.event(
        "c",
        "paused",
        at(ACCEPTED) + 3600,
        "hall",
        json!({"reason": "supplement"}),
    );
    s.event(
        "c",
        "resumed",
        at(ORDERED) + 120,
        "hall",
        json!({"reason": "supplement"}),
    );
    s.engine.advance_to(at(DUE) + 10 * DAY);
    assert_eq!(s.anomaly("c", AnomalyKind::Overdue), None);
}

#[test]
fn an_appeal_granted_after_the_card_was_revoked_annuls_nothing_new() {
    let mut s = Scenario::overdue_case("c");
    s.act("c", "appeal", "overdue", "window", at(ORDERED));
    // A completion that happened before the deadline revokes the card.
    s.event(
        "c",
        "completed",
        at(ACCEPTED) + 3600,
        "department",
        json!({"outcome": "approved"}),
    );
    assert_eq!(s.anomaly("c", AnomalyKind::Overdue), None);
    s.engine.take_changes();
    assert_eq!(
        s.act("c", "grant", "overdue", "supervisor", at(ORDERED) + 60),
        ApplyOutcome::Applied
    );
    let changes = s.engine.take_changes();
    assert!(
        changes
            .anomalies
            .iter()
            .all(|a| a.change.kind != AnomalyKind::Overdue),
        "no second revocation"
    );
    let c = s.totals();
    assert_eq!(
        (
            count(&c, counter::APPEALS_GRANTED),
            count(&c, counter::BECAME_OVERDUE)
        ),
        (1, 0)
    );
    assert!(s.facts("c").on_time);
}

#[test]
fn a_reopen_sets_a_new_deadline_and_a_late_second_response_makes_the_order_overdue() {
    let mut s = Scenario::overdue_case("c");
    s.act("c", "order", "overdue", "supervisor", at(ORDERED));
    s.act("c", "respond", "overdue", "window", at(ORDERED) + 3600);
    assert_eq!(count(&s.totals(), counter::ORDERS_RESPONDED_ON_TIME), 1);
    // Reopened Thursday 11:00 with two working days: due Monday 2018-10-22 11:00.
    let reopened = at(DUE);
    let due2 = at("2018-10-22T11:00:00+08:00");
    assert_eq!(
        s.act("c", "reopen", "overdue", "supervisor", reopened),
        ApplyOutcome::Applied
    );
    let c = s.totals();
    assert_eq!(
        (
            count(&c, counter::ORDERS_RESPONDED_ON_TIME),
            count(&c, counter::ORDERS_OVERDUE)
        ),
        (0, 0)
    );
    s.engine.advance_to(due2);
    assert_eq!(s.anomaly("c", AnomalyKind::SupervisionOverdue), None);
    s.engine.advance_to(due2 + 1);
    assert_eq!(s.anomaly("c", AnomalyKind::SupervisionOverdue), Some(due2));
    // A late response keeps it; the supervisor can still close.
    s.act("c", "respond", "overdue", "window", due2 + 3600);
    assert_eq!(s.anomaly("c", AnomalyKind::SupervisionOverdue), Some(due2));
    assert_eq!(
        s.act("c", "close", "overdue", "supervisor", due2 + 7200),
        ApplyOutcome::Applied
    );
    let c = s.totals();
    assert_eq!(
        (
            count(&c, counter::ORDERS),
            count(&c, counter::ORDERS_OVERDUE)
        ),
        (1, 1)
    );
}

#[test]
fn a_granted_appeal_cancels_an_order_still_waiting() {
    let mut s = Scenario::overdue_case("c");
    s.act("c", "order", "overdue", "supervisor", at(ORDERED));
    s.act("c", "appeal", "overdue", "window", at(ORDERED) + 60);
    s.act("c", "grant", "overdue", "supervisor", at(ORDERED) + 120);
    s.engine.advance_to(at(DUE) + 5 * DAY);
    assert_eq!(s.anomaly("c", AnomalyKind::SupervisionOverdue), None);
    assert_eq!(
        s.act("c", "respond", "overdue", "window", at(DUE)),
        ApplyOutcome::InvalidAction
    );
    let c = s.totals();
    assert_eq!(
        (
            count(&c, counter::ORDERS),
            count(&c, counter::ORDERS_OVERDUE)
        ),
        (1, 0)
    );
}

#[test]
fn actions_that_do_not_fit_the_state_or_the_role_are_invalid_and_use_up_nothing() {
    let mut s = Scenario::overdue_case("c");
    let t = at(ORDERED);
    let invalid = [
        ("order", "overdue", "window"),
        ("order", "overdue", "viewer"),
        ("respond", "overdue", "window"),
        ("close", "overdue", "supervisor"),
        ("reopen", "overdue", "supervisor"),
        ("grant", "overdue", "supervisor"),
        ("reject", "overdue", "supervisor"),
        ("appeal", "overdue", "supervisor"),
        // A warning is not a card, and a card that does not hold cannot be acted on.
        ("order", "deadline_warning", "supervisor"),
        ("order", "legal_overdue", "supervisor"),
        ("appeal", "out_of_loop", "window"),
    ];
    for (action, kind, role) in invalid {
        assert_eq!(
            s.act("c", action, kind, role, t),
            ApplyOutcome::InvalidAction,
            "{action} {kind} by {role}"
        );
    }
    assert_eq!(
        s.act("unknown", "order", "overdue", "supervisor", t),
        ApplyOutcome::InvalidAction
    );
    assert_eq!(
        s.engine.case_count(),
        1,
        "an invalid action creates no case"
    );
    assert_eq!(s.totals()[counter::ORDERS as usize], 0);

    // An invalid action does not use up its event id.
    let order = |role: &str| {
        scenario_event(
            900,
            "c",
            "supervision",
            t,
            "supervision",
            json!({
                "action": "order", "kind": "overdue", "response_days": 2,
                "actor": {"id": "u", "role": role},
            }),
        )
    };
    assert_eq!(
        s.engine.apply(&order("window")),
        ApplyOutcome::InvalidAction
    );
    assert_eq!(s.engine.apply(&order("supervisor")), ApplyOutcome::Applied);
    assert_eq!(
        s.engine.apply(&order("supervisor")),
        ApplyOutcome::Duplicate
    );
    // One order per card.
    assert_eq!(
        s.act("c", "order", "overdue", "supervisor", t + 1),
        ApplyOutcome::InvalidAction
    );
    // supervision_overdue is the order's own card: appealed, never ordered.
    s.engine.advance_to(at(DUE) + 1);
    assert_eq!(
        s.act(
            "c",
            "order",
            "supervision_overdue",
            "supervisor",
            at(DUE) + 2
        ),
        ApplyOutcome::InvalidAction
    );
    assert_eq!(
        s.act("c", "appeal", "supervision_overdue", "window", at(DUE) + 2),
        ApplyOutcome::Applied
    );
}

#[test]
fn an_action_for_an_evicted_case_is_applied_once_the_case_is_restored() {
    let mut s = Scenario::overdue_case("c");
    s.event(
        "c",
        "completed",
        at(ORDERED) - 30,
        "hall",
        json!({"outcome": "approved"}),
    );
    s.engine.take_changes();
    let kept = s.engine.snapshot_case("c").expect("case held");
    assert_eq!(s.engine.evict_ended_before(at(ORDERED)), 1);
    assert_eq!(
        s.act("c", "order", "overdue", "supervisor", at(ORDERED)),
        ApplyOutcome::Evicted
    );
    s.engine.restore_case(&kept);
    s.seq -= 1; // the same event again
    assert_eq!(
        s.act("c", "order", "overdue", "supervisor", at(ORDERED)),
        ApplyOutcome::Applied
    );
    assert_eq!(count(&s.totals(), counter::ORDERS), 1);
}

#[test]
fn supervision_survives_a_persisted_snapshot() {
    let mut s = Scenario::overdue_case("c");
    s.act("c", "order", "overdue", "supervisor", at(ORDERED));
    s.act("c", "appeal", "overdue", "window", at(ORDERED) + 60);
    s.engine.take_changes();
    let bytes = s.engine.export_snapshot().encode().unwrap();
    let mut restored = Engine::new(Rules::default(), calendars());
    restored.import_snapshot(&EngineSnapshot::decode(&bytes).unwrap());
    let mut s2 = Scenario {
        engine: restored,
        seq: s.seq,
    };
    for sc in [&mut s, &mut s2] {
        assert_eq!(
            sc.act("c", "respond", "overdue", "window", at(DUE) + 1),
            ApplyOutcome::Applied
        );
        assert_eq!(
            sc.act("c", "reject", "overdue", "supervisor", at(DUE) + 2),
            ApplyOutcome::Applied
        );
    }
    assert_eq!(s.totals(), s2.totals());
    assert_eq!(s.facts("c"), s2.facts("c"));
}

#[test]
fn the_simulated_streams_of_the_property_tests_carry_every_action() {
    // The properties (duplicates, split replay, interleaving) run over these streams.
    let mut seen = std::collections::BTreeSet::new();
    let mut streams_with_actions = 0;
    for seed in 0..12 {
        let lines = simulated_lines(seed, 3);
        let actions: Vec<String> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "supervision")
            .map(|v| v["action"].as_str().unwrap().to_string())
            .collect();
        streams_with_actions += usize::from(!actions.is_empty());
        seen.extend(actions);
    }
    assert!(
        streams_with_actions >= 8,
        "{streams_with_actions} of 12 streams"
    );
    let all = [
        "order", "respond", "close", "reopen", "appeal", "grant", "reject",
    ];
    assert_eq!(seen, all.iter().map(|a| a.to_string()).collect());
}
