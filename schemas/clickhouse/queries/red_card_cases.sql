-- Cases with a red card (highest holding level red), with the kinds that hold.
SELECT
    case_id,
    window_id,
    item_code,
    status,
    kinds
FROM
(
    SELECT case_id, window_id, item_code, status
    FROM cases FINAL
    WHERE alert_level = 'red'
)
ANY LEFT JOIN
(
    SELECT case_id, groupArray(kind) AS kinds
    FROM (SELECT case_id, kind FROM anomalies FINAL WHERE revoked = 0 ORDER BY case_id, kind)
    GROUP BY case_id
) USING case_id
ORDER BY case_id
