//! The write side shared by `casewatch run` and `replay --sink clickhouse`.
//!
//! A drained batch is written by a task on the runtime while the caller reads and applies the
//! next one, so parsing and the engine overlap with the ClickHouse write. At most one write is
//! in flight: starting the next first waits for it, so batches land in order and memory is
//! bounded by two batches (backpressure: the caller does not read while it waits). `run`'s
//! loop starts a due flush early only when [`FlushPipeline::is_idle`] or its batch has grown
//! to twice its limits.

use std::time::{Duration, Instant as StdInstant};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::FLUSH_COUNTER;
use crate::sinks::clickhouse::rows::{AlertRecord, Batch};
use crate::sinks::clickhouse::{ClickhouseWriter, SinkError};

/// A batch whose rows and checkpoints are all in ClickHouse.
#[derive(Debug)]
pub(crate) struct Landed {
    /// The batch's alert rows, durable now (ready for delivery).
    pub(crate) alerts: Vec<AlertRecord>,
    /// The next offset of each partition of the batch (committable now).
    pub(crate) offsets: Vec<(i32, i64)>,
    pub(crate) rows: usize,
    /// From the start of the write to its end.
    pub(crate) seconds: f64,
}

/// A write running on the runtime: it gives back the batch's alerts, and the batch emptied
/// for the next one.
struct InFlight {
    task: JoinHandle<Result<(Vec<AlertRecord>, Batch), SinkError>>,
    offsets: Vec<(i32, i64)>,
    rows: usize,
    started: StdInstant,
}

/// One write in flight at a time, landing in order.
pub(crate) struct FlushPipeline {
    writer: ClickhouseWriter,
    rt: Handle,
    in_flight: Option<InFlight>,
    /// During shutdown: how long waiting for a write may take.
    deadline: Option<Duration>,
    /// The last landed batch, emptied: its vectors hold the next one.
    spare: Option<Batch>,
}

impl FlushPipeline {
    /// A pipeline writing with `writer` on the runtime of `rt`. It waits with `rt.block_on`,
    /// so it is used from a thread outside the runtime.
    pub(crate) fn new(writer: ClickhouseWriter, rt: Handle) -> Self {
        Self {
            writer,
            rt,
            in_flight: None,
            deadline: None,
            spare: None,
        }
    }

    /// An empty batch to drain the next one into: the last landed batch's vectors, already
    /// faulted in, when there is one.
    pub(crate) fn take_spare(&mut self) -> Batch {
        self.spare.take().unwrap_or_default()
    }

    /// The writer (its client reads ClickHouse too).
    pub(crate) fn writer(&self) -> &ClickhouseWriter {
        &self.writer
    }

    /// From now on waiting for a write fails after `deadline` (a drain at shutdown).
    pub(crate) fn set_deadline(&mut self, deadline: Duration) {
        self.deadline = Some(deadline);
    }

    /// Whether no write is in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.is_none()
    }

    /// Waits for the write in flight (returning it once landed), then starts writing `batch`
    /// with a new version; `offsets` come back with it in [`Landed`].
    pub(crate) fn start(
        &mut self,
        mut batch: Batch,
        offsets: Vec<(i32, i64)>,
    ) -> anyhow::Result<Option<Landed>> {
        let landed = self.finish()?;
        batch.set_version(FLUSH_COUNTER.next());
        let rows = batch.rows();
        let writer = self.writer.clone();
        // The batch is serialized, sent and its rows dropped on the runtime's threads.
        let task = self.rt.spawn(async move {
            writer.write(&batch).await?;
            if !batch.snapshots.is_empty() {
                // The checkpoints now refer to the new snapshots.
                super::snapshots::drop_superseded(writer.client(), &batch.snapshots).await;
            }
            let alerts = std::mem::take(&mut batch.alerts);
            batch.recycle();
            Ok((alerts, batch))
        });
        self.in_flight = Some(InFlight {
            task,
            offsets,
            rows,
            started: StdInstant::now(),
        });
        Ok(landed)
    }

    /// Waits for the write in flight, if any.
    pub(crate) fn finish(&mut self) -> anyhow::Result<Option<Landed>> {
        let Some(flight) = self.in_flight.take() else {
            return Ok(None);
        };
        let joined = match self.deadline {
            None => self.rt.block_on(flight.task),
            Some(d) => self
                .rt
                // The timer must be created inside the runtime (this thread is not in it).
                .block_on(async { tokio::time::timeout(d, flight.task).await })
                .map_err(|_| anyhow::anyhow!("drain deadline of {} s passed", d.as_secs()))?,
        };
        let (alerts, spare) =
            joined.map_err(|e| anyhow::anyhow!("the clickhouse write task failed: {e}"))??;
        self.spare = Some(spare);
        Ok(Some(Landed {
            alerts,
            offsets: flight.offsets,
            rows: flight.rows,
            seconds: flight.started.elapsed().as_secs_f64(),
        }))
    }

    /// The write in flight if it has landed already, without waiting.
    pub(crate) fn finish_if_done(&mut self) -> anyhow::Result<Option<Landed>> {
        if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.task.is_finished())
        {
            return self.finish();
        }
        Ok(None)
    }
}
