//! `casewatch run` against the real broker and ClickHouse: the tables equal a clean replay of
//! the same events after SIGKILLs at random moments, redeliveries and a graceful shutdown.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::pipeline::{assert_same, casewatch, replay_csv, run_ok, simulated_lines, tables_as_csv};
use crate::support::{TestDb, TestTopics};

/// `casewatch` configured for one test's database, topic and consumer group.
pub fn service(db: &TestDb, topic: &str) -> Command {
    let mut c = casewatch(db);
    c.env("CASEWATCH__KAFKA__BROKERS", crate::support::kafka_brokers())
        .env("CASEWATCH__KAFKA__TOPIC", topic)
        .env("CASEWATCH__KAFKA__GROUP_ID", format!("{topic}-group"))
        .env(
            "CASEWATCH__KAFKA__DEAD_LETTER_TOPIC",
            format!("{topic}-dlq"),
        )
        .env("CASEWATCH__HTTP__LISTEN", "127.0.0.1:0")
        .env("CASEWATCH__PIPELINE__BATCH_EVENTS", "400")
        .env("CASEWATCH__PIPELINE__BATCH_MILLIS", "100");
    c
}

pub fn write_lines(dir: &std::path::Path, lines: &[String]) -> std::path::PathBuf {
    let file = dir.join("events.ndjson");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    file
}

/// Produces lines to the topic (key = case_id), many in flight, all acknowledged.
pub async fn produce(db: &TestDb, topic: &str, lines: &[String]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", crate::support::kafka_brokers())
        .set("linger.ms", "10")
        // One record per batch: tansu's memory storage can skip the rest of a batch when a
        // consumer resumes in its middle, which these restart tests do on purpose.
        .set("batch.num.messages", "1")
        .set("message.timeout.ms", "120000")
        .create()
        .unwrap();
    let _ = db;
    let mut inflight = Vec::new();
    for l in lines {
        let key = serde_json::from_str::<serde_json::Value>(l)
            .ok()
            .and_then(|v| v["case_id"].as_str().map(str::to_string))
            .unwrap_or_default();
        let record = FutureRecord::to(topic).key(&key).payload(l);
        inflight.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("queued"),
        );
        if inflight.len() >= 2000 {
            for f in inflight.drain(..) {
                f.await.unwrap().map_err(|(e, _)| e).expect("produced");
            }
        }
    }
    for f in inflight {
        f.await.unwrap().map_err(|(e, _)| e).expect("produced");
    }
}

/// The expected tables: a clean CSV replay with engine time at "now" (the live clock), under
/// the configuration file `config` when there is one.
fn expected(
    db: &TestDb,
    dir: &std::path::Path,
    file: &std::path::Path,
    config: Option<&std::path::Path>,
) -> std::collections::BTreeMap<&'static str, Vec<Vec<String>>> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut c = casewatch(db);
    if let Some(config) = config {
        c.arg("--config").arg(config);
    }
    run_ok(
        c.args(["replay", "--as-of", &now, "--out"])
            .arg(dir.join("expected"))
            .arg(file),
    );
    replay_csv(&dir.join("expected"))
}

/// Compares everything but `dead_letters`, whose positions differ between a file and a topic
/// (their reasons are compared as a multiset).
async fn assert_tables_equal_replay(db: &TestDb, dir: &std::path::Path, file: &std::path::Path) {
    assert_tables_equal_replay_with(db, dir, file, None).await;
}

/// [`assert_tables_equal_replay`] under a configuration file.
pub async fn assert_tables_equal_replay_with(
    db: &TestDb,
    dir: &std::path::Path,
    file: &std::path::Path,
    config: Option<&std::path::Path>,
) {
    let mut want = expected(db, dir, file, config);
    let mut got = tables_as_csv(db).await;
    let reasons = |rows: Vec<Vec<String>>| {
        let mut r: Vec<String> = rows.into_iter().map(|mut row| row.pop().unwrap()).collect();
        r.sort();
        r
    };
    assert_eq!(
        reasons(want.remove("dead_letters").unwrap()),
        reasons(got.remove("dead_letters").unwrap())
    );
    assert_same(&want, &got);
}

/// A running `casewatch` that is killed when the test ends, pass or fail: a consumer left
/// running after its test dropped the topic would fetch a deleted topic, which kills tansu's
/// sqlite storage for every other test.
pub struct Running(Child, tempfile::NamedTempFile);

impl Running {
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.1.path()).unwrap_or_default()
    }

    /// Waits for the exit, failing the test after `limit`.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "casewatch did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(Some(status)) = self.0.try_wait() {
            eprintln!("casewatch had exited before the end of the test: {status}");
        }
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.1.path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("--- casewatch log (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Messages the checkpoints cover, over every partition (0 while ClickHouse does not answer).
async fn checkpointed(db: &TestDb) -> u64 {
    db.client()
        .query("SELECT sum(next_offset) FROM checkpoints FINAL")
        .fetch_one()
        .await
        .unwrap_or(0)
}

/// Starts `casewatch` at log level info; its log is printed if the test fails.
pub fn spawn(c: &mut Command) -> Running {
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = c
        .env("RUST_LOG", "info,librdkafka=warn")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    Running(child, log)
}

/// Runs `casewatch run --exit-when-idle` to its end.
fn run_until_idle(c: &mut Command) -> std::process::ExitStatus {
    spawn(c.args(["run", "--exit-when-idle", "4"])).wait(Duration::from_secs(240))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_sigkills_at_random_moments_equals_a_clean_replay() {
    // The default snapshot interval is never reached here: every takeover re-applies events.
    let logs = sigkills_at_random_moments(None).await;
    // Five runs of three partitions each.
    let (takeovers, from_snapshots) = takeovers_from_snapshots(&logs);
    assert!(takeovers >= 15 && from_snapshots == 0, "{logs}");
}

/// (takeovers, takeovers that started from a snapshot) in consumers' logs.
fn takeovers_from_snapshots(logs: &str) -> (usize, usize) {
    let plain = strip_ansi(logs);
    let takeovers: Vec<&str> = plain
        .lines()
        .filter(|l| l.contains("partition assigned"))
        .collect();
    let from_snapshots = takeovers
        .iter()
        .filter(|l| !l.contains(" snapshot_offset=0 "))
        .count();
    (takeovers.len(), from_snapshots)
}

/// A log without its terminal colour codes.
pub fn strip_ansi(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ ... letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_sigkills_around_snapshot_writes_equals_a_clean_replay() {
    // A snapshot after almost every flush: kills land before, during and after their writes.
    let logs = sigkills_at_random_moments(Some(300)).await;
    let (takeovers, from_snapshots) = takeovers_from_snapshots(&logs);
    assert!(
        takeovers >= 15 && from_snapshots > 0,
        "no takeover started from a snapshot:\n{logs}"
    );
}

/// Five runs killed at random moments, then one to the end: the tables equal a clean replay.
/// Returns the killed runs' logs.
async fn sigkills_at_random_moments(snapshot_every_events: Option<u64>) -> String {
    let db = TestDb::new().await;
    let topics = TestTopics::new(1, 3).await;
    let topic = topics.name(0).to_string();
    let dir = tempfile::tempdir().unwrap();
    // CASEWATCH_TEST_SEED and CASEWATCH_TEST_MONTHS rerun it with another seed or a longer stream.
    let seed: u64 = std::env::var("CASEWATCH_TEST_SEED").map_or(0x5eed_0001, |s| {
        s.parse().expect("CASEWATCH_TEST_SEED is a number")
    });
    let months: u32 = std::env::var("CASEWATCH_TEST_MONTHS")
        .map_or(4, |s| s.parse().expect("CASEWATCH_TEST_MONTHS is a number"));
    let lines = simulated_lines(seed, months, 0.6);
    let file = write_lines(dir.path(), &lines);
    run_ok(casewatch(&db).arg("migrate"));
    produce(&db, &topic, &lines).await;

    // Each cycle: start, wait until the process is consuming, kill it at a random moment.
    // Static membership lets each restart take the partitions over at once (tansu wedges
    // when members die in the middle of a rebalance).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut logs = String::new();
    for kill in 0..5 {
        let port = free_port();
        let mut command = service(&db, &topic);
        if let Some(every) = snapshot_every_events {
            command.env(
                "CASEWATCH__PIPELINE__SNAPSHOT_EVERY_EVENTS",
                every.to_string(),
            );
        }
        let mut child = spawn(
            command
                .env("CASEWATCH__KAFKA__INSTANCE_ID", "crash-test")
                .env("CASEWATCH__HTTP__LISTEN", format!("127.0.0.1:{port}"))
                .arg("run"),
        );
        // Consuming — or with nothing left: an earlier run may have checkpointed everything,
        // and a restart resumes at the checkpoints once it has taken its partitions over.
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            if metric(port, "casewatch_events_consumed_total").unwrap_or(0) > 0 {
                break;
            }
            if checkpointed(&db).await >= lines.len() as u64
                && strip_ansi(&child.log())
                    .matches("partition assigned")
                    .count()
                    >= 3
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "run {kill} never started consuming"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
        child.kill(); // SIGKILL
        logs.push_str(&child.log());
    }
    let status =
        run_until_idle(service(&db, &topic).env("CASEWATCH__KAFKA__INSTANCE_ID", "crash-test"));
    assert!(status.success());
    assert_tables_equal_replay(&db, dir.path(), &file).await;
    assert_verified(&db, "2019-01-01", "2030-01-01");
    if snapshot_every_events.is_some() {
        assert_old_snapshots_dropped(&db).await;
    }
    logs
}

/// Every checkpoint's snapshot is stored, and the snapshots it superseded are gone.
async fn assert_old_snapshots_dropped(db: &TestDb) {
    let client = db.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let kept: Vec<(u32, u64)> = client
            .query("SELECT partition, count(DISTINCT epoch, next_offset) FROM snapshots FINAL GROUP BY partition ORDER BY partition")
            .fetch_all()
            .await
            .unwrap();
        let referred: u64 = client
            .query("SELECT count() FROM checkpoints FINAL WHERE snapshot_offset > 0 AND (topic, partition, snapshot_epoch, snapshot_offset) NOT IN (SELECT topic, partition, epoch, next_offset FROM snapshots FINAL)")
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(
            referred, 0,
            "a checkpoint refers to a snapshot that is not stored"
        );
        if !kept.is_empty() && kept.iter().all(|k| k.1 == 1) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "superseded snapshots were not dropped: {kept:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_delivered_twice_are_counted_once() {
    let db = TestDb::new().await;
    let topics = TestTopics::new(1, 2).await;
    let topic = topics.name(0).to_string();
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = simulated_lines(22, 2, 0.3);
    let now = chrono::Utc::now().timestamp();
    let valid: Vec<String> = lines
        .iter()
        .filter(|l| casewatch::core::event::parse_event(l.as_bytes(), now).is_ok())
        .cloned()
        .collect();
    let file = write_lines(dir.path(), &valid);
    run_ok(casewatch(&db).arg("migrate"));
    produce(&db, &topic, &valid).await;
    produce(&db, &topic, &valid).await;
    let status = run_until_idle(&mut service(&db, &topic));
    assert!(status.success());
    assert_tables_equal_replay(&db, dir.path(), &file).await;
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A counter from the service's /metrics, over a plain HTTP/1.1 request.
pub fn metric(port: u16, name: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_and_commits_so_the_next_start_replays_nothing() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let db = TestDb::new().await;
    let topics = TestTopics::new(1, 2).await;
    let topic = topics.name(0).to_string();
    let lines = simulated_lines(23, 2, 0.3);
    run_ok(casewatch(&db).arg("migrate"));
    produce(&db, &topic, &lines).await;
    // A batch window longer than the test: only the shutdown flush can write the events.
    let port = free_port();
    let mut child = spawn(
        service(&db, &topic)
            .env("CASEWATCH__PIPELINE__BATCH_MILLIS", "600000")
            .env("CASEWATCH__PIPELINE__BATCH_EVENTS", "1000000")
            .env("CASEWATCH__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .arg("run"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metric(port, "casewatch_events_consumed_total") != Some(lines.len() as u64) {
        assert!(
            std::time::Instant::now() < deadline,
            "the consumer did not read every message"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let client = db.client();
    let before: u64 = client
        .query("SELECT count() FROM events")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(before, 0, "nothing written before the shutdown flush");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    assert!(
        child.wait(Duration::from_secs(60)).success(),
        "graceful exit"
    );

    let checkpointed: u64 = client
        .query("SELECT sum(next_offset) FROM checkpoints FINAL")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        checkpointed,
        lines.len() as u64,
        "every message is behind a checkpoint"
    );
    // The group's committed offsets are at the end of each partition: a restart reads nothing.
    let group: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", crate::support::kafka_brokers())
        .set("group.id", format!("{topic}-group"))
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(&topic, 0);
    tpl.add_partition(&topic, 1);
    let committed = group
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let mut total = 0;
    for e in committed.elements() {
        let (_, high) = group
            .fetch_watermarks(&topic, e.partition(), Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            e.offset().to_raw(),
            Some(high),
            "partition {} committed at its end",
            e.partition()
        );
        total += high;
    }
    assert_eq!(total as usize, lines.len());
}

/// A private ClickHouse started by the project's script, for a test that stops it.
struct PrivateClickhouse {
    dir: tempfile::TempDir,
    http: u16,
    tcp: u16,
}

impl PrivateClickhouse {
    fn script(&self, action: &str) {
        let status = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services"))
            .arg(action)
            .env("CASEWATCH_SERVICES_DIR", self.dir.path())
            .env("CASEWATCH_CH_HTTP_PORT", self.http.to_string())
            .env("CASEWATCH_CH_TCP_PORT", self.tcp.to_string())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "scripts/services {action}");
    }
}

impl Drop for PrivateClickhouse {
    fn drop(&mut self) {
        self.script("stop-clickhouse");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_stopped_mid_run_loses_and_doubles_nothing() {
    let ch = PrivateClickhouse {
        dir: tempfile::tempdir().unwrap(),
        http: free_port(),
        tcp: free_port(),
    };
    ch.script("start-clickhouse");
    let db = TestDb::at(&format!("http://127.0.0.1:{}", ch.http)).await;
    let topics = TestTopics::new(1, 2).await;
    let topic = topics.name(0).to_string();
    let dir = tempfile::tempdir().unwrap();
    let lines = simulated_lines(24, 3, 0.4);
    let file = write_lines(dir.path(), &lines);
    run_ok(casewatch(&db).arg("migrate"));
    produce(&db, &topic, &lines).await;

    let port = free_port();
    let mut child = spawn(
        service(&db, &topic)
            .env("CASEWATCH__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .arg("run"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while metric(port, "casewatch_flushes_total").unwrap_or(0) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no flush before the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ch.script("stop-clickhouse");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metric(port, "casewatch_clickhouse_errors_total").unwrap_or(0) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the outage was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    ch.script("start-clickhouse");
    // Done when the checkpoints cover every message of both partitions (a count of messages
    // consumed would also count those read again after a rebalance, and end too early).
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let covered = checkpointed(&db).await;
        if covered >= lines.len() as u64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the consumer did not finish after the outage ({covered} of {} messages)",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    assert!(child.wait(Duration::from_secs(60)).success());
    assert_tables_equal_replay(&db, dir.path(), &file).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_holiday_data_moves_open_deadlines_without_a_restart() {
    let db = TestDb::new().await;
    let topics = TestTopics::new(1, 1).await;
    let topic = topics.name(0).to_string();
    run_ok(casewatch(&db).arg("migrate"));
    let holidays = tempfile::tempdir().unwrap();
    let year = chrono::Utc::now().format("%Y").to_string();
    // This year's shipped data (the calendar then knows no later year; fine for a 5-day item).
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/holidays/");
    let text = std::fs::read_to_string(format!("{shipped}{year}.json"))
        .unwrap_or_else(|_| format!("{{\"year\": {year}, \"days\": []}}"));
    std::fs::write(holidays.path().join(format!("{year}.json")), text).unwrap();
    let accepted = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let event = serde_json::json!({
        "version": 1, "event_id": "hol-1", "case_id": "HOL-1", "type": "accepted",
        "occurred_at": accepted, "source": "hall", "center_id": "C001", "window_id": "W01",
        "item": {"code": "W01-001", "kind": "promised", "promised_days": 5}
    })
    .to_string();
    produce(&db, &topic, &[event]).await;
    let mut child = spawn(
        service(&db, &topic)
            .env("CASEWATCH__CALENDAR__HOLIDAYS_DIR", holidays.path())
            .arg("run"),
    );
    let client = db.client();
    let deadline_now = || {
        let client = client.clone();
        async move {
            client
                .query("SELECT toUInt32(assumeNotNull(promised_deadline)) FROM cases FINAL WHERE case_id = 'HOL-1'")
                .fetch_optional::<u32>()
                .await
                .unwrap()
        }
    };
    let limit = std::time::Instant::now() + Duration::from_secs(60);
    let before = loop {
        if let Some(d) = deadline_now().await {
            break d;
        }
        assert!(
            std::time::Instant::now() < limit,
            "the case was never written"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The three days after today become public holidays (a new file in the directory).
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    let days: Vec<serde_json::Value> = (1..=3)
        .map(|i| serde_json::json!({"name": "test", "date": (today + chrono::Duration::days(i)).to_string(), "isOffDay": true}))
        .collect();
    std::fs::write(
        holidays.path().join("extra.json"),
        serde_json::json!({"year": today.format("%Y").to_string().parse::<i32>().unwrap(), "days": days}).to_string(),
    )
    .unwrap();
    let limit = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let after = deadline_now().await.unwrap();
        if after > before {
            assert!(after - before >= 86_400, "at least one working day later");
            break;
        }
        assert!(
            std::time::Instant::now() < limit,
            "the deadline did not move after the holiday data changed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_keyed_by_another_case_is_a_key_mismatch_dead_letter() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let db = TestDb::new().await;
    let topics = TestTopics::new(1, 1).await;
    let topic = topics.name(0).to_string();
    run_ok(casewatch(&db).arg("migrate"));
    let accepted = |case: &str| {
        serde_json::json!({
            "version": 1, "event_id": format!("{case}-1"), "case_id": case, "type": "accepted",
            "occurred_at": "2018-10-15T10:00:00+08:00", "source": "hall", "center_id": "C001",
            "window_id": "W01", "item": {"code": "W01-001", "kind": "promised", "promised_days": 7}
        })
        .to_string()
    };
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", crate::support::kafka_brokers())
        .create()
        .unwrap();
    for (key, payload) in [("KM-OTHER", accepted("KM-1")), ("KM-2", accepted("KM-2"))] {
        producer
            .send(
                FutureRecord::to(&topic).key(key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    assert!(run_until_idle(&mut service(&db, &topic)).success());
    let client = db.client();
    let dead: Vec<(String, String)> = client
        .query("SELECT reason, raw FROM dead_letters FINAL")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, "key_mismatch");
    assert!(dead[0].1.contains("KM-1"));
    let cases: Vec<String> = client
        .query("SELECT case_id FROM cases FINAL ORDER BY case_id")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(cases, vec!["KM-2".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_event_for_an_evicted_case_restores_it_by_its_id() {
    let db = TestDb::new().await;
    let topics = TestTopics::new(1, 1).await;
    let topic = topics.name(0).to_string();
    run_ok(casewatch(&db).arg("migrate"));
    let event = |id: &str, ty: &str, at: &str, extra: serde_json::Value| {
        crate::support::event_json(id, "EV-1", ty, at, extra)
    };
    produce(
        &db,
        &topic,
        &[
            event("ev-a", "accepted", "2018-10-15T10:00:00+08:00", serde_json::json!({"item": {"code": "W01-001", "kind": "promised", "promised_days": 7}})),
            event("ev-c", "completed", "2018-10-16T10:00:00+08:00", serde_json::json!({"outcome": "approved"})),
        ],
    )
    .await;
    // Ended cases leave memory at once (retention 0 days); the eviction runs every 10 s. A
    // snapshot is written at every flush with an event.
    let start = || {
        let port = free_port();
        let child = spawn(
            service(&db, &topic)
                .env("CASEWATCH__ENGINE__CLOSED_CASE_RETENTION_DAYS", "0")
                .env("CASEWATCH__PIPELINE__SNAPSHOT_EVERY_EVENTS", "1")
                .env("CASEWATCH__KAFKA__INSTANCE_ID", "evicted")
                .env("CASEWATCH__HTTP__LISTEN", format!("127.0.0.1:{port}"))
                .arg("run"),
        );
        (child, port)
    };
    let (mut first, port) = start();
    let limit = std::time::Instant::now() + Duration::from_secs(60);
    while metric(port, "casewatch_cases_evicted_total").unwrap_or(0) < 1 {
        assert!(
            std::time::Instant::now() < limit,
            "the ended case was not evicted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Another case's event: its flush writes a snapshot that knows EV-1 was evicted; then the
    // consumer dies, and the next one starts from that snapshot.
    produce(
        &db,
        &topic,
        &[crate::support::event_json(
            "ev-x",
            "EV-2",
            "submitted",
            "2018-10-18T10:00:00+08:00",
            serde_json::json!({"item_code": "W01-001"}),
        )],
    )
    .await;
    let client = db.client();
    let limit = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let snapshot_offset: u64 = client
            .query("SELECT max(snapshot_offset) FROM checkpoints FINAL")
            .fetch_one()
            .await
            .unwrap();
        if snapshot_offset == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < limit,
            "no snapshot after the eviction"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    first.kill();
    let (mut child, _) = start();
    let limit = std::time::Instant::now() + Duration::from_secs(60);
    // Held: EV-2 only (EV-1 is known as evicted).
    while !strip_ansi(&child.log()).contains("snapshot_offset=3 cases=1 ") {
        assert!(
            std::time::Instant::now() < limit,
            "the restart did not start from the snapshot of one case"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The citizen's evaluation of EV-1 arrives years later.
    produce(
        &db,
        &topic,
        &[event(
            "ev-e",
            "evaluated",
            "2018-10-20T10:00:00+08:00",
            serde_json::json!({"rating": 5}),
        )],
    )
    .await;
    let client = db.client();
    let limit = std::time::Instant::now() + Duration::from_secs(60);
    // The checkpoint past the late event lands only after every table of its flush did (the
    // data tables are written concurrently, so the cases row alone says nothing about the rest).
    loop {
        let next_offset: u64 = client
            .query("SELECT max(next_offset) FROM checkpoints FINAL")
            .fetch_one()
            .await
            .unwrap();
        if next_offset >= 4 {
            break;
        }
        assert!(
            std::time::Instant::now() < limit,
            "no checkpoint past the late evaluation"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rating: Option<Option<u8>> = client
        .query("SELECT rating FROM cases FINAL WHERE case_id = 'EV-1'")
        .fetch_optional()
        .await
        .unwrap();
    assert_eq!(rating, Some(Some(5)), "the late evaluation was not applied");
    // The aggregates agree with the restored case: one completion, one rating of 5.
    let sums: (i64, i64) = client
        .query("SELECT sum(completed), sum(rating_5) FROM window_daily")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(sums, (1, 1));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    assert!(child.wait(Duration::from_secs(60)).success());
    assert_verified(&db, "2018-10-01", "2018-10-31");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_stops_on_a_permanent_error_and_on_sigterm() {
    let topics = TestTopics::new(1, 1).await;
    let topic = topics.name(0).to_string();
    let db = TestDb::new().await;
    produce(&db, &topic, &simulated_lines(5, 1, 0.01)[..10]).await;
    // A database that was never migrated: no retry can fix it.
    let mut child = spawn(
        service(&db, &topic)
            .env(
                "CASEWATCH__CLICKHOUSE__DATABASE",
                format!("{}_missing", db.name),
            )
            .arg("run"),
    );
    let status = child.wait(Duration::from_secs(60));
    assert!(!status.success());
    assert!(
        child.log().contains("run `casewatch migrate`"),
        "{}",
        child.log()
    );

    // ClickHouse unreachable: the takeover retries, and SIGTERM still stops the service.
    let mut child = spawn(
        service(&db, &topic)
            .env(
                "CASEWATCH__CLICKHOUSE__URL",
                format!("http://127.0.0.1:{}", free_port()),
            )
            .arg("run"),
    );
    let limit = std::time::Instant::now() + Duration::from_secs(60);
    while !child.log().contains("cannot rebuild partition") {
        assert!(
            std::time::Instant::now() < limit,
            "no takeover attempt: {}",
            child.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let stopped = std::time::Instant::now();
    assert!(
        child.wait(Duration::from_secs(15)).success(),
        "{}",
        child.log()
    );
    assert!(stopped.elapsed() < Duration::from_secs(12));
}

/// `casewatch verify` over these days agrees: window_daily equals what cases imply.
fn assert_verified(db: &TestDb, from: &str, to: &str) {
    let out = casewatch(db)
        .args(["verify", "--from", from, "--to", to])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
