-- Restoring an evicted case by its id (SPEC §7) needs where its events are, not a second copy
-- of them: `events_by_case` (0006) stored every payload twice, half of what ClickHouse wrote
-- per event. `case_offsets` keeps (case_id → topic, partition, offset) only; the payloads are
-- read from `events` by its primary key (topic, partition, offset).
CREATE TABLE IF NOT EXISTS case_offsets (
    case_id String,
    topic String,
    partition UInt32,
    offset UInt64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (case_id, topic, partition, offset);

CREATE MATERIALIZED VIEW IF NOT EXISTS case_offsets_mv TO case_offsets AS
SELECT case_id, topic, partition, offset, version FROM events;

INSERT INTO case_offsets SELECT case_id, topic, partition, offset, version FROM events;

DROP TABLE IF EXISTS events_by_case_mv;

DROP TABLE IF EXISTS events_by_case;
