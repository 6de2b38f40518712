//! The console's pages (SPEC §8): 实时监控 (board), 办件查询 (case), 预警 (alerts), 通报
//! (bulletins) and 数据质量 (data quality). Every query binds its parameters and is limited to
//! the viewer's scope; a case outside it answers 404, like a case that does not exist.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use chrono::{Datelike, NaiveDate};
use clickhouse::Row;
use serde::Deserialize;

use super::{Console, Viewer, T};
use crate::bulletin::render::percent;
use crate::bulletin::Sums;
use crate::core::rules::AnomalyKind;

/// What the layout shows around every page.
pub(crate) struct Frame {
    pub(crate) t: T,
    pub(crate) user: String,
    pub(crate) csrf: String,
    pub(crate) window_user: bool,
    /// The live-refresh token (pages that refresh live).
    pub(crate) live: Option<String>,
}

impl Frame {
    fn of(v: &Viewer, live: Option<String>) -> Self {
        Self {
            t: v.t,
            user: v.user.name.clone(),
            csrf: v.csrf.clone(),
            window_user: v.is_window_user(),
            live,
        }
    }
}

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/", get(board))
        .route("/live", get(live))
        .route("/case", get(case_search))
        .route("/case/{id}", get(case))
        .route("/alerts", get(alerts))
        .route("/bulletins", get(bulletins))
        .route("/bulletins/{period}", get(bulletin))
        .route("/quality", get(quality))
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage<'a> {
    t: T,
    csrf: &'a str,
    message: Option<&'a str>,
}

/// The login page.
pub(crate) fn login_page(t: T, csrf: &str, message: Option<&str>) -> String {
    LoginPage { t, csrf, message }
        .render()
        .unwrap_or_else(|e| format!("template error: {e}"))
}

#[derive(Template)]
#[template(path = "console/message.html")]
struct MessagePage<'a> {
    t: T,
    message: &'a str,
}

/// A page with one message (refusals, errors).
pub(crate) fn message_page(t: T, message: &str) -> String {
    MessagePage { t, message }
        .render()
        .unwrap_or_else(|e| format!("template error: {e}"))
}

/// An error a page answers with.
enum PageError {
    NotFound(T),
    Failed(T, String),
}

impl From<(T, anyhow::Error)> for PageError {
    fn from((t, e): (T, anyhow::Error)) -> Self {
        PageError::Failed(t, format!("{e:#}"))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::NotFound(t) => (
                StatusCode::NOT_FOUND,
                Html(message_page(t, t.s("未找到。", "Not found."))),
            )
                .into_response(),
            PageError::Failed(t, e) => {
                tracing::warn!(error = %e, "console: a page failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Html(message_page(
                        t,
                        t.s(
                            "数据暂不可用（ClickHouse 无法访问），请稍后刷新。",
                            "Data unavailable (ClickHouse unreachable): refresh later.",
                        ),
                    )),
                )
                    .into_response()
            }
        }
    }
}

/// A signed-in viewer's page: the login when signed out, 404 when `build` finds nothing the
/// viewer may see, 503 when ClickHouse fails.
async fn answer<P: Template>(
    c: &Console,
    headers: &HeaderMap,
    build: impl AsyncFnOnce(&Viewer) -> anyhow::Result<Option<P>>,
) -> Response {
    let v = match c.viewer(headers) {
        Ok(v) => v,
        Err(refused) => return refused.into_response(),
    };
    match build(&v).await {
        Ok(Some(p)) => page(p),
        Ok(None) => PageError::NotFound(v.t).into_response(),
        Err(e) => PageError::from((v.t, e)).into_response(),
    }
}

/// Renders a template as the answer.
fn page(t: impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("template error: {e}"),
        )
            .into_response(),
    }
}

/// A time as the console shows it: local to the default calendar, minutes.
fn shown(c: &Console, t: Option<u32>) -> String {
    let Some(t) = t else {
        return String::new();
    };
    let tz = c.calendars.default.tz();
    chrono::DateTime::from_timestamp(i64::from(t), 0)
        .map(|d| d.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

// ---- 实时监控 -------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct BoardQuery {
    #[serde(default)]
    center: String,
    #[serde(default)]
    day: String,
}

struct WindowRow {
    window_id: String,
    /// The configured name (empty when the window is not configured).
    name: String,
    day: Sums,
    month: Sums,
    day_on_time: String,
    month_on_time: String,
    month_speedup: String,
    month_satisfaction: String,
    yellow: u64,
    red: u64,
}

#[derive(Row, Deserialize)]
struct OpenCase {
    case_id: String,
    window_id: String,
    item_name: String,
    deadline: Option<u32>,
}

struct CaseLine {
    case_id: String,
    window_id: String,
    item_name: String,
    deadline: String,
}

#[derive(Template)]
#[template(path = "console/board.html")]
struct BoardPage {
    f: Frame,
    centers: Vec<String>,
    center: String,
    day: String,
    cards_red: u64,
    cards_yellow: u64,
    cards_warning: u64,
    provisional: u64,
    windows: Vec<WindowRow>,
    overdue: Vec<CaseLine>,
    warning: Vec<CaseLine>,
}

/// The centres in a viewer's scope that have data.
async fn centers(c: &Console, v: &Viewer) -> anyhow::Result<Vec<String>> {
    let sql = format!(
        "SELECT DISTINCT center_id FROM window_daily_parts WHERE {} ORDER BY center_id",
        super::auth::Scope::SQL
    );
    let mut found: Vec<String> = v.scope.bind(c.client.query(&sql)).fetch_all().await?;
    if found.is_empty() {
        found = v.scope.centers.clone();
    }
    Ok(found)
}

/// The centres a viewer may see, and the one asked for (the first when it is not one of them).
async fn chosen_center(
    c: &Console,
    v: &Viewer,
    wanted: String,
) -> anyhow::Result<(Vec<String>, String)> {
    let centers = centers(c, v).await?;
    let center = if centers.contains(&wanted) {
        wanted
    } else {
        centers.first().cloned().unwrap_or_default()
    };
    Ok((centers, center))
}

/// The live token: changes whenever a consumer's flush lands.
async fn live_token(c: &Console) -> anyhow::Result<String> {
    let v: u64 = c
        .client
        .query("SELECT max(version) FROM checkpoints")
        .fetch_one()
        .await?;
    Ok(v.to_string())
}

async fn live(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if let Err(refused) = c.viewer(&headers) {
        return refused.into_response();
    }
    match live_token(&c).await {
        Ok(token) => token.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn window_sums(
    c: &Console,
    v: &Viewer,
    center: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<Vec<(String, Sums)>> {
    #[derive(Row, Deserialize)]
    struct Line {
        window_id: String,
        sums: Sums,
    }
    let sql = format!(
        "SELECT window_id, {} FROM {} WHERE center_id = ? AND day >= toDate(?) AND day <= toDate(?) AND {} GROUP BY window_id ORDER BY window_id",
        crate::bulletin::sums_sql(),
        crate::bulletin::DAILY_SUMS_FROM,
        super::auth::Scope::SQL
    );
    let q = c
        .client
        .query(&sql)
        .bind(center)
        .bind(from.to_string())
        .bind(to.to_string());
    let lines: Vec<Line> = v.scope.bind(q).fetch_all().await?;
    Ok(lines.into_iter().map(|l| (l.window_id, l.sums)).collect())
}

async fn open_cases(
    c: &Console,
    v: &Viewer,
    center: &str,
    condition: &str,
) -> anyhow::Result<Vec<CaseLine>> {
    let sql = format!(
        "SELECT case_id, window_id, item_name, toUInt32(promised_deadline) AS deadline FROM cases FINAL WHERE center_id = ? AND ended_at IS NULL AND {condition} AND {} ORDER BY promised_deadline, case_id LIMIT 100",
        super::auth::Scope::SQL
    );
    let rows: Vec<OpenCase> = v
        .scope
        .bind(c.client.query(&sql).bind(center))
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| CaseLine {
            deadline: shown(c, r.deadline),
            case_id: r.case_id,
            window_id: r.window_id,
            item_name: r.item_name,
        })
        .collect())
}

async fn board(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<BoardQuery>,
) -> Response {
    answer(&c, &headers, async |v| board_page(&c, v, q).await.map(Some)).await
}

async fn board_page(c: &Console, v: &Viewer, q: BoardQuery) -> anyhow::Result<BoardPage> {
    let (centers, center) = chosen_center(c, v, q.center).await?;
    let tz = c.calendars.get(&center).tz();
    let day = NaiveDate::parse_from_str(&q.day, "%Y-%m-%d")
        .unwrap_or_else(|_| chrono::Utc::now().with_timezone(&tz).date_naive());
    let month_start = day.with_day(1).unwrap_or(day);
    let live = live_token(c).await?;
    let days = window_sums(c, v, &center, day, day).await?;
    let months = window_sums(c, v, &center, month_start, day).await?;
    let sql = format!(
        "SELECT window_id, level, count() FROM alerts FINAL WHERE revoked = 0 AND center_id = ? AND {} GROUP BY window_id, level",
        super::auth::Scope::SQL
    );
    let cards: Vec<(String, String, u64)> = v
        .scope
        .bind(c.client.query(&sql).bind(&center))
        .fetch_all()
        .await?;
    let count = |window: Option<&str>, level: &str| -> u64 {
        cards
            .iter()
            .filter(|(w, l, _)| l == level && window.is_none_or(|x| x == w))
            .map(|x| x.2)
            .sum()
    };
    let mut ids: Vec<String> = days.iter().chain(&months).map(|x| x.0.clone()).collect();
    ids.extend(cards.iter().map(|x| x.0.clone()));
    ids.sort();
    ids.dedup();
    let find = |rows: &[(String, Sums)], w: &str| {
        rows.iter()
            .find(|x| x.0 == w)
            .map(|x| x.1.clone())
            .unwrap_or_default()
    };
    let windows = ids
        .into_iter()
        .map(|w| {
            let (d, m) = (find(&days, &w), find(&months, &w));
            WindowRow {
                day_on_time: percent(d.rates().on_time),
                month_on_time: percent(m.rates().on_time),
                month_speedup: percent(m.rates().speedup),
                month_satisfaction: percent(m.rates().satisfaction),
                yellow: count(Some(&w), "yellow"),
                red: count(Some(&w), "red"),
                name: c
                    .cfg
                    .windows
                    .iter()
                    .find(|x| x.id == w)
                    .map(|x| x.name.clone())
                    .unwrap_or_default(),
                window_id: w,
                day: d,
                month: m,
            }
        })
        .collect();
    let sql = format!(
        "SELECT count() FROM cases FINAL WHERE center_id = ? AND ended_at IS NULL AND calendar_provisional = 1 AND {}",
        super::auth::Scope::SQL
    );
    let provisional: u64 = v
        .scope
        .bind(c.client.query(&sql).bind(&center))
        .fetch_one()
        .await?;
    Ok(BoardPage {
        f: Frame::of(v, Some(live)),
        cards_red: count(None, "red"),
        cards_yellow: count(None, "yellow"),
        cards_warning: count(None, "warning"),
        provisional,
        windows,
        overdue: open_cases(c, v, &center, "overdue = 1").await?,
        warning: open_cases(c, v, &center, "overdue = 0 AND alert_level = 'warning'").await?,
        centers,
        center,
        day: day.to_string(),
    })
}

// ---- 办件查询 -------------------------------------------------------------------------------

#[derive(Row, Deserialize)]
struct CaseFacts {
    case_id: String,
    center_id: String,
    window_id: String,
    department: String,
    item_code: String,
    item_name: String,
    item_kind: String,
    status: String,
    outcome: String,
    accepted_at: Option<u32>,
    promised_deadline: Option<u32>,
    legal_deadline: Option<u32>,
    ended_at: Option<u32>,
    on_time: u8,
    early: u8,
    overdue: u8,
    rating: Option<u8>,
    alert_level: String,
}

struct ShownCase {
    case_id: String,
    center_id: String,
    window_id: String,
    department: String,
    item_code: String,
    item_name: String,
    item_kind: String,
    status: String,
    outcome: String,
    accepted_at: String,
    promised_deadline: String,
    legal_deadline: String,
    ended_at: String,
    on_time: u8,
    early: u8,
    overdue: u8,
    rating: String,
    alert_level: String,
}

struct TimelineEvent {
    kind: String,
    occurred_at: String,
    recorded_at: String,
    source: String,
    event_id: String,
}

struct ShownAnomaly {
    alert_id: String,
    kind: String,
    level: String,
    round: u32,
    detected_at: String,
    revoked_at: String,
    /// Revoked because an appeal of the card was granted (SPEC §9).
    annulled: bool,
}

#[derive(Row, Deserialize)]
struct DeliveryRow {
    alert_id: String,
    webhook: String,
    revocation: u8,
    round: u32,
    attempt: u32,
    outcome: String,
    http_status: u16,
    errcode: i64,
    attempted_at: u32,
}

struct ShownDelivery {
    alert_id: String,
    webhook: String,
    revocation: u8,
    round: u32,
    attempt: u32,
    outcome: String,
    http_status: u16,
    errcode: String,
    attempted_at: String,
}

#[derive(Template)]
#[template(path = "console/case.html")]
struct CasePage {
    f: Frame,
    query: String,
    case: Option<ShownCase>,
    events: Vec<TimelineEvent>,
    anomalies: Vec<ShownAnomaly>,
    alerts: Vec<ShownAnomaly>,
    deliveries: Vec<ShownDelivery>,
    /// The case's cards with the viewer's forms (SPEC §9).
    cards: Vec<super::actions::ShownCard>,
    /// Its supervision history: one row per card acted on.
    supervision: Vec<ShownSupervision>,
    /// An action this viewer just produced, and where it stands.
    pending: Option<super::actions::Pending>,
}

/// A `supervision` row with its times shown.
struct ShownSupervision {
    kind: String,
    order_state: String,
    ordered: String,
    order_note: String,
    response_due: String,
    responded: String,
    response_note: String,
    late: bool,
    reopens: u16,
    closed: String,
    appeal_state: String,
    appealed: String,
    appeal_reason: String,
    decided: String,
    decision_note: String,
}

impl ShownSupervision {
    fn new(c: &Console, s: crate::sinks::clickhouse::rows::SupervisionRecord) -> Self {
        let by = |t: Option<u32>, who: &str| {
            let at = shown(c, t);
            if at.is_empty() {
                at
            } else {
                format!("{at} {who}")
            }
        };
        Self {
            ordered: by(s.ordered_at, &s.ordered_by),
            response_due: shown(c, s.response_due),
            responded: by(s.responded_at, &s.responded_by),
            closed: by(s.closed_at, &s.closed_by),
            appealed: by(s.appealed_at, &s.appealed_by),
            decided: by(s.decided_at, &s.decided_by),
            late: s.response_late == 1,
            kind: s.kind,
            order_state: s.order_state,
            order_note: s.order_note,
            response_note: s.response_note,
            reopens: s.reopens,
            appeal_state: s.appeal_state,
            appeal_reason: s.appeal_reason,
            decision_note: s.decision_note,
        }
    }
}

#[derive(Deserialize)]
struct CaseQuery {
    #[serde(default)]
    id: String,
}

/// `/case?id=`: the search form, and where it leads.
async fn case_search(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<CaseQuery>,
) -> Response {
    let v = match c.viewer(&headers) {
        Ok(v) => v,
        Err(refused) => return refused.into_response(),
    };
    let id = q.id.trim();
    if !id.is_empty() {
        return Redirect::to(&format!("/case/{}", url_segment(id))).into_response();
    }
    page(CasePage {
        f: Frame::of(&v, None),
        query: String::new(),
        case: None,
        events: vec![],
        anomalies: vec![],
        alerts: vec![],
        deliveries: vec![],
        cards: vec![],
        supervision: vec![],
        pending: None,
    })
}

/// A path segment with every byte but unreserved ones percent-encoded.
pub(crate) fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Deserialize, Default)]
struct PendingQuery {
    /// The event id of an action this viewer just produced.
    #[serde(default)]
    pending: String,
}

async fn case(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<PendingQuery>,
) -> Response {
    answer(&c, &headers, async |v| {
        case_page(&c, v, id, &q.pending).await
    })
    .await
}

async fn case_page(
    c: &Console,
    v: &Viewer,
    id: String,
    pending: &str,
) -> anyhow::Result<Option<CasePage>> {
    let sql = format!(
        "SELECT case_id, center_id, window_id, department, item_code, item_name, item_kind, status, outcome, toUInt32(accepted_at) AS accepted_at, toUInt32(promised_deadline) AS promised_deadline, toUInt32(legal_deadline) AS legal_deadline, toUInt32(ended_at) AS ended_at, on_time, early, overdue, rating, alert_level FROM cases FINAL WHERE case_id = ? AND {}",
        super::auth::Scope::SQL
    );
    let facts: Option<CaseFacts> = v
        .scope
        .bind(c.client.query(&sql).bind(&id))
        .fetch_optional()
        .await?;
    // Another window's case is exactly as absent as a case that does not exist.
    let Some(f) = facts.filter(|f| v.scope.allows(&f.center_id, &f.window_id)) else {
        return Ok(None);
    };
    let (anomalies, alerts, deliveries) = cards_of(c, &id).await?;
    let (cards, supervision) = super::actions::case_cards(c, v, &id).await?;
    let pending = match pending {
        "" => None,
        p => Some(super::actions::pending(c, &id, p).await?),
    };
    // While an action waits for the consumer, the page follows it live.
    let live = match &pending {
        Some(super::actions::Pending::Waiting(_)) => Some(live_token(c).await?),
        _ => None,
    };
    Ok(Some(CasePage {
        f: Frame::of(v, live),
        events: timeline(c, &id).await?,
        query: id,
        anomalies,
        alerts,
        deliveries,
        case: Some(ShownCase::new(c, f)),
        supervision: supervision
            .into_iter()
            .map(|s| ShownSupervision::new(c, s))
            .collect(),
        cards,
        pending,
    }))
}

/// Every stored event of a case, in the order things happened (log order among equal
/// instants).
async fn timeline(c: &Console, id: &str) -> anyhow::Result<Vec<TimelineEvent>> {
    let payloads: Vec<String> = c
        .client
        .query("SELECT payload FROM events FINAL WHERE (topic, partition, offset) IN (SELECT topic, partition, arrayJoin(offsets) FROM case_event_offsets WHERE case_id = ?) ORDER BY topic, partition, offset")
        .bind(id)
        .fetch_all()
        .await?;
    let mut events: Vec<(i64, TimelineEvent)> = payloads
        .iter()
        .filter_map(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            let occurred = text("occurred_at");
            let at = crate::core::event::parse_timestamp(&occurred).unwrap_or(i64::MAX);
            let event = TimelineEvent {
                kind: text("type"),
                occurred_at: occurred,
                recorded_at: text("recorded_at"),
                source: text("source"),
                event_id: text("event_id"),
            };
            (at, event)
        })
        .collect();
    events.sort_by_key(|e| e.0);
    Ok(events.into_iter().map(|e| e.1).collect())
}

#[derive(Row, Deserialize)]
struct AlertRow {
    alert_id: String,
    kind: String,
    level: String,
    round: u32,
    detected_at: u32,
    revoked_at: Option<u32>,
    annulled: u8,
}

/// A case's anomalies, its alerts and every delivery attempt of them.
async fn cards_of(
    c: &Console,
    id: &str,
) -> anyhow::Result<(Vec<ShownAnomaly>, Vec<ShownAnomaly>, Vec<ShownDelivery>)> {
    let anomalies: Vec<AlertRow> = c
        .client
        .query("SELECT '' AS alert_id, kind, level, round, toUInt32(detected_at) AS detected_at, toUInt32(revoked_at) AS revoked_at, annulled FROM anomalies FINAL WHERE case_id = ? ORDER BY detected_at, kind")
        .bind(id)
        .fetch_all()
        .await?;
    let alerts: Vec<AlertRow> = c
        .client
        .query("SELECT alert_id, kind, level, round, toUInt32(detected_at) AS detected_at, toUInt32(revoked_at) AS revoked_at, annulled FROM alerts FINAL WHERE case_id = ? ORDER BY detected_at, kind")
        .bind(id)
        .fetch_all()
        .await?;
    let mut ids: Vec<String> = alerts.iter().map(|a| a.alert_id.clone()).collect();
    // `[]` is Array(Nothing) on ClickHouse 18.16, which `has` refuses.
    ids.push(String::new());
    let deliveries: Vec<DeliveryRow> = c
        .client
        .query("SELECT alert_id, webhook, revocation, round, attempt, outcome, http_status, errcode, toUInt32(attempted_at) AS attempted_at FROM alert_deliveries WHERE has(?, alert_id) ORDER BY attempted_at, alert_id, webhook, attempt")
        .bind(&ids)
        .fetch_all()
        .await?;
    Ok((
        anomalies
            .into_iter()
            .map(|a| ShownAnomaly::new(c, a))
            .collect(),
        alerts
            .into_iter()
            .map(|a| ShownAnomaly::new(c, a))
            .collect(),
        deliveries
            .into_iter()
            .map(|d| ShownDelivery::new(c, d))
            .collect(),
    ))
}

impl ShownAnomaly {
    fn new(c: &Console, a: AlertRow) -> Self {
        Self {
            detected_at: shown(c, Some(a.detected_at)),
            revoked_at: shown(c, a.revoked_at),
            annulled: a.annulled == 1,
            alert_id: a.alert_id,
            kind: a.kind,
            level: a.level,
            round: a.round,
        }
    }
}

impl ShownDelivery {
    fn new(c: &Console, d: DeliveryRow) -> Self {
        Self {
            attempted_at: shown(c, Some(d.attempted_at)),
            errcode: d.errcode.to_string(),
            alert_id: d.alert_id,
            webhook: d.webhook,
            revocation: d.revocation,
            round: d.round,
            attempt: d.attempt,
            outcome: d.outcome,
            http_status: d.http_status,
        }
    }
}

impl ShownCase {
    fn new(c: &Console, f: CaseFacts) -> Self {
        Self {
            accepted_at: shown(c, f.accepted_at),
            promised_deadline: shown(c, f.promised_deadline),
            legal_deadline: shown(c, f.legal_deadline),
            ended_at: shown(c, f.ended_at),
            rating: f.rating.map(|r| r.to_string()).unwrap_or_default(),
            case_id: f.case_id,
            center_id: f.center_id,
            window_id: f.window_id,
            department: f.department,
            item_code: f.item_code,
            item_name: f.item_name,
            item_kind: f.item_kind,
            status: f.status,
            outcome: f.outcome,
            on_time: f.on_time,
            early: f.early,
            overdue: f.overdue,
            alert_level: f.alert_level,
        }
    }
}

// ---- 预警 -----------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct AlertFilter {
    #[serde(default)]
    level: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    center: String,
    #[serde(default)]
    window: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    revoked: String,
}

#[derive(Row, Deserialize)]
struct AlertLine {
    case_id: String,
    kind: String,
    level: String,
    round: u32,
    center_id: String,
    window_id: String,
    item_name: String,
    detected_at: u32,
    revoked_at: Option<u32>,
}

struct ShownAlert {
    case_id: String,
    kind: String,
    level: String,
    round: u32,
    center_id: String,
    window_id: String,
    item_name: String,
    detected_at: String,
    revoked_at: String,
    /// The order's and the appeal's state in words (SPEC §9).
    state: String,
    /// The viewer's forms for the card.
    actions: Vec<super::actions::ShownAction>,
}

#[derive(Template)]
#[template(path = "console/alerts.html")]
struct AlertsPage {
    f: Frame,
    filter: AlertFilter,
    levels: Vec<String>,
    kinds: Vec<String>,
    rows: Vec<ShownAlert>,
}

async fn alerts(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(filter): Query<AlertFilter>,
) -> Response {
    answer(&c, &headers, async |v| {
        alerts_page(&c, v, filter).await.map(Some)
    })
    .await
}

/// A date filter's bound: the date, or `default` when empty or not a date.
fn date_or(s: &str, default: &str) -> String {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_or(default.to_string(), |d| d.to_string())
}

async fn alerts_page(c: &Console, v: &Viewer, filter: AlertFilter) -> anyhow::Result<AlertsPage> {
    let sql = format!(
        "SELECT case_id, kind, level, round, center_id, window_id, item_name, toUInt32(detected_at) AS detected_at, toUInt32(revoked_at) AS revoked_at \
         FROM alerts FINAL WHERE {} AND (? = '' OR level = ?) AND (? = '' OR kind = ?) AND (? = '' OR center_id = ?) AND (? = '' OR window_id = ?) \
         AND toDate(detected_at) >= toDate(?) AND toDate(detected_at) <= toDate(?) AND (? = 1 OR revoked = 0) \
         ORDER BY detected_at DESC, case_id LIMIT 500",
        super::auth::Scope::SQL
    );
    let mut q = v.scope.bind(c.client.query(&sql));
    for value in [&filter.level, &filter.kind, &filter.center, &filter.window] {
        q = q.bind(value.as_str()).bind(value.as_str());
    }
    let rows: Vec<AlertLine> = q
        .bind(date_or(&filter.from, "1970-01-02"))
        .bind(date_or(&filter.to, "2105-12-31"))
        .bind(u8::from(filter.revoked == "1"))
        .fetch_all()
        .await?;
    let states =
        super::actions::supervision_states(c, rows.iter().map(|r| r.case_id.clone())).await?;
    Ok(AlertsPage {
        f: Frame::of(v, None),
        levels: ["warning", "yellow", "red"].map(String::from).to_vec(),
        kinds: AnomalyKind::ALL
            .iter()
            .map(|k| k.as_str().to_string())
            .collect(),
        rows: rows
            .into_iter()
            .map(|a| {
                let (order, appeal) = states
                    .get(&(a.case_id.clone(), a.kind.clone()))
                    .map_or(("", ""), |(o, p)| (o.as_str(), p.as_str()));
                let holding = a.revoked_at.is_none().then_some(a.level.as_str());
                let card = super::actions::card_state(holding, order, appeal);
                let actions = AnomalyKind::parse(&a.kind)
                    .map(|k| super::actions::shown_actions(v, k, card))
                    .unwrap_or_default();
                ShownAlert {
                    detected_at: shown(c, Some(a.detected_at)),
                    revoked_at: shown(c, a.revoked_at),
                    state: super::actions::state_words(v.t, card),
                    actions,
                    case_id: a.case_id,
                    kind: a.kind,
                    level: a.level,
                    round: a.round,
                    center_id: a.center_id,
                    window_id: a.window_id,
                    item_name: a.item_name,
                }
            })
            .collect(),
        filter,
    })
}

// ---- 通报 -----------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "console/bulletins.html")]
struct BulletinsPage {
    f: Frame,
    centers: Vec<String>,
    center: String,
    periods: Vec<String>,
    body: Option<String>,
}

async fn bulletins(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<BoardQuery>,
) -> Response {
    bulletin_answer(c, headers, None, q).await
}

async fn bulletin(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(period): Path<String>,
    Query(q): Query<BoardQuery>,
) -> Response {
    bulletin_answer(c, headers, Some(period), q).await
}

async fn bulletin_answer(
    c: Arc<Console>,
    headers: HeaderMap,
    period: Option<String>,
    q: BoardQuery,
) -> Response {
    answer(&c, &headers, async |v| {
        bulletins_page(&c, v, period, q).await
    })
    .await
}

/// The past periods a bulletin can be generated for: the last 12 months and 4 quarters.
fn past_periods(today: NaiveDate) -> Vec<String> {
    let mut out = Vec::new();
    let (mut y, mut m) = (today.year(), today.month());
    for _ in 0..12 {
        (y, m) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
        out.push(format!("{y}-{m:02}"));
    }
    let (mut y, mut q) = (today.year(), (today.month() - 1) / 3 + 1);
    for _ in 0..4 {
        (y, q) = if q == 1 { (y - 1, 4) } else { (y, q - 1) };
        out.push(format!("{y}-Q{q}"));
    }
    out
}

async fn bulletins_page(
    c: &Console,
    v: &Viewer,
    period: Option<String>,
    q: BoardQuery,
) -> anyhow::Result<Option<BulletinsPage>> {
    let (centers, center) = chosen_center(c, v, q.center).await?;
    let tz = c.calendars.get(&center).tz();
    let today = chrono::Utc::now().with_timezone(&tz).date_naive();
    let periods = past_periods(today);
    let body = match period {
        None => None,
        Some(p) => {
            let Ok(parsed) = crate::bulletin::Period::parse(&p, today) else {
                return Ok(None);
            };
            let figures =
                crate::bulletin::load(&c.client, &c.cfg, parsed, Some(center.as_str())).await?;
            let ranked =
                crate::bulletin::rank(&figures.windows, crate::bulletin::Weights::of(&c.cfg));
            Some(crate::bulletin::render::html_body(
                v.t.bulletin_lang(),
                &figures,
                &ranked,
            ))
        }
    };
    Ok(Some(BulletinsPage {
        f: Frame::of(v, None),
        centers,
        center,
        periods,
        body,
    }))
}

// ---- 数据质量 -------------------------------------------------------------------------------

#[derive(Row, Deserialize)]
struct CheckpointLine {
    topic: String,
    partition: u32,
    next_offset: u64,
    engine_time: u32,
    epoch: u64,
    snapshot_offset: u64,
}

struct PartitionLine {
    topic: String,
    partition: u32,
    next_offset: u64,
    log_end: String,
    lag: String,
    catching_up: String,
    engine_time: String,
    epoch: u64,
    snapshot_offset: u64,
}

#[derive(Row, Deserialize)]
struct DeadLine {
    origin: String,
    position: u64,
    reason: String,
    received_at: u32,
    raw: String,
}

struct ShownDead {
    origin: String,
    position: u64,
    reason: String,
    received_at: String,
    raw: String,
}

#[derive(Template)]
#[template(path = "console/quality.html")]
struct QualityPage {
    f: Frame,
    partitions: Vec<PartitionLine>,
    reasons: Vec<(String, u64)>,
    latest: Vec<ShownDead>,
}

async fn quality(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    answer(&c, &headers, async |v| {
        // Dead letters and partitions are not a window's: a window user has no such page.
        if v.is_window_user() {
            return Ok(None);
        }
        quality_page(&c, v).await.map(Some)
    })
    .await
}

/// The log end of each partition of `topic` (None when the broker does not answer).
fn log_ends(cfg: &crate::config::Config, topic: &str, partitions: &[u32]) -> Vec<Option<i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: Option<BaseConsumer> =
        crate::pipeline::kafka::consumer_config(&cfg.kafka, "casewatch-console", false)
            .create()
            .ok();
    partitions
        .iter()
        .map(|&p| {
            let c = consumer.as_ref()?;
            c.fetch_watermarks(topic, p as i32, std::time::Duration::from_millis(500))
                .ok()
                .map(|w| w.1)
        })
        .collect()
}

async fn quality_page(c: &Console, v: &Viewer) -> anyhow::Result<QualityPage> {
    let checkpoints: Vec<CheckpointLine> = c
        .client
        .query("SELECT topic, partition, next_offset, toUInt32(engine_time) AS engine_time, epoch, snapshot_offset FROM checkpoints FINAL WHERE topic = ? ORDER BY partition")
        .bind(&c.cfg.kafka.topic)
        .fetch_all()
        .await?;
    let cfg = c.cfg.clone();
    let topic = c.cfg.kafka.topic.clone();
    let ids: Vec<u32> = checkpoints.iter().map(|p| p.partition).collect();
    let ends = tokio::task::spawn_blocking(move || log_ends(&cfg, &topic, &ids)).await?;
    let catch_up_lag = c.cfg.pipeline.catch_up_lag;
    let partitions = checkpoints
        .into_iter()
        .zip(ends)
        .map(|(p, end)| {
            let lag = end.map(|e| e - p.next_offset as i64);
            PartitionLine {
                log_end: end.map(|e| e.to_string()).unwrap_or_else(|| "?".into()),
                lag: lag.map(|l| l.to_string()).unwrap_or_else(|| "?".into()),
                catching_up: match lag {
                    Some(l) if l > catch_up_lag => v.t.s("是", "yes").to_string(),
                    Some(_) => v.t.s("否", "no").to_string(),
                    None => "?".into(),
                },
                engine_time: shown(c, Some(p.engine_time)),
                topic: p.topic,
                partition: p.partition,
                next_offset: p.next_offset,
                epoch: p.epoch,
                snapshot_offset: p.snapshot_offset,
            }
        })
        .collect();
    let reasons: Vec<(String, u64)> = c
        .client
        .query("SELECT reason, count() AS n FROM dead_letters FINAL GROUP BY reason ORDER BY n DESC, reason")
        .fetch_all()
        .await?;
    let latest: Vec<DeadLine> = c
        .client
        .query("SELECT origin, position, reason, toUInt32(received_at) AS received_at, substring(raw, 1, 400) AS raw FROM dead_letters FINAL ORDER BY received_at DESC, origin, position DESC LIMIT 50")
        .fetch_all()
        .await?;
    Ok(QualityPage {
        f: Frame::of(v, None),
        partitions,
        reasons,
        latest: latest
            .into_iter()
            .map(|d| ShownDead {
                received_at: shown(c, Some(d.received_at)),
                origin: d.origin,
                position: d.position,
                reason: d.reason,
                raw: d.raw,
            })
            .collect(),
    })
}
