//! Writes a `Batch` to ClickHouse: every table's rows, then the checkpoints, retrying
//! transient failures with exponential backoff until they succeed and failing fast on
//! permanent ones (the server's error code decides, as in vector's ClickHouse retry logic).

use std::sync::Arc;
use std::time::Duration;

use ::clickhouse::{Client, Row};
use serde::Serialize;

use super::rows::Batch;

/// Why a write failed for good.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SinkError {
    /// The server refused the rows in a way retrying cannot fix (schema mismatch, unknown
    /// table or database): run `casewatch migrate` or fix the configuration.
    #[error("clickhouse refused the write permanently (run `casewatch migrate`?): {0}")]
    Permanent(String),
    /// Gave up after the configured attempts (only when a limit is set).
    #[error("clickhouse write failed after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
}

/// ClickHouse error codes that no retry can fix.
const PERMANENT_CODES: [u32; 12] = [
    16,  // NO_SUCH_COLUMN_IN_TABLE
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    33,  // CANNOT_READ_ALL_DATA (RowBinary layout differs from the table)
    36,  // BAD_ARGUMENTS
    47,  // UNKNOWN_IDENTIFIER
    53,  // TYPE_MISMATCH
    60,  // UNKNOWN_TABLE
    62,  // SYNTAX_ERROR
    81,  // UNKNOWN_DATABASE
    117, // INCORRECT_DATA
    192, // UNKNOWN_USER
    516, // AUTHENTICATION_FAILED
];

/// Whether an error is worth retrying.
pub(crate) fn is_transient(e: &::clickhouse::error::Error) -> bool {
    match e {
        ::clickhouse::error::Error::BadResponse(text) => {
            !PERMANENT_CODES.contains(&error_code(text).unwrap_or(0))
        }
        ::clickhouse::error::Error::Network(_) | ::clickhouse::error::Error::TimedOut => true,
        _ => false,
    }
}

/// Whether a failed read is worth retrying; `cut_in_a_row` counts the reads before this one
/// that failed to decode. ClickHouse 18.16 reports an error that happens after a response
/// started — a shard's server going away in the middle of a read through a distributed table —
/// inside the body, in a form the client does not recognise, so the rows fail to decode. Such
/// a read is retried up to [`CUT_READS`] times in a row; after that, an undecodable answer is
/// taken for what it usually is, a row type that does not match the table.
pub(crate) fn read_is_transient(e: &::clickhouse::error::Error, cut_in_a_row: &mut u32) -> bool {
    use ::clickhouse::error::Error;
    let undecodable = matches!(
        e,
        Error::NotEnoughData
            | Error::InvalidUtf8Encoding(_)
            | Error::InvalidTagEncoding(_)
            | Error::Custom(_)
            | Error::DataFormat(_)
            | Error::Decompression(_)
    );
    if !undecodable {
        *cut_in_a_row = 0;
        return is_transient(e);
    }
    *cut_in_a_row += 1;
    *cut_in_a_row <= CUT_READS
}

/// Undecodable reads in a row retried before they count as a schema mismatch.
pub(crate) const CUT_READS: u32 = 5;

/// The `Code: N` of a ClickHouse error text.
fn error_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + 6..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Months one insert touches at most: half the server's default limit of 100 partitions,
/// since a month counted in UTC can fall into two months of the server's timezone.
pub(crate) const MONTHS_PER_INSERT: usize = 50;

/// A row of a table partitioned by month (`toYYYYMM`): its month as year × 12 + month − 1.
pub(crate) trait MonthPartitioned {
    /// None: the table is not partitioned by month.
    fn month(&self) -> Option<u32> {
        None
    }
}

/// Consecutive slices of `rows`, each with at most `max` distinct months (order kept).
pub(crate) fn month_chunks<T: MonthPartitioned>(rows: &[T], max: usize) -> Vec<&[T]> {
    if rows.len() <= max {
        return vec![rows];
    }
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut months = std::collections::HashSet::new();
    for (i, row) in rows.iter().enumerate() {
        let Some(month) = row.month() else {
            return vec![rows];
        };
        if !months.contains(&month) && months.len() == max {
            chunks.push(&rows[start..i]);
            start = i;
            months.clear();
        }
        months.insert(month);
    }
    chunks.push(&rows[start..]);
    chunks
}

/// Called with the text of each failed write attempt.
pub(crate) type ErrorHook = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// Writes batches; cheap to clone. Built with [`ClickhouseWriter::new`] and the `with_*`
/// methods.
#[derive(Clone)]
pub(crate) struct ClickhouseWriter {
    client: Client,
    /// First retry delay; doubles up to `max_backoff`.
    initial_backoff: Duration,
    max_backoff: Duration,
    /// Give up after this many attempts (None: retry until it works — the pipeline's choice,
    /// since dropping rows is never an option).
    max_attempts: Option<u32>,
    /// Called after each failed attempt (metrics, health).
    on_error: Option<ErrorHook>,
    /// Limit of one attempt; a hung request is abandoned and retried.
    attempt_timeout: Duration,
    /// From this many rows on, a table's rows go in two concurrent inserts (0: never).
    parallel_rows: usize,
    /// At most this many of its inserts run at once (None: no limit).
    inserts: Option<Arc<tokio::sync::Semaphore>>,
}

impl ClickhouseWriter {
    /// A writer retrying forever from 100 ms to 10 s.
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_attempts: None,
            on_error: None,
            attempt_timeout: Duration::from_secs(30),
            parallel_rows: 0,
            inserts: None,
        }
    }

    /// At most `n` of this writer's inserts run at once (0: no limit). On a host that
    /// ClickHouse shares with the consumer, every concurrent insert is another busy server
    /// thread: a batch's dozen inserts at once leave the consumer thread a small share of the
    /// cores while they run.
    pub(crate) fn with_concurrent_inserts(mut self, n: usize) -> Self {
        self.inserts = (n > 0).then(|| Arc::new(tokio::sync::Semaphore::new(n)));
        self
    }

    /// A table's rows are written by two concurrent inserts when there are at least `rows` of
    /// them (0: never). ClickHouse works through an insert on one thread, and a batch's
    /// `events` rows are most of its work: split, they land in about half the time.
    pub(crate) fn with_parallel_rows(mut self, rows: usize) -> Self {
        self.parallel_rows = rows;
        self
    }

    /// Gives up after `attempts` attempts instead of retrying until the write succeeds.
    pub(crate) fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Calls `hook` with the text of each failed attempt.
    pub(crate) fn with_error_hook(mut self, hook: ErrorHook) -> Self {
        self.on_error = Some(hook);
        self
    }

    /// Abandons (and retries) an attempt after `timeout`.
    pub(crate) fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The client.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Writes a batch: the data tables concurrently, then — only once all of them are in —
    /// the checkpoints.
    pub(crate) async fn write(&self, batch: &Batch) -> Result<(), SinkError> {
        macro_rules! write_tables {
            (data: { $($field:ident: $row:ident => $table:literal,)* } last: $last:ident: $last_row:ident => $last_table:literal,) => {{
                tokio::try_join!($(self.insert_all($table, &batch.$field)),*)?;
                self.insert_all($last_table, &batch.$last).await
            }};
        }
        crate::batch_tables!(write_tables)
    }

    /// Inserts rows into a table, retrying transient failures. Rows of a table partitioned by
    /// month go in inserts of at most [`MONTHS_PER_INSERT`] months each (ClickHouse refuses an
    /// insert that touches more than `max_partitions_per_insert_block` partitions, 100 by
    /// default: a backfill batch may span more).
    ///
    /// From `parallel_rows` rows on (see [`Self::with_parallel_rows`]) a table's rows go in
    /// two inserts at once.
    pub(crate) async fn insert_all<T>(&self, table: &str, rows: &[T]) -> Result<(), SinkError>
    where
        T: for<'a> Row<Value<'a> = T> + Serialize + Send + Sync + MonthPartitioned,
    {
        if self.parallel_rows > 0 && rows.len() >= self.parallel_rows {
            let (first, second) = rows.split_at(rows.len() / 2);
            tokio::try_join!(
                self.insert_months(table, first),
                self.insert_months(table, second)
            )?;
            return Ok(());
        }
        self.insert_months(table, rows).await
    }

    async fn insert_months<T>(&self, table: &str, rows: &[T]) -> Result<(), SinkError>
    where
        T: for<'a> Row<Value<'a> = T> + Serialize + Send + Sync + MonthPartitioned,
    {
        for chunk in month_chunks(rows, MONTHS_PER_INSERT) {
            self.insert_chunk(table, chunk).await?;
        }
        Ok(())
    }

    async fn insert_chunk<T>(&self, table: &str, rows: &[T]) -> Result<(), SinkError>
    where
        T: for<'a> Row<Value<'a> = T> + Serialize + Send + Sync,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let mut backoff = self.initial_backoff;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let permit = match &self.inserts {
                Some(s) => Some(s.acquire().await.expect("the semaphore is never closed")),
                None => None,
            };
            let attempt_result =
                tokio::time::timeout(self.attempt_timeout, self.try_insert(table, rows))
                    .await
                    .unwrap_or(Err(::clickhouse::error::Error::TimedOut));
            drop(permit);
            match attempt_result {
                Ok(()) => return Ok(()),
                Err(e) if !is_transient(&e) => {
                    return Err(SinkError::Permanent(format!("{table}: {e}")))
                }
                Err(e) => {
                    let text = e.to_string();
                    if let Some(f) = &self.on_error {
                        f(&text);
                    }
                    if self.max_attempts.is_some_and(|m| attempt >= m) {
                        return Err(SinkError::Exhausted {
                            attempts: attempt,
                            last: text,
                        });
                    }
                    tracing::warn!(table, attempt, error = %text, "clickhouse write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }

    async fn try_insert<T>(&self, table: &str, rows: &[T]) -> Result<(), ::clickhouse::error::Error>
    where
        T: for<'a> Row<Value<'a> = T> + Serialize + Send + Sync,
    {
        let mut insert = self.client.insert::<T>(table).await?;
        for r in rows {
            insert.write(r).await?;
        }
        insert.end().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Row(Option<u32>);

    impl MonthPartitioned for Row {
        fn month(&self) -> Option<u32> {
            self.0
        }
    }

    #[test]
    fn inserts_touch_at_most_the_month_limit() {
        let rows: Vec<Row> = (0..130)
            .map(|m| Row(Some(24_000 + m)))
            .chain((0..10).map(|_| Row(Some(24_000))))
            .collect();
        let chunks = month_chunks(&rows, 50);
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            vec![50, 50, 40]
        );
        let unpartitioned: Vec<Row> = (0..200).map(|_| Row(None)).collect();
        assert_eq!(month_chunks(&unpartitioned, 50).len(), 1);
        let repeated: Vec<Row> = (0..200).map(|i| Row(Some(i % 3))).collect();
        assert_eq!(month_chunks(&repeated, 50).len(), 1);
    }

    #[test]
    fn error_codes_decide_retry() {
        assert_eq!(
            error_code("Code: 60, e.displayText() = DB::Exception: Table x doesn't exist"),
            Some(60)
        );
        assert!(!is_transient(&::clickhouse::error::Error::BadResponse(
            "Code: 60, e.displayText()".into()
        )));
        assert!(is_transient(&::clickhouse::error::Error::BadResponse(
            "Code: 241, memory limit".into()
        )));
        assert!(is_transient(&::clickhouse::error::Error::TimedOut));
        // A read cut in the middle is retried a few times in a row, then taken for a
        // schema mismatch; any other answer in between starts the count again.
        let mut cut = 0;
        for _ in 0..CUT_READS {
            assert!(read_is_transient(
                &::clickhouse::error::Error::NotEnoughData,
                &mut cut
            ));
        }
        assert!(!read_is_transient(
            &::clickhouse::error::Error::NotEnoughData,
            &mut cut
        ));
        assert!(read_is_transient(
            &::clickhouse::error::Error::TimedOut,
            &mut cut
        ));
        assert!(read_is_transient(
            &::clickhouse::error::Error::NotEnoughData,
            &mut cut
        ));
        assert!(!read_is_transient(
            &::clickhouse::error::Error::BadResponse("Code: 60, e.displayText()".into()),
            &mut cut
        ));
    }
}
