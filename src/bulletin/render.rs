//! The bulletin's content as a [`Document`] (sections of headings, tables and paragraphs),
//! rendered to Markdown and to HTML (self-contained, inline SVG charts, A4 print), and the
//! ranking as CSV.

use std::fmt::Write as _;

use super::document::{html_escape, Chart, Document};
use super::{Figures, Ranked, Rates, Sums};
use crate::core::rules::{AnomalyKind, Level};

/// Chinese (default) or English labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
    Zh,
    En,
}

impl Lang {
    fn t(self, zh: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }
}

/// A rate in ten-thousandths as a percentage with two decimals; "—" without a denominator.
pub(crate) fn percent(r: Option<i64>) -> String {
    match r {
        None => "—".to_string(),
        Some(v) => {
            let sign = if v < 0 { "-" } else { "" };
            let a = v.unsigned_abs();
            format!("{sign}{}.{:02}%", a / 100, a % 100)
        }
    }
}

/// A change in percentage points; "—" when either side has no value.
fn points(now: Option<i64>, before: Option<i64>) -> String {
    match (now, before) {
        (Some(a), Some(b)) => {
            let d = a - b;
            let sign = if d > 0 {
                "+"
            } else if d < 0 {
                "-"
            } else {
                "±"
            };
            let a = d.unsigned_abs();
            format!("{sign}{}.{:02}", a / 100, a % 100)
        }
        _ => "—".to_string(),
    }
}

fn delta(now: i64, before: i64) -> String {
    match now - before {
        0 => "±0".to_string(),
        d if d > 0 => format!("+{d}"),
        d => d.to_string(),
    }
}

/// The rate rows of 一、总体情况: (label, rate of the period, of the previous one).
fn rate_rows(
    lang: Lang,
    now: &Rates,
    before: &Rates,
) -> Vec<(&'static str, Option<i64>, Option<i64>)> {
    vec![
        (
            lang.t("办结率", "completion rate"),
            now.completion,
            before.completion,
        ),
        (
            lang.t("按时办结率", "on-time rate"),
            now.on_time,
            before.on_time,
        ),
        (
            lang.t("提前办结率", "early-completion rate"),
            now.early,
            before.early,
        ),
        (
            lang.t("现场办结率", "on-site rate"),
            now.on_site,
            before.on_site,
        ),
        (
            lang.t("群众评议率", "evaluation rate"),
            now.evaluation,
            before.evaluation,
        ),
        (
            lang.t("群众满意率", "satisfaction rate"),
            now.satisfaction,
            before.satisfaction,
        ),
        (
            lang.t("提速率", "speed-up rate"),
            now.speedup,
            before.speedup,
        ),
    ]
}

fn count_rows(lang: Lang, now: &Sums, before: &Sums) -> Vec<(&'static str, i64, i64)> {
    vec![
        (lang.t("收件", "received"), now.received, before.received),
        (lang.t("受理", "accepted"), now.accepted, before.accepted),
        (lang.t("办结", "completed"), now.completed, before.completed),
        (
            lang.t("超期办件", "became overdue"),
            now.became_overdue,
            before.became_overdue,
        ),
        (
            lang.t("黄牌", "yellow cards"),
            now.alerts_yellow,
            before.alerts_yellow,
        ),
        (
            lang.t("红牌", "red cards"),
            now.alerts_red,
            before.alerts_red,
        ),
    ]
}

/// An anomaly kind or an alert level, in the bulletin's language.
fn kind_name(lang: Lang, kind: &str) -> String {
    match (lang, AnomalyKind::parse(kind), Level::parse(kind)) {
        (Lang::Zh, Some(k), _) => k.chinese().to_string(),
        (Lang::Zh, None, Some(l)) => l.chinese().to_string(),
        _ => kind.to_string(),
    }
}

fn window_label(f: &Figures, window_id: &str) -> String {
    f.windows
        .iter()
        .find(|w| w.window_id == window_id)
        .map_or_else(|| window_id.to_string(), |w| w.name.clone())
}

/// The ranking table's header and rows (shared by Markdown and CSV).
fn ranking_table(lang: Lang, ranked: &[Ranked]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec![
        lang.t("名次", "rank"),
        lang.t("中心", "centre"),
        lang.t("窗口编号", "window id"),
        lang.t("窗口", "window"),
        lang.t("部门", "department"),
        lang.t("受理", "accepted"),
        lang.t("办结", "completed"),
        lang.t("现场办结率", "on-site rate"),
        lang.t("按时办结率", "on-time rate"),
        lang.t("提前办结率", "early-completion rate"),
        lang.t("群众评议率", "evaluation rate"),
        lang.t("群众满意率", "satisfaction rate"),
        lang.t("综合得分", "score"),
    ];
    let rows = ranked
        .iter()
        .map(|r| {
            vec![
                r.rank.to_string(),
                r.window.center_id.clone(),
                r.window.window_id.clone(),
                r.window.name.clone(),
                r.window.department.clone(),
                r.window.sums.accepted.to_string(),
                r.window.sums.completed.to_string(),
                percent(r.rates.on_site),
                percent(r.rates.on_time),
                percent(r.rates.early),
                percent(r.rates.evaluation),
                percent(r.rates.satisfaction),
                format!("{:.2}", r.score),
            ]
        })
        .collect();
    (header, rows)
}

/// `ranking-<period>.csv`.
pub(crate) fn csv(lang: Lang, ranked: &[Ranked]) -> String {
    let (header, rows) = ranking_table(lang, ranked);
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&header).expect("in memory");
    for r in rows {
        w.write_record(&r).expect("in memory");
    }
    String::from_utf8(w.into_inner().expect("in memory")).expect("utf-8")
}

fn title(lang: Lang, f: &Figures) -> String {
    let scope = f.center_name.clone();
    match (lang, f.period.is_quarter()) {
        (Lang::Zh, false) => format!("{scope}政务服务电子监察月简报（{}）", f.period.label()),
        (Lang::Zh, true) => format!("{scope}政务服务电子监察季度通报（{}）", f.period.label()),
        (Lang::En, false) => format!(
            "{scope} e-supervision monthly bulletin ({})",
            f.period.label()
        )
        .trim()
        .to_string(),
        (Lang::En, true) => format!(
            "{scope} e-supervision quarterly report ({})",
            f.period.label()
        )
        .trim()
        .to_string(),
    }
}

/// `bulletin-<period>.md`.
pub(crate) fn markdown(lang: Lang, f: &Figures, ranked: &[Ranked]) -> String {
    document(lang, f, ranked).to_markdown()
}

/// The bulletin's sections (SPEC §6), in order.
pub(crate) fn document(lang: Lang, f: &Figures, ranked: &[Ranked]) -> Document {
    let mut doc = Document::new(title(lang, f));
    let (from, to) = f.period.days();
    doc.text(format!("{}：{from} — {to}", lang.t("统计期间", "Period")));
    overview(&mut doc, lang, f);
    ranking(&mut doc, lang, ranked);
    irregular_cases(&mut doc, lang, f);
    evaluations(&mut doc, lang, f);
    idle_windows(&mut doc, lang, f);
    supervision(&mut doc, lang, f);
    if f.provisional_cases > 0 {
        doc.text(provisional_footnote(lang, f.provisional_cases));
    }
    doc
}

/// 一、总体情况: counts and rates against the previous period; a quarter's months.
fn overview(doc: &mut Document, lang: Lang, f: &Figures) {
    doc.heading(2, lang.t("一、总体情况", "1. Overview"));
    doc.chart(Chart::Trend);
    let prev = f.period.previous().label();
    let rows: Vec<Vec<String>> = count_rows(lang, &f.totals, &f.previous)
        .into_iter()
        .map(|(l, a, b)| vec![l.to_string(), a.to_string(), b.to_string(), delta(a, b)])
        .chain(
            rate_rows(lang, &f.totals.rates(), &f.previous.rates())
                .into_iter()
                .map(|(l, a, b)| vec![l.to_string(), percent(a), percent(b), points(a, b)]),
        )
        .collect();
    let prev_header = format!("{} {prev}", lang.t("上期", "previous"));
    doc.table(
        &[
            lang.t("指标", "figure"),
            lang.t("本期", "this period"),
            &prev_header,
            lang.t("环比", "change"),
        ],
        rows,
    );
    if f.period.is_quarter() {
        doc.text(lang.t("分月情况：", "Month by month:"));
        let rows: Vec<Vec<String>> = f
            .by_month
            .iter()
            .map(|(label, s)| {
                let r = s.rates();
                vec![
                    label.clone(),
                    s.accepted.to_string(),
                    s.completed.to_string(),
                    percent(r.on_time),
                    percent(r.early),
                    percent(r.on_site),
                    s.became_overdue.to_string(),
                    s.alerts_red.to_string(),
                ]
            })
            .collect();
        doc.table(
            &[
                lang.t("月份", "month"),
                lang.t("受理", "accepted"),
                lang.t("办结", "completed"),
                lang.t("按时办结率", "on-time rate"),
                lang.t("提前办结率", "early-completion rate"),
                lang.t("现场办结率", "on-site rate"),
                lang.t("超期办件", "became overdue"),
                lang.t("红牌", "red cards"),
            ],
            rows,
        );
    }
}

/// 二、窗口排名: the ranking, the best praised and the worst named for rectification.
fn ranking(doc: &mut Document, lang: Lang, ranked: &[Ranked]) {
    doc.heading(2, lang.t("二、窗口排名", "2. Window ranking"));
    doc.chart(Chart::WindowRates);
    let (header, rows) = ranking_table(lang, ranked);
    doc.table(&header, rows);
    let top: Vec<String> = ranked
        .iter()
        .take(3)
        .map(|r| r.window.name.clone())
        .collect();
    let bottom: Vec<String> = ranked
        .iter()
        .rev()
        .take(3)
        .filter(|r| r.rank > 3)
        .map(|r| r.window.name.clone())
        .collect();
    if !top.is_empty() {
        doc.labelled(
            lang.t("通报表扬", "Commended"),
            format!("{}{}", lang.t("：", ": "), top.join(lang.t("、", ", "))),
        );
    }
    if !bottom.is_empty() {
        doc.labelled(
            lang.t("限期整改", "To rectify"),
            format!("{}{}", lang.t("：", ": "), bottom.join(lang.t("、", ", "))),
        );
    }
}

/// 三、超期及异常办件: overdue and red-card cases, anomalies by kind and window.
fn irregular_cases(doc: &mut Document, lang: Lang, f: &Figures) {
    doc.heading(
        2,
        lang.t("三、超期及异常办件", "3. Overdue and irregular cases"),
    );
    for (heading, cases, at_label) in [
        (
            lang.t("超期办件", "Overdue cases"),
            &f.overdue,
            lang.t("承诺时限", "promised deadline"),
        ),
        (
            lang.t("红牌办件", "Red-card cases"),
            &f.red,
            lang.t("红牌时间", "red card at"),
        ),
    ] {
        doc.heading(3, format!("{heading}（{}）", cases.len()));
        if cases.is_empty() {
            doc.text(lang.t("无。", "None."));
            continue;
        }
        let rows: Vec<Vec<String>> = cases
            .iter()
            .map(|c| {
                vec![
                    c.case_id.clone(),
                    window_label(f, &c.window_id),
                    format!("{} {}", c.item_code, c.item_name)
                        .trim()
                        .to_string(),
                    local(f, c.at),
                    f.working_days_late(c)
                        .map_or("—".to_string(), |d| format!("{d:.2}")),
                    c.kinds
                        .split(',')
                        .map(|k| kind_name(lang, k))
                        .collect::<Vec<_>>()
                        .join(lang.t("、", ", ")),
                ]
            })
            .collect();
        doc.table(
            &[
                lang.t("办件", "case"),
                lang.t("窗口", "window"),
                lang.t("事项", "item"),
                at_label,
                lang.t("超期工作日", "working days late"),
                lang.t("等级/类型", "level/kinds"),
            ],
            rows,
        );
    }
    doc.heading(
        3,
        lang.t("异常按类型和窗口", "Anomalies by kind and window"),
    );
    if f.anomalies.is_empty() {
        doc.text(lang.t("无。", "None."));
    } else {
        let rows: Vec<Vec<String>> = f
            .anomalies
            .iter()
            .map(|a| {
                vec![
                    kind_name(lang, &a.kind),
                    kind_name(lang, &a.level),
                    window_label(f, &a.window_id),
                    a.count.to_string(),
                ]
            })
            .collect();
        doc.table(
            &[
                lang.t("类型", "kind"),
                lang.t("等级", "level"),
                lang.t("窗口", "window"),
                lang.t("件数", "count"),
            ],
            rows,
        );
    }
}

/// 四、群众评价: the rating distribution and the two rates.
fn evaluations(doc: &mut Document, lang: Lang, f: &Figures) {
    doc.heading(2, lang.t("四、群众评价", "4. Evaluations"));
    let t = &f.totals;
    let r = t.rates();
    let rows = vec![
        vec![
            lang.t("非常满意（5）", "5 — very satisfied").to_string(),
            t.rating_5.to_string(),
        ],
        vec![
            lang.t("满意（4）", "4 — satisfied").to_string(),
            t.rating_4.to_string(),
        ],
        vec![
            lang.t("基本满意（3）", "3 — fairly satisfied").to_string(),
            t.rating_3.to_string(),
        ],
        vec![
            lang.t("不满意（2）", "2 — unsatisfied").to_string(),
            t.rating_2.to_string(),
        ],
        vec![
            lang.t("非常不满意（1）", "1 — very unsatisfied")
                .to_string(),
            t.rating_1.to_string(),
        ],
        vec![
            lang.t("默认评价", "default evaluations").to_string(),
            t.default_evaluations.to_string(),
        ],
        vec![
            lang.t("群众评议率", "evaluation rate").to_string(),
            percent(r.evaluation),
        ],
        vec![
            lang.t("群众满意率", "satisfaction rate").to_string(),
            percent(r.satisfaction),
        ],
        vec![
            lang.t("不满意件数", "unsatisfied").to_string(),
            t.unsatisfied().to_string(),
        ],
    ];
    doc.table(&[lang.t("评价", "rating"), lang.t("件数", "count")], rows);
}

/// 五、无业务窗口: configured windows with no accepted case.
fn idle_windows(doc: &mut Document, lang: Lang, f: &Figures) {
    doc.heading(2, lang.t("五、无业务窗口", "5. Windows without business"));
    let idle: Vec<String> = f
        .windows
        .iter()
        .filter(|w| w.sums.accepted == 0)
        .map(|w| format!("{}（{}）", w.name, w.window_id))
        .collect();
    if idle.is_empty() {
        doc.text(lang.t("无。", "None."));
    } else {
        doc.text(idle.join(lang.t("、", ", ")));
    }
}

/// 六、督办情况 (SPEC §9): per window with orders or appeals in the period, its orders, the
/// responses on time and overdue, and the appeals granted and rejected; then the centre's total.
fn supervision(doc: &mut Document, lang: Lang, f: &Figures) {
    doc.heading(2, lang.t("六、督办情况", "6. Supervision"));
    let figures = |s: &Sums| {
        [
            s.orders,
            s.orders_responded_on_time,
            s.orders_overdue,
            s.appeals,
            s.appeals_granted,
            s.appeals_rejected,
        ]
    };
    let mut rows: Vec<Vec<String>> = f
        .windows
        .iter()
        .filter(|w| figures(&w.sums).iter().any(|n| *n != 0))
        .map(|w| {
            let mut row = vec![format!("{}（{}）", w.name, w.window_id)];
            row.extend(figures(&w.sums).iter().map(i64::to_string));
            row
        })
        .collect();
    if rows.is_empty() {
        doc.text(lang.t("本期无督办和申诉。", "No supervision orders or appeals."));
        return;
    }
    let mut total = vec![lang.t("合计", "Total").to_string()];
    total.extend(figures(&f.totals).iter().map(i64::to_string));
    rows.push(total);
    doc.table(
        &[
            lang.t("窗口", "window"),
            lang.t("督办", "orders"),
            lang.t("按时反馈", "answered on time"),
            lang.t("超期反馈", "answered late or not"),
            lang.t("申诉", "appeals"),
            lang.t("申诉成立", "granted"),
            lang.t("申诉驳回", "rejected"),
        ],
        rows,
    );
    doc.text(lang.t(
        "注：申诉成立的黄牌、红牌已作废，不计入以上各项比率、窗口排名和异常统计；超期办件的申诉成立后按按时办结统计。",
        "Note: a yellow or red card whose appeal was granted is annulled: it counts in no rate, \
         ranking or anomaly figure above, and an overdue case whose card was annulled counts as \
         completed on time.",
    ));
}

/// The footnote of a period with deadlines in a year without holiday data (SPEC §2).
pub(crate) fn provisional_footnote(lang: Lang, cases: u64) -> String {
    match lang {
        Lang::Zh => format!(
            "注：本期有 {cases} 件办件的办理时限涉及尚未导入节假日安排的年份，按周一至周五暂定；\
             该年节假日安排导入后，相关数字将重新计算。"
        ),
        Lang::En => format!(
            "Note: {cases} cases of this period have deadlines in a year without holiday data, \
             provisionally counted Monday to Friday; the figures are recomputed once that year's \
             holidays are loaded."
        ),
    }
}

fn local(f: &Figures, t: u32) -> String {
    chrono::DateTime::from_timestamp(i64::from(t), 0)
        .map(|d| {
            d.with_timezone(&f.calendar.tz())
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

/// Grouped bars: per window, on-time and on-site rates (0–100 %).
fn bars_svg(lang: Lang, ranked: &[Ranked]) -> String {
    let n = ranked.len().max(1);
    let (width, height, left, bottom) = (720.0, 300.0, 40.0, 70.0);
    let plot_h = height - bottom - 20.0;
    let slot = (width - left - 10.0) / n as f64;
    let bar = (slot * 0.38).min(18.0);
    let mut svg = format!(
        "<svg viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\" class=\"chart\">",
        lang.t(
            "各窗口按时办结率与现场办结率",
            "on-time and on-site rate per window"
        )
    );
    for pct in [0, 25, 50, 75, 100] {
        let y = 20.0 + plot_h * (1.0 - f64::from(pct) / 100.0);
        let _ = write!(svg, "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{pct}%</text>", width - 10.0, left - 4.0, y + 3.0);
    }
    for (i, r) in ranked.iter().enumerate() {
        let x = left + slot * i as f64 + slot / 2.0;
        for (j, (rate, color)) in [(r.rates.on_time, "#1f6fb2"), (r.rates.on_site, "#e39b1b")]
            .into_iter()
            .enumerate()
        {
            let v = rate.unwrap_or(0) as f64 / 10_000.0;
            let h = plot_h * v;
            let bx = x - bar + bar * j as f64;
            let _ = write!(svg, "<rect class=\"bar\" x=\"{bx:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{color}\"><title>{} {}</title></rect>", 20.0 + plot_h - h, html_escape(&r.window.name), percent(rate));
        }
        let _ = write!(svg, "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" transform=\"rotate(-40 {x:.1} {:.1})\">{}</text>", height - bottom + 14.0, height - bottom + 14.0, html_escape(&r.window.name));
    }
    let _ = write!(svg, "<rect x=\"{left}\" y=\"2\" width=\"10\" height=\"10\" fill=\"#1f6fb2\"/><text x=\"{}\" y=\"11\" font-size=\"11\">{}</text><rect x=\"{}\" y=\"2\" width=\"10\" height=\"10\" fill=\"#e39b1b\"/><text x=\"{}\" y=\"11\" font-size=\"11\">{}</text></svg>",
        left + 14.0, lang.t("按时办结率", "on-time rate"), left + 120.0, left + 134.0, lang.t("现场办结率", "on-site rate"));
    svg
}

/// Lines over twelve months: completed cases (left axis) and on-time rate (right axis).
fn trend_svg(lang: Lang, trend: &[(String, Sums)]) -> String {
    let (width, height, left, right, top, bottom) = (720.0, 260.0, 50.0, 50.0, 20.0, 40.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let max_completed = trend
        .iter()
        .map(|(_, s)| s.completed)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let step = plot_w / (trend.len().max(2) - 1) as f64;
    let mut svg = format!(
        "<svg viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\" class=\"chart\">",
        lang.t(
            "近12个月办结量与按时办结率",
            "completed cases and on-time rate, last 12 months"
        )
    );
    let mut completed = Vec::new();
    let mut on_time = Vec::new();
    for (i, (label, s)) in trend.iter().enumerate() {
        let x = left + step * i as f64;
        completed.push(format!(
            "{x:.1},{:.1}",
            top + plot_h * (1.0 - s.completed as f64 / max_completed)
        ));
        if let Some(r) = s.rates().on_time {
            on_time.push(format!(
                "{x:.1},{:.1}",
                top + plot_h * (1.0 - r as f64 / 10_000.0)
            ));
        }
        let _ = write!(
            svg,
            "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\">{}</text>",
            height - bottom + 14.0,
            &label[2..]
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\"/>",
        width - right,
        top + plot_h,
        top + plot_h
    );
    let _ = write!(svg, "<text x=\"{}\" y=\"{top}\" font-size=\"10\" text-anchor=\"end\">{}</text><text x=\"{}\" y=\"{top}\" font-size=\"10\">100%</text>", left - 4.0, max_completed as i64, width - right + 4.0);
    let _ = write!(svg, "<polyline class=\"line\" fill=\"none\" stroke=\"#1f6fb2\" stroke-width=\"2\" points=\"{}\"/>", completed.join(" "));
    let _ = write!(svg, "<polyline class=\"line\" fill=\"none\" stroke=\"#2e9e4f\" stroke-width=\"2\" stroke-dasharray=\"5 3\" points=\"{}\"/>", on_time.join(" "));
    let _ = write!(svg, "<text x=\"{left}\" y=\"{}\" font-size=\"11\" fill=\"#1f6fb2\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#2e9e4f\">{}</text></svg>",
        height - 4.0, lang.t("办结量（左轴）", "completed (left axis)"), left + 200.0, height - 4.0, lang.t("按时办结率（右轴）", "on-time rate (right axis)"));
    svg
}

/// The bulletin's content as HTML with its two charts (the console shows it in its pages).
pub(crate) fn html_body(lang: Lang, f: &Figures, ranked: &[Ranked]) -> String {
    document(lang, f, ranked).to_html_body(|chart| match chart {
        Chart::Trend => trend_svg(lang, &f.trend),
        Chart::WindowRates => bars_svg(lang, ranked),
    })
}

/// `bulletin-<period>.html`: the same document with its charts, self-contained, A4 print.
pub(crate) fn html(lang: Lang, f: &Figures, ranked: &[Ranked]) -> String {
    let body = html_body(lang, f, ranked);
    format!(
        "<!DOCTYPE html><html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
         @page {{ size: A4; margin: 16mm; }} body {{ font-family: sans-serif; font-size: 12px; color: #222; max-width: 180mm; margin: auto; }}\
         h1 {{ font-size: 20px; text-align: center; }} h2 {{ font-size: 16px; border-bottom: 1px solid #999; }}\
         table {{ border-collapse: collapse; width: 100%; margin: 6px 0 12px; page-break-inside: avoid; }}\
         th, td {{ border: 1px solid #bbb; padding: 2px 4px; text-align: center; }} th {{ background: #eef; }}\
         svg.chart {{ width: 100%; height: auto; page-break-inside: avoid; }}</style></head><body>{body}</body></html>\n",
        lang.t("zh-CN", "en"),
        html_escape(&title(lang, f))
    )
}
