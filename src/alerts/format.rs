//! The messages of the three webhook formats (SPEC §4), built without I/O: a [`Message`] is
//! the URL, headers and body of one POST, for an alert or its revocation at a given instant.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::config::WebhookFormat;
use crate::core::calendar::{DayUnit, WorkCalendar, DAY};
use crate::core::rules::{AnomalyKind, Level};
use crate::sinks::clickhouse::rows::AlertRecord;

/// One HTTP POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

/// What the message is about, resolved for display.
pub(crate) struct Context<'a> {
    pub(crate) alert: &'a AlertRecord,
    /// A follow-up revocation (撤销) rather than the alert itself.
    pub(crate) revocation: bool,
    /// The window's name (its id when unknown).
    pub(crate) window_name: &'a str,
    /// The centre's working calendar (for the working days remaining).
    pub(crate) calendar: &'a WorkCalendar,
    /// Unix milliseconds of the send.
    pub(crate) now_millis: i64,
}

impl Context<'_> {
    fn level(&self) -> Level {
        Level::parse(&self.alert.level).unwrap_or(Level::Yellow)
    }

    fn kind_name(&self) -> &str {
        AnomalyKind::parse(&self.alert.kind).map_or(self.alert.kind.as_str(), |k| k.chinese())
    }

    /// The deadline the alert is about: the promised one, else the legal one.
    fn deadline(&self) -> Option<u32> {
        self.alert.promised_deadline.or(self.alert.legal_deadline)
    }

    /// Working days from now to the deadline (negative when late), to two decimals.
    pub(crate) fn working_days_remaining(&self) -> Option<f64> {
        let deadline = i64::from(self.deadline()?);
        let now = self.now_millis.div_euclid(1000);
        let seconds = if deadline >= now {
            self.calendar
                .working_seconds(now, deadline, DayUnit::Working)
        } else {
            -self
                .calendar
                .working_seconds(deadline, now, DayUnit::Working)
        };
        Some((seconds as f64 / DAY as f64 * 100.0).round() / 100.0)
    }

    /// One line in Chinese.
    pub(crate) fn one_line(&self) -> String {
        let a = self.alert;
        let prefix = if self.revocation { "【撤销】" } else { "" };
        format!(
            "{prefix}{}：{} 办件 {}（{}）{}",
            self.level().chinese(),
            self.window_name,
            a.case_id,
            item(a),
            self.kind_name()
        )
    }

    fn lateness(&self) -> String {
        match self.working_days_remaining() {
            None => "无时限".to_string(),
            Some(d) if d < 0.0 => format!("已超期 {:.2} 个工作日", -d),
            Some(d) => format!("剩余 {d:.2} 个工作日"),
        }
    }

    fn advice(&self) -> &'static str {
        if self.revocation && self.alert.annulled == 1 {
            return "窗口申诉成立，该牌已作废，不计入考核，无需处理。";
        }
        if self.revocation {
            return "后续事件表明该异常并未发生，此前的提醒作废，无需处理。";
        }
        match AnomalyKind::parse(&self.alert.kind) {
            Some(AnomalyKind::DeadlineWarning) => "请窗口负责人督促承办人在承诺时限内办结。",
            Some(AnomalyKind::Overdue) => "请立即督办，尽快办结，并书面说明超期原因。",
            Some(AnomalyKind::LegalOverdue) => "已超法定时限：请分管领导立即督办并约谈窗口负责人。",
            Some(AnomalyKind::OutOfLoop) => "办件未经大厅或网上受理即办理：请核查是否体外循环。",
            Some(AnomalyKind::DoubleAcceptance) => "同一办件重复受理：请核查受理记录。",
            Some(AnomalyKind::Backfilled) => "疑似先办后录：请核查受理、办结记录的录入时间。",
            Some(AnomalyKind::LateAcceptance) => {
                "申请超过 5 个工作日未受理：请尽快受理或答复申请人。"
            }
            Some(AnomalyKind::Overcharge) => "收费高于公示标准：请核查并依规退还。",
            Some(AnomalyKind::SupervisionOverdue) => {
                "督办事项超过反馈时限仍未答复：请窗口立即反馈，分管领导约谈窗口负责人。"
            }
            Some(AnomalyKind::SpecialProcedureOverrun) => {
                "特别程序超过批准天数：请核查并尽快恢复办理。"
            }
            None => "请核查。",
        }
    }

    /// The Markdown text of the robot formats, readable on a phone.
    pub(crate) fn markdown(&self) -> String {
        let a = self.alert;
        let tz = self.calendar.tz();
        let local = |t: u32| local(t, tz);
        let title = if self.revocation {
            format!("【撤销】{}：{}", self.level().chinese(), self.kind_name())
        } else {
            format!("{}：{}", self.level().chinese(), self.kind_name())
        };
        let md = crate::markdown::escape;
        let mut lines = vec![
            format!("### {title}"),
            format!("- 窗口：{}（{}）", md(self.window_name), md(&a.department)),
            format!("- 事项：{}", md(&item(a))),
            format!("- 办件：{}", md(&a.case_id)),
            format!("- 时限：{}", self.deadline().map_or("—".to_string(), local)),
            format!("- 情况：{}", self.lateness()),
            format!("- 发现时间：{}", local(a.detected_at)),
        ];
        if let Some(at) = a.revoked_at.filter(|_| self.revocation) {
            lines.push(format!("- 撤销时间：{}", local(at)));
        }
        if a.round > 1 {
            lines.push(format!(
                "- 轮次：第 {} 轮（此前的提醒已撤销，现再次成立）",
                a.round
            ));
        }
        if a.calendar_provisional != 0 {
            lines.push(PROVISIONAL_LINE.to_string());
        }
        lines.push(format!("\n> {}", self.advice()));
        lines.push(format!("\n告警编号 {}", md(&a.alert_id)));
        lines.join("\n")
    }

    /// The SPEC's generic JSON body.
    pub(crate) fn generic_body(&self) -> String {
        self.generic_value().to_string()
    }

    /// The generic body as a JSON value (a digest is an array of them).
    fn generic_value(&self) -> serde_json::Value {
        let a = self.alert;
        let ts = |t: Option<u32>| t.map(rfc3339);
        json!({
            "alert_id": a.alert_id,
            "revocation": self.revocation,
            "case_id": a.case_id,
            "kind": a.kind,
            "level": a.level,
            "center_id": a.center_id,
            "window_id": a.window_id,
            "department": a.department,
            "item_code": a.item_code,
            "item_name": a.item_name,
            "accepted_at": ts(a.accepted_at),
            "promised_deadline": ts(a.promised_deadline),
            "legal_deadline": ts(a.legal_deadline),
            "detected_at": rfc3339(a.detected_at),
            "revoked_at": ts(a.revoked_at),
            "working_days_remaining": self.working_days_remaining(),
            "calendar_provisional": a.calendar_provisional != 0,
            "round": a.round,
            "annulled": a.annulled != 0,
            "message": self.one_line(),
        })
    }

    /// One line of a digest, readable on a phone: kind, window, case, deadline, lateness.
    fn digest_line(&self) -> String {
        let a = self.alert;
        let md = crate::markdown::escape;
        let revoked = if self.revocation { "【撤销】" } else { "" };
        let provisional = if a.calendar_provisional != 0 {
            "（暂定）"
        } else {
            ""
        };
        let deadline = self
            .deadline()
            .map_or("无时限".to_string(), |t| local(t, self.calendar.tz()));
        format!(
            "- {revoked}{}｜{}｜办件 {}｜时限 {deadline}{provisional}｜{}",
            self.kind_name(),
            md(self.window_name),
            md(&a.case_id),
            self.lateness()
        )
    }
}

/// The robot line of an alert whose deadlines needed a year without holiday data (SPEC §2).
pub(crate) const PROVISIONAL_LINE: &str =
    "- 注意：时限涉及尚未导入节假日安排的年份，按周一至周五暂定，导入后将重新计算";

fn item(a: &AlertRecord) -> String {
    if a.item_name.is_empty() {
        a.item_code.clone()
    } else {
        format!("{} {}", a.item_code, a.item_name)
    }
}

/// A Unix second as RFC 3339 UTC.
fn rfc3339(t: u32) -> String {
    chrono::DateTime::from_timestamp(i64::from(t), 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A Unix second in the centre's timezone, the way supervisors read it.
fn local(t: u32, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp(i64::from(t), 0)
        .map(|d| d.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// `hex(HMAC-SHA256(secret, timestamp + "." + body))`, the generic format's signature.
pub(crate) fn generic_signature(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// DingTalk's `sign`: `base64(HMAC-SHA256(secret, timestamp + "\n" + secret))`, URL-encoded.
pub(crate) fn dingtalk_sign(secret: &str, timestamp_millis: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp_millis}\n{secret}").as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    percent_encode(&b64)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A digest: several alerts (raises or revocations) in one POST, grouped by level, red first
/// (SPEC §4, "Rate and volume"). `generic` sends the array of the single bodies with
/// `X-Casewatch-Digest: N`; the robots get one Markdown message.
pub(crate) fn render_digest(
    format: WebhookFormat,
    url: &str,
    secret: &str,
    ctxs: &[Context<'_>],
    now_millis: i64,
) -> Message {
    let ids: Vec<&str> = ctxs.iter().map(|c| c.alert.alert_id.as_str()).collect();
    let mut headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("X-Casewatch-Digest".to_string(), ctxs.len().to_string()),
        ("X-Casewatch-Alert-Ids".to_string(), ids.join(",")),
    ];
    if format == WebhookFormat::Generic {
        let body =
            serde_json::Value::Array(ctxs.iter().map(Context::generic_value).collect()).to_string();
        let timestamp = now_millis.div_euclid(1000).to_string();
        if !secret.is_empty() {
            headers.push((
                "X-Casewatch-Signature".to_string(),
                format!("sha256={}", generic_signature(secret, &timestamp, &body)),
            ));
        }
        headers.push(("X-Casewatch-Timestamp".to_string(), timestamp));
        return Message {
            url: url.to_string(),
            headers,
            body,
        };
    }
    let title = format!("告警汇总：{} 条", ctxs.len());
    robot_message(
        format,
        url,
        secret,
        now_millis,
        headers,
        &title,
        &digest_markdown(ctxs),
    )
}

/// The Markdown of a digest: a count per level, then each level's alerts, red first.
fn digest_markdown(ctxs: &[Context<'_>]) -> String {
    let mut levels: Vec<Level> = ctxs.iter().map(Context::level).collect();
    levels.sort_unstable_by(|a, b| b.cmp(a));
    levels.dedup();
    let count = |l: Level| ctxs.iter().filter(|c| c.level() == l).count();
    let summary: Vec<String> = levels
        .iter()
        .map(|&l| format!("{} {}", l.chinese(), count(l)))
        .collect();
    let mut lines = vec![format!(
        "### 告警汇总（{} 条）：{}",
        ctxs.len(),
        summary.join(" · ")
    )];
    for level in levels {
        lines.push(format!("#### {}（{}）", level.chinese(), count(level)));
        lines.extend(
            ctxs.iter()
                .filter(|c| c.level() == level)
                .map(Context::digest_line),
        );
    }
    if ctxs.iter().any(|c| c.alert.calendar_provisional != 0) {
        lines.push(PROVISIONAL_LINE.to_string());
    }
    let ids: Vec<String> = ctxs
        .iter()
        .map(|c| crate::markdown::escape(&c.alert.alert_id))
        .collect();
    lines.push(format!("\n告警编号 {}", ids.join("、")));
    lines.join("\n")
}

/// A DingTalk or WeCom Markdown message (DingTalk signed in the URL when a secret is set).
fn robot_message(
    format: WebhookFormat,
    url: &str,
    secret: &str,
    now_millis: i64,
    headers: Vec<(String, String)>,
    title: &str,
    text: &str,
) -> Message {
    match format {
        WebhookFormat::Wecom => Message {
            url: url.to_string(),
            headers,
            body: json!({"msgtype": "markdown", "markdown": {"content": text}}).to_string(),
        },
        _ => {
            let body = json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}})
                .to_string();
            let url = if secret.is_empty() {
                url.to_string()
            } else {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!(
                    "{url}{sep}timestamp={now_millis}&sign={}",
                    dingtalk_sign(secret, now_millis)
                )
            };
            Message { url, headers, body }
        }
    }
}

/// The POST of an alert (or its revocation) in a webhook's format.
pub(crate) fn render(format: WebhookFormat, url: &str, secret: &str, ctx: &Context<'_>) -> Message {
    let a = ctx.alert;
    let mut headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("X-Casewatch-Alert-Id".to_string(), a.alert_id.clone()),
    ];
    match format {
        WebhookFormat::Generic => {
            let body = ctx.generic_body();
            let timestamp = ctx.now_millis.div_euclid(1000).to_string();
            if !secret.is_empty() {
                headers.push((
                    "X-Casewatch-Signature".to_string(),
                    format!("sha256={}", generic_signature(secret, &timestamp, &body)),
                ));
            }
            headers.push(("X-Casewatch-Timestamp".to_string(), timestamp));
            Message {
                url: url.to_string(),
                headers,
                body,
            }
        }
        WebhookFormat::Dingtalk | WebhookFormat::Wecom => robot_message(
            format,
            url,
            secret,
            ctx.now_millis,
            headers,
            &ctx.one_line(),
            &ctx.markdown(),
        ),
    }
}
