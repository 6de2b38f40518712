//! Routing, retry policy and message formats (no I/O).

use std::time::Duration;

use super::deliver::{backoff, classify, Answer, Judged, Verdict};
use super::format::{
    dingtalk_sign, generic_signature, render, render_digest, Context, PROVISIONAL_LINE,
};
use super::route;
use crate::config::{AlertsConfig, RouteConfig, WebhookFormat};
use crate::core::calendar::{HolidayTable, WorkCalendar};
use crate::sinks::clickhouse::rows::AlertRecord;

pub(super) fn alert(level: &str, kind: &str, window: &str) -> AlertRecord {
    AlertRecord {
        alert_id: "00000000deadbeef".into(),
        case_id: "C001-2024-0001".into(),
        kind: kind.into(),
        level: level.into(),
        center_id: "C001".into(),
        window_id: window.into(),
        department: "县公安局".into(),
        item_code: "W01-001".into(),
        item_name: "户籍迁入".into(),
        // 2024-05-06 09:00 +08:00, deadline 2024-05-15 09:00 +08:00
        accepted_at: Some(1_714_957_200),
        promised_deadline: Some(1_715_734_800),
        legal_deadline: None,
        detected_at: 1_715_734_800,
        revoked: 0,
        revoked_at: None,
        topic: "t".into(),
        partition: 0,
        version: 1,
        calendar_provisional: 0,
        round: 1,
        annulled: 0,
    }
}

fn route_cfg(levels: &[&str], windows: &[&str], hooks: &[&str]) -> RouteConfig {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
    RouteConfig {
        levels: s(levels),
        kinds: vec![],
        centers: vec![],
        windows: s(windows),
        webhooks: s(hooks),
    }
}

#[test]
fn routes_escalate_by_level_and_narrow_by_window() {
    let cfg = AlertsConfig {
        hold_lag: 0,
        rescan_secs: 30,
        retry_after_cap_secs: 300,
        long_backoff_secs: 1800,
        give_up_hours: 72,
        webhooks: vec![],
        routes: vec![
            route_cfg(&[], &["W01"], &["window-w01"]),
            route_cfg(&["yellow", "red"], &[], &["chief"]),
            route_cfg(&["red"], &[], &["director", "chief"]),
        ],
    };
    assert_eq!(
        route(&cfg, &alert("warning", "deadline_warning", "W01")),
        ["window-w01"]
    );
    assert_eq!(
        route(&cfg, &alert("yellow", "overdue", "W01")),
        ["window-w01", "chief"]
    );
    assert_eq!(
        route(&cfg, &alert("red", "legal_overdue", "W01")),
        ["window-w01", "chief", "director"]
    );
    assert_eq!(
        route(&cfg, &alert("warning", "deadline_warning", "W02")),
        Vec::<&str>::new()
    );
}

fn judge(
    format: WebhookFormat,
    status: Option<u16>,
    retry_after: Option<&str>,
    body: &str,
) -> Judged {
    let answer = Answer {
        status,
        retry_after,
        body: body.as_bytes(),
    };
    classify(format, answer, Duration::from_secs(300))
}

fn verdict(status: Option<u16>, retry_after: Option<&str>) -> Verdict {
    judge(WebhookFormat::Generic, status, retry_after, "").verdict
}

#[test]
fn retry_policy_follows_the_status() {
    assert_eq!(verdict(Some(200), None), Verdict::Delivered);
    assert_eq!(verdict(Some(204), None), Verdict::Delivered);
    assert_eq!(verdict(None, None), Verdict::Retry(None));
    assert_eq!(verdict(Some(500), None), Verdict::Retry(None));
    assert_eq!(
        verdict(Some(503), Some("7")),
        Verdict::Retry(Some(Duration::from_secs(7)))
    );
    assert_eq!(verdict(Some(408), None), Verdict::Retry(None));
    assert_eq!(
        verdict(Some(429), Some(" 2 ")),
        Verdict::Retry(Some(Duration::from_secs(2)))
    );
    // A 429 without Retry-After waits the robots' one-minute window; Retry-After is capped.
    assert_eq!(
        verdict(Some(429), None),
        Verdict::Retry(Some(Duration::from_secs(60)))
    );
    assert_eq!(
        verdict(Some(503), Some("86400")),
        Verdict::Retry(Some(Duration::from_secs(300)))
    );
    assert_eq!(verdict(Some(400), None), Verdict::Rejected);
    assert_eq!(verdict(Some(404), Some("5")), Verdict::Rejected);
    let redirect = judge(WebhookFormat::Dingtalk, Some(302), None, "");
    assert_eq!(redirect.verdict, Verdict::Rejected);
    assert_eq!(redirect.note, "redirect not followed");
}

#[test]
fn robots_deliver_only_with_errcode_zero() {
    for format in [WebhookFormat::Dingtalk, WebhookFormat::Wecom] {
        let ok = judge(format, Some(200), None, r#"{"errcode":0,"errmsg":"ok"}"#);
        assert_eq!((ok.verdict, ok.errcode), (Verdict::Delivered, 0));
        // HTTP 200 with no errcode, or not JSON at all, is not a delivery.
        for body in ["", "<html>ok</html>", r#"{"ok":true}"#] {
            assert_eq!(
                judge(format, Some(200), None, body).verdict,
                Verdict::Retry(None),
                "{body}"
            );
        }
    }
    // Rate limits: retried after the window.
    let fast = judge(
        WebhookFormat::Dingtalk,
        Some(200),
        None,
        r#"{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}"#,
    );
    assert_eq!(fast.verdict, Verdict::Retry(Some(Duration::from_secs(60))));
    assert_eq!(fast.errcode, 130_101);
    let freq = judge(
        WebhookFormat::Wecom,
        Some(200),
        None,
        r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#,
    );
    assert_eq!(freq.verdict, Verdict::Retry(Some(Duration::from_secs(60))));
    // Bad signature, keyword mismatch, invalid token: permanent, with the code.
    for (code, msg) in [
        (310_000, "sign not match"),
        (310_000, "keywords not in content"),
        (300_001, "token is not exist"),
    ] {
        let j = judge(
            WebhookFormat::Dingtalk,
            Some(200),
            None,
            &format!(r#"{{"errcode":{code},"errmsg":"{msg}"}}"#),
        );
        assert_eq!((j.verdict, j.errcode), (Verdict::Rejected, code));
        assert_eq!(j.note, format!("errcode {code}: {msg}"));
    }
    let wecom = judge(
        WebhookFormat::Wecom,
        Some(200),
        None,
        r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#,
    );
    assert_eq!((wecom.verdict, wecom.errcode), (Verdict::Rejected, 93_000));
}

#[test]
fn backoff_grows_with_jitter_and_honours_retry_after() {
    assert_eq!(backoff(1, None, 0.0), Duration::from_millis(250));
    assert_eq!(backoff(1, None, 1.0), Duration::from_millis(500));
    assert_eq!(backoff(3, None, 1.0), Duration::from_millis(2000));
    assert_eq!(backoff(30, None, 1.0), Duration::from_secs(60));
    assert_eq!(
        backoff(1, Some(Duration::from_secs(3)), 0.5),
        Duration::from_secs(3)
    );
    assert!(backoff(2, None, 0.3) >= Duration::from_millis(500));
}

fn calendar() -> WorkCalendar {
    let mut h = HolidayTable::new();
    for json in crate::config::EMBEDDED_HOLIDAYS {
        h.merge_json(json).unwrap();
    }
    WorkCalendar::new(chrono_tz::Asia::Shanghai, &h, &Default::default())
}

fn ctx<'a>(a: &'a AlertRecord, cal: &'a WorkCalendar, revocation: bool) -> Context<'a> {
    Context {
        alert: a,
        revocation,
        window_name: "公安窗口",
        calendar: cal,
        // 2024-05-17 09:00 +08:00: two working days after the deadline
        now_millis: 1_715_907_600_000,
    }
}

#[test]
fn generic_body_headers_and_signature() {
    let cal = calendar();
    let a = alert("yellow", "overdue", "W01");
    let m = render(
        WebhookFormat::Generic,
        "http://h/x",
        "s3cret",
        &ctx(&a, &cal, false),
    );
    assert_eq!(m.url, "http://h/x");
    let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "alert_id": "00000000deadbeef", "revocation": false, "case_id": "C001-2024-0001",
            "kind": "overdue", "level": "yellow", "center_id": "C001", "window_id": "W01",
            "department": "县公安局", "item_code": "W01-001", "item_name": "户籍迁入",
            "accepted_at": "2024-05-06T01:00:00Z", "promised_deadline": "2024-05-15T01:00:00Z",
            "legal_deadline": null, "detected_at": "2024-05-15T01:00:00Z", "revoked_at": null,
            "working_days_remaining": -2.0, "calendar_provisional": false, "round": 1,
            "annulled": false,
            "message": "黄牌：公安窗口 办件 C001-2024-0001（W01-001 户籍迁入）超期办件"
        })
    );
    let header = |k: &str| {
        m.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("X-Casewatch-Alert-Id"), Some("00000000deadbeef"));
    assert_eq!(header("X-Casewatch-Timestamp"), Some("1715907600"));
    // HMAC-SHA256 computed independently (python3 hmac) for this key, timestamp and body.
    let sig = generic_signature("s3cret", "1715907600", &m.body);
    assert_eq!(
        header("X-Casewatch-Signature"),
        Some(format!("sha256={sig}").as_str())
    );
    assert_eq!(
        generic_signature("key", "1", "{}"),
        "1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
    );
    // Without a secret there is no signature header.
    let unsigned = render(
        WebhookFormat::Generic,
        "http://h/x",
        "",
        &ctx(&a, &cal, false),
    );
    assert!(unsigned
        .headers
        .iter()
        .all(|(k, _)| k != "X-Casewatch-Signature"));
}

#[test]
fn dingtalk_markdown_and_signed_url() {
    let cal = calendar();
    let a = alert("red", "legal_overdue", "W01");
    let m = render(
        WebhookFormat::Dingtalk,
        "https://oapi.example/robot/send?access_token=abc",
        "SECxyz",
        &ctx(&a, &cal, false),
    );
    assert_eq!(
        m.url,
        format!(
            "https://oapi.example/robot/send?access_token=abc&timestamp=1715907600000&sign={}",
            dingtalk_sign("SECxyz", 1_715_907_600_000)
        )
    );
    // DingTalk's documented algorithm, computed independently (python3 hmac + base64 + quote_plus).
    assert_eq!(
        dingtalk_sign("SECxyz", 1_715_907_600_000),
        "HM3JmqnrO1%2BA6QFOUByXwF%2BruXlrjO9ZNM7y5oF79h0%3D"
    );
    let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
    assert_eq!(body["msgtype"], "markdown");
    assert_eq!(
        body["markdown"]["text"],
        "### 红牌：超法定时限\n- 窗口：公安窗口（县公安局）\n- 事项：W01-001 户籍迁入\n- 办件：C001-2024-0001\n\
         - 时限：2024-05-15 09:00\n- 情况：已超期 2.00 个工作日\n- 发现时间：2024-05-15 09:00\n\n\
         > 已超法定时限：请分管领导立即督办并约谈窗口负责人。\n\n告警编号 00000000deadbeef"
    );
}

#[test]
fn wecom_revocation_says_so() {
    let cal = calendar();
    let mut a = alert("yellow", "overdue", "W01");
    a.revoked = 1;
    a.revoked_at = Some(1_715_907_000);
    let m = render(WebhookFormat::Wecom, "http://h/w", "", &ctx(&a, &cal, true));
    let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
    let text = body["markdown"]["content"].as_str().unwrap();
    assert!(text.starts_with("### 【撤销】黄牌：超期办件\n"), "{text}");
    assert!(text.contains("- 撤销时间：2024-05-17 08:50\n"), "{text}");
    assert!(text.contains("此前的提醒作废"), "{text}");
}

#[test]
fn provisional_deadlines_are_flagged_in_both_formats() {
    let cal = calendar();
    let mut a = alert("yellow", "overdue", "W01");
    a.calendar_provisional = 1;
    let generic = render(
        WebhookFormat::Generic,
        "http://h/x",
        "",
        &ctx(&a, &cal, false),
    );
    let body: serde_json::Value = serde_json::from_str(&generic.body).unwrap();
    assert_eq!(body["calendar_provisional"], true);
    let robot = render(
        WebhookFormat::Dingtalk,
        "http://h/d",
        "",
        &ctx(&a, &cal, false),
    );
    let body: serde_json::Value = serde_json::from_str(&robot.body).unwrap();
    let text = body["markdown"]["text"].as_str().unwrap();
    assert!(text.contains(PROVISIONAL_LINE), "{text}");
    // A case whose calendar is covered says nothing about it.
    a.calendar_provisional = 0;
    let robot = render(
        WebhookFormat::Wecom,
        "http://h/w",
        "",
        &ctx(&a, &cal, false),
    );
    assert!(!robot.body.contains("暂定"), "{}", robot.body);
}

#[test]
fn names_with_markdown_control_characters_render_as_text() {
    let cal = calendar();
    let mut a = alert("red", "overcharge", "W01");
    a.item_name = "**加急** [点此](http://evil.example)".into();
    a.department = "县局|`x`".into();
    let ctx = Context {
        window_name: "公安_窗口_ <b>",
        ..ctx(&a, &cal, false)
    };
    let m = render(WebhookFormat::Dingtalk, "http://h/d", "", &ctx);
    let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
    let text = body["markdown"]["text"].as_str().unwrap();
    assert!(
        text.contains(r"- 窗口：公安_窗口\_ \<b\>（县局\|\`x\`）"),
        "{text}"
    );
    assert!(
        text.contains(r"- 事项：W01-001 \*\*加急\*\* \[点此\](http://evil.example)"),
        "{text}"
    );
}

#[test]
fn digests_list_every_alert_by_level_red_first() {
    let cal = calendar();
    let mut alerts = [
        alert("warning", "deadline_warning", "W01"),
        alert("red", "legal_overdue", "W01"),
        alert("yellow", "overdue", "W02"),
        alert("red", "overcharge", "W01"),
    ];
    for (i, a) in alerts.iter_mut().enumerate() {
        a.alert_id = format!("id{i}");
        a.case_id = format!("C-{i}");
    }
    let ctxs: Vec<Context<'_>> = alerts.iter().map(|a| ctx(a, &cal, false)).collect();
    let m = render_digest(
        WebhookFormat::Dingtalk,
        "http://h/d",
        "",
        &ctxs,
        1_715_907_600_000,
    );
    let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
    assert_eq!(body["markdown"]["title"], "告警汇总：4 条");
    let text = body["markdown"]["text"].as_str().unwrap();
    assert!(
        text.starts_with("### 告警汇总（4 条）：红牌 2 · 黄牌 1 · 预警 1\n#### 红牌（2）\n"),
        "{text}"
    );
    let (red, yellow, warning) = (
        text.find("#### 红牌").unwrap(),
        text.find("#### 黄牌").unwrap(),
        text.find("#### 预警").unwrap(),
    );
    assert!(red < yellow && yellow < warning, "{text}");
    assert!(
        text.contains(
            "- 超法定时限｜公安窗口｜办件 C-1｜时限 2024-05-15 09:00｜已超期 2.00 个工作日"
        ),
        "{text}"
    );
    assert!(text.ends_with("告警编号 id0、id1、id2、id3"), "{text}");
    let header = |m: &crate::alerts::format::Message, k: &str| {
        m.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header(&m, "X-Casewatch-Digest").as_deref(), Some("4"));

    // The generic digest: the array of the single bodies, signed as one body.
    let g = render_digest(
        WebhookFormat::Generic,
        "http://h/g",
        "s3cret",
        &ctxs,
        1_715_907_600_000,
    );
    let array: Vec<serde_json::Value> = serde_json::from_str(&g.body).unwrap();
    assert_eq!(array.len(), 4);
    assert_eq!(array[1]["alert_id"], "id1");
    assert_eq!(array[1]["kind"], "legal_overdue");
    assert_eq!(
        header(&g, "X-Casewatch-Signature"),
        Some(format!(
            "sha256={}",
            generic_signature("s3cret", "1715907600", &g.body)
        ))
    );
    assert_eq!(header(&g, "X-Casewatch-Digest").as_deref(), Some("4"));
}

#[test]
fn a_later_round_says_so_on_the_phone() {
    let cal = calendar();
    let mut a = alert("yellow", "overdue", "W01");
    a.round = 2;
    let m = render(
        WebhookFormat::Wecom,
        "http://h/w",
        "",
        &ctx(&a, &cal, false),
    );
    let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
    let text = body["markdown"]["content"].as_str().unwrap();
    assert!(
        text.contains("- 轮次：第 2 轮（此前的提醒已撤销，现再次成立）"),
        "{text}"
    );
    let g = render(
        WebhookFormat::Generic,
        "http://h/g",
        "",
        &ctx(&a, &cal, false),
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&g.body).unwrap()["round"],
        2
    );
}
