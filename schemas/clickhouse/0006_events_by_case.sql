-- Years of operation (SPEC §7): an evicted case that receives a late event is restored from its
-- own events, found by case id, not by a scan of its partition. A materialized view keeps this
-- copy of `events` ordered by case; the INSERT copies what an existing database already holds.
CREATE TABLE IF NOT EXISTS events_by_case (
    case_id String,
    topic String,
    partition UInt32,
    offset UInt64,
    payload String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (case_id, topic, partition, offset);

CREATE MATERIALIZED VIEW IF NOT EXISTS events_by_case_mv TO events_by_case AS
SELECT case_id, topic, partition, offset, payload, version FROM events;

INSERT INTO events_by_case SELECT case_id, topic, partition, offset, payload, version FROM events;
