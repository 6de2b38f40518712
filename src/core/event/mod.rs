//! Wire format v1 (SPEC §1, Appendix A): bytes → a validated [`CaseEvent`], or the one
//! dead-letter [`Reason`] the SPEC's validation order picks.
//!
//! Pure: the wall clock needed by `future_timestamp` is an argument. Nothing here panics on any
//! input; `parse_event` is fuzzed by a property test.

use std::fmt;

use super::calendar::{DayUnit, Instant};
use super::rules::AnomalyKind;

mod reader;
#[cfg(test)]
mod reference;

use reader::{field, Document, Field, Json};

/// Largest accepted message or line, in bytes (newline excluded).
pub(crate) const MAX_EVENT_BYTES: usize = 65_536;

/// How far ahead of the wall clock an `occurred_at` may be, in seconds.
pub(crate) const FUTURE_TOLERANCE_SECS: i64 = 300;

/// Why an event was refused: exactly one of the SPEC's reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    TooLarge,
    MalformedJson,
    UnsupportedVersion,
    UnknownType,
    MissingField(&'static str),
    InvalidField(&'static str),
    FutureTimestamp,
    /// A Kafka message whose key is not its `case_id` (SPEC §7): its case would be split
    /// between partitions, hence engines.
    KeyMismatch,
    /// A `supervision` event that does not fit its case's state or its actor's role (SPEC §9).
    /// Decided by the engine, not by the parser.
    InvalidAction,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::TooLarge => f.write_str("too_large"),
            Reason::MalformedJson => f.write_str("malformed_json"),
            Reason::UnsupportedVersion => f.write_str("unsupported_version"),
            Reason::UnknownType => f.write_str("unknown_type"),
            Reason::MissingField(name) => write!(f, "missing_field:{name}"),
            Reason::InvalidField(name) => write!(f, "invalid_field:{name}"),
            Reason::FutureTimestamp => f.write_str("future_timestamp"),
            Reason::KeyMismatch => f.write_str("key_mismatch"),
            Reason::InvalidAction => f.write_str("invalid_action"),
        }
    }
}

impl Reason {
    /// A short human explanation for operators (`casewatch validate`).
    pub fn explain(&self) -> String {
        match self {
            Reason::TooLarge => format!("event is larger than {MAX_EVENT_BYTES} bytes"),
            Reason::MalformedJson => {
                "not a single UTF-8 JSON object (or a duplicate key, BOM, NaN/Infinity)".into()
            }
            Reason::UnsupportedVersion => "only wire-format version 1 is supported".into(),
            Reason::UnknownType => "type is not one of the twelve event types".into(),
            Reason::MissingField(name) => format!("required field {name} is absent or null"),
            Reason::InvalidField(name) => format!("field {name} has the wrong type or value"),
            Reason::FutureTimestamp => {
                "occurred_at is more than 5 minutes ahead of the wall clock".into()
            }
            Reason::KeyMismatch => {
                "the Kafka message key is not the event's case_id (a case must stay on one partition)"
                    .into()
            }
            Reason::InvalidAction => {
                "a supervision action that does not fit the case's state or the actor's role"
                    .into()
            }
        }
    }
}

/// The system of record that wrote an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Hall,
    Department,
    Online,
    /// The supervision console (SPEC §9).
    Supervision,
}

impl Source {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hall => "hall",
            Source::Department => "department",
            Source::Online => "online",
            Source::Supervision => "supervision",
        }
    }
}

/// Intake channel of `submitted`/`accepted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) enum Channel {
    #[default]
    Window,
    Online,
    Mobile,
    Mail,
    Other,
}

/// Whether an item is completed on the spot or has a promised time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    Instant,
    Promised,
}

impl ItemKind {
    /// The wire name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ItemKind::Instant => "instant",
            ItemKind::Promised => "promised",
        }
    }
}

/// The approval item of an `accepted` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) code: Text,
    pub(crate) name: Option<Text>,
    pub(crate) kind: ItemKind,
    /// Present (1–3650) on promised items; on instant items only when given.
    pub(crate) promised_days: Option<i64>,
    pub(crate) legal_days: Option<i64>,
    pub(crate) day_unit: DayUnit,
}

/// The applicant (optional on intake events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Applicant {
    pub(crate) kind: Option<ApplicantKind>,
    pub(crate) id_hash: Option<Text>,
}

/// Person or organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApplicantKind {
    Person,
    Organization,
}

/// Why the clock stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PauseReason {
    Supplement,
    SpecialProcedure,
    Suspension,
}

impl PauseReason {
    /// All reasons, in a fixed order (index = `self as usize`).
    pub(crate) const ALL: [PauseReason; 3] = [
        PauseReason::Supplement,
        PauseReason::SpecialProcedure,
        PauseReason::Suspension,
    ];
}

/// Result of an internal `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepResult {
    Agree,
    Disagree,
    Return,
}

/// How a completed case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Approved,
    Denied,
    Returned,
    Voided,
    Transferred,
    Done,
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::Denied => "denied",
            Outcome::Returned => "returned",
            Outcome::Voided => "voided",
            Outcome::Transferred => "transferred",
            Outcome::Done => "done",
        }
    }
}

/// The type-specific part of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EventBody {
    Submitted {
        item_code: Text,
        channel: Channel,
        applicant: Option<Applicant>,
    },
    Accepted {
        item: Item,
        channel: Channel,
        applicant: Option<Applicant>,
    },
    NotAccepted {
        reason: Option<Text>,
    },
    Step {
        step: Text,
        result: Option<StepResult>,
    },
    Paused {
        reason: PauseReason,
        approved_days: Option<i64>,
    },
    Resumed {
        reason: PauseReason,
    },
    Extended {
        extra_days: i64,
    },
    FeeCharged {
        amount_cents: i64,
        standard_cents: Option<i64>,
    },
    Completed {
        outcome: Outcome,
        on_site: bool,
    },
    Withdrawn {
        reason: Option<Text>,
    },
    Evaluated {
        rating: u8,
        channel: Option<Text>,
        is_default: bool,
    },
    Supervision(Box<SupervisionAction>),
}

/// A console action on a card (SPEC §9), boxed in [`EventBody`] so that ordinary events stay small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SupervisionAction {
    pub(crate) action: Action,
    /// The anomaly kind of the card it concerns.
    pub(crate) kind: AnomalyKind,
    pub(crate) actor_id: Text,
    pub(crate) actor_role: ActorRole,
    pub(crate) note: Option<Text>,
    /// Working days the window has to respond (required on `order` and `reopen`).
    pub(crate) response_days: Option<i64>,
}

/// What a supervision event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Order,
    Respond,
    Close,
    Reopen,
    Appeal,
    Grant,
    Reject,
}

impl Action {
    /// Every action, in the SPEC's order.
    pub const ALL: [Action; 7] = [
        Action::Order,
        Action::Respond,
        Action::Close,
        Action::Reopen,
        Action::Appeal,
        Action::Grant,
        Action::Reject,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Order => "order",
            Action::Respond => "respond",
            Action::Close => "close",
            Action::Reopen => "reopen",
            Action::Appeal => "appeal",
            Action::Grant => "grant",
            Action::Reject => "reject",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The role that may take it: a window answers and appeals, a supervisor does the rest.
    pub fn role(self) -> ActorRole {
        match self {
            Action::Respond | Action::Appeal => ActorRole::Window,
            _ => ActorRole::Supervisor,
        }
    }
}

/// The console role of whoever took an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorRole {
    Supervisor,
    Window,
    Viewer,
}

impl ActorRole {
    /// Every role.
    pub const ALL: [ActorRole; 3] = [ActorRole::Supervisor, ActorRole::Window, ActorRole::Viewer];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorRole::Supervisor => "supervisor",
            ActorRole::Window => "window",
            ActorRole::Viewer => "viewer",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Longest `note` of a supervision action, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;

/// Longest response deadline of an order, in working days.
pub const MAX_RESPONSE_DAYS: i64 = 30;

/// The event types, by wire name.
pub(crate) const EVENT_TYPES: [&str; 12] = [
    "submitted",
    "accepted",
    "not_accepted",
    "step",
    "paused",
    "resumed",
    "extended",
    "fee_charged",
    "completed",
    "withdrawn",
    "evaluated",
    "supervision",
];

impl EventBody {
    /// The wire name of the event type.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            EventBody::Submitted { .. } => "submitted",
            EventBody::Accepted { .. } => "accepted",
            EventBody::NotAccepted { .. } => "not_accepted",
            EventBody::Step { .. } => "step",
            EventBody::Paused { .. } => "paused",
            EventBody::Resumed { .. } => "resumed",
            EventBody::Extended { .. } => "extended",
            EventBody::FeeCharged { .. } => "fee_charged",
            EventBody::Completed { .. } => "completed",
            EventBody::Withdrawn { .. } => "withdrawn",
            EventBody::Evaluated { .. } => "evaluated",
            EventBody::Supervision(_) => "supervision",
        }
    }
}

/// A string field of an event: inline up to 24 bytes (every id, code and most names), so a
/// parsed event needs no allocation per field and its strings sit next to it in memory.
pub(crate) type Text = compact_str::CompactString;

/// A validated case lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseEvent {
    pub event_id: Text,
    pub case_id: Text,
    /// Event time, truncated to whole seconds.
    pub occurred_at: Instant,
    /// When the source wrote it (defaults to `occurred_at`).
    pub recorded_at: Instant,
    pub source: Source,
    pub center_id: Text,
    pub window_id: Option<Text>,
    pub department: Option<Text>,
    pub(crate) body: EventBody,
}

/// Parses and validates one message or NDJSON line against wire format v1.
///
/// `now` is the wall clock used by the `future_timestamp` rule.
pub fn parse_event(bytes: &[u8], now: Instant) -> Result<CaseEvent, Reason> {
    parse_event_text(event_text(bytes)?, now)
}

/// The first checks of a message: its size, then that it is UTF-8 text.
pub(crate) fn event_text(bytes: &[u8]) -> Result<&str, Reason> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(Reason::TooLarge);
    }
    std::str::from_utf8(bytes).map_err(|_| Reason::MalformedJson)
}

/// [`parse_event`] for a message that passed [`event_text`].
pub(crate) fn parse_event_text(text: &str, now: Instant) -> Result<CaseEvent, Reason> {
    let mut doc = Document::default();
    reader::read(text, &mut doc).map_err(|_| Reason::MalformedJson)?;

    match doc.get(field!(version)) {
        None => return Err(Reason::MissingField("version")),
        Some(Json::Int(1)) => {}
        Some(Json::Int(_)) => return Err(Reason::UnsupportedVersion),
        Some(_) => return Err(Reason::InvalidField("version")),
    }
    let type_name = match doc.get(field!(type)) {
        None => return Err(Reason::MissingField("type")),
        Some(Json::Str(s)) if EVENT_TYPES.contains(&s.as_ref()) => s.as_ref(),
        Some(_) => return Err(Reason::UnknownType),
    };

    let event_id = doc.req_str(field!(event_id), 1, 128)?;
    let case_id = doc.req_str(field!(case_id), 1, 64)?;
    let occurred_at = doc.req_time(field!(occurred_at))?;
    let recorded_at = doc.opt_time(field!(recorded_at))?.unwrap_or(occurred_at);
    let source = doc.req_enum(
        field!(source),
        &[
            ("hall", Source::Hall),
            ("department", Source::Department),
            ("online", Source::Online),
            ("supervision", Source::Supervision),
        ],
    )?;
    // A supervision action comes from the console, and only from it.
    if type_name == "supervision" && source != Source::Supervision {
        return Err(Reason::InvalidField("source"));
    }
    let center_id = doc.req_str(field!(center_id), 1, 32)?;
    let window_id = if type_name == "accepted" {
        Some(doc.req_str(field!(window_id), 1, 32)?)
    } else {
        doc.opt_str(field!(window_id), 1, 32)?
    };
    let department = doc.opt_str(field!(department), 0, usize::MAX)?;

    let body = parse_body(type_name, &doc)?;

    if occurred_at > now.saturating_add(FUTURE_TOLERANCE_SECS) {
        return Err(Reason::FutureTimestamp);
    }
    Ok(CaseEvent {
        event_id,
        case_id,
        occurred_at,
        recorded_at,
        source,
        center_id,
        window_id,
        department,
        body,
    })
}

const CHANNELS: [(&str, Channel); 5] = [
    ("window", Channel::Window),
    ("online", Channel::Online),
    ("mobile", Channel::Mobile),
    ("mail", Channel::Mail),
    ("other", Channel::Other),
];

const PAUSE_REASONS: [(&str, PauseReason); 3] = [
    ("supplement", PauseReason::Supplement),
    ("special_procedure", PauseReason::SpecialProcedure),
    ("suspension", PauseReason::Suspension),
];

fn parse_body(type_name: &str, doc: &Document<'_>) -> Result<EventBody, Reason> {
    Ok(match type_name {
        "submitted" => EventBody::Submitted {
            item_code: doc.req_str(field!(item_code), 1, 64)?,
            channel: doc
                .opt_enum(field!(channel), &CHANNELS)?
                .unwrap_or_default(),
            applicant: parse_applicant(doc)?,
        },
        "accepted" => {
            let item = parse_item(doc)?;
            let applicant = parse_applicant(doc)?;
            let channel = doc
                .opt_enum(field!(channel), &CHANNELS)?
                .unwrap_or_default();
            EventBody::Accepted {
                item,
                channel,
                applicant,
            }
        }
        "not_accepted" => EventBody::NotAccepted {
            reason: doc.opt_str(field!(reason), 0, usize::MAX)?,
        },
        "step" => EventBody::Step {
            step: doc.req_str(field!(step), 0, usize::MAX)?,
            result: doc.opt_enum(
                field!(result),
                &[
                    ("agree", StepResult::Agree),
                    ("disagree", StepResult::Disagree),
                    ("return", StepResult::Return),
                ],
            )?,
        },
        "paused" => EventBody::Paused {
            reason: doc.req_enum(field!(reason), &PAUSE_REASONS)?,
            approved_days: doc.opt_int(field!(approved_days), 0, i64::MAX)?,
        },
        "resumed" => EventBody::Resumed {
            reason: doc.req_enum(field!(reason), &PAUSE_REASONS)?,
        },
        "extended" => EventBody::Extended {
            extra_days: doc.req_int(field!(extra_days), 1, 3650)?,
        },
        "fee_charged" => EventBody::FeeCharged {
            amount_cents: doc.req_int(field!(amount_cents), 0, i64::MAX)?,
            standard_cents: doc.opt_int(field!(standard_cents), 0, i64::MAX)?,
        },
        "completed" => EventBody::Completed {
            outcome: doc.req_enum(
                field!(outcome),
                &[
                    ("approved", Outcome::Approved),
                    ("denied", Outcome::Denied),
                    ("returned", Outcome::Returned),
                    ("voided", Outcome::Voided),
                    ("transferred", Outcome::Transferred),
                    ("done", Outcome::Done),
                ],
            )?,
            on_site: doc.opt_bool(field!(on_site))?.unwrap_or(false),
        },
        "withdrawn" => EventBody::Withdrawn {
            reason: doc.opt_str(field!(reason), 0, usize::MAX)?,
        },
        "evaluated" => EventBody::Evaluated {
            rating: doc.req_int(field!(rating), 1, 5)? as u8,
            channel: doc.opt_str(field!(channel), 0, usize::MAX)?,
            is_default: doc.opt_bool(field!(is_default))?.unwrap_or(false),
        },
        "supervision" => EventBody::Supervision(Box::new(parse_supervision(doc)?)),
        _ => return Err(Reason::UnknownType),
    })
}

fn parse_supervision(doc: &Document<'_>) -> Result<SupervisionAction, Reason> {
    let action = match doc.get(field!(action)) {
        None => return Err(Reason::MissingField("action")),
        Some(Json::Str(s)) => Action::parse(s).ok_or(Reason::InvalidField("action"))?,
        Some(_) => return Err(Reason::InvalidField("action")),
    };
    let kind = match doc.get(field!(kind)) {
        None => return Err(Reason::MissingField("kind")),
        Some(Json::Str(s)) => AnomalyKind::parse(s).ok_or(Reason::InvalidField("kind"))?,
        Some(_) => return Err(Reason::InvalidField("kind")),
    };
    match doc.get(field!(actor)) {
        None => return Err(Reason::MissingField("actor")),
        Some(Json::Object) => {}
        Some(_) => return Err(Reason::InvalidField("actor")),
    }
    let actor_id = doc.req_str(field!(actor.id), 1, 64)?;
    let actor_role = match doc.get(field!(actor.role)) {
        None => return Err(Reason::MissingField("actor.role")),
        Some(Json::Str(s)) => ActorRole::parse(s).ok_or(Reason::InvalidField("actor.role"))?,
        Some(_) => return Err(Reason::InvalidField("actor.role")),
    };
    let note = doc.opt_str(field!(note), 0, MAX_NOTE_CHARS)?;
    let response_days = match action {
        Action::Order | Action::Reopen => {
            Some(doc.req_int(field!(response_days), 1, MAX_RESPONSE_DAYS)?)
        }
        _ => doc.opt_int(field!(response_days), 1, MAX_RESPONSE_DAYS)?,
    };
    Ok(SupervisionAction {
        action,
        kind,
        actor_id,
        actor_role,
        note,
        response_days,
    })
}

fn parse_item(doc: &Document<'_>) -> Result<Item, Reason> {
    match doc.get(field!(item)) {
        None => return Err(Reason::MissingField("item")),
        Some(Json::Object) => {}
        Some(_) => return Err(Reason::InvalidField("item")),
    }
    let code = doc.req_str(field!(item.code), 1, 64)?;
    let name = doc.opt_str(field!(item.name), 0, usize::MAX)?;
    let kind = doc.req_enum(
        field!(item.kind),
        &[
            ("instant", ItemKind::Instant),
            ("promised", ItemKind::Promised),
        ],
    )?;
    let promised_days = match kind {
        ItemKind::Promised => Some(doc.req_int(field!(item.promised_days), 1, 3650)?),
        ItemKind::Instant => doc.opt_int(field!(item.promised_days), 1, 3650)?,
    };
    let legal_floor = promised_days.unwrap_or(1);
    let legal_days = doc.opt_int(field!(item.legal_days), legal_floor, i64::MAX)?;
    let day_unit = doc
        .opt_enum(
            field!(item.day_unit),
            &[
                ("working", DayUnit::Working),
                ("calendar", DayUnit::Calendar),
            ],
        )?
        .unwrap_or_default();
    Ok(Item {
        code,
        name,
        kind,
        promised_days,
        legal_days,
        day_unit,
    })
}

fn parse_applicant(doc: &Document<'_>) -> Result<Option<Applicant>, Reason> {
    match doc.get(field!(applicant)) {
        None => return Ok(None),
        Some(Json::Object) => {}
        Some(_) => return Err(Reason::InvalidField("applicant")),
    }
    let kind = doc.opt_enum(
        field!(applicant.kind),
        &[
            ("person", ApplicantKind::Person),
            ("organization", ApplicantKind::Organization),
        ],
    )?;
    let id_hash = doc.opt_str(field!(applicant.id_hash), 0, usize::MAX)?;
    Ok(Some(Applicant { kind, id_hash }))
}

/// Field access on a read event, producing the SPEC's reason codes (the path of a
/// [`Field`] is what a reason names).
impl<'a> Document<'a> {
    /// The field's value; JSON `null` counts as absent.
    fn get(&self, field: Field) -> Option<&Json<'a>> {
        self.field(field).filter(|v| !matches!(v, Json::Null))
    }

    fn opt_str(&self, field: Field, min: usize, max: usize) -> Result<Option<Text>, Reason> {
        match self.get(field) {
            None => Ok(None),
            Some(Json::Str(s)) => {
                // A char is 1 to 4 bytes, so the byte length often settles the bounds.
                let settled = s.len() <= max && s.len().div_ceil(4) >= min;
                let n = if settled { min } else { s.chars().count() };
                if n < min || n > max {
                    Err(Reason::InvalidField(field.path))
                } else {
                    Ok(Some(Text::from(s.as_ref())))
                }
            }
            Some(_) => Err(Reason::InvalidField(field.path)),
        }
    }
    fn req_str(&self, field: Field, min: usize, max: usize) -> Result<Text, Reason> {
        self.opt_str(field, min, max)?
            .ok_or(Reason::MissingField(field.path))
    }

    fn opt_int(&self, field: Field, min: i64, max: i64) -> Result<Option<i64>, Reason> {
        match self.get(field) {
            None => Ok(None),
            Some(Json::Int(v)) if (min..=max).contains(v) => Ok(Some(*v)),
            Some(_) => Err(Reason::InvalidField(field.path)),
        }
    }
    fn req_int(&self, field: Field, min: i64, max: i64) -> Result<i64, Reason> {
        self.opt_int(field, min, max)?
            .ok_or(Reason::MissingField(field.path))
    }

    fn opt_bool(&self, field: Field) -> Result<Option<bool>, Reason> {
        match self.get(field) {
            None => Ok(None),
            Some(Json::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(Reason::InvalidField(field.path)),
        }
    }

    fn opt_enum<T: Copy>(&self, field: Field, values: &[(&str, T)]) -> Result<Option<T>, Reason> {
        match self.get(field) {
            None => Ok(None),
            Some(Json::Str(s)) => values
                .iter()
                .find(|(name, _)| *name == s.as_ref())
                .map(|(_, v)| Some(*v))
                .ok_or(Reason::InvalidField(field.path)),
            Some(_) => Err(Reason::InvalidField(field.path)),
        }
    }
    fn req_enum<T: Copy>(&self, field: Field, values: &[(&str, T)]) -> Result<T, Reason> {
        self.opt_enum(field, values)?
            .ok_or(Reason::MissingField(field.path))
    }

    fn opt_time(&self, field: Field) -> Result<Option<Instant>, Reason> {
        match self.get(field) {
            None => Ok(None),
            Some(Json::Str(s)) => parse_timestamp(s)
                .map(Some)
                .ok_or(Reason::InvalidField(field.path)),
            Some(_) => Err(Reason::InvalidField(field.path)),
        }
    }
    fn req_time(&self, field: Field) -> Result<Instant, Reason> {
        self.opt_time(field)?
            .ok_or(Reason::MissingField(field.path))
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to whole UTC seconds (fraction truncated).
pub fn parse_timestamp(s: &str) -> Option<Instant> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in b.get(range)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i..)? {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == i + 6 && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = oh * 3600 + om * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Instant = 2_000_000_000; // 2033-05-18

    fn reason(line: &str) -> String {
        match parse_event(line.as_bytes(), NOW) {
            Ok(_) => "ok".into(),
            Err(r) => r.to_string(),
        }
    }

    const ACCEPTED: &str = r#"{"version":1,"event_id":"e1","case_id":"c1","type":"accepted","occurred_at":"2018-10-15T10:00:00+08:00","source":"hall","center_id":"C1","window_id":"W1","item":{"code":"I1","kind":"promised","promised_days":7}}"#;

    fn with(base: &str, patch: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
        let p: serde_json::Value = serde_json::from_str(patch).unwrap();
        for (k, val) in p.as_object().unwrap() {
            v[k] = val.clone();
        }
        v.to_string()
    }

    #[test]
    fn duplicate_keys_are_refused_among_few_and_among_many_keys() {
        let extra = |n: usize| -> String { (0..n).map(|i| format!(",\"k{i}\":{i}")).collect() };
        let top = |fields: &str| format!("{}{fields}}}", &ACCEPTED[..ACCEPTED.len() - 1]);
        assert_eq!(reason(&top(&extra(3))), "ok");
        assert_eq!(reason(&top(&extra(300))), "ok");
        assert_eq!(reason(&top(",\"k1\":1,\"k1\":2")), "malformed_json");
        assert_eq!(
            reason(&top(&format!("{},\"k250\":0", extra(300)))),
            "malformed_json"
        );
        assert_eq!(
            reason(&top(&format!("{},\"version\":1", extra(40)))),
            "malformed_json"
        );
        // Inside a nested object, with few and with many keys.
        let nested = |inner: &str| top(&format!(",\"x\":{{\"a\":0{inner}}}"));
        assert_eq!(reason(&nested(&extra(100))), "ok");
        assert_eq!(reason(&nested(",\"a\":1")), "malformed_json");
        assert_eq!(
            reason(&nested(&format!("{},\"k99\":0", extra(100)))),
            "malformed_json"
        );
    }

    #[test]
    fn a_valid_acceptance_parses_with_its_item() {
        let e = parse_event(ACCEPTED.as_bytes(), NOW).unwrap();
        assert_eq!(
            e.occurred_at,
            parse_timestamp("2018-10-15T02:00:00Z").unwrap()
        );
        assert_eq!(e.recorded_at, e.occurred_at);
        let EventBody::Accepted { item, channel, .. } = e.body else {
            panic!()
        };
        assert_eq!(item.promised_days, Some(7));
        assert_eq!(item.day_unit, DayUnit::Working);
        assert_eq!(channel, Channel::Window);
    }

    #[test]
    fn every_reason_code_in_validation_order() {
        assert_eq!(reason(&"x".repeat(MAX_EVENT_BYTES + 1)), "too_large");
        assert_eq!(reason("{"), "malformed_json");
        assert_eq!(reason("[1]"), "malformed_json");
        assert_eq!(reason(r#"{"version":1,"version":1}"#), "malformed_json");
        assert_eq!(
            reason(r#"{"a":{"b":1,"b":2},"version":1}"#),
            "malformed_json"
        );
        assert_eq!(reason("\u{feff}{}"), "malformed_json");
        assert_eq!(reason(r#"{"version":NaN}"#), "malformed_json");
        assert_eq!(reason("{}"), "missing_field:version");
        assert_eq!(reason(r#"{"version":null}"#), "missing_field:version");
        assert_eq!(reason(r#"{"version":"1"}"#), "invalid_field:version");
        assert_eq!(reason(r#"{"version":1.0}"#), "invalid_field:version");
        assert_eq!(reason(r#"{"version":2}"#), "unsupported_version");
        assert_eq!(reason(r#"{"version":1}"#), "missing_field:type");
        assert_eq!(reason(r#"{"version":1,"type":"opened"}"#), "unknown_type");
        assert_eq!(reason(r#"{"version":1,"type":3}"#), "unknown_type");
        assert_eq!(
            reason(&with(ACCEPTED, r#"{"event_id":null}"#)),
            "missing_field:event_id"
        );
        assert_eq!(
            reason(&with(ACCEPTED, r#"{"event_id":""}"#)),
            "invalid_field:event_id"
        );
        assert_eq!(
            reason(&with(
                ACCEPTED,
                &format!(r#"{{"case_id":"{}"}}"#, "案".repeat(65))
            )),
            "invalid_field:case_id"
        );
        assert_eq!(
            reason(&with(
                ACCEPTED,
                &format!(r#"{{"case_id":"{}"}}"#, "案".repeat(64))
            )),
            "ok"
        );
        assert_eq!(
            reason(&with(
                ACCEPTED,
                r#"{"occurred_at":"2018-10-15 10:00:00+08:00"}"#
            )),
            "invalid_field:occurred_at"
        );
        assert_eq!(
            reason(&with(ACCEPTED, r#"{"recorded_at":"2018-10-15T10:00:60Z"}"#)),
            "invalid_field:recorded_at"
        );
        assert_eq!(
            reason(&with(ACCEPTED, r#"{"source":"phone"}"#)),
            "invalid_field:source"
        );
        assert_eq!(
            reason(&with(ACCEPTED, r#"{"center_id":""}"#)),
            "invalid_field:center_id"
        );
        assert_eq!(
            reason(&with(ACCEPTED, r#"{"window_id":null}"#)),
            "missing_field:window_id"
        );
        assert_eq!(
            reason(&with(ACCEPTED, r#"{"department":5}"#)),
            "invalid_field:department"
        );
        assert_eq!(
            reason(&with(ACCEPTED, r#"{"item":null}"#)),
            "missing_field:item"
        );
        assert_eq!(
            reason(&with(ACCEPTED, r#"{"item":"I1"}"#)),
            "invalid_field:item"
        );
        assert_eq!(
            reason(&with(ACCEPTED, r#"{"item":{"kind":"promised"}}"#)),
            "missing_field:item.code"
        );
        assert_eq!(
            reason(&with(
                ACCEPTED,
                r#"{"item":{"code":"I","kind":"promised"}}"#
            )),
            "missing_field:item.promised_days"
        );
        assert_eq!(
            reason(&with(
                ACCEPTED,
                r#"{"item":{"code":"I","kind":"promised","promised_days":7.0}}"#
            )),
            "invalid_field:item.promised_days"
        );
        assert_eq!(
            reason(&with(
                ACCEPTED,
                r#"{"item":{"code":"I","kind":"promised","promised_days":7,"legal_days":6}}"#
            )),
            "invalid_field:item.legal_days"
        );
        assert_eq!(
            reason(&with(
                ACCEPTED,
                r#"{"item":{"code":"I","kind":"instant","day_unit":"hours"}}"#
            )),
            "invalid_field:item.day_unit"
        );
        assert_eq!(
            reason(&with(ACCEPTED, r#"{"item":{"code":"I","kind":"instant"}}"#)),
            "ok"
        );
        assert_eq!(
            reason(&with(ACCEPTED, r#"{"applicant":{"kind":"robot"}}"#)),
            "invalid_field:applicant.kind"
        );
        assert_eq!(
            reason(&with(ACCEPTED, r#"{"channel":"fax"}"#)),
            "invalid_field:channel"
        );
        assert_eq!(
            reason(&with(ACCEPTED, r#"{"occurred_at":"2033-05-18T03:40:00Z"}"#)),
            "future_timestamp"
        );
        assert_eq!(
            reason(&with(ACCEPTED, r#"{"occurred_at":"2033-05-18T03:38:00Z"}"#)),
            "ok"
        );
    }

    #[test]
    fn every_type_requires_its_own_fields() {
        let base = r#"{"version":1,"event_id":"e","case_id":"c","occurred_at":"2020-01-02T03:04:05Z","source":"department","center_id":"C"}"#;
        let cases = [
            ("submitted", "{}", "missing_field:item_code"),
            (
                "submitted",
                r#"{"item_code":"X","applicant":[]}"#,
                "invalid_field:applicant",
            ),
            ("not_accepted", "{}", "ok"),
            ("step", "{}", "missing_field:step"),
            (
                "step",
                r#"{"step":"审核","result":"maybe"}"#,
                "invalid_field:result",
            ),
            ("paused", "{}", "missing_field:reason"),
            (
                "paused",
                r#"{"reason":"special_procedure","approved_days":-1}"#,
                "invalid_field:approved_days",
            ),
            ("resumed", r#"{"reason":"holiday"}"#, "invalid_field:reason"),
            ("extended", "{}", "missing_field:extra_days"),
            (
                "extended",
                r#"{"extra_days":0}"#,
                "invalid_field:extra_days",
            ),
            ("fee_charged", "{}", "missing_field:amount_cents"),
            (
                "fee_charged",
                r#"{"amount_cents":5,"standard_cents":-2}"#,
                "invalid_field:standard_cents",
            ),
            ("completed", "{}", "missing_field:outcome"),
            (
                "completed",
                r#"{"outcome":"approved","on_site":"yes"}"#,
                "invalid_field:on_site",
            ),
            ("withdrawn", r#"{"reason":7}"#, "invalid_field:reason"),
            ("evaluated", "{}", "missing_field:rating"),
            ("evaluated", r#"{"rating":6}"#, "invalid_field:rating"),
            (
                "evaluated",
                r#"{"rating":5,"channel":"电话","is_default":true}"#,
                "ok",
            ),
        ];
        for (ty, own, expected) in cases {
            let line = with(&with(base, &format!(r#"{{"type":"{ty}"}}"#)), own);
            assert_eq!(reason(&line), expected, "{line}");
        }
    }

    #[test]
    fn timestamps_truncate_fractions_and_honour_offsets() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("1970-01-01T08:00:00.999+08:00"), Some(0));
        assert_eq!(parse_timestamp("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        assert_eq!(parse_timestamp("2023-02-29T00:00:00Z"), None);
        assert_eq!(parse_timestamp("2023-01-01t00:00:00Z"), None);
        assert_eq!(parse_timestamp("2023-01-01T00:00:00z"), None);
        assert_eq!(parse_timestamp("2023-01-01T00:00:00"), None);
        assert_eq!(parse_timestamp("2023-01-01T00:00:00.Z"), None);
        assert_eq!(parse_timestamp("2023-01-01T00:00:00+0800"), None);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn no_bytes_make_the_parser_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
                let _ = parse_event(&bytes, NOW);
            }

            #[test]
            fn no_mutation_of_a_valid_event_panics(pos in 0usize..220, byte in any::<u8>()) {
                let mut bytes = ACCEPTED.as_bytes().to_vec();
                let pos = pos % bytes.len();
                bytes[pos] = byte;
                let _ = parse_event(&bytes, NOW);
            }
        }
    }
}
