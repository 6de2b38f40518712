//! `casewatch bulletin` over a ClickHouse database filled by replaying a simulated year: every
//! figure against an independent SQL query, snapshots of the Markdown and CSV, the HTML page in
//! headless Chromium, and the edge cases (no data, a quarter whose previous one is last year).

use std::path::{Path, PathBuf};

use crate::pipeline::{casewatch, run_ok};
use crate::support::TestDb;

/// Windows with names (one configured window has no business at all).
const CONFIG: &str = r#"
[[windows]]
id = "W01"
center = "C001"
name = "公安窗口"
department = "县公安局"

[[windows]]
id = "W02"
center = "C001"
name = "国土资源窗口"
department = "县国土资源局"

[[windows]]
id = "W99"
center = "C001"
name = "新设窗口"
department = "县新设局"
"#;

struct Fixture {
    db: TestDb,
    dir: tempfile::TempDir,
    config: PathBuf,
}

async fn fixture() -> Fixture {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("year.ndjson");
    run_ok(
        casewatch(&db)
            .args([
                "simulate", "--seed", "7", "--months", "12", "--scale", "0.4", "--out",
            ])
            .arg(&events),
    );
    run_ok(casewatch(&db).arg("migrate"));
    run_ok(
        casewatch(&db)
            .args(["replay", "--sink", "clickhouse"])
            .arg(&events),
    );
    let config = dir.path().join("casewatch.toml");
    std::fs::write(&config, CONFIG).unwrap();
    Fixture { db, dir, config }
}

impl Fixture {
    fn bulletin(&self, period: &str, extra: &[&str]) -> PathBuf {
        let out = self.dir.path().join(format!("out-{period}"));
        run_ok(
            casewatch(&self.db)
                .arg("--config")
                .arg(&self.config)
                .args(["bulletin", "--period", period, "--out"])
                .arg(&out)
                .args(extra),
        );
        out
    }

    fn sql_row(&self, sql: &str) -> Vec<String> {
        let text = crate::support::http_query(&self.db.url, &self.db.name, sql);
        text.trim_end_matches('\n')
            .split('\t')
            .map(str::to_string)
            .collect()
    }
}

/// A ratio of two SQL integer expressions as the bulletin shows it (half up, 2 decimals of %).
fn pct(n: &str, d: &str) -> String {
    let e4 = format!("intDiv(2 * 10000 * ({n}) + ({d}), 2 * ({d}))");
    format!("if({d} = 0, '—', concat(toString(intDiv({e4}, 100)), '.', substring(toString(100 + {e4} % 100), 2, 2), '%'))")
}

fn markdown_row<'a>(md: &'a str, label: &str) -> Vec<&'a str> {
    let line = md
        .lines()
        .find(|l| l.starts_with(&format!("| {label} |")))
        .unwrap_or_else(|| panic!("no row {label}"));
    line.trim_matches('|').split(" | ").map(str::trim).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulletin_figures_equal_independent_sql() {
    let f = fixture().await;
    let out = f.bulletin("2014-10", &[]);
    let md = std::fs::read_to_string(out.join("bulletin-2014-10.md")).unwrap();

    // 一、总体情况 against sums of the documented window_monthly view.
    let month = |m: &str| {
        format!(
            "SELECT toString(sum(received)), toString(sum(accepted)), toString(sum(completed)), toString(sum(became_overdue)), \
             toString(sum(alerts_yellow)), toString(sum(alerts_red)), {}, {}, {}, {}, {}, {}, {} FROM window_monthly WHERE month = toDate('{m}')",
            pct("sum(completed)", "sum(accepted)"),
            pct("sum(completed_on_time)", "sum(completed)"),
            pct("sum(completed_early)", "sum(completed_promised)"),
            pct("sum(completed_on_site)", "sum(completed)"),
            pct("sum(evaluations)", "sum(completed)"),
            pct("sum(rating_3 + rating_4 + rating_5)", "sum(evaluations)"),
            pct("sum(promised_seconds) - sum(handling_seconds)", "sum(promised_seconds)"),
        )
    };
    let now = f.sql_row(&month("2014-10-01"));
    let before = f.sql_row(&month("2014-09-01"));
    let labels = [
        "收件",
        "受理",
        "办结",
        "超期办件",
        "黄牌",
        "红牌",
        "办结率",
        "按时办结率",
        "提前办结率",
        "现场办结率",
        "群众评议率",
        "群众满意率",
        "提速率",
    ];
    for (i, label) in labels.iter().enumerate() {
        let row = markdown_row(&md, label);
        assert_eq!(
            (row[1], row[2]),
            (now[i].as_str(), before[i].as_str()),
            "{label}"
        );
    }
    assert!(now[1].parse::<i64>().unwrap() > 100, "a real month");

    // 二、窗口排名: every ranked window's figures against the documented per-window report.
    let csv = std::fs::read_to_string(out.join("ranking-2014-10.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let mut ranked = 0;
    for rec in reader.records() {
        let rec = rec.unwrap();
        let window = &rec[2];
        let want = f
            .sql_row(&format!(
                "SELECT toString(accepted), toString(completed), {}, {}, {}, {}, {} FROM window_monthly \
                 WHERE month = toDate('2014-10-01') AND window_id = '{window}'",
                pct("completed_on_site", "completed"),
                pct("completed_on_time", "completed"),
                pct("completed_early", "completed_promised"),
                pct("evaluations", "completed"),
                pct("rating_3 + rating_4 + rating_5", "evaluations"),
            ));

        let got: Vec<&str> = (5..12).map(|i| &rec[i]).collect();
        assert_eq!(got, want, "window {window}");
        ranked += 1;
    }
    let windows: Vec<String> = f
        .sql_row("SELECT toString(count()) FROM window_monthly WHERE month = toDate('2014-10-01') AND accepted > 0");

    assert_eq!(
        ranked.to_string(),
        windows[0],
        "every window with business is ranked"
    );
    assert!(
        md.contains("| 公安窗口 | 县公安局 |"),
        "names and departments from config"
    );

    // 三、overdue cases (deadline in the month) and red-card cases (red card in the month).
    let overdue = f
        .sql_row("SELECT toString(count()) FROM cases FINAL WHERE overdue = 1 AND toDate(promised_deadline, 'Asia/Shanghai') >= toDate('2014-10-01') AND toDate(promised_deadline, 'Asia/Shanghai') <= toDate('2014-10-31')");

    assert!(
        md.contains(&format!("### 超期办件（{}）", overdue[0])),
        "overdue count {}",
        overdue[0]
    );
    let red = f
        .sql_row("SELECT toString(uniqExact(case_id)) FROM anomalies FINAL WHERE revoked = 0 AND level = 'red' AND toDate(detected_at, 'Asia/Shanghai') >= toDate('2014-10-01') AND toDate(detected_at, 'Asia/Shanghai') <= toDate('2014-10-31')");

    assert!(
        md.contains(&format!("### 红牌办件（{}）", red[0])),
        "red count {}",
        red[0]
    );

    // 四、群众评价.
    let ratings = f
        .sql_row("SELECT toString(sum(rating_5)), toString(sum(rating_4)), toString(sum(rating_3)), toString(sum(rating_2)), toString(sum(rating_1)), toString(sum(rating_1 + rating_2)) FROM window_monthly WHERE month = toDate('2014-10-01')");

    for (label, want) in [
        "非常满意（5）",
        "满意（4）",
        "基本满意（3）",
        "不满意（2）",
        "非常不满意（1）",
        "不满意件数",
    ]
    .iter()
    .zip(&ratings)
    {
        assert_eq!(markdown_row(&md, label)[1], want, "{label}");
    }
    // 五、无业务窗口: the configured window without cases.
    assert!(md.contains("新设窗口（W99）"));

    // 六、督办情况: every window's row and the total against the `supervision` table itself.
    let in_month = |col: &str| {
        format!("ifNull(toDate({col}, 'Asia/Shanghai') BETWEEN toDate('2014-10-01') AND toDate('2014-10-31'), 0) = 1")
    };
    let supervision_sql = |window: &str| {
        format!(
            "SELECT toString(countIf({})), toString(countIf(response_late = 0 AND first_missed_deadline IS NULL AND {})), \
             toString(countIf(response_late = 1 AND {})), toString(countIf({})), \
             toString(countIf(appeal_state = 'granted' AND {})), toString(countIf(appeal_state = 'rejected' AND {})) \
             FROM supervision FINAL WHERE '{window}' = '' OR window_id = '{window}'",
            in_month("ordered_at"),
            in_month("responded_at"),
            in_month("first_missed_deadline"),
            in_month("appealed_at"),
            in_month("decided_at"),
            in_month("decided_at"),
        )
    };
    let section = md.split("## 六、督办情况").nth(1).expect("section 六");
    let total = markdown_row(section, "合计");
    assert_eq!(
        total[1..].to_vec(),
        f.sql_row(&supervision_sql("")),
        "六 合计"
    );
    assert_ne!(total[1], "0", "the month has supervision orders");
    let windows: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("| W") || l.starts_with("| 公安") || l.contains("窗口（"))
        .collect();
    assert!(!windows.is_empty());
    for line in windows {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        let id = cells[0].rsplit_once('（').unwrap().1.trim_end_matches('）');
        assert_eq!(
            cells[1..].to_vec(),
            f.sql_row(&supervision_sql(id)),
            "六 {id}"
        );
    }

    // Snapshots of the Markdown and CSV (CASEWATCH_UPDATE_SNAPSHOTS=1 rewrites them).
    for (name, text) in [("bulletin-2014-10.md", &md), ("ranking-2014-10.csv", &csv)] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bulletin")
            .join(name);
        if std::env::var_os("CASEWATCH_UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("snapshot {} missing", path.display()));
        assert_eq!(text.as_str(), want, "{name} differs from its snapshot");
    }

    // The HTML page in headless Chromium: it renders, with both charts.
    let html = out.join("bulletin-2014-10.html");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external asset"
    );
    let profile = tempfile::tempdir().unwrap();
    let chromium = |extra: &[&str]| {
        let out = std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("file://{}", html.display()))
            .output()
            .expect("chromium is installed by scripts/test");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let dom = chromium(&["--dump-dom"]);
    assert!(dom.contains("二、窗口排名"));
    assert_eq!(dom.matches("class=\"chart\"").count(), 2, "two charts");
    assert!(dom.matches("class=\"bar\"").count() >= 2 * ranked);
    assert_eq!(dom.matches("class=\"line\"").count(), 2);
    let shot = f.dir.path().join("bulletin.png");
    chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1000,2200",
    ]);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 30_000,
        "a non-blank screenshot ({} bytes)",
        png.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_month_quarter_after_a_year_end_and_english() {
    let f = fixture().await;
    // A month with no data: zeros and dashes, never NaN.
    let out = f.bulletin("2013-06", &[]);
    let md = std::fs::read_to_string(out.join("bulletin-2013-06.md")).unwrap();
    assert_eq!(markdown_row(&md, "受理")[1], "0");
    assert_eq!(markdown_row(&md, "按时办结率")[1..4], ["—", "—", "—"]);
    assert!(!md.contains("NaN") && !md.contains("inf"));
    assert!(
        md.contains("公安窗口（W01）"),
        "every configured window is without business"
    );
    let html = std::fs::read_to_string(out.join("bulletin-2013-06.html")).unwrap();
    assert!(!html.contains("NaN"));

    // 2015-Q1 has no data; its previous quarter is 2014-Q4 (last year), which has.
    let out = f.bulletin("2015-Q1", &[]);
    let md = std::fs::read_to_string(out.join("bulletin-2015-Q1.md")).unwrap();
    let q4 = f
        .sql_row("SELECT toString(sum(accepted)) FROM window_monthly WHERE month >= toDate('2014-10-01') AND month <= toDate('2014-12-01')");

    let row = markdown_row(&md, "受理");
    assert_eq!((row[1], row[2]), ("0", q4[0].as_str()));
    assert!(
        md.contains("| 2015-01 |") && md.contains("| 2015-03 |"),
        "month by month"
    );

    // The quarter with data, in English: the month-by-month table sums to the quarter.
    let out = f.bulletin("2014-Q4", &["--lang", "en"]);
    let md = std::fs::read_to_string(out.join("bulletin-2014-Q4.md")).unwrap();
    assert!(md.contains("## 2. Window ranking"));
    let months: i64 = ["2014-10", "2014-11", "2014-12"]
        .iter()
        .map(|m| markdown_row(&md, m)[1].parse::<i64>().unwrap())
        .sum();
    assert_eq!(markdown_row(&md, "accepted")[1], months.to_string());
    assert_eq!(months.to_string(), q4[0]);
}
