-- Appeals (申诉) decided between {{from}} and {{to}} (local dates of the decision in the
-- default timezone), by window and card kind: granted (the card is annulled) and rejected;
-- and the appeals still waiting for a decision.
SELECT
    window_id,
    kind,
    countIf(appeal_state = 'granted' AND ifNull(toDate(decided_at, 'Asia/Shanghai') BETWEEN toDate({{from}}) AND toDate({{to}}), 0) = 1) AS granted,
    countIf(appeal_state = 'rejected' AND ifNull(toDate(decided_at, 'Asia/Shanghai') BETWEEN toDate({{from}}) AND toDate({{to}}), 0) = 1) AS rejected,
    countIf(appeal_state = 'pending') AS pending
FROM supervision FINAL
WHERE appeal_state != ''
GROUP BY window_id, kind
HAVING granted + rejected + pending > 0
ORDER BY window_id, kind
