//! `casewatch migrate`: applies `schemas/clickhouse/NNNN_*.sql` in order, records each applied
//! version in `schema_migrations`, and skips versions already applied (idempotent).

use ::clickhouse::Client;

/// The migrations, embedded: (version, name, SQL).
pub(crate) const MIGRATIONS: [(u32, &str, &str); 11] = [
    (
        1,
        "tables",
        include_str!("../../../schemas/clickhouse/0001_tables.sql"),
    ),
    (
        2,
        "views",
        include_str!("../../../schemas/clickhouse/0002_views.sql"),
    ),
    (
        3,
        "calendar_provisional",
        include_str!("../../../schemas/clickhouse/0003_calendar_provisional.sql"),
    ),
    (
        4,
        "delivery_codes",
        include_str!("../../../schemas/clickhouse/0004_delivery_codes.sql"),
    ),
    (
        5,
        "rounds",
        include_str!("../../../schemas/clickhouse/0005_rounds.sql"),
    ),
    (
        6,
        "events_by_case",
        include_str!("../../../schemas/clickhouse/0006_events_by_case.sql"),
    ),
    (
        7,
        "outbox_marks",
        include_str!("../../../schemas/clickhouse/0007_outbox_marks.sql"),
    ),
    (
        8,
        "snapshots_epochs",
        include_str!("../../../schemas/clickhouse/0008_snapshots_epochs.sql"),
    ),
    (
        9,
        "case_offsets",
        include_str!("../../../schemas/clickhouse/0009_case_offsets.sql"),
    ),
    (
        10,
        "supervision",
        include_str!("../../../schemas/clickhouse/0010_supervision.sql"),
    ),
    (
        11,
        "case_event_offsets",
        include_str!("../../../schemas/clickhouse/0011_case_event_offsets.sql"),
    ),
];

#[derive(::clickhouse::Row, serde::Serialize, serde::Deserialize)]
struct Applied {
    version: u32,
    name: String,
    applied_at: u32,
}

/// The statements of a migration file (split at `;` ending a line; comments dropped).
pub(crate) fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            out.push(current.trim().trim_end_matches(';').to_string());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

/// Creates the database if needed and applies every migration not applied yet; returns the
/// versions applied now. With a `cluster` (non-empty) every statement goes to every server of
/// it, rewritten by [`super::cluster::ClusterSchema`].
pub(crate) async fn migrate(
    admin: &Client,
    database: &str,
    cluster: &str,
) -> Result<Vec<u32>, ::clickhouse::error::Error> {
    let on_cluster = if cluster.is_empty() {
        String::new()
    } else {
        format!(" ON CLUSTER {cluster}")
    };
    admin
        .query(&format!(
            "CREATE DATABASE IF NOT EXISTS {database}{on_cluster}"
        ))
        .execute()
        .await?;
    let db = admin.clone().with_database(database);
    let schema_migrations = if cluster.is_empty() {
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, applied_at DateTime) \
         ENGINE = ReplacingMergeTree ORDER BY version"
            .to_string()
    } else {
        super::cluster::schema_migrations_table(cluster, database)
    };
    db.query(&schema_migrations).execute().await?;
    let done: Vec<u32> = db
        .query("SELECT version FROM schema_migrations FINAL")
        .fetch_all::<u32>()
        .await?;
    let mut applied = Vec::new();
    // On a cluster the rewrite learns the tables of every migration, applied or not.
    let mut schema = super::cluster::ClusterSchema::default();
    for (version, name, sql) in MIGRATIONS {
        let mut rewritten = Vec::new();
        for statement in statements(sql) {
            if cluster.is_empty() {
                rewritten.push(statement);
            } else {
                rewritten.extend(schema.rewrite(&statement, cluster, database));
            }
        }
        if done.contains(&version) {
            continue;
        }
        for statement in rewritten {
            db.query(&statement).execute().await?;
        }
        let mut insert = db.insert::<Applied>("schema_migrations").await?;
        let now = chrono::Utc::now().timestamp().clamp(0, i64::from(u32::MAX)) as u32;
        insert
            .write(&Applied {
                version,
                name: name.to_string(),
                applied_at: now,
            })
            .await?;
        insert.end().await?;
        applied.push(version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DDL is SQL files (SPEC §5): a counter added to `window_counters!` without its
    /// migration fails here, not in production.
    #[test]
    fn the_migrations_give_every_counter_a_column_and_a_view_sum() {
        let sql: String = MIGRATIONS.iter().map(|m| m.2).collect();
        for name in crate::core::aggregate::COUNTER_NAMES {
            assert!(
                sql.contains(&format!("    {name} Int64"))
                    || sql.contains(&format!("ADD COLUMN {name} Int64")),
                "window_daily_parts.{name}"
            );
            assert!(
                sql.contains(&format!("sum({name}) AS {name}")),
                "window_daily.{name}"
            );
            assert!(
                sql.contains(&format!("sum({name}) AS m_{name}")),
                "window_monthly.{name}"
            );
        }
    }

    #[test]
    fn the_migrations_create_every_table_a_flush_writes() {
        macro_rules! tables {
            (data: { $($field:ident: $row:ident => $table:literal,)* } last: $last:ident: $last_row:ident => $last_table:literal,) => {
                [$($table,)* $last_table]
            };
        }
        let sql: String = MIGRATIONS.iter().map(|m| m.2).collect();
        for table in crate::batch_tables!(tables) {
            assert!(
                sql.contains(&format!("CREATE TABLE IF NOT EXISTS {table} (")),
                "{table}"
            );
        }
    }

    #[test]
    fn every_migration_splits_into_create_alter_insert_or_drop_statements() {
        for (_, _, sql) in MIGRATIONS {
            let s = statements(sql);
            assert!(!s.is_empty());
            assert!(
                s.iter().all(|st| (st.starts_with("CREATE ")
                    || st.starts_with("ALTER TABLE ")
                    || st.starts_with("INSERT INTO ")
                    || st.starts_with("DROP TABLE IF EXISTS "))
                    && !st.contains(";\n")),
                "{s:?}"
            );
        }
    }
}
