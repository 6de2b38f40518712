//! The ClickHouse sink: schema migrations, row types, and a writer that retries transient
//! errors with backoff and stops on permanent ones (e.g. a schema mismatch).
//!
//! Every row is an absolute value with a version, written to a ReplacingMergeTree table, so
//! writing a batch twice (after a crash) changes nothing.

pub(crate) mod migrate;
pub mod rows;
pub(crate) mod writer;

pub(crate) use writer::{ClickhouseWriter, SinkError};

/// A client for a database, with row validation off (ClickHouse 18.16 has no schema endpoint
/// for it).
pub(crate) fn client(cfg: &crate::config::ClickhouseConfig) -> ::clickhouse::Client {
    admin_client(cfg).with_database(&cfg.database)
}

/// A client without a database (to create it).
pub(crate) fn admin_client(cfg: &crate::config::ClickhouseConfig) -> ::clickhouse::Client {
    let mut c = ::clickhouse::Client::default()
        .with_url(&cfg.url)
        .with_validation(false)
        .with_user(&cfg.user)
        .with_compression(match cfg.compression {
            crate::config::Compression::None => ::clickhouse::Compression::None,
            crate::config::Compression::Lz4 => ::clickhouse::Compression::Lz4,
        });
    if !cfg.password.is_empty() {
        c = c.with_password(cfg.password.expose());
    }
    c
}
