//! Kafka clients of casewatch: the consumer configuration (one builder for `run` and
//! `drain-count`), the dead-letter producer, topic creation and sizes.

use std::time::{Duration, Instant as StdInstant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use crate::config::{Config, KafkaConfig};

/// The consumer settings of every casewatch consumer in group `group_id`: offsets committed by
/// casewatch only (after its rows are in ClickHouse), reading from the start of a new group,
/// short fetch waits, and `kafka.client` on top. `static_member` adds `kafka.instance_id`
/// (static group membership) when it is set.
pub(crate) fn consumer_config(
    kafka: &KafkaConfig,
    group_id: &str,
    static_member: bool,
) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "20")
        // Once the prefetch queue is full, librdkafka waits this long before fetching again
        // (default 1 s): a consumer that empties the queue sooner would stall for the rest.
        .set("fetch.queue.backoff.ms", "20")
        // Flushes block polling while ClickHouse is down; stay in the group meanwhile.
        .set("max.poll.interval.ms", "3600000")
        // A crashed consumer holds its partitions until its session times out.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000");
    if static_member && !kafka.instance_id.is_empty() {
        client.set("group.instance.id", &kafka.instance_id);
    }
    for (k, v) in &kafka.client {
        client.set(k, v);
    }
    client
}

/// The dead-letter topic's producer: each refused message with its reason and origin headers.
pub(super) struct DeadLetters {
    producer: ThreadedProducer<DefaultProducerContext>,
    /// The dead-letter topic.
    topic: String,
    /// The topic the messages came from.
    source: String,
}

impl DeadLetters {
    pub(crate) fn new(kafka: &KafkaConfig) -> anyhow::Result<Self> {
        let mut p = ClientConfig::new();
        p.set("bootstrap.servers", &kafka.brokers)
            .set("linger.ms", "5");
        for (k, v) in &kafka.client {
            p.set(k, v);
        }
        Ok(Self {
            producer: p.create()?,
            topic: kafka.dead_letter_topic.clone(),
            source: kafka.topic.clone(),
        })
    }

    /// Sends one dead letter (the row in ClickHouse is the durable copy; a refusal is logged).
    pub(crate) fn send(
        &self,
        partition: i32,
        offset: u64,
        key: &[u8],
        payload: &[u8],
        reason: &str,
    ) {
        let origin = format!("{}/{partition}/{offset}", self.source);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "casewatch-reason",
                value: Some(reason.as_bytes()),
            })
            .insert(Header {
                key: "casewatch-origin",
                value: Some(origin.as_bytes()),
            });
        let record = BaseRecord::to(&self.topic)
            .payload(payload)
            .key(key)
            .headers(headers);
        if let Err((e, _)) = self.producer.send(record) {
            tracing::warn!(error = %e, "dead-letter topic refused a record; it is kept in clickhouse");
        }
    }

    /// Waits until every dead letter sent is acknowledged (before committing their offsets).
    /// The producer's own thread serves the acknowledgements, so this only watches the count:
    /// rdkafka's `flush` would poll in steps of 100 ms that the producer's thread answers
    /// first, and wait 100 ms for every acknowledgement.
    pub(crate) fn flush(&self) -> anyhow::Result<()> {
        let deadline = StdInstant::now() + Duration::from_secs(30);
        while self.producer.in_flight_count() > 0 {
            if StdInstant::now() >= deadline {
                anyhow::bail!("the dead-letter topic did not acknowledge its records within 30 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// Creates a topic when it does not exist yet (the broker may not auto-create topics).
pub(crate) async fn ensure_topic(cfg: &Config, topic: &str, partitions: i32) -> anyhow::Result<()> {
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
pub(crate) fn topic_messages(cfg: &Config, topic: &str) -> anyhow::Result<i64> {
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
pub(crate) fn drain_count(cfg: &Config, topic: &str, expected: i64) -> anyhow::Result<(i64, f64)> {
    let expected = if expected > 0 {
        expected
    } else {
        topic_messages(cfg, topic)?
    };
    let group = format!("{}-drain-{}", cfg.kafka.group_id, std::process::id());
    let consumer: BaseConsumer = consumer_config(&cfg.kafka, &group, false).create()?;
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
