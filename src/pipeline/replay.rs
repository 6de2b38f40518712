//! `casewatch replay FILE --sink clickhouse`: an NDJSON file through the same partition
//! processor and flush pipeline as the consumer, as partition 0 of the origin `file:NAME`
//! (positions are line numbers), resuming after the file's checkpoint.

use std::io::BufReader;
use std::path::Path;

use anyhow::Context as _;

use super::flush::FlushPipeline;
use super::snapshots::SnapshotPolicy;
use super::{rebuild, Handled, PartitionProcessor};
use crate::config::Config;
use crate::core::calendar::Instant;
use crate::replay::NdjsonLines;
use crate::sinks::clickhouse::rows::Origin;
use crate::sinks::clickhouse::ClickhouseWriter;

/// What a replay into ClickHouse did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FileReplay {
    pub(crate) applied: u64,
    pub(crate) duplicates: u64,
    pub(crate) dead_letters: u64,
    /// The line it resumed at (0: from the start).
    pub(crate) resumed_at: u64,
}

/// Replays `file` into ClickHouse on the event clock, engine time advanced to `as_of` at the
/// end. Runs on the calling thread; writes on `rt`.
pub(crate) fn replay_file(
    cfg: &Config,
    rt: &tokio::runtime::Runtime,
    file: &Path,
    as_of: Option<Instant>,
) -> anyhow::Result<FileReplay> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let client = crate::sinks::clickhouse::client(&cfg.clickhouse);
    let origin = Origin {
        topic: format!("file:{name}"),
        partition: 0,
    };
    let engine = cfg.new_engine()?;
    let mut p = rt
        .block_on(rebuild(
            &client,
            origin,
            engine,
            Some(name),
            SnapshotPolicy::from_config(&cfg.pipeline),
        ))
        .with_context(|| {
            format!(
                "cannot read checkpoint and events from ClickHouse at {}",
                cfg.clickhouse.url
            )
        })?;
    let writer = ClickhouseWriter::new(client)
        .with_parallel_rows(cfg.clickhouse.parallel_insert_rows)
        .with_concurrent_inserts(cfg.clickhouse.concurrent_inserts);
    let mut flush = FlushPipeline::new(writer, rt.handle().clone());
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let now = chrono::Utc::now().timestamp();
    let mut done = FileReplay {
        resumed_at: p.checkpoint,
        ..FileReplay::default()
    };
    for line in NdjsonLines::new(BufReader::new(f)) {
        let line = line?;
        if line.number < done.resumed_at {
            continue;
        }
        match p.handle(line.number, &line.bytes, now, None) {
            Handled::Applied | Handled::Evicted => done.applied += 1,
            Handled::Duplicate => done.duplicates += 1,
            Handled::DeadLetter(_) => done.dead_letters += 1,
        }
        if p.pending_events() >= cfg.pipeline.batch_events {
            start_flush(&mut flush, &mut p)?;
        }
    }
    flush.finish()?;
    if let Some(t) = as_of {
        p.engine.advance_to(t);
    }
    start_flush(&mut flush, &mut p)?;
    flush.finish()?;
    Ok(done)
}

/// Drains `p` into the spare batch and starts writing it.
fn start_flush(flush: &mut FlushPipeline, p: &mut PartitionProcessor) -> anyhow::Result<()> {
    let mut batch = flush.take_spare();
    p.drain_into(&mut batch);
    flush.start(batch, Vec::new())?;
    Ok(())
}
