-- Anomalies that hold (revoked ones excluded), by kind and window, detected in a date range.
-- {{from}}, {{to}}: dates, e.g. '2014-10-01', '2014-10-31' (UTC days of detected_at).
SELECT
    kind,
    level,
    window_id,
    count() AS anomalies
FROM anomalies FINAL
WHERE revoked = 0 AND toDate(detected_at) >= toDate({{from}}) AND toDate(detected_at) <= toDate({{to}})
GROUP BY kind, level, window_id
ORDER BY kind, window_id
