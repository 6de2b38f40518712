-- The supervision loop (SPEC §9): the `supervision` table, one row per (case, kind) acted on;
-- the `window_daily` counts of orders and appeals; `annulled` on anomalies and alerts (a card
-- whose appeal was granted). An existing database migrates in place: the new columns start at
-- 0 and the two views are recreated with them.
CREATE TABLE IF NOT EXISTS supervision (
    case_id String,
    kind String,
    center_id String,
    window_id String,
    order_state String,
    ordered_at Nullable(DateTime),
    ordered_by String,
    order_note String,
    response_days UInt8,
    response_due Nullable(DateTime),
    responded_at Nullable(DateTime),
    responded_by String,
    response_note String,
    response_late UInt8,
    first_missed_deadline Nullable(DateTime),
    reopens UInt16,
    closed_at Nullable(DateTime),
    closed_by String,
    close_note String,
    cancelled_at Nullable(DateTime),
    appeal_state String,
    appealed_at Nullable(DateTime),
    appealed_by String,
    appeal_reason String,
    decided_at Nullable(DateTime),
    decided_by String,
    decision_note String,
    topic String,
    partition UInt32,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (case_id, kind);

ALTER TABLE window_daily_parts ADD COLUMN orders Int64 DEFAULT 0;
ALTER TABLE window_daily_parts ADD COLUMN orders_responded_on_time Int64 DEFAULT 0;
ALTER TABLE window_daily_parts ADD COLUMN orders_overdue Int64 DEFAULT 0;
ALTER TABLE window_daily_parts ADD COLUMN appeals Int64 DEFAULT 0;
ALTER TABLE window_daily_parts ADD COLUMN appeals_granted Int64 DEFAULT 0;
ALTER TABLE window_daily_parts ADD COLUMN appeals_rejected Int64 DEFAULT 0;
ALTER TABLE anomalies ADD COLUMN annulled UInt8 DEFAULT 0;
ALTER TABLE alerts ADD COLUMN annulled UInt8 DEFAULT 0;

DROP TABLE IF EXISTS window_monthly;

DROP TABLE IF EXISTS window_daily;

CREATE VIEW IF NOT EXISTS window_daily AS
SELECT
    day,
    center_id,
    window_id,
    item_code,
    sum(received) AS received,
    sum(accepted) AS accepted,
    sum(not_accepted) AS not_accepted,
    sum(completed) AS completed,
    sum(completed_promised) AS completed_promised,
    sum(completed_on_time) AS completed_on_time,
    sum(completed_early) AS completed_early,
    sum(completed_on_site) AS completed_on_site,
    sum(withdrawn) AS withdrawn,
    sum(became_overdue) AS became_overdue,
    sum(handling_seconds) AS handling_seconds,
    sum(promised_seconds) AS promised_seconds,
    sum(rating_1) AS rating_1,
    sum(rating_2) AS rating_2,
    sum(rating_3) AS rating_3,
    sum(rating_4) AS rating_4,
    sum(rating_5) AS rating_5,
    sum(default_evaluations) AS default_evaluations,
    sum(alerts_warning) AS alerts_warning,
    sum(alerts_yellow) AS alerts_yellow,
    sum(alerts_red) AS alerts_red,
    sum(anomalies) AS anomalies,
    sum(orders) AS orders,
    sum(orders_responded_on_time) AS orders_responded_on_time,
    sum(orders_overdue) AS orders_overdue,
    sum(appeals) AS appeals,
    sum(appeals_granted) AS appeals_granted,
    sum(appeals_rejected) AS appeals_rejected
FROM window_daily_parts FINAL
GROUP BY day, center_id, window_id, item_code
-- Rows whose counts all went back to zero (e.g. an anomaly revoked) are left out.
HAVING received + accepted + not_accepted + completed + completed_promised + completed_on_time + completed_early + completed_on_site + withdrawn + became_overdue + rating_1 + rating_2 + rating_3 + rating_4 + rating_5 + default_evaluations + alerts_warning + alerts_yellow + alerts_red + anomalies + orders + orders_responded_on_time + orders_overdue + appeals + appeals_granted + appeals_rejected > 0;

CREATE VIEW IF NOT EXISTS window_monthly AS
SELECT
    month,
    center_id,
    window_id,
    m_received AS received,
    m_accepted AS accepted,
    m_not_accepted AS not_accepted,
    m_completed AS completed,
    m_completed_promised AS completed_promised,
    m_completed_on_time AS completed_on_time,
    m_completed_early AS completed_early,
    m_completed_on_site AS completed_on_site,
    m_withdrawn AS withdrawn,
    m_became_overdue AS became_overdue,
    m_handling_seconds AS handling_seconds,
    m_promised_seconds AS promised_seconds,
    m_rating_1 AS rating_1,
    m_rating_2 AS rating_2,
    m_rating_3 AS rating_3,
    m_rating_4 AS rating_4,
    m_rating_5 AS rating_5,
    m_default_evaluations AS default_evaluations,
    m_alerts_warning AS alerts_warning,
    m_alerts_yellow AS alerts_yellow,
    m_alerts_red AS alerts_red,
    m_anomalies AS anomalies,
    m_orders AS orders,
    m_orders_responded_on_time AS orders_responded_on_time,
    m_orders_overdue AS orders_overdue,
    m_appeals AS appeals,
    m_appeals_granted AS appeals_granted,
    m_appeals_rejected AS appeals_rejected,
    evaluations,
    completion_rate,
    on_time_rate,
    early_rate,
    on_site_rate,
    evaluation_rate,
    satisfaction_rate,
    speedup_rate
FROM
(
    SELECT
        toStartOfMonth(day) AS month,
        center_id,
        window_id,
        sum(received) AS m_received,
        sum(accepted) AS m_accepted,
        sum(not_accepted) AS m_not_accepted,
        sum(completed) AS m_completed,
        sum(completed_promised) AS m_completed_promised,
        sum(completed_on_time) AS m_completed_on_time,
        sum(completed_early) AS m_completed_early,
        sum(completed_on_site) AS m_completed_on_site,
        sum(withdrawn) AS m_withdrawn,
        sum(became_overdue) AS m_became_overdue,
        sum(handling_seconds) AS m_handling_seconds,
        sum(promised_seconds) AS m_promised_seconds,
        sum(rating_1) AS m_rating_1,
        sum(rating_2) AS m_rating_2,
        sum(rating_3) AS m_rating_3,
        sum(rating_4) AS m_rating_4,
        sum(rating_5) AS m_rating_5,
        sum(default_evaluations) AS m_default_evaluations,
        sum(alerts_warning) AS m_alerts_warning,
        sum(alerts_yellow) AS m_alerts_yellow,
        sum(alerts_red) AS m_alerts_red,
        sum(anomalies) AS m_anomalies,
        sum(orders) AS m_orders,
        sum(orders_responded_on_time) AS m_orders_responded_on_time,
        sum(orders_overdue) AS m_orders_overdue,
        sum(appeals) AS m_appeals,
        sum(appeals_granted) AS m_appeals_granted,
        sum(appeals_rejected) AS m_appeals_rejected,
        m_rating_1 + m_rating_2 + m_rating_3 + m_rating_4 + m_rating_5 AS evaluations,
        if((m_accepted) = 0, NULL, floor(((m_completed) * 20000 + (m_accepted)) / (2 * (m_accepted))) / 10000) AS completion_rate,
        if((m_completed) = 0, NULL, floor(((m_completed_on_time) * 20000 + (m_completed)) / (2 * (m_completed))) / 10000) AS on_time_rate,
        if((m_completed_promised) = 0, NULL, floor(((m_completed_early) * 20000 + (m_completed_promised)) / (2 * (m_completed_promised))) / 10000) AS early_rate,
        if((m_completed) = 0, NULL, floor(((m_completed_on_site) * 20000 + (m_completed)) / (2 * (m_completed))) / 10000) AS on_site_rate,
        if((m_completed) = 0, NULL, floor(((evaluations) * 20000 + (m_completed)) / (2 * (m_completed))) / 10000) AS evaluation_rate,
        if((evaluations) = 0, NULL, floor(((m_rating_3 + m_rating_4 + m_rating_5) * 20000 + (evaluations)) / (2 * (evaluations))) / 10000) AS satisfaction_rate,
        if((m_promised_seconds) = 0, NULL, floor(((m_promised_seconds - m_handling_seconds) * 20000 + (m_promised_seconds)) / (2 * (m_promised_seconds))) / 10000) AS speedup_rate
    FROM window_daily_parts FINAL
    GROUP BY month, center_id, window_id
    HAVING m_received + m_accepted + m_not_accepted + m_completed + m_completed_promised + m_completed_on_time + m_completed_early + m_completed_on_site + m_withdrawn + m_became_overdue + m_rating_1 + m_rating_2 + m_rating_3 + m_rating_4 + m_rating_5 + m_default_evaluations + m_alerts_warning + m_alerts_yellow + m_alerts_red + m_anomalies + m_orders + m_orders_responded_on_time + m_orders_overdue + m_appeals + m_appeals_granted + m_appeals_rejected > 0
);
