//! The consumer's shared state and the rebalance callbacks.
//!
//! rdkafka runs the callbacks inside `poll`, on the consumer thread: a revoked partition is
//! flushed and committed, an assigned one is rebuilt from ClickHouse and resumes at its
//! ClickHouse checkpoint, before any of its messages are handled. Offsets: a partition's offset
//! is committed only after its rows and checkpoint are in ClickHouse (and its dead letters
//! acknowledged by the dead-letter topic).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant as StdInstant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::Handle;

use super::flush::{FlushPipeline, Landed};
use super::snapshots::SnapshotPolicy;
use super::{rebuild, PartitionProcessor};
use crate::alerts::deliver::Dispatcher;
use crate::config::Config;
use crate::core::engine::Engine;
use crate::metrics::Metrics;
use crate::sinks::clickhouse::rows::Origin;

/// Locks the shared state. A thread that panicked while holding it has already reported the
/// panic; the state itself is consistent between steps, so it is used as it is.
pub(super) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by the loop and the rebalance callbacks (both on the consumer thread).
pub(super) struct Shared {
    pub(crate) cfg: Config,
    pub(crate) rt: Handle,
    pub(crate) flush: FlushPipeline,
    pub(crate) processors: HashMap<i32, PartitionProcessor>,
    pub(crate) metrics: Arc<Metrics>,
    /// A fatal error raised inside a callback, reported by the loop.
    pub(crate) fatal: Option<String>,
    /// Alert delivery (None when no route is configured).
    pub(crate) dispatcher: Option<Dispatcher>,
    /// Partitions whose alerts are held: not yet known to be within `alerts.hold_lag`.
    pub(crate) held: HashSet<i32>,
    /// Offsets whose rows are in ClickHouse, not committed yet (partition → next offset).
    committable: HashMap<i32, i64>,
    /// Set when the service is stopping (a takeover stops retrying).
    pub(crate) stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Shared {
    pub(crate) fn new(
        cfg: Config,
        rt: Handle,
        flush: FlushPipeline,
        metrics: Arc<Metrics>,
        dispatcher: Option<Dispatcher>,
    ) -> Self {
        Self {
            cfg,
            rt,
            flush,
            processors: HashMap::new(),
            metrics,
            fatal: None,
            dispatcher,
            held: HashSet::new(),
            committable: HashMap::new(),
            stop: Arc::default(),
        }
    }

    /// Forgets a partition that is no longer this consumer's: its state, unwritten rows and
    /// uncommitted offset.
    pub(crate) fn forget_partition(&mut self, partition: i32) {
        self.processors.remove(&partition);
        self.held.remove(&partition);
        self.committable.remove(&partition);
        self.metrics.set_lag(partition, None);
        self.metrics.set_catching_up(partition, None);
    }

    /// Drains every processor (or only `only`'s) and starts writing the batch, once the write
    /// in flight (if any) has landed.
    pub(crate) fn start_flush(&mut self, only: Option<&[i32]>) -> anyhow::Result<()> {
        self.finish_flush()?;
        let mut batch = self.flush.take_spare();
        let mut offsets = Vec::new();
        for (&partition, p) in self.processors.iter_mut() {
            if only.is_some_and(|o| !o.contains(&partition)) {
                continue;
            }
            p.drain_into(&mut batch);
            offsets.push((partition, p.next_offset as i64));
        }
        if batch.rows() == batch.checkpoints.len()
            && batch.checkpoints.iter().all(|c| c.next_offset == 0)
        {
            return Ok(());
        }
        let landed = self.flush.start(batch, offsets)?;
        self.landed(landed);
        Ok(())
    }

    /// Waits for the write in flight (if any).
    pub(crate) fn finish_flush(&mut self) -> anyhow::Result<()> {
        let landed = self.flush.finish()?;
        self.landed(landed);
        Ok(())
    }

    /// Takes in the write in flight if it has landed, without waiting.
    pub(crate) fn finish_flush_if_done(&mut self) -> anyhow::Result<()> {
        let landed = self.flush.finish_if_done()?;
        self.landed(landed);
        Ok(())
    }

    /// A landed batch: its offsets become committable and its alerts go to the dispatcher.
    fn landed(&mut self, landed: Option<Landed>) {
        let Some(landed) = landed else {
            return;
        };
        if let Some(d) = &self.dispatcher {
            // Durable now: hand over the alerts of partitions that are not catching up.
            d.alerts(
                landed
                    .alerts
                    .into_iter()
                    .filter(|a| !self.held.contains(&(a.partition as i32)))
                    .collect(),
            );
        }
        self.committable.extend(landed.offsets);
        self.metrics.flushes.inc();
        self.metrics.flush_rows.add(landed.rows as u64);
        self.metrics.flush_seconds.observe(landed.seconds);
    }

    /// Takes the committable offsets (None when there are none; called once per message).
    pub(crate) fn take_committable(&mut self) -> anyhow::Result<Option<TopicPartitionList>> {
        if self.committable.is_empty() {
            return Ok(None);
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in self.committable.drain() {
            offsets.add_partition_offset(
                &self.cfg.kafka.topic,
                partition,
                Offset::Offset(offset),
            )?;
        }
        Ok(Some(offsets))
    }
}

/// What a partition's takeover needs, cloned into its task.
#[derive(Clone)]
struct Takeover {
    cfg: Arc<Config>,
    client: ::clickhouse::Client,
    metrics: Arc<Metrics>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Takeover {
    /// Rebuilds a partition from ClickHouse, retrying while it is down (a partition is never
    /// skipped). Ok(None) when the service is stopping; Err for an error no retry can fix
    /// (such as a missing database).
    async fn rebuild(self, origin: Origin) -> Result<Option<PartitionProcessor>, String> {
        let policy = SnapshotPolicy::from_config(&self.cfg.pipeline);
        // Reading the stored events may take long: allow it ten write attempts' time.
        let limit = Duration::from_secs(self.cfg.clickhouse.timeout_secs.max(1) * 10);
        let mut backoff = Duration::from_millis(200);
        let mut cut_reads = 0;
        loop {
            let engine = Engine::with_capacity(
                self.cfg.rules().map_err(|e| format!("{e:#}"))?,
                self.cfg.calendars().map_err(|e| format!("{e:#}"))?,
                1 << 14,
            );
            let rebuilt = tokio::time::timeout(
                limit,
                rebuild(&self.client, origin.clone(), engine, None, policy),
            )
            .await
            .unwrap_or(Err(::clickhouse::error::Error::TimedOut));
            match rebuilt {
                Ok(p) => return Ok(Some(p)),
                Err(err)
                    if !crate::sinks::clickhouse::writer::read_is_transient(
                        &err,
                        &mut cut_reads,
                    ) =>
                {
                    return Err(format!(
                        "cannot rebuild partition {} from ClickHouse ({err}): run `casewatch migrate`, or check clickhouse.url and clickhouse.database",
                        origin.partition
                    ));
                }
                Err(err) => {
                    self.metrics.clickhouse_errors.inc();
                    tracing::warn!(partition = origin.partition, error = %err, "cannot rebuild partition from clickhouse; retrying");
                    // Wait in small steps, so that a stop is seen at once.
                    let until = StdInstant::now() + backoff;
                    while StdInstant::now() < until {
                        if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
                            tracing::info!(
                                partition = origin.partition,
                                "stopping during a takeover"
                            );
                            return Ok(None);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// The consumer's context: rebalances flush, commit and rebuild through the shared state;
/// librdkafka's statistics (every second) bring each partition's high watermark.
pub(super) struct Context {
    pub(crate) shared: Arc<Mutex<Shared>>,
    /// The consumed topic, and the last known high watermark of each of its partitions.
    pub(crate) topic: String,
    pub(crate) watermarks: Arc<Mutex<HashMap<i32, i64>>>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let mut known = self.watermarks.lock().unwrap_or_else(|e| e.into_inner());
        for (&partition, p) in &topic.partitions {
            if partition >= 0 && p.hi_offset >= 0 {
                known.insert(partition, p.hi_offset);
            }
        }
    }
}

impl Context {
    /// Revoked partitions: flush and commit them, then forget their state.
    fn hand_back(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let mut shared = lock(&self.shared);
        let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        tracing::info!(partitions = ?revoked, "partitions revoked: flushing and committing");
        let flushed = shared
            .start_flush(Some(&revoked))
            .and_then(|()| shared.finish_flush())
            .and_then(|()| shared.take_committable());
        match flushed {
            Ok(Some(offsets)) => {
                if let Err(e) = consumer.commit(&offsets, CommitMode::Sync) {
                    tracing::warn!(error = %e, "commit on revoke failed; the next owner re-reads from the checkpoint");
                }
            }
            Ok(None) => {}
            Err(e) => shared.fatal = Some(format!("flush on revoke failed: {e:#}")),
        }
        for p in revoked {
            shared.forget_partition(p);
        }
    }

    /// Assigned partitions: rebuild each from ClickHouse (retrying while it is down), all at
    /// once, so a partition with a long history does not hold the others back.
    fn take_over(&self, tpl: &TopicPartitionList) {
        let mut shared = lock(&self.shared);
        // Rebuilds read ClickHouse: let the write in flight land first.
        if let Err(e) = shared.finish_flush() {
            shared.fatal = Some(format!("flush before a takeover failed: {e:#}"));
            return;
        }
        let origins: Vec<Origin> = tpl
            .elements()
            .iter()
            .filter(|e| !shared.processors.contains_key(&e.partition()))
            .map(|e| Origin {
                topic: e.topic().to_string(),
                partition: e.partition() as u32,
            })
            .collect();
        let takeover = Takeover {
            cfg: Arc::new(shared.cfg.clone()),
            client: shared.flush.writer().client().clone(),
            metrics: shared.metrics.clone(),
            stop: shared.stop.clone(),
        };
        let started = StdInstant::now();
        let tasks: Vec<_> = origins
            .iter()
            .map(|o| shared.rt.spawn(takeover.clone().rebuild(o.clone())))
            .collect();
        for task in tasks {
            let processor = match shared.rt.block_on(task) {
                Ok(Ok(Some(p))) => p,
                Ok(Ok(None)) => return,
                Ok(Err(fatal)) => {
                    shared.fatal = Some(fatal);
                    return;
                }
                Err(e) => {
                    shared.fatal = Some(format!("a takeover task failed: {e}"));
                    return;
                }
            };
            let partition = processor.origin.partition as i32;
            tracing::info!(
                partition,
                epoch = processor.epoch,
                checkpoint = processor.checkpoint,
                snapshot_offset = processor.snapshot.offset,
                cases = processor.engine.case_count(),
                seconds = started.elapsed().as_secs_f64(),
                "partition assigned: state restored from clickhouse"
            );
            shared.processors.insert(partition, processor);
            shared.held.insert(partition);
        }
    }

    /// After a takeover: each assigned partition resumes at its ClickHouse checkpoint.
    fn assign_at_checkpoints(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let mut shared = lock(&self.shared);
        let resume: Vec<(String, i32, i64)> = tpl
            .elements()
            .iter()
            .filter_map(|e| {
                let p = shared.processors.get(&e.partition())?;
                Some((e.topic().to_string(), e.partition(), p.checkpoint as i64))
            })
            .collect();
        for (topic, partition, offset) in resume {
            let _ = tpl.set_partition_offset(&topic, partition, Offset::Offset(offset));
        }
        if let Err(e) = consumer.assign(tpl) {
            shared.fatal = Some(format!("cannot take the assigned partitions: {e}"));
        }
    }
}

impl ConsumerContext for Context {
    /// Eager rebalancing, with one change to rdkafka's default: an assigned partition resumes at
    /// its ClickHouse checkpoint, not at the group's committed offset (which may lag behind it,
    /// or be missing for a new group id).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.take_over(tpl);
                self.assign_at_checkpoints(consumer, tpl);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.hand_back(consumer, tpl);
                if let Err(e) = consumer.unassign() {
                    tracing::warn!(error = %e, "unassign failed");
                }
            }
            other => tracing::error!(error = ?other, "rebalance error"),
        }
    }
}
