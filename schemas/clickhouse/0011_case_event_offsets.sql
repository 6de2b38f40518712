-- Where a case's events are (SPEC §7: an evicted case is restored by a lookup on `case_id`),
-- now one row per case, partition and flush with the offsets of its events in that flush,
-- written by casewatch with the flush's other rows. The materialized view of 0009 made a row
-- per event and sorted it by case id inside every insert into `events`: half a CPU-µs per
-- event of ClickHouse's work on a backlog, where a flush holds about five events per case.
-- Re-runnable: the index is filled again from `events`, one row per stored event (duplicate
-- rows are harmless: readers take the set of offsets). Stop the consumers of the older
-- version before migrating: their inserts would no longer be indexed.
DROP TABLE IF EXISTS case_offsets_mv;

CREATE TABLE IF NOT EXISTS case_event_offsets (
    case_id String,
    topic String,
    partition UInt32,
    first_offset UInt64,
    offsets Array(UInt64),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (case_id, topic, partition, first_offset);

INSERT INTO case_event_offsets SELECT case_id, topic, partition, offset, [offset], version FROM events;

DROP TABLE IF EXISTS case_offsets;
