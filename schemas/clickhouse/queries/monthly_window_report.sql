-- The month's report per window: counts and the seven rates of SPEC §5 (NULL: no denominator).
-- {{month}}: first day of the month, e.g. '2014-10-01'.
SELECT
    window_id,
    received,
    accepted,
    completed,
    completed_on_time,
    completed_early,
    completed_on_site,
    evaluations,
    became_overdue,
    alerts_yellow,
    alerts_red,
    completion_rate,
    on_time_rate,
    early_rate,
    on_site_rate,
    evaluation_rate,
    satisfaction_rate,
    speedup_rate
FROM window_monthly
WHERE month = toDate({{month}})
ORDER BY center_id, window_id
