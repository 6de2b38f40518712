//! Periods, rates and ranking (no I/O).

use chrono::NaiveDate;

use super::{rank, Period, Sums, Weights, WindowFigures};
use crate::bulletin::render::percent;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

#[test]
fn periods_parse_and_step_back_across_year_ends() {
    let today = d("2015-01-10");
    assert_eq!(
        Period::parse("2014-10", today).unwrap(),
        Period::Month {
            year: 2014,
            month: 10
        }
    );
    assert_eq!(
        Period::parse("2014-Q3", today).unwrap(),
        Period::Quarter {
            year: 2014,
            quarter: 3
        }
    );
    assert_eq!(
        Period::parse("last-month", today).unwrap(),
        Period::Month {
            year: 2014,
            month: 12
        }
    );
    assert_eq!(
        Period::parse("last-quarter", today).unwrap(),
        Period::Quarter {
            year: 2014,
            quarter: 4
        }
    );
    for bad in [
        "2014-13",
        "2014-Q5",
        "2014",
        "14-10",
        "2014-1",
        "next-month",
    ] {
        assert!(Period::parse(bad, today).is_err(), "{bad}");
    }
    let q1 = Period::Quarter {
        year: 2015,
        quarter: 1,
    };
    assert_eq!(
        q1.previous(),
        Period::Quarter {
            year: 2014,
            quarter: 4
        }
    );
    assert_eq!(q1.days(), (d("2015-01-01"), d("2015-03-31")));
    assert_eq!(q1.months(), vec![(2015, 1), (2015, 2), (2015, 3)]);
    assert_eq!(
        Period::Month {
            year: 2016,
            month: 2
        }
        .days(),
        (d("2016-02-01"), d("2016-02-29"))
    );
    assert_eq!(q1.label(), "2015-Q1");
}

#[test]
fn rates_are_ratios_of_sums_and_dash_without_denominator() {
    let s = Sums {
        accepted: 3,
        completed: 3,
        completed_on_time: 2,
        ..Sums::default()
    };
    let r = s.rates();
    assert_eq!(percent(r.on_time), "66.67%");
    assert_eq!(percent(r.completion), "100.00%");
    assert_eq!(percent(r.satisfaction), "—");
    assert_eq!(percent(Some(5)), "0.05%");
}

fn window(id: &str, accepted: i64, completed: i64, on_time: i64) -> WindowFigures {
    WindowFigures {
        center_id: "C1".into(),
        window_id: id.into(),
        name: id.into(),
        department: String::new(),
        sums: Sums {
            accepted,
            completed,
            completed_on_time: on_time,
            ..Sums::default()
        },
    }
}

#[test]
fn ranking_by_weighted_score_with_deterministic_ties() {
    let w = Weights {
        on_site: 0.0,
        on_time: 1.0,
        early: 0.0,
        evaluation: 0.0,
        satisfaction: 0.0,
    };
    let ranked = rank(
        &[
            window("W3", 10, 10, 9),
            window("W1", 10, 10, 9),
            window("W2", 20, 20, 18),
            window("W4", 10, 10, 10),
            window("W5", 0, 0, 0),
        ],
        w,
    );
    let order: Vec<(&str, usize)> = ranked
        .iter()
        .map(|r| (r.window.window_id.as_str(), r.rank))
        .collect();
    // W4 100 %; W2 90 % with more completed before W1/W3 at 90 %; W5 accepted nothing.
    assert_eq!(order, [("W4", 1), ("W2", 2), ("W1", 3), ("W3", 4)]);
    assert_eq!(ranked[0].score, 100.0);
}
