-- Orders whose response came after its deadline, or has not come and the deadline passed
-- (督办超期, while the supervision_overdue card holds), most overdue first.
SELECT
    case_id,
    kind,
    window_id,
    order_state,
    ordered_at,
    ordered_by,
    first_missed_deadline,
    responded_at,
    dateDiff('day', first_missed_deadline, ifNull(responded_at, now())) AS days_late
FROM supervision FINAL
WHERE response_late = 1
ORDER BY first_missed_deadline, case_id, kind
