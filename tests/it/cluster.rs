//! Province scale (SPEC §7): a real ClickHouse cluster — Debian's ZooKeeper and two
//! ClickHouse servers, two shards of one replica (`scripts/services up --cluster`) — and two
//! consumers in one group with static membership. A province stream on four partitions,
//! arriving in four parts while partitions move (b joins and takes two over from a; b is
//! SIGKILLed and its successor takes them over; the second shard's server restarts; a rolling
//! restart of both), equals the single-node replay row for row through the distributed tables;
//! the documented queries, the month's bulletin and the console's pages answer over the
//! cluster what they answer over one server; the migration is idempotent from either server.
use std::process::Command;
use std::time::{Duration, Instant};

use crate::pipeline::run_ok;
use crate::service::{
    assert_tables_equal_replay_with, produce, spawn, strip_ansi, write_lines, Running,
};
use crate::support::{unique_name, TestDb, TestTopics};

/// The cluster's servers (HTTP) and name, from `scripts/services env`.
fn cluster() -> (Vec<String>, String) {
    let urls = std::env::var("CASEWATCH_TEST_CLUSTER_URLS").expect(
        "CASEWATCH_TEST_CLUSTER_URLS: the local cluster is not up (scripts/services up --cluster)",
    );
    let name = std::env::var("CASEWATCH_TEST_CLUSTER").unwrap_or_else(|_| "casewatch".into());
    (urls.split(',').map(str::to_string).collect(), name)
}

/// A database on the cluster, dropped on every server at the end.
struct ClusterDb {
    /// The database as seen from the first server (what the comparisons read).
    db: TestDb,
    urls: Vec<String>,
    cluster: String,
}

impl ClusterDb {
    fn new() -> Self {
        let (urls, cluster) = cluster();
        Self {
            db: TestDb {
                name: unique_name("cw_cluster"),
                url: urls[0].clone(),
            },
            urls,
            cluster,
        }
    }

    /// `casewatch` against server `server` of the cluster.
    fn casewatch(&self, server: usize) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_casewatch"));
        c.env("CASEWATCH__CLICKHOUSE__URL", &self.urls[server])
            .env("CASEWATCH__CLICKHOUSE__DATABASE", &self.db.name)
            .env("CASEWATCH__CLICKHOUSE__CLUSTER", &self.cluster)
            .env("RUST_LOG", "warn");
        c
    }

    fn sql(&self, server: usize, sql: &str) -> String {
        crate::support::http_query(&self.urls[server], &self.db.name, sql)
    }
}

impl Drop for ClusterDb {
    fn drop(&mut self) {
        let _ = Command::new("curl")
            .args(["-s", "--max-time", "60", "--data-binary"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} ON CLUSTER {}",
                self.db.name, self.cluster
            ))
            .arg(&self.urls[0])
            .output();
    }
}

/// The province's shard script (`scripts/services stop-shard|start-shard N`).
fn shard(action: &str, n: usize) {
    let status = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services"))
        .args([action, &n.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/services {action} {n}");
}

fn consumer(
    c: &ClusterDb,
    server: usize,
    topic: &str,
    config: &std::path::Path,
    id: &str,
) -> Running {
    let mut cmd = crate::service::service(&c.db, topic);
    cmd.env("CASEWATCH__CLICKHOUSE__URL", &c.urls[server])
        .env("CASEWATCH__CLICKHOUSE__CLUSTER", &c.cluster)
        .env("CASEWATCH__KAFKA__INSTANCE_ID", id)
        .arg("--config")
        .arg(config)
        .arg("run");
    spawn(&mut cmd)
}

fn covered(c: &ClusterDb) -> u64 {
    c.sql(0, "SELECT sum(next_offset) FROM checkpoints FINAL")
        .trim()
        .parse()
        .unwrap_or(0)
}

fn sigterm(r: &mut Running) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(r.id().to_string())
        .status();
    let status = r.wait(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{}", r.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_into_a_two_shard_cluster_equal_the_single_node_replay() {
    let c = ClusterDb::new();
    // The migration, from either server, is applied once.
    let first = run_ok(c.casewatch(0).arg("migrate"));
    assert!(
        first.contains("applied migrations [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]"),
        "{first}"
    );
    let again = run_ok(c.casewatch(1).arg("migrate"));
    assert!(again.contains("is up to date"), "{again}");
    for server in 0..2 {
        let tables = c.sql(server, &format!(
            "SELECT name, engine FROM system.tables WHERE database = '{}' AND name IN ('cases', 'cases_local', 'supervision_local') ORDER BY name",
            c.db.name
        ));
        assert_eq!(
            tables,
            "cases\tDistributed\ncases_local\tReplicatedReplacingMergeTree\nsupervision_local\tReplicatedReplacingMergeTree\n",
            "server {server}"
        );
    }

    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/province.toml");
    let topics = TestTopics::new(1, 4).await;
    let topic = topics.names[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let lines = casewatch::simulate::province_lines(&casewatch::simulate::SimOptions {
        seed: 5,
        start: chrono::NaiveDate::from_ymd_opt(2019, 12, 1).unwrap(),
        months: 1,
        scale: 0.02,
        invalid_rate: 0.01,
        duplicate_rate: 0.01,
    });
    let file = write_lines(dir.path(), &lines);
    // The stream arrives in four parts, so every move below happens with messages still to
    // come. Consecutive chunks keep every case's order.
    let parts: Vec<&[String]> = lines.chunks(lines.len().div_ceil(4)).collect();
    let total = lines.len() as u64;
    let mut produced = 0;
    let wait_for = |what: &str, done: &dyn Fn() -> bool, limit: u64| {
        let deadline = Instant::now() + Duration::from_secs(limit);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let assigned = |r: &Running| strip_ansi(&r.log()).matches("partition assigned").count();

    // Consumer a, writing through the first server, owns the four partitions alone.
    produce(&c.db, &topic, parts[0]).await;
    produced += parts[0].len() as u64;
    let mut a = consumer(&c, 0, &topic, &config, "consumer-a");
    wait_for(
        "a did not cover the first part",
        &|| covered(&c) >= produced,
        180,
    );
    assert_eq!(assigned(&a), 4, "{}", a.log());

    // Consumer b joins the group through the second server: the group rebalances, and two
    // partitions move from a to b, which takes them over from a's checkpoints.
    let mut b = consumer(&c, 1, &topic, &config, "consumer-b");
    wait_for("no partition moved to b", &|| assigned(&b) >= 1, 120);
    let moved = assigned(&b);
    assert!((1..4).contains(&moved), "b took {moved} partitions");
    produce(&c.db, &topic, parts[1]).await;
    produced += parts[1].len() as u64;

    // b is SIGKILLed mid-run; its successor (the same static member) takes its partitions
    // over from the checkpoints, while the second shard's server restarts under both.
    std::thread::sleep(Duration::from_millis(1500));
    b.kill();
    let mut b = consumer(&c, 1, &topic, &config, "consumer-b");
    shard("stop-shard", 2);
    produce(&c.db, &topic, parts[2]).await;
    produced += parts[2].len() as u64;
    std::thread::sleep(Duration::from_secs(3));
    shard("start-shard", 2);
    wait_for(
        "b's successor took nothing over",
        &|| assigned(&b) >= 1,
        120,
    );

    // A rolling restart: a, then b, each stopped with SIGTERM and started again.
    sigterm(&mut a);
    let mut a = consumer(&c, 0, &topic, &config, "consumer-a");
    wait_for(
        "a's successor took nothing over",
        &|| assigned(&a) >= 1,
        120,
    );
    sigterm(&mut b);
    let mut b = consumer(&c, 1, &topic, &config, "consumer-b");
    produce(&c.db, &topic, parts[3]).await;
    produced += parts[3].len() as u64;
    assert_eq!(produced, total);
    wait_for(
        "the consumers did not cover every message",
        &|| covered(&c) >= total,
        300,
    );
    assert!(
        assigned(&a) >= 1 && assigned(&b) >= 1,
        "both consumers own partitions at the end"
    );
    sigterm(&mut a);
    sigterm(&mut b);

    // Both shards hold rows, and the distributed tables equal the single-node replay.
    for server in 0..2 {
        let local: u64 = c
            .sql(server, "SELECT count() FROM cases_local")
            .trim()
            .parse()
            .unwrap();
        assert!(local > 0, "shard {} holds no case", server + 1);
    }
    assert_tables_equal_replay_with(&c.db, dir.path(), &file, Some(&config)).await;
    same_queries_and_bulletin_as_a_single_node(&c, &file, &config).await;
    // Read through the other server, `verify` agrees too (with the province's timezones).
    let verify = c
        .casewatch(1)
        .arg("--config")
        .arg(&config)
        .args(["verify", "--from", "2019-11-01", "--to", "2020-01-31"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// The same file replayed into the single-node server: every documented query and the
/// month's bulletin, read through the cluster's second server (distributed tables), and the
/// console's pages answer exactly what they answer there.
async fn same_queries_and_bulletin_as_a_single_node(
    c: &ClusterDb,
    file: &std::path::Path,
    config: &std::path::Path,
) {
    let single = TestDb::new().await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    run_ok(crate::pipeline::casewatch(&single).arg("migrate"));
    run_ok(
        crate::pipeline::casewatch(&single)
            .arg("--config")
            .arg(config)
            .env("CASEWATCH__CLICKHOUSE__CLUSTER", "")
            // Caught up, the consumers' engine time follows the wall clock.
            .args(["replay", "--sink", "clickhouse", "--as-of", &now])
            .arg(file),
    );
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/clickhouse/queries"
    ));
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "{names:?}");
    for path in names {
        let sql = std::fs::read_to_string(&path)
            .unwrap()
            .replace("{{from}}", "'2019-11-01'")
            .replace("{{to}}", "'2020-01-31'")
            .replace("{{month}}", "'2019-12-01'");
        // Dead letters: the reasons and counts; when and where they were received differ
        // between a topic and a file.
        let columns = if path.ends_with("dead_letters_by_reason.sql") {
            2
        } else {
            usize::MAX
        };
        let sorted = |text: String| {
            let mut lines: Vec<String> = text
                .lines()
                .map(|l| l.split('\t').take(columns).collect::<Vec<_>>().join("\t"))
                .collect();
            lines.sort();
            lines
        };
        let on_cluster = sorted(c.sql(1, &sql));
        let on_single = sorted(crate::support::http_query(&single.url, &single.name, &sql));
        assert!(!on_single.is_empty(), "{} answers nothing", path.display());
        assert_eq!(on_cluster, on_single, "{}", path.display());
    }
    let bulletin = |cmd: &mut Command, out: &std::path::Path| {
        run_ok(
            cmd.arg("--config")
                .arg(config)
                .args(["bulletin", "--period", "2019-12", "--out"])
                .arg(out),
        );
        let mut files: Vec<_> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| (f.file_name().unwrap().to_owned(), std::fs::read(f).unwrap()))
            .collect::<Vec<_>>()
    };
    let out = tempfile::tempdir().unwrap();
    let on_cluster = bulletin(&mut c.casewatch(1), &out.path().join("cluster"));
    let on_single = bulletin(
        crate::pipeline::casewatch(&single).env("CASEWATCH__CLICKHOUSE__CLUSTER", ""),
        &out.path().join("single"),
    );
    assert!(on_single.len() >= 3, "{on_single:?}");
    assert!(on_cluster == on_single, "the bulletins differ");
    same_console_pages_as_a_single_node(c, &single).await;
}

/// The console, as a supervisor in Chromium: the board of a centre and a case page with
/// cards show the same tables over the cluster as over the single node.
async fn same_console_pages_as_a_single_node(c: &ClusterDb, single: &TestDb) {
    let case = crate::support::http_query(
        &single.url,
        &single.name,
        "SELECT case_id FROM anomalies FINAL WHERE revoked = 0 ORDER BY case_id LIMIT 1",
    );
    let pages = [
        ("/?center=P001&day=2019-12-15", "#windows"),
        (&*format!("/case/{}", case.trim()), "#facts"),
        (&*format!("/case/{}", case.trim()), "#anomalies"),
    ];
    let driver = crate::console::driver();
    let b = crate::console::browser(&driver).await;
    let mut seen = Vec::new();
    for (db, extra) in [(&c.db, c.cluster.as_str()), (single, "")] {
        let dir = tempfile::tempdir().unwrap();
        let (_serving, base) =
            crate::console::serve(db, dir.path(), &[("CASEWATCH__CLICKHOUSE__CLUSTER", extra)]);
        crate::console::login(&b, &base, "sup", "sup-password").await;
        let mut texts = Vec::new();
        for (path, table) in pages {
            b.goto(&format!("{base}{path}")).await.unwrap();
            texts.push(crate::console::text(&b, table).await);
        }
        seen.push(texts);
    }
    b.close().await.unwrap();
    assert!(seen[1][0].contains("W01"), "{}", seen[1][0]);
    assert!(seen[1][2].lines().count() > 1, "{}", seen[1][2]);
    // Standing cards only: consumed live, the stream's parts arrive with pauses, during which
    // engine time follows the wall clock, so cards are raised for events still to come and
    // revoked when they come; a replay never shows those (the tables compare the same way).
    let standing = |table: &str, text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| table != "#anomalies" || l.split_whitespace().count() <= 5)
            .map(str::to_string)
            .collect()
    };
    for (i, (path, table)) in pages.iter().enumerate() {
        let (cluster, one) = (standing(table, &seen[0][i]), standing(table, &seen[1][i]));
        assert!(one.len() >= 2, "{path} {table}: {one:?}");
        assert_eq!(cluster, one, "{path} {table}: the cluster, then one server");
    }
}
