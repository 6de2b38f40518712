//! A reproducible event stream of one service centre, modelled on the seed county: 22 windows,
//! ~330 items, ~1,550 cases a month, nearly all completed early, with pauses, extensions, fees,
//! evaluations, a small rate of every anomaly kind, the supervision office's orders and the
//! windows' appeals on some of the cards (SPEC §9), late and duplicate deliveries and invalid
//! lines. Events of all cases are merged in arrival order, as a real topic would hold them.
//!
//! Pure: the same profile, options and seed always give the same lines.

use chrono::{FixedOffset, NaiveDate, TimeZone};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::core::calendar::{day_number, DayUnit, Instant, WorkCalendar, DAY};

/// A window of the profile.
#[derive(Debug, Clone)]
pub(crate) struct WindowDef {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) department: String,
}

/// An approval item of the profile.
#[derive(Debug, Clone)]
pub(crate) struct ItemDef {
    pub(crate) code: String,
    pub(crate) name: String,
    pub(crate) window: usize,
    /// None: an instant item (即办件).
    pub(crate) promised_days: Option<i64>,
    pub(crate) legal_days: Option<i64>,
    pub(crate) calendar_days: bool,
    /// Published fee standard, in cents.
    pub(crate) fee_cents: Option<i64>,
}

/// A centre to simulate.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub(crate) center_id: String,
    pub(crate) windows: Vec<WindowDef>,
    pub(crate) items: Vec<ItemDef>,
    pub(crate) cases_per_month: f64,
    /// UTC offset of the centre, in seconds (the simulator writes local timestamps).
    pub(crate) utc_offset: i32,
}

const DEPARTMENTS: [(&str, &str); 22] = [
    ("公安窗口", "县公安局"),
    ("国土资源窗口", "县国土资源局"),
    ("住房和城乡建设窗口", "县住房和城乡建设局"),
    ("工商窗口", "县市场监督管理局"),
    ("国税窗口", "县国家税务局"),
    ("地税窗口", "县地方税务局"),
    ("人力资源和社会保障窗口", "县人力资源和社会保障局"),
    ("民政窗口", "县民政局"),
    ("卫生计生窗口", "县卫生和计划生育局"),
    ("交通运输窗口", "县交通运输局"),
    ("农业窗口", "县农业局"),
    ("林业窗口", "县林业局"),
    ("水务窗口", "县水务局"),
    ("环境保护窗口", "县环境保护局"),
    ("教育窗口", "县教育局"),
    ("文化广电窗口", "县文化广电新闻出版局"),
    ("安全生产监督窗口", "县安全生产监督管理局"),
    ("质量技术监督窗口", "县质量技术监督局"),
    ("食品药品监督窗口", "县食品药品监督管理局"),
    ("发展和改革窗口", "县发展和改革局"),
    ("商务窗口", "县商务局"),
    ("不动产登记窗口", "县不动产登记中心"),
];

const ITEM_WORDS: [&str; 15] = [
    "许可", "登记", "备案", "审批", "核准", "变更", "注销", "年检", "证明", "补证", "换证", "延续",
    "认定", "确认", "核发",
];

impl Profile {
    /// The seed county: 22 windows, 330 items.
    pub(crate) fn county() -> Profile {
        let windows: Vec<WindowDef> = DEPARTMENTS
            .iter()
            .enumerate()
            .map(|(i, (name, dept))| WindowDef {
                id: format!("W{:02}", i + 1),
                name: name.to_string(),
                department: dept.to_string(),
            })
            .collect();
        Self::with_windows("C001", windows, 1550.0, 8 * 3600, 0x00c0_ffee)
    }

    /// A province (SPEC §7, issue 21): 100 centres `P001`…`P100` with 6 to 22 windows each
    /// (their own departments, named after the centre), 300 to 3,000 cases a month; the last
    /// four keep their local time at UTC+6 (`config/province.toml` gives them `Asia/Urumqi`
    /// and some centres their own closures).
    pub(crate) fn province() -> Vec<Profile> {
        (1..=100u64)
            .map(|n| {
                let center = format!("P{n:03}");
                let count = 6 + (n * 7 % 17) as usize;
                let windows = DEPARTMENTS
                    .iter()
                    .cycle()
                    .skip(n as usize % DEPARTMENTS.len())
                    .take(count)
                    .enumerate()
                    .map(|(i, (name, dept))| WindowDef {
                        id: format!("W{:02}", i + 1),
                        name: name.to_string(),
                        department: format!("{center}{}", dept.trim_start_matches('县')),
                    })
                    .collect();
                let cases = 300.0 + (n * 271 % 2700) as f64;
                let offset = if n > 96 { 6 * 3600 } else { 8 * 3600 };
                Self::with_windows(&center, windows, cases, offset, 0x00c0_ffee + n)
            })
            .collect()
    }

    /// A centre with these windows, 15 items each, whose shapes come from `catalogue_seed`
    /// (fixed by the profile, not by the stream's seed, so every run has the same catalogue).
    fn with_windows(
        center_id: &str,
        windows: Vec<WindowDef>,
        cases_per_month: f64,
        utc_offset: i32,
        catalogue_seed: u64,
    ) -> Profile {
        let mut rng = ChaCha8Rng::seed_from_u64(catalogue_seed);
        let mut items = Vec::new();
        for (w, win) in windows.iter().enumerate() {
            for (k, word) in ITEM_WORDS.iter().enumerate() {
                let instant = rng.random_bool(0.4);
                let promised = (!instant).then(|| {
                    *[2, 3, 5, 5, 7, 7, 10, 10, 15, 20, 30]
                        .get(rng.random_range(0..11))
                        .unwrap_or(&5)
                });
                let legal = promised
                    .filter(|_| rng.random_bool(0.7))
                    .map(|p| p + [0, 5, 10, 20][rng.random_range(0..4)]);
                items.push(ItemDef {
                    code: format!("{}-{:03}", win.id, k + 1),
                    name: format!("{}{}", win.name.trim_end_matches("窗口"), word),
                    window: w,
                    promised_days: promised,
                    legal_days: legal,
                    calendar_days: promised.is_some() && rng.random_bool(0.05),
                    fee_cents: rng.random_bool(0.2).then(|| rng.random_range(1..200) * 500),
                });
            }
        }
        Profile {
            center_id: center_id.into(),
            windows,
            items,
            cases_per_month,
            utc_offset,
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    pub start: NaiveDate,
    pub months: u32,
    /// Multiplies the case volume.
    pub scale: f64,
    /// Fraction of lines replaced by invalid ones.
    pub invalid_rate: f64,
    /// Fraction of events delivered a second time.
    pub duplicate_rate: f64,
}

/// One generated line.
#[derive(Debug, Clone)]
pub struct SimEvent {
    /// Kafka key (empty for invalid lines that have none).
    pub case_id: String,
    pub line: String,
    /// When it reaches the topic.
    pub arrives_at: Instant,
}

/// Rates of the unusual paths, per case.
struct Rates;
impl Rates {
    const NOT_ACCEPTED: f64 = 0.01;
    const WITHDRAWN: f64 = 0.006;
    const OVERDUE: f64 = 0.008;
    const SLOW: f64 = 0.02;
    const SUPPLEMENT: f64 = 0.05;
    const SPECIAL: f64 = 0.01;
    const SPECIAL_OVERRUN: f64 = 0.3;
    const SUSPENSION: f64 = 0.004;
    const EXTENSION: f64 = 0.01;
    const OUT_OF_LOOP: f64 = 0.003;
    const DOUBLE_ACCEPTANCE: f64 = 0.002;
    const BACKFILLED: f64 = 0.003;
    const LATE_ACCEPTANCE: f64 = 0.002;
    const OVERCHARGE: f64 = 0.01;
    const LATE_DELIVERY: f64 = 0.005;
    const EVALUATED: f64 = 0.75;
    const DEFAULT_EVALUATION: f64 = 0.12;
}

struct CaseBuilder<'a> {
    profile: &'a Profile,
    offset: FixedOffset,
    case_id: String,
    window: &'a WindowDef,
    seq: u32,
    out: Vec<(Instant, Value)>,
    /// Cards raised by the case that hold from the instant given onwards, with their kind.
    cards: Vec<(&'static str, Instant)>,
}

impl CaseBuilder<'_> {
    fn ts(&self, t: Instant) -> String {
        self.offset
            .timestamp_opt(t, 0)
            .single()
            .map(|d| d.format("%Y-%m-%dT%H:%M:%S%:z").to_string())
            .unwrap_or_default()
    }

    /// Adds an event that happened at `t` and reaches the topic at `arrives`.
    fn push(&mut self, t: Instant, arrives: Instant, ty: &str, source: &str, fields: Value) {
        self.seq += 1;
        let mut v = json!({
            "version": 1,
            "event_id": format!("{}-{}", self.case_id, self.seq),
            "case_id": self.case_id,
            "type": ty,
            "occurred_at": self.ts(t),
            "source": source,
            "center_id": self.profile.center_id,
            "window_id": self.window.id,
            "department": self.window.department,
        });
        if let (Value::Object(m), Value::Object(f)) = (&mut v, fields) {
            m.extend(f);
        }
        self.out.push((arrives, v));
    }
}

/// The lines of the county profile's stream, in arrival order.
pub fn county_lines(opts: &SimOptions) -> Vec<String> {
    generate(&Profile::county(), opts)
        .into_iter()
        .map(|e| e.line)
        .collect()
}

/// The lines of the province profile's stream, in arrival order.
pub fn province_lines(opts: &SimOptions) -> Vec<String> {
    generate_all(&Profile::province(), opts)
        .into_iter()
        .map(|e| e.line)
        .collect()
}

/// Generates the streams of several centres, each from its own seed, merged in arrival order.
pub(crate) fn generate_all(profiles: &[Profile], opts: &SimOptions) -> Vec<SimEvent> {
    if let [one] = profiles {
        return generate(one, opts);
    }
    let mut all: Vec<SimEvent> = profiles
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            let seed = opts.seed.wrapping_mul(1000).wrapping_add(i as u64);
            generate(
                p,
                &SimOptions {
                    seed,
                    ..opts.clone()
                },
            )
        })
        .collect();
    // Stable: each centre's own order is kept among equal instants.
    all.sort_by_key(|e| e.arrives_at);
    all
}

/// Generates the stream, in arrival order.
pub(crate) fn generate(profile: &Profile, opts: &SimOptions) -> Vec<SimEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let offset =
        FixedOffset::east_opt(profile.utc_offset).unwrap_or(FixedOffset::east_opt(0).unwrap());
    let cal = {
        let mut table = crate::core::calendar::HolidayTable::new();
        for bytes in crate::config::EMBEDDED_HOLIDAYS {
            let _ = table.merge_json(bytes);
        }
        WorkCalendar::new(chrono_tz::Asia::Shanghai, &table, &Default::default())
    };
    let first_day = day_number(opts.start);
    let end_date = add_months(opts.start, opts.months);
    let last_day = day_number(end_date);
    let horizon = last_day * DAY - i64::from(profile.utc_offset);
    let working_days: Vec<i64> = (first_day..last_day)
        .filter(|d| cal.is_working_day(*d))
        .collect();
    let total_cases =
        (profile.cases_per_month * f64::from(opts.months) * opts.scale).round() as usize;

    let mut events: Vec<(Instant, u64, Value)> = Vec::new();
    let mut order = 0u64;
    for n in 0..total_cases {
        if working_days.is_empty() {
            break;
        }
        let day = working_days[rng.random_range(0..working_days.len())];
        let local = day * DAY + rng.random_range(8 * 3600 + 1800..17 * 3600 + 1800);
        let t0 = local - i64::from(profile.utc_offset);
        let item = &profile.items[rng.random_range(0..profile.items.len())];
        let mut b = CaseBuilder {
            profile,
            offset,
            case_id: format!(
                "{}{}{:06}",
                profile.center_id,
                opts.start.format("%y"),
                n + 1
            ),
            window: &profile.windows[item.window],
            seq: 0,
            out: Vec::new(),
            cards: Vec::new(),
        };
        simulate_case(&mut b, item, t0, &cal, &mut rng);
        // Supervision draws from its own generator, so the rest of the stream does not
        // depend on it.
        let mut office =
            ChaCha8Rng::seed_from_u64(opts.seed ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        supervise(&mut b, &cal, &mut office);
        for (arrives, v) in b.out {
            let occurred = v["occurred_at"]
                .as_str()
                .and_then(crate::core::event::parse_timestamp)
                .unwrap_or(0);
            if occurred > horizon || arrives > horizon {
                continue; // not happened yet at the end of the simulated period
            }
            order += 1;
            events.push((arrives, order, v));
        }
    }
    events.sort_by_key(|(a, o, _)| (*a, *o));

    let mut out = Vec::with_capacity(events.len() + 16);
    for (arrives, _, v) in events {
        let case_id = v["case_id"].as_str().unwrap_or_default().to_string();
        if rng.random_bool(opts.invalid_rate.clamp(0.0, 1.0)) {
            out.push(SimEvent {
                case_id: case_id.clone(),
                line: corrupt(&v, &mut rng),
                arrives_at: arrives,
            });
        }
        let line = v.to_string();
        if rng.random_bool(opts.duplicate_rate.clamp(0.0, 1.0)) {
            out.push(SimEvent {
                case_id: case_id.clone(),
                line: line.clone(),
                arrives_at: arrives,
            });
        }
        out.push(SimEvent {
            case_id,
            line,
            arrives_at: arrives,
        });
    }
    out
}

fn add_months(d: NaiveDate, months: u32) -> NaiveDate {
    d.checked_add_months(chrono::Months::new(months))
        .unwrap_or(d)
}

/// One case's events (pushed into the builder with their arrival instants).
fn simulate_case(
    b: &mut CaseBuilder<'_>,
    item: &ItemDef,
    t0: Instant,
    cal: &WorkCalendar,
    rng: &mut ChaCha8Rng,
) {
    let arrive = |t: Instant, rng: &mut ChaCha8Rng| t + rng.random_range(0..5);
    let online = rng.random_bool(0.25);
    let channel = if online { "online" } else { "window" };
    let applicant = json!({"kind": if rng.random_bool(0.8) { "person" } else { "organization" }, "id_hash": format!("{:016x}", rng.random::<u64>())});
    b.push(
        t0,
        arrive(t0, rng),
        "submitted",
        if online { "online" } else { "hall" },
        json!({"item_code": item.code, "channel": channel, "applicant": applicant}),
    );

    if rng.random_bool(Rates::NOT_ACCEPTED) {
        let t = t0 + rng.random_range(300..7200);
        b.push(
            t,
            arrive(t, rng),
            "not_accepted",
            "hall",
            json!({"reason": "材料不符合法定形式"}),
        );
        return;
    }
    let out_of_loop = rng.random_bool(Rates::OUT_OF_LOOP);
    let late_acceptance = rng.random_bool(Rates::LATE_ACCEPTANCE);
    let accepted_at = if late_acceptance {
        cal.add_working(t0, 6 * DAY, DayUnit::Working) + rng.random_range(0..3600)
    } else {
        t0 + rng.random_range(120..1800)
    };
    let mut item_json = json!({"code": item.code, "name": item.name, "kind": if item.promised_days.is_some() { "promised" } else { "instant" }});
    if let Some(p) = item.promised_days {
        item_json["promised_days"] = json!(p);
        if let Some(l) = item.legal_days {
            item_json["legal_days"] = json!(l);
        }
        if item.calendar_days {
            item_json["day_unit"] = json!("calendar");
        }
    }
    let source = if out_of_loop {
        "department"
    } else if online {
        "online"
    } else {
        "hall"
    };
    let backfill_record = rng.random_bool(Rates::BACKFILLED / 2.0);
    let mut accepted = json!({"item": item_json, "channel": channel});
    if backfill_record {
        accepted["recorded_at"] = json!(b.ts(accepted_at + 2 * DAY + rng.random_range(0..DAY)));
    }
    let late_delivery = rng.random_bool(Rates::LATE_DELIVERY);
    let accepted_arrives = if backfill_record {
        accepted_at + 2 * DAY
    } else if late_delivery {
        accepted_at + rng.random_range(2 * 3600..DAY)
    } else {
        arrive(accepted_at, rng)
    };
    b.push(
        accepted_at,
        accepted_arrives,
        "accepted",
        source,
        accepted.clone(),
    );
    if late_acceptance {
        b.cards.push(("late_acceptance", accepted_at));
    }
    if rng.random_bool(Rates::DOUBLE_ACCEPTANCE) {
        let t = accepted_at + rng.random_range(3600..3 * DAY);
        b.push(t, arrive(t, rng), "accepted", "department", accepted);
        b.cards.push(("double_acceptance", t));
    }
    if let Some(fee) = item.fee_cents {
        let t = accepted_at + rng.random_range(60..1800);
        let amount = if rng.random_bool(Rates::OVERCHARGE) {
            b.cards.push(("overcharge", t));
            fee + 500 * rng.random_range(1..10)
        } else {
            fee
        };
        b.push(
            t,
            arrive(t, rng),
            "fee_charged",
            "hall",
            json!({"amount_cents": amount, "standard_cents": fee}),
        );
    }

    let Some(promised_days) = item.promised_days else {
        // Instant item: completed at the window within the hour.
        let t = accepted_at + rng.random_range(300..3600);
        b.push(
            t,
            arrive(t, rng),
            "completed",
            "hall",
            json!({"outcome": "approved", "on_site": true}),
        );
        evaluate(b, t, rng);
        return;
    };
    let unit = if item.calendar_days {
        DayUnit::Calendar
    } else {
        DayUnit::Working
    };
    let promised = promised_days * DAY;
    let mut clock_used = 0i64; // pauses push the completion later
    let mut t = accepted_at;
    let steps = ["承办", "审核", "批准"];
    let overdue = rng.random_bool(Rates::OVERDUE);
    // Most cases finish with more than a working day to spare (early); a few run close to
    // the deadline (warnings) and a few overrun it.
    let handling = if overdue {
        ((promised as f64) * rng.random_range(1.02..1.6)) as i64
    } else if rng.random_bool(Rates::SLOW) {
        ((promised as f64) * rng.random_range(0.75..0.98)) as i64
    } else {
        (((promised - DAY) as f64) * rng.random_range(0.05..0.6)) as i64
    };
    let mut extra_days = 0;
    if rng.random_bool(Rates::EXTENSION) {
        extra_days = rng.random_range(1..6);
        let te = cal.add_working(accepted_at, handling / 3, unit);
        b.push(
            te,
            arrive(te, rng),
            "extended",
            "department",
            json!({"extra_days": extra_days}),
        );
    }
    for (reason, rate) in [
        ("supplement", Rates::SUPPLEMENT),
        ("special_procedure", Rates::SPECIAL),
        ("suspension", Rates::SUSPENSION),
    ] {
        if !rng.random_bool(rate) {
            continue;
        }
        let ps = cal.add_working(accepted_at, handling / 4 + clock_used, unit);
        let approved = rng.random_range(2..10);
        let length_days =
            if reason == "special_procedure" && rng.random_bool(Rates::SPECIAL_OVERRUN) {
                approved + rng.random_range(1..4)
            } else {
                rng.random_range(1..approved.min(4) + 1)
            };
        let pe = cal.add_working(
            ps,
            length_days * DAY - rng.random_range(0..DAY / 2),
            DayUnit::Working,
        );
        let mut fields = json!({"reason": reason});
        if reason == "special_procedure" {
            fields["approved_days"] = json!(approved);
        }
        b.push(ps, arrive(ps, rng), "paused", "department", fields);
        b.push(
            pe,
            arrive(pe, rng),
            "resumed",
            "department",
            json!({"reason": reason}),
        );
        clock_used += cal.working_seconds(ps, pe, unit);
        t = t.max(pe);
    }
    let done = cal.add_working(
        accepted_at,
        handling + extra_days * DAY * i64::from(overdue) + clock_used,
        unit,
    );
    let mut step_t = accepted_at;
    for (k, step) in steps.iter().enumerate() {
        step_t = cal
            .add_working(
                accepted_at,
                (handling + clock_used) * (k as i64 + 1) / 4,
                unit,
            )
            .max(step_t);
        b.push(
            step_t,
            arrive(step_t, rng),
            "step",
            "department",
            json!({"step": step, "result": "agree"}),
        );
    }
    if rng.random_bool(Rates::WITHDRAWN) {
        let tw = step_t.max(t) + rng.random_range(600..DAY);
        b.push(
            tw,
            arrive(tw, rng),
            "withdrawn",
            "hall",
            json!({"reason": "申请人撤回"}),
        );
        return;
    }
    let mut done = done.max(t).max(step_t + 60);
    let too_fast = rng.random_bool(Rates::BACKFILLED / 2.0);
    if too_fast {
        done = accepted_at + rng.random_range(60..540);
    }
    let completed = json!({"outcome": if rng.random_bool(0.97) { "approved" } else { "denied" }, "on_site": false});
    // A department sometimes reports completion before the hall's acceptance reaches the topic.
    let done_arrives = if late_delivery {
        accepted_arrives.saturating_sub(60).max(done)
    } else {
        arrive(done, rng)
    };
    b.push(
        done,
        done_arrives,
        "completed",
        if out_of_loop { "department" } else { "hall" },
        completed,
    );
    if overdue && !too_fast {
        b.cards.push(("overdue", done));
    }
    evaluate(b, done, rng);
}

/// The office's work on a case's cards: on about half an order with two working days to
/// respond (mostly answered in time, some late, some never; most closed, a few reopened), on
/// about a fifth an appeal that is granted or rejected a day later.
fn supervise(b: &mut CaseBuilder<'_>, cal: &WorkCalendar, rng: &mut ChaCha8Rng) {
    for (kind, held_from) in std::mem::take(&mut b.cards) {
        let office = Office { cal, kind };
        match rng.random_range(0..10) {
            0..=4 => office.order(b, held_from, rng),
            5..=6 => office.appeal(b, held_from, rng),
            _ => {}
        }
    }
}

/// The supervision office and a window at work on one card.
struct Office<'c> {
    cal: &'c WorkCalendar,
    kind: &'static str,
}

impl Office<'_> {
    /// A working instant some hours after `t`.
    fn later(&self, t: Instant, hours: std::ops::Range<i64>, rng: &mut ChaCha8Rng) -> Instant {
        self.cal
            .add_working(t, rng.random_range(hours) * 3600, DayUnit::Working)
    }

    /// One action at `t`, by the window's user (respond, appeal) or the supervisor.
    fn act(
        &self,
        b: &mut CaseBuilder<'_>,
        t: Instant,
        action: &str,
        note: &str,
        days: Option<i64>,
    ) {
        let actor = if matches!(action, "respond" | "appeal") {
            json!({"id": format!("{}-user", b.window.id), "role": "window"})
        } else {
            json!({"id": "sup-01", "role": "supervisor"})
        };
        let mut fields = json!({"action": action, "kind": self.kind, "actor": actor, "note": note});
        if let Some(d) = days {
            fields["response_days"] = json!(d);
        }
        b.push(t, t + 2, "supervision", "supervision", fields);
    }

    fn order(&self, b: &mut CaseBuilder<'_>, held_from: Instant, rng: &mut ChaCha8Rng) {
        let ordered = self.later(held_from, 1..24, rng);
        self.act(b, ordered, "order", "请于两个工作日内核查并反馈。", Some(2));
        let responded = match rng.random_range(0..20) {
            0..=13 => self.later(ordered, 1..36, rng),
            14..=16 => self.later(ordered, 49..96, rng),
            _ => return,
        };
        self.act(b, responded, "respond", "已核查，情况说明见附件。", None);
        if rng.random_bool(0.85) {
            let closed = self.later(responded, 1..24, rng);
            self.act(b, closed, "close", "反馈属实，予以办结。", None);
            return;
        }
        let reopened = self.later(responded, 1..8, rng);
        self.act(b, reopened, "reopen", "说明不充分，请补充。", Some(1));
        let again = self.later(reopened, 1..20, rng);
        self.act(b, again, "respond", "已补充说明。", None);
        let closed = self.later(again, 1..8, rng);
        self.act(b, closed, "close", "", None);
    }

    fn appeal(&self, b: &mut CaseBuilder<'_>, held_from: Instant, rng: &mut ChaCha8Rng) {
        let appealed = self.later(held_from, 2..30, rng);
        self.act(b, appealed, "appeal", "系申请人原因，非窗口责任。", None);
        let decided = self.later(appealed, 8..24, rng);
        if rng.random_bool(0.4) {
            self.act(b, decided, "grant", "申诉成立。", None);
        } else {
            self.act(b, decided, "reject", "申诉理由不成立。", None);
        }
    }
}

fn evaluate(b: &mut CaseBuilder<'_>, done: Instant, rng: &mut ChaCha8Rng) {
    if !rng.random_bool(Rates::EVALUATED) {
        return;
    }
    let t = done + rng.random_range(60..3 * DAY);
    if rng.random_bool(Rates::DEFAULT_EVALUATION) {
        b.push(
            t + 7 * DAY,
            t + 7 * DAY,
            "evaluated",
            "online",
            json!({"rating": 5, "is_default": true, "channel": "system"}),
        );
        return;
    }
    let rating = match rng.random_range(0..100) {
        0..=1 => 1,
        2..=3 => 2,
        4..=8 => 3,
        9..=25 => 4,
        _ => 5,
    };
    b.push(
        t,
        t + rng.random_range(0..5),
        "evaluated",
        "online",
        json!({"rating": rating, "channel": "pad"}),
    );
}

/// An invalid variant of an event, one of each reason kind.
fn corrupt(v: &Value, rng: &mut ChaCha8Rng) -> String {
    let mut v = v.clone();
    match rng.random_range(0..8) {
        0 => return "{\"version\":1,\"event_id\":".to_string(),
        1 => v["version"] = json!(2),
        2 => v["type"] = json!("opened"),
        3 => {
            if let Value::Object(m) = &mut v {
                m.remove("case_id");
            }
        }
        4 => v["occurred_at"] = json!("2014-13-01 25:00"),
        5 => v["source"] = json!("fax"),
        6 => v["occurred_at"] = json!("2999-01-01T00:00:00Z"),
        _ => {
            v["event_id"] = json!(format!("{}-bad", v["event_id"].as_str().unwrap_or("x")));
            v["center_id"] = json!("");
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            start: NaiveDate::from_ymd_opt(2014, 1, 1).unwrap(),
            months: 1,
            scale: 1.0,
            invalid_rate: 0.01,
            duplicate_rate: 0.01,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let (a, b, c) = (
            county_lines(&opts(7)),
            county_lines(&opts(7)),
            county_lines(&opts(8)),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn county_profile_has_the_seed_shape() {
        let p = Profile::county();
        assert_eq!(p.windows.len(), 22);
        assert_eq!(p.items.len(), 330);
        let events = generate(&p, &opts(1));
        let mut cases: Vec<&str> = events.iter().map(|e| e.case_id.as_str()).collect();
        cases.sort_unstable();
        cases.dedup();
        assert!((1400..=1700).contains(&cases.len()), "{}", cases.len());
        assert!(events
            .windows(2)
            .all(|w| w[0].arrives_at <= w[1].arrives_at));
    }
}
