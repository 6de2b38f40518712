//! Operational metrics (Prometheus text format) and the `/healthz`, `/readyz`, `/metrics`
//! endpoint. Labels have bounded cardinality: reason codes and partition numbers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub(crate) struct Gauge(AtomicI64);

impl Gauge {
    pub(crate) fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Sum and count of observations (enough for a mean and a rate).
#[derive(Debug, Default)]
pub(crate) struct Summary {
    micros: AtomicU64,
    count: AtomicU64,
}

impl Summary {
    pub(crate) fn observe(&self, seconds: f64) {
        self.micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything `run` reports.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) consumed: Counter,
    pub(crate) applied: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) flushes: Counter,
    pub(crate) flush_rows: Counter,
    pub(crate) flush_seconds: Summary,
    pub(crate) clickhouse_errors: Counter,
    pub(crate) broker_errors: Counter,
    pub(crate) cases_in_memory: Gauge,
    /// Cases held in memory: open ones and ended ones within their retention.
    pub(crate) cases_held: Gauge,
    /// Ended cases that left memory after their retention.
    pub(crate) cases_evicted: Counter,
    /// 1 while the broker answers, 0 after an error until it answers again.
    pub(crate) broker_up: Gauge,
    pub(crate) ready: AtomicBool,
    dead_letters: Mutex<BTreeMap<String, u64>>,
    lag: Mutex<BTreeMap<i32, i64>>,
    /// Partitions and whether each is catching up (SPEC §2).
    catching_up: Mutex<BTreeMap<i32, bool>>,
    /// Alerts handed to delivery, by (kind, level).
    alerts_raised: Mutex<BTreeMap<(String, String), u64>>,
    /// Delivery attempts by (webhook, outcome).
    deliveries: Mutex<BTreeMap<(String, String), u64>>,
    /// From the triggering instant (detection or revocation) to a delivered answer.
    pub(crate) delivery_latency: Summary,
    calendar: Mutex<CalendarReport>,
    /// Since when this consumer has had no partition (None: it has some).
    unassigned_since: Mutex<Option<std::time::Instant>>,
}

/// `/readyz` mentions a consumer without partitions after this long.
const UNASSIGNED_REPORT_SECS: u64 = 30;

/// Calendar coverage as the service reports it (SPEC §2, "Calendar coverage").
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct CalendarReport {
    /// Open cases with provisional facts, by the first year without holiday data they need.
    pub(crate) provisional_open: BTreeMap<i32, u64>,
    /// Years without data to warn about today: this year, and from `warn_from` the next.
    pub(crate) missing_years: Vec<i32>,
}

impl CalendarReport {
    /// One line per finding, for `/readyz` and the log (none when all is covered).
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .provisional_open
            .iter()
            .map(|(year, n)| {
                format!(
                    "calendar: {n} open cases need {year}, which has no holiday data: their \
                     deadlines are provisional (Monday–Friday) until `casewatch calendar import` loads it"
                )
            })
            .collect();
        for year in &self.missing_years {
            if !self.provisional_open.contains_key(year) {
                out.push(format!(
                    "calendar: no holiday data for {year} yet: import the State Council's notice \
                     with `casewatch calendar import`"
                ));
            }
        }
        out
    }
}

/// Adds one to a labelled counter.
fn bump<K: Ord>(counters: &Mutex<BTreeMap<K, u64>>, key: K) {
    *counters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default() += 1;
}

impl Metrics {
    /// Counts a dead letter by reason code.
    pub(crate) fn dead_letter(&self, reason: &str) {
        // Reason codes with a field name are bounded by the schema's field list.
        bump(&self.dead_letters, reason.to_string());
    }

    /// Counts an alert raised (handed to delivery).
    pub(crate) fn alert_raised(&self, kind: &str, level: &str) {
        bump(&self.alerts_raised, (kind.to_string(), level.to_string()));
    }

    /// Counts a delivery attempt's outcome.
    pub(crate) fn delivery(&self, webhook: &str, outcome: &str) {
        bump(&self.deliveries, (webhook.to_string(), outcome.to_string()));
    }

    /// Sets (or, with None, removes) a partition's lag.
    pub(crate) fn set_lag(&self, partition: i32, lag: Option<i64>) {
        let mut l = self.lag.lock().unwrap_or_else(|e| e.into_inner());
        match lag {
            Some(v) => l.insert(partition, v.max(0)),
            None => l.remove(&partition),
        };
    }

    /// Whether a partition is catching up (None: not assigned here any more).
    pub(crate) fn set_catching_up(&self, partition: i32, catching_up: Option<bool>) {
        let mut c = self.catching_up.lock().unwrap_or_else(|e| e.into_inner());
        match catching_up {
            Some(v) => c.insert(partition, v),
            None => c.remove(&partition),
        };
    }

    /// Whether partitions are assigned to this consumer (a consumer with none is still ready:
    /// a group can have more members than partitions).
    pub(crate) fn set_assigned(&self, assigned: bool, now: std::time::Instant) {
        let mut since = self
            .unassigned_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match (assigned, *since) {
            (true, _) => *since = None,
            (false, None) => *since = Some(now),
            (false, Some(_)) => {}
        }
    }

    /// The body of a ready `/readyz`: "ready", then what an operator should know while the
    /// service stays ready — partitions catching up, calendar findings (SPEC §2), and no
    /// partition assigned for a while (a consumer-group problem, or more members than
    /// partitions).
    pub(crate) fn ready_report(&self, now: std::time::Instant) -> String {
        let mut body = "ready\n".to_string();
        let catching_up = self.partitions_catching_up();
        if !catching_up.is_empty() {
            body.push_str(&format!("catching up: partitions {catching_up:?} (engine time follows their events; their cards wait)\n"));
        }
        for line in self.calendar_lines() {
            body.push_str(&line);
            body.push('\n');
        }
        let since = *self
            .unassigned_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(since) = since {
            let secs = now.saturating_duration_since(since).as_secs();
            if secs >= UNASSIGNED_REPORT_SECS {
                body.push_str(&format!("no partitions assigned for {secs} s (more members than partitions, or a group that does not rebalance)\n"));
            }
        }
        body
    }

    /// The partitions catching up, ascending.
    pub(crate) fn partitions_catching_up(&self) -> Vec<i32> {
        self.catching_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, &c)| c)
            .map(|(&p, _)| p)
            .collect()
    }

    /// Replaces the calendar report; returns whether it changed.
    pub(crate) fn set_calendar(&self, report: CalendarReport) -> bool {
        let mut current = self.calendar.lock().unwrap_or_else(|e| e.into_inner());
        let changed = *current != report;
        *current = report;
        changed
    }

    /// The calendar report's lines.
    pub(crate) fn calendar_lines(&self) -> Vec<String> {
        self.calendar
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lines()
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        };
        counter(
            "casewatch_events_consumed_total",
            "messages read from the events topic",
            self.consumed.get(),
        );
        counter(
            "casewatch_events_applied_total",
            "events applied to the engine",
            self.applied.get(),
        );
        counter(
            "casewatch_events_duplicate_total",
            "events skipped as duplicates by event_id",
            self.duplicates.get(),
        );
        counter(
            "casewatch_flushes_total",
            "batches written to clickhouse",
            self.flushes.get(),
        );
        counter(
            "casewatch_flush_rows_total",
            "rows written to clickhouse",
            self.flush_rows.get(),
        );
        counter(
            "casewatch_clickhouse_errors_total",
            "failed clickhouse write attempts",
            self.clickhouse_errors.get(),
        );
        counter(
            "casewatch_broker_errors_total",
            "errors reported by the kafka client",
            self.broker_errors.get(),
        );
        out.push_str(
            "# HELP casewatch_events_dead_lettered_total events refused by validation, by reason\n",
        );
        out.push_str("# TYPE casewatch_events_dead_lettered_total counter\n");
        for (reason, n) in self
            .dead_letters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.push_str(&format!(
                "casewatch_events_dead_lettered_total{{reason=\"{reason}\"}} {n}\n"
            ));
        }
        self.render_partitions(&mut out);
        out.push_str(&format!(
            "# HELP casewatch_flush_seconds time to write a batch\n# TYPE casewatch_flush_seconds summary\n\
             casewatch_flush_seconds_sum {}\ncasewatch_flush_seconds_count {}\n",
            self.flush_seconds.micros.load(Ordering::Relaxed) as f64 / 1e6,
            self.flush_seconds.count.load(Ordering::Relaxed)
        ));
        out.push_str(&format!(
            "# HELP casewatch_cases_evicted_total ended cases that left memory after their retention\n# TYPE casewatch_cases_evicted_total counter\ncasewatch_cases_evicted_total {}\n",
            self.cases_evicted.get()
        ));
        out.push_str(&format!(
            "# HELP casewatch_open_cases open cases held by the engines\n# TYPE casewatch_open_cases gauge\ncasewatch_open_cases {}\n",
            self.cases_in_memory.get()
        ));
        out.push_str(&format!(
            "# HELP casewatch_cases_held cases held by the engines: open, and ended within their retention
# TYPE casewatch_cases_held gauge
casewatch_cases_held {}
",
            self.cases_held.get()
        ));
        self.render_alerts(&mut out);
        self.render_calendar(&mut out);
        out.push_str(&format!(
            "# HELP casewatch_broker_up whether the broker answered last time\n# TYPE casewatch_broker_up gauge\ncasewatch_broker_up {}\n",
            self.broker_up.get()
        ));
        out
    }
}

impl Metrics {
    /// Lag and catch-up state per partition.
    fn render_partitions(&self, out: &mut String) {
        out.push_str(
            "# HELP casewatch_partition_lag messages behind the high watermark, per partition\n",
        );
        out.push_str("# TYPE casewatch_partition_lag gauge\n");
        for (p, lag) in self.lag.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            out.push_str(&format!(
                "casewatch_partition_lag{{partition=\"{p}\"}} {lag}\n"
            ));
        }
        out.push_str("# HELP casewatch_partition_catching_up 1 while the partition is more than pipeline.catch_up_lag behind (engine time follows its events)\n# TYPE casewatch_partition_catching_up gauge\n");
        for (p, c) in self
            .catching_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.push_str(&format!(
                "casewatch_partition_catching_up{{partition=\"{p}\"}} {}\n",
                u8::from(*c)
            ));
        }
    }

    /// Alerts handed over, delivery attempts by outcome, delivery latency.
    fn render_alerts(&self, out: &mut String) {
        out.push_str("# HELP casewatch_alerts_raised_total alerts handed to delivery\n# TYPE casewatch_alerts_raised_total counter\n");
        for ((kind, level), n) in self
            .alerts_raised
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.push_str(&format!(
                "casewatch_alerts_raised_total{{kind=\"{kind}\",level=\"{level}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP casewatch_alert_deliveries_total webhook delivery attempts by outcome\n# TYPE casewatch_alert_deliveries_total counter\n");
        for ((webhook, outcome), n) in self
            .deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.push_str(&format!(
                "casewatch_alert_deliveries_total{{webhook=\"{webhook}\",outcome=\"{outcome}\"}} {n}\n"
            ));
        }
        out.push_str(&format!(
            "# HELP casewatch_alert_delivery_seconds from detection to a delivered answer\n# TYPE casewatch_alert_delivery_seconds summary\n\
             casewatch_alert_delivery_seconds_sum {}\ncasewatch_alert_delivery_seconds_count {}\n",
            self.delivery_latency.micros.load(Ordering::Relaxed) as f64 / 1e6,
            self.delivery_latency.count.load(Ordering::Relaxed)
        ));
    }

    fn render_calendar(&self, out: &mut String) {
        let report = self
            .calendar
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        out.push_str(&format!(
            "# HELP casewatch_calendar_provisional_open_cases open cases whose deadlines needed a year without holiday data\n\
             # TYPE casewatch_calendar_provisional_open_cases gauge\ncasewatch_calendar_provisional_open_cases {}\n",
            report.provisional_open.values().sum::<u64>()
        ));
        out.push_str("# HELP casewatch_calendar_provisional_open_cases_by_year the same, by the first year without data\n# TYPE casewatch_calendar_provisional_open_cases_by_year gauge\n");
        for (year, n) in &report.provisional_open {
            out.push_str(&format!(
                "casewatch_calendar_provisional_open_cases_by_year{{year=\"{year}\"}} {n}\n"
            ));
        }
        out.push_str(&format!(
            "# HELP casewatch_calendar_missing_years years without holiday data to load now (this year; the next from calendar.warn_from)\n\
             # TYPE casewatch_calendar_missing_years gauge\ncasewatch_calendar_missing_years {}\n",
            report.missing_years.len()
        ));
        out.push_str("# HELP casewatch_calendar_missing_year 1 for each year without holiday data to load now\n# TYPE casewatch_calendar_missing_year gauge\n");
        for year in &report.missing_years {
            out.push_str(&format!(
                "casewatch_calendar_missing_year{{year=\"{year}\"}} 1\n"
            ));
        }
    }
}

/// Serves `/healthz` (the process runs), `/readyz` (subscribed and consuming) and `/metrics`.
pub(crate) async fn serve(listener: tokio::net::TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(
                std::time::Duration::from_secs(5),
                socket.read(&mut buf),
            )
            .await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/healthz" => ("200 OK", "ok\n".to_string()),
                "/readyz"
                    if metrics.ready.load(Ordering::Relaxed) && metrics.broker_up.get() == 1 =>
                {
                    ("200 OK", metrics.ready_report(std::time::Instant::now()))
                }
                "/readyz" if metrics.ready.load(Ordering::Relaxed) => (
                    "503 Service Unavailable",
                    "broker unreachable\n".to_string(),
                ),
                "/readyz" => ("503 Service Unavailable", "not ready\n".to_string()),
                "/metrics" => ("200 OK", metrics.render()),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_reports_a_consumer_without_partitions_after_a_while() {
        let m = Metrics::default();
        let t0 = std::time::Instant::now();
        assert_eq!(m.ready_report(t0), "ready\n");
        m.set_assigned(false, t0);
        assert_eq!(
            m.ready_report(t0 + std::time::Duration::from_secs(10)),
            "ready\n"
        );
        let later = m.ready_report(t0 + std::time::Duration::from_secs(45));
        assert!(later.contains("no partitions assigned for 45 s"), "{later}");
        m.set_assigned(true, t0);
        m.set_catching_up(3, Some(true));
        let report = m.ready_report(t0 + std::time::Duration::from_secs(45));
        assert_eq!(report, "ready\ncatching up: partitions [3] (engine time follows their events; their cards wait)\n");
    }
}
