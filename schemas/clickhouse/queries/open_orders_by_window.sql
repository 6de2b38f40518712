-- Supervision orders (督办) still open, by window: waiting for the window's response, or
-- answered and waiting for the supervisor to close or reopen them; how many of them are
-- overdue (supervision_overdue holds), and the earliest response deadline still running.
SELECT
    center_id,
    window_id,
    countIf(order_state = 'ordered') AS awaiting_response,
    countIf(order_state = 'responded') AS awaiting_close,
    countIf(response_late = 1) AS overdue,
    minIf(response_due, order_state = 'ordered') AS next_due
FROM supervision FINAL
WHERE order_state IN ('ordered', 'responded')
GROUP BY center_id, window_id
ORDER BY center_id, window_id
