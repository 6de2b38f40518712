//! The State Council's yearly holiday notice (国务院办公厅关于YYYY年部分节假日安排的通知), read
//! from plain text into one year of holiday data (SPEC §2, "Calendar coverage").
//!
//! Pure: text in, [`Notice`] or [`NoticeError`] out; [`Notice::to_holiday_cn_json`] renders the
//! holiday-cn file the calendar reads. The notice is read the way an operator pastes it from the
//! government website:
//!
//! ```text
//! 国务院办公厅关于2026年部分节假日安排的通知
//! 一、元旦：1月1日（周四）至3日（周六）放假调休，共3天。1月4日（周日）上班。
//! 二、春节：2月15日（农历腊月二十八、周日）至23日（农历正月初七、周一）放假调休，共9天。2月14日（周六）、2月28日（周六）上班。
//! ```
//!
//! Only the numbered lines are read (the title gives the year; the rest is prose). Full-width
//! or ASCII punctuation, spaces anywhere, lunar-date remarks, 周X or 星期X, single days, ranges
//! within or across months and years (`2018年12月30日至2019年1月1日`), 补休 days, make-up working
//! days (上班) and `起正常上班` (the first working day after an extended holiday) are understood.
//!
//! Everything that can be checked is: each `共N天` against the days the line gives off so far,
//! each bracketed weekday against its date, make-up days on weekends, no day both off and on or
//! listed twice, known holiday names each once, the numbering 一、二、… without a gap, and every
//! holiday of the year present (the seven since 2008; 元旦, 春节, 劳动节 and 国庆节 before). A
//! text that fails any of them is refused whole, with the offending line.

use chrono::{Datelike, NaiveDate, Weekday};

/// One holiday of the notice: its name as written and its days, in date order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holiday {
    /// The name as the notice writes it (e.g. `中秋节、国庆节`).
    pub name: String,
    /// `(date, is_off_day)`: days off, and working days (make-up days, 起正常上班).
    pub days: Vec<(NaiveDate, bool)>,
}

/// A notice read completely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub year: i32,
    /// In the order of their first day.
    pub holidays: Vec<Holiday>,
}

/// Why a notice was refused: the line (1-based; 0 for the text as a whole) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line_no}: {message}\n  {line}")]
pub struct NoticeError {
    pub line_no: usize,
    /// The offending line as given (empty for the text as a whole).
    pub line: String,
    pub message: String,
}

/// The holidays a notice may name (canonical keys; `None`: a one-off commemoration).
fn canonical(name: &str) -> Option<Option<&'static str>> {
    let bare: String = name
        .chars()
        .filter(|c| !matches!(c, '“' | '”' | '"' | '‘' | '’' | '\''))
        .collect();
    Some(Some(match bare.as_str() {
        "元旦" => "元旦",
        "春节" => "春节",
        "清明节" | "清明" => "清明节",
        "劳动节" | "五一" | "五一国际劳动节" | "国际劳动节" => "劳动节",
        "端午节" | "端午" => "端午节",
        "中秋节" | "中秋" => "中秋节",
        "国庆节" | "国庆" | "十一" => "国庆节",
        "抗日战争暨世界反法西斯战争胜利70周年纪念日" => return Some(None),
        _ => return None,
    }))
}

/// The holidays every notice of `year` must have (the 2008 reform added three).
fn required(year: i32) -> &'static [&'static str] {
    if year >= 2008 {
        &[
            "元旦",
            "春节",
            "清明节",
            "劳动节",
            "端午节",
            "中秋节",
            "国庆节",
        ]
    } else {
        &["元旦", "春节", "劳动节", "国庆节"]
    }
}

/// Reads a notice; the whole text or nothing.
pub fn parse_notice(text: &str) -> Result<Notice, NoticeError> {
    let whole = |message: String| NoticeError {
        line_no: 0,
        line: String::new(),
        message,
    };
    let lines: Vec<&str> = text.lines().collect();
    let year = lines
        .iter()
        .find_map(|l| notice_year(&normalize(l)))
        .ok_or_else(|| {
            whole("no year: expected the title 国务院办公厅关于YYYY年部分节假日安排的通知".into())
        })?;
    let mut items: Vec<(usize, Holiday, Vec<&'static str>)> = Vec::new();
    for (i, raw) in lines.iter().enumerate() {
        let line = normalize(raw);
        let Some((number, rest)) = item_number(&line) else {
            continue;
        };
        let fail = |message: String| NoticeError {
            line_no: i + 1,
            line: raw.trim().to_string(),
            message,
        };
        if number != items.len() + 1 {
            return Err(fail(format!(
                "item {number} follows item {}: a line is missing",
                items.len()
            )));
        }
        let (name, body) = rest
            .split_once(':')
            .ok_or_else(|| fail("no 节日名：… in this numbered line".into()))?;
        let mut keys = Vec::new();
        for part in name.split(['、', '和']) {
            match canonical(part) {
                Some(Some(key)) => keys.push(key),
                Some(None) => {}
                None => return Err(fail(format!("unknown holiday name {part:?}"))),
            }
        }
        let days = ItemReader::new(year, body).read().map_err(fail)?;
        items.push((
            i,
            Holiday {
                name: name.to_string(),
                days,
            },
            keys,
        ));
    }
    check_year(year, &lines, &items)?;
    let mut holidays: Vec<Holiday> = items.into_iter().map(|(_, h, _)| h).collect();
    holidays.sort_by_key(|h| h.days.first().map(|d| d.0));
    Ok(Notice { year, holidays })
}

/// The checks across lines: holidays present once each, no day listed twice.
fn check_year(
    year: i32,
    lines: &[&str],
    items: &[(usize, Holiday, Vec<&'static str>)],
) -> Result<(), NoticeError> {
    let at = |i: usize, message: String| NoticeError {
        line_no: i + 1,
        line: lines[i].trim().to_string(),
        message,
    };
    let Some(last) = items.last() else {
        return Err(NoticeError {
            line_no: 0,
            line: String::new(),
            message: "no numbered holiday line (一、元旦：…)".into(),
        });
    };
    let mut seen_keys: Vec<&str> = Vec::new();
    let mut seen_days: std::collections::BTreeMap<NaiveDate, bool> = Default::default();
    for (i, holiday, keys) in items {
        for key in keys {
            if seen_keys.contains(key) {
                return Err(at(*i, format!("{key} is named twice")));
            }
            seen_keys.push(key);
        }
        for &(date, off) in &holiday.days {
            if (date.year() - year).abs() > 1 {
                return Err(at(*i, format!("{date} is not near {year}")));
            }
            if let Some(before) = seen_days.insert(date, off) {
                let message = if before == off {
                    format!("{date} is listed twice")
                } else {
                    format!("{date} is both a day off and a working day")
                };
                return Err(at(*i, message));
            }
        }
    }
    if let Some(missing) = required(year).iter().find(|k| !seen_keys.contains(k)) {
        return Err(at(
            last.0,
            format!("the notice has no {missing}: a half-written year is not imported"),
        ));
    }
    Ok(())
}

/// Full-width punctuation, digits and spaces to one form; spaces dropped.
fn normalize(line: &str) -> String {
    line.chars()
        .filter_map(|c| match c {
            '（' => Some('('),
            '）' => Some(')'),
            '：' => Some(':'),
            '，' => Some(','),
            '。' | '．' => Some('.'),
            '；' => Some(';'),
            '～' | '~' | '－' | '—' | '–' | '-' => Some('~'),
            '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32),
            c if c.is_whitespace() => None,
            c => Some(c),
        })
        .collect()
}

/// The year of the title (`关于2026年部分节假日安排`) or of the opening sentence (`现将2026年`).
fn notice_year(line: &str) -> Option<i32> {
    for marker in ["年部分节假日安排", "年元旦"] {
        if let Some(end) = line.find(marker) {
            let digits: String = line[..end]
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if digits.len() == 4 {
                return digits.parse().ok();
            }
        }
    }
    None
}

/// `一、…` / `12、…` / `3.…`: the item number and the rest of the line.
fn item_number(line: &str) -> Option<(usize, &str)> {
    let mut value = 0usize;
    let mut chinese = false;
    for (i, c) in line.char_indices() {
        match c {
            '、' | '.' if i > 0 => return Some((value, &line[i + c.len_utf8()..])),
            '0'..='9' if !chinese => value = value * 10 + (c as usize - '0' as usize),
            '十' => {
                chinese = true;
                value = if value == 0 { 10 } else { value * 10 };
            }
            _ => {
                let digit = "一二三四五六七八九".chars().position(|d| d == c)? + 1;
                chinese = true;
                value = if value >= 10 && value.is_multiple_of(10) {
                    value + digit
                } else {
                    digit
                };
            }
        }
    }
    None
}

/// What a keyword does to the dates read before it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keyword {
    /// 放假, 放假调休, 补休: days off.
    Off,
    /// 上班: make-up working days (weekends only).
    MakeUp,
    /// 起正常上班: the first ordinary working day after the holiday.
    Resume,
}

/// The words of a holiday line, longest first where one is a prefix of another.
const KEYWORDS: [(&str, Option<Keyword>); 7] = [
    ("放假调休", Some(Keyword::Off)),
    ("调休放假", Some(Keyword::Off)),
    ("放假", Some(Keyword::Off)),
    ("补休", Some(Keyword::Off)),
    ("起正常上班", Some(Keyword::Resume)),
    ("上班", Some(Keyword::MakeUp)),
    ("与周末连休", None),
];

/// The first date of a range, waiting for its end (which may move it to the year before, so
/// its weekday is checked then).
struct RangeStart<'a> {
    date: NaiveDate,
    year_explicit: bool,
    remarks: &'a str,
}

/// Reads the body of one numbered line (after `节日名：`).
struct ItemReader<'a> {
    rest: &'a str,
    /// The year and month the next date without them inherits.
    current_year: i32,
    year_explicit: bool,
    month: Option<u32>,
    /// Date spans read since the last keyword; `range_start` is a span waiting for its end.
    pending: Vec<(NaiveDate, NaiveDate)>,
    range_start: Option<RangeStart<'a>>,
    days: Vec<(NaiveDate, bool)>,
}

impl<'a> ItemReader<'a> {
    fn new(year: i32, body: &'a str) -> Self {
        Self {
            rest: body,
            current_year: year,
            year_explicit: false,
            month: None,
            pending: Vec::new(),
            range_start: None,
            days: Vec::new(),
        }
    }

    fn read(mut self) -> Result<Vec<(NaiveDate, bool)>, String> {
        while !self.rest.is_empty() {
            if self.rest.starts_with(|c: char| c.is_ascii_digit()) {
                self.date()?;
            } else if let Some(rest) = self.rest.strip_prefix('共') {
                self.rest = rest;
                self.count()?;
            } else if let Some(&(word, keyword)) =
                KEYWORDS.iter().find(|(w, _)| self.rest.starts_with(w))
            {
                self.rest = &self.rest[word.len()..];
                if let Some(keyword) = keyword {
                    self.apply(keyword)?;
                }
            } else if let Some(rest) = self.rest.strip_prefix([',', '、', '.', ';', '和', '及'])
            {
                self.rest = rest;
            } else {
                return Err(format!("cannot read {:?}", self.rest));
            }
        }
        if self.range_start.is_some() {
            return Err("a range without its end".into());
        }
        if !self.pending.is_empty() {
            return Err("dates without 放假 or 上班".into());
        }
        if !self.days.iter().any(|d| d.1) {
            return Err("no day off".into());
        }
        self.days.sort();
        Ok(self.days)
    }

    /// `[YYYY年][M月]D日[(remarks)]`, then a range separator if one follows.
    fn date(&mut self) -> Result<(), String> {
        let mut explicit = false;
        let mut day = None;
        while day.is_none() {
            let digits = self.rest.chars().take_while(char::is_ascii_digit).count();
            if digits == 0 {
                return Err(format!("a date without 日 at {:?}", self.rest));
            }
            let n: u32 = self.rest[..digits]
                .parse()
                .map_err(|_| "a number too large")?;
            let unit = self.rest[digits..].chars().next();
            match unit {
                Some('年') => {
                    self.current_year = i32::try_from(n).map_err(|_| "a year too large")?;
                    self.year_explicit = true;
                    explicit = true;
                }
                Some('月') => self.month = Some(n),
                Some('日') => day = Some(n),
                _ => return Err(format!("a number without 年, 月 or 日 at {:?}", self.rest)),
            }
            self.rest = &self.rest[digits + unit.map_or(0, char::len_utf8)..];
        }
        let month = self.month.ok_or("a day without its month")?;
        let day = day.unwrap_or(1);
        let date = NaiveDate::from_ymd_opt(self.current_year, month, day)
            .ok_or_else(|| format!("{}年{month}月{day}日 does not exist", self.current_year))?;
        let mut remarks = "";
        if let Some(inner) = self.rest.strip_prefix('(') {
            let close = inner.find(')').ok_or("a bracket that does not close")?;
            remarks = &inner[..close];
            self.rest = &inner[close + 1..];
        }
        match self.range_start.take() {
            Some(mut start) => {
                if date < start.date && !start.year_explicit && !explicit {
                    // 12月30日至1月1日: the range starts in the year before.
                    start.date = start
                        .date
                        .with_year(start.date.year() - 1)
                        .ok_or("a range start that does not exist")?;
                }
                check_remarks(start.date, start.remarks)?;
                if date < start.date {
                    let from = start.date;
                    return Err(format!("the range {from}…{date} ends before it starts"));
                }
                check_remarks(date, remarks)?;
                self.pending.push((start.date, date));
            }
            None => {
                if let Some(rest) = self.rest.strip_prefix(['至', '~', '到']) {
                    self.rest = rest;
                    self.range_start = Some(RangeStart {
                        date,
                        year_explicit: explicit || self.year_explicit,
                        remarks,
                    });
                    return Ok(());
                }
                check_remarks(date, remarks)?;
                self.pending.push((date, date));
            }
        }
        Ok(())
    }

    /// `共N天` (the `共` already read): the line's days off so far.
    fn count(&mut self) -> Result<(), String> {
        let digits = self.rest.chars().take_while(char::is_ascii_digit).count();
        let n: usize = self.rest[..digits]
            .parse()
            .map_err(|_| format!("cannot read the count at {:?}", self.rest))?;
        self.rest = self.rest[digits..]
            .strip_prefix('天')
            .ok_or_else(|| format!("cannot read the count at 共{}", self.rest))?;
        if !self.pending.is_empty() || self.range_start.is_some() {
            return Err("共N天 before 放假".into());
        }
        let off = self.days.iter().filter(|d| d.1).count();
        if n != off {
            return Err(format!("共{n}天, but the dates give {off} days off"));
        }
        Ok(())
    }

    fn apply(&mut self, keyword: Keyword) -> Result<(), String> {
        if self.range_start.is_some() {
            return Err("a range without its end".into());
        }
        if self.pending.is_empty() {
            return Err("放假 or 上班 without a date".into());
        }
        for (start, end) in std::mem::take(&mut self.pending) {
            let mut d = start;
            while d <= end {
                let weekend = matches!(d.weekday(), Weekday::Sat | Weekday::Sun);
                if keyword == Keyword::MakeUp && !weekend {
                    return Err(format!(
                        "{d} is a {}: a make-up working day falls on a weekend",
                        weekday_name(d.weekday())
                    ));
                }
                self.days.push((d, keyword == Keyword::Off));
                d = d.succ_opt().ok_or("a date out of range")?;
            }
        }
        Ok(())
    }
}

/// The bracket after a date: a weekday (周四, 星期四) that must match, lunar remarks (农历…).
fn check_remarks(date: NaiveDate, remarks: &str) -> Result<(), String> {
    for part in remarks.split(['、', ',']).filter(|p| !p.is_empty()) {
        if part.starts_with("农历") {
            continue;
        }
        let name = part
            .strip_prefix("星期")
            .or_else(|| part.strip_prefix('周'))
            .ok_or_else(|| format!("cannot read the remark {part:?}"))?;
        let given = match name {
            "一" => Weekday::Mon,
            "二" => Weekday::Tue,
            "三" => Weekday::Wed,
            "四" => Weekday::Thu,
            "五" => Weekday::Fri,
            "六" => Weekday::Sat,
            "日" | "天" => Weekday::Sun,
            _ => return Err(format!("cannot read the weekday {part:?}")),
        };
        if given != date.weekday() {
            return Err(format!(
                "{date} is a {}, not a {}",
                weekday_name(date.weekday()),
                weekday_name(given)
            ));
        }
    }
    Ok(())
}

/// 周一 … 周日.
pub(crate) fn weekday_name(w: Weekday) -> &'static str {
    ["周一", "周二", "周三", "周四", "周五", "周六", "周日"][w.num_days_from_monday() as usize]
}

impl Notice {
    /// Every day the notice lists, in date order (the order of the holiday-cn files):
    /// `(date, is_off_day, holiday name)`.
    pub fn days(&self) -> Vec<(NaiveDate, bool, &str)> {
        let mut days: Vec<(NaiveDate, bool, &str)> = self
            .holidays
            .iter()
            .flat_map(|h| {
                h.days
                    .iter()
                    .map(move |&(d, off)| (d, off, h.name.as_str()))
            })
            .collect();
        days.sort_by_key(|d| d.0);
        days
    }

    /// The year as a holiday-cn file (four-space indent, no trailing newline, as the dataset
    /// writes it); `papers` are the notice's addresses, which the text does not carry.
    pub fn to_holiday_cn_json(&self, papers: &[String]) -> String {
        let base = "https://raw.githubusercontent.com/NateScarlet/holiday-cn/master";
        let file = HolidayCnFile {
            schema: format!("{base}/schema.json"),
            id: format!("{base}/{}.json", self.year),
            year: self.year,
            papers,
            days: self
                .days()
                .into_iter()
                .map(|(date, is_off_day, name)| HolidayCnDay {
                    name,
                    date: date.to_string(),
                    is_off_day,
                })
                .collect(),
        };
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
        serde::Serialize::serialize(&file, &mut ser).expect("the file serializes");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}

/// A holiday-cn file, fields in the dataset's order.
#[derive(serde::Serialize)]
struct HolidayCnFile<'a> {
    #[serde(rename = "$schema")]
    schema: String,
    #[serde(rename = "$id")]
    id: String,
    year: i32,
    papers: &'a [String],
    days: Vec<HolidayCnDay<'a>>,
}

#[derive(serde::Serialize)]
struct HolidayCnDay<'a> {
    name: &'a str,
    date: String,
    #[serde(rename = "isOffDay")]
    is_off_day: bool,
}

#[cfg(test)]
mod tests;
