-- Open cases past their promised deadline, most overdue first. days_overdue counts calendar
-- days since the deadline (working days: see `casewatch calendar working-time`).
SELECT
    case_id,
    window_id,
    department,
    item_code,
    item_name,
    status,
    accepted_at,
    promised_deadline,
    dateDiff('day', promised_deadline, now()) AS days_overdue,
    alert_level
FROM cases FINAL
WHERE overdue = 1 AND status IN ('accepted', 'paused')
ORDER BY promised_deadline, case_id
