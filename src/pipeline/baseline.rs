//! `casewatch raw-store`: the baseline of `scripts/bench-e2e` (SPEC §7, "Targets"). The least
//! any Kafka → ClickHouse pipeline does: every message's payload with its topic, partition and
//! offset inserted into a plain MergeTree table, batched and with one insert in flight at a
//! time as casewatch's own flush does, and no logic at all.

use std::time::{Duration, Instant as StdInstant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use serde::Serialize;

use super::kafka::{consumer_config, topic_messages};
use crate::config::Config;

/// The baseline's table.
const TABLE: &str = "raw_events";

#[derive(clickhouse::Row, Serialize)]
struct RawRow {
    topic: String,
    partition: u32,
    offset: u64,
    payload: String,
}

/// Stores `expected` messages of `topic` (default: its size now) in `raw_events`, batched by
/// `pipeline.batch_events` or `pipeline.batch_millis`. Returns (messages, seconds from the
/// first message to the last insert landing).
pub(crate) fn raw_store(
    cfg: &Config,
    rt: &tokio::runtime::Runtime,
    topic: &str,
    expected: i64,
) -> anyhow::Result<(i64, f64)> {
    let expected = if expected > 0 {
        expected
    } else {
        topic_messages(cfg, topic)?
    };
    let client = crate::sinks::clickhouse::client(&cfg.clickhouse);
    rt.block_on(
        client
            .query("CREATE TABLE IF NOT EXISTS raw_events (topic String, partition UInt32, offset UInt64, payload String) ENGINE = MergeTree ORDER BY (topic, partition, offset)")
            .execute(),
    )?;
    let group = format!("{}-raw-{}", cfg.kafka.group_id, std::process::id());
    let consumer: BaseConsumer = consumer_config(&cfg.kafka, &group, false).create()?;
    consumer.subscribe(&[topic])?;
    let batch_events = cfg.pipeline.batch_events.max(1);
    let batch_time = Duration::from_millis(cfg.pipeline.batch_millis.max(1));
    let mut rows: Vec<RawRow> = Vec::with_capacity(batch_events);
    let mut in_flight: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;
    let (mut count, mut first, mut batch_start) = (0i64, None::<StdInstant>, StdInstant::now());
    let deadline = StdInstant::now() + Duration::from_secs(3600);
    while count < expected && StdInstant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            first.get_or_insert_with(StdInstant::now);
            count += 1;
            rows.push(RawRow {
                topic: m.topic().to_string(),
                partition: m.partition() as u32,
                offset: m.offset().max(0) as u64,
                payload: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            });
        }
        let full = rows.len() >= batch_events || count >= expected;
        if !rows.is_empty() && (full || batch_start.elapsed() >= batch_time) {
            if let Some(previous) = in_flight.take() {
                rt.block_on(previous)??;
            }
            let batch = std::mem::replace(&mut rows, Vec::with_capacity(batch_events));
            let client = client.clone();
            in_flight = Some(rt.spawn(async move {
                let mut insert = client.insert::<RawRow>(TABLE).await?;
                for r in &batch {
                    insert.write(r).await?;
                }
                insert.end().await?;
                Ok(())
            }));
            batch_start = StdInstant::now();
        }
    }
    if let Some(last) = in_flight.take() {
        rt.block_on(last)??;
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    tracing::info!(count, secs, "raw-stored");
    Ok((count, secs))
}
