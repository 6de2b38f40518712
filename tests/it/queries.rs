//! The documented queries of `schemas/clickhouse/queries/`, run against a database filled by
//! replaying a simulated stream, each checked against the replay's CSV outputs.

use std::collections::{BTreeMap, BTreeSet};

use crate::pipeline::{replay_both, simulated_lines};

/// A month after the stream ends: cases still open are past their deadlines.
const AS_OF: &str = "2020-04-01T00:00:00+08:00";
use crate::support::{http_query, TestDb};

fn query(name: &str, params: &[(&str, &str)]) -> String {
    let path = format!(
        "{}/schemas/clickhouse/queries/{name}.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut sql = std::fs::read_to_string(path).unwrap();
    for (k, v) in params {
        sql = sql.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!sql.contains("{{"), "unreplaced placeholder in {name}");
    sql
}

fn csv(dir: &std::path::Path, name: &str) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(dir.join(name)).unwrap();
    let headers: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    r.records()
        .map(|rec| {
            headers
                .iter()
                .cloned()
                .zip(rec.unwrap().iter().map(str::to_string))
                .collect()
        })
        .collect()
}

fn tsv(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_queries_answer_what_the_replay_says() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    // Seed 32 leaves orders open and late, and appeals granted, rejected and pending.
    replay_both(&db, dir.path(), &simulated_lines(32, 3, 0.4), AS_OF);
    let out = dir.path().join("out");
    let run = |name: &str, params: &[(&str, &str)]| {
        tsv(&http_query(&db.url, &db.name, &query(name, params)))
    };

    // The month's per-window report: one row per window of window_monthly.csv, same rates.
    let rows = run("monthly_window_report", &[("month", "'2020-01-01'")]);
    let expected: Vec<BTreeMap<String, String>> = csv(&out, "window_monthly.csv")
        .into_iter()
        .filter(|r| r["month"] == "2020-01")
        .collect();
    assert_eq!(rows.len(), expected.len());
    assert!(rows.len() >= 20);
    for (row, exp) in rows.iter().zip(&expected) {
        assert_eq!(row[0], exp["window_id"]);
        assert_eq!(row[3], exp["completed"]);
        for (i, rate) in [
            (12, "on_time_rate"),
            (13, "early_rate"),
            (16, "satisfaction_rate"),
            (17, "speedup_rate"),
        ] {
            let got: Option<f64> = (row[i] != "\\N").then(|| row[i].parse().unwrap());
            let want: Option<f64> = (!exp[rate].is_empty()).then(|| exp[rate].parse().unwrap());
            assert_eq!(got, want, "{rate} of {}", exp["window_id"]);
        }
    }

    let cases = csv(&out, "cases.csv");
    // Open overdue cases.
    let got: BTreeSet<String> = run("open_overdue_cases", &[])
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let want: BTreeSet<String> = cases
        .iter()
        .filter(|c| c["overdue"] == "1" && (c["status"] == "accepted" || c["status"] == "paused"))
        .map(|c| c["case_id"].clone())
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);

    // Red-card cases, each with a red-level kind.
    let red = run("red_card_cases", &[]);
    let want: BTreeSet<String> = cases
        .iter()
        .filter(|c| c["alert_level"] == "red")
        .map(|c| c["case_id"].clone())
        .collect();
    assert_eq!(
        red.iter().map(|r| r[0].clone()).collect::<BTreeSet<_>>(),
        want
    );
    assert!(red.iter().all(|r| [
        "out_of_loop",
        "legal_overdue",
        "overcharge",
        "supervision_overdue"
    ]
    .iter()
    .any(|k| r[4].contains(k))));

    // Anomalies by kind and window in January (UTC days of detection).
    let mut got: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in run(
        "anomalies_by_kind_and_window",
        &[("from", "'2020-01-01'"), ("to", "'2020-01-31'")],
    ) {
        got.insert((r[0].clone(), r[2].clone()), r[3].parse().unwrap());
    }
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    for a in csv(&out, "anomalies.csv")
        .into_iter()
        .filter(|a| a["detected_at"].starts_with("2020-01"))
    {
        *want
            .entry((a["kind"].clone(), a["window_id"].clone()))
            .or_default() += 1;
    }
    assert!(!want.is_empty());
    assert_eq!(got, want);

    // The supervision loop, against supervision.csv.
    let supervision = csv(&out, "supervision.csv");
    let mut want: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for s in supervision
        .iter()
        .filter(|s| s["order_state"] == "ordered" || s["order_state"] == "responded")
    {
        let e = want.entry(s["window_id"].clone()).or_default();
        e.0 += u64::from(s["order_state"] == "ordered");
        e.1 += u64::from(s["order_state"] == "responded");
        e.2 += u64::from(s["response_late"] == "1");
    }
    let got: BTreeMap<String, (u64, u64, u64)> = run("open_orders_by_window", &[])
        .into_iter()
        .map(|r| {
            (
                r[1].clone(),
                (
                    r[2].parse().unwrap(),
                    r[3].parse().unwrap(),
                    r[4].parse().unwrap(),
                ),
            )
        })
        .collect();
    assert!(!want.is_empty(), "the stream leaves orders open");
    assert_eq!(got, want);
    let got: BTreeSet<(String, String)> = run("overdue_orders", &[])
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    let want: BTreeSet<(String, String)> = supervision
        .iter()
        .filter(|s| s["response_late"] == "1")
        .map(|s| (s["case_id"].clone(), s["kind"].clone()))
        .collect();
    assert!(!want.is_empty(), "the stream has overdue orders");
    assert_eq!(got, want);
    let mut want: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
    for s in supervision.iter().filter(|s| !s["appeal_state"].is_empty()) {
        let e = want
            .entry((s["window_id"].clone(), s["kind"].clone()))
            .or_default();
        e.0 += u64::from(s["appeal_state"] == "granted");
        e.1 += u64::from(s["appeal_state"] == "rejected");
        e.2 += u64::from(s["appeal_state"] == "pending");
    }
    let got: BTreeMap<(String, String), (u64, u64, u64)> = run(
        "appeal_outcomes",
        &[("from", "'2000-01-01'"), ("to", "'2100-01-01'")],
    )
    .into_iter()
    .map(|r| {
        (
            (r[0].clone(), r[1].clone()),
            (
                r[2].parse().unwrap(),
                r[3].parse().unwrap(),
                r[4].parse().unwrap(),
            ),
        )
    })
    .collect();
    assert!(!want.is_empty(), "the stream has appeals");
    assert_eq!(got, want);

    // Dead letters by reason.
    let got: BTreeMap<String, u64> = run("dead_letters_by_reason", &[])
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for d in csv(&out, "dead_letters.csv") {
        *want.entry(d["reason"].clone()).or_default() += 1;
    }
    assert_eq!(got, want);
}
