//! The schema on a ClickHouse cluster (`clickhouse.cluster`, `casewatch migrate --cluster`):
//! the single-node migrations rewritten, statement by statement, so that every table `X`
//! becomes
//!
//! * `X_local` on every shard and replica (`ON CLUSTER`): the `Replicated` variant of its engine
//!   under the ZooKeeper path `/clickhouse/tables/{shard}/<database>/X` with replica
//!   `{replica}` (the servers' macros), and
//! * `X`, a `Distributed` table over them, sharded by the Kafka `partition` column where the
//!   table has one, so a case's rows, a partition's aggregates, checkpoint, snapshots and
//!   ownership claims all live on one shard and `FINAL` (applied per shard) stays exact.
//!   Tables without it (`alert_deliveries`, append-only) are sharded by a hash of their first
//!   column.
//!
//! Views read the distributed tables; a materialized view (0009's, which fed `case_offsets`
//! until 0011 dropped it) runs on each shard from local table to local table, so its rows land
//! on the shard of their source rows. Everything else in casewatch reads and writes the
//! plain names, as on a single server; writes go through the distributed tables with
//! `insert_distributed_sync = 1`, so an insert returns only once every shard has its rows.
//!
//! Pure: strings in, strings out.

/// The tables of the single-node schema, as the rewrite must know them: their names (to qualify
/// and localise references) are collected from the `CREATE TABLE` statements seen so far.
#[derive(Debug, Default)]
pub(crate) struct ClusterSchema {
    tables: Vec<String>,
    /// The `CREATE` statement of each table's distributed part, by table.
    distributed: Vec<(String, String)>,
}

/// The ZooKeeper path of a table's shard (the `{shard}` macro is the server's).
fn zk_path(database: &str, table: &str) -> String {
    format!("/clickhouse/tables/{{shard}}/{database}/{table}")
}

/// The `Replicated` engine clause of a single-node engine clause.
fn replicated_engine(engine: &str, path: &str) -> Option<String> {
    let args = |inner: &str| {
        let mut a = format!("'{path}', '{{replica}}'");
        if !inner.is_empty() {
            a.push_str(", ");
            a.push_str(inner);
        }
        a
    };
    for family in ["ReplacingMergeTree", "MergeTree"] {
        if let Some(rest) = engine.strip_prefix(family) {
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or("");
            if rest.is_empty() || rest.starts_with('(') {
                return Some(format!("Replicated{family}({})", args(inner)));
            }
        }
    }
    None
}

/// The word after `prefix` at the start of `s`, and the rest.
fn name_after<'a>(s: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = s.strip_prefix(prefix)?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some((&rest[..end], &rest[end..]))
}

impl ClusterSchema {
    /// `FROM t` / `JOIN t` of known tables qualified with the database (and `_local` when
    /// `local`): a view or materialized view on another server resolves nothing by default.
    fn qualify(&self, sql: &str, database: &str, local: bool) -> String {
        let mut out = sql.to_string();
        for t in &self.tables {
            let to = if local {
                format!("{database}.{t}_local")
            } else {
                format!("{database}.{t}")
            };
            for keyword in ["FROM ", "JOIN "] {
                let mut result = String::with_capacity(out.len());
                let mut rest = out.as_str();
                let from = format!("{keyword}{t}");
                while let Some(i) = rest.find(&from) {
                    let after = &rest[i + from.len()..];
                    let whole_word =
                        !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
                    result.push_str(&rest[..i]);
                    if whole_word {
                        result.push_str(keyword);
                        result.push_str(&to);
                    } else {
                        result.push_str(&from);
                    }
                    rest = after;
                }
                result.push_str(rest);
                out = result;
            }
        }
        out
    }

    /// The cluster statements of one single-node migration statement.
    pub(crate) fn rewrite(
        &mut self,
        statement: &str,
        cluster: &str,
        database: &str,
    ) -> Vec<String> {
        let on = format!("ON CLUSTER {cluster}");
        if let Some((table, rest)) = name_after(statement, "CREATE TABLE IF NOT EXISTS") {
            return self.create_table(table, rest, cluster, database);
        }
        if let Some((table, rest)) = name_after(statement, "ALTER TABLE") {
            // A distributed table takes no ALTER on a cluster of replicated shards: it is made
            // again over the altered local tables.
            let mut out = vec![format!("ALTER TABLE {database}.{table}_local {on}{rest}")];
            if let Some((_, create)) = self.distributed.iter().find(|(t, _)| t == table) {
                out.push(format!("DROP TABLE IF EXISTS {database}.{table} {on}"));
                out.push(create.clone());
            }
            return out;
        }
        if let Some((view, rest)) = name_after(statement, "CREATE MATERIALIZED VIEW IF NOT EXISTS")
        {
            // `TO target AS SELECT … FROM source`: per shard, local to local.
            let rest = rest.trim_start();
            if let Some((target, select)) = name_after(rest, "TO") {
                return vec![format!(
                    "CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{view} {on} TO {database}.{target}_local{}",
                    self.qualify(select, database, true)
                )];
            }
        }
        if let Some((view, rest)) = name_after(statement, "CREATE VIEW IF NOT EXISTS") {
            return vec![format!(
                "CREATE VIEW IF NOT EXISTS {database}.{view} {on}{}",
                self.qualify(rest, database, false)
            )];
        }
        if let Some((table, _)) = name_after(statement, "DROP TABLE IF EXISTS") {
            return vec![
                format!("DROP TABLE IF EXISTS {database}.{table} {on}"),
                format!("DROP TABLE IF EXISTS {database}.{table}_local {on}"),
            ];
        }
        // INSERT … SELECT between distributed tables runs from the server that migrates.
        vec![statement.to_string()]
    }

    fn create_table(
        &mut self,
        table: &str,
        rest: &str,
        cluster: &str,
        database: &str,
    ) -> Vec<String> {
        self.tables.push(table.to_string());
        let on = format!("ON CLUSTER {cluster}");
        let Some(at) = rest.find("ENGINE = ") else {
            return vec![format!(
                "CREATE TABLE IF NOT EXISTS {database}.{table} {on}{rest}"
            )];
        };
        let (columns, engine_and_rest) = rest.split_at(at);
        let engine_and_rest = &engine_and_rest["ENGINE = ".len()..];
        let engine_end = engine_and_rest
            .find(|c: char| c.is_whitespace())
            .unwrap_or(engine_and_rest.len());
        let (engine, tail) = engine_and_rest.split_at(engine_end);
        let replicated = replicated_engine(engine, &zk_path(database, table))
            .unwrap_or_else(|| engine.to_string());
        let key = if columns.contains("\n    partition UInt32") {
            "partition".to_string()
        } else {
            let first = columns
                .trim_start()
                .trim_start_matches('(')
                .split_whitespace()
                .next()
                .unwrap_or("tuple()");
            format!("cityHash64({first})")
        };
        let distributed = format!(
            "CREATE TABLE IF NOT EXISTS {database}.{table} {on} AS {database}.{table}_local \
             ENGINE = Distributed({cluster}, {database}, {table}_local, {key})"
        );
        self.distributed
            .push((table.to_string(), distributed.clone()));
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {database}.{table}_local {on}{columns}ENGINE = {replicated}{tail}"
            ),
            distributed,
        ]
    }
}

/// `schema_migrations` on a cluster: one replicated table that every server holds (one
/// ZooKeeper path for all shards), so any server knows what was applied.
pub(crate) fn schema_migrations_table(cluster: &str, database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.schema_migrations ON CLUSTER {cluster} \
         (version UInt32, name String, applied_at DateTime) \
         ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/schema_migrations', '{{replica}}') \
         ORDER BY version"
    )
}

/// The cluster of this process's ClickHouse (`clickhouse.cluster`; empty: one server). Set by
/// [`super::client`], which every ClickHouse client of a process comes from, so the few
/// statements that only local tables take need no configuration passed down to them.
static CLUSTER: std::sync::RwLock<String> = std::sync::RwLock::new(String::new());

/// Records the cluster of the clients this process makes.
pub(crate) fn set_cluster(cluster: &str) {
    if let Ok(mut c) = CLUSTER.write() {
        if *c != cluster {
            *c = cluster.to_string();
        }
    }
}

/// The name of a table's local part for this process's ClickHouse (see [`local_table`]).
pub(crate) fn local(table: &str) -> String {
    let cluster = CLUSTER.read().map(|c| c.clone()).unwrap_or_default();
    local_table(table, &cluster)
}

/// The name of a table's local part, for the statements that only local tables take
/// (`ALTER … DROP PARTITION`): `t_local ON CLUSTER c` on a cluster, else `t`.
pub(crate) fn local_table(table: &str, cluster: &str) -> String {
    if cluster.is_empty() {
        table.to_string()
    } else {
        format!("{table}_local ON CLUSTER {cluster}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_become_replicated_local_tables_and_distributed_ones_sharded_by_partition() {
        let mut s = ClusterSchema::default();
        let out = s.rewrite(
            "CREATE TABLE IF NOT EXISTS cases (\n    case_id String,\n    partition UInt32,\n    version UInt64\n) ENGINE = ReplacingMergeTree(version)\nORDER BY case_id",
            "cw",
            "db",
        );
        assert_eq!(
            out,
            vec![
                "CREATE TABLE IF NOT EXISTS db.cases_local ON CLUSTER cw (\n    case_id String,\n    partition UInt32,\n    version UInt64\n) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/cases', '{replica}', version)\nORDER BY case_id".to_string(),
                "CREATE TABLE IF NOT EXISTS db.cases ON CLUSTER cw AS db.cases_local ENGINE = Distributed(cw, db, cases_local, partition)".to_string(),
            ]
        );
        let out = s.rewrite(
            "CREATE TABLE IF NOT EXISTS alert_deliveries (\n    alert_id String,\n    attempt UInt32\n) ENGINE = MergeTree\nORDER BY alert_id",
            "cw",
            "db",
        );
        assert!(out[0].contains("ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db/alert_deliveries', '{replica}')\nORDER BY"), "{}", out[0]);
        assert!(
            out[1].ends_with("Distributed(cw, db, alert_deliveries_local, cityHash64(alert_id))"),
            "{}",
            out[1]
        );
    }

    #[test]
    fn alters_views_and_drops_reach_every_server() {
        let mut s = ClusterSchema::default();
        s.rewrite("CREATE TABLE IF NOT EXISTS events (\n    partition UInt32\n) ENGINE = MergeTree ORDER BY partition", "cw", "db");
        s.rewrite("CREATE TABLE IF NOT EXISTS case_offsets (\n    partition UInt32\n) ENGINE = MergeTree ORDER BY partition", "cw", "db");
        assert_eq!(
            s.rewrite(
                "ALTER TABLE events ADD COLUMN x UInt8 DEFAULT 0",
                "cw",
                "db"
            ),
            vec![
                "ALTER TABLE db.events_local ON CLUSTER cw ADD COLUMN x UInt8 DEFAULT 0",
                "DROP TABLE IF EXISTS db.events ON CLUSTER cw",
                "CREATE TABLE IF NOT EXISTS db.events ON CLUSTER cw AS db.events_local ENGINE = Distributed(cw, db, events_local, partition)",
            ]
        );
        assert_eq!(
            s.rewrite("CREATE VIEW IF NOT EXISTS v AS\nSELECT count() FROM events FINAL, eventsx", "cw", "db"),
            vec!["CREATE VIEW IF NOT EXISTS db.v ON CLUSTER cw AS\nSELECT count() FROM db.events FINAL, eventsx"]
        );
        assert_eq!(
            s.rewrite("CREATE MATERIALIZED VIEW IF NOT EXISTS m TO case_offsets AS\nSELECT partition FROM events", "cw", "db"),
            vec!["CREATE MATERIALIZED VIEW IF NOT EXISTS db.m ON CLUSTER cw TO db.case_offsets_local AS\nSELECT partition FROM db.events_local"]
        );
        assert_eq!(
            s.rewrite("DROP TABLE IF EXISTS v", "cw", "db"),
            vec![
                "DROP TABLE IF EXISTS db.v ON CLUSTER cw",
                "DROP TABLE IF EXISTS db.v_local ON CLUSTER cw",
            ]
        );
        assert_eq!(local_table("snapshots", ""), "snapshots");
        assert_eq!(
            local_table("snapshots", "cw"),
            "snapshots_local ON CLUSTER cw"
        );
    }
}
