//! The notice reader: past notices reproduce the shipped data; malformed ones are refused whole.

use super::*;

/// The notice texts of 2015–2026 (tests/fixtures/notices), written in the notice's format from
/// the dates of the shipped holiday-cn files, with the shipped file of the same year.
const PAST: [(i32, &str, &[u8]); 12] = [
    (
        2015,
        include_str!("../../../tests/fixtures/notices/2015.txt"),
        include_bytes!("../../../config/holidays/2015.json"),
    ),
    (
        2016,
        include_str!("../../../tests/fixtures/notices/2016.txt"),
        include_bytes!("../../../config/holidays/2016.json"),
    ),
    (
        2017,
        include_str!("../../../tests/fixtures/notices/2017.txt"),
        include_bytes!("../../../config/holidays/2017.json"),
    ),
    (
        2018,
        include_str!("../../../tests/fixtures/notices/2018.txt"),
        include_bytes!("../../../config/holidays/2018.json"),
    ),
    (
        2019,
        include_str!("../../../tests/fixtures/notices/2019.txt"),
        include_bytes!("../../../config/holidays/2019.json"),
    ),
    (
        2020,
        include_str!("../../../tests/fixtures/notices/2020.txt"),
        include_bytes!("../../../config/holidays/2020.json"),
    ),
    (
        2021,
        include_str!("../../../tests/fixtures/notices/2021.txt"),
        include_bytes!("../../../config/holidays/2021.json"),
    ),
    (
        2022,
        include_str!("../../../tests/fixtures/notices/2022.txt"),
        include_bytes!("../../../config/holidays/2022.json"),
    ),
    (
        2023,
        include_str!("../../../tests/fixtures/notices/2023.txt"),
        include_bytes!("../../../config/holidays/2023.json"),
    ),
    (
        2024,
        include_str!("../../../tests/fixtures/notices/2024.txt"),
        include_bytes!("../../../config/holidays/2024.json"),
    ),
    (
        2025,
        include_str!("../../../tests/fixtures/notices/2025.txt"),
        include_bytes!("../../../config/holidays/2025.json"),
    ),
    (
        2026,
        include_str!("../../../tests/fixtures/notices/2026.txt"),
        include_bytes!("../../../config/holidays/2026.json"),
    ),
];

#[derive(serde::Deserialize)]
struct Papers {
    papers: Vec<String>,
}

#[test]
fn past_notices_reproduce_the_shipped_files_byte_for_byte() {
    for (year, text, shipped) in PAST {
        let notice = parse_notice(text).unwrap_or_else(|e| panic!("{year}: {e}"));
        assert_eq!(notice.year, year);
        // The notice's address is not in its text: the operator passes it (--paper).
        let papers: Papers = serde_json::from_slice(shipped).unwrap();
        let json = notice.to_holiday_cn_json(&papers.papers);
        assert_eq!(json, std::str::from_utf8(shipped).unwrap(), "{year}");
    }
}

const SPEC_2026: &str = "国务院办公厅关于2026年部分节假日安排的通知
一、元旦：1月1日（周四）至3日（周六）放假调休，共3天。1月4日（周日）上班。
二、春节：2月15日（农历腊月二十八、周日）至23日（农历正月初七、周一）放假调休，共9天。2月14日（周六）、2月28日（周六）上班。
三、清明节：4月4日（周六）至6日（周一）放假，共3天。
四、劳动节：5月1日（周五）至5日（周二）放假调休，共5天。5月9日（周六）上班。
五、端午节：6月19日（周五）至21日（周日）放假，共3天。
六、中秋节：9月25日（周五）至27日（周日）放假，共3天。
七、国庆节：10月1日（周四）至7日（周三）放假调休，共7天。9月20日（周日）、10月10日（周六）上班。
";

#[test]
fn ascii_punctuation_spaces_and_order_do_not_matter() {
    let reference = parse_notice(SPEC_2026).unwrap();
    let ascii = SPEC_2026
        .replace('（', " (")
        .replace('）', ") ")
        .replace('：', ": ")
        .replace('，', ", ")
        .replace('。', ". ");
    assert_eq!(parse_notice(&ascii).unwrap(), reference);
    // The holidays in another order (renumbered) give the same year.
    let mut lines: Vec<&str> = SPEC_2026.lines().collect();
    lines[1..].reverse();
    let numbers = ["一", "二", "三", "四", "五", "六", "七"];
    let reordered: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| match l.split_once('、') {
            Some((_, rest)) if i > 0 => format!("{}、{rest}", numbers[i - 1]),
            _ => l.to_string(),
        })
        .collect();
    assert_eq!(parse_notice(&reordered.join("\n")).unwrap(), reference);
    let days = reference.days();
    assert_eq!(days.len(), 33 + 6);
    assert_eq!(
        days[0],
        (NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), true, "元旦")
    );
}

#[test]
fn a_range_across_the_new_year_without_years_starts_the_year_before() {
    let text = SPEC_2026.replace(
        "一、元旦：1月1日（周四）至3日（周六）放假调休，共3天。1月4日（周日）上班。",
        "一、元旦：12月31日（周三）至1月3日（周六）放假调休，共4天。1月4日（周日）上班。",
    );
    let notice = parse_notice(&text).unwrap();
    let first = notice.days()[0];
    assert_eq!(first.0, NaiveDate::from_ymd_opt(2025, 12, 31).unwrap());
}

/// Refuses `text` at `line_no`, quoting that line, with a message containing `needle`.
fn refused(text: &str, line_no: usize, needle: &str) {
    let err = parse_notice(text).expect_err("the notice must be refused");
    assert_eq!(err.line_no, line_no, "{err}");
    assert!(err.message.contains(needle), "{err}");
    if line_no > 0 {
        assert_eq!(
            err.line,
            text.lines().nth(line_no - 1).unwrap().trim(),
            "{err}"
        );
    }
}

#[test]
fn malformed_notices_are_refused_with_the_line() {
    refused(
        &SPEC_2026.replace("共9天", "共8天"),
        3,
        "共8天, but the dates give 9",
    );
    refused(
        &SPEC_2026.replace("5月9日（周六）", "5月9日（周日）"),
        5,
        "2026-05-09 is a 周六, not a 周日",
    );
    refused(
        &SPEC_2026.replace("五、端午节", "五、植树节"),
        6,
        "unknown holiday name \"植树节\"",
    );
    refused(
        &SPEC_2026.replace("至7日（周三）放假调休", "至放假调休"),
        8,
        "a range without its end",
    );
    refused(
        &SPEC_2026.replace("至7日（周三）", "至7（周三）"),
        8,
        "a number without 年, 月 or 日",
    );
    refused(
        &SPEC_2026.replace("至21日（周日）放假，共3天。", "至"),
        6,
        "a range without its end",
    );
    refused(
        &SPEC_2026.replace("10月10日（周六）上班", "10月9日（周五）上班"),
        8,
        "a make-up working day falls on a weekend",
    );
    refused(
        &SPEC_2026.replace("9月20日（周日）", "9月27日（周日）"),
        8,
        "both a day off and a working day",
    );
    refused(
        &SPEC_2026.replace("六、中秋节", "六、国庆节"),
        8,
        "国庆节 is named twice",
    );
    refused(
        &SPEC_2026
            .replace("2月15日", "2月15 日")
            .replace("放假调休，共9天", "放假调休，共九天"),
        3,
        "cannot read the count",
    );
    // A half-written year: the paste stopped after the fifth holiday.
    let half: String = SPEC_2026.lines().take(6).collect::<Vec<_>>().join("\n");
    refused(&half, 6, "the notice has no 中秋节");
    // A line lost in the middle: the numbering has a gap.
    let gap: String = SPEC_2026
        .lines()
        .filter(|l| !l.starts_with("三、"))
        .collect::<Vec<_>>()
        .join("\n");
    refused(&gap, 4, "item 4 follows item 2");
    refused(
        &SPEC_2026.replace("2026年部分节假日安排", "部分节假日安排"),
        0,
        "no year",
    );
    refused(
        &SPEC_2026.replace("2月15日（农历腊月二十八、周日）", "2月15日（腊月二十八）"),
        3,
        "cannot read the remark",
    );
    refused(
        &SPEC_2026.replace("2月28日（周六）", "2月30日（周一）"),
        3,
        "does not exist",
    );
}

#[test]
fn before_2008_the_four_old_holidays_are_the_year() {
    let text = "国务院办公厅关于2007年部分节假日安排的通知
一、元旦：1月1日至3日放假调休，共3天。2006年12月30日（星期六）、31日（星期日）上班。
二、春节：2月18日至24日放假调休，共7天。2月17日（星期六）、2月25日（星期日）上班。
三、“五一”：5月1日至7日放假调休，共7天。4月28日（星期六）、29日（星期日）上班。
四、“十一”：10月1日至7日放假调休，共7天。9月29日（星期六）、30日（星期日）上班。
";
    let notice = parse_notice(text).unwrap();
    let shipped = include_str!("../../../config/holidays/2007.json");
    let papers: Papers = serde_json::from_str(shipped).unwrap();
    assert_eq!(notice.to_holiday_cn_json(&papers.papers), shipped);
    // From 2008 on, the four old holidays alone are a half-written year.
    let four: Vec<String> = SPEC_2026
        .lines()
        .enumerate()
        .filter(|(i, _)| [0, 1, 2, 4, 7].contains(i))
        .zip(["", "一", "二", "三", "四"])
        .map(|((_, l), n)| match l.split_once('、') {
            Some((_, rest)) if !n.is_empty() => format!("{n}、{rest}"),
            _ => l.to_string(),
        })
        .collect();
    refused(&four.join("\n"), 5, "the notice has no 清明节");
}
