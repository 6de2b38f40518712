//! `casewatch run`'s consumer loop: a synchronous `BaseConsumer` polled on one dedicated
//! thread; ClickHouse I/O runs on the tokio runtime through `Handle::block_on`. Keeping the loop
//! synchronous lets rdkafka's rebalance callbacks (`rebalance`), which run inside
//! `poll` on this thread, flush and commit revoked partitions and rebuild assigned ones before
//! any of their messages are handled.
//!
//! The loop only dispatches: each poll hands a message to `on_message`, runs
//! the periodic work of `on_tick` when it is due, starts a flush when one is
//! due (`flush_if_due`), commits what has landed, and checks for idleness; a
//! signal ends it with `drain`.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use tokio::runtime::Handle;

use super::flush::FlushPipeline;
use super::kafka::{consumer_config, DeadLetters};
use super::rebalance::{lock, Context, Shared};
use super::{calendar_report, snapshots, Handled, PartitionProcessor};
use crate::alerts::deliver::Dispatcher;
use crate::config::{ClockMode, Config, PipelineConfig};
use crate::core::calendar::WorkCalendar;
use crate::core::engine::Engine;
use crate::metrics::Metrics;
use crate::sinks::clickhouse::ClickhouseWriter;

/// At most this many messages are handled between two rounds of the loop's periodic checks
/// (a few milliseconds of work: ticks, flushes and commits stay on time).
const BURST: usize = 1024;

/// How `run` ends.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RunOptions {
    /// Stop once no message has arrived for this long and every assigned partition is flushed
    /// (for demos, benchmarks and tests; a service runs until it is signalled).
    pub(crate) exit_when_idle: Option<Duration>,
}

/// A periodic timer: due once every `every`.
struct Every {
    every: Duration,
    last: StdInstant,
}

impl Every {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: StdInstant::now(),
        }
    }

    /// Whether the period has passed at `now`; if so the next one starts.
    fn due(&mut self, now: StdInstant) -> bool {
        if now.duration_since(self.last) < self.every {
            return false;
        }
        self.last = now;
        true
    }
}

/// The wall clock of the `future_timestamp` rule and of live engine time, read at most every
/// 100 ms (its tolerance is minutes), not per message; always fresh after a long wait (a flush
/// while ClickHouse is down), since it is refreshed right after each poll.
struct WallClock {
    now: i64,
    read: Every,
}

impl WallClock {
    fn new() -> Self {
        Self {
            now: chrono::Utc::now().timestamp(),
            read: Every::new(Duration::from_millis(100)),
        }
    }

    fn refresh(&mut self, now: StdInstant) {
        if self.read.due(now) {
            self.now = chrono::Utc::now().timestamp();
        }
    }
}

/// The holiday files as last loaded: reloaded when the directory changes (SPEC §2).
struct CalendarWatch {
    stamp: Option<(std::time::SystemTime, usize)>,
    /// The default calendar (coverage and "today" for the missing-year warning).
    default: Arc<WorkCalendar>,
    warn_from: (u32, u32),
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

/// The periodic work of the loop.
struct Timers {
    tick: Every,
    /// When the last flush started (its periods are `flush_due`'s).
    flushed: StdInstant,
    lag: Every,
    calendar: Every,
    rescan: Every,
}

/// The consumer of `casewatch run` (see the module doc).
pub(crate) struct ConsumerLoop {
    cfg: Config,
    shared: Arc<Mutex<Shared>>,
    /// Never dropped: closing leaves the group, which can hang forever against tansu (seen in
    /// rd_kafka_consumer_close), and an error return would then never be reported. Everything
    /// is flushed and committed before `run` returns; the broker expires the member after its
    /// session timeout, and a static `kafka.instance_id` gets its partitions back at once.
    consumer: std::mem::ManuallyDrop<BaseConsumer<Context>>,
    dead_letters: DeadLetters,
    metrics: Arc<Metrics>,
    dispatcher: Option<Dispatcher>,
    timers: Timers,
    wall: WallClock,
    calendar: CalendarWatch,
    /// The last known high watermark per partition (from librdkafka's statistics).
    watermarks: Arc<Mutex<HashMap<i32, i64>>>,
    /// When the last message arrived (cells: a message borrows the consumer while it is handled).
    last_message: Cell<StdInstant>,
    /// Dead letters handed in since the last flush (they make a flush due too).
    pending_dead_letters: Cell<usize>,
}

impl ConsumerLoop {
    /// A consumer for `cfg`, writing through `rt`, reporting into `metrics`.
    pub(crate) fn new(cfg: &Config, rt: &Handle, metrics: &Arc<Metrics>) -> anyhow::Result<Self> {
        let errors = metrics.clone();
        let writer = ClickhouseWriter::new(crate::sinks::clickhouse::client(&cfg.clickhouse))
            .with_error_hook(Arc::new(move |_e: &str| errors.clickhouse_errors.inc()))
            .with_attempt_timeout(Duration::from_secs(cfg.clickhouse.timeout_secs.max(1)))
            .with_parallel_rows(cfg.clickhouse.parallel_insert_rows)
            .with_concurrent_inserts(cfg.clickhouse.concurrent_inserts);
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
        let flush = FlushPipeline::new(writer, rt.clone());
        let shared = Arc::new(Mutex::new(Shared::new(
            cfg.clone(),
            rt.clone(),
            flush,
            metrics.clone(),
            dispatcher.clone(),
        )));
        let watermarks = Arc::new(Mutex::new(HashMap::new()));
        let consumer = consumer_config(&cfg.kafka, &cfg.kafka.group_id, true)
            // The statistics bring the partitions' high watermarks (the catch-up state).
            .set("statistics.interval.ms", "1000")
            .create_with_context(Context {
                shared: shared.clone(),
                topic: cfg.kafka.topic.clone(),
                watermarks: watermarks.clone(),
            })?;
        let pipeline = &cfg.pipeline;
        Ok(Self {
            cfg: cfg.clone(),
            shared,
            consumer: std::mem::ManuallyDrop::new(consumer),
            dead_letters: DeadLetters::new(&cfg.kafka)?,
            metrics: metrics.clone(),
            dispatcher,
            timers: Timers {
                tick: Every::new(Duration::from_millis(pipeline.tick_millis)),
                flushed: StdInstant::now(),
                lag: Every::new(Duration::from_secs(2)),
                calendar: Every::new(Duration::from_secs(10)),
                rescan: Every::new(Duration::from_secs(cfg.alerts.rescan_secs.max(1))),
            },
            wall: WallClock::new(),
            calendar: CalendarWatch {
                stamp: holidays_stamp(&cfg.calendar.holidays_dir),
                default: cfg.calendars()?.default,
                warn_from: cfg.calendar.warn_from()?,
            },
            watermarks,
            last_message: Cell::new(StdInstant::now()),
            pending_dead_letters: Cell::new(0),
        })
    }

    /// Consumes until `stop` is set (or idleness, with `exit_when_idle`), then drains.
    pub(crate) fn run(mut self, stop: &Arc<AtomicBool>, opts: RunOptions) -> anyhow::Result<()> {
        // A takeover waiting for ClickHouse gives up when the service is stopped.
        lock(&self.shared).stop = stop.clone();
        self.consumer.subscribe(&[&self.cfg.kafka.topic])?;
        self.metrics.ready.store(true, Ordering::Relaxed);
        tracing::info!(topic = %self.cfg.kafka.topic, group = %self.cfg.kafka.group_id, "consuming");
        loop {
            if let Some(fatal) = lock(&self.shared).fatal.take() {
                anyhow::bail!(fatal);
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let now = self.poll_burst()?;
            if self.timers.tick.due(now) {
                self.on_tick(now);
            }
            let pending = self.flush_if_due(now)?;
            self.commit_landed(CommitMode::Async)?;
            if self.is_idle(opts, pending) {
                tracing::info!("idle: stopping");
                break;
            }
        }
        self.drain();
        Ok(())
    }

    /// One poll, and while messages are waiting up to [`BURST`] more without waiting, each
    /// handed to `on_message`; then every partition's catch-up state is decided. The loop's
    /// periodic checks run once per burst, not per message. Returns when the burst ended.
    fn poll_burst(&mut self) -> anyhow::Result<StdInstant> {
        let mut polled = self.consumer.poll(Duration::from_millis(50));
        // The clocks are read once per burst: a burst takes a few milliseconds.
        let now = StdInstant::now();
        self.wall.refresh(now);
        let mut handled = 0;
        loop {
            match polled {
                Some(Ok(msg)) => self.on_message(&msg, now)?,
                Some(Err(e)) => {
                    self.metrics.broker_errors.inc();
                    self.metrics.broker_up.set(0);
                    tracing::warn!(error = %e, "kafka error; retrying");
                    break;
                }
                None => break,
            }
            handled += 1;
            if handled >= BURST {
                break;
            }
            polled = self.consumer.poll(Duration::ZERO);
        }
        if handled > 0 {
            let mut guard = lock(&self.shared);
            for (&partition, p) in guard.processors.iter_mut() {
                catch_up_state(&self.watermarks, &self.cfg, partition, p, &self.metrics);
            }
        }
        Ok(now)
    }

    /// One message: handed to its partition's processor; a dead letter also goes to its topic.
    fn on_message(&self, msg: &BorrowedMessage<'_>, now: StdInstant) -> anyhow::Result<()> {
        self.last_message.set(now);
        self.metrics.broker_up.set(1);
        let (partition, offset) = (msg.partition(), msg.offset().max(0) as u64);
        let payload = msg.payload().unwrap_or_default();
        let mut guard = lock(&self.shared);
        let s = &mut *guard;
        let Some(p) = s.processors.get_mut(&partition) else {
            tracing::warn!(
                partition,
                "message for a partition not assigned here; skipped"
            );
            return Ok(());
        };
        self.metrics.consumed.inc();
        let key = msg.key().unwrap_or_default();
        let mut handled = p.handle(offset, payload, self.wall.now, Some(key));
        if handled == Handled::Evicted {
            // The case's events are read back from ClickHouse: let the write land first.
            s.finish_flush()?;
            if let Ok(e) = crate::core::event::parse_event(payload, i64::MAX / 4) {
                restore_evicted(s, partition, &e.case_id, offset)?;
            }
            if let Some(p) = s.processors.get_mut(&partition) {
                handled = p.handle(offset, payload, self.wall.now, Some(key));
            }
        }
        match handled {
            Handled::Applied | Handled::Evicted => self.metrics.applied.inc(),
            Handled::Duplicate => self.metrics.duplicates.inc(),
            Handled::DeadLetter(reason) => {
                self.metrics.dead_letter(&reason.to_string());
                self.pending_dead_letters
                    .set(self.pending_dead_letters.get() + 1);
                self.dead_letters
                    .send(partition, offset, key, payload, &reason.to_string());
            }
        }
        Ok(())
    }

    /// The periodic work: live engine time, holiday reloads, gauges, lag and alert rescans.
    fn on_tick(&mut self, now: StdInstant) {
        {
            let mut guard = lock(&self.shared);
            let s = &mut *guard;
            for (&partition, p) in s.processors.iter_mut() {
                catch_up_state(&self.watermarks, &self.cfg, partition, p, &self.metrics);
                if p.catching_up {
                    // A partition that falls behind again holds its cards until it catches up.
                    s.held.insert(partition);
                } else if self.cfg.engine.clock == ClockMode::Wall {
                    p.engine.advance_to(self.wall.now);
                }
            }
        }
        if self.timers.calendar.due(now) {
            self.reload_calendars_if_changed();
            self.evict_ended_cases();
        }
        self.publish_gauges();
        if self.timers.lag.due(now) {
            self.drop_lost_partitions();
            let caught_up = self.measure_lag();
            self.rescan_alerts(now, &caught_up);
        }
    }

    /// Reloads the holiday files when the directory changed; open cases are recomputed.
    fn reload_calendars_if_changed(&mut self) {
        let stamp = holidays_stamp(&self.cfg.calendar.holidays_dir);
        if stamp == self.calendar.stamp {
            return;
        }
        self.calendar.stamp = stamp;
        match self.cfg.calendars() {
            Ok(calendars) => {
                self.calendar.default = calendars.default.clone();
                for p in lock(&self.shared).processors.values_mut() {
                    p.engine.reload_calendars(calendars.clone());
                }
                tracing::info!(dir = %self.cfg.calendar.holidays_dir, "holiday data changed: calendars reloaded, deadlines recomputed");
            }
            Err(e) => {
                tracing::warn!(error = %e, "holiday data changed but cannot be read; keeping the old calendars")
            }
        }
    }

    /// Ended cases leave memory `engine.closed_case_retention_days` after their end (SPEC §7); a
    /// late event restores one from its stored events (found through `case_event_offsets`).
    fn evict_ended_cases(&self) {
        let retention =
            self.cfg.engine.closed_case_retention_days.max(0) * crate::core::calendar::DAY;
        let mut evicted = 0;
        for p in lock(&self.shared).processors.values_mut() {
            evicted += p
                .engine
                .evict_ended_before(p.engine.now().saturating_sub(retention));
        }
        if evicted > 0 {
            self.metrics.cases_evicted.add(evicted as u64);
            tracing::debug!(evicted, "ended cases left memory after their retention");
        }
    }

    /// Open cases, and the calendar coverage report (logged when it changes).
    fn publish_gauges(&self) {
        let s = lock(&self.shared);
        let engines = || s.processors.values().map(|p| &p.engine);
        let open: usize = engines().map(Engine::open_case_count).sum();
        self.metrics.cases_in_memory.set(open as i64);
        let held: usize = engines().map(Engine::case_count).sum();
        self.metrics.cases_held.set(held as i64);
        self.metrics
            .set_assigned(!s.processors.is_empty(), StdInstant::now());
        let report = calendar_report(
            engines(),
            &self.calendar.default,
            self.wall.now,
            self.calendar.warn_from,
        );
        if self.metrics.set_calendar(report) {
            for line in self.metrics.calendar_lines() {
                tracing::warn!("{line}");
            }
        }
    }

    /// Partitions another consumer has taken over since (it claimed a newer epoch, SPEC §7):
    /// this one drops their state and unwritten rows, so it writes nothing more for them (and
    /// what it wrote late loses against the new owner's rows by its versions).
    fn drop_lost_partitions(&self) {
        let mut s = lock(&self.shared);
        if s.processors.is_empty() {
            return;
        }
        let client = s.flush.writer().client().clone();
        let claimed = match s
            .rt
            .block_on(snapshots::claimed_epochs(&client, &self.cfg.kafka.topic))
        {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the partitions' owners; checked again later");
                return;
            }
        };
        let lost: Vec<(i32, u64, u64)> = s
            .processors
            .iter()
            .filter_map(|(&partition, p)| {
                let newest = *claimed.get(&p.origin.partition)?;
                (newest > p.epoch).then_some((partition, p.epoch, newest))
            })
            .collect();
        for (partition, epoch, newest) in lost {
            tracing::warn!(
                partition,
                epoch,
                newest,
                "partition taken over by another consumer: its state and unwritten rows are dropped here"
            );
            s.forget_partition(partition);
        }
    }

    /// Lag of every assigned partition (one watermark request each); releases the held
    /// partitions that are within `alerts.hold_lag` and returns them.
    fn measure_lag(&self) -> Vec<i32> {
        let mut s = lock(&self.shared);
        let mut caught_up = Vec::new();
        for (&partition, p) in &s.processors {
            let watermarks = self.consumer.fetch_watermarks(
                &self.cfg.kafka.topic,
                partition,
                Duration::from_millis(500),
            );
            match watermarks {
                Ok((_, high)) => {
                    self.metrics.broker_up.set(1);
                    self.watermarks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(partition, high);
                    let lag = high - p.next_offset as i64;
                    self.metrics.set_lag(partition, Some(lag));
                    if lag <= self.cfg.alerts.hold_lag
                        && !p.catching_up
                        && s.held.contains(&partition)
                    {
                        caught_up.push(partition);
                    }
                }
                Err(e) => {
                    self.metrics.broker_up.set(0);
                    tracing::warn!(error = %e, "broker unreachable; retrying");
                }
            }
        }
        for p in &caught_up {
            s.held.remove(p);
        }
        caught_up
    }

    /// The outbox scan: the partitions that just caught up deliver what was held (if it still
    /// holds), and every `alerts.rescan_secs` all partitions that are not held.
    fn rescan_alerts(&mut self, now: StdInstant, caught_up: &[i32]) {
        let Some(d) = &self.dispatcher else {
            return;
        };
        let topic = &self.cfg.kafka.topic;
        let partitions: Vec<i32> = if self.timers.rescan.due(now) {
            let s = lock(&self.shared);
            s.processors
                .keys()
                .filter(|p| !s.held.contains(p))
                .copied()
                .collect()
        } else {
            caught_up.to_vec()
        };
        d.rescan(
            partitions
                .into_iter()
                .map(|p| (topic.clone(), p as u32))
                .collect(),
        );
    }

    /// Starts a flush when the batch is full or old enough; returns the events pending.
    fn flush_if_due(&mut self, now: StdInstant) -> anyhow::Result<usize> {
        let mut s = lock(&self.shared);
        s.finish_flush_if_done()?;
        let pending = Pending {
            events: s.processors.values().map(|p| p.pending_events()).sum(),
            bytes: s.processors.values().map(|p| p.pending_bytes()).sum(),
            dead_letters: self.pending_dead_letters.get(),
            since: now.duration_since(self.timers.flushed),
            backlog: s
                .processors
                .values()
                .all(|p| p.catching_up || p.pending_events() == 0),
        };
        let due = flush_due(&pending, &self.cfg.pipeline)
            && (s.flush.is_idle() || !may_wait_for_landing(&pending, &self.cfg.pipeline));
        if due {
            s.start_flush(None)?;
            self.pending_dead_letters.set(0);
            self.timers.flushed = StdInstant::now();
        }
        Ok(pending.events)
    }

    /// Commits the offsets whose rows are in ClickHouse.
    fn commit_landed(&self, mode: CommitMode) -> anyhow::Result<()> {
        let Some(offsets) = lock(&self.shared).take_committable()? else {
            return Ok(());
        };
        // Dead letters must reach their topic before the offsets that produced them are committed.
        self.dead_letters.flush()?;
        if let Err(e) = self.consumer.commit(&offsets, mode) {
            tracing::warn!(error = %e, "offset commit failed; clickhouse checkpoints stay authoritative");
        }
        Ok(())
    }

    /// With `exit_when_idle`: partitions assigned, nothing new for that long, every partition
    /// at its high watermark, nothing pending and every alert handed over.
    fn is_idle(&self, opts: RunOptions, pending: usize) -> bool {
        let Some(idle) = opts.exit_when_idle else {
            return false;
        };
        if self.last_message.get().elapsed() < idle || pending > 0 {
            return false;
        }
        let alerts_done = self.dispatcher.as_ref().is_none_or(Dispatcher::is_idle) && {
            let s = lock(&self.shared);
            s.held.is_empty() && s.flush.is_idle()
        };
        alerts_done && self.caught_up()
    }

    /// Whether partitions are assigned and each has been read up to its high watermark.
    fn caught_up(&self) -> bool {
        let s = lock(&self.shared);
        !s.processors.is_empty()
            && s.processors.iter().all(|(&partition, p)| {
                self.consumer
                    .fetch_watermarks(&self.cfg.kafka.topic, partition, Duration::from_secs(2))
                    .is_ok_and(|(_, high)| p.next_offset as i64 >= high)
            })
    }

    /// Graceful shutdown: flush and commit within the drain deadline. Nothing is lost when it
    /// fails: the next owner rebuilds from the last checkpoint and re-reads the rest.
    fn drain(self) {
        let drain = Duration::from_secs(self.cfg.pipeline.drain_timeout_secs);
        let started = StdInstant::now();
        let flushed = {
            let mut s = lock(&self.shared);
            s.flush.set_deadline(drain);
            s.start_flush(None).and_then(|()| s.finish_flush())
        };
        match flushed.and_then(|()| self.commit_landed(CommitMode::Sync)) {
            Ok(()) => tracing::info!(
                seconds = started.elapsed().as_secs_f64(),
                "flushed and committed; stopping"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                deadline = drain.as_secs(),
                "could not flush before the drain deadline; the next start redoes the last batch"
            ),
        }
        self.metrics.ready.store(false, Ordering::Relaxed);
        self.consumer.unsubscribe();
    }
}

/// Restores an evicted case from its stored events before its late event is applied. A read
/// that a retry can fix (ClickHouse restarting, a shard away) is retried with backoff until it
/// succeeds or the service stops; a stop, or an error no retry fixes, ends the service, and
/// the next start re-reads the event from the checkpoint.
fn restore_evicted(
    s: &mut Shared,
    partition: i32,
    case_id: &str,
    offset: u64,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(200);
    let mut cut_reads = 0;
    loop {
        let Some(p) = s.processors.get_mut(&partition) else {
            return Ok(());
        };
        let client = s.flush.writer().client();
        let restored = s.rt.block_on(snapshots::restore_case(
            client,
            &p.origin,
            &mut p.engine,
            case_id,
            offset,
        ));
        match restored {
            Ok(()) => return Ok(()),
            Err(e)
                if crate::sinks::clickhouse::writer::read_is_transient(&e, &mut cut_reads)
                    && !s.stop.load(Ordering::Relaxed) =>
            {
                tracing::warn!(partition, case_id, error = %e, "cannot restore an evicted case from clickhouse; retrying");
                // In small steps, so that a stop is seen at once.
                let until = StdInstant::now() + backoff;
                while StdInstant::now() < until && !s.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(anyhow::anyhow!("restoring evicted case {case_id}: {e}")),
        }
    }
}

/// What waits to be flushed.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Events and dead letters handed in since the last flush.
    events: usize,
    /// Their payloads' bytes.
    bytes: usize,
    /// Dead letters among them.
    dead_letters: usize,
    /// Time since the last flush.
    since: Duration,
    /// Every partition with something to write is catching up.
    backlog: bool,
}

/// Whether a flush is due: the batch is full (`pipeline.batch_events`, `batch_bytes`) or old
/// enough (`batch_millis`), and with nothing pending, a checkpoint every four periods. A
/// backlog delivers no cards (SPEC §5), so its batches may grow `catch_up_batch_scale` times:
/// fewer, larger inserts cost ClickHouse less per event.
fn flush_due(p: &Pending, pipeline: &PipelineConfig) -> bool {
    let scale = batch_scale(p, pipeline);
    let period = Duration::from_millis(pipeline.batch_millis);
    p.events >= pipeline.batch_events * scale
        || p.bytes >= pipeline.batch_bytes * scale
        || (p.since >= period * scale as u32 && (p.events > 0 || p.dead_letters > 0))
        || p.since >= period * 4
}

/// How many times the live batch limits a batch may grow: `catch_up_batch_scale` on a
/// backlog, else 1.
fn batch_scale(p: &Pending, pipeline: &PipelineConfig) -> usize {
    if p.backlog {
        pipeline.catch_up_batch_scale.max(1)
    } else {
        1
    }
}

/// Whether a due flush may wait for the write in flight to land instead of waiting for it
/// here: the loop goes on reading meanwhile, up to twice the batch limits, and flushes once it
/// has landed (the next write starts then either way, and the consumer thread does not idle).
fn may_wait_for_landing(p: &Pending, pipeline: &PipelineConfig) -> bool {
    let scale = batch_scale(p, pipeline);
    p.events < 2 * pipeline.batch_events * scale && p.bytes < 2 * pipeline.batch_bytes * scale
}

/// Decides from the last known high watermark (no broker request) whether a partition is
/// catching up (SPEC §2); logs a change and reports the state.
fn catch_up_state(
    watermarks: &Mutex<HashMap<i32, i64>>,
    cfg: &Config,
    partition: i32,
    p: &mut PartitionProcessor,
    metrics: &Metrics,
) {
    let known = watermarks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&partition)
        .copied();
    let Some(high) = known else {
        return; // not known yet: stays as it is (a takeover starts catching up)
    };
    let lag = high - p.next_offset as i64;
    let catching_up = lag > cfg.pipeline.catch_up_lag;
    if catching_up != p.catching_up {
        p.catching_up = catching_up;
        if catching_up {
            tracing::info!(
                partition,
                lag,
                "catching up: engine time follows the events"
            );
        } else {
            tracing::info!(
                partition,
                lag,
                "caught up: engine time follows the wall clock"
            );
        }
    }
    metrics.set_catching_up(partition, Some(catching_up));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline() -> PipelineConfig {
        let cfg = Config::load(None, &HashMap::new()).expect("the embedded defaults load");
        assert_eq!(
            (
                cfg.pipeline.batch_events,
                cfg.pipeline.batch_millis,
                cfg.pipeline.catch_up_batch_scale
            ),
            (50_000, 500, 4),
            "the defaults this test is written for"
        );
        cfg.pipeline
    }

    fn pending(events: usize, since_ms: u64, backlog: bool) -> Pending {
        Pending {
            events,
            bytes: events * 300,
            dead_letters: 0,
            since: Duration::from_millis(since_ms),
            backlog,
        }
    }

    #[test]
    fn a_live_batch_is_flushed_when_full_or_half_a_second_old() {
        let p = pipeline();
        assert!(flush_due(&pending(50_000, 10, false), &p));
        assert!(!flush_due(&pending(49_999, 10, false), &p));
        assert!(flush_due(&pending(1, 500, false), &p));
        assert!(!flush_due(&pending(1, 499, false), &p));
        assert!(
            !flush_due(&pending(0, 1_999, false), &p),
            "nothing to write"
        );
        assert!(
            flush_due(&pending(0, 2_000, false), &p),
            "a checkpoint now and then"
        );
        let dead_letters_only = Pending {
            dead_letters: 3,
            ..pending(0, 500, false)
        };
        assert!(flush_due(&dead_letters_only, &p));
        let bytes = Pending {
            bytes: p.batch_bytes,
            ..pending(10, 10, false)
        };
        assert!(flush_due(&bytes, &p));
    }

    #[test]
    fn a_backlog_batch_grows_four_times() {
        let p = pipeline();
        assert!(!flush_due(&pending(50_000, 10, true), &p));
        assert!(!flush_due(&pending(199_999, 10, true), &p));
        assert!(flush_due(&pending(200_000, 10, true), &p));
        assert!(!flush_due(&pending(1, 1_999, true), &p));
        assert!(flush_due(&pending(1, 2_000, true), &p));
        let bytes = Pending {
            bytes: p.batch_bytes,
            ..pending(10, 10, true)
        };
        assert!(!flush_due(&bytes, &p));
        let once = PipelineConfig {
            catch_up_batch_scale: 1,
            ..p
        };
        assert!(
            flush_due(&pending(50_000, 10, true), &once),
            "scale 1: as live"
        );
    }

    #[test]
    fn a_due_batch_waits_for_the_write_in_flight_up_to_twice_its_limits() {
        let p = pipeline();
        assert!(may_wait_for_landing(&pending(99_999, 10, false), &p));
        assert!(!may_wait_for_landing(&pending(100_000, 10, false), &p));
        assert!(may_wait_for_landing(&pending(399_999, 10, true), &p));
        assert!(!may_wait_for_landing(&pending(400_000, 10, true), &p));
        let bytes = Pending {
            bytes: 2 * p.batch_bytes,
            ..pending(10, 10, false)
        };
        assert!(!may_wait_for_landing(&bytes, &p));
    }
}
