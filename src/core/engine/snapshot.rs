//! Serialisable forms of case state and `window_daily` rows, with interned strings resolved,
//! so a partition's state can be persisted (in ClickHouse) and restored by another process.

use serde::{Deserialize, Serialize};

use crate::core::aggregate::{Counters, DailyKey};
use crate::core::calendar::DayUnit;
use crate::core::case::{Acceptance, At, CaseState, End, EndKind, Pause, Rare, Rating, SeenAttrs};
use crate::core::event::{ItemKind, Outcome, PauseReason};
use crate::core::interner::Interner;

/// One case's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseSnapshot {
    pub(crate) case_id: String,
    pub(crate) events: u32,
    #[serde(default)]
    pub(crate) seen: [String; 4],
    #[serde(default)]
    pub(crate) acceptance: Option<AcceptanceSnapshot>,
    #[serde(default)]
    pub(crate) submitted_at: Option<i64>,
    #[serde(default)]
    pub(crate) second_acceptance_at: Option<i64>,
    #[serde(default)]
    pub(crate) acceptance_in_loop: bool,
    #[serde(default)]
    pub(crate) first_handling_at: Option<i64>,
    #[serde(default)]
    pub(crate) intake_end: Option<i64>,
    /// (kind, at, outcome, on_site); kind is `completed`, `not_accepted` or `withdrawn`.
    #[serde(default)]
    pub(crate) end: Option<(String, i64, Option<String>, bool)>,
    /// (reason index, start, end, approved_days).
    #[serde(default)]
    pub(crate) pauses: Vec<(u8, i64, Option<i64>, Option<u32>)>,
    #[serde(default)]
    pub(crate) extension_days: u32,
    #[serde(default)]
    pub(crate) backfilled_at: Option<i64>,
    #[serde(default)]
    pub(crate) overcharge_at: Option<i64>,
    /// Revocations per anomaly kind (the rounds of SPEC §4).
    #[serde(default)]
    pub(crate) revocations: [u16; crate::core::rules::AnomalyKind::COUNT],
    /// (value, is_default, at).
    #[serde(default)]
    pub(crate) rating: Option<(u8, bool, i64)>,
    #[serde(default)]
    pub(crate) event_ids: Vec<u64>,
    /// The supervision loop of its cards (SPEC §9).
    #[serde(default)]
    pub(crate) supervision: Vec<crate::core::supervision::Supervision>,
}

/// The authoritative acceptance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AcceptanceSnapshot {
    pub(crate) at: i64,
    pub(crate) center: String,
    pub(crate) window: String,
    pub(crate) department: String,
    pub(crate) item_code: String,
    pub(crate) item_name: String,
    pub(crate) promised: bool,
    pub(crate) promised_days: u16,
    pub(crate) legal_days: Option<u32>,
    pub(crate) calendar_days: bool,
}

const OUTCOMES: [Outcome; 6] = [
    Outcome::Approved,
    Outcome::Denied,
    Outcome::Returned,
    Outcome::Voided,
    Outcome::Transferred,
    Outcome::Done,
];

impl CaseSnapshot {
    /// Exports a case's state.
    pub(crate) fn from_state(case_id: &str, s: &CaseState, events: u32, syms: &Interner) -> Self {
        let name = |sym| syms.resolve(sym).to_string();
        Self {
            case_id: case_id.to_string(),
            events,
            seen: [
                name(s.seen.center),
                name(s.seen.window),
                name(s.seen.department),
                name(s.seen.item_code),
            ],
            acceptance: s.acceptance.map(|a| AcceptanceSnapshot {
                at: a.at,
                center: name(a.center),
                window: name(a.window),
                department: name(a.department),
                item_code: name(a.item_code),
                item_name: name(a.item_name),
                promised: a.kind == ItemKind::Promised,
                promised_days: a.promised_days,
                legal_days: a.legal_days,
                calendar_days: a.day_unit == DayUnit::Calendar,
            }),
            submitted_at: s.submitted_at.get(),
            second_acceptance_at: s.rare().second_acceptance_at.get(),
            acceptance_in_loop: s.acceptance_in_loop,
            first_handling_at: s.first_handling_at.get(),
            intake_end: s.intake_end.get(),
            end: s.end.map(|e| match e.kind {
                EndKind::Completed { outcome, on_site } => (
                    "completed".to_string(),
                    e.at,
                    Some(outcome.as_str().to_string()),
                    on_site,
                ),
                EndKind::NotAccepted => ("not_accepted".to_string(), e.at, None, false),
                EndKind::Withdrawn => ("withdrawn".to_string(), e.at, None, false),
            }),
            pauses: s
                .rare()
                .pauses
                .iter()
                .map(|p| (p.reason as u8, p.start, p.end.get(), p.approved_days))
                .collect(),
            extension_days: s.rare().extension_days,
            backfilled_at: s.rare().backfilled_at.get(),
            overcharge_at: s.rare().overcharge_at.get(),
            revocations: s.rare().revocations,
            rating: s.rating.map(|r| (r.value, r.is_default, r.at)),
            event_ids: s.event_ids.to_vec(),
            supervision: s.rare().supervision.clone(),
        }
    }

    /// Rebuilds the state, interning its strings.
    pub(crate) fn to_state(&self, syms: &mut Interner) -> CaseState {
        let at = |v: Option<i64>| v.map_or(At::NONE, At::some);
        let [c, w, d, i] = &self.seen;
        let mut state = CaseState {
            seen: SeenAttrs {
                center: syms.intern(c),
                window: syms.intern(w),
                department: syms.intern(d),
                item_code: syms.intern(i),
            },
            acceptance: self.acceptance.as_ref().map(|a| Acceptance {
                at: a.at,
                center: syms.intern(&a.center),
                window: syms.intern(&a.window),
                department: syms.intern(&a.department),
                item_code: syms.intern(&a.item_code),
                item_name: syms.intern(&a.item_name),
                kind: if a.promised {
                    ItemKind::Promised
                } else {
                    ItemKind::Instant
                },
                promised_days: a.promised_days,
                legal_days: a.legal_days,
                day_unit: if a.calendar_days {
                    DayUnit::Calendar
                } else {
                    DayUnit::Working
                },
            }),
            submitted_at: at(self.submitted_at),
            acceptance_in_loop: self.acceptance_in_loop,
            first_handling_at: at(self.first_handling_at),
            intake_end: at(self.intake_end),
            end: self.end.as_ref().map(|(kind, t, outcome, on_site)| End {
                at: *t,
                kind: match kind.as_str() {
                    "completed" => EndKind::Completed {
                        outcome: OUTCOMES
                            .into_iter()
                            .find(|o| Some(o.as_str()) == outcome.as_deref())
                            .unwrap_or(Outcome::Done),
                        on_site: *on_site,
                    },
                    "not_accepted" => EndKind::NotAccepted,
                    _ => EndKind::Withdrawn,
                },
            }),
            rating: self.rating.map(|(value, is_default, at)| Rating {
                value,
                is_default,
                at,
            }),
            event_ids: self.event_ids.iter().copied().collect(),
            rare: None,
        };
        state.set_rare(Rare {
            second_acceptance_at: at(self.second_acceptance_at),
            pauses: self
                .pauses
                .iter()
                .map(|&(r, start, end, approved_days)| Pause {
                    reason: PauseReason::ALL[usize::from(r).min(2)],
                    start,
                    end: at(end),
                    approved_days,
                })
                .collect(),
            extension_days: self.extension_days,
            backfilled_at: at(self.backfilled_at),
            overcharge_at: at(self.overcharge_at),
            revocations: self.revocations,
            supervision: self.supervision.clone(),
        });
        state
    }
}

/// One `window_daily` row with its key strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailySnapshot {
    pub(crate) day: i64,
    pub(crate) center: String,
    pub(crate) window: String,
    pub(crate) item_code: String,
    pub(crate) counters: Counters,
}

impl DailySnapshot {
    /// Exports a row.
    pub(crate) fn from_key(k: &DailyKey, counters: &Counters, syms: &Interner) -> Self {
        Self {
            day: k.day,
            center: syms.resolve(k.center).to_string(),
            window: syms.resolve(k.window).to_string(),
            item_code: syms.resolve(k.item_code).to_string(),
            counters: *counters,
        }
    }

    /// The key, interning its strings.
    pub(crate) fn key(&self, syms: &mut Interner) -> DailyKey {
        DailyKey {
            day: self.day,
            center: syms.intern(&self.center),
            window: syms.intern(&self.window),
            item_code: syms.intern(&self.item_code),
        }
    }
}

/// The format of a persisted engine state. A snapshot of any other format is never decoded:
/// the reader falls back to re-applying the stored events (bump this on every change to the
/// snapshot types above or below).
pub const FORMAT: u32 = 2;

/// The bytes every encoded snapshot starts with, before its format number.
const MAGIC: &[u8; 4] = b"CWS\0";

/// A partition engine's whole state as persisted (SPEC §7, "state snapshots"): engine time,
/// every case held, every `window_daily` row, and the cases evicted after their retention (so a
/// late event for one is still known to need a restore).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSnapshot {
    pub(crate) now: i64,
    pub(crate) cases: Vec<CaseSnapshot>,
    pub(crate) daily: Vec<DailySnapshot>,
    pub(crate) evicted: Vec<u64>,
}

/// Why bytes are not a snapshot this build can read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("not a casewatch snapshot")]
    NotASnapshot,
    #[error("snapshot format {found}, this build reads format {FORMAT}")]
    OtherFormat { found: u32 },
    #[error("snapshot damaged: {0}")]
    Damaged(String),
}

impl EngineSnapshot {
    /// Cases held.
    pub fn case_count(&self) -> usize {
        self.cases.len()
    }

    /// The binary form: `MAGIC`, the format (u32, little endian), then postcard.
    pub fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut out = Vec::with_capacity(64 + self.cases.len() * 160);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        postcard::to_io(self, &mut out).map_err(|e| SnapshotError::Damaged(e.to_string()))?;
        Ok(out)
    }

    /// Reads the binary form; another format is an error, never a misread.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let Some((head, body)) = bytes.split_at_checked(8) else {
            return Err(SnapshotError::NotASnapshot);
        };
        if &head[..4] != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        let found = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if found != FORMAT {
            return Err(SnapshotError::OtherFormat { found });
        }
        let (snapshot, rest) = postcard::take_from_bytes::<Self>(body)
            .map_err(|e| SnapshotError::Damaged(e.to_string()))?;
        if !rest.is_empty() {
            return Err(SnapshotError::Damaged(format!(
                "{} bytes after the end",
                rest.len()
            )));
        }
        Ok(snapshot)
    }
}
