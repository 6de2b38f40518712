-- Refused events by reason code, with where the latest came from.
SELECT
    reason,
    count() AS events,
    max(received_at) AS last_received_at,
    argMax(origin, received_at) AS last_origin
FROM dead_letters FINAL
GROUP BY reason
ORDER BY events DESC, reason
