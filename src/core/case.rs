//! One case: its state, built from its events in log order, and its facts at engine time T.
//!
//! `CaseState::apply` folds an event into a compact state (no event is kept verbatim);
//! `CaseState::facts` is a pure function of that state, the centre's calendar, the rules and T.
//! Because facts are recomputed from state rather than patched, a late event corrects or
//! revokes whatever it disproves (SPEC §2 "Facts are event-time facts").

use super::calendar::{DayUnit, Instant, WorkCalendar, DAY};
use super::event::{CaseEvent, EventBody, ItemKind, Outcome, PauseReason, Source};
use super::rules::{thresholds, AnomalyKind, Level, Rules};
use super::supervision::{self, Supervision};

/// An interned string (centre, window, department, item code or name); 0 is "none".
pub(crate) type Sym = u32;

/// An optional instant stored in 8 bytes (`i64::MIN` is "none").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct At(i64);

impl From<Option<Instant>> for At {
    fn from(t: Option<Instant>) -> Self {
        t.map_or(At::NONE, At::some)
    }
}

impl At {
    /// No instant.
    pub const NONE: At = At(i64::MIN);

    /// Some instant.
    pub fn some(t: Instant) -> Self {
        At(t)
    }

    /// As an `Option`.
    pub fn get(self) -> Option<Instant> {
        (self.0 != i64::MIN).then_some(self.0)
    }

    /// Whether there is an instant.
    pub fn is_some(self) -> bool {
        self.0 != i64::MIN
    }

    /// Keeps the earlier of the two.
    fn min_with(&mut self, t: Instant) {
        if self.0 == i64::MIN || t < self.0 {
            self.0 = t;
        }
    }

    /// Sets it when it is still none.
    fn set_first(&mut self, t: Instant) {
        if self.0 == i64::MIN {
            self.0 = t;
        }
    }
}

impl Default for At {
    fn default() -> Self {
        At::NONE
    }
}

/// The authoritative acceptance (first `accepted` in log order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Acceptance {
    pub(crate) at: Instant,
    pub(crate) center: Sym,
    pub(crate) window: Sym,
    pub(crate) department: Sym,
    pub(crate) item_code: Sym,
    pub(crate) item_name: Sym,
    pub(crate) kind: ItemKind,
    pub(crate) promised_days: u16,
    pub(crate) legal_days: Option<u32>,
    pub(crate) day_unit: DayUnit,
}

/// How a case ended (its first terminal event in log order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndKind {
    Completed { outcome: Outcome, on_site: bool },
    NotAccepted,
    Withdrawn,
}

/// The end of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct End {
    pub(crate) kind: EndKind,
    pub(crate) at: Instant,
}

/// One pause, paired in log order (at most one open per reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pause {
    pub(crate) reason: PauseReason,
    pub(crate) start: Instant,
    /// The resume instant (never before `start`); none while open.
    pub(crate) end: At,
    /// `approved_days` of a special procedure.
    pub(crate) approved_days: Option<u32>,
}

/// The case's evaluation: its last non-default `evaluated`, else its last default one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rating {
    pub value: u8,
    pub is_default: bool,
    pub at: Instant,
}

/// Attributes first seen on any event (used when there is no acceptance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SeenAttrs {
    pub(crate) center: Sym,
    pub(crate) window: Sym,
    pub(crate) department: Sym,
    pub(crate) item_code: Sym,
}

/// Interned attributes of one event, prepared by the engine.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EventSyms {
    pub(crate) center: Sym,
    pub(crate) window: Sym,
    pub(crate) department: Sym,
    pub(crate) item_code: Sym,
    pub(crate) item_name: Sym,
}

/// Everything casewatch remembers of a case.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct CaseState {
    pub(crate) seen: SeenAttrs,
    pub(crate) acceptance: Option<Acceptance>,
    pub(crate) submitted_at: At,
    /// Some `accepted` came from the hall or the online portal.
    pub(crate) acceptance_in_loop: bool,
    /// Earliest `completed`/`step` occurred_at (out-of-loop evidence).
    pub(crate) first_handling_at: At,
    /// Earliest occurred_at among `accepted`, `not_accepted`, `withdrawn`, `completed`.
    pub(crate) intake_end: At,
    pub(crate) end: Option<End>,
    pub(crate) rating: Option<Rating>,
    /// What few cases have (none while all of it is empty).
    pub(crate) rare: Option<Box<Rare>>,
    /// Hashes of applied event ids (duplicate detection); the first four inline.
    pub(crate) event_ids: smallvec::SmallVec<[u64; 4]>,
}

/// The part of a case's state that few cases have, kept out of line so that an ordinary case
/// stays small. Present only when some field is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Rare {
    /// occurred_at of the second `accepted` (double acceptance).
    pub(crate) second_acceptance_at: At,
    /// Pauses, paired in log order.
    pub(crate) pauses: Vec<Pause>,
    pub(crate) extension_days: u32,
    pub(crate) backfilled_at: At,
    pub(crate) overcharge_at: At,
    /// Revocations per anomaly kind so far: the round of a raise is this plus one (SPEC §4,
    /// "Rounds").
    pub(crate) revocations: [u16; AnomalyKind::COUNT],
    /// The supervision loop of its cards (SPEC §9), one entry per kind acted on.
    pub(crate) supervision: Vec<Supervision>,
}

/// The rare part of a case that has none of it.
static NO_RARE: Rare = Rare {
    second_acceptance_at: At::NONE,
    pauses: Vec::new(),
    extension_days: 0,
    backfilled_at: At::NONE,
    overcharge_at: At::NONE,
    revocations: [0; AnomalyKind::COUNT],
    supervision: Vec::new(),
};

impl Rare {
    fn is_empty(&self) -> bool {
        *self == NO_RARE
    }
}

/// A case's status (SPEC Appendix A).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Submitted,
    Accepted,
    Paused,
    Completed,
    NotAccepted,
    Withdrawn,
    Unaccepted,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "submitted",
            Status::Accepted => "accepted",
            Status::Paused => "paused",
            Status::Completed => "completed",
            Status::NotAccepted => "not_accepted",
            Status::Withdrawn => "withdrawn",
            Status::Unaccepted => "unaccepted",
        }
    }
}

/// The facts of a case at engine time T: what `cases` holds plus its anomalies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub status: Status,
    pub center: Sym,
    pub window: Sym,
    pub department: Sym,
    pub item_code: Sym,
    pub item_kind: Option<ItemKind>,
    pub submitted_at: At,
    pub accepted_at: At,
    pub promised_deadline: At,
    pub legal_deadline: At,
    /// Completion instant (completed cases only).
    pub completed_at: At,
    pub outcome: Option<Outcome>,
    /// End instant of any terminal event.
    pub ended_at: At,
    pub on_time: bool,
    pub early: bool,
    pub on_site: bool,
    pub handling_seconds: Option<i64>,
    /// Promised time of a completed case with an acceptance of a promised item.
    pub promised_seconds: Option<i64>,
    pub rating: Option<Rating>,
    /// detected_at of each anomaly kind that holds.
    pub anomalies: Anomalies,
    /// The first year without holiday data that a deadline or working time of the case
    /// needed (guessed as Monday–Friday): the case's facts are provisional (SPEC §2).
    pub provisional_year: Option<i32>,
    /// The next instant I > T such that the facts change once T passes I (none: never).
    pub next_change: At,
}

/// The detected_at of each anomaly kind that holds, 8 bytes per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anomalies([At; AnomalyKind::COUNT]);

impl Anomalies {
    /// No anomaly holds.
    pub const NONE: Anomalies = Anomalies([At::NONE; AnomalyKind::COUNT]);

    /// When the anomaly of `kind` was detected, if it holds.
    pub fn get(&self, kind: AnomalyKind) -> Option<Instant> {
        self.0[kind as usize].get()
    }

    /// Whether the anomaly of `kind` holds.
    pub fn holds(&self, kind: AnomalyKind) -> bool {
        self.get(kind).is_some()
    }

    fn set(&mut self, kind: AnomalyKind, detected_at: Option<Instant>) {
        self.0[kind as usize] = detected_at.into();
    }
}

impl Facts {
    /// Whether the `overdue` anomaly holds.
    pub fn overdue(&self) -> bool {
        self.anomalies.holds(AnomalyKind::Overdue)
    }

    /// The highest level among holding anomalies.
    pub fn alert_level(&self, rules: &Rules) -> Option<Level> {
        AnomalyKind::ALL
            .iter()
            .filter(|k| self.anomalies.holds(**k))
            .map(|k| rules.level(*k))
            .max()
    }

    /// Whether the case has ended.
    pub fn is_ended(&self) -> bool {
        self.ended_at.is_some()
    }
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The event changed the state.
    Applied,
    /// Its event id was seen before in this case: no effect.
    Duplicate,
}

/// A stable 64-bit FNV-1a hash (duplicate detection and alert ids).
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl CaseState {
    /// The rare part of the state (empty when the case has none).
    pub(crate) fn rare(&self) -> &Rare {
        self.rare.as_deref().unwrap_or(&NO_RARE)
    }

    /// The rare part, created when a field of it is about to be set.
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// The round of the anomaly of `kind`: 1, plus one for each revocation so far.
    pub(crate) fn round(&self, kind: AnomalyKind) -> u32 {
        u32::from(self.rare().revocations[kind as usize]) + 1
    }

    /// Counts a revocation of the anomaly of `kind` (its next raise is a new round).
    pub(crate) fn count_revocation(&mut self, kind: AnomalyKind) {
        let n = &mut self.rare_mut().revocations[kind as usize];
        *n = n.saturating_add(1);
    }

    /// Raises the revocation count of `kind` to at least `n` (rounds recorded before a restart).
    pub(crate) fn ensure_revocations(&mut self, kind: AnomalyKind, n: u16) {
        if self.rare().revocations[kind as usize] < n {
            self.rare_mut().revocations[kind as usize] = n;
        }
    }

    /// Sets the rare part, keeping it absent when it is empty.
    pub(crate) fn set_rare(&mut self, rare: Rare) {
        self.rare = (!rare.is_empty()).then(|| Box::new(rare));
    }

    /// Whether applying `event` (not a duplicate) would change nothing but the set of applied
    /// event ids, so that the case's facts stay exactly as they are: a step after the case's
    /// first handling, a fee that is not an overcharge or follows one, with no attribute the
    /// case has not seen yet. Only these common events are recognised; `false` is always safe.
    pub(crate) fn is_fact_neutral(&self, event: &CaseEvent, syms: EventSyms) -> bool {
        let nothing_new_seen = (self.seen.center != 0 || syms.center == 0)
            && (self.seen.window != 0 || syms.window == 0)
            && (self.seen.department != 0 || syms.department == 0)
            && (self.seen.item_code != 0 || syms.item_code == 0);
        nothing_new_seen
            && match &event.body {
                EventBody::Step { .. } => self
                    .first_handling_at
                    .get()
                    .is_some_and(|first| first <= event.occurred_at),
                EventBody::FeeCharged {
                    amount_cents,
                    standard_cents,
                } => {
                    !standard_cents.is_some_and(|s| *amount_cents > s)
                        || self.rare().overcharge_at.get().is_some()
                }
                _ => false,
            }
    }

    /// Folds one validated event into the state, in log order.
    /// `id` is the [`stable_hash`] of the event id.
    pub(crate) fn apply(&mut self, event: &CaseEvent, id: u64, syms: EventSyms) -> Applied {
        if self.event_ids.contains(&id) {
            return Applied::Duplicate;
        }
        self.event_ids.push(id);
        let t = event.occurred_at;

        if self.seen.center == 0 {
            self.seen.center = syms.center;
        }
        if self.seen.window == 0 {
            self.seen.window = syms.window;
        }
        if self.seen.department == 0 {
            self.seen.department = syms.department;
        }
        if self.seen.item_code == 0 {
            self.seen.item_code = syms.item_code;
        }

        match &event.body {
            EventBody::Submitted { .. } => self.submitted_at.set_first(t),
            EventBody::Accepted { item, .. } => {
                if matches!(event.source, Source::Hall | Source::Online) {
                    self.acceptance_in_loop = true;
                }
                self.intake_end.min_with(t);
                if self.acceptance.is_none() {
                    self.acceptance = Some(Acceptance {
                        at: t,
                        center: syms.center,
                        window: syms.window,
                        department: syms.department,
                        item_code: syms.item_code,
                        item_name: syms.item_name,
                        kind: item.kind,
                        promised_days: item.promised_days.unwrap_or(0).clamp(0, 3650) as u16,
                        legal_days: item
                            .legal_days
                            .map(|d| d.clamp(0, i64::from(u32::MAX)) as u32),
                        day_unit: item.day_unit,
                    });
                } else {
                    if self.rare().second_acceptance_at.get().is_none() {
                        self.rare_mut().second_acceptance_at = At::some(t);
                    }
                }
                self.check_backfill(event);
            }
            EventBody::NotAccepted { .. } => self.end_with(EndKind::NotAccepted, t),
            EventBody::Withdrawn { .. } => self.end_with(EndKind::Withdrawn, t),
            EventBody::Completed { outcome, on_site } => {
                self.first_handling_at.min_with(t);
                self.end_with(
                    EndKind::Completed {
                        outcome: *outcome,
                        on_site: *on_site,
                    },
                    t,
                );
                self.check_backfill(event);
            }
            EventBody::Step { .. } => self.first_handling_at.min_with(t),
            EventBody::Paused {
                reason,
                approved_days,
            } => {
                if !self
                    .rare()
                    .pauses
                    .iter()
                    .any(|p| p.reason == *reason && p.end.get().is_none())
                {
                    self.rare_mut().pauses.push(Pause {
                        reason: *reason,
                        start: t,
                        end: At::NONE,
                        approved_days: approved_days
                            .map(|d| d.clamp(0, i64::from(u32::MAX)) as u32),
                    });
                }
            }
            EventBody::Resumed { reason } => {
                let open = |p: &Pause| p.reason == *reason && p.end.get().is_none();
                if self.rare().pauses.iter().any(open) {
                    if let Some(p) = self.rare_mut().pauses.iter_mut().find(|p| open(p)) {
                        p.end = At::some(t.max(p.start));
                    }
                }
            }
            EventBody::Extended { extra_days } => {
                let rare = self.rare_mut();
                rare.extension_days = rare.extension_days.saturating_add(*extra_days as u32);
            }
            EventBody::FeeCharged {
                amount_cents,
                standard_cents,
            } => {
                if standard_cents.is_some_and(|s| *amount_cents > s)
                    && self.rare().overcharge_at.get().is_none()
                {
                    self.rare_mut().overcharge_at = At::some(t);
                }
            }
            EventBody::Evaluated {
                rating, is_default, ..
            } => {
                let keep_old = matches!(self.rating, Some(r) if !r.is_default) && *is_default;
                if !keep_old {
                    self.rating = Some(Rating {
                        value: *rating,
                        is_default: *is_default,
                        at: t,
                    });
                }
            }
            EventBody::Supervision(action) => {
                supervision::apply(&mut self.rare_mut().supervision, action, t)
            }
        }
        Applied::Applied
    }

    fn end_with(&mut self, kind: EndKind, t: Instant) {
        self.intake_end.min_with(t);
        if self.end.is_none() {
            self.end = Some(End { kind, at: t });
        }
    }

    /// `backfilled`: a late record, or a promised case completed within 10 minutes of acceptance.
    /// The triggering event is the one whose application first makes it hold.
    fn check_backfill(&mut self, event: &CaseEvent) {
        if self.rare().backfilled_at.get().is_some() {
            return;
        }
        let late_record = event.recorded_at - event.occurred_at > thresholds::BACKFILL_RECORD_LAG;
        let too_fast = match (self.acceptance, self.end) {
            (
                Some(a),
                Some(End {
                    kind: EndKind::Completed { .. },
                    at,
                }),
            ) => a.kind == ItemKind::Promised && at - a.at < thresholds::BACKFILL_MIN_ELAPSED,
            _ => false,
        };
        if late_record || too_fast {
            self.rare_mut().backfilled_at = At::some(event.occurred_at);
        }
    }

    /// Whether a pause is open now (in log order).
    pub(crate) fn pause_open(&self) -> bool {
        self.rare().pauses.iter().any(|p| p.end.get().is_none())
    }

    /// The case's status (SPEC Appendix A).
    pub(crate) fn status(&self) -> Status {
        match (self.end, self.acceptance) {
            (
                Some(End {
                    kind: EndKind::Completed { .. },
                    ..
                }),
                _,
            ) => Status::Completed,
            (
                Some(End {
                    kind: EndKind::NotAccepted,
                    ..
                }),
                _,
            ) => Status::NotAccepted,
            (
                Some(End {
                    kind: EndKind::Withdrawn,
                    ..
                }),
                _,
            ) => Status::Withdrawn,
            (None, Some(_)) if self.pause_open() => Status::Paused,
            (None, Some(_)) => Status::Accepted,
            (None, None) if self.submitted_at.get().is_some() => Status::Submitted,
            (None, None) => Status::Unaccepted,
        }
    }

    /// The facts of the case at engine time `now`. The rule instants of an uninterrupted
    /// promised clock come from `memo` when its last computation had the same inputs.
    pub(crate) fn facts(
        &self,
        cal: &WorkCalendar,
        rules: &Rules,
        now: Instant,
        memo: &DeadlineMemo,
    ) -> Facts {
        let mut next = NextChange(None);
        let mut anomalies = Anomalies::NONE;
        let end_at = self.end.map(|e| e.at);
        let completed = match self.end {
            Some(End {
                kind: EndKind::Completed { outcome, on_site },
                at,
            }) => Some((outcome, on_site, at)),
            _ => None,
        };

        let (center, window, department, item_code) = match self.acceptance {
            Some(a) => (
                a.center,
                a.window,
                if a.department != 0 {
                    a.department
                } else {
                    self.seen.department
                },
                a.item_code,
            ),
            None => (
                self.seen.center,
                self.seen.window,
                self.seen.department,
                self.seen.item_code,
            ),
        };

        let mut facts = Facts {
            status: self.status(),
            center,
            window,
            department,
            item_code,
            item_kind: self.acceptance.map(|a| a.kind),
            submitted_at: self.submitted_at,
            accepted_at: self.acceptance.map(|a| a.at).into(),
            promised_deadline: At::NONE,
            legal_deadline: At::NONE,
            completed_at: completed.map(|c| c.2).into(),
            outcome: completed.map(|c| c.0),
            ended_at: end_at.into(),
            on_time: false,
            early: false,
            on_site: false,
            handling_seconds: None,
            promised_seconds: None,
            rating: self.rating,
            anomalies: Anomalies::NONE,
            provisional_year: None,
            next_change: At::NONE,
        };
        // The local days the calendar was asked about: a working-time computation over [a, b]
        // depends on the holiday data of every day from a to b.
        let mut span = CalendarSpan(None);

        let rare = self.rare();
        if let Some(acc) = self.acceptance {
            let clock = RunningClock::new(cal, acc, &rare.pauses, end_at);
            if acc.kind == ItemKind::Promised {
                let promised =
                    (i64::from(acc.promised_days) + i64::from(rare.extension_days)) * DAY;
                let instants = || {
                    let deadline = clock.reach(promised);
                    let legal_deadline = acc.legal_days.and_then(|l| {
                        clock.reach((i64::from(l) + i64::from(rare.extension_days)) * DAY)
                    });
                    let legal_instant = match acc.legal_days {
                        Some(_) => legal_deadline,
                        None => clock.reach(promised + thresholds::LEGAL_FALLBACK),
                    };
                    let warning_instant =
                        clock.reach(promised - thresholds::WARNING_LEAD.min(promised / 2));
                    RuleInstants {
                        deadline,
                        legal_deadline,
                        legal_instant,
                        warning_instant,
                    }
                };
                // Without pauses the instants depend only on the acceptance, the extensions
                // and the calendar.
                let RuleInstants {
                    deadline,
                    legal_deadline,
                    legal_instant,
                    warning_instant,
                } = if rare.pauses.is_empty() {
                    memo.get_or(
                        DeadlineKey {
                            acceptance: acc,
                            extension_days: rare.extension_days,
                            calendar: cal as *const WorkCalendar as usize,
                        },
                        instants,
                    )
                } else {
                    instants()
                };
                facts.promised_deadline = deadline.into();
                facts.legal_deadline = legal_deadline.into();
                if acc.day_unit == DayUnit::Working {
                    for i in [deadline, legal_deadline].into_iter().flatten() {
                        span.cover(acc.at, i);
                    }
                    for i in [legal_instant, warning_instant].into_iter().flatten() {
                        span.cover_rule(acc.at, i, end_at);
                    }
                }
                let compared = end_at.unwrap_or(now);
                for (kind, instant) in [
                    (AnomalyKind::DeadlineWarning, warning_instant),
                    (AnomalyKind::Overdue, deadline),
                    (AnomalyKind::LegalOverdue, legal_instant),
                ] {
                    if let Some(i) = instant {
                        if compared > i {
                            anomalies.set(kind, Some(i));
                        } else if end_at.is_none() {
                            next.offer(i);
                        }
                    }
                }
                if let Some((_, _, c)) = completed {
                    let running = clock.running(c);
                    facts.on_time = deadline.is_some_and(|d| c <= d);
                    facts.early = promised - running >= rules.early_margin_secs;
                    facts.promised_seconds = Some(promised);
                }
            } else if completed.is_some() {
                facts.on_time = true;
            }
            if let Some((_, on_site, c)) = completed {
                if acc.day_unit == DayUnit::Working {
                    span.cover(acc.at, c);
                }
                facts.handling_seconds = Some(clock.running(c));
                facts.on_site = on_site
                    || (acc.kind == ItemKind::Instant && cal.local_day(c) == cal.local_day(acc.at));
            }
        }

        // out_of_loop: handled without any in-loop acceptance, beyond the grace period.
        if let Some(first) = self.first_handling_at.get() {
            if !self.acceptance_in_loop {
                let i = first.saturating_add(rules.grace_period_secs);
                if now > i {
                    anomalies.set(AnomalyKind::OutOfLoop, Some(i));
                } else {
                    next.offer(i);
                }
            }
        }
        anomalies.set(
            AnomalyKind::DoubleAcceptance,
            rare.second_acceptance_at.get(),
        );
        anomalies.set(AnomalyKind::Backfilled, rare.backfilled_at.get());
        anomalies.set(AnomalyKind::Overcharge, rare.overcharge_at.get());

        anomalies.set(
            AnomalyKind::LateAcceptance,
            self.late_acceptance(cal, now, &mut next, &mut span),
        );
        anomalies.set(
            AnomalyKind::SpecialProcedureOverrun,
            Self::special_procedure_overrun(&rare.pauses, end_at, cal, now, &mut next, &mut span),
        );

        if !rare.supervision.is_empty() {
            self.supervise(&mut facts, &mut anomalies, cal, now, &mut next, &mut span);
        }

        facts.anomalies = anomalies;
        facts.next_change = next.0.into();
        facts.provisional_year = span.0.and_then(|(a, b)| cal.first_uncovered_year(a, b));
        facts
    }
}

impl CaseState {
    /// The supervision loop's part of the facts (SPEC §9): `supervision_overdue` from the
    /// orders' response deadlines, then the annulment of every card whose appeal was granted.
    fn supervise(
        &self,
        facts: &mut Facts,
        anomalies: &mut Anomalies,
        cal: &WorkCalendar,
        now: Instant,
        next: &mut NextChange,
        span: &mut CalendarSpan,
    ) {
        let mut late: Option<Instant> = None;
        for s in &self.rare().supervision {
            let Some(order) = &s.order else { continue };
            let timing = order.timing(cal, now);
            span.cover_rule(
                order.ordered_at(),
                timing.due,
                order.current().response.get(),
            );
            if let Some(l) = timing.first_late {
                late = Some(late.map_or(l, |x| x.min(l)));
            }
            if let Some(p) = timing.pending {
                next.offer(p);
            }
        }
        anomalies.set(AnomalyKind::SupervisionOverdue, late);
        for s in &self.rare().supervision {
            if s.annulled() {
                anomalies.set(s.kind, None);
                // An excused lateness: the completed case counts as on time.
                if s.kind == AnomalyKind::Overdue && facts.completed_at.is_some() {
                    facts.on_time = true;
                }
            }
        }
    }

    /// What the case's supervision adds to `window_daily` with these facts (none for a case
    /// without supervision).
    pub(crate) fn supervision_entries(
        &self,
        cal: &WorkCalendar,
        now: Instant,
        facts: &Facts,
    ) -> Vec<super::aggregate::Entry> {
        let supervision = &self.rare().supervision;
        if supervision.is_empty() {
            return Vec::new();
        }
        supervision::entries(
            supervision,
            cal,
            now,
            facts.anomalies.holds(AnomalyKind::SupervisionOverdue),
        )
    }

    /// The supervision of the card of `kind`, if any action concerned it.
    pub(crate) fn supervision_of(&self, kind: AnomalyKind) -> Option<&Supervision> {
        self.rare().supervision.iter().find(|s| s.kind == kind)
    }

    /// `late_acceptance`: the intake did not end within 5 working days of the submission.
    /// Its detected_at, if it holds; else the limit is offered as the next change.
    fn late_acceptance(
        &self,
        cal: &WorkCalendar,
        now: Instant,
        next: &mut NextChange,
        span: &mut CalendarSpan,
    ) -> Option<Instant> {
        let s = self.submitted_at.get()?;
        // An intake that ended within LATE_ACCEPTANCE - 1 day of wall time cannot have
        // taken 5 working days (a working day is at most a day of local time, and a zone's
        // offset moves by less than a day): skip the calendar.
        let quick = self
            .intake_end
            .get()
            .is_some_and(|e| e - s < thresholds::LATE_ACCEPTANCE - DAY);
        let limit = if quick {
            i64::MAX
        } else {
            let limit = cal.add_working(s, thresholds::LATE_ACCEPTANCE, DayUnit::Working);
            span.cover_rule(s, limit, self.intake_end.get());
            limit
        };
        match self.intake_end.get() {
            Some(e) if e > limit => Some(limit),
            Some(_) => None,
            None if now > limit => Some(limit),
            None => {
                next.offer(limit);
                None
            }
        }
    }

    /// `special_procedure_overrun`: a special-procedure pause longer than its approved days.
    /// The earliest overrun limit, if any holds; pending limits are offered as next changes.
    fn special_procedure_overrun(
        pauses: &[Pause],
        end_at: Option<Instant>,
        cal: &WorkCalendar,
        now: Instant,
        next: &mut NextChange,
        span: &mut CalendarSpan,
    ) -> Option<Instant> {
        let mut overrun: Option<Instant> = None;
        for p in pauses {
            let (PauseReason::SpecialProcedure, Some(days)) = (p.reason, p.approved_days) else {
                continue;
            };
            let limit = cal.add_working(p.start, i64::from(days) * DAY, DayUnit::Working);
            let pause_end = match (p.end.get(), end_at) {
                (Some(e), Some(x)) => Some(e.min(x)),
                (Some(e), None) => Some(e),
                (None, Some(x)) => Some(x),
                (None, None) => None,
            };
            span.cover_rule(p.start, limit, pause_end);
            match pause_end {
                Some(e) if e > limit => overrun = Some(overrun.map_or(limit, |o| o.min(limit))),
                Some(_) => {}
                None if now > limit => overrun = Some(overrun.map_or(limit, |o| o.min(limit))),
                None => next.offer(limit),
            }
        }
        overrun
    }
}

/// The instants a facts computation asked the working calendar about, as one span.
struct CalendarSpan(Option<(Instant, Instant)>);

impl CalendarSpan {
    /// A reported value (a deadline, a handling time) computed over `[a, b]`.
    fn cover(&mut self, a: Instant, b: Instant) {
        let (lo, hi) = (a.min(b), a.max(b));
        self.0 = Some(self.0.map_or((lo, hi), |(x, y)| (x.min(lo), y.max(hi))));
    }

    /// A rule instant `i` reached from `start`, compared with `compared` (an end; none while
    /// it is still pending): whether `compared > i`, and `i` when it holds, depend only on the
    /// days up to the earlier of the two.
    fn cover_rule(&mut self, start: Instant, i: Instant, compared: Option<Instant>) {
        self.cover(start, compared.map_or(i, |c| c.min(i)));
    }
}

/// The rule instants of a promised case's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RuleInstants {
    deadline: Option<Instant>,
    legal_deadline: Option<Instant>,
    /// The legal deadline, or the fallback instant when the item has no legal limit.
    legal_instant: Option<Instant>,
    warning_instant: Option<Instant>,
}

/// What the rule instants of an uninterrupted clock depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DeadlineKey {
    acceptance: Acceptance,
    extension_days: u32,
    /// Address of the calendar (the engine clears its memo when calendars are reloaded).
    calendar: usize,
}

/// The last rule instants computed, with their inputs: a case's facts before and after an
/// event usually share them, and they cost most of a facts computation.
#[derive(Debug, Default)]
pub(crate) struct DeadlineMemo(std::cell::Cell<Option<(DeadlineKey, RuleInstants)>>);

impl DeadlineMemo {
    fn get_or(&self, key: DeadlineKey, compute: impl FnOnce() -> RuleInstants) -> RuleInstants {
        match self.0.get() {
            Some((k, v)) if k == key => v,
            _ => {
                let v = compute();
                self.0.set(Some((key, v)));
                v
            }
        }
    }

    /// Forgets the last computation (the calendars changed).
    pub(crate) fn clear(&self) {
        self.0.set(None);
    }
}

/// The earliest future instant at which some time rule flips.
struct NextChange(Option<Instant>);

impl NextChange {
    fn offer(&mut self, i: Instant) {
        self.0 = Some(self.0.map_or(i, |n| n.min(i)));
    }
}

/// Running time of a case: working time since acceptance minus the union of its pauses.
struct RunningClock<'a> {
    cal: &'a WorkCalendar,
    start: Instant,
    unit: DayUnit,
    /// Merged pause intervals, sorted, clipped to `[start, end]`; `i64::MAX` ends an open one.
    stops: Vec<(Instant, Instant)>,
}

const OPEN: Instant = i64::MAX;

impl<'a> RunningClock<'a> {
    fn new(cal: &'a WorkCalendar, acc: Acceptance, pauses: &[Pause], end: Option<Instant>) -> Self {
        let mut stops: Vec<(Instant, Instant)> = Vec::new();
        if !pauses.is_empty() {
            let cap = end.unwrap_or(OPEN);
            for p in pauses {
                let s = p.start.max(acc.at).min(cap);
                let e = p.end.get().unwrap_or(OPEN).min(cap);
                if e > s {
                    stops.push((s, e));
                }
            }
            stops.sort_unstable();
            let mut merged: Vec<(Instant, Instant)> = Vec::with_capacity(stops.len());
            for (s, e) in stops {
                match merged.last_mut() {
                    Some(last) if s <= last.1 => last.1 = last.1.max(e),
                    _ => merged.push((s, e)),
                }
            }
            stops = merged;
        }
        Self {
            cal,
            start: acc.at,
            unit: acc.day_unit,
            stops,
        }
    }

    /// Running time at `t`.
    fn running(&self, t: Instant) -> i64 {
        let mut total = 0;
        let mut cursor = self.start;
        for &(s, e) in &self.stops {
            if s >= t {
                break;
            }
            total += self.cal.working_seconds(cursor, s, self.unit);
            cursor = e;
            if cursor >= t {
                return total;
            }
        }
        total + self.cal.working_seconds(cursor, t, self.unit)
    }

    /// The earliest instant at which running time reaches `target`; none while an open pause
    /// holds the clock before it got there.
    fn reach(&self, target: i64) -> Option<Instant> {
        let mut cursor = self.start;
        let mut left = target;
        for &(s, e) in &self.stops {
            let available = self.cal.working_seconds(cursor, s, self.unit);
            if available >= left {
                let x = self.cal.add_working(cursor, left, self.unit);
                // Reached exactly when an open pause began: not passed before it, so undefined.
                return (e != OPEN || x < s).then_some(x);
            }
            left -= available;
            if e == OPEN {
                return None;
            }
            cursor = cursor.max(e);
        }
        Some(self.cal.add_working(cursor, left, self.unit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::parse_event;
    use serde_json::{json, Value};

    #[test]
    fn only_later_steps_and_ordinary_fees_are_fact_neutral() {
        // The engine skips facts and aggregates for these events (and, in debug builds, asserts
        // the facts did not move); anything else must not be classified neutral.
        let event = |n: u32, ty: &str, t: Instant, extra: Value| {
            let mut v = json!({
                "version": 1, "event_id": format!("e{n}"), "case_id": "c", "type": ty,
                "occurred_at": chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339(),
                "source": "hall", "center_id": "C1", "window_id": "W1",
            });
            if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
                v.extend(extra);
            }
            parse_event(v.to_string().as_bytes(), i64::MAX / 2).expect("valid event")
        };
        let seen = EventSyms {
            center: 1,
            window: 2,
            item_code: 3,
            ..EventSyms::default()
        };
        let nothing_new = EventSyms::default();
        let t0 = 1_539_568_800; // Monday 2018-10-15 10:00 +08:00
        let mut state = CaseState::default();
        let mut n: u64 = 0;
        let mut apply = |state: &mut CaseState, e: &CaseEvent, syms: EventSyms| {
            n += 1;
            state.apply(e, n, syms);
        };
        let accepted = event(
            1,
            "accepted",
            t0,
            json!({"item": {"code": "I1", "kind": "promised", "promised_days": 3}}),
        );
        assert!(!state.is_fact_neutral(&accepted, seen));
        apply(&mut state, &accepted, seen);

        let first_step = event(2, "step", t0 + 20, json!({"step": "review"}));
        assert!(
            !state.is_fact_neutral(&first_step, nothing_new),
            "first handling"
        );
        apply(&mut state, &first_step, nothing_new);
        assert!(state.is_fact_neutral(
            &event(3, "step", t0 + 20, json!({"step": "x"})),
            nothing_new
        ));
        assert!(state.is_fact_neutral(
            &event(4, "step", t0 + 30, json!({"step": "x"})),
            nothing_new
        ));
        assert!(
            !state.is_fact_neutral(
                &event(5, "step", t0 + 19, json!({"step": "x"})),
                nothing_new
            ),
            "an earlier step moves the first handling"
        );
        let new_department = EventSyms {
            department: 4,
            ..EventSyms::default()
        };
        assert!(
            !state.is_fact_neutral(
                &event(6, "step", t0 + 40, json!({"step": "x"})),
                new_department
            ),
            "a department the case has not seen"
        );

        let fee = |n, amount: i64| {
            event(
                n,
                "fee_charged",
                t0 + 50,
                json!({"amount_cents": amount, "standard_cents": 1000}),
            )
        };
        assert!(state.is_fact_neutral(&fee(7, 1000), nothing_new));
        assert!(
            !state.is_fact_neutral(&fee(8, 1001), nothing_new),
            "an overcharge"
        );
        apply(&mut state, &fee(8, 1001), nothing_new);
        assert!(
            state.is_fact_neutral(&fee(9, 2000), nothing_new),
            "the overcharge is already held"
        );

        for (ty, extra) in [
            ("evaluated", json!({"rating": 5})),
            ("completed", json!({"outcome": "approved"})),
            ("extended", json!({"extra_days": 1})),
        ] {
            assert!(
                !state.is_fact_neutral(&event(10, ty, t0 + 60, extra), nothing_new),
                "{ty}"
            );
        }
    }
}
