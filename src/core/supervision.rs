//! The supervision loop of one case (SPEC §9): 督办 orders with response deadlines and appeals
//! (申诉) with their decisions, one [`Supervision`] per (case, anomaly kind).
//!
//! Pure: what an action may do ([`fits`]), how it changes the state ([`apply`]), when an
//! order's response is late ([`Order::timing`]) and what the loop adds to `window_daily`
//! ([`entries`]). The engine decides `fits` on the case's facts at the action's own
//! `occurred_at`, so whether an action is valid depends on the log alone, never on when it was
//! replayed.
//!
//! The rules where the SPEC is silent (ARCHITECTURE.md, "The supervision loop"):
//! * one order and one appeal per card; an order is closed or reopened only after a response;
//! * an order or an appeal needs the card to hold (not annulled) at level yellow or red when
//!   it is taken; `supervision_overdue` cannot itself be ordered (it is the order's own card)
//!   but can be appealed;
//! * a window answers and appeals, a supervisor orders, closes, reopens and decides; a viewer
//!   does nothing;
//! * a granted appeal annuls the card for good, cancels an order still waiting for its
//!   response, and an annulled `overdue` makes a completed case count as on time.

use super::aggregate::{counter, Entry};
use super::calendar::{DayUnit, Instant, WorkCalendar, DAY};
use super::case::At;
use super::event::{Action, ActorRole, SupervisionAction, Text};
use super::rules::{AnomalyKind, Level};

/// The supervision of one card.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Supervision {
    pub(crate) kind: AnomalyKind,
    pub(crate) order: Option<Order>,
    pub(crate) appeal: Option<Appeal>,
}

/// A supervision order (督办) and its response periods.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Order {
    pub(crate) ordered_by: Text,
    pub(crate) note: Option<Text>,
    /// The order's period, then one per reopen (never empty).
    pub(crate) periods: Vec<Period>,
    pub(crate) closed_at: At,
    pub(crate) closed_by: Text,
    pub(crate) close_note: Option<Text>,
    /// When a granted appeal cancelled the order while it waited for a response.
    pub(crate) cancelled_at: At,
}

/// One request for a response: from the order (or a reopen) to its response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Period {
    pub(crate) start: Instant,
    /// Working days the window had (1–30).
    pub(crate) days: u8,
    pub(crate) response: At,
    pub(crate) responded_by: Text,
    pub(crate) response_note: Option<Text>,
}

/// An appeal (申诉) of the card and the supervisor's decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Appeal {
    pub(crate) at: Instant,
    pub(crate) by: Text,
    pub(crate) reason: Option<Text>,
    pub(crate) decision: Option<Decision>,
}

/// A supervisor's decision on an appeal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Decision {
    pub(crate) granted: bool,
    pub(crate) at: Instant,
    pub(crate) by: Text,
    pub(crate) note: Option<Text>,
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    /// Waiting for the window's response.
    Ordered,
    /// Answered; the supervisor closes or reopens it.
    Responded,
    Closed,
    /// A granted appeal annulled the card while the order waited for its response.
    Cancelled,
}

impl OrderState {
    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            OrderState::Ordered,
            OrderState::Responded,
            OrderState::Closed,
            OrderState::Cancelled,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }

    /// The wire name (the `supervision` table's `order_state`).
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Ordered => "ordered",
            OrderState::Responded => "responded",
            OrderState::Closed => "closed",
            OrderState::Cancelled => "cancelled",
        }
    }
}

/// When an order's responses are due, and which came late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// The earliest response deadline passed without its response: by a response after it, by
    /// a cancellation after it, or by engine time while the response is still awaited.
    pub(crate) first_late: Option<Instant>,
    /// The deadline of the period still waiting, when it has not passed yet.
    pub(crate) pending: Option<Instant>,
    /// The current period's deadline.
    pub(crate) due: Instant,
}

impl Order {
    /// When the order was issued.
    pub(crate) fn ordered_at(&self) -> Instant {
        self.periods[0].start
    }

    /// The current period (the last).
    pub(crate) fn current(&self) -> &Period {
        self.periods.last().expect("an order has a period")
    }

    pub(crate) fn state(&self) -> OrderState {
        if self.cancelled_at.is_some() {
            OrderState::Cancelled
        } else if self.closed_at.is_some() {
            OrderState::Closed
        } else if self.current().response.is_some() {
            OrderState::Responded
        } else {
            OrderState::Ordered
        }
    }

    /// Response deadlines on the centre's working calendar, compared with the responses (or
    /// with `now` for one still awaited). Passing is strict: a response at the deadline
    /// instant is on time.
    pub(crate) fn timing(&self, cal: &WorkCalendar, now: Instant) -> Timing {
        let mut timing = Timing {
            first_late: None,
            pending: None,
            due: 0,
        };
        let last = self.periods.len() - 1;
        for (i, p) in self.periods.iter().enumerate() {
            let due = response_due(cal, p.start, p.days);
            timing.due = due;
            let answered = match p.response.get() {
                Some(r) => Some(r),
                None if i == last => self.cancelled_at.get(),
                None => None,
            };
            let late = match answered {
                Some(a) => a > due,
                None if now > due => true,
                None => {
                    timing.pending = Some(due);
                    false
                }
            };
            if late {
                timing.first_late = Some(timing.first_late.map_or(due, |f| f.min(due)));
            }
        }
        timing
    }
}

/// The instant `days` working days after `start` on the centre's calendar.
pub(crate) fn response_due(cal: &WorkCalendar, start: Instant, days: u8) -> Instant {
    cal.add_working(start, i64::from(days) * DAY, DayUnit::Working)
}

impl Supervision {
    /// Whether an appeal of the card was granted (the card is annulled).
    pub(crate) fn annulled(&self) -> bool {
        self.appeal
            .as_ref()
            .is_some_and(|a| a.decision.as_ref().is_some_and(|d| d.granted))
    }
}

/// Where an appeal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppealState {
    Pending,
    Granted,
    Rejected,
}

impl AppealState {
    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            AppealState::Pending,
            AppealState::Granted,
            AppealState::Rejected,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }

    /// The wire name (the `supervision` table's `appeal_state`).
    pub fn as_str(self) -> &'static str {
        match self {
            AppealState::Pending => "pending",
            AppealState::Granted => "granted",
            AppealState::Rejected => "rejected",
        }
    }
}

/// What decides which actions a card admits: the engine builds it from a case's state, the
/// console from the `anomalies` and `supervision` rows, and both ask [`allowed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CardState {
    /// The card's level while it holds (annulled cards do not hold).
    pub holds: Option<Level>,
    pub order: Option<OrderState>,
    pub appeal: Option<AppealState>,
}

impl Supervision {
    /// The card's state, given its level while it holds.
    pub(crate) fn card_state(s: Option<&Supervision>, holds: Option<Level>) -> CardState {
        CardState {
            holds,
            order: s.and_then(|s| s.order.as_ref()).map(Order::state),
            appeal: s
                .and_then(|s| s.appeal.as_ref())
                .map(|a| match &a.decision {
                    None => AppealState::Pending,
                    Some(d) if d.granted => AppealState::Granted,
                    Some(_) => AppealState::Rejected,
                }),
        }
    }
}

/// Whether `role` may take `action` on the card of `kind` in state `card` (SPEC §9).
pub fn allowed(role: ActorRole, action: Action, kind: AnomalyKind, card: CardState) -> bool {
    if role != action.role() {
        return false;
    }
    let is_card = card.holds.is_some_and(|l| l >= Level::Yellow);
    match action {
        Action::Order => is_card && kind != AnomalyKind::SupervisionOverdue && card.order.is_none(),
        Action::Respond => card.order == Some(OrderState::Ordered),
        Action::Close | Action::Reopen => card.order == Some(OrderState::Responded),
        Action::Appeal => is_card && card.appeal.is_none(),
        Action::Grant | Action::Reject => card.appeal == Some(AppealState::Pending),
    }
}

/// The actions `role` may take on the card, in the SPEC's order.
pub fn actions_for(role: ActorRole, kind: AnomalyKind, card: CardState) -> Vec<Action> {
    Action::ALL
        .into_iter()
        .filter(|a| allowed(role, *a, kind, card))
        .collect()
}

/// Whether `action` fits the case's supervision and the card it concerns. `card` is the level
/// of the card when it holds at the action's `occurred_at` (annulled cards do not hold).
pub(crate) fn fits(
    supervision: &[Supervision],
    a: &SupervisionAction,
    card: Option<Level>,
) -> bool {
    let current = supervision.iter().find(|s| s.kind == a.kind);
    allowed(
        a.actor_role,
        a.action,
        a.kind,
        Supervision::card_state(current, card),
    )
}

/// Applies an action that [`fits`], at instant `t`.
pub(crate) fn apply(supervision: &mut Vec<Supervision>, a: &SupervisionAction, t: Instant) {
    let i = match supervision.iter().position(|s| s.kind == a.kind) {
        Some(i) => i,
        None => {
            supervision.push(Supervision {
                kind: a.kind,
                order: None,
                appeal: None,
            });
            supervision.len() - 1
        }
    };
    let s = &mut supervision[i];
    let days = a.response_days.unwrap_or(1).clamp(1, 30) as u8;
    let by = a.actor_id.clone();
    match a.action {
        Action::Order => {
            s.order = Some(Order {
                ordered_by: by,
                note: a.note.clone(),
                periods: vec![Period::new(t, days)],
                closed_at: At::NONE,
                closed_by: Text::default(),
                close_note: None,
                cancelled_at: At::NONE,
            })
        }
        Action::Respond => {
            if let Some(p) = s.order.as_mut().and_then(|o| o.periods.last_mut()) {
                p.response = At::some(t);
                p.responded_by = by;
                p.response_note = a.note.clone();
            }
        }
        Action::Close => {
            if let Some(o) = s.order.as_mut() {
                o.closed_at = At::some(t);
                o.closed_by = by;
                o.close_note = a.note.clone();
            }
        }
        Action::Reopen => {
            if let Some(o) = s.order.as_mut() {
                o.periods.push(Period::new(t, days));
            }
        }
        Action::Appeal => {
            s.appeal = Some(Appeal {
                at: t,
                by,
                reason: a.note.clone(),
                decision: None,
            })
        }
        Action::Grant | Action::Reject => {
            let granted = a.action == Action::Grant;
            if let Some(ap) = s.appeal.as_mut() {
                ap.decision = Some(Decision {
                    granted,
                    at: t,
                    by,
                    note: a.note.clone(),
                });
            }
            if let Some(o) = s.order.as_mut().filter(|_| granted) {
                if o.state() == OrderState::Ordered {
                    o.cancelled_at = At::some(t);
                }
            }
        }
    }
}

impl Period {
    fn new(start: Instant, days: u8) -> Self {
        Self {
            start,
            days,
            response: At::NONE,
            responded_by: Text::default(),
            response_note: None,
        }
    }
}

/// What the case's supervision adds to `window_daily`: one order on its day; then either an
/// overdue order on the day of the deadline it missed (while `supervision_overdue` holds) or
/// an order answered on time on the day of its latest response; one appeal on its day and its
/// decision on the decision's day.
pub(crate) fn entries(
    supervision: &[Supervision],
    cal: &WorkCalendar,
    now: Instant,
    overdue_holds: bool,
) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut put = |at: Instant, counter: u8| {
        out.push(Entry {
            at,
            counter,
            value: 1,
        })
    };
    for s in supervision {
        if let Some(o) = &s.order {
            put(o.ordered_at(), counter::ORDERS);
            let timing = o.timing(cal, now);
            match (timing.first_late, o.current().response.get()) {
                (Some(late), _) if overdue_holds => put(late, counter::ORDERS_OVERDUE),
                (None, Some(r)) => put(r, counter::ORDERS_RESPONDED_ON_TIME),
                _ => {}
            }
        }
        if let Some(ap) = &s.appeal {
            put(ap.at, counter::APPEALS);
            if let Some(d) = &ap.decision {
                let c = if d.granted {
                    counter::APPEALS_GRANTED
                } else {
                    counter::APPEALS_REJECTED
                };
                put(d.at, c);
            }
        }
    }
    out
}
