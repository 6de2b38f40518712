//! The supervision loop in the console (SPEC §9): what a signed-in user may do with a case's
//! cards, the forms for it, and the action itself — checked on the server with the engine's
//! own rules ([`crate::core::supervision::allowed`]) and then produced to the events topic,
//! keyed by the case id, as a `supervision` event. The console never writes ClickHouse: the
//! consumer applies the event like any other (or refuses it as `invalid_action`), and the case
//! page shows the action once its event is in `events`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use clickhouse::Row;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;

use super::{Console, Viewer, T};
use crate::config::{ConsoleRole, KafkaConfig};
use crate::core::event::{Action, ActorRole, MAX_NOTE_CHARS, MAX_RESPONSE_DAYS};
use crate::core::rules::{AnomalyKind, Level};
use crate::core::supervision::{actions_for, allowed, AppealState, CardState, OrderState};
use crate::sinks::clickhouse::rows::SupervisionRecord;

/// The producer of console actions.
pub(crate) struct ActionProducer {
    producer: FutureProducer,
    topic: String,
}

impl ActionProducer {
    pub(crate) fn new(kafka: &KafkaConfig) -> anyhow::Result<Self> {
        let mut p = rdkafka::ClientConfig::new();
        p.set("bootstrap.servers", &kafka.brokers)
            .set("message.timeout.ms", "10000");
        for (k, v) in &kafka.client {
            p.set(k, v);
        }
        Ok(Self {
            producer: p.create()?,
            topic: kafka.topic.clone(),
        })
    }

    /// Produces one event keyed by its case, waiting for the broker's acknowledgement.
    async fn send(&self, case_id: &str, payload: &str) -> anyhow::Result<()> {
        self.producer
            .send(
                FutureRecord::to(&self.topic).key(case_id).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| anyhow::anyhow!("{e}"))
    }
}

/// The actor role of a console role.
pub(crate) fn actor_role(role: ConsoleRole) -> ActorRole {
    match role {
        ConsoleRole::Supervisor => ActorRole::Supervisor,
        ConsoleRole::Window => ActorRole::Window,
        ConsoleRole::Viewer => ActorRole::Viewer,
    }
}

/// The button label of an action.
fn action_label(t: T, a: Action) -> &'static str {
    match a {
        Action::Order => t.s("督办", "Order"),
        Action::Respond => t.s("反馈", "Respond"),
        Action::Close => t.s("办结督办", "Close"),
        Action::Reopen => t.s("退回重办", "Reopen"),
        Action::Appeal => t.s("申诉", "Appeal"),
        Action::Grant => t.s("申诉成立", "Grant"),
        Action::Reject => t.s("驳回申诉", "Reject"),
    }
}

/// One form of a card: its action, and whether it asks for a response deadline.
pub(crate) struct ShownAction {
    pub(crate) action: &'static str,
    pub(crate) label: &'static str,
    pub(crate) days: bool,
}

/// A card of a case with what the viewer may do with it.
pub(crate) struct ShownCard {
    pub(crate) kind: String,
    pub(crate) kind_name: &'static str,
    pub(crate) level: String,
    pub(crate) holds: bool,
    /// The order's and the appeal's state, in words.
    pub(crate) state: String,
    pub(crate) actions: Vec<ShownAction>,
}

/// A card's state from its `alerts`/`anomalies` level (when it holds) and `supervision` row.
pub(crate) fn card_state(holding_level: Option<&str>, order: &str, appeal: &str) -> CardState {
    CardState {
        holds: holding_level.and_then(Level::parse),
        order: OrderState::parse(order),
        appeal: AppealState::parse(appeal),
    }
}

/// The order's and the appeal's state in words.
pub(crate) fn state_words(t: T, card: CardState) -> String {
    let order = card.order.map(|o| match o {
        OrderState::Ordered => t.s("督办待反馈", "ordered, awaiting response"),
        OrderState::Responded => t.s("督办已反馈", "ordered, responded"),
        OrderState::Closed => t.s("督办已办结", "order closed"),
        OrderState::Cancelled => t.s("督办已撤销", "order cancelled"),
    });
    let appeal = card.appeal.map(|a| match a {
        AppealState::Pending => t.s("申诉待审", "appeal pending"),
        AppealState::Granted => t.s("申诉成立，已作废", "appeal granted, annulled"),
        AppealState::Rejected => t.s("申诉驳回", "appeal rejected"),
    });
    [order, appeal]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(t.s("；", "; "))
}

/// The forms the viewer may use on a card.
pub(crate) fn shown_actions(v: &Viewer, kind: AnomalyKind, card: CardState) -> Vec<ShownAction> {
    actions_for(actor_role(v.user.role), kind, card)
        .into_iter()
        .map(|a| ShownAction {
            action: a.as_str(),
            label: action_label(v.t, a),
            days: matches!(a, Action::Order | Action::Reopen),
        })
        .collect()
}

/// A case's cards (every one that holds, and every one acted on) and its supervision rows.
pub(crate) async fn case_cards(
    c: &Console,
    v: &Viewer,
    case_id: &str,
) -> anyhow::Result<(Vec<ShownCard>, Vec<SupervisionRecord>)> {
    #[derive(Row, Deserialize)]
    struct Held {
        kind: String,
        level: String,
    }
    let held: Vec<Held> = c
        .client
        .query("SELECT kind, level FROM anomalies FINAL WHERE case_id = ? AND revoked = 0 ORDER BY kind")
        .bind(case_id)
        .fetch_all()
        .await?;
    let lines: Vec<SupervisionRecord> = c
        .client
        .query("SELECT ?fields FROM supervision FINAL WHERE case_id = ? ORDER BY kind")
        .bind(case_id)
        .fetch_all()
        .await?;
    let mut cards = Vec::new();
    for kind in AnomalyKind::ALL {
        let h = held.iter().find(|h| h.kind == kind.as_str());
        let line = lines.iter().find(|l| l.kind == kind.as_str());
        if h.is_none() && line.is_none() {
            continue;
        }
        let state = card_state(
            h.map(|h| h.level.as_str()),
            line.map_or("", |l| l.order_state.as_str()),
            line.map_or("", |l| l.appeal_state.as_str()),
        );
        cards.push(ShownCard {
            kind: kind.as_str().to_string(),
            kind_name: if v.t.en {
                kind.as_str()
            } else {
                kind.chinese()
            },
            level: h.map_or(String::new(), |h| h.level.clone()),
            holds: h.is_some(),
            state: state_words(v.t, state),
            actions: shown_actions(v, kind, state),
        });
    }
    Ok((cards, lines))
}

#[derive(Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    response_days: String,
}

/// A refusal of an action, with the reason shown.
fn refused(t: T, status: StatusCode, zh: &str, en: &str) -> Response {
    (status, Html(super::pages::message_page(t, t.s(zh, en)))).into_response()
}

/// `POST /case/{id}/action`: checks the session, the CSRF token, the case's scope, the role
/// and the card's state, produces the event, and goes to the case page, which follows it.
pub(crate) async fn act(
    State(c): State<std::sync::Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let v = match c.acting_viewer(&headers, &form.csrf) {
        Ok(v) => v,
        Err(refusal) => return refusal.into_response(),
    };
    match checked_event(&c, &v, &id, &form).await {
        Ok(Ok(event)) => match c.actions.send(&id, &event.payload).await {
            Ok(()) => {
                tracing::info!(user = %v.user.name, case = %id, action = %form.action, kind = %form.kind, event = %event.event_id, "console: action produced");
                let to = format!(
                    "/case/{}?pending={}#supervision",
                    super::pages::url_segment(&id),
                    event.event_id
                );
                Redirect::to(&to).into_response()
            }
            Err(e) => {
                tracing::warn!(error = %e, "console: an action could not be produced");
                refused(
                    v.t,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "提交失败（消息队列不可用），请稍后重试。",
                    "Not submitted (the broker is unavailable): try again later.",
                )
            }
        },
        Ok(Err(response)) => response,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "console: an action could not be checked");
            refused(
                v.t,
                StatusCode::SERVICE_UNAVAILABLE,
                "数据暂不可用（ClickHouse 无法访问），请稍后重试。",
                "Data unavailable (ClickHouse unreachable): try again later.",
            )
        }
    }
}

/// An event ready to produce.
struct ActionEvent {
    event_id: String,
    payload: String,
}

/// What a form asks for, once its fields are read.
struct Asked {
    action: Action,
    kind: AnomalyKind,
    note: String,
    /// Working days to respond (on `order` and `reopen`).
    days: Option<i64>,
}

/// The form's fields, or why they are refused (in Chinese and in English).
fn asked(form: &ActionForm) -> Result<Asked, (&'static str, &'static str)> {
    let (Some(action), Some(kind)) = (Action::parse(&form.action), AnomalyKind::parse(&form.kind))
    else {
        return Err(("请求无效。", "Invalid request."));
    };
    let note = form.note.trim().to_string();
    let needs_days = matches!(action, Action::Order | Action::Reopen);
    let days = form.response_days.trim().parse::<i64>().ok();
    if note.chars().count() > MAX_NOTE_CHARS
        || (needs_days && !days.is_some_and(|d| (1..=MAX_RESPONSE_DAYS).contains(&d)))
    {
        return Err((
            "说明最多 2000 字，反馈期限为 1–30 个工作日。",
            "A note has at most 2000 characters; a response deadline is 1–30 working days.",
        ));
    }
    Ok(Asked {
        action,
        kind,
        note,
        days: days.filter(|_| needs_days),
    })
}

/// The case an action is for, as far as the viewer may see it.
#[derive(Row, Deserialize)]
struct Target {
    center_id: String,
    window_id: String,
    department: String,
}

/// The event of a form, or the answer refusing it.
async fn checked_event(
    c: &Console,
    v: &Viewer,
    id: &str,
    form: &ActionForm,
) -> anyhow::Result<Result<ActionEvent, Response>> {
    let sql = format!(
        "SELECT center_id, window_id, department FROM cases FINAL WHERE case_id = ? AND {}",
        super::auth::Scope::SQL
    );
    let target: Option<Target> = v
        .scope
        .bind(c.client.query(&sql).bind(id))
        .fetch_optional()
        .await?;
    // Another window's case is exactly as absent as a case that does not exist.
    let Some(target) = target.filter(|f| v.scope.allows(&f.center_id, &f.window_id)) else {
        return Ok(Err(refused(
            v.t,
            StatusCode::NOT_FOUND,
            "未找到。",
            "Not found.",
        )));
    };
    let asked = match asked(form) {
        Ok(a) => a,
        Err((zh, en)) => return Ok(Err(refused(v.t, StatusCode::BAD_REQUEST, zh, en))),
    };
    let state = current_state(c, id, asked.kind).await?;
    let role = actor_role(v.user.role);
    if !allowed(role, asked.action, asked.kind, state) {
        return Ok(Err(refused(
            v.t,
            StatusCode::FORBIDDEN,
            "该操作不适用于此牌当前的状态或您的角色。",
            "This action does not fit the card's state or your role.",
        )));
    }
    Ok(Ok(action_event(v, role, id, &target, &asked)))
}

/// The `supervision` event of an action that fits, with a fresh random id.
fn action_event(
    v: &Viewer,
    role: ActorRole,
    id: &str,
    target: &Target,
    asked: &Asked,
) -> ActionEvent {
    let event_id = format!("sv-{}", super::auth::random_token());
    let mut event = serde_json::json!({
        "version": 1,
        "event_id": event_id,
        "case_id": id,
        "type": "supervision",
        "occurred_at": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "source": "supervision",
        "center_id": target.center_id,
        "action": asked.action.as_str(),
        "kind": asked.kind.as_str(),
        "actor": {"id": v.user.name, "role": role.as_str()},
        "note": asked.note,
    });
    if !target.window_id.is_empty() {
        event["window_id"] = target.window_id.clone().into();
    }
    if !target.department.is_empty() {
        event["department"] = target.department.clone().into();
    }
    if let Some(days) = asked.days {
        event["response_days"] = days.into();
    }
    ActionEvent {
        event_id,
        payload: event.to_string(),
    }
}

/// The (order, appeal) states of every card acted on among these cases, by (case, kind).
pub(crate) async fn supervision_states(
    c: &Console,
    cases: impl Iterator<Item = String>,
) -> anyhow::Result<std::collections::HashMap<(String, String), (String, String)>> {
    let mut ids: Vec<String> = cases.collect();
    // `[]` is Array(Nothing) on ClickHouse 18.16, which `has` refuses.
    ids.push(String::new());
    let rows: Vec<(String, String, String, String)> = c
        .client
        .query("SELECT case_id, kind, order_state, appeal_state FROM supervision FINAL WHERE has(?, case_id)")
        .bind(&ids)
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .map(|(case, kind, order, appeal)| ((case, kind), (order, appeal)))
        .collect())
}

/// A card's state as ClickHouse has it now.
async fn current_state(c: &Console, id: &str, kind: AnomalyKind) -> anyhow::Result<CardState> {
    let level: Option<String> = c
        .client
        .query("SELECT level FROM anomalies FINAL WHERE case_id = ? AND kind = ? AND revoked = 0")
        .bind(id)
        .bind(kind.as_str())
        .fetch_optional()
        .await?;
    #[derive(Row, Deserialize)]
    struct States {
        order_state: String,
        appeal_state: String,
    }
    let states: Option<States> = c
        .client
        .query("SELECT order_state, appeal_state FROM supervision FINAL WHERE case_id = ? AND kind = ?")
        .bind(id)
        .bind(kind.as_str())
        .fetch_optional()
        .await?;
    Ok(card_state(
        level.as_deref(),
        states.as_ref().map_or("", |s| s.order_state.as_str()),
        states.as_ref().map_or("", |s| s.appeal_state.as_str()),
    ))
}

/// Where a produced action stands, as the case page shows it.
pub(crate) enum Pending {
    /// Not applied yet: the page refreshes live until it is.
    Waiting(String),
    Applied(String),
    /// The consumer refused it (a dead letter) with this reason.
    Refused(String, String),
}

impl Pending {
    /// `waiting`, `applied` or `refused` (the page's element class).
    pub(crate) fn state(&self) -> &'static str {
        match self {
            Pending::Waiting(_) => "waiting",
            Pending::Applied(_) => "applied",
            Pending::Refused(..) => "refused",
        }
    }

    /// The action's event id.
    pub(crate) fn event_id(&self) -> &str {
        match self {
            Pending::Waiting(e) | Pending::Applied(e) | Pending::Refused(e, _) => e,
        }
    }

    /// The dead-letter reason of a refused action ('' otherwise).
    pub(crate) fn reason(&self) -> &str {
        match self {
            Pending::Refused(_, r) => r,
            _ => "",
        }
    }
}

/// Whether the action event `event_id` of case `id` was applied or refused. Applied means its
/// whole flush landed: its row in `events` and a checkpoint past it (a flush writes its data
/// tables side by side, and the checkpoint only after all of them).
pub(crate) async fn pending(c: &Console, id: &str, event_id: &str) -> anyhow::Result<Pending> {
    let stored: Option<(String, u32, u64)> = c
        .client
        .query("SELECT topic, partition, offset FROM events WHERE (topic, partition, offset) IN (SELECT topic, partition, arrayJoin(offsets) FROM case_event_offsets WHERE case_id = ?) AND event_id = ? LIMIT 1")
        .bind(id)
        .bind(event_id)
        .fetch_optional()
        .await?;
    if let Some((topic, partition, offset)) = stored {
        let checkpoint: u64 = c
            .client
            .query(
                "SELECT max(next_offset) FROM checkpoints FINAL WHERE topic = ? AND partition = ?",
            )
            .bind(&topic)
            .bind(partition)
            .fetch_one()
            .await?;
        if checkpoint > offset {
            return Ok(Pending::Applied(event_id.to_string()));
        }
        return Ok(Pending::Waiting(event_id.to_string()));
    }
    let reason: Option<String> = c
        .client
        .query("SELECT reason FROM dead_letters WHERE received_at >= now() - 86400 AND position(raw, ?) > 0 LIMIT 1")
        .bind(format!("\"event_id\":\"{event_id}\""))
        .fetch_optional()
        .await?;
    Ok(match reason {
        Some(r) => Pending::Refused(event_id.to_string(), r),
        None => Pending::Waiting(event_id.to_string()),
    })
}
