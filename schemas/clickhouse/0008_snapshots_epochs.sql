-- State snapshots and fenced writes (SPEC §7, "Years of operation").
--
-- A partition's engine state, written by its consumer after a flush and before the checkpoint
-- that refers to it (checkpoints.snapshot_epoch / snapshot_offset). `data` is the engine's
-- binary snapshot (format `format`), cut into `chunks` pieces numbered from 0; a snapshot is
-- read only when every piece is there and its format is the reader's. Each snapshot is a
-- ClickHouse partition of its own, so the consumer drops a superseded one with DROP PARTITION
-- (no mutation rewriting the others) once a checkpoint refers to a newer one.
CREATE TABLE IF NOT EXISTS snapshots (
    topic String,
    partition UInt32,
    epoch UInt64,
    next_offset UInt64,
    chunk UInt32,
    chunks UInt32,
    format UInt32,
    cases UInt64,
    data String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY (topic, partition, epoch, next_offset)
ORDER BY (topic, partition, epoch, next_offset, chunk);

-- Ownership epochs: a consumer taking a partition over claims the next epoch here before it
-- writes anything. Every row it writes carries the epoch in its version
-- (2^61 + epoch * 2^40 + a counter), so a consumer that lost the partition cannot make its
-- late rows win over the new owner's.
CREATE TABLE IF NOT EXISTS partition_owners (
    topic String,
    partition UInt32,
    epoch UInt64,
    owner String,
    claimed_at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (topic, partition, epoch);

ALTER TABLE checkpoints ADD COLUMN epoch UInt64 DEFAULT 0;
ALTER TABLE checkpoints ADD COLUMN snapshot_epoch UInt64 DEFAULT 0;
ALTER TABLE checkpoints ADD COLUMN snapshot_offset UInt64 DEFAULT 0;
