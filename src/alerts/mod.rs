//! Alerts to supervisors' webhooks (SPEC §4).
//!
//! The `alerts` table in ClickHouse is the durable outbox: every anomaly change becomes an
//! alert row there, written before the partition's checkpoint. Delivery reads it two ways: the
//! consumer hands each flushed batch's alert rows to the `deliver::Dispatcher` (the fast path),
//! and the dispatcher scans the outbox for alerts without a final delivery outcome (at start,
//! when a partition has caught up, and every `alerts.rescan_secs`), so nothing is lost to a
//! crash or a full queue. Every attempt is recorded in `alert_deliveries`; an alert is done for
//! a webhook once an attempt is `delivered`, `rejected` (a 4xx other than 408/429) or
//! `exhausted` (the attempt limit). Receivers deduplicate by the alert id, which is stable.
//!
//! Revocations: an alert revoked before its first delivery is never sent; one already
//! delivered gets a follow-up revocation (撤销) with the same alert id.
//!
//! Holding: alerts of a partition more than `alerts.hold_lag` messages behind are not handed
//! over; once it catches up, the outbox scan delivers those that still hold.

pub(crate) mod deliver;
pub(crate) mod format;

use crate::config::AlertsConfig;
use crate::sinks::clickhouse::rows::AlertRecord;

/// The webhooks an alert goes to: those of every matching route, each once, in config order.
pub(crate) fn route<'a>(cfg: &'a AlertsConfig, alert: &AlertRecord) -> Vec<&'a str> {
    let matches = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
    let mut out: Vec<&str> = Vec::new();
    for r in &cfg.routes {
        if matches(&r.levels, &alert.level)
            && matches(&r.kinds, &alert.kind)
            && matches(&r.centers, &alert.center_id)
            && matches(&r.windows, &alert.window_id)
        {
            for w in &r.webhooks {
                if !out.contains(&w.as_str()) {
                    out.push(w);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
