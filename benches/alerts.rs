//! Alert latency (not part of the tests): from the moment an event that raises an alert (an
//! overcharge, a red card) is handed to the broker to the moment the webhook receives the
//! alert, through `casewatch run` with its default batching (500 ms) and the live clock.
//!
//!     scripts/services up && eval "$(scripts/services env | sed 's/^/export /')"
//!     cargo bench --bench alerts            # ALERTS=2000 RATE=200 by default
//!
//! Prints p50/p90/p99/max in milliseconds; then a burst of BURST (1,000) red cards at once to
//! a DingTalk-like robot (`scripts/robot-sim`, 20 messages a minute): the seconds until every
//! card has been shown in the group, and in how many messages. Writes target/bench/alerts.json.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A webhook receiver noting when each case's alert arrived.
async fn receiver(arrivals: Arc<Mutex<HashMap<String, i64>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let at = now_ms();
                    if let Ok(v) =
                        serde_json::from_slice::<serde_json::Value>(&buf[end + 4..end + 4 + len])
                    {
                        if let Some(case) = v["case_id"].as_str() {
                            arrivals
                                .lock()
                                .unwrap()
                                .entry(case.to_string())
                                .or_insert(at);
                        }
                    }
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    url
}

/// `casewatch ARGS` with its own database, topic and group named `tag`.
fn casewatch_command(
    config: &std::path::Path,
    ch: &str,
    brokers: &str,
    tag: &str,
    args: &[&str],
) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_casewatch"));
    c.arg("--config")
        .arg(config)
        .args(args)
        .env("CASEWATCH__CLICKHOUSE__URL", ch)
        .env("CASEWATCH__CLICKHOUSE__DATABASE", tag)
        .env("CASEWATCH__KAFKA__BROKERS", brokers)
        .env("CASEWATCH__KAFKA__TOPIC", tag)
        .env("CASEWATCH__KAFKA__GROUP_ID", tag)
        .env("CASEWATCH__KAFKA__DEAD_LETTER_TOPIC", format!("{tag}-dlq"))
        .env("CASEWATCH__HTTP__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn");
    c
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("ALERTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rate: u64 = std::env::var("RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let brokers = std::env::var("CASEWATCH_TEST_KAFKA_BROKERS")
        .expect("run scripts/services up and export its env");
    let ch = std::env::var("CASEWATCH_TEST_CLICKHOUSE_URL")
        .expect("run scripts/services up and export its env");
    let tag = format!("alertbench{}", now_ms());
    let dir = std::env::temp_dir().join(&tag);
    std::fs::create_dir_all(&dir).unwrap();

    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    admin
        .create_topics(
            &[NewTopic::new(&tag, 2, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let arrivals = Arc::new(Mutex::new(HashMap::new()));
    let url = receiver(arrivals.clone()).await;
    let config = dir.join("casewatch.toml");
    std::fs::write(
        &config,
        format!("[alerts]\nhold_lag = 1000\nrescan_secs = 30\n[[alerts.webhooks]]\nname = \"bench\"\nurl = \"{url}\"\nformat = \"generic\"\n[[alerts.routes]]\nwebhooks = [\"bench\"]\n"),
    )
    .unwrap();
    let casewatch = |args: &[&str]| casewatch_command(&config, &ch, &brokers, &tag, args);
    assert!(casewatch(&["migrate"]).status().unwrap().success());
    let mut run = casewatch(&["run"]).spawn().unwrap();
    // Partitions assigned and past the catch-up hold (the lag check runs every 2 s).
    tokio::time::sleep(Duration::from_secs(6)).await;

    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let mut sent: HashMap<String, i64> = HashMap::new();
    let started = Instant::now();
    for i in 0..n {
        let case = format!("AB{i:07}");
        let event = serde_json::json!({
            "version": 1, "event_id": format!("{case}-fee"), "case_id": case, "type": "fee_charged",
            "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "source": "hall", "center_id": "C001", "window_id": "W01",
            "amount_cents": 2000, "standard_cents": 1000,
        })
        .to_string();
        sent.insert(case.clone(), now_ms());
        producer
            .send(
                FutureRecord::to(&tag).key(&case).payload(&event),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        let due = Duration::from_micros(1_000_000 * (i as u64 + 1) / rate);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while arrivals.lock().unwrap().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = run.kill();
    let _ = run.wait();
    let arrivals = arrivals.lock().unwrap().clone();
    let mut latencies: Vec<i64> = sent
        .iter()
        .filter_map(|(case, t)| arrivals.get(case).map(|a| a - t))
        .collect();
    latencies.sort_unstable();
    let burst = burst_to_robot(&brokers, &ch, &admin).await;
    let result = serde_json::json!({
        "burst_to_robot": burst,
        "alerts_sent": n,
        "alerts_received": latencies.len(),
        "rate_per_second": rate,
        "p50_ms": percentile(&latencies, 0.5),
        "p90_ms": percentile(&latencies, 0.9),
        "p99_ms": percentile(&latencies, 0.99),
        "max_ms": latencies.last().copied().unwrap_or(0),
    });
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    let _ = std::fs::create_dir_all("target/bench");
    std::fs::write(
        "target/bench/alerts.json",
        serde_json::to_string_pretty(&result).unwrap(),
    )
    .unwrap();
    let _ = reqwest::Client::new()
        .post(&ch)
        .body(format!("DROP DATABASE IF EXISTS {tag}"))
        .send()
        .await;
    let _ = admin
        .delete_topics(&[&tag, &format!("{tag}-dlq")], &AdminOptions::new())
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A burst of red cards at once to a robot limited to 20 messages a minute: the seconds from
/// the last event handed to the broker until every card was shown, and the messages it took.
async fn burst_to_robot(
    brokers: &str,
    ch: &str,
    admin: &AdminClient<DefaultClientContext>,
) -> serde_json::Value {
    let n: usize = std::env::var("BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let tag = format!("alertburst{}", now_ms());
    let dir = std::env::temp_dir().join(&tag);
    std::fs::create_dir_all(&dir).unwrap();
    admin
        .create_topics(
            &[NewTopic::new(&tag, 2, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.join("robot.jsonl");
    let mut robot =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/robot-sim"))
            .args(["--port", &port.to_string(), "--quiet", "--log"])
            .arg(&log)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let config = dir.join("casewatch.toml");
    std::fs::write(
        &config,
        format!("[alerts]\nhold_lag = 100000\n[[alerts.webhooks]]\nname = \"robot\"\nurl = \"http://127.0.0.1:{port}/robot/send\"\nformat = \"dingtalk\"\n[[alerts.routes]]\nwebhooks = [\"robot\"]\n"),
    )
    .unwrap();
    let casewatch = |args: &[&str]| casewatch_command(&config, ch, brokers, &tag, args);
    assert!(casewatch(&["migrate"]).status().unwrap().success());
    let mut run = casewatch(&["run"]).spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // Every event enqueued at once, then every acknowledgement awaited.
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let case = format!("BURST{i:07}");
        let event = serde_json::json!({
            "version": 1, "event_id": format!("{case}-fee"), "case_id": case, "type": "fee_charged",
            "occurred_at": at, "source": "hall", "center_id": "C001", "window_id": "W01",
            "amount_cents": 2000, "standard_cents": 1000,
        })
        .to_string();
        let record = FutureRecord::to(&tag).key(&case).payload(&event);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for p in pending {
        p.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let sent_at = Instant::now();
    let shown = |log: &std::path::Path| -> (usize, usize) {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let mut ids = std::collections::HashSet::new();
        let mut messages = 0;
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            if v["errcode"] == 0 {
                messages += 1;
                for id in v["ids"].as_array().unwrap() {
                    ids.insert(id.as_str().unwrap().to_string());
                }
            }
        }
        (ids.len(), messages)
    };
    let deadline = Instant::now() + Duration::from_secs(900);
    while shown(&log).0 < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seconds = sent_at.elapsed().as_secs_f64();
    let (cards, messages) = shown(&log);
    let _ = run.kill();
    let _ = run.wait();
    let _ = robot.kill();
    let _ = robot.wait();
    let _ = reqwest::Client::new()
        .post(ch)
        .body(format!("DROP DATABASE IF EXISTS {tag}"))
        .send()
        .await;
    let _ = admin
        .delete_topics(&[&tag, &format!("{tag}-dlq")], &AdminOptions::new())
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    serde_json::json!({
        "cards": n,
        "cards_shown": cards,
        "messages": messages,
        "seconds_until_all_shown": (seconds * 10.0).round() / 10.0,
    })
}
