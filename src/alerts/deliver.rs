//! Delivery: per-webhook bounded queues and concurrency, retries with backoff and jitter,
//! every attempt recorded, revocations as follow-ups (see the module above for the design).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::clickhouse::Row;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};

use super::format::{render, render_digest, Context};
use crate::config::{Config, WebhookConfig, WebhookFormat};
use crate::core::engine::Calendars;
use crate::metrics::Metrics;
use crate::sinks::clickhouse::rows::AlertRecord;
use crate::sinks::clickhouse::ClickhouseWriter;

/// What one attempt's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Delivered,
    /// Try again: no answer, 5xx, 408, 429 or a robot's rate-limit code (after at least the
    /// given wait, when the receiver said how long).
    Retry(Option<Duration>),
    /// Retrying cannot help: a 3xx (redirects are not followed), another 4xx, or a robot's
    /// error code (bad signature, keyword mismatch, invalid token).
    Rejected,
}

/// A receiver's answer to one attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer<'a> {
    /// HTTP status (None: no answer at all).
    pub(crate) status: Option<u16>,
    pub(crate) retry_after: Option<&'a str>,
    /// The first bytes of the body (at most [`BODY_LIMIT`]).
    pub(crate) body: &'a [u8],
}

/// What an answer means, with the robot's code (0 when there is none) and a short note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Judged {
    pub(crate) verdict: Verdict,
    pub(crate) errcode: i64,
    pub(crate) note: String,
}

/// At most this much of a response body is read.
pub(crate) const BODY_LIMIT: usize = 4096;

/// The rate-limit window of the DingTalk and WeCom robots (20 messages a minute).
const ROBOT_WINDOW: Duration = Duration::from_secs(60);

/// Rate-limit codes: DingTalk's "send too fast", WeCom's "api freq out of limit".
const RATE_LIMIT_CODES: [i64; 2] = [130_101, 45_009];

/// Judges an answer the way the receiver defines delivery (SPEC §4): for the robots, HTTP 2xx
/// *and* `errcode` 0 in the JSON body. `Retry-After` is honoured up to `cap`.
pub(crate) fn classify(format: WebhookFormat, answer: Answer<'_>, cap: Duration) -> Judged {
    let after = answer
        .retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(cap));
    let judged = |verdict, errcode, note: &str| Judged {
        verdict,
        errcode,
        note: note.to_string(),
    };
    match answer.status {
        None => judged(Verdict::Retry(None), 0, ""),
        Some(200..=299) if format == WebhookFormat::Generic => judged(Verdict::Delivered, 0, ""),
        Some(200..=299) => robot_answer(answer.body, after, cap),
        Some(300..=399) => judged(Verdict::Rejected, 0, "redirect not followed"),
        Some(429) => judged(
            Verdict::Retry(Some(after.unwrap_or(ROBOT_WINDOW.min(cap)))),
            0,
            "",
        ),
        Some(408 | 500..=599) => judged(Verdict::Retry(after), 0, ""),
        Some(_) => judged(Verdict::Rejected, 0, ""),
    }
}

/// A DingTalk or WeCom 2xx: `{"errcode": 0, …}` is a delivery.
fn robot_answer(body: &[u8], after: Option<Duration>, cap: Duration) -> Judged {
    #[derive(serde::Deserialize)]
    struct RobotAnswer {
        errcode: Option<i64>,
        #[serde(default)]
        errmsg: String,
    }
    let Some((code, message)) = serde_json::from_slice::<RobotAnswer>(body)
        .ok()
        .and_then(|a| Some((a.errcode?, a.errmsg)))
    else {
        return Judged {
            verdict: Verdict::Retry(None),
            errcode: 0,
            note: "no errcode in the answer".into(),
        };
    };
    let verdict = match code {
        0 => Verdict::Delivered,
        c if RATE_LIMIT_CODES.contains(&c) => {
            Verdict::Retry(Some(after.unwrap_or(ROBOT_WINDOW.min(cap))))
        }
        _ => Verdict::Rejected,
    };
    let note = if code == 0 {
        String::new()
    } else {
        format!(
            "errcode {code}: {}",
            message.chars().take(200).collect::<String>()
        )
    };
    Judged {
        verdict,
        errcode: code,
        note,
    }
}

/// Reads at most `limit` bytes of a body (a receiver cannot make casewatch hold more).
async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match resp.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk[..chunk.len().min(limit - out.len())]),
            _ => break,
        }
    }
    out
}

/// The wait before attempt `attempt + 1`: exponential from 500 ms up to 60 s, with jitter
/// (`jitter` in [0, 1) picks between half and all of it), never shorter than `Retry-After`.
pub(crate) fn backoff(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let base = Duration::from_millis(500)
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(Duration::from_secs(60));
    let jittered = base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    retry_after.map_or(jittered, |r| r.max(jittered.min(r)))
}

/// `alert_deliveries`: one row per attempt.
#[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct DeliveryRecord {
    pub(crate) alert_id: String,
    pub(crate) webhook: String,
    pub(crate) revocation: u8,
    pub(crate) attempt: u32,
    /// `delivered`, `retry`, `rejected`, `exhausted` or `given_up`.
    pub(crate) outcome: String,
    pub(crate) http_status: u16,
    pub(crate) error: String,
    pub(crate) attempted_at: u32,
    /// The robot's `errcode` (0: none, or not a robot).
    pub(crate) errcode: i64,
    /// The alert's round (SPEC §4).
    pub(crate) round: u32,
}

impl crate::sinks::clickhouse::writer::MonthPartitioned for DeliveryRecord {}

/// One message to send.
struct Job {
    alert: AlertRecord,
    revocation: bool,
    /// Set when the alert is revoked: a raise not yet attempted is dropped.
    cancel: Arc<AtomicBool>,
}

/// How a job ended, reported back to the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Delivered,
    /// Rejected by the receiver: final.
    Failed,
    /// The attempts ran out: due again after `alerts.long_backoff_secs`.
    Exhausted,
    Cancelled,
}

struct Done {
    alert_id: String,
    webhook: String,
    round: u32,
    revocation: bool,
    ended: Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    None,
    InFlight,
    Delivered,
    /// Rejected, or given up after `alerts.give_up_hours`: final.
    Failed,
    /// The attempts ran out; the outbox scan makes it due again after the long backoff.
    Exhausted,
}

/// Delivery state of one (alert, webhook): the round being delivered and its two messages.
struct Track {
    /// The newest row of the alert (its round may be ahead of `round`).
    alert: AlertRecord,
    round: u32,
    raise: Phase,
    revoke: Phase,
    cancel: Arc<AtomicBool>,
}

impl Track {
    /// A later round starts once nothing of the current one is in flight: its raise is sent
    /// after the current round's revocation (SPEC §4, "Rounds").
    fn advance_round(&mut self) {
        let busy = self.raise == Phase::InFlight || self.revoke == Phase::InFlight;
        if self.alert.round > self.round && !busy {
            self.round = self.alert.round;
            self.raise = Phase::None;
            self.revoke = Phase::None;
            self.cancel = Arc::new(AtomicBool::new(false));
        }
    }
}

enum Input {
    Alerts(Vec<AlertRecord>),
    /// Scan the outbox for these (topic, partition)s.
    Rescan(Vec<(String, u32)>),
}

/// Everything a delivery needs besides the job.
struct Sender {
    hook: WebhookConfig,
    http: reqwest::Client,
    cfg: Arc<Config>,
    calendars: Calendars,
    metrics: Arc<Metrics>,
    records: mpsc::UnboundedSender<DeliveryRecord>,
    started_at: i64,
}

impl Sender {
    /// Sends one message — one job alone, or several as a digest — until it is delivered,
    /// rejected or exhausted; raises revoked meanwhile are dropped (cancelled). With a rate
    /// window, every attempt waits for a free slot. Returns how each job ended.
    async fn deliver(
        &self,
        mut jobs: Vec<Job>,
        mut window: Option<&mut RateWindow>,
    ) -> Vec<(Job, Ended)> {
        let mut ended = Vec::new();
        for attempt in 1..=self.hook.max_attempts {
            let (live, cancelled): (Vec<Job>, Vec<Job>) = jobs
                .into_iter()
                .partition(|j| j.revocation || !j.cancel.load(Ordering::Relaxed));
            ended.extend(cancelled.into_iter().map(|j| (j, Ended::Cancelled)));
            jobs = live;
            if jobs.is_empty() {
                return ended;
            }
            if let Some(w) = window.as_deref_mut() {
                w.acquire().await;
            }
            let (judged, http_status, error) = self.attempt(&jobs).await;
            let last = attempt == self.hook.max_attempts;
            let outcome = match judged.verdict {
                Verdict::Delivered => "delivered",
                Verdict::Rejected => "rejected",
                Verdict::Retry(_) if last => "exhausted",
                Verdict::Retry(_) => "retry",
            };
            self.record(&jobs, attempt, outcome, http_status, &error, judged.errcode);
            let end = match judged.verdict {
                Verdict::Delivered => {
                    jobs.iter().for_each(|j| self.observe_latency(j));
                    Ended::Delivered
                }
                Verdict::Rejected => {
                    tracing::warn!(webhook = %self.hook.name, alerts = jobs.len(), http_status, errcode = judged.errcode, "webhook rejected the message; not retried");
                    Ended::Failed
                }
                Verdict::Retry(_) if last => {
                    tracing::warn!(webhook = %self.hook.name, alerts = jobs.len(), attempts = attempt, "webhook attempts exhausted; the alerts stay due and are tried again after the long backoff");
                    Ended::Exhausted
                }
                Verdict::Retry(after) => {
                    tokio::time::sleep(backoff(attempt, after, rand::random::<f64>())).await;
                    continue;
                }
            };
            ended.extend(jobs.into_iter().map(|j| (j, end)));
            return ended;
        }
        ended
    }

    /// One POST of the message and how the receiver answered: the judgement, the HTTP status
    /// (0: none) and the text to record.
    async fn attempt(&self, jobs: &[Job]) -> (Judged, u16, String) {
        let now_millis = chrono::Utc::now().timestamp_millis();
        let names: Vec<String> = jobs
            .iter()
            .map(|j| self.cfg.window_name(&j.alert.window_id))
            .collect();
        let calendars: Vec<_> = jobs
            .iter()
            .map(|j| self.calendars.get(&j.alert.center_id).clone())
            .collect();
        let ctxs: Vec<Context<'_>> = jobs
            .iter()
            .zip(&names)
            .zip(&calendars)
            .map(|((j, window_name), calendar)| Context {
                alert: &j.alert,
                revocation: j.revocation,
                window_name,
                calendar,
                now_millis,
            })
            .collect();
        let (url, secret) = (&self.hook.url, self.hook.secret.expose());
        let msg = match ctxs.as_slice() {
            [one] => render(self.hook.format, url, secret, one),
            many => render_digest(self.hook.format, url, secret, many, now_millis),
        };
        let mut request = self
            .http
            .post(&msg.url)
            .timeout(Duration::from_millis(self.hook.timeout_ms))
            .body(msg.body);
        for (k, v) in &msg.headers {
            request = request.header(k, v);
        }
        let (status, retry_after, body, error) = match request.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = read_capped(resp, BODY_LIMIT).await;
                (Some(status), retry_after, body, String::new())
            }
            // The error text may hold the URL (with a DingTalk token): keep the kind only.
            Err(e) => (None, None, Vec::new(), error_kind(&e)),
        };
        let judged = classify(
            self.hook.format,
            Answer {
                status,
                retry_after: retry_after.as_deref(),
                body: &body,
            },
            Duration::from_secs(self.cfg.alerts.retry_after_cap_secs),
        );
        let error = match (error.is_empty(), judged.note.is_empty()) {
            (false, _) => error,
            (true, false) => judged.note.clone(),
            (true, true) if judged.verdict == Verdict::Delivered => String::new(),
            (true, true) => String::from_utf8_lossy(&body).chars().take(500).collect(),
        };
        (judged, status.unwrap_or(0), error)
    }

    /// One `alert_deliveries` row per alert of the message.
    fn record(
        &self,
        jobs: &[Job],
        attempt: u32,
        outcome: &str,
        http_status: u16,
        error: &str,
        errcode: i64,
    ) {
        let at = chrono::Utc::now().timestamp().clamp(0, i64::from(u32::MAX)) as u32;
        for job in jobs {
            self.metrics.delivery(&self.hook.name, outcome);
            let _ = self.records.send(DeliveryRecord {
                alert_id: job.alert.alert_id.clone(),
                webhook: self.hook.name.clone(),
                revocation: u8::from(job.revocation),
                attempt,
                outcome: outcome.to_string(),
                http_status,
                error: error.to_string(),
                attempted_at: at,
                errcode,
                round: job.alert.round,
            });
        }
    }

    /// From the triggering instant (detection or revocation) to a delivered answer.
    fn observe_latency(&self, job: &Job) {
        let since = if job.revocation {
            job.alert.revoked_at.unwrap_or(job.alert.detected_at)
        } else {
            job.alert.detected_at
        };
        if i64::from(since) >= self.started_at {
            let seconds =
                (chrono::Utc::now().timestamp_millis() - i64::from(since) * 1000) as f64 / 1000.0;
            self.metrics.delivery_latency.observe(seconds.max(0.0));
        }
    }
}

/// The messages sent to a rate-limited webhook in the last minute.
struct RateWindow {
    limit: usize,
    sent: std::collections::VecDeque<tokio::time::Instant>,
}

impl RateWindow {
    const SPAN: Duration = Duration::from_secs(60);

    fn new(limit: u32) -> Self {
        Self {
            limit: limit as usize,
            sent: std::collections::VecDeque::new(),
        }
    }

    /// Messages that may go out now.
    fn free(&mut self) -> usize {
        let now = tokio::time::Instant::now();
        while self
            .sent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= Self::SPAN)
        {
            self.sent.pop_front();
        }
        self.limit.saturating_sub(self.sent.len())
    }

    /// Waits for a free slot and takes it.
    async fn acquire(&mut self) {
        while self.free() == 0 {
            let oldest = *self.sent.front().expect("a full window has entries");
            tokio::time::sleep_until(oldest + Self::SPAN).await;
        }
        self.sent.push_back(tokio::time::Instant::now());
    }
}

/// The messages for `due` alerts when `free` slots are left this minute: one each when they
/// fit, else digests of at most `digest_max`, red ones first.
fn plan_messages(mut due: Vec<Job>, free: usize, digest_max: usize) -> Vec<Vec<Job>> {
    if due.len() <= free {
        return due.into_iter().map(|j| vec![j]).collect();
    }
    let level = |j: &Job| crate::core::rules::Level::parse(&j.alert.level);
    due.sort_by_key(|j| std::cmp::Reverse(level(j)));
    let mut messages = Vec::new();
    let mut rest = due.into_iter().peekable();
    while rest.peek().is_some() {
        messages.push(rest.by_ref().take(digest_max.max(1)).collect());
    }
    messages
}

/// The webhook client: redirects are not followed (a 3xx is a permanent failure: a redirect
/// would turn the POST into a GET and could point anywhere).
fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

fn error_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "network".into()
    }
}

/// The handle the consumer talks to; cheap to clone.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    input: mpsc::UnboundedSender<Input>,
    /// Inputs not yet handled plus jobs not yet ended.
    busy: Arc<AtomicUsize>,
}

impl Dispatcher {
    /// Hands over alert rows that are durable in ClickHouse.
    pub(crate) fn alerts(&self, rows: Vec<AlertRecord>) {
        if !rows.is_empty() {
            self.busy.fetch_add(1, Ordering::SeqCst);
            if self.input.send(Input::Alerts(rows)).is_err() {
                self.busy.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Asks for an outbox scan of these partitions.
    pub(crate) fn rescan(&self, partitions: Vec<(String, u32)>) {
        if !partitions.is_empty() {
            self.busy.fetch_add(1, Ordering::SeqCst);
            if self.input.send(Input::Rescan(partitions)).is_err() {
                self.busy.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Nothing waiting, nothing in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.busy.load(Ordering::SeqCst) == 0
    }

    /// Starts the dispatcher, its webhook workers and the `alert_deliveries` writer on the
    /// current tokio runtime.
    pub(crate) fn start(
        cfg: Arc<Config>,
        client: ::clickhouse::Client,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let calendars = cfg.calendars()?;
        let http = http_client()?;
        let (input_tx, input_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (records_tx, records_rx) = mpsc::unbounded_channel();
        let busy = Arc::new(AtomicUsize::new(0));
        let writer = ClickhouseWriter::new(client.clone());
        tokio::spawn(write_records(writer, records_rx));
        let started_at = chrono::Utc::now().timestamp();
        let mut queues = HashMap::new();
        for hook in &cfg.alerts.webhooks {
            let (tx, rx) = mpsc::channel::<Job>(hook.queue);
            let sender = Arc::new(Sender {
                hook: hook.clone(),
                http: http.clone(),
                cfg: cfg.clone(),
                calendars: calendars.clone(),
                metrics: metrics.clone(),
                records: records_tx.clone(),
                started_at,
            });
            tokio::spawn(run_webhook(sender, rx, done_tx.clone()));
            queues.insert(hook.name.clone(), tx);
        }
        let state = State {
            cfg,
            client,
            metrics,
            records: records_tx,
            marks: HashMap::new(),
            queues,
            tracks: HashMap::new(),
            at_rest: HashMap::new(),
            busy: busy.clone(),
        };
        tokio::spawn(state.run(input_rx, done_rx));
        Ok(Self {
            input: input_tx,
            busy,
        })
    }
}

/// A webhook's worker: without a rate limit, up to `concurrency` single messages at once;
/// with one, messages one after the other within the limit, as digests when more alerts are
/// due than it lets through in the next minute.
async fn run_webhook(
    sender: Arc<Sender>,
    jobs: mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Done>,
) {
    match sender.hook.rate_limit() {
        None => run_unlimited(sender, jobs, done).await,
        Some(limit) => run_limited(sender, jobs, done, limit).await,
    }
}

fn report(done: &mpsc::UnboundedSender<Done>, hook: &str, ended: Vec<(Job, Ended)>) {
    for (job, ended) in ended {
        let _ = done.send(Done {
            alert_id: job.alert.alert_id,
            webhook: hook.to_string(),
            round: job.alert.round,
            revocation: job.revocation,
            ended,
        });
    }
}

async fn run_unlimited(
    sender: Arc<Sender>,
    mut jobs: mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Done>,
) {
    let permits = Arc::new(Semaphore::new(sender.hook.concurrency));
    while let Some(job) = jobs.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (sender, done) = (sender.clone(), done.clone());
        tokio::spawn(async move {
            let ended = sender.deliver(vec![job], None).await;
            drop(permit);
            report(&done, &sender.hook.name, ended);
        });
    }
}

/// How long a rate-limited worker waits for more alerts after the first of a burst (the
/// consumer hands over a flush's alerts at once).
const GATHER: Duration = Duration::from_millis(200);

async fn run_limited(
    sender: Arc<Sender>,
    mut jobs: mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Done>,
    limit: u32,
) {
    let mut window = RateWindow::new(limit);
    while let Some(first) = jobs.recv().await {
        let mut due = vec![first];
        tokio::time::sleep(GATHER).await;
        while let Ok(job) = jobs.try_recv() {
            due.push(job);
        }
        for message in plan_messages(due, window.free(), sender.hook.digest_max) {
            let ended = sender.deliver(message, Some(&mut window)).await;
            report(&done, &sender.hook.name, ended);
        }
    }
}

/// Writes delivery records in small batches, retrying until ClickHouse takes them.
async fn write_records(writer: ClickhouseWriter, mut rx: mpsc::UnboundedReceiver<DeliveryRecord>) {
    while let Some(first) = rx.recv().await {
        let mut rows = vec![first];
        tokio::time::sleep(Duration::from_millis(100)).await;
        while let Ok(r) = rx.try_recv() {
            rows.push(r);
        }
        if let Err(e) = writer.insert_all("alert_deliveries", &rows).await {
            tracing::error!(error = %e, "cannot record alert deliveries");
        }
    }
}

/// `outbox_marks`: a partition's alerts up to this version are settled.
#[derive(Debug, Row, Serialize, Deserialize)]
struct OutboxMark {
    topic: String,
    partition: u32,
    settled_version: u64,
    version: u64,
}

impl crate::sinks::clickhouse::writer::MonthPartitioned for OutboxMark {}

/// What `alert_deliveries` says: (alert, webhook, round, revocation) → phase.
type Known = HashMap<(String, String, u32, u8), Phase>;

/// What `alert_deliveries` says of one (alert, webhook, round, revocation).
#[derive(Debug, Row, Deserialize)]
struct Recorded {
    alert_id: String,
    webhook: String,
    round: u32,
    revocation: u8,
    delivered: u8,
    failed: u8,
    /// The last `exhausted` attempt (0: none).
    exhausted_at: u32,
    first_at: u32,
}

struct State {
    cfg: Arc<Config>,
    client: ::clickhouse::Client,
    metrics: Arc<Metrics>,
    records: mpsc::UnboundedSender<DeliveryRecord>,
    /// Per (topic, partition): the alert version up to which everything is settled.
    marks: HashMap<(String, u32), u64>,
    queues: HashMap<String, mpsc::Sender<Job>>,
    /// Tracks with a job queued or running, with their alert rows.
    tracks: HashMap<(String, String), Track>,
    /// Outcomes of tracks with nothing in flight, by [`rest_key`]: 8 bytes of key, the round
    /// and 2 of phases instead of a whole alert row, so months of alerts do not pile up.
    at_rest: HashMap<u64, (u32, Phase, Phase)>,
    busy: Arc<AtomicUsize>,
}

/// The key of an (alert, webhook) at rest: a stable 64-bit hash (a collision among a few
/// million pairs has a probability of about 10^-7).
fn rest_key((alert_id, hook): &(String, String)) -> u64 {
    let mut bytes = Vec::with_capacity(alert_id.len() + hook.len() + 1);
    bytes.extend_from_slice(alert_id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(hook.as_bytes());
    crate::core::case::stable_hash(&bytes)
}

impl State {
    async fn run(
        mut self,
        mut input: mpsc::UnboundedReceiver<Input>,
        mut done: mpsc::UnboundedReceiver<Done>,
    ) {
        loop {
            tokio::select! {
                Some(i) = input.recv() => {
                    match i {
                        Input::Alerts(rows) => {
                            for a in rows {
                                self.update(&a, None);
                            }
                        }
                        Input::Rescan(partitions) => {
                            if let Err(e) = self.rescan(&partitions).await {
                                tracing::warn!(error = %e, "cannot scan the alert outbox; the next scan retries");
                            }
                        }
                    }
                    self.busy.fetch_sub(1, Ordering::SeqCst);
                }
                Some(d) = done.recv() => {
                    self.ended(d);
                    self.busy.fetch_sub(1, Ordering::SeqCst);
                }
                else => return,
            }
        }
    }

    /// A new state of an alert (`known`: final outcomes already recorded, from a scan).
    fn update(&mut self, alert: &AlertRecord, known: Option<&Known>) {
        let hooks: Vec<String> = super::route(&self.cfg.alerts, alert)
            .into_iter()
            .map(str::to_string)
            .collect();
        for hook in hooks {
            let key = (alert.alert_id.clone(), hook.clone());
            let at_rest = &mut self.at_rest;
            let track = self.tracks.entry(key.clone()).or_insert_with(|| {
                let (round, raise, revoke) = at_rest.remove(&rest_key(&key)).unwrap_or((
                    alert.round,
                    Phase::None,
                    Phase::None,
                ));
                Track {
                    alert: alert.clone(),
                    round,
                    raise,
                    revoke,
                    cancel: Arc::new(AtomicBool::new(false)),
                }
            });
            if alert.round >= track.alert.round {
                track.alert = alert.clone();
            }
            track.advance_round();
            // Recorded outcomes win over what this process believes is still to do (and
            // decide when an exhausted alert is due again).
            if let Some(known) = known {
                let round = track.round;
                for (revocation, phase) in [(0u8, &mut track.raise), (1u8, &mut track.revoke)] {
                    if matches!(*phase, Phase::None | Phase::Exhausted) {
                        let k = (alert.alert_id.clone(), hook.clone(), round, revocation);
                        if let Some(p) = known.get(&k) {
                            *phase = *p;
                        }
                    }
                }
            }
            if track.alert.revoked == 1 && track.alert.round == track.round {
                track.cancel.store(true, Ordering::Relaxed);
            }
            self.step(&key);
            self.settle(&key);
        }
    }

    /// Moves a track with nothing in flight to `at_rest` (or forgets it when nothing was
    /// ever decided: the outbox scan brings such an alert back).
    fn settle(&mut self, key: &(String, String)) {
        let Some(track) = self.tracks.get(key) else {
            return;
        };
        if track.raise == Phase::InFlight || track.revoke == Phase::InFlight {
            return;
        }
        let phases = (track.round, track.raise, track.revoke);
        self.tracks.remove(key);
        if (phases.1, phases.2) != (Phase::None, Phase::None) {
            self.at_rest.insert(rest_key(key), phases);
        }
    }

    /// Enqueues what a track needs next, if anything.
    fn step(&mut self, key: &(String, String)) {
        let Some(track) = self.tracks.get_mut(key) else {
            return;
        };
        if track.alert.round != track.round {
            return; // a later round waits for the current one's message in flight
        }
        let revoked = track.alert.revoked == 1;
        let revocation = if !revoked && track.raise == Phase::None {
            false
        } else if revoked && track.raise == Phase::Delivered && track.revoke == Phase::None {
            true
        } else {
            return;
        };
        let Some(queue) = self.queues.get(&key.1) else {
            return;
        };
        if !revocation {
            track.cancel = Arc::new(AtomicBool::new(false));
        }
        let job = Job {
            alert: track.alert.clone(),
            revocation,
            cancel: track.cancel.clone(),
        };
        // A full queue (a slow receiver) leaves the alert in the outbox for the next scan.
        if queue.try_send(job).is_ok() {
            self.busy.fetch_add(1, Ordering::SeqCst);
            if revocation {
                track.revoke = Phase::InFlight;
            } else {
                track.raise = Phase::InFlight;
                self.metrics
                    .alert_raised(&track.alert.kind, &track.alert.level);
            }
        }
    }

    fn ended(&mut self, d: Done) {
        let key = (d.alert_id, d.webhook);
        if let Some(track) = self.tracks.get_mut(&key).filter(|t| t.round == d.round) {
            let phase = match d.ended {
                Ended::Delivered => Phase::Delivered,
                Ended::Failed => Phase::Failed,
                Ended::Exhausted => Phase::Exhausted,
                Ended::Cancelled => Phase::None,
            };
            if d.revocation {
                track.revoke = phase;
            } else {
                track.raise = phase;
            }
            track.advance_round();
        }
        self.step(&key);
        self.settle(&key);
    }

    /// The phase each recorded (alert, webhook, revocation) of a partition is in: delivered;
    /// failed (rejected or given up); exhausted and waiting for the long backoff; or due again
    /// (`None`). An exhausted one past `give_up_hours` since its first attempt is recorded as
    /// given up here.
    async fn recorded_phases(
        &mut self,
        topic: &str,
        partition: u32,
        mark: u64,
    ) -> Result<Known, ::clickhouse::error::Error> {
        let rows: Vec<Recorded> = self
            .client
            .query(
                "SELECT alert_id, webhook, round, revocation, max(outcome = 'delivered') AS delivered, \
                 max(outcome IN ('rejected', 'given_up')) AS failed, \
                 maxIf(attempted_at, outcome = 'exhausted') AS exhausted_at, \
                 min(attempted_at) AS first_at FROM alert_deliveries \
                 WHERE outcome != 'retry' AND alert_id IN \
                 (SELECT alert_id FROM alerts WHERE topic = ? AND partition = ? AND version > ?) \
                 GROUP BY alert_id, webhook, round, revocation",
            )
            .bind(topic)
            .bind(partition)
            .bind(mark)
            .fetch_all()
            .await?;
        let now = chrono::Utc::now().timestamp();
        let alerts = &self.cfg.alerts;
        let mut known = HashMap::new();
        for r in rows {
            let phase = if r.delivered == 1 {
                Phase::Delivered
            } else if r.failed == 1 {
                Phase::Failed
            } else if now >= i64::from(r.first_at) + alerts.give_up_hours as i64 * 3600 {
                // Recorded once: this process may have given up before the row landed.
                if self.known_phase(&r) != Some(Phase::Failed) {
                    self.give_up(&r, now);
                }
                Phase::Failed
            } else if now >= i64::from(r.exhausted_at) + alerts.long_backoff_secs as i64 {
                Phase::None // due again
            } else {
                Phase::Exhausted
            };
            known.insert((r.alert_id, r.webhook, r.round, r.revocation), phase);
        }
        Ok(known)
    }

    /// What this process knows of an (alert, webhook, revocation).
    fn known_phase(&self, r: &Recorded) -> Option<Phase> {
        let key = (r.alert_id.clone(), r.webhook.clone());
        let (round, raise, revoke) = match self.tracks.get(&key) {
            Some(t) => (t.round, t.raise, t.revoke),
            None => *self.at_rest.get(&rest_key(&key))?,
        };
        (round == r.round).then_some(if r.revocation == 1 { revoke } else { raise })
    }

    /// Records that an alert was never delivered within `give_up_hours`.
    fn give_up(&self, r: &Recorded, now: i64) {
        tracing::warn!(alert = %r.alert_id, webhook = %r.webhook, "no delivery within give_up_hours: given up");
        self.metrics.delivery(&r.webhook, "given_up");
        let _ = self.records.send(DeliveryRecord {
            alert_id: r.alert_id.clone(),
            webhook: r.webhook.clone(),
            revocation: r.revocation,
            attempt: 0,
            outcome: "given_up".into(),
            http_status: 0,
            error: format!(
                "not delivered within {} hours",
                self.cfg.alerts.give_up_hours
            ),
            attempted_at: now.clamp(0, i64::from(u32::MAX)) as u32,
            errcode: 0,
            round: r.round,
        });
    }

    /// Loads the outbox of some partitions and the final outcomes recorded so far.
    async fn rescan(
        &mut self,
        partitions: &[(String, u32)],
    ) -> Result<(), ::clickhouse::error::Error> {
        for (topic, partition) in partitions {
            let mark = self.mark(topic, *partition).await?;
            let known = self.recorded_phases(topic, *partition, mark).await?;
            let alerts: Vec<AlertRecord> = self
                .client
                .query("SELECT ?fields FROM alerts FINAL WHERE topic = ? AND partition = ? AND version > ?")
                .bind(topic)
                .bind(*partition)
                .bind(mark)
                .fetch_all()
                .await?;
            // Every alert below the lowest unsettled one is settled: the next scan starts there.
            let mut next = alerts.iter().map(|a| a.version).max().unwrap_or(mark);
            for a in &alerts {
                self.update(a, Some(&known));
                if !self.settled(a) {
                    next = next.min(a.version.saturating_sub(1));
                }
            }
            if next > mark {
                self.set_mark(topic, *partition, next).await;
            }
        }
        Ok(())
    }

    /// The version up to which a partition's alerts are settled (0: none recorded yet).
    async fn mark(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<u64, ::clickhouse::error::Error> {
        if let Some(&m) = self.marks.get(&(topic.to_string(), partition)) {
            return Ok(m);
        }
        let m: Option<u64> = self
            .client
            .query(
                "SELECT settled_version FROM outbox_marks FINAL WHERE topic = ? AND partition = ?",
            )
            .bind(topic)
            .bind(partition)
            .fetch_optional()
            .await?;
        let m = m.unwrap_or(0);
        self.marks.insert((topic.to_string(), partition), m);
        Ok(m)
    }

    /// Records a partition's new mark (a failed write is retried by the next scan).
    async fn set_mark(&mut self, topic: &str, partition: u32, settled_version: u64) {
        let row = OutboxMark {
            topic: topic.to_string(),
            partition,
            settled_version,
            version: crate::pipeline::VERSIONS.next(),
        };
        let writer = ClickhouseWriter::new(self.client.clone()).with_max_attempts(3);
        match writer.insert_all("outbox_marks", &[row]).await {
            Ok(()) => {
                self.marks
                    .insert((topic.to_string(), partition), settled_version);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the outbox mark; the next scan retries")
            }
        }
    }

    /// Whether nothing is left to send for an alert, on any webhook it is routed to: its
    /// current round's raise delivered or failed (and, once revoked, its revocation too), or
    /// revoked before its raise was ever sent.
    fn settled(&self, alert: &AlertRecord) -> bool {
        let done = |p: Phase| matches!(p, Phase::Delivered | Phase::Failed);
        super::route(&self.cfg.alerts, alert)
            .into_iter()
            .all(|hook| {
                let key = (alert.alert_id.clone(), hook.to_string());
                let (round, raise, revoke) = match self.tracks.get(&key) {
                    Some(t) => (t.round, t.raise, t.revoke),
                    None => match self.at_rest.get(&rest_key(&key)) {
                        Some(&phases) => phases,
                        None => (alert.round, Phase::None, Phase::None),
                    },
                };
                if round != alert.round {
                    return false;
                }
                match (alert.revoked == 1, raise) {
                    (false, r) => done(r),
                    // Revoked: a raise never delivered is not sent any more.
                    (true, Phase::Delivered) => done(revoke),
                    (true, r) => r != Phase::InFlight,
                }
            })
    }
}

/// `casewatch alerts test --webhook NAME`: sends a sample alert and records the attempts.
pub(crate) async fn send_test(
    cfg: Arc<Config>,
    client: ::clickhouse::Client,
    webhook: &str,
) -> anyhow::Result<bool> {
    let hook = cfg
        .alerts
        .webhooks
        .iter()
        .find(|w| w.name == webhook)
        .ok_or_else(|| anyhow::anyhow!("no webhook named {webhook:?} in alerts.webhooks"))?
        .clone();
    let now = chrono::Utc::now().timestamp();
    let window = cfg.windows.first();
    let alert = AlertRecord {
        alert_id: format!("test-{}", chrono::Utc::now().timestamp_millis()),
        case_id: "TEST-0001".into(),
        kind: "overdue".into(),
        level: "yellow".into(),
        center_id: window.map_or("C001".into(), |w| w.center.clone()),
        window_id: window.map_or("W01".into(), |w| w.id.clone()),
        department: window.map_or(String::new(), |w| w.department.clone()),
        item_code: "TEST".into(),
        item_name: "测试事项（casewatch 告警测试，请忽略）".into(),
        accepted_at: Some((now - 8 * 86_400) as u32),
        promised_deadline: Some((now - 86_400) as u32),
        legal_deadline: None,
        detected_at: (now - 86_400) as u32,
        revoked: 0,
        revoked_at: None,
        topic: String::new(),
        partition: 0,
        version: 0,
        calendar_provisional: 0,
        round: 1,
        annulled: 0,
    };
    let (records_tx, mut records_rx) = mpsc::unbounded_channel();
    let sender = Sender {
        hook,
        http: http_client()?,
        calendars: cfg.calendars()?,
        cfg: cfg.clone(),
        metrics: Arc::new(Metrics::default()),
        records: records_tx,
        started_at: now,
    };
    let job = Job {
        alert,
        revocation: false,
        cancel: Arc::new(AtomicBool::new(false)),
    };
    let ended = sender
        .deliver(vec![job], None)
        .await
        .first()
        .map_or(Ended::Cancelled, |e| e.1);
    drop(sender);
    let mut rows = Vec::new();
    while let Some(r) = records_rx.recv().await {
        println!(
            "attempt {}: {} (HTTP {}){}",
            r.attempt,
            r.outcome,
            r.http_status,
            if r.error.is_empty() {
                String::new()
            } else {
                format!(": {}", r.error)
            }
        );
        rows.push(r);
    }
    let writer = ClickhouseWriter::new(client).with_max_attempts(3);
    if let Err(e) = writer.insert_all("alert_deliveries", &rows).await {
        eprintln!("warning: attempts not recorded in clickhouse: {e}");
    }
    Ok(ended == Ended::Delivered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteConfig;

    fn alert(revoked: u8) -> AlertRecord {
        AlertRecord {
            revoked,
            ..crate::alerts::tests::alert("yellow", "overdue", "W01")
        }
    }

    /// A dispatcher state routing every alert to the webhook `chief`, and that webhook's queue.
    fn chief_state() -> (State, mpsc::Receiver<Job>) {
        let mut cfg = Config::load(None, &HashMap::new()).unwrap();
        cfg.alerts.routes = vec![RouteConfig {
            levels: vec![],
            kinds: vec![],
            centers: vec![],
            windows: vec![],
            webhooks: vec!["chief".into()],
        }];
        let (tx, jobs) = mpsc::channel::<Job>(8);
        let state = State {
            cfg: Arc::new(cfg),
            client: ::clickhouse::Client::default(),
            metrics: Arc::new(Metrics::default()),
            records: mpsc::unbounded_channel().0,
            marks: HashMap::new(),
            queues: HashMap::from([("chief".to_string(), tx)]),
            tracks: HashMap::new(),
            at_rest: HashMap::new(),
            busy: Arc::new(AtomicUsize::new(0)),
        };
        (state, jobs)
    }

    fn done(revocation: bool) -> Done {
        Done {
            alert_id: "00000000deadbeef".into(),
            webhook: "chief".into(),
            round: 1,
            revocation,
            ended: Ended::Delivered,
        }
    }

    /// A delivered alert keeps only its outcome (no row), is not sent again when its row comes
    /// back, and its revocation is still sent once.
    #[test]
    fn settled_alerts_keep_their_outcome_but_not_their_row() {
        let (mut state, mut jobs) = chief_state();

        state.update(&alert(0), None);
        assert!(!jobs.try_recv().unwrap().revocation);
        assert_eq!((state.tracks.len(), state.at_rest.len()), (1, 0));
        state.ended(done(false));
        assert_eq!((state.tracks.len(), state.at_rest.len()), (0, 1));

        state.update(&alert(0), None);
        assert!(
            jobs.try_recv().is_err(),
            "a delivered alert was queued again"
        );
        assert_eq!((state.tracks.len(), state.at_rest.len()), (0, 1));

        state.update(&alert(1), None);
        assert!(jobs.try_recv().unwrap().revocation);
        state.ended(done(true));
        state.update(&alert(1), None);
        assert!(jobs.try_recv().is_err(), "a revocation was queued twice");
        assert_eq!((state.tracks.len(), state.at_rest.len()), (0, 1));
        assert_eq!(
            state.at_rest.values().next(),
            Some(&(1, Phase::Delivered, Phase::Delivered))
        );
    }

    /// Exhausted attempts do not end an alert: it waits while the outbox scan says so, and is
    /// queued again once the scan finds it due.
    #[test]
    fn an_exhausted_alert_is_queued_again_when_the_scan_finds_it_due() {
        let (mut state, mut jobs) = chief_state();
        state.update(&alert(0), None);
        assert!(jobs.try_recv().is_ok());
        state.ended(Done {
            ended: Ended::Exhausted,
            ..done(false)
        });
        let key = (
            "00000000deadbeef".to_string(),
            "chief".to_string(),
            1u32,
            0u8,
        );
        // The scan says: still within the long backoff.
        state.update(
            &alert(0),
            Some(&HashMap::from([(key.clone(), Phase::Exhausted)])),
        );
        assert!(jobs.try_recv().is_err(), "queued before the long backoff");
        // The scan says: due again.
        state.update(
            &alert(0),
            Some(&HashMap::from([(key.clone(), Phase::None)])),
        );
        assert!(!jobs.try_recv().unwrap().revocation);
        // Given up: final.
        state.ended(Done {
            ended: Ended::Exhausted,
            ..done(false)
        });
        state.update(&alert(0), Some(&HashMap::from([(key, Phase::Failed)])));
        state.update(&alert(0), None);
        assert!(
            jobs.try_recv().is_err(),
            "a given-up alert was queued again"
        );
    }

    fn job(level: &str, id: &str) -> Job {
        let mut a = alert(0);
        a.level = level.into();
        a.alert_id = id.into();
        Job {
            alert: a,
            revocation: false,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    #[test]
    fn alerts_go_alone_while_the_rate_allows_and_as_digests_beyond() {
        let ids = |m: &Vec<Vec<Job>>| -> Vec<Vec<String>> {
            m.iter()
                .map(|msg| msg.iter().map(|j| j.alert.alert_id.clone()).collect())
                .collect()
        };
        let due = || vec![job("yellow", "a"), job("red", "b"), job("warning", "c")];
        assert_eq!(
            ids(&plan_messages(due(), 3, 20)),
            vec![vec!["a"], vec!["b"], vec!["c"]]
        );
        // Two slots left this minute for three alerts: one digest, red first.
        assert_eq!(ids(&plan_messages(due(), 2, 20)), vec![vec!["b", "a", "c"]]);
        assert_eq!(
            ids(&plan_messages(due(), 0, 2)),
            vec![vec!["b", "a"], vec!["c"]]
        );
    }

    #[tokio::test]
    async fn the_rate_window_counts_the_last_minute() {
        let mut w = RateWindow::new(2);
        assert_eq!(w.free(), 2);
        w.acquire().await;
        w.acquire().await;
        assert_eq!(w.free(), 0);
        // An entry older than a minute no longer counts.
        w.sent[0] -= Duration::from_secs(61);
        assert_eq!(w.free(), 1);
    }

    /// Raise, revoke, raise again: the second round's raise is sent after the first round's
    /// revocation, so the receiver's last message says the alert holds.
    #[test]
    fn a_raise_after_a_delivered_revocation_is_a_new_round() {
        let (mut state, mut jobs) = chief_state();
        let round = |round: u32, revoked: u8| AlertRecord {
            round,
            ..alert(revoked)
        };
        state.update(&round(1, 0), None);
        assert!(!jobs.try_recv().unwrap().revocation);
        state.ended(done(false));
        state.update(&round(1, 1), None);
        let revocation = jobs.try_recv().unwrap();
        assert!(revocation.revocation);
        // Raised again while the revocation is still in flight: the raise waits for it.
        state.update(&round(2, 0), None);
        assert!(
            jobs.try_recv().is_err(),
            "round 2 sent before round 1's revocation"
        );
        state.ended(done(true));
        let raise = jobs.try_recv().unwrap();
        assert_eq!((raise.revocation, raise.alert.round), (false, 2));
        state.ended(Done {
            round: 2,
            ..done(false)
        });
        assert_eq!(
            state.at_rest.values().next(),
            Some(&(2, Phase::Delivered, Phase::None))
        );
        // A late copy of round 1's row changes nothing.
        state.update(&round(1, 1), None);
        assert!(jobs.try_recv().is_err());
    }
}
