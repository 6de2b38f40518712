//! Test support for the real services started by `scripts/services up`: each test gets its own
//! ClickHouse database and its own Kafka topics (unique names), dropped when the guard drops.
//! A missing service is a test failure with a message saying how to start it, never a skip.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

/// ClickHouse HTTP URL of the test services.
pub fn clickhouse_url() -> String {
    std::env::var("CASEWATCH_TEST_CLICKHOUSE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:18123".into())
}

/// Bootstrap brokers of the test services.
pub fn kafka_brokers() -> String {
    std::env::var("CASEWATCH_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// A name no other test (or earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

fn require(what: &str, addr: &str) {
    let sock = addr
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let ok = std::net::TcpStream::connect_timeout(
        &sock.parse().expect("service address"),
        Duration::from_secs(2),
    )
    .is_ok();
    assert!(
        ok,
        "{what} is not reachable at {addr}: start the services with `scripts/services up`"
    );
}

/// A fresh ClickHouse database, dropped on drop.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        Self::at(&clickhouse_url()).await
    }

    /// A fresh database on the ClickHouse at `url`.
    pub async fn at(url: &str) -> TestDb {
        let url = url.to_string();
        require("ClickHouse", &url);
        let name = unique_name("cw_test");
        let db = TestDb { name, url };
        db.admin()
            .query(&format!("CREATE DATABASE {}", db.name))
            .execute()
            .await
            .expect("create test database");
        db
    }

    /// A client without a database (for DDL).
    pub fn admin(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(&self.url)
            .with_validation(false)
    }

    /// A client bound to this database.
    pub fn client(&self) -> clickhouse::Client {
        self.admin().with_database(&self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        if std::thread::panicking() && std::env::var_os("CASEWATCH_TEST_KEEP_FAILED").is_some() {
            eprintln!("kept database {name} of the failed test");
            return;
        }
        // Drop runs outside async context guarantees: use a short-lived runtime on a thread.
        cleanup_blocking(async move {
            let c = clickhouse::Client::default()
                .with_url(&url)
                .with_validation(false);
            let _ = c
                .query(&format!("DROP DATABASE IF EXISTS {name}"))
                .execute()
                .await;
        });
    }
}

/// Kafka topics of one test, deleted on drop.
pub struct TestTopics {
    pub brokers: String,
    pub names: Vec<String>,
}

impl TestTopics {
    /// Creates `count` topics with `partitions` partitions each.
    pub async fn new(count: usize, partitions: i32) -> TestTopics {
        let brokers = kafka_brokers();
        require("the Kafka broker", &brokers);
        let names: Vec<String> = (0..count).map(|_| unique_name("cw-test")).collect();
        let admin = admin_client(&brokers);
        let new: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
            .collect();
        let results = admin
            .create_topics(
                &new,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create topics");
        for r in results {
            r.expect("topic created");
        }
        // Producing right after creation can hit UnknownPartition: wait for the metadata.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for name in &names {
            loop {
                let known = admin
                    .inner()
                    .fetch_metadata(Some(name), Duration::from_secs(5))
                    .ok()
                    .and_then(|m| m.topics().first().map(|t| t.partitions().len() as i32))
                    .unwrap_or(0);
                if known == partitions {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "topic {name} has no metadata after 30 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        TestTopics { brokers, names }
    }

    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }
}

pub fn admin_client(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client")
}

impl Drop for TestTopics {
    fn drop(&mut self) {
        let (brokers, names) = (self.brokers.clone(), self.names.clone());
        cleanup_blocking(async move {
            let admin = admin_client(&brokers);
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                admin.delete_topics(&refs, &AdminOptions::new()),
            )
            .await;
        });
    }
}

/// Runs SQL over ClickHouse's HTTP interface and returns the TSV result (for documented
/// queries whose columns vary).
pub fn http_query(url: &str, database: &str, sql: &str) -> String {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).expect("clickhouse reachable");
    let body = format!("{sql}\nFORMAT TSV");
    write!(
        s,
        "POST /?database={database} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, tsv) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}\n{tsv}\n{sql}"
    );
    tsv.to_string()
}

/// Runs cleanup I/O from a `Drop` (which may run inside or outside a runtime) on a thread of
/// its own with a short-lived runtime, and waits for it.
fn cleanup_blocking(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(work);
    })
    .join();
}

/// One event of centre C001, window W01, source `hall`, with `extra` fields added.
pub fn event_json(id: &str, case: &str, ty: &str, at: &str, extra: serde_json::Value) -> String {
    let mut v = serde_json::json!({
        "version": 1, "event_id": id, "case_id": case, "type": ty, "occurred_at": at,
        "source": "hall", "center_id": "C001", "window_id": "W01",
    });
    if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
    v.to_string()
}
