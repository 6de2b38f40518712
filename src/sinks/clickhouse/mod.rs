//! The ClickHouse sink: schema migrations, row types, and a writer that retries transient
//! errors with backoff and stops on permanent ones (e.g. a schema mismatch).
//!
//! Every row is an absolute value with a version, written to a ReplacingMergeTree table, so
//! writing a batch twice (after a crash) changes nothing.

pub(crate) mod cluster;
pub(crate) mod migrate;
pub mod rows;
pub(crate) mod writer;

pub(crate) use writer::{ClickhouseWriter, SinkError};

/// A client for a database, with row validation off (ClickHouse 18.16 has no schema endpoint
/// for it). On a cluster, inserts into the distributed tables return only once every shard has
/// its rows (`insert_distributed_sync`), so a checkpoint never lands before its data; and an
/// `IN (SELECT …)` over a distributed table inside a query over another reads each shard's own
/// part (`distributed_product_mode = 'local'`): the tables are sharded alike, by partition; and
/// the server's own shard is read like the others (`prefer_localhost_replica = 0`): ClickHouse
/// 18.16 reads it through a path where `FINAL` loses the key and version columns a query does
/// not select ("Cannot find column version in source stream").
pub(crate) fn client(cfg: &crate::config::ClickhouseConfig) -> ::clickhouse::Client {
    let mut c = admin_client(cfg).with_database(&cfg.database);
    if cfg.log_queries {
        c = c.with_setting("log_queries", "1");
    }
    cluster::set_cluster(&cfg.cluster);
    if cfg.cluster.is_empty() {
        c
    } else {
        c.with_setting("insert_distributed_sync", "1")
            .with_setting("distributed_product_mode", "local")
            .with_setting("prefer_localhost_replica", "0")
    }
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
