//! The pipeline: one `PartitionProcessor` per source partition (a Kafka partition, or a
//! replayed file), turning raw messages into engine input and engine output into ClickHouse
//! batches that end with a checkpoint.
//!
//! Exactly-once effect: every applied event is stored in `events` with its (topic, partition,
//! offset); a partition's checkpoint is written after all rows of a flush. A processor taking a
//! partition over rebuilds its engine by re-applying the stored events below the checkpoint
//! (never from local disk); events delivered again after that are duplicates by event id and
//! change nothing, and every output row is an absolute value, so rewriting it is harmless.

pub(crate) mod baseline;
pub(crate) mod consumer;
pub(crate) mod flush;
pub(crate) mod kafka;
mod rebalance;
pub(crate) mod replay;
pub(crate) mod service;
pub(crate) mod snapshots;

use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Instant as StdInstant;

use crate::core::engine::{ApplyOutcome, Engine};
use crate::core::event::{event_text, parse_event_text, Reason};
use crate::core::rules::AnomalyKind;
use crate::sinks::clickhouse::rows::{
    datetime, AlertRecord, AnomalyRecord, Batch, CaseIndex, CheckpointRecord, DeadLetterRecord,
    EventRecord, Origin, PayloadArena, SnapshotRecord,
};
use snapshots::{SnapshotPolicy, SnapshotRef};

/// A clock that never repeats a value: `now()`, or one more than the last value when the
/// clock has not moved (or ran back).
pub(crate) struct VersionClock {
    last: AtomicU64,
    now: fn() -> u64,
}

impl VersionClock {
    /// A clock reading `now`.
    pub(crate) const fn new(now: fn() -> u64) -> Self {
        Self {
            last: AtomicU64::new(0),
            now,
        }
    }

    /// The next value.
    pub(crate) fn next(&self) -> u64 {
        let now = (self.now)();
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let v = now.max(prev + 1);
            match self
                .last
                .compare_exchange(prev, v, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return v,
                Err(p) => prev = p,
            }
        }
    }
}

fn wall_nanos() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)).unwrap_or(0)
}

/// Milliseconds since 2020-01-01 UTC.
fn millis_since_2020() -> u64 {
    const Y2020_MILLIS: i64 = 1_577_836_800_000;
    u64::try_from(chrono::Utc::now().timestamp_millis() - Y2020_MILLIS).unwrap_or(0)
}

/// Versions of rows outside the partitions' flushes (the dispatcher's outbox marks and
/// delivery state): nanoseconds of the wall clock. A restarted process writes later versions
/// than the one before it (clocks do not run back by more than the restart takes).
pub(crate) static VERSIONS: VersionClock = VersionClock::new(wall_nanos);

/// The counter part of a flush's fenced row versions (see
/// [`crate::sinks::clickhouse::rows::fenced_version`]): milliseconds, never repeating.
pub(crate) static FLUSH_COUNTER: VersionClock = VersionClock::new(millis_since_2020);

/// What happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handled {
    Applied,
    Duplicate,
    DeadLetter(Reason),
    /// The case had been evicted; the caller restores it and hands the message in again.
    Evicted,
}

/// One partition's engine and the rows it has produced since its last flush.
pub(crate) struct PartitionProcessor {
    pub(crate) origin: Origin,
    pub(crate) engine: Engine,
    /// Rows of applied events and dead letters since the last drain.
    pending: Batch,
    /// Offset of the next message to read (the checkpoint after a drain).
    pub(crate) next_offset: u64,
    /// Offset from which messages count (below it they were applied before a takeover).
    pub(crate) checkpoint: u64,
    /// Whether the origin is a file (positions are line numbers).
    file: Option<String>,
    /// Payload bytes handed in since the last drain.
    pending_bytes: usize,
    /// Where the pending events' payloads are copied.
    payloads: PayloadArena,
    /// The pending events' rows of the case index, by case.
    case_index: CaseIndex,
    /// More than `pipeline.catch_up_lag` messages behind the log end (SPEC §2): engine time
    /// follows the events. A partition starts catching up until its lag is known.
    pub(crate) catching_up: bool,
    /// This processor's ownership epoch of the partition (claimed at takeover).
    pub(crate) epoch: u64,
    /// The snapshot the checkpoints refer to.
    pub(crate) snapshot: SnapshotRef,
    snapshot_policy: SnapshotPolicy,
    /// Messages handed in since the last snapshot (or re-applied at takeover without one).
    since_snapshot: u64,
    last_snapshot: StdInstant,
}

impl PartitionProcessor {
    /// A processor with an empty engine starting at `checkpoint`.
    pub(crate) fn new(
        origin: Origin,
        engine: Engine,
        checkpoint: u64,
        file: Option<String>,
    ) -> Self {
        Self {
            origin,
            engine,
            pending: Batch::default(),
            payloads: PayloadArena::default(),
            case_index: CaseIndex::default(),
            next_offset: checkpoint,
            checkpoint,
            file,
            pending_bytes: 0,
            catching_up: true,
            epoch: 0,
            snapshot: SnapshotRef::default(),
            snapshot_policy: SnapshotPolicy::OFF,
            since_snapshot: 0,
            last_snapshot: StdInstant::now(),
        }
    }

    /// Handles the message at `offset`. `wall_now` is the clock of `future_timestamp`; `key`
    /// is a Kafka message's key, which must be the event's `case_id` (None: a file line).
    pub(crate) fn handle(
        &mut self,
        offset: u64,
        raw: &[u8],
        wall_now: i64,
        key: Option<&[u8]>,
    ) -> Handled {
        self.next_offset = self.next_offset.max(offset + 1);
        self.pending_bytes += raw.len();
        self.since_snapshot += 1;
        let parsed = event_text(raw)
            .and_then(|text| Ok((text, parse_event_text(text, wall_now)?)))
            .and_then(|(text, event)| match key {
                Some(k) if k != event.case_id.as_bytes() => Err(Reason::KeyMismatch),
                _ => Ok((text, event)),
            });
        let (text, event) = match parsed {
            Ok(parsed) => parsed,
            Err(reason) => {
                self.pending
                    .dead_letters
                    .push(self.dead_letter(offset, raw, reason, wall_now));
                return Handled::DeadLetter(reason);
            }
        };
        match self.engine.apply(&event) {
            ApplyOutcome::Applied => {
                self.case_index.add(
                    (self.engine.last_applied(), self.engine.stats().evicted),
                    &event.case_id,
                    offset,
                );
                self.pending.events.push(EventRecord::new(
                    &event,
                    self.payloads.copy(text),
                    &self.origin,
                    offset,
                ));
                Handled::Applied
            }
            ApplyOutcome::Duplicate => Handled::Duplicate,
            ApplyOutcome::Evicted => Handled::Evicted,
            ApplyOutcome::InvalidAction => {
                let reason = Reason::InvalidAction;
                self.pending
                    .dead_letters
                    .push(self.dead_letter(offset, raw, reason, wall_now));
                Handled::DeadLetter(reason)
            }
        }
    }

    fn dead_letter(
        &self,
        offset: u64,
        raw: &[u8],
        reason: Reason,
        wall_now: i64,
    ) -> DeadLetterRecord {
        let (origin, file, line, topic, partition, kafka_offset) = match &self.file {
            Some(f) => (format!("file:{f}"), f.clone(), offset, String::new(), 0, 0),
            None => (
                format!("{}/{}", self.origin.topic, self.origin.partition),
                String::new(),
                0,
                self.origin.topic.clone(),
                self.origin.partition,
                offset,
            ),
        };
        DeadLetterRecord {
            origin,
            position: offset,
            topic,
            partition,
            offset: kafka_offset,
            file,
            line,
            reason: reason.to_string(),
            raw: String::from_utf8_lossy(raw).into_owned(),
            received_at: datetime(wall_now),
            version: 0,
        }
    }

    /// Everything to write since the last drain, ending with this partition's checkpoint.
    pub(crate) fn drain(&mut self) -> Batch {
        let mut batch = Batch::default();
        self.drain_into(&mut batch);
        batch
    }

    /// [`Self::drain`] into the end of `batch` (the pending rows' vectors are kept for the
    /// next ones).
    pub(crate) fn drain_into(&mut self, batch: &mut Batch) {
        batch.move_from(&mut self.pending);
        batch
            .case_offsets
            .append(&mut self.case_index.drain(&self.origin));
        self.payloads.trim();
        self.pending_bytes = 0;
        let changes = self.engine.take_changes();
        let rules = self.engine.rules().clone();
        batch.add_changes(&changes, self.engine.syms(), &rules, &self.origin);
        batch.snapshots.append(&mut self.snapshot_if_due());
        batch.checkpoints.push(CheckpointRecord {
            topic: self.origin.topic.clone(),
            partition: self.origin.partition,
            next_offset: self.next_offset,
            engine_time: datetime(self.engine.now()),
            version: 0,
            epoch: self.epoch,
            snapshot_epoch: self.snapshot.epoch,
            snapshot_offset: self.snapshot.offset,
        });
        self.checkpoint = self.next_offset;
    }

    /// The rows of a snapshot of the engine as drained (nothing pending), when one is due;
    /// the checkpoint drained with it refers to it.
    fn snapshot_if_due(&mut self) -> Vec<SnapshotRecord> {
        let fresh = self.snapshot
            != SnapshotRef {
                epoch: self.epoch,
                offset: self.next_offset,
            };
        if !fresh
            || self.next_offset == 0
            || !self
                .snapshot_policy
                .due(self.since_snapshot, self.last_snapshot)
        {
            return Vec::new();
        }
        let started = StdInstant::now();
        let state = self.engine.export_snapshot();
        let bytes = match state.encode() {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(partition = self.origin.partition, error = %e, "cannot encode a state snapshot; the takeover re-applies more events");
                return Vec::new();
            }
        };
        self.snapshot = SnapshotRef {
            epoch: self.epoch,
            offset: self.next_offset,
        };
        self.since_snapshot = 0;
        self.last_snapshot = StdInstant::now();
        tracing::info!(
            partition = self.origin.partition,
            offset = self.next_offset,
            cases = state.case_count(),
            bytes = bytes.len(),
            seconds = started.elapsed().as_secs_f64(),
            "state snapshot taken"
        );
        SnapshotRecord::pieces(
            &self.origin,
            self.epoch,
            self.next_offset,
            state.case_count() as u64,
            &bytes,
        )
    }

    /// Events handed in since the last drain.
    pub(crate) fn pending_events(&self) -> usize {
        self.pending.events.len() + self.pending.dead_letters.len()
    }

    /// Payload bytes handed in since the last drain.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }
}

/// A partition's checkpoint as stored.
#[derive(Debug, Clone, Copy, Default, ::clickhouse::Row, serde::Deserialize)]
struct StoredCheckpoint {
    next_offset: u64,
    engine_time: u32,
    version: u64,
    epoch: u64,
    snapshot_epoch: u64,
    snapshot_offset: u64,
}

/// Takes a partition over: claims its next ownership epoch, restores its engine from the
/// snapshot its checkpoint refers to (none, or one that cannot be read: from nothing) and the
/// stored events after it up to the checkpoint, then repairs what an unfinished flush may have
/// left behind (see `repair_unfinished_flush`).
pub(crate) async fn rebuild(
    client: &::clickhouse::Client,
    origin: Origin,
    mut engine: Engine,
    file: Option<String>,
    policy: SnapshotPolicy,
) -> Result<PartitionProcessor, ::clickhouse::error::Error> {
    let stored: StoredCheckpoint = client
        .query("SELECT next_offset, toUInt32(engine_time) AS engine_time, version, epoch, snapshot_epoch, snapshot_offset FROM checkpoints FINAL WHERE topic = ? AND partition = ?")
        .bind(&origin.topic)
        .bind(origin.partition)
        .fetch_optional()
        .await?
        .unwrap_or_default();
    let epoch = snapshots::claim_epoch(client, &origin, stored.epoch).await?;
    let checkpoint = stored.next_offset;
    let mut snapshot = SnapshotRef::default();
    let mut reapplied = 0;
    if checkpoint > 0 {
        let referred = SnapshotRef {
            epoch: stored.snapshot_epoch,
            offset: stored.snapshot_offset.min(checkpoint),
        };
        if let Some(state) = snapshots::load(client, &origin, referred).await? {
            engine.import_snapshot(&state);
            snapshot = referred;
        }
        reapplied = snapshots::reapply_stored_events(
            client,
            &origin,
            &mut engine,
            snapshot.offset,
            checkpoint,
        )
        .await?;
        // The rows at the checkpoint were computed at its engine time (the wall clock of then,
        // under the live clock): the rebuilt state must be that one, or an anomaly raised by
        // the clock before the checkpoint would never be revoked by a later event.
        engine.advance_to(i64::from(stored.engine_time));
        // Their rows were written before the checkpoint: nothing to write again.
        engine.take_changes();
        seed_rounds(client, &origin, &mut engine).await?;
    }
    // Snapshots nobody refers to now (a dead consumer's, written ahead of its checkpoint, or
    // one that could not be read).
    snapshots::drop_all_but(client, &origin, snapshot).await;
    let mut processor = PartitionProcessor::new(origin, engine, checkpoint, file);
    processor.epoch = epoch;
    processor.snapshot = snapshot;
    processor.snapshot_policy = policy;
    // Many events re-applied: the next flush writes a snapshot, so the next takeover does not.
    processor.since_snapshot = reapplied;
    repair_unfinished_flush(client, &mut processor, stored.version).await?;
    Ok(processor)
}

/// The rounds the partition's alerts reached before the takeover: the replayed events may
/// revoke fewer cards than the clock did, and a round must never go back (SPEC §4, "Rounds").
async fn seed_rounds(
    client: &::clickhouse::Client,
    origin: &Origin,
    engine: &mut Engine,
) -> Result<(), ::clickhouse::error::Error> {
    let rows: Vec<(String, String, u32, u8)> = client
        .query("SELECT case_id, kind, round, revoked FROM alerts FINAL WHERE topic = ? AND partition = ? AND (round > 1 OR revoked = 1)")
        .bind(&origin.topic)
        .bind(origin.partition)
        .fetch_all()
        .await?;
    for (case_id, kind, round, revoked) in rows {
        if let Some(kind) = AnomalyKind::parse(&kind) {
            let revocations =
                (round.saturating_sub(1) + u32::from(revoked)).min(u32::from(u16::MAX)) as u16;
            engine.ensure_revocations(&case_id, kind, revocations);
        }
    }
    Ok(())
}

/// A flush interrupted after some of its rows were written leaves rows (versions above the
/// partition's checkpoint) computed from events that will be read again, possibly in another
/// interleaving with the clock. Every such row is written again from the rebuilt state at the
/// next flush: aggregate rows and case rows with their current values, and anomalies (and
/// their alerts) the rebuilt state does not hold as revoked. Whatever the re-read events then
/// change is written after that, with later versions.
async fn repair_unfinished_flush(
    client: &::clickhouse::Client,
    p: &mut PartitionProcessor,
    checkpoint_version: u64,
) -> Result<(), ::clickhouse::error::Error> {
    let (topic, partition) = (p.origin.topic.clone(), p.origin.partition);
    let daily: Vec<(i64, String, String, String)> = client
        .query("SELECT DISTINCT toInt64(toUInt16(day)), center_id, window_id, item_code FROM window_daily_parts WHERE topic = ? AND partition = ? AND version > ?")
        .bind(&topic)
        .bind(partition)
        .bind(checkpoint_version)
        .fetch_all()
        .await?;
    for (day, center, window, item) in &daily {
        p.engine.touch_daily(*day, center, window, item);
    }
    let cases: Vec<String> = client
        .query(
            "SELECT DISTINCT case_id FROM cases WHERE topic = ? AND partition = ? AND version > ?",
        )
        .bind(&topic)
        .bind(partition)
        .bind(checkpoint_version)
        .fetch_all()
        .await?;
    for case_id in &cases {
        p.engine.touch_case(case_id);
    }
    revoke_unheld_rows(client, p, checkpoint_version).await?;
    if !daily.is_empty() || !cases.is_empty() {
        tracing::info!(
            topic,
            partition,
            daily = daily.len(),
            cases = cases.len(),
            "rows of an unfinished flush found: they are written again from the rebuilt state"
        );
    }
    Ok(())
}

/// The anomaly and alert rows of an unfinished flush: rewritten when the rebuilt state holds
/// them (their case is touched), queued as revoked when it does not.
async fn revoke_unheld_rows(
    client: &::clickhouse::Client,
    p: &mut PartitionProcessor,
    checkpoint_version: u64,
) -> Result<(), ::clickhouse::error::Error> {
    let (topic, partition) = (p.origin.topic.clone(), p.origin.partition);
    let now = datetime(p.engine.now());
    let anomalies: Vec<AnomalyRecord> = client
        .query("SELECT ?fields FROM anomalies WHERE topic = ? AND partition = ? AND version > ? AND revoked = 0")
        .bind(&topic)
        .bind(partition)
        .bind(checkpoint_version)
        .fetch_all()
        .await?;
    for mut row in anomalies {
        let kind = AnomalyKind::parse(&row.kind);
        match kind.and_then(|k| p.engine.holds(&row.case_id, k)) {
            Some(true) => {
                p.engine.touch_case(&row.case_id);
            }
            _ => {
                row.revoked = 1;
                row.revoked_at = Some(now);
                p.pending.anomalies.push(row);
            }
        }
    }
    let alerts: Vec<AlertRecord> = client
        .query("SELECT ?fields FROM alerts WHERE topic = ? AND partition = ? AND version > ? AND revoked = 0")
        .bind(&topic)
        .bind(partition)
        .bind(checkpoint_version)
        .fetch_all()
        .await?;
    for mut row in alerts {
        let kind = AnomalyKind::parse(&row.kind);
        if kind.and_then(|k| p.engine.holds(&row.case_id, k)) != Some(true) {
            row.revoked = 1;
            row.revoked_at = Some(now);
            p.pending.alerts.push(row);
        }
    }
    Ok(())
}

/// The calendar coverage report of the engines held (SPEC §2): their provisional open cases by
/// year, and the years without data to warn about on the default calendar's `today`.
pub(crate) fn calendar_report<'a>(
    engines: impl Iterator<Item = &'a Engine>,
    calendar: &crate::core::calendar::WorkCalendar,
    wall: crate::core::calendar::Instant,
    warn_from: (u32, u32),
) -> crate::metrics::CalendarReport {
    let mut report = crate::metrics::CalendarReport::default();
    for engine in engines {
        for (&year, &n) in engine.provisional_open_cases() {
            *report.provisional_open.entry(year).or_insert(0) += n as u64;
        }
    }
    report.missing_years = crate::core::calendar::missing_years(
        calendar.covered_years(),
        calendar.local_date(wall),
        warn_from,
    );
    report
}

/// One owner of a partition driven by hand, message by message and flush by flush, as the
/// consumer drives its processors: the tests play two owners of one partition with it (the one
/// that lost the partition writing late). Not used by the service.
#[doc(hidden)]
pub struct ManualOwner {
    processor: PartitionProcessor,
    writer: crate::sinks::clickhouse::ClickhouseWriter,
}

#[doc(hidden)]
impl ManualOwner {
    /// Takes partition `partition` of `topic` over, as a consumer's takeover does.
    pub async fn take_over(
        client: ::clickhouse::Client,
        topic: &str,
        partition: u32,
        engine: Engine,
    ) -> anyhow::Result<Self> {
        let origin = Origin {
            topic: topic.to_string(),
            partition,
        };
        let processor = rebuild(&client, origin, engine, None, SnapshotPolicy::OFF).await?;
        Ok(Self {
            processor,
            writer: crate::sinks::clickhouse::ClickhouseWriter::new(client),
        })
    }

    /// The ownership epoch claimed.
    pub fn epoch(&self) -> u64 {
        self.processor.epoch
    }

    /// Hands in the message at `offset` (its key is its case id).
    pub fn handle(&mut self, offset: u64, line: &str) {
        let key = crate::core::event::parse_event(line.as_bytes(), i64::MAX / 4)
            .map(|e| e.case_id)
            .unwrap_or_default();
        self.processor.handle(
            offset,
            line.as_bytes(),
            chrono::Utc::now().timestamp(),
            Some(key.as_bytes()),
        );
    }

    /// Writes everything handed in since the last flush, ending with the checkpoint.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        let mut batch = self.processor.drain();
        batch.set_version(FLUSH_COUNTER.next());
        self.writer.write(&batch).await?;
        Ok(())
    }
}
