-- casewatch tables. Runs on ClickHouse 18.16 and current releases: no DateTime64, TTL,
-- window functions, Map, LowCardinality or query parameters.
-- Every table the pipeline writes holds absolute rows with a version (the flush that wrote
-- them); ReplacingMergeTree keeps the newest, so a replay after a crash rewrites the same rows.
-- Read with FINAL (see queries/).

-- Every applied event, in log order per (topic, partition). Also the durable log the pipeline
-- rebuilds a partition's state from when it takes the partition over.
CREATE TABLE IF NOT EXISTS events (
    event_id String,
    case_id String,
    type String,
    occurred_at DateTime,
    recorded_at DateTime,
    source String,
    center_id String,
    window_id String,
    payload String,
    topic String,
    partition UInt32,
    offset UInt64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (topic, partition, offset);

-- The latest facts of every case (one row per case after FINAL).
CREATE TABLE IF NOT EXISTS cases (
    case_id String,
    center_id String,
    window_id String,
    department String,
    item_code String,
    item_name String,
    item_kind String,
    status String,
    submitted_at Nullable(DateTime),
    accepted_at Nullable(DateTime),
    promised_deadline Nullable(DateTime),
    legal_deadline Nullable(DateTime),
    completed_at Nullable(DateTime),
    ended_at Nullable(DateTime),
    outcome String,
    on_time UInt8,
    early UInt8,
    on_site UInt8,
    overdue UInt8,
    handling_seconds Nullable(Int64),
    promised_seconds Nullable(Int64),
    alert_level String,
    rating Nullable(UInt8),
    rating_is_default UInt8,
    rated_at Nullable(DateTime),
    events UInt32,
    topic String,
    partition UInt32,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY case_id;

-- window_daily as each partition's engine computed it; the view window_daily sums partitions.
CREATE TABLE IF NOT EXISTS window_daily_parts (
    day Date,
    center_id String,
    window_id String,
    item_code String,
    received Int64,
    accepted Int64,
    not_accepted Int64,
    completed Int64,
    completed_promised Int64,
    completed_on_time Int64,
    completed_early Int64,
    completed_on_site Int64,
    withdrawn Int64,
    became_overdue Int64,
    handling_seconds Int64,
    promised_seconds Int64,
    rating_1 Int64,
    rating_2 Int64,
    rating_3 Int64,
    rating_4 Int64,
    rating_5 Int64,
    default_evaluations Int64,
    alerts_warning Int64,
    alerts_yellow Int64,
    alerts_red Int64,
    anomalies Int64,
    topic String,
    partition UInt32,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (day, center_id, window_id, item_code, topic, partition);

-- One row per (case, kind); a revoked anomaly stays, marked revoked with when.
CREATE TABLE IF NOT EXISTS anomalies (
    case_id String,
    kind String,
    level String,
    detected_at DateTime,
    revoked UInt8,
    revoked_at Nullable(DateTime),
    center_id String,
    window_id String,
    department String,
    item_code String,
    alert_id String,
    topic String,
    partition UInt32,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (case_id, kind);

-- Alerts (the durable outbox of webhook delivery): one per (case, kind), id = stable hash.
CREATE TABLE IF NOT EXISTS alerts (
    alert_id String,
    case_id String,
    kind String,
    level String,
    center_id String,
    window_id String,
    department String,
    item_code String,
    item_name String,
    accepted_at Nullable(DateTime),
    promised_deadline Nullable(DateTime),
    legal_deadline Nullable(DateTime),
    detected_at DateTime,
    revoked UInt8,
    revoked_at Nullable(DateTime),
    topic String,
    partition UInt32,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY alert_id;

-- Every delivery attempt of an alert (or its revocation) to a webhook.
CREATE TABLE IF NOT EXISTS alert_deliveries (
    alert_id String,
    webhook String,
    revocation UInt8,
    attempt UInt32,
    outcome String,
    http_status UInt16,
    error String,
    attempted_at DateTime
) ENGINE = MergeTree
ORDER BY (alert_id, webhook, revocation, attempt, attempted_at);

-- Events that failed validation, with where they came from and one reason code.
CREATE TABLE IF NOT EXISTS dead_letters (
    origin String,
    position UInt64,
    topic String,
    partition UInt32,
    offset UInt64,
    file String,
    line UInt64,
    reason String,
    raw String,
    received_at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (origin, position);

-- Where each partition resumes: written after all rows of a flush.
CREATE TABLE IF NOT EXISTS checkpoints (
    topic String,
    partition UInt32,
    next_offset UInt64,
    engine_time DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (topic, partition);
