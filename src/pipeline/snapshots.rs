//! State snapshots and ownership epochs in ClickHouse (SPEC §7, "Years of operation").
//!
//! A takeover restores a partition from the snapshot its checkpoint refers to, then re-applies
//! the stored events after it. A snapshot is written by the partition's processor in a flush,
//! before that flush's checkpoint (which then refers to it); a snapshot no checkpoint refers to
//! is never read. Once a checkpoint refers to a new snapshot the older ones are dropped.
//!
//! Every takeover claims the partition's next ownership epoch in `partition_owners` before it
//! writes anything; rows carry the epoch in their versions
//! ([`crate::sinks::clickhouse::rows::fenced_version`]), and a consumer that sees a newer epoch
//! than its own for a partition stops processing it.

use std::collections::HashMap;
use std::time::{Duration, Instant as StdInstant};

use ::clickhouse::error::Error;
use ::clickhouse::Client;
use serde::{Deserialize, Serialize};

use crate::config::PipelineConfig;
use crate::core::engine::snapshot::{EngineSnapshot, FORMAT};
use crate::core::engine::{ApplyOutcome, Engine};
use crate::core::event::parse_event;
use crate::sinks::clickhouse::rows::{datetime, Origin, SnapshotRecord};

/// Stored events passed validation when they arrived; the wall clock of then is gone.
const ANY_TIME: i64 = i64::MAX / 4;

/// When a processor writes a snapshot: once `every_events` messages arrived since the last
/// one, or `every` passed with any message (0 / None: never by that measure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotPolicy {
    pub(crate) every_events: u64,
    pub(crate) every: Option<Duration>,
}

impl SnapshotPolicy {
    /// No snapshots.
    pub(crate) const OFF: Self = Self {
        every_events: 0,
        every: None,
    };

    /// `pipeline.snapshot_every_events` and `pipeline.snapshot_every_secs`.
    pub(crate) fn from_config(p: &PipelineConfig) -> Self {
        Self {
            every_events: p.snapshot_every_events,
            every: (p.snapshot_every_secs > 0).then(|| Duration::from_secs(p.snapshot_every_secs)),
        }
    }

    /// Whether a snapshot is due after `events` messages since the last one at `last`.
    pub(crate) fn due(&self, events: u64, last: StdInstant) -> bool {
        events > 0
            && ((self.every_events > 0 && events >= self.every_events)
                || self.every.is_some_and(|e| last.elapsed() >= e))
    }
}

/// The snapshot a checkpoint refers to (offset 0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SnapshotRef {
    pub(crate) epoch: u64,
    pub(crate) offset: u64,
}

/// The snapshot `r` of a partition, when every piece of it is stored and in this build's
/// format; None (with the reason logged) sends the takeover to the stored events instead.
pub(crate) async fn load(
    client: &Client,
    origin: &Origin,
    r: SnapshotRef,
) -> Result<Option<EngineSnapshot>, Error> {
    if r.offset == 0 {
        return Ok(None);
    }
    let rows: Vec<SnapshotRecord> = client
        .query("SELECT ?fields FROM snapshots FINAL WHERE topic = ? AND partition = ? AND epoch = ? AND next_offset = ? ORDER BY chunk")
        .bind(&origin.topic)
        .bind(origin.partition)
        .bind(r.epoch)
        .bind(r.offset)
        .fetch_all()
        .await?;
    let complete = !rows.is_empty()
        && rows
            .iter()
            .enumerate()
            .all(|(i, row)| row.chunk as usize == i && row.chunks as usize == rows.len());
    let unusable = |why: String| {
        tracing::warn!(
            partition = origin.partition,
            snapshot_offset = r.offset,
            "snapshot not used ({why}): the stored events are re-applied instead"
        );
        Ok(None)
    };
    if !complete {
        return unusable(format!("{} of its pieces found", rows.len()));
    }
    if let Some(other) = rows.iter().find(|row| row.format != FORMAT) {
        return unusable(format!(
            "format {}, this build reads {FORMAT}",
            other.format
        ));
    }
    let bytes: Vec<u8> = rows.into_iter().flat_map(|row| row.data).collect();
    match EngineSnapshot::decode(&bytes) {
        Ok(snapshot) => Ok(Some(snapshot)),
        Err(e) => unusable(e.to_string()),
    }
}

/// Drops the snapshots a landed flush's checkpoints no longer refer to: for each partition of
/// `written`, every other one (older ones, and any a consumer wrote before dying ahead of its
/// checkpoint). A failure only leaves them for the next time.
pub(crate) async fn drop_superseded(client: &Client, written: &[SnapshotRecord]) {
    let mut newest: Vec<(Origin, SnapshotRef)> = Vec::new();
    for s in written {
        let origin = Origin {
            topic: s.topic.clone(),
            partition: s.partition,
        };
        let r = SnapshotRef {
            epoch: s.epoch,
            offset: s.next_offset,
        };
        if !newest.contains(&(origin.clone(), r)) {
            newest.push((origin, r));
        }
    }
    for (origin, keep) in &newest {
        drop_all_but(client, origin, *keep).await;
    }
}

/// Drops every snapshot of a partition but `keep` (the one its checkpoint refers to; the
/// default ref keeps none). Run by the partition's owner after a takeover and after each new
/// snapshot has landed; a failure only leaves them for the next time.
pub(crate) async fn drop_all_but(client: &Client, origin: &Origin, keep: SnapshotRef) {
    let stored: Result<Vec<(u64, u64)>, Error> = client
        .query(
            "SELECT DISTINCT epoch, next_offset FROM snapshots WHERE topic = ? AND partition = ?",
        )
        .bind(&origin.topic)
        .bind(origin.partition)
        .fetch_all()
        .await;
    let stored = match stored {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(partition = origin.partition, error = %e, "cannot list snapshots; superseded ones are dropped later");
            return;
        }
    };
    for (epoch, offset) in stored {
        if (SnapshotRef { epoch, offset }) == keep {
            continue;
        }
        // Each snapshot is a ClickHouse partition of its own: dropping it rewrites nothing.
        let sql = format!(
            "ALTER TABLE {} DROP PARTITION (?, ?, ?, ?)",
            crate::sinks::clickhouse::cluster::local("snapshots")
        );
        let dropped = client
            .query(&sql)
            .bind(&origin.topic)
            .bind(origin.partition)
            .bind(epoch)
            .bind(offset)
            .execute()
            .await;
        if let Err(e) = dropped {
            tracing::warn!(partition = origin.partition, error = %e, "cannot drop a superseded snapshot; dropped later");
        }
    }
}

/// `partition_owners`.
#[derive(Debug, Clone, ::clickhouse::Row, Serialize, Deserialize)]
struct OwnerRecord {
    topic: String,
    partition: u32,
    epoch: u64,
    owner: String,
    claimed_at: u32,
    version: u64,
}

/// Claims the partition's next ownership epoch (above every claimed one and `at_least`, the
/// checkpoint's) before the new owner writes anything.
pub(crate) async fn claim_epoch(
    client: &Client,
    origin: &Origin,
    at_least: u64,
) -> Result<u64, Error> {
    let claimed: u64 = client
        .query("SELECT max(epoch) FROM partition_owners WHERE topic = ? AND partition = ?")
        .bind(&origin.topic)
        .bind(origin.partition)
        .fetch_one()
        .await?;
    let epoch = claimed.max(at_least) + 1;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let row = OwnerRecord {
        topic: origin.topic.clone(),
        partition: origin.partition,
        epoch,
        owner: format!("{} pid {}", host.trim(), std::process::id()),
        claimed_at: datetime(chrono::Utc::now().timestamp()),
        version: super::VERSIONS.next(),
    };
    let mut insert = client.insert::<OwnerRecord>("partition_owners").await?;
    insert.write(&row).await?;
    insert.end().await?;
    Ok(epoch)
}

/// The newest claimed epoch of each of the topic's partitions.
pub(crate) async fn claimed_epochs(
    client: &Client,
    topic: &str,
) -> Result<HashMap<u32, u64>, Error> {
    let rows: Vec<(u32, u64)> = client
        .query(
            "SELECT partition, max(epoch) FROM partition_owners WHERE topic = ? GROUP BY partition",
        )
        .bind(topic)
        .fetch_all()
        .await?;
    Ok(rows.into_iter().collect())
}

/// Re-applies a partition's stored events with offsets in `[from, to)`, logging progress every
/// few seconds; an evicted case an event needs is restored first. The count re-applied.
pub(crate) async fn reapply_stored_events(
    client: &Client,
    origin: &Origin,
    engine: &mut Engine,
    from: u64,
    to: u64,
) -> Result<u64, Error> {
    let mut cursor = client
        .query("SELECT offset, payload FROM events FINAL WHERE topic = ? AND partition = ? AND offset >= ? AND offset < ? ORDER BY offset")
        .bind(&origin.topic)
        .bind(origin.partition)
        .bind(from)
        .bind(to)
        .fetch::<(u64, String)>()?;
    let (mut applied, mut logged) = (0u64, StdInstant::now());
    while let Some((offset, payload)) = cursor.next().await? {
        if let Ok(e) = parse_event(payload.as_bytes(), ANY_TIME) {
            if engine.apply(&e) == ApplyOutcome::Evicted {
                restore_case(client, origin, engine, &e.case_id, offset).await?;
                engine.apply(&e);
            }
        }
        applied += 1;
        if logged.elapsed() >= Duration::from_secs(5) {
            logged = StdInstant::now();
            tracing::info!(
                partition = origin.partition,
                applied,
                of = to.saturating_sub(from),
                "takeover: re-applying stored events"
            );
        }
    }
    Ok(applied)
}

/// Brings an evicted case back from its stored events below `below`: their offsets by a lookup
/// on `case_id` in `case_event_offsets`, their payloads by `events`' primary key — no partition scan.
pub(crate) async fn restore_case(
    client: &Client,
    origin: &Origin,
    engine: &mut Engine,
    case_id: &str,
    below: u64,
) -> Result<(), Error> {
    let payloads: Vec<String> = client
        .query("SELECT payload FROM events FINAL WHERE topic = ? AND partition = ? AND offset < ? AND offset IN (SELECT arrayJoin(offsets) FROM case_event_offsets WHERE case_id = ? AND topic = ? AND partition = ?) ORDER BY offset")
        .bind(&origin.topic)
        .bind(origin.partition)
        .bind(below)
        .bind(case_id)
        .bind(&origin.topic)
        .bind(origin.partition)
        .fetch_all()
        .await?;
    let mut scratch = Engine::new(engine.rules().clone(), engine.calendars().clone());
    for raw in &payloads {
        if let Ok(e) = parse_event(raw.as_bytes(), ANY_TIME) {
            scratch.apply(&e);
        }
    }
    match scratch.snapshot_case(case_id) {
        Some(snapshot) => engine.restore_case(&snapshot),
        None => engine.forget_eviction(case_id),
    }
    Ok(())
}
