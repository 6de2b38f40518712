//! Row types of the ClickHouse tables (RowBinary layout: `DateTime` = u32 seconds, `Date` = u16
//! days, `Nullable(T)` = `Option<T>`), and their construction from engine output.

use ::clickhouse::Row;
use chrono::Datelike;
use serde::{Deserialize, Serialize};

use crate::core::aggregate::{counter, Counters, DailyKey};
use crate::core::calendar::Instant;
use crate::core::engine::{AnomalyRow, CaseRef, CaseRow, SupervisionRow};
use crate::core::interner::Interner;
// Short string columns (ids, codes, names) are `Text`, inline up to 24 bytes like the event's
// own strings, so building a row does not allocate per column.
use crate::core::event::{CaseEvent, Text};
use crate::core::rules::{AnomalyKind, Rules};

/// An instant as a `DateTime` (clamped to its 1970–2106 range).
pub(crate) fn datetime(t: Instant) -> u32 {
    t.clamp(0, i64::from(u32::MAX)) as u32
}

/// The alert id of a (case, kind): a stable hash, the same in every run.
pub(crate) fn alert_id(case_id: &str, kind: AnomalyKind) -> String {
    let mut bytes = Vec::with_capacity(case_id.len() + 32);
    bytes.extend_from_slice(case_id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(kind.as_str().as_bytes());
    format!("{:016x}", crate::core::case::stable_hash(&bytes))
}

/// Where a partition's rows come from: a Kafka partition or a replayed file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    pub(crate) topic: String,
    pub(crate) partition: u32,
}

/// `events`.
#[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct EventRecord {
    pub(crate) event_id: Text,
    pub(crate) case_id: Text,
    #[serde(rename = "type")]
    pub(crate) kind: Text,
    pub(crate) occurred_at: u32,
    pub(crate) recorded_at: u32,
    pub(crate) source: Text,
    pub(crate) center_id: Text,
    pub(crate) window_id: Text,
    pub(crate) payload: Payload,
    pub(crate) topic: Text,
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) version: u64,
}

impl EventRecord {
    /// The row of an applied event at `offset` of `origin`.
    pub(crate) fn new(e: &CaseEvent, payload: Payload, origin: &Origin, offset: u64) -> Self {
        Self {
            event_id: e.event_id.clone(),
            case_id: e.case_id.clone(),
            kind: Text::const_new(e.body.type_name()),
            occurred_at: datetime(e.occurred_at),
            recorded_at: datetime(e.recorded_at),
            source: Text::const_new(e.source.as_str()),
            center_id: e.center_id.clone(),
            window_id: e.window_id.clone().unwrap_or_default(),
            payload,
            topic: Text::new(&origin.topic),
            partition: origin.partition,
            offset,
            version: 0,
        }
    }
}

/// An event's raw JSON as `events.payload` stores it: a slice of a buffer shared with other
/// events' payloads ([`PayloadArena`]), so a batch's payloads cost a few allocations rather
/// than one each (and the runtime's threads, which drop a written batch, free a few blocks
/// rather than contend with the consumer thread for the allocator's lock on each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Payload(bytes::Bytes);

impl Payload {
    /// The JSON text.
    #[cfg(test)]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for Payload {
    /// As a `String` column's value: its bytes (valid UTF-8: the payload was validated).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(bytes::Bytes::from(String::deserialize(d)?)))
    }
}

/// Copies payloads one after another into shared blocks of [`Self::BLOCK`] bytes (more for a
/// larger payload). A filled block is kept, and used again once every payload in it has been
/// dropped (its batch written): on a backlog, freed blocks would otherwise go back to the
/// kernel with the allocator's heaps and fault in again page by page.
#[derive(Debug, Default)]
pub(crate) struct PayloadArena {
    block: bytes::BytesMut,
    /// Filled blocks, oldest first (their payloads are dropped in about that order).
    filled: std::collections::VecDeque<bytes::BytesMut>,
    /// Blocks started since the last [`Self::trim`].
    started: usize,
}

impl PayloadArena {
    /// A block's size: below the allocator's mmap threshold (`allocator.rs`).
    const BLOCK: usize = 1 << 20;

    /// `text`, copied into the current block.
    pub(crate) fn copy(&mut self, text: &str) -> Payload {
        if self.block.capacity() - self.block.len() < text.len() {
            self.next_block(text.len());
        }
        self.block.extend_from_slice(text.as_bytes());
        Payload(self.block.split().freeze())
    }

    /// Starts a block with room for `len` bytes: the oldest filled block when all its
    /// payloads are gone, else a new one.
    fn next_block(&mut self, len: usize) {
        let full = std::mem::take(&mut self.block);
        if full.capacity() > 0 {
            self.filled.push_back(full);
        }
        self.started += 1;
        if let Some(oldest) = self.filled.front_mut() {
            if len <= Self::BLOCK && oldest.try_reclaim(Self::BLOCK) {
                self.block = self.filled.pop_front().unwrap_or_default();
                return;
            }
        }
        self.block = bytes::BytesMut::with_capacity(Self::BLOCK.max(len));
    }

    /// Keeps at most as many filled blocks as were started since the last call (and two):
    /// called once per flush, so what is kept follows what a flush needs.
    pub(crate) fn trim(&mut self) {
        let keep = self.started + 2;
        while self.filled.len() > keep {
            self.filled.pop_front();
        }
        self.started = 0;
    }

    /// Blocks held: the current one and the filled ones.
    #[cfg(test)]
    fn blocks(&self) -> usize {
        usize::from(self.block.capacity() > 0) + self.filled.len()
    }
}

/// `cases`.
#[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaseRecord {
    pub case_id: Text,
    pub center_id: Text,
    pub window_id: Text,
    pub department: Text,
    pub item_code: Text,
    pub item_name: Text,
    pub item_kind: Text,
    pub status: Text,
    pub submitted_at: Option<u32>,
    pub accepted_at: Option<u32>,
    pub promised_deadline: Option<u32>,
    pub legal_deadline: Option<u32>,
    pub completed_at: Option<u32>,
    pub ended_at: Option<u32>,
    pub outcome: Text,
    pub on_time: u8,
    pub early: u8,
    pub on_site: u8,
    pub overdue: u8,
    pub handling_seconds: Option<i64>,
    pub promised_seconds: Option<i64>,
    pub alert_level: Text,
    pub rating: Option<u8>,
    pub rating_is_default: u8,
    pub rated_at: Option<u32>,
    pub events: u32,
    pub topic: Text,
    pub partition: u32,
    pub version: u64,
    /// 1 while a deadline or working time depends on a year without holiday data (SPEC §2).
    pub calendar_provisional: u8,
}

impl CaseRecord {
    /// The row of a case.
    pub(crate) fn new(row: &CaseRow, syms: &Interner, rules: &Rules, origin: &Origin) -> Self {
        let f = &row.facts;
        let s = |sym| Text::new(syms.resolve(sym));
        Self {
            case_id: row.case_id.clone(),
            center_id: s(f.center),
            window_id: s(f.window),
            department: s(f.department),
            item_code: s(f.item_code),
            item_name: s(row.item_name),
            item_kind: f.item_kind.map(|k| k.as_str()).unwrap_or_default().into(),
            status: Text::const_new(f.status.as_str()),
            submitted_at: f.submitted_at.get().map(datetime),
            accepted_at: f.accepted_at.get().map(datetime),
            promised_deadline: f.promised_deadline.get().map(datetime),
            legal_deadline: f.legal_deadline.get().map(datetime),
            completed_at: f.completed_at.get().map(datetime),
            ended_at: f.ended_at.get().map(datetime),
            outcome: f.outcome.map(|o| o.as_str()).unwrap_or_default().into(),
            on_time: u8::from(f.on_time),
            early: u8::from(f.early),
            on_site: u8::from(f.on_site),
            overdue: u8::from(f.overdue()),
            handling_seconds: f.handling_seconds,
            promised_seconds: f.promised_seconds,
            alert_level: f
                .alert_level(rules)
                .map(|l| l.as_str())
                .unwrap_or_default()
                .into(),
            rating: f.rating.map(|r| r.value),
            rating_is_default: u8::from(f.rating.is_some_and(|r| r.is_default)),
            rated_at: f.rating.map(|r| datetime(r.at)),
            events: row.events,
            topic: Text::new(&origin.topic),
            partition: origin.partition,
            version: 0,
            calendar_provisional: u8::from(f.provisional_year.is_some()),
        }
    }
}

macro_rules! daily_record {
    ($($name:ident $constant:ident),* $(,)?) => {
        /// `window_daily_parts`: one partition's `window_daily` row (the counters of
        /// [`crate::window_counters`]).
        #[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq, Eq)]
        pub(crate) struct DailyRecord {
            pub(crate) day: u16,
            pub(crate) center_id: String,
            pub(crate) window_id: String,
            pub(crate) item_code: String,
            $(pub $name: i64,)*
            pub(crate) topic: String,
            pub(crate) partition: u32,
            pub(crate) version: u64,
        }

        impl DailyRecord {
            /// The row of an aggregate key.
            pub(crate) fn new(key: &DailyKey, counters: &Counters, syms: &Interner, origin: &Origin) -> Self {
                Self {
                    day: key.day.clamp(0, i64::from(u16::MAX)) as u16,
                    center_id: syms.resolve(key.center).to_string(),
                    window_id: syms.resolve(key.window).to_string(),
                    item_code: syms.resolve(key.item_code).to_string(),
                    $($name: counters[counter::$constant as usize],)*
                    topic: origin.topic.clone(),
                    partition: origin.partition,
                    version: 0,
                }
            }

            /// The counters, indexed by [`counter`].
            pub(crate) fn counters(&self) -> Counters {
                [$(self.$name),*]
            }
        }
    };
}

crate::window_counters!(daily_record);

/// `anomalies`.
#[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct AnomalyRecord {
    pub(crate) case_id: String,
    pub(crate) kind: String,
    pub(crate) level: String,
    pub(crate) detected_at: u32,
    pub(crate) revoked: u8,
    pub(crate) revoked_at: Option<u32>,
    pub(crate) center_id: String,
    pub(crate) window_id: String,
    pub(crate) department: String,
    pub(crate) item_code: String,
    pub(crate) alert_id: String,
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) version: u64,
    /// 1, plus one for each earlier revocation of this (case, kind).
    pub(crate) round: u32,
    /// 1 when the revocation is an annulment by a granted appeal (SPEC §9).
    pub(crate) annulled: u8,
}

/// `alerts`: the outbox of webhook delivery.
#[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct AlertRecord {
    pub(crate) alert_id: String,
    pub(crate) case_id: String,
    pub(crate) kind: String,
    pub(crate) level: String,
    pub(crate) center_id: String,
    pub(crate) window_id: String,
    pub(crate) department: String,
    pub(crate) item_code: String,
    pub(crate) item_name: String,
    pub(crate) accepted_at: Option<u32>,
    pub(crate) promised_deadline: Option<u32>,
    pub(crate) legal_deadline: Option<u32>,
    pub(crate) detected_at: u32,
    pub(crate) revoked: u8,
    pub(crate) revoked_at: Option<u32>,
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) version: u64,
    /// 1 when the case's deadlines were guessed for a year without holiday data (SPEC §2).
    pub(crate) calendar_provisional: u8,
    /// 1, plus one for each earlier revocation: every round's raise is delivered.
    pub(crate) round: u32,
    /// 1 when the revocation is an annulment by a granted appeal (SPEC §9).
    pub(crate) annulled: u8,
}

/// The `anomalies` and `alerts` rows of an anomaly change.
pub(crate) fn anomaly_records(
    a: &AnomalyRow,
    syms: &Interner,
    origin: &Origin,
) -> (AnomalyRecord, AlertRecord) {
    let f = &a.case.facts;
    let s = |sym| syms.resolve(sym).to_string();
    let id = alert_id(&a.case.case_id, a.change.kind);
    let revoked = u8::from(a.change.revoked_at.is_some());
    let revoked_at = a.change.revoked_at.map(datetime);
    (
        AnomalyRecord {
            case_id: a.case.case_id.to_string(),
            kind: a.change.kind.as_str().to_string(),
            level: a.change.level.as_str().to_string(),
            detected_at: datetime(a.change.detected_at),
            revoked,
            revoked_at,
            center_id: s(f.center),
            window_id: s(f.window),
            department: s(f.department),
            item_code: s(f.item_code),
            alert_id: id.clone(),
            topic: origin.topic.clone(),
            partition: origin.partition,
            version: 0,
            round: a.change.round,
            annulled: u8::from(a.change.annulled),
        },
        AlertRecord {
            alert_id: id,
            case_id: a.case.case_id.to_string(),
            kind: a.change.kind.as_str().to_string(),
            level: a.change.level.as_str().to_string(),
            center_id: s(f.center),
            window_id: s(f.window),
            department: s(f.department),
            item_code: s(f.item_code),
            item_name: s(a.case.item_name),
            accepted_at: f.accepted_at.get().map(datetime),
            promised_deadline: f.promised_deadline.get().map(datetime),
            legal_deadline: f.legal_deadline.get().map(datetime),
            detected_at: datetime(a.change.detected_at),
            revoked,
            revoked_at,
            topic: origin.topic.clone(),
            partition: origin.partition,
            version: 0,
            calendar_provisional: u8::from(f.provisional_year.is_some()),
            round: a.change.round,
            annulled: u8::from(a.change.annulled),
        },
    )
}

/// `supervision`: the loop of one card (SPEC §9), one row per (case, kind).
#[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct SupervisionRecord {
    pub(crate) case_id: String,
    pub(crate) kind: String,
    pub(crate) center_id: String,
    pub(crate) window_id: String,
    /// '' (no order), `ordered`, `responded`, `closed` or `cancelled`.
    pub(crate) order_state: String,
    pub(crate) ordered_at: Option<u32>,
    pub(crate) ordered_by: String,
    pub(crate) order_note: String,
    /// Working days of the current period (the order's, or the last reopen's).
    pub(crate) response_days: u8,
    pub(crate) response_due: Option<u32>,
    pub(crate) responded_at: Option<u32>,
    pub(crate) responded_by: String,
    pub(crate) response_note: String,
    /// 1 while the order counts as overdue (`supervision_overdue` holds for it).
    pub(crate) response_late: u8,
    /// The earliest response deadline it missed, whether or not that still counts.
    pub(crate) first_missed_deadline: Option<u32>,
    pub(crate) reopens: u16,
    pub(crate) closed_at: Option<u32>,
    pub(crate) closed_by: String,
    pub(crate) close_note: String,
    pub(crate) cancelled_at: Option<u32>,
    /// '' (no appeal), `pending`, `granted` or `rejected`.
    pub(crate) appeal_state: String,
    pub(crate) appealed_at: Option<u32>,
    pub(crate) appealed_by: String,
    pub(crate) appeal_reason: String,
    pub(crate) decided_at: Option<u32>,
    pub(crate) decided_by: String,
    pub(crate) decision_note: String,
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) version: u64,
}

impl SupervisionRecord {
    /// The row of one card's supervision.
    pub(crate) fn new(r: &SupervisionRow, syms: &Interner, origin: &Origin) -> Self {
        let s = &r.supervision;
        let text = |t: &Option<Text>| t.as_deref().unwrap_or_default().to_string();
        let at = |t: crate::core::case::At| t.get().map(datetime);
        let order = s.order.as_ref();
        let current = order.map(|o| o.current());
        let first_late = r.timing.and_then(|t| t.first_late);
        let appeal = s.appeal.as_ref();
        let decision = appeal.and_then(|a| a.decision.as_ref());
        Self {
            case_id: r.case_id.to_string(),
            kind: s.kind.as_str().to_string(),
            center_id: syms.resolve(r.center).to_string(),
            window_id: syms.resolve(r.window).to_string(),
            order_state: order.map_or("", |o| o.state().as_str()).to_string(),
            ordered_at: order.map(|o| datetime(o.ordered_at())),
            ordered_by: order.map_or(String::new(), |o| o.ordered_by.to_string()),
            order_note: order.map_or(String::new(), |o| text(&o.note)),
            response_days: current.map_or(0, |p| p.days),
            response_due: r.timing.map(|t| datetime(t.due)),
            responded_at: current.and_then(|p| at(p.response)),
            responded_by: current.map_or(String::new(), |p| p.responded_by.to_string()),
            response_note: current.map_or(String::new(), |p| text(&p.response_note)),
            response_late: u8::from(first_late.is_some() && r.overdue_holds),
            first_missed_deadline: first_late.map(datetime),
            reopens: order.map_or(0, |o| {
                (o.periods.len() - 1).min(usize::from(u16::MAX)) as u16
            }),
            closed_at: order.and_then(|o| at(o.closed_at)),
            closed_by: order.map_or(String::new(), |o| o.closed_by.to_string()),
            close_note: order.map_or(String::new(), |o| text(&o.close_note)),
            cancelled_at: order.and_then(|o| at(o.cancelled_at)),
            appeal_state: match (appeal, decision) {
                (None, _) => "",
                (Some(_), None) => "pending",
                (Some(_), Some(d)) if d.granted => "granted",
                (Some(_), Some(_)) => "rejected",
            }
            .to_string(),
            appealed_at: appeal.map(|a| datetime(a.at)),
            appealed_by: appeal.map_or(String::new(), |a| a.by.to_string()),
            appeal_reason: appeal.map_or(String::new(), |a| text(&a.reason)),
            decided_at: decision.map(|d| datetime(d.at)),
            decided_by: decision.map_or(String::new(), |d| d.by.to_string()),
            decision_note: decision.map_or(String::new(), |d| text(&d.note)),
            topic: origin.topic.clone(),
            partition: origin.partition,
            version: 0,
        }
    }
}

/// `dead_letters`.
#[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct DeadLetterRecord {
    pub(crate) origin: String,
    pub(crate) position: u64,
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) file: String,
    pub(crate) line: u64,
    pub(crate) reason: String,
    pub(crate) raw: String,
    pub(crate) received_at: u32,
    pub(crate) version: u64,
}

/// `case_event_offsets`: where a case's events are (SPEC §7: an evicted case is restored by a
/// lookup on `case_id`), one row per case and flush of its partition, built by
/// [`CaseIndex`] as the events are applied.
#[derive(Debug, Clone, Row, Serialize)]
pub(crate) struct CaseOffsetsRecord {
    pub(crate) case_id: Text,
    pub(crate) topic: Text,
    pub(crate) partition: u32,
    /// The first of `offsets` (the row's key with the case and partition).
    pub(crate) first_offset: u64,
    /// The offsets of the case's events in the flush, in log order.
    pub(crate) offsets: OffsetList,
    pub(crate) version: u64,
}

/// A row's offsets: a range of one list shared by all rows of a flush, so a flush's index costs
/// one allocation, not one per case (the runtime's threads drop written rows; see [`Payload`]).
#[derive(Debug, Clone)]
pub(crate) struct OffsetList {
    all: std::sync::Arc<[u64]>,
    range: std::ops::Range<usize>,
}

impl OffsetList {
    /// The offsets.
    pub(crate) fn as_slice(&self) -> &[u64] {
        &self.all[self.range.clone()]
    }
}

impl Serialize for OffsetList {
    /// As an `Array(UInt64)`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.as_slice())
    }
}

/// Builds one partition's `case_event_offsets` rows of a flush: the engine's case slot of each
/// applied event finds the case's row without a second lookup by id.
#[derive(Debug, Default)]
pub(crate) struct CaseIndex {
    /// Per row of the flush: its case id, first offset and engine slot.
    rows: Vec<(Text, u64, u32)>,
    /// Per applied event: its row and offset (the rows' lists are laid out at `drain`).
    entries: Vec<(u32, u64)>,
    /// By case slot: 1 + the index of the slot's row in the flush, 0 for none.
    row_of_slot: Vec<u32>,
    /// The engine's eviction count `row_of_slot` was made at.
    evictions: u64,
}

impl CaseIndex {
    /// Adds the event at `offset` of case `case_id`, in engine slot `case` as of the engine's
    /// `evictions` count (after an eviction a slot may hold another case: the slots are
    /// forgotten, and a case seen again in the flush gets a second row).
    pub(crate) fn add(&mut self, (case, evictions): (CaseRef, u64), case_id: &Text, offset: u64) {
        if evictions != self.evictions {
            self.row_of_slot.fill(0);
            self.evictions = evictions;
        }
        let slot = case.0 as usize;
        if slot >= self.row_of_slot.len() {
            self.row_of_slot.resize(slot + 1, 0);
        }
        let row = match self.row_of_slot[slot] {
            0 => {
                self.rows.push((case_id.clone(), offset, case.0));
                self.row_of_slot[slot] = self.rows.len() as u32;
                self.rows.len() - 1
            }
            known => known as usize - 1,
        };
        debug_assert_eq!(self.rows[row].0, *case_id);
        self.entries.push((row as u32, offset));
    }

    /// The rows of the events added since the last drain, each with its offsets, for
    /// `origin`; the next flush starts new rows.
    pub(crate) fn drain(&mut self, origin: &Origin) -> Vec<CaseOffsetsRecord> {
        // Row i's offsets are all[starts[i]..starts[i + 1]], in the order they were added.
        let mut starts = vec![0usize; self.rows.len() + 1];
        for &(row, _) in &self.entries {
            starts[row as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut all = vec![0u64; self.entries.len()];
        for &(row, offset) in &self.entries {
            let at = &mut next[row as usize];
            all[*at] = offset;
            *at += 1;
        }
        let all: std::sync::Arc<[u64]> = all.into();
        let topic = Text::new(&origin.topic);
        let rows = self
            .rows
            .drain(..)
            .zip(starts.windows(2))
            .map(|((case_id, first_offset, slot), range)| {
                // Only the slots of this flush's rows are cleared, not the whole table.
                self.row_of_slot[slot as usize] = 0;
                CaseOffsetsRecord {
                    case_id,
                    topic: topic.clone(),
                    partition: origin.partition,
                    first_offset,
                    offsets: OffsetList {
                        all: all.clone(),
                        range: range[0]..range[1],
                    },
                    version: 0,
                }
            })
            .collect();
        self.entries.clear();
        rows
    }
}

/// `checkpoints`.
#[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct CheckpointRecord {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) next_offset: u64,
    pub(crate) engine_time: u32,
    pub(crate) version: u64,
    /// The writer's ownership epoch of the partition.
    pub(crate) epoch: u64,
    /// The snapshot a takeover starts from (its epoch and offset; offset 0: none).
    pub(crate) snapshot_epoch: u64,
    pub(crate) snapshot_offset: u64,
}

/// `snapshots`: one piece of a partition's engine state.
#[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct SnapshotRecord {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) epoch: u64,
    pub(crate) next_offset: u64,
    pub(crate) chunk: u32,
    pub(crate) chunks: u32,
    pub(crate) format: u32,
    pub(crate) cases: u64,
    #[serde(with = "serde_bytes")]
    pub(crate) data: Vec<u8>,
    pub(crate) version: u64,
}

/// The size of a snapshot piece: a row ClickHouse and the client hold comfortably.
pub(crate) const SNAPSHOT_CHUNK_BYTES: usize = 4 << 20;

impl SnapshotRecord {
    /// The rows of one encoded snapshot.
    pub(crate) fn pieces(
        origin: &Origin,
        epoch: u64,
        next_offset: u64,
        cases: u64,
        bytes: &[u8],
    ) -> Vec<Self> {
        let pieces: Vec<&[u8]> = bytes.chunks(SNAPSHOT_CHUNK_BYTES).collect();
        let chunks = pieces.len() as u32;
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, data)| Self {
                topic: origin.topic.clone(),
                partition: origin.partition,
                epoch,
                next_offset,
                chunk: i as u32,
                chunks,
                format: crate::core::engine::snapshot::FORMAT,
                cases,
                data: data.to_vec(),
                version: 0,
            })
            .collect()
    }
}

/// Row versions fenced by ownership epochs (SPEC §7, "Writes are fenced"): every row a flush
/// writes has the version `2^61 + epoch * 2^40 + counter`, where `epoch` is its writer's epoch
/// of the row's partition and `counter` a per-process clock in milliseconds since 2020 that
/// never repeats (40 bits: until 2054). A later epoch outranks every version of an earlier one,
/// and 2^61 is above every version written before epochs (wall-clock nanoseconds, until 2043).
pub(crate) fn fenced_version(epoch: u64, counter: u64) -> u64 {
    const BASE: u64 = 1 << 61;
    const COUNTER_BITS: u32 = 40;
    let counter = counter & ((1 << COUNTER_BITS) - 1);
    // 14.7 million epochs fit; past them versions stop growing rather than wrap.
    epoch
        .checked_mul(1 << COUNTER_BITS)
        .and_then(|e| e.checked_add(BASE))
        .and_then(|e| e.checked_add(counter))
        .unwrap_or(u64::MAX)
}

/// The one list of the tables a flush writes: `field: RowType => "table"`. The data tables
/// come first and are written concurrently; `checkpoints` is always last (written only once
/// every data table is in). `Batch` and the writer are generated from it.
#[macro_export]
macro_rules! batch_tables {
    ($then:ident) => {
        $then! {
            data: {
                events: EventRecord => "events",
                case_offsets: CaseOffsetsRecord => "case_event_offsets",
                dead_letters: DeadLetterRecord => "dead_letters",
                cases: CaseRecord => "cases",
                daily: DailyRecord => "window_daily_parts",
                anomalies: AnomalyRecord => "anomalies",
                alerts: AlertRecord => "alerts",
                supervision: SupervisionRecord => "supervision",
                snapshots: SnapshotRecord => "snapshots",
            }
            last: checkpoints: CheckpointRecord => "checkpoints",
        }
    };
}

macro_rules! batch {
    (data: { $($field:ident: $row:ident => $table:literal,)* } last: $last:ident: $last_row:ident => $last_table:literal,) => {
        /// Everything one flush writes; the checkpoints go last.
        #[derive(Debug, Default, Clone)]
        pub(crate) struct Batch {
            $(pub $field: Vec<$row>,)*
            pub $last: Vec<$last_row>,
        }

        impl Batch {
            /// Moves another batch's rows (checkpoints included) to the end of this one's;
            /// the other keeps its vectors for its next rows (see [`Self::recycle`]).
            pub(crate) fn move_from(&mut self, b: &mut Batch) {
                $(move_rows(&mut self.$field, &mut b.$field);)*
                move_rows(&mut self.$last, &mut b.$last);
            }

            /// Drops the rows and keeps the vectors for the next batch (with room for as
            /// many rows as they held, so one backlog does not hold memory for good): a fresh
            /// vector of a batch's size faults in page by page, a kept one does not.
            pub(crate) fn recycle(&mut self) {
                $(recycle(&mut self.$field);)*
                recycle(&mut self.$last);
            }

            /// Rows in the batch.
            pub(crate) fn rows(&self) -> usize {
                $(self.$field.len() +)* self.$last.len()
            }

            /// Stamps every row with the flush's version: `counter` fenced by the epoch of
            /// the row's partition, as its checkpoint in the batch says (a batch holds one
            /// topic, and every row of it comes with its partition's checkpoint).
            pub(crate) fn set_version(&mut self, counter: u64) {
                let epochs: Vec<(u32, u64)> =
                    self.$last.iter().map(|c| (c.partition, c.epoch)).collect();
                let version = |partition: u32| {
                    let epoch = epochs.iter().find(|e| e.0 == partition).map_or(0, |e| e.1);
                    fenced_version(epoch, counter)
                };
                $(self.$field.iter_mut().for_each(|r| r.version = version(r.partition));)*
                self.$last.iter_mut().for_each(|r| r.version = version(r.partition));
            }
        }

    };
}

crate::batch_tables!(batch);

/// `rows` emptied, keeping room for as many rows as it held.
fn recycle<T>(rows: &mut Vec<T>) {
    let held = rows.len();
    rows.clear();
    rows.shrink_to(held);
}

/// `from`'s rows moved to the end of `to`; `from` is recycled.
fn move_rows<T>(to: &mut Vec<T>, from: &mut Vec<T>) {
    let held = from.len();
    to.append(from);
    from.shrink_to(held);
}

impl Batch {
    /// Adds the engine's drained changes for one origin.
    pub(crate) fn add_changes(
        &mut self,
        changes: &crate::core::engine::Changes,
        syms: &Interner,
        rules: &Rules,
        origin: &Origin,
    ) {
        self.cases.extend(
            changes
                .cases
                .iter()
                .map(|r| CaseRecord::new(r, syms, rules, origin)),
        );
        self.supervision.extend(
            changes
                .supervision
                .iter()
                .map(|r| SupervisionRecord::new(r, syms, origin)),
        );
        self.daily.extend(
            changes
                .window_daily
                .iter()
                .map(|(k, c)| DailyRecord::new(k, c, syms, origin)),
        );
        // One row per (case, kind) and flush: the last change wins (rows of one flush share a
        // version, and ReplacingMergeTree does not order equal versions).
        let mut last: std::collections::HashMap<(&str, AnomalyKind), usize> =
            std::collections::HashMap::new();
        for (i, a) in changes.anomalies.iter().enumerate() {
            last.insert((a.case.case_id.as_str(), a.change.kind), i);
        }
        let mut keep: Vec<usize> = last.values().copied().collect();
        keep.sort_unstable();
        for i in keep {
            let (anomaly, alert) = anomaly_records(&changes.anomalies[i], syms, origin);
            self.anomalies.push(anomaly);
            self.alerts.push(alert);
        }
        // A case row written with new attributes (a late acceptance can change its window)
        // rewrites the rows of its holding anomalies, so `anomalies` never shows a stale window.
        for row in &changes.cases {
            for kind in AnomalyKind::ALL {
                let Some(detected_at) = row.facts.anomalies.get(kind) else {
                    continue;
                };
                if last.contains_key(&(row.case_id.as_str(), kind)) {
                    continue;
                }
                let change = crate::core::engine::AnomalyChange {
                    case: crate::core::engine::CaseRef(0),
                    kind,
                    level: rules.level(kind),
                    detected_at,
                    revoked_at: None,
                    round: row.rounds[kind as usize],
                    annulled: false,
                };
                let (anomaly, _) = anomaly_records(
                    &AnomalyRow {
                        case: row.clone(),
                        change,
                    },
                    syms,
                    origin,
                );
                self.anomalies.push(anomaly);
            }
        }
    }
}

impl crate::sinks::clickhouse::writer::MonthPartitioned for EventRecord {
    fn month(&self) -> Option<u32> {
        let date = chrono::DateTime::from_timestamp(i64::from(self.occurred_at), 0)?;
        Some(date.year() as u32 * 12 + date.month0())
    }
}

impl crate::sinks::clickhouse::writer::MonthPartitioned for DailyRecord {
    fn month(&self) -> Option<u32> {
        let date = crate::core::calendar::date_of_day(i64::from(self.day));
        Some(date.year() as u32 * 12 + date.month0())
    }
}

impl crate::sinks::clickhouse::writer::MonthPartitioned for DeadLetterRecord {}
impl crate::sinks::clickhouse::writer::MonthPartitioned for CaseRecord {}
impl crate::sinks::clickhouse::writer::MonthPartitioned for AnomalyRecord {}
impl crate::sinks::clickhouse::writer::MonthPartitioned for AlertRecord {}
impl crate::sinks::clickhouse::writer::MonthPartitioned for SupervisionRecord {}
impl crate::sinks::clickhouse::writer::MonthPartitioned for CheckpointRecord {}
impl crate::sinks::clickhouse::writer::MonthPartitioned for SnapshotRecord {}
impl crate::sinks::clickhouse::writer::MonthPartitioned for CaseOffsetsRecord {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_copied_into_shared_blocks_keep_their_text() {
        let mut arena = PayloadArena::default();
        // 3.6 MiB in all: the copies cross several blocks, and one payload is a block of its own.
        let texts: Vec<String> = (0..12_000)
            .map(|i| {
                format!(
                    "{{\"event_id\":\"E{i}\",\"pad\":\"{}\"}}",
                    "x".repeat(i % 600)
                )
            })
            .chain(std::iter::once("y".repeat(PayloadArena::BLOCK + 1)))
            .chain((0..10).map(|i| format!("{{\"after\":{i}}}")))
            .collect();
        let payloads: Vec<Payload> = texts.iter().map(|t| arena.copy(t)).collect();
        for (text, payload) in texts.iter().zip(&payloads) {
            assert_eq!(payload.as_bytes(), text.as_bytes());
        }
        // Dropping some rows leaves the others intact (blocks are shared).
        let kept: Vec<&Payload> = payloads.iter().step_by(7).collect();
        let kept: Vec<Payload> = kept.into_iter().cloned().collect();
        drop(payloads);
        for (text, payload) in texts.iter().step_by(7).zip(&kept) {
            assert_eq!(payload.as_bytes(), text.as_bytes());
        }
    }

    #[test]
    fn blocks_are_used_again_once_their_payloads_are_dropped() {
        let mut arena = PayloadArena::default();
        let text = "x".repeat(1000);
        // Three blocks' worth, written and dropped as a flush would.
        let batch: Vec<Payload> = (0..3 * 1048).map(|_| arena.copy(&text)).collect();
        let first = batch[0].0.as_ptr();
        assert_eq!(arena.blocks(), 3);
        drop(batch);
        let again: Vec<Payload> = (0..1048).map(|_| arena.copy(&text)).collect();
        assert_eq!(again[0].0.as_ptr(), first, "the first block, used again");
        assert_eq!(arena.blocks(), 3, "no new block");
        assert!(again.iter().all(|p| p.as_bytes() == text.as_bytes()));
        // A block still referred to is not reused.
        let kept: Vec<Payload> = (0..3 * 1048).map(|_| arena.copy(&text)).collect();
        assert!(arena.blocks() > 3);
        assert!(again.iter().all(|p| p.as_bytes() == text.as_bytes()));
        drop(kept);
        // Trimming keeps what a flush needs.
        arena.trim();
        arena.trim();
        assert!(arena.blocks() <= 3, "{}", arena.blocks());
    }

    #[test]
    fn moved_and_recycled_batches_keep_their_vectors_for_as_many_rows() {
        let checkpoint = |partition: u32| CheckpointRecord {
            topic: "t".into(),
            partition,
            next_offset: 1,
            engine_time: 0,
            version: 0,
            epoch: 0,
            snapshot_epoch: 0,
            snapshot_offset: 0,
        };
        let mut pending = Batch::default();
        pending.checkpoints.extend((0..100).map(checkpoint));
        let mut batch = Batch::default();
        batch.checkpoints.push(checkpoint(7));
        batch.move_from(&mut pending);
        assert_eq!(batch.checkpoints.len(), 101);
        assert_eq!(batch.checkpoints[0].partition, 7, "appended after its rows");
        assert!(pending.checkpoints.is_empty());
        assert_eq!(pending.checkpoints.capacity(), 100);
        batch.recycle();
        assert!(batch.checkpoints.is_empty());
        assert_eq!(batch.checkpoints.capacity(), 101);
        batch.recycle();
        assert_eq!(
            batch.checkpoints.capacity(),
            0,
            "nothing held, nothing kept"
        );
    }

    #[test]
    fn a_payload_serializes_as_its_text_would() {
        let text = "{\"note\":\"窗口 ✓\"}";
        let payload = PayloadArena::default().copy(text);
        // RowBinary writes bytes and strings alike (a length, then the bytes), as `csv` does.
        assert_eq!(as_csv(&payload), as_csv(&text));
        let back: Payload = serde_json::from_str(&serde_json::to_string(text).unwrap()).unwrap();
        assert_eq!(
            back, payload,
            "read back as the String column it is stored in"
        );
    }

    #[test]
    fn the_case_index_has_a_row_per_case_with_its_offsets_in_log_order() {
        let origin = Origin {
            topic: "t".into(),
            partition: 1,
        };
        let mut index = CaseIndex::default();
        let mut add = |slot: u32, evictions: u64, case: &str, offset: u64| {
            index.add((CaseRef(slot), evictions), &Text::new(case), offset)
        };
        add(5, 0, "A", 3);
        add(0, 0, "B", 4);
        add(5, 0, "A", 7);
        // Slot 5 evicted and given to case C within the flush: a row of its own, and B's
        // next event a second row (the slots were forgotten).
        add(5, 1, "C", 8);
        add(0, 1, "B", 9);
        add(5, 1, "C", 10);
        let rows = index.drain(&origin);
        let got: Vec<(&str, u32, u64, &[u64])> = rows
            .iter()
            .map(|r| {
                let offsets = r.offsets.as_slice();
                (r.case_id.as_str(), r.partition, r.first_offset, offsets)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("A", 1, 3, &[3, 7][..]),
                ("B", 1, 4, &[4][..]),
                ("C", 1, 8, &[8, 10][..]),
                ("B", 1, 9, &[9][..]),
            ]
        );
        assert_eq!(as_csv(&rows[2].offsets), "8,10\n", "a sequence");
        // The next flush starts new rows.
        index.add((CaseRef(5), 1), &Text::new("C"), 12);
        index.add((CaseRef(0), 1), &Text::new("D"), 13);
        let next = index.drain(&origin);
        let got: Vec<(&str, &[u64])> = next
            .iter()
            .map(|r| (r.case_id.as_str(), r.offsets.as_slice()))
            .collect();
        assert_eq!(got, vec![("C", &[12][..]), ("D", &[13][..])]);
        assert!(index.drain(&origin).is_empty());
    }

    fn as_csv<T: Serialize>(value: &T) -> String {
        let mut w = csv::Writer::from_writer(vec![]);
        w.serialize([value]).unwrap();
        String::from_utf8(w.into_inner().unwrap()).unwrap()
    }
}
