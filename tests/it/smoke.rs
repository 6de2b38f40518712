//! The real stack works on this machine: the broker takes and serves a consumer group, and
//! ClickHouse takes inserts and answers `FINAL` reads, through the crates casewatch uses.

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::support::{TestDb, TestTopics};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_round_trip_through_a_consumer_group() {
    let topics = TestTopics::new(1, 3).await;
    let topic = topics.name(0).to_string();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &topics.brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for i in 0..300 {
        let key = format!("case-{}", i % 17);
        let payload = format!("{{\"n\":{i}}}");
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
    }

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &topics.brokers)
        .set("group.id", format!("{topic}-group"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "20")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 300 {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .expect("all records within 60 s")
            .unwrap();
        let text = std::str::from_utf8(msg.payload().unwrap())
            .unwrap()
            .to_string();
        seen.insert(text);
        consumer.store_offset_from_message(&msg).unwrap();
    }
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    assert_eq!(seen.len(), 300);
    let committed = consumer.committed(Duration::from_secs(10)).unwrap();
    let total: i64 = committed
        .elements()
        .iter()
        .filter_map(|e| e.offset().to_raw())
        .sum();
    assert_eq!(total, 300, "committed offsets cover every record");
}

#[derive(clickhouse::Row, serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Row {
    id: String,
    value: u64,
    version: u64,
}

#[tokio::test]
async fn clickhouse_insert_and_final_read() {
    let db = TestDb::new().await;
    let client = db.client();
    client
        .query("CREATE TABLE t (id String, value UInt64, version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY id")
        .execute()
        .await
        .unwrap();
    for version in 1..=3u64 {
        let mut insert = client.insert::<Row>("t").await.unwrap();
        for id in ["a", "b"] {
            insert
                .write(&Row {
                    id: id.into(),
                    value: version * 10,
                    version,
                })
                .await
                .unwrap();
        }
        insert.end().await.unwrap();
    }
    let rows: Vec<Row> = client
        .query("SELECT id, value, version FROM t FINAL ORDER BY id")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            Row {
                id: "a".into(),
                value: 30,
                version: 3
            },
            Row {
                id: "b".into(),
                value: 30,
                version: 3
            }
        ]
    );
}
