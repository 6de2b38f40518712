//! The case engine: every case of one partition (or one replay), engine time T, a timer index
//! and the `window_daily` aggregates, maintained incrementally.
//!
//! Pure and synchronous: the caller feeds validated events (`apply`) and engine time
//! (`advance_to`), then drains the resulting changes (`take_changes`). A case's facts are
//! recomputed from its state before and after each change, and only the difference touches the
//! aggregates, so `window_daily` always equals the sum of the per-case facts. Events that
//! cannot move the facts (a later step, an ordinary fee) skip that work.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashMap, HashSet, HashTable};

pub mod snapshot;

use crate::core::aggregate::{self, Counters, DailyKey, Placed};
use crate::core::calendar::{Instant, WorkCalendar};
use crate::core::case::{
    stable_hash, Anomalies, Applied, At, CaseState, DeadlineMemo, EventSyms, Facts, SeenAttrs, Sym,
};
use crate::core::event::{CaseEvent, EventBody, SupervisionAction};
use crate::core::interner::Interner;
use crate::core::rules::{AnomalyKind, Level, Rules};

/// The calendars of every configured centre, and the default for any other.
#[derive(Debug, Clone)]
pub struct Calendars {
    pub default: Arc<WorkCalendar>,
    pub by_center: HashMap<String, Arc<WorkCalendar>>,
}

impl Calendars {
    /// Only the default calendar.
    pub fn new(default: Arc<WorkCalendar>) -> Self {
        Self {
            default,
            by_center: HashMap::new(),
        }
    }

    /// The calendar of a centre.
    pub fn get(&self, center: &str) -> &Arc<WorkCalendar> {
        self.by_center.get(center).unwrap_or(&self.default)
    }
}

/// An anomaly that began or stopped holding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyChange {
    pub case: CaseRef,
    pub kind: AnomalyKind,
    pub level: Level,
    /// The instant the condition became true.
    pub detected_at: Instant,
    /// `None` while it holds; engine time of the revocation when a late event disproved it.
    pub revoked_at: Option<Instant>,
    /// 1, plus one for each earlier revocation of this case's anomaly of this kind.
    pub round: u32,
    /// The revocation is an annulment: an appeal of the card was granted (SPEC §9).
    pub annulled: bool,
}

/// Identifies a case slot inside an engine (valid until the case is evicted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaseRef(pub u32);

/// What `apply` did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Applied,
    Duplicate,
    /// The case was evicted after its retention; restore it before applying.
    Evicted,
    /// A supervision action that does not fit the case's state or its actor's role: a dead
    /// letter (`invalid_action`), not applied, its event id not used up.
    InvalidAction,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub applied: u64,
    pub duplicates: u64,
    pub timers_fired: u64,
    /// Cases evicted (their slots free for other cases).
    pub evicted: u64,
}

struct Slot {
    /// The case id (inline up to 24 bytes).
    id: compact_str::CompactString,
    state: CaseState,
    /// Due instant (rule instant + 1) of the pending timer entry that is current.
    timer_due: At,
    /// Applied events (the row's version within this engine).
    events: u32,
    dirty: bool,
    live: bool,
}

/// The case engine (see the module doc).
pub struct Engine {
    rules: Rules,
    calendars: Calendars,
    /// Calendar per centre sym, resolved once.
    calendar_of: Vec<Option<Arc<WorkCalendar>>>,
    syms: Interner,
    hasher: DefaultHashBuilder,
    index: HashTable<u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    evicted: HashSet<u64>,
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    daily: DailyTable,
    dirty_cases: Vec<u32>,
    anomaly_changes: Vec<AnomalyChange>,
    /// Rule instants shared by consecutive facts computations of one case.
    deadline_memo: DeadlineMemo,
    now: Instant,
    stats: EngineStats,
    /// The case of the event `apply` applied last.
    last_applied: CaseRef,
    /// Cases held that have not ended (maintained on insert and on a first terminal event).
    open_cases: usize,
    /// Open cases with provisional facts, by the first uncovered year they need.
    provisional_open: BTreeMap<i32, usize>,
}

impl Engine {
    /// A new engine with room for `cases` cases before its tables grow (a long-running
    /// consumer sizes it once instead of rehashing while it fills).
    pub fn with_capacity(rules: Rules, calendars: Calendars, cases: usize) -> Self {
        let mut engine = Self::new(rules, calendars);
        engine.slots.reserve(cases);
        engine.index.reserve(cases, |_| 0);
        engine.timers.reserve(cases);
        engine.daily.reserve(cases * 2);
        engine
    }

    /// A new engine at engine time `i64::MIN` (nothing applied).
    pub fn new(rules: Rules, calendars: Calendars) -> Self {
        Self {
            rules,
            calendars,
            calendar_of: Vec::new(),
            syms: Interner::new(),
            hasher: DefaultHashBuilder::default(),
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            evicted: HashSet::new(),
            timers: BinaryHeap::new(),
            daily: DailyTable::default(),
            dirty_cases: Vec::new(),
            anomaly_changes: Vec::new(),
            deadline_memo: DeadlineMemo::default(),
            now: i64::MIN,
            stats: EngineStats::default(),
            last_applied: CaseRef(0),
            open_cases: 0,
            provisional_open: BTreeMap::new(),
        }
    }

    /// Engine time T.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The rules in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The calendars in force.
    pub fn calendars(&self) -> &Calendars {
        &self.calendars
    }

    /// Forgets that a case was evicted (when nothing of it can be restored).
    pub fn forget_eviction(&mut self, case_id: &str) {
        self.evicted.remove(&stable_hash(case_id.as_bytes()));
    }

    /// Counters for metrics.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The interner, to resolve syms of rows.
    pub fn syms(&self) -> &Interner {
        &self.syms
    }

    /// Number of cases held in memory.
    pub fn case_count(&self) -> usize {
        self.index.len()
    }

    /// Number of cases held in memory that have not ended.
    pub fn open_case_count(&self) -> usize {
        self.open_cases
    }

    /// Open cases whose facts are provisional, by the first year without holiday data that
    /// they need (SPEC §2, "Calendar coverage").
    pub fn provisional_open_cases(&self) -> &BTreeMap<i32, usize> {
        &self.provisional_open
    }

    /// Moves a case's count in `provisional_open` from its old facts to its new ones.
    fn count_provisional(&mut self, old: Option<&Facts>, new: Option<&Facts>) {
        let year = |f: Option<&Facts>| f.filter(|f| !f.is_ended()).and_then(|f| f.provisional_year);
        let (was, is) = (year(old), year(new));
        if was == is {
            return;
        }
        if let Some(y) = was {
            if let Some(n) = self.provisional_open.get_mut(&y) {
                *n -= 1;
                if *n == 0 {
                    self.provisional_open.remove(&y);
                }
            }
        }
        if let Some(y) = is {
            *self.provisional_open.entry(y).or_insert(0) += 1;
        }
    }

    fn hash(&self, id: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(id)
    }

    fn find(&self, id: &str) -> Option<u32> {
        let h = self.hash(id);
        self.index
            .find(h, |&i| &*self.slots[i as usize].id == id)
            .copied()
    }

    fn insert_case(&mut self, id: &str, state: CaseState, events: u32) -> u32 {
        if state.end.is_none() {
            self.open_cases += 1;
        }
        let slot = Slot {
            id: id.into(),
            state,
            timer_due: At::NONE,
            events,
            dirty: false,
            live: true,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let h = self.hash(id);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(h, i, |&j| {
            use std::hash::BuildHasher;
            hasher.hash_one(&*slots[j as usize].id)
        });
        i
    }

    fn calendar(&mut self, center: Sym) -> Arc<WorkCalendar> {
        let i = center as usize;
        if self.calendar_of.len() <= i {
            self.calendar_of.resize(i + 1, None);
        }
        if let Some(c) = &self.calendar_of[i] {
            return c.clone();
        }
        let c = self.calendars.get(self.syms.resolve(center)).clone();
        self.calendar_of[i] = Some(c.clone());
        c
    }

    /// The centre whose calendar a case's times are counted on.
    fn case_center(&self, i: u32) -> Sym {
        let s = &self.slots[i as usize].state;
        s.acceptance.map_or(s.seen.center, |a| a.center)
    }

    /// A centre's calendar moved out of the cache for one step of `apply`, so the hot path
    /// costs no reference counting; [`Engine::put_calendar`] puts it back. (Taken twice, or
    /// read with [`Engine::calendar`] meanwhile, it is looked up again: same result.)
    fn take_calendar(&mut self, center: Sym) -> Arc<WorkCalendar> {
        let i = center as usize;
        match self.calendar_of.get_mut(i).and_then(Option::take) {
            Some(c) => c,
            None => self.calendars.get(self.syms.resolve(center)).clone(),
        }
    }

    fn put_calendar(&mut self, center: Sym, cal: Arc<WorkCalendar>) {
        let i = center as usize;
        if self.calendar_of.len() <= i {
            self.calendar_of.resize(i + 1, None);
        }
        self.calendar_of[i] = Some(cal);
    }

    /// The calendar of a case's centre.
    fn case_calendar(&mut self, i: u32) -> Arc<WorkCalendar> {
        self.calendar(self.case_center(i))
    }

    /// A case's facts at `t` under `cal` (its calendar).
    fn facts_with(&self, i: u32, cal: &WorkCalendar, t: Instant) -> Facts {
        self.slots[i as usize]
            .state
            .facts(cal, &self.rules, t, &self.deadline_memo)
    }

    /// A case's facts and supervision entries at `t` under `cal` (its calendar).
    fn view_with(&self, i: u32, cal: &WorkCalendar, t: Instant) -> View {
        let facts = self.facts_with(i, cal, t);
        let supervision = self.slots[i as usize]
            .state
            .supervision_entries(cal, t, &facts);
        View { facts, supervision }
    }

    /// A case's facts at `t`.
    fn facts_at(&mut self, i: u32, t: Instant) -> Facts {
        let cal = self.case_calendar(i);
        self.facts_with(i, &cal, t)
    }

    /// Interns the event's strings that the case still needs: attributes not seen yet, and
    /// everything of a first acceptance. Most events need none, and skip the lookups.
    fn event_syms(&mut self, event: &CaseEvent, seen: SeenAttrs, accepted: bool) -> EventSyms {
        let first_acceptance = matches!(event.body, EventBody::Accepted { .. }) && !accepted;
        let syms = &mut self.syms;
        // `seen_sym` is what the case already holds for the attribute (0: nothing); an
        // acceptance usually repeats it, which a comparison confirms without a lookup.
        let mut intern = |seen_sym: Sym, value: Option<&str>| match value {
            Some(v) if seen_sym == 0 => syms.intern(v),
            Some(v) if first_acceptance => {
                if **syms.resolve(seen_sym) == *v {
                    seen_sym
                } else {
                    syms.intern(v)
                }
            }
            _ => 0,
        };
        let mut s = EventSyms {
            center: intern(seen.center, Some(&event.center_id)),
            window: intern(seen.window, event.window_id.as_deref()),
            department: intern(seen.department, event.department.as_deref()),
            ..EventSyms::default()
        };
        match &event.body {
            EventBody::Submitted { item_code, .. } => {
                s.item_code = intern(seen.item_code, Some(item_code))
            }
            EventBody::Accepted { item, .. } => {
                s.item_code = intern(seen.item_code, Some(&item.code));
                s.item_name = match &item.name {
                    Some(n) if first_acceptance => self.syms.intern(n),
                    _ => 0,
                };
            }
            _ => {}
        }
        s
    }

    /// Applies one validated event in log order. Engine time first moves to its `occurred_at`
    /// when that is later (T is never behind the largest `occurred_at` applied).
    pub fn apply(&mut self, event: &CaseEvent) -> ApplyOutcome {
        let existing = self.find(&event.case_id);
        let event_hash = stable_hash(event.event_id.as_bytes());
        if let Some(i) = existing {
            if self.slots[i as usize].state.event_ids.contains(&event_hash) {
                self.stats.duplicates += 1;
                return ApplyOutcome::Duplicate;
            }
        } else if !self.evicted.is_empty()
            && self
                .evicted
                .contains(&stable_hash(event.case_id.as_bytes()))
        {
            return ApplyOutcome::Evicted;
        }
        if let EventBody::Supervision(action) = &event.body {
            if !existing.is_some_and(|i| self.action_fits(i, action, event.occurred_at)) {
                return ApplyOutcome::InvalidAction;
            }
        }
        if event.occurred_at > self.now {
            self.advance_to(event.occurred_at);
        }
        let (seen, accepted) = existing.map_or((SeenAttrs::default(), false), |i| {
            let s = &self.slots[i as usize].state;
            (s.seen, s.acceptance.is_some())
        });
        let syms = self.event_syms(event, seen, accepted);
        let i = match existing {
            Some(i) if self.slots[i as usize].state.is_fact_neutral(event, syms) => {
                self.apply_fact_neutral(i, event, event_hash, syms);
                self.last_applied = CaseRef(i);
                return ApplyOutcome::Applied;
            }
            Some(i) => i,
            None => self.insert_case(&event.case_id, CaseState::default(), 0),
        };
        let before = existing.map(|i| {
            let center = self.case_center(i);
            let cal = self.take_calendar(center);
            let view = self.view_with(i, &cal, self.now);
            (center, cal, view)
        });
        let was_open = self.slots[i as usize].state.end.is_none();
        let applied = self.slots[i as usize].state.apply(event, event_hash, syms);
        if was_open && self.slots[i as usize].state.end.is_some() {
            self.open_cases -= 1;
        }
        debug_assert_eq!(applied, Applied::Applied);
        let slot = &mut self.slots[i as usize];
        slot.events += 1;
        self.stats.applied += 1;
        self.mark_dirty(i);
        self.record_change(i, before);
        self.last_applied = CaseRef(i);
        ApplyOutcome::Applied
    }

    /// The slot of the case whose event [`Self::apply`] applied last (after `Applied`): a
    /// caller indexing what it stores per case needs no second lookup by id. Valid until the
    /// next eviction (`stats().evicted` grows); the slot may then hold another case.
    pub fn last_applied(&self) -> CaseRef {
        self.last_applied
    }

    /// Whether a supervision action fits case `i`'s card and loop at the action's own instant.
    fn action_fits(&mut self, i: u32, action: &SupervisionAction, at: Instant) -> bool {
        let facts = self.facts_at(i, at);
        let card = facts
            .anomalies
            .holds(action.kind)
            .then(|| self.rules.level(action.kind));
        let supervision = &self.slots[i as usize].state.rare().supervision;
        crate::core::supervision::fits(supervision, action, card)
    }

    /// Records case `i`'s change from its view `before` (with its centre and that centre's
    /// calendar, taken out of the cache) to its view now, and puts the calendars back.
    fn record_change(&mut self, i: u32, before: Option<(Sym, Arc<WorkCalendar>, View)>) {
        let new_center = self.case_center(i);
        let (old, old_cal, new_cal) = match before {
            Some((center, cal, view)) if center == new_center => (Some(view), None, cal),
            Some((center, cal, view)) => (
                Some(view),
                Some((center, cal)),
                self.take_calendar(new_center),
            ),
            None => (None, None, self.take_calendar(new_center)),
        };
        let new = self.view_with(i, &new_cal, self.now);
        let old_view = old
            .as_ref()
            .map(|v| (v, old_cal.as_ref().map_or(&*new_cal, |(_, cal)| &**cal)));
        self.record(i, old_view, &new, &new_cal);
        if let Some((center, cal)) = old_cal {
            self.put_calendar(center, cal);
        }
        self.put_calendar(new_center, new_cal);
    }

    /// Applies an event that leaves the case's facts as they are (a third of a usual stream:
    /// later steps, ordinary fees). Aggregates, anomalies and the timer stay untouched; only
    /// the row is written again, for its event count.
    fn apply_fact_neutral(&mut self, i: u32, event: &CaseEvent, event_hash: u64, syms: EventSyms) {
        #[cfg(debug_assertions)]
        let before = self.facts_at(i, self.now);
        let applied = self.slots[i as usize].state.apply(event, event_hash, syms);
        debug_assert_eq!(applied, Applied::Applied);
        self.slots[i as usize].events += 1;
        self.stats.applied += 1;
        self.mark_dirty(i);
        #[cfg(debug_assertions)]
        assert_eq!(
            before,
            self.facts_at(i, self.now),
            "a fact-neutral event moved the facts"
        );
    }

    /// Moves engine time forward to `t` (never back) and fires every rule whose instant it passes.
    pub fn advance_to(&mut self, t: Instant) {
        if t <= self.now {
            return;
        }
        self.now = t;
        while let Some(&Reverse((due, i))) = self.timers.peek() {
            if due > t {
                break;
            }
            self.timers.pop();
            let slot = &self.slots[i as usize];
            if !slot.live || slot.timer_due != At::some(due) {
                continue; // superseded entry
            }
            self.slots[i as usize].timer_due = At::NONE;
            self.stats.timers_fired += 1;
            // The facts were constant from their last evaluation up to the rule instant (due - 1).
            let cal = self.case_calendar(i);
            let old = self.view_with(i, &cal, due - 1);
            let new = self.view_with(i, &cal, t);
            if old.facts.anomalies != new.facts.anomalies || old.supervision != new.supervision {
                self.mark_dirty(i);
            }
            self.record(i, Some((&old, &cal)), &new, &cal);
        }
    }

    /// Marks a case changed so its row (and its holding anomalies) are written again.
    /// Returns whether the case is known.
    pub fn touch_case(&mut self, case_id: &str) -> bool {
        match self.find(case_id) {
            Some(i) if self.slots[i as usize].live => {
                self.mark_dirty(i);
                true
            }
            _ => false,
        }
    }

    /// Marks an aggregate row changed so its absolute value is written again (zero when no
    /// case contributes to it).
    pub fn touch_daily(&mut self, day: i64, center: &str, window: &str, item_code: &str) {
        let key = DailyKey {
            day,
            center: self.syms.intern(center),
            window: self.syms.intern(window),
            item_code: self.syms.intern(item_code),
        };
        self.daily.row_mut(key);
    }

    /// Makes the next round of a case's anomaly at least the one recorded before a restart:
    /// `revocations` of `kind` have happened (a rebuild replays events, and the clock may have
    /// raised and revoked cards between them that the replay does not repeat).
    pub(crate) fn ensure_revocations(
        &mut self,
        case_id: &str,
        kind: AnomalyKind,
        revocations: u16,
    ) {
        if let Some(i) = self.find(case_id) {
            self.slots[i as usize]
                .state
                .ensure_revocations(kind, revocations);
        }
    }

    /// Whether a known case holds an anomaly at engine time (None: the case is not known).
    pub fn holds(&mut self, case_id: &str, kind: AnomalyKind) -> Option<bool> {
        let i = self.find(case_id)?;
        if !self.slots[i as usize].live {
            return None;
        }
        let facts = self.facts_at(i, self.now);
        Some(facts.anomalies.holds(kind))
    }

    fn mark_dirty(&mut self, i: u32) {
        let slot = &mut self.slots[i as usize];
        if !slot.dirty {
            slot.dirty = true;
            self.dirty_cases.push(i);
        }
    }

    /// Moves `window_daily` from a case's old view to its new one.
    fn aggregate(
        &mut self,
        old: Option<(&View, &WorkCalendar)>,
        new: &View,
        new_cal: &WorkCalendar,
    ) {
        fn placed<'a>(v: &'a View, calendar: &'a WorkCalendar) -> Placed<'a> {
            Placed {
                facts: &v.facts,
                calendar,
            }
        }
        // Deltas of one row come in runs (a completion touches six counters of one day):
        // gather them and look each row up once.
        let mut deltas: smallvec::SmallVec<[(DailyKey, u8, i64); 16]> = smallvec::SmallVec::new();
        aggregate::diff(
            old.map(|(v, cal)| placed(v, cal)),
            placed(new, new_cal),
            &self.rules,
            |key, counter, delta| deltas.push((key, counter, delta)),
        );
        if !new.supervision.is_empty() || old.is_some_and(|(v, _)| !v.supervision.is_empty()) {
            aggregate::diff_entries(
                old.map(|(v, cal)| (placed(v, cal), v.supervision.as_slice())),
                (placed(new, new_cal), new.supervision.as_slice()),
                |key, counter, delta| deltas.push((key, counter, delta)),
            );
        }
        let mut run_start = 0;
        while run_start < deltas.len() {
            let key = deltas[run_start].0;
            let run_end = deltas[run_start..]
                .iter()
                .position(|d| d.0 != key)
                .map_or(deltas.len(), |n| run_start + n);
            let counters = self.daily.row_mut(key);
            for &(_, counter, delta) in &deltas[run_start..run_end] {
                counters[counter as usize] += delta;
            }
            run_start = run_end;
        }
    }

    /// Applies the difference between a case's old and new facts to aggregates, anomalies and timers.
    fn record(
        &mut self,
        i: u32,
        old_view: Option<(&View, &WorkCalendar)>,
        new_view: &View,
        new_cal: &WorkCalendar,
    ) {
        self.aggregate(old_view, new_view, new_cal);
        let old = old_view.map(|(v, cal)| (&v.facts, cal));
        let new = &new_view.facts;
        self.count_provisional(old.map(|(f, _)| f), Some(new));
        let old_anomalies = old.map_or(Anomalies::NONE, |(f, _)| f.anomalies);
        for kind in AnomalyKind::ALL {
            let (o, n) = (old_anomalies.get(kind), new.anomalies.get(kind));
            if o == n {
                continue;
            }
            let level = self.rules.level(kind);
            let state = &self.slots[i as usize].state;
            let round = state.round(kind);
            let annulled = state.supervision_of(kind).is_some_and(|s| s.annulled());
            let change = match (o, n) {
                (_, Some(at)) => AnomalyChange {
                    case: CaseRef(i),
                    kind,
                    level,
                    detected_at: at,
                    revoked_at: None,
                    round,
                    annulled: false,
                },
                (Some(at), None) => {
                    self.slots[i as usize].state.count_revocation(kind);
                    AnomalyChange {
                        case: CaseRef(i),
                        kind,
                        level,
                        detected_at: at,
                        revoked_at: Some(self.now),
                        round,
                        annulled,
                    }
                }
                (None, None) => continue,
            };
            self.anomaly_changes.push(change);
        }
        let due = new
            .next_change
            .get()
            .map_or(At::NONE, |n| At::some(n.saturating_add(1)));
        let slot = &mut self.slots[i as usize];
        if slot.timer_due != due {
            slot.timer_due = due;
            if let Some(d) = due.get() {
                self.timers.push(Reverse((d, i)));
            }
        }
    }

    /// Replaces the calendars (e.g. a reloaded holiday file) and recomputes every case.
    pub fn reload_calendars(&mut self, calendars: Calendars) {
        let live: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| self.slots[i as usize].live)
            .collect();
        let old: Vec<(View, Arc<WorkCalendar>)> = live
            .iter()
            .map(|&i| {
                let cal = self.case_calendar(i);
                (self.view_with(i, &cal, self.now), cal)
            })
            .collect();
        self.calendars = calendars;
        self.calendar_of.clear();
        self.deadline_memo.clear();
        for (&i, (old, old_cal)) in live.iter().zip(old) {
            let cal = self.case_calendar(i);
            let new = self.view_with(i, &cal, self.now);
            if old != new {
                self.mark_dirty(i);
            }
            self.record(i, Some((&old, &old_cal)), &new, &cal);
        }
    }

    /// Evicts ended cases whose end is before `cutoff` and that wait for no timer. Their
    /// contribution stays in the aggregates; a later event for one returns
    /// [`ApplyOutcome::Evicted`] so the caller can restore it first.
    pub fn evict_ended_before(&mut self, cutoff: Instant) -> usize {
        let mut evicted = 0;
        for i in 0..self.slots.len() as u32 {
            let slot = &self.slots[i as usize];
            let ended = slot.state.end.is_some_and(|e| e.at < cutoff);
            if !slot.live || !ended || slot.timer_due.get().is_some() || slot.dirty {
                continue;
            }
            let h = self.hash(&slot.id);
            let id_hash = stable_hash(slot.id.as_bytes());
            if let Ok(entry) = self.index.find_entry(h, |&j| j == i) {
                entry.remove();
            }
            self.evicted.insert(id_hash);
            let slot = &mut self.slots[i as usize];
            slot.live = false;
            slot.state = CaseState::default();
            slot.id = compact_str::CompactString::default();
            self.free.push(i);
            evicted += 1;
        }
        self.stats.evicted += evicted as u64;
        evicted
    }

    /// Drains everything that changed since the last call, as absolute rows at engine time T.
    pub fn take_changes(&mut self) -> Changes {
        let mut cases = Vec::with_capacity(self.dirty_cases.len());
        // Position of each case's row in `cases`, so anomaly rows reuse it.
        let mut row_of: HashMap<u32, usize> = HashMap::with_capacity(self.dirty_cases.len());
        let mut supervision = Vec::new();
        let dirty = std::mem::take(&mut self.dirty_cases);
        for i in dirty {
            self.slots[i as usize].dirty = false;
            if self.slots[i as usize].live {
                row_of.insert(i, cases.len());
                let row = self.case_row(CaseRef(i));
                if !self.slots[i as usize].state.rare().supervision.is_empty() {
                    supervision.extend(self.supervision_rows(i, &row));
                }
                cases.push(row);
            }
        }
        let window_daily = self.daily.take_dirty();
        let anomalies = std::mem::take(&mut self.anomaly_changes)
            .into_iter()
            .map(|change| AnomalyRow {
                case: match row_of.get(&change.case.0) {
                    Some(&r) => cases[r].clone(),
                    None => self.case_row(change.case),
                },
                change,
            })
            .collect();
        Changes {
            cases,
            window_daily,
            anomalies,
            supervision,
        }
    }

    /// The `supervision` rows of a case: one per card acted on.
    fn supervision_rows(&mut self, i: u32, row: &CaseRow) -> Vec<SupervisionRow> {
        let cal = self.case_calendar(i);
        let overdue = row.facts.anomalies.holds(AnomalyKind::SupervisionOverdue);
        self.slots[i as usize]
            .state
            .rare()
            .supervision
            .iter()
            .map(|s| SupervisionRow {
                case_id: row.case_id.clone(),
                center: row.facts.center,
                window: row.facts.window,
                timing: s.order.as_ref().map(|o| o.timing(&cal, self.now)),
                overdue_holds: overdue,
                supervision: s.clone(),
            })
            .collect()
    }

    /// The current row of a case.
    pub fn case_row(&mut self, case: CaseRef) -> CaseRow {
        let facts = self.facts_at(case.0, self.now);
        let slot = &self.slots[case.0 as usize];
        let item_name = slot.state.acceptance.map_or(0, |a| a.item_name);
        CaseRow {
            case_id: slot.id.clone(),
            facts,
            item_name,
            events: slot.events,
            rounds: AnomalyKind::ALL.map(|k| slot.state.round(k)),
        }
    }

    /// Every case row, sorted by case id.
    pub fn all_case_rows(&mut self) -> Vec<CaseRow> {
        let live: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| self.slots[i as usize].live)
            .collect();
        let mut rows: Vec<CaseRow> = live
            .into_iter()
            .map(|i| self.case_row(CaseRef(i)))
            .collect();
        rows.sort_by(|a, b| a.case_id.cmp(&b.case_id));
        rows
    }

    /// The `supervision` rows of every case held, at engine time.
    pub fn all_supervision_rows(&mut self) -> Vec<SupervisionRow> {
        let mut out = Vec::new();
        for i in 0..self.slots.len() as u32 {
            let slot = &self.slots[i as usize];
            if slot.live && !slot.state.rare().supervision.is_empty() {
                let row = self.case_row(CaseRef(i));
                out.extend(self.supervision_rows(i, &row));
            }
        }
        out
    }

    /// Every anomaly that holds now, per case and kind.
    pub fn holding_anomalies(&mut self) -> Vec<(CaseRow, AnomalyKind, Level, Instant)> {
        let mut out = Vec::new();
        for row in self.all_case_rows() {
            for kind in AnomalyKind::ALL {
                if let Some(at) = row.facts.anomalies.get(kind) {
                    out.push((row.clone(), kind, self.rules.level(kind), at));
                }
            }
        }
        out
    }

    /// Every `window_daily` row with any non-zero counter, sorted by key strings.
    pub fn daily_rows(&self) -> Vec<(DailyKey, Counters)> {
        self.daily
            .rows
            .iter()
            .filter(|r| r.counters.iter().any(|v| *v != 0))
            .map(|r| (r.key, r.counters))
            .collect()
    }

    /// The calendar of a centre sym (for attributing days outside the engine).
    pub fn calendar_of(&mut self, center: Sym) -> Arc<WorkCalendar> {
        self.calendar(center)
    }

    /// Exports every case (for persistence), with strings resolved.
    pub fn snapshot_cases(&self) -> Vec<snapshot::CaseSnapshot> {
        self.slots
            .iter()
            .filter(|s| s.live)
            .map(|s| snapshot::CaseSnapshot::from_state(&s.id, &s.state, s.events, &self.syms))
            .collect()
    }

    /// Exports one case by id.
    pub fn snapshot_case(&self, case_id: &str) -> Option<snapshot::CaseSnapshot> {
        let i = self.find(case_id)?;
        let s = &self.slots[i as usize];
        Some(snapshot::CaseSnapshot::from_state(
            &s.id, &s.state, s.events, &self.syms,
        ))
    }

    /// Exports every `window_daily` row (including all-zero ones) with strings resolved.
    pub fn snapshot_daily(&self) -> Vec<snapshot::DailySnapshot> {
        self.daily
            .rows
            .iter()
            .map(|r| snapshot::DailySnapshot::from_key(&r.key, &r.counters, &self.syms))
            .collect()
    }

    /// The whole state, for persistence (take it right after `take_changes`: nothing pending).
    pub fn export_snapshot(&self) -> snapshot::EngineSnapshot {
        let mut evicted: Vec<u64> = self.evicted.iter().copied().collect();
        evicted.sort_unstable();
        snapshot::EngineSnapshot {
            now: self.now,
            cases: self.snapshot_cases(),
            daily: self.snapshot_daily(),
            evicted,
        }
    }

    /// Restores a state exported by [`Engine::export_snapshot`] into an empty engine.
    pub fn import_snapshot(&mut self, s: &snapshot::EngineSnapshot) {
        self.restore(s.now, &s.cases, &s.daily);
        self.evicted.extend(s.evicted.iter().copied());
    }

    /// Restores engine time, cases and aggregates exported by the snapshot functions, into an
    /// engine that holds none of those cases. Nothing is marked changed.
    pub fn restore(
        &mut self,
        now: Instant,
        cases: &[snapshot::CaseSnapshot],
        daily: &[snapshot::DailySnapshot],
    ) {
        if now > self.now {
            self.now = now;
        }
        for d in daily {
            let key = d.key(&mut self.syms);
            self.daily.restore(key, d.counters);
        }
        for c in cases {
            self.restore_case(c);
        }
    }

    /// Brings back one case (e.g. an evicted one a late event needs) without touching the
    /// aggregates, which still hold its contribution.
    pub fn restore_case(&mut self, c: &snapshot::CaseSnapshot) {
        self.evicted.remove(&stable_hash(c.case_id.as_bytes()));
        if self.find(&c.case_id).is_some() {
            return;
        }
        let state = c.to_state(&mut self.syms);
        let i = self.insert_case(&c.case_id, state, c.events);
        // Schedule its timer as of now.
        let facts = self.facts_at(i, self.now);
        self.count_provisional(None, Some(&facts));
        if let Some(n) = facts.next_change.get() {
            let due = n.saturating_add(1);
            self.slots[i as usize].timer_due = At::some(due);
            self.timers.push(Reverse((due, i)));
        }
    }
}

/// The `window_daily` rows: a key index over a row arena, so growing the index moves 28-byte
/// entries rather than whole rows, plus the rows changed since the last drain.
#[derive(Default)]
struct DailyTable {
    index: HashMap<DailyKey, u32>,
    rows: Vec<DailyRow>,
    dirty: Vec<u32>,
}

struct DailyRow {
    key: DailyKey,
    counters: Counters,
    dirty: bool,
}

impl DailyTable {
    fn reserve(&mut self, rows: usize) {
        self.index.reserve(rows);
        self.rows.reserve(rows);
    }

    fn slot(&mut self, key: DailyKey) -> u32 {
        let rows = &mut self.rows;
        *self.index.entry(key).or_insert_with(|| {
            rows.push(DailyRow {
                key,
                counters: crate::core::aggregate::ZERO,
                dirty: false,
            });
            (rows.len() - 1) as u32
        })
    }

    /// The counters of a row (created at zero), marked changed.
    fn row_mut(&mut self, key: DailyKey) -> &mut Counters {
        let i = self.slot(key);
        let row = &mut self.rows[i as usize];
        if !row.dirty {
            row.dirty = true;
            self.dirty.push(i);
        }
        &mut row.counters
    }

    /// Sets a row's counters without marking it changed.
    fn restore(&mut self, key: DailyKey, counters: Counters) {
        let i = self.slot(key);
        self.rows[i as usize].counters = counters;
    }

    /// The rows changed since the last call, with their current counters.
    fn take_dirty(&mut self) -> Vec<(DailyKey, Counters)> {
        let mut out = Vec::with_capacity(self.dirty.len());
        for i in std::mem::take(&mut self.dirty) {
            let row = &mut self.rows[i as usize];
            row.dirty = false;
            out.push((row.key, row.counters));
        }
        out
    }
}

/// A case's facts and what its supervision adds to `window_daily`, at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    facts: Facts,
    supervision: Vec<aggregate::Entry>,
}

/// The current facts of one case, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRow {
    pub case_id: crate::core::event::Text,
    pub facts: Facts,
    pub item_name: Sym,
    /// Events applied to the case.
    pub events: u32,
    /// The current round of each anomaly kind (1 + its revocations so far).
    pub rounds: [u32; AnomalyKind::COUNT],
}

/// An anomaly change together with the case it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyRow {
    pub case: CaseRow,
    pub change: AnomalyChange,
}

/// The supervision of one card, ready to be written (SPEC §9, the `supervision` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisionRow {
    pub case_id: crate::core::event::Text,
    pub center: Sym,
    pub window: Sym,
    pub(crate) supervision: crate::core::supervision::Supervision,
    pub(crate) timing: Option<crate::core::supervision::Timing>,
    /// Whether the case's `supervision_overdue` holds (an annulled one does not).
    pub overdue_holds: bool,
}

impl SupervisionRow {
    /// The anomaly kind of the card.
    pub fn kind(&self) -> AnomalyKind {
        self.supervision.kind
    }

    /// When the order was issued, if there is one.
    pub fn ordered_at(&self) -> Option<Instant> {
        self.supervision.order.as_ref().map(|o| o.ordered_at())
    }

    /// The response to the order's current period, if it came.
    pub fn responded_at(&self) -> Option<Instant> {
        self.supervision
            .order
            .as_ref()
            .and_then(|o| o.current().response.get())
    }

    /// The earliest response deadline the order missed, if any.
    pub fn first_missed_deadline(&self) -> Option<Instant> {
        self.timing.and_then(|t| t.first_late)
    }

    /// When the card was appealed, if it was.
    pub fn appealed_at(&self) -> Option<Instant> {
        self.supervision.appeal.as_ref().map(|a| a.at)
    }

    /// The appeal's decision: (granted, when).
    pub fn decision(&self) -> Option<(bool, Instant)> {
        let d = self.supervision.appeal.as_ref()?.decision.as_ref()?;
        Some((d.granted, d.at))
    }
}

/// Everything that changed since the previous `take_changes`.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    pub cases: Vec<CaseRow>,
    pub window_daily: Vec<(DailyKey, Counters)>,
    pub anomalies: Vec<AnomalyRow>,
    pub supervision: Vec<SupervisionRow>,
}

impl Changes {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
            && self.window_daily.is_empty()
            && self.anomalies.is_empty()
            && self.supervision.is_empty()
    }
}
