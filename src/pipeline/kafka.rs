//! `casewatch run`: the Kafka consumer loop.
//!
//! A synchronous `BaseConsumer` polled on one dedicated thread; ClickHouse I/O runs on the tokio
//! runtime through `Handle::block_on`. Keeping the loop synchronous lets rdkafka's rebalance
//! callbacks, which run inside `poll` on this thread, flush and commit revoked partitions and
//! rebuild assigned ones before any of their messages are handled.
//!
//! Flushes are pipelined: a drained batch is written by a task on the runtime while the loop
//! reads and applies the next one, so parsing and the engine overlap with the ClickHouse write.
//! At most one write is in flight; the next flush first waits for it, so batches land in order
//! and memory is bounded by two batches (backpressure: the loop does not poll while it waits).
//!
//! Offsets: a partition's offset is committed only after its rows and checkpoint are in
//! ClickHouse (and its dead letters acknowledged by the dead-letter topic).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::runtime::Handle;

use super::{rebuild, Handled, PartitionProcessor, VERSIONS};
use crate::alerts::deliver::Dispatcher;
use crate::config::{ClockMode, Config};
use crate::core::engine::Engine;
use crate::metrics::Metrics;
use crate::sinks::clickhouse::rows::{AlertRecord, Batch, Origin};
use crate::sinks::clickhouse::{ClickhouseWriter, SinkError};

/// How `run` ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Stop once no message has arrived for this long and every assigned partition is flushed
    /// (for demos, benchmarks and tests; a service runs until it is signalled).
    pub exit_when_idle: Option<Duration>,
}

/// State shared by the loop and the rebalance callbacks (both on the consumer thread).
struct Shared {
    cfg: Config,
    rt: Handle,
    writer: ClickhouseWriter,
    processors: HashMap<i32, PartitionProcessor>,
    metrics: Arc<Metrics>,
    /// A fatal error raised inside a callback, reported by the loop.
    fatal: Option<String>,
    /// During shutdown: how long a flush may take.
    drain_deadline: Option<Duration>,
    /// Alert delivery (None when no route is configured).
    dispatcher: Option<Dispatcher>,
    /// Partitions whose alerts are held: not yet known to be within `alerts.hold_lag`.
    held: HashSet<i32>,
    /// The batch being written, if any.
    in_flight: Option<InFlight>,
    /// Offsets whose rows are in ClickHouse, not committed yet (partition → next offset).
    committable: HashMap<i32, i64>,
}

/// A batch whose write runs on the runtime while the loop goes on.
struct InFlight {
    /// Yields the batch's alert rows once every row and checkpoint is in.
    task: tokio::task::JoinHandle<Result<Vec<AlertRecord>, SinkError>>,
    /// Next offset per partition of the batch.
    offsets: Vec<(i32, i64)>,
    rows: usize,
    started: StdInstant,
}

impl Shared {
    fn new_engine(&self) -> anyhow::Result<Engine> {
        Ok(Engine::with_capacity(
            self.cfg.rules()?,
            self.cfg.calendars()?,
            1 << 14,
        ))
    }

    /// Drains every processor (or only `only`'s) and starts writing the batch, once the write
    /// in flight (if any) is finished.
    fn start_flush(&mut self, only: Option<&[i32]>) -> anyhow::Result<()> {
        self.finish_flush()?;
        let started = StdInstant::now();
        let mut batch = Batch::default();
        let mut offsets = Vec::new();
        for (&partition, p) in self.processors.iter_mut() {
            if only.is_some_and(|o| !o.contains(&partition)) {
                continue;
            }
            merge(&mut batch, p.drain());
            offsets.push((partition, p.next_offset as i64));
        }
        if batch.rows() == batch.checkpoints.len()
            && batch.checkpoints.iter().all(|c| c.next_offset == 0)
        {
            return Ok(());
        }
        batch.set_version(VERSIONS.next());
        let rows = batch.rows();
        let writer = self.writer.clone();
        // The batch is serialized, sent and dropped on the runtime's threads.
        let task = self.rt.spawn(async move {
            writer.write(&batch).await?;
            Ok(std::mem::take(&mut batch.alerts))
        });
        self.in_flight = Some(InFlight {
            task,
            offsets,
            rows,
            started,
        });
        Ok(())
    }

    /// Waits for the write in flight (if any). Once its rows are in, its offsets become
    /// committable and its alerts go to the dispatcher.
    fn finish_flush(&mut self) -> anyhow::Result<()> {
        let Some(flight) = self.in_flight.take() else {
            return Ok(());
        };
        let joined = match self.drain_deadline {
            None => self.rt.block_on(flight.task),
            Some(d) => self
                .rt
                // The timer must be created inside the runtime (this thread is not in it).
                .block_on(async { tokio::time::timeout(d, flight.task).await })
                .map_err(|_| anyhow::anyhow!("drain deadline of {} s passed", d.as_secs()))?,
        };
        let alerts =
            joined.map_err(|e| anyhow::anyhow!("the clickhouse write task failed: {e}"))??;
        if let Some(d) = &self.dispatcher {
            // Durable now: hand over the alerts of partitions that are not catching up.
            d.alerts(
                alerts
                    .into_iter()
                    .filter(|a| !self.held.contains(&(a.partition as i32)))
                    .collect(),
            );
        }
        self.committable.extend(flight.offsets);
        self.metrics.flushes.inc();
        self.metrics.flush_rows.add(flight.rows as u64);
        self.metrics
            .flush_seconds
            .observe(flight.started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Finishes a write in flight that is already done, without waiting.
    fn finish_flush_if_done(&mut self) -> anyhow::Result<()> {
        if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.task.is_finished())
        {
            self.finish_flush()?;
        }
        Ok(())
    }

    /// Takes the committable offsets (None when there are none; called once per message).
    fn take_committable(&mut self) -> anyhow::Result<Option<TopicPartitionList>> {
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

fn merge(into: &mut Batch, b: Batch) {
    into.events.extend(b.events);
    into.dead_letters.extend(b.dead_letters);
    into.cases.extend(b.cases);
    into.daily.extend(b.daily);
    into.anomalies.extend(b.anomalies);
    into.alerts.extend(b.alerts);
    into.checkpoints.extend(b.checkpoints);
}

struct Context {
    shared: Arc<Mutex<Shared>>,
}

impl ClientContext for Context {}

impl Context {
    /// Revoked partitions: flush and commit them, then forget their state.
    fn hand_back(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
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
            shared.processors.remove(&p);
            shared.held.remove(&p);
            shared.metrics.set_lag(p, None);
        }
    }

    /// Assigned partitions: rebuild each from ClickHouse (retrying while it is down).
    fn take_over(&self, tpl: &TopicPartitionList) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        // Rebuilds read ClickHouse: let the write in flight land first.
        if let Err(e) = shared.finish_flush() {
            shared.fatal = Some(format!("flush before a takeover failed: {e:#}"));
            return;
        }
        for e in tpl.elements() {
            let partition = e.partition();
            if shared.processors.contains_key(&partition) {
                continue;
            }
            let origin = Origin {
                topic: e.topic().to_string(),
                partition: partition as u32,
            };
            let started = StdInstant::now();
            let client = shared.writer.client().clone();
            // ClickHouse may be down while a partition is taken over: retry, never skip it.
            let mut backoff = Duration::from_millis(200);
            let processor = loop {
                let engine = match shared.new_engine() {
                    Ok(engine) => engine,
                    Err(err) => {
                        shared.fatal = Some(format!("{err:#}"));
                        return;
                    }
                };
                // A rebuild reads the whole partition: allow it ten write attempts' time.
                let limit = Duration::from_secs(shared.cfg.clickhouse.timeout_secs.max(1) * 10);
                let rebuilt = shared.rt.block_on(async {
                    tokio::time::timeout(limit, rebuild(&client, origin.clone(), engine, None))
                        .await
                        .unwrap_or(Err(::clickhouse::error::Error::TimedOut))
                });
                match rebuilt {
                    Ok(p) => break p,
                    Err(err) => {
                        shared.metrics.clickhouse_errors.inc();
                        tracing::warn!(partition, error = %err, "cannot rebuild partition from clickhouse; retrying");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            };
            tracing::info!(
                partition,
                checkpoint = processor.checkpoint,
                cases = processor.engine.case_count(),
                seconds = started.elapsed().as_secs_f64(),
                "partition assigned: state rebuilt from clickhouse"
            );
            shared.processors.insert(partition, processor);
            shared.held.insert(partition);
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
                let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
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

/// Runs the consumer until a signal (or idleness, with `exit_when_idle`) stops it.
pub fn run(
    cfg: &Config,
    rt: &Handle,
    metrics: &Arc<Metrics>,
    stop: &AtomicBool,
    opts: RunOptions,
) -> anyhow::Result<()> {
    let writer = {
        let mut w = ClickhouseWriter::new(crate::sinks::clickhouse::client(&cfg.clickhouse));
        let m = metrics.clone();
        w.on_error = Some(Arc::new(move |_e: &str| m.clickhouse_errors.inc()));
        w.attempt_timeout = Duration::from_secs(cfg.clickhouse.timeout_secs.max(1));
        w
    };
    let dispatcher = if cfg.alerts.routes.is_empty() {
        None
    } else {
        let _runtime = rt.enter();
        Some(Dispatcher::start(
            Arc::new(cfg.clone()),
            crate::sinks::clickhouse::client(&cfg.clickhouse),
            metrics.clone(),
        )?)
    };
    let shared = Arc::new(Mutex::new(Shared {
        cfg: cfg.clone(),
        rt: rt.clone(),
        writer,
        processors: HashMap::new(),
        metrics: metrics.clone(),
        fatal: None,
        drain_deadline: None,
        dispatcher: dispatcher.clone(),
        held: HashSet::new(),
        in_flight: None,
        committable: HashMap::new(),
    }));
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("group.id", &cfg.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "20")
        // Flushes block polling while ClickHouse is down; stay in the group meanwhile.
        .set("max.poll.interval.ms", "3600000")
        // A crashed consumer holds its partitions until its session times out.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000");
    if !cfg.kafka.instance_id.is_empty() {
        client.set("group.instance.id", &cfg.kafka.instance_id);
    }
    for (k, v) in &cfg.kafka.client {
        client.set(k, v);
    }
    // Never dropped: closing leaves the group, which can hang forever against tansu (seen in
    // rd_kafka_consumer_close), and an error return would then never be reported. Everything
    // is flushed and committed before `run` returns; the broker expires the member after its
    // session timeout, and a static `kafka.instance_id` gets its partitions back at once.
    let consumer: std::mem::ManuallyDrop<BaseConsumer<Context>> =
        std::mem::ManuallyDrop::new(client.create_with_context(Context {
            shared: shared.clone(),
        })?);
    let producer: ThreadedProducer<DefaultProducerContext> = {
        let mut p = ClientConfig::new();
        p.set("bootstrap.servers", &cfg.kafka.brokers)
            .set("linger.ms", "5");
        for (k, v) in &cfg.kafka.client {
            p.set(k, v);
        }
        p.create()?
    };
    consumer.subscribe(&[&cfg.kafka.topic])?;
    metrics.ready.store(true, Ordering::Relaxed);
    tracing::info!(topic = %cfg.kafka.topic, group = %cfg.kafka.group_id, "consuming");

    let batch_events = cfg.pipeline.batch_events;
    let batch_every = Duration::from_millis(cfg.pipeline.batch_millis);
    let tick_every = Duration::from_millis(cfg.pipeline.tick_millis);
    let mut last_flush = StdInstant::now();
    let mut last_tick = StdInstant::now();
    let mut last_message = StdInstant::now();
    let mut last_lag = StdInstant::now();
    let mut last_calendar_check = StdInstant::now();
    let mut last_rescan = StdInstant::now();
    let mut holidays_seen = holidays_stamp(&cfg.calendar.holidays_dir);
    let mut default_calendar = cfg.calendars()?.default;
    let warn_from = cfg.calendar.warn_from()?;
    let mut pending_dead_letters = 0usize;
    // The wall clock of the `future_timestamp` rule, read at most every 100 ms (its tolerance
    // is minutes), not per message; always fresh after a long wait (a flush while ClickHouse
    // is down), since it is refreshed right after each poll.
    let mut wall = chrono::Utc::now().timestamp();
    let mut wall_read = StdInstant::now();

    loop {
        if let Some(f) = shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fatal
            .take()
        {
            anyhow::bail!(f);
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let polled = consumer.poll(Duration::from_millis(50));
        let now = StdInstant::now();
        if now.duration_since(wall_read) >= Duration::from_millis(100) {
            wall = chrono::Utc::now().timestamp();
            wall_read = now;
        }
        match polled {
            Some(Ok(msg)) => {
                last_message = now;
                metrics.broker_up.set(1);
                let (partition, offset) = (msg.partition(), msg.offset().max(0) as u64);
                let payload = msg.payload().unwrap_or_default();
                let mut guard = shared.lock().unwrap_or_else(|e| e.into_inner());
                let s = &mut *guard;
                let Some(p) = s.processors.get_mut(&partition) else {
                    tracing::warn!(
                        partition,
                        "message for a partition not assigned here; skipped"
                    );
                    continue;
                };
                metrics.consumed.inc();
                let mut handled = p.handle(offset, payload, wall);
                if handled == Handled::Evicted {
                    // The case's events are read back from ClickHouse: let the write land first.
                    s.finish_flush()?;
                    if let Some(p) = s.processors.get_mut(&partition) {
                        restore_evicted(p, payload, &s.rt, s.writer.client())?;
                        handled = p.handle(offset, payload, wall);
                    }
                }
                match handled {
                    Handled::Applied | Handled::Evicted => metrics.applied.inc(),
                    Handled::Duplicate => metrics.duplicates.inc(),
                    Handled::DeadLetter(reason) => {
                        metrics.dead_letter(&reason.to_string());
                        pending_dead_letters += 1;
                        let headers = OwnedHeaders::new()
                            .insert(Header {
                                key: "casewatch-reason",
                                value: Some(reason.to_string().as_bytes()),
                            })
                            .insert(Header {
                                key: "casewatch-origin",
                                value: Some(
                                    format!("{}/{partition}/{offset}", cfg.kafka.topic).as_bytes(),
                                ),
                            });
                        let key = msg.key().unwrap_or_default();
                        let record = BaseRecord::to(&cfg.kafka.dead_letter_topic)
                            .payload(payload)
                            .key(key)
                            .headers(headers);
                        if let Err((e, _)) = producer.send(record) {
                            tracing::warn!(error = %e, "dead-letter topic refused a record; it is kept in clickhouse");
                        }
                    }
                }
            }
            Some(Err(e)) => {
                metrics.broker_errors.inc();
                metrics.broker_up.set(0);
                tracing::warn!(error = %e, "kafka error; retrying");
            }
            None => {}
        }

        if now.duration_since(last_tick) >= tick_every {
            last_tick = now;
            if cfg.engine.clock == ClockMode::Wall {
                let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                for p in s.processors.values_mut() {
                    p.engine.advance_to(wall);
                }
            }
            if last_calendar_check.elapsed() >= Duration::from_secs(10) {
                last_calendar_check = StdInstant::now();
                let stamp = holidays_stamp(&cfg.calendar.holidays_dir);
                if stamp != holidays_seen {
                    holidays_seen = stamp;
                    match cfg.calendars() {
                        Ok(calendars) => {
                            default_calendar = calendars.default.clone();
                            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                            for p in s.processors.values_mut() {
                                p.engine.reload_calendars(calendars.clone());
                            }
                            tracing::info!(dir = %cfg.calendar.holidays_dir, "holiday data changed: calendars reloaded, deadlines recomputed");
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "holiday data changed but cannot be read; keeping the old calendars")
                        }
                    }
                }
            }
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            let open: usize = s
                .processors
                .values()
                .map(|p| p.engine.open_case_count())
                .sum();
            metrics.cases_in_memory.set(open as i64);
            let report = super::calendar_report(
                s.processors.values().map(|p| &p.engine),
                &default_calendar,
                wall,
                warn_from,
            );
            if metrics.set_calendar(report) {
                for line in metrics.calendar_lines() {
                    tracing::warn!("{line}");
                }
            }
            // Lag: one watermark request per assigned partition, every couple of seconds.
            if last_lag.elapsed() >= Duration::from_secs(2) {
                last_lag = StdInstant::now();
                let mut caught_up_now = Vec::new();
                for (&partition, p) in &s.processors {
                    match consumer.fetch_watermarks(
                        &cfg.kafka.topic,
                        partition,
                        Duration::from_millis(500),
                    ) {
                        Ok((_, high)) => {
                            metrics.broker_up.set(1);
                            let lag = high - p.next_offset as i64;
                            metrics.set_lag(partition, Some(lag));
                            if lag <= cfg.alerts.hold_lag && s.held.contains(&partition) {
                                caught_up_now.push(partition);
                            }
                        }
                        Err(e) => {
                            metrics.broker_up.set(0);
                            tracing::warn!(error = %e, "broker unreachable; retrying");
                        }
                    }
                }
                // Caught up: the outbox scan delivers what was held, if it still holds.
                for p in &caught_up_now {
                    s.held.remove(p);
                }
                let topic = &cfg.kafka.topic;
                if let Some(d) = &dispatcher {
                    let rescan_all =
                        last_rescan.elapsed() >= Duration::from_secs(cfg.alerts.rescan_secs.max(1));
                    let partitions: Vec<(String, u32)> = if rescan_all {
                        last_rescan = StdInstant::now();
                        s.processors
                            .keys()
                            .filter(|p| !s.held.contains(p))
                            .map(|&p| (topic.clone(), p as u32))
                            .collect()
                    } else {
                        caught_up_now
                            .iter()
                            .map(|&p| (topic.clone(), p as u32))
                            .collect()
                    };
                    d.rescan(partitions);
                }
            }
        }

        let (pending, pending_bytes) = {
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            s.finish_flush_if_done()?;
            let pending: usize = s.processors.values().map(|p| p.pending_events()).sum();
            let bytes: usize = s.processors.values().map(|p| p.pending_bytes()).sum();
            (pending, bytes)
        };
        let since_flush = now.duration_since(last_flush);
        if pending >= batch_events
            || pending_bytes >= cfg.pipeline.batch_bytes
            || (since_flush >= batch_every && (pending > 0 || pending_dead_letters > 0))
            || since_flush >= batch_every * 4
        {
            shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .start_flush(None)?;
            pending_dead_letters = 0;
            last_flush = StdInstant::now();
        }
        commit_landed(&shared, &consumer, &producer, CommitMode::Async)?;

        if let Some(idle) = opts.exit_when_idle {
            // Idle means: partitions assigned, nothing new for `idle`, and at the high watermark.
            // A write in flight still has alerts to hand over.
            let alerts_done = dispatcher.as_ref().is_none_or(Dispatcher::is_idle) && {
                let s = shared.lock().unwrap_or_else(|e| e.into_inner());
                s.held.is_empty() && s.in_flight.is_none()
            };
            if last_message.elapsed() >= idle
                && pending == 0
                && alerts_done
                && caught_up(&shared, &consumer, &cfg.kafka.topic)
            {
                tracing::info!("idle: stopping");
                break;
            }
        }
    }

    // Graceful shutdown: flush and commit within the drain deadline.
    let drain = Duration::from_secs(cfg.pipeline.drain_timeout_secs);
    let started = StdInstant::now();
    shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain_deadline = Some(drain);
    match flush_and_commit(&shared, &consumer, &producer) {
        Ok(()) => tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            "flushed and committed; stopping"
        ),
        // Nothing is lost: the next owner rebuilds from the last checkpoint and re-reads the rest.
        Err(e) => tracing::warn!(
            error = %e,
            deadline = drain.as_secs(),
            "could not flush before the drain deadline; the next start redoes the last batch"
        ),
    }
    metrics.ready.store(false, Ordering::Relaxed);
    consumer.unsubscribe();
    Ok(())
}

/// The newest modification time and count of the holiday files (None when embedded).
fn holidays_stamp(dir: &str) -> Option<(std::time::SystemTime, usize)> {
    if dir.is_empty() {
        return None;
    }
    let entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .collect();
    let newest = entries
        .iter()
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()?;
    Some((newest, entries.len()))
}

/// Whether partitions are assigned and each has been read up to its high watermark.
fn caught_up(shared: &Arc<Mutex<Shared>>, consumer: &BaseConsumer<Context>, topic: &str) -> bool {
    let s = shared.lock().unwrap_or_else(|e| e.into_inner());
    !s.processors.is_empty()
        && s.processors.iter().all(|(&partition, p)| {
            consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(2))
                .is_ok_and(|(_, high)| p.next_offset as i64 >= high)
        })
}

/// Shutdown: writes everything pending, waits for it to land and commits.
fn flush_and_commit(
    shared: &Arc<Mutex<Shared>>,
    consumer: &BaseConsumer<Context>,
    producer: &ThreadedProducer<DefaultProducerContext>,
) -> anyhow::Result<()> {
    {
        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
        s.start_flush(None)?;
        s.finish_flush()?;
    }
    commit_landed(shared, consumer, producer, CommitMode::Sync)
}

/// Commits the offsets whose rows are in ClickHouse.
fn commit_landed(
    shared: &Arc<Mutex<Shared>>,
    consumer: &BaseConsumer<Context>,
    producer: &ThreadedProducer<DefaultProducerContext>,
    mode: CommitMode,
) -> anyhow::Result<()> {
    let Some(offsets) = shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take_committable()?
    else {
        return Ok(());
    };
    // Dead letters must reach their topic before the offsets that produced them are committed.
    // (A flush with nothing outstanding still costs a few milliseconds: skip it.)
    if producer.in_flight_count() > 0 {
        producer.flush(Duration::from_secs(30))?;
    }
    if let Err(e) = consumer.commit(&offsets, mode) {
        tracing::warn!(error = %e, "offset commit failed; clickhouse checkpoints stay authoritative");
    }
    Ok(())
}

/// Brings an evicted case back from the events stored in ClickHouse.
fn restore_evicted(
    p: &mut PartitionProcessor,
    payload: &[u8],
    rt: &Handle,
    client: &::clickhouse::Client,
) -> anyhow::Result<()> {
    let case_id = match crate::core::event::parse_event(payload, i64::MAX / 4) {
        Ok(e) => e.case_id,
        Err(_) => return Ok(()),
    };
    let payloads: Vec<String> = rt.block_on(
        client
            .query("SELECT payload FROM events FINAL WHERE case_id = ? AND topic = ? AND partition = ? ORDER BY offset")
            .bind(case_id.as_str())
            .bind(&p.origin.topic)
            .bind(p.origin.partition)
            .fetch_all::<String>(),
    )?;
    let mut scratch = Engine::new(p.engine.rules().clone(), p.engine.calendars().clone());
    for raw in &payloads {
        if let Ok(e) = crate::core::event::parse_event(raw.as_bytes(), i64::MAX / 4) {
            scratch.apply(&e);
        }
    }
    match scratch.snapshot_case(&case_id) {
        Some(snapshot) => p.engine.restore_case(&snapshot),
        None => p.engine.forget_eviction(&case_id),
    }
    Ok(())
}

/// Creates a topic when it does not exist yet (the broker may not auto-create topics).
pub async fn ensure_topic(cfg: &Config, topic: &str, partitions: i32) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("cannot create topic {t}: {e}"),
        }
    }
    Ok(())
}

/// Messages in a topic (the sum of its partitions' high watermarks; 0 when it does not exist).
pub fn topic_messages(cfg: &Config, topic: &str) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut total = 0;
    for t in metadata.topics() {
        if t.error().is_some() {
            continue;
        }
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            total += high - low.max(0);
        }
    }
    Ok(total)
}

/// The broker's limit: a consumer that only counts messages, with the same client settings as
/// `run`, until it has read `expected` of them (or the topic's size when 0). Returns the count
/// and the seconds from the first message to the last.
pub fn drain_count(cfg: &Config, topic: &str, expected: i64) -> anyhow::Result<(i64, f64)> {
    let expected = if expected > 0 {
        expected
    } else {
        topic_messages(cfg, topic)?
    };
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set(
            "group.id",
            format!("{}-drain-{}", cfg.kafka.group_id, std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "20");
    for (k, v) in &cfg.kafka.client {
        client.set(k, v);
    }
    let consumer: BaseConsumer = client.create()?;
    consumer.subscribe(&[topic])?;
    let (mut count, mut bytes) = (0i64, 0usize);
    let mut first: Option<StdInstant> = None;
    let deadline = StdInstant::now() + Duration::from_secs(3600);
    while count < expected && StdInstant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(StdInstant::now);
                count += 1;
                bytes += m.payload().map_or(0, <[u8]>::len);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "kafka error while draining"),
            None => {}
        }
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    tracing::info!(count, bytes, secs, "drained");
    Ok((count, secs))
}
