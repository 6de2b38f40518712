-- A bounded outbox (SPEC §7): per partition, the alert version up to which every alert is
-- settled for every webhook it is routed to. The dispatcher's scan reads only alerts above it,
-- so it does not grow with history, and a webhook or route added later starts from now.
CREATE TABLE IF NOT EXISTS outbox_marks (
    topic String,
    partition UInt32,
    settled_version UInt64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (topic, partition);
