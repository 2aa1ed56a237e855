//! The tables the sink writes, as QuestDB DDL, next to the encoder (`encode.rs`) so that a
//! table's layout is stated in one place (a test below holds the two together).
//!
//! Each table is deduplicated on its designated timestamp plus every symbol: a batch replayed
//! after a crash (rows flushed, input offsets not yet committed) writes the same keys again
//! and QuestDB upserts them instead of storing the rows twice. ILP would create the tables
//! itself on first write, but without dedup keys; `sluice tsdb init` runs these statements
//! before the sink starts.

use super::QuestDbConfig;

/// Name of the designated timestamp column of every table (ILP's `at(...)` lands in it).
pub const TIMESTAMP_COLUMN: &str = "ts";

/// A column's QuestDB type, as ILP writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// ILP tag (`,name=value`); part of the dedup key.
    Symbol,
    /// ILP integer field (`name=1i`).
    Long,
    /// ILP float field (`name=1.5`).
    Double,
    /// ILP boolean field (`name=t`).
    Boolean,
    /// ILP string field (`name="x"`).
    Varchar,
    /// ILP timestamp field (`name=1t`).
    Timestamp,
}

impl ColumnType {
    fn sql(self) -> &'static str {
        match self {
            ColumnType::Symbol => "SYMBOL",
            ColumnType::Long => "LONG",
            ColumnType::Double => "DOUBLE",
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::Varchar => "VARCHAR",
            ColumnType::Timestamp => "TIMESTAMP",
        }
    }
}

/// Columns of the aggregates table besides the timestamp (the window start), in the order
/// [`super::IlpEncoder::push_aggregate`] writes them.
pub const AGGREGATE_COLUMNS: &[(&str, ColumnType)] = &[
    ("device_id", ColumnType::Symbol),
    ("metric", ColumnType::Symbol),
    ("window", ColumnType::Symbol),
    ("count", ColumnType::Long),
    ("min", ColumnType::Double),
    ("max", ColumnType::Double),
    ("mean", ColumnType::Double),
    ("stddev", ColumnType::Double),
];

/// Columns of the anomalies table besides the timestamp (the event time), in the order
/// [`super::IlpEncoder::push_anomaly`] writes them.
pub const ANOMALY_COLUMNS: &[(&str, ColumnType)] = &[
    ("device_id", ColumnType::Symbol),
    ("metric", ColumnType::Symbol),
    ("detector", ColumnType::Symbol),
    ("value", ColumnType::Double),
    ("score", ColumnType::Double),
];

/// One table to create: its name and the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDdl {
    pub table: String,
    /// `CREATE TABLE IF NOT EXISTS ... DEDUP UPSERT KEYS(...)`, on one line.
    pub sql: String,
}

/// The statements for both tables of a sink configured by `config`, aggregates first.
pub fn table_ddl(config: &QuestDbConfig) -> Vec<TableDdl> {
    [
        (&config.aggregates_table, AGGREGATE_COLUMNS),
        (&config.anomalies_table, ANOMALY_COLUMNS),
    ]
    .into_iter()
    .map(|(table, columns)| {
        let keys: Vec<&str> = std::iter::once(TIMESTAMP_COLUMN)
            .chain(
                columns
                    .iter()
                    .filter(|(_, ty)| *ty == ColumnType::Symbol)
                    .map(|(name, _)| *name),
            )
            .collect();
        create_table(table, TIMESTAMP_COLUMN, columns, &keys)
    })
    .collect()
}

/// `CREATE TABLE IF NOT EXISTS t (ts TIMESTAMP, ...) TIMESTAMP(ts) PARTITION BY DAY WAL
/// DEDUP UPSERT KEYS(<dedup_keys>)` for any table: `timestamp` is the designated timestamp
/// column (it must be among `dedup_keys`, as QuestDB requires), `columns` the others. WAL:
/// QuestDB deduplicates only WAL tables.
pub fn create_table(
    table: &str,
    timestamp: &str,
    columns: &[(&str, ColumnType)],
    dedup_keys: &[&str],
) -> TableDdl {
    let ts = ident(timestamp);
    let defs = std::iter::once(format!("{ts} TIMESTAMP"))
        .chain(
            columns
                .iter()
                .map(|(name, ty)| format!("{} {}", ident(name), ty.sql())),
        )
        .collect::<Vec<_>>()
        .join(", ");
    let keys = dedup_keys
        .iter()
        .map(|k| ident(k))
        .collect::<Vec<_>>()
        .join(", ");
    TableDdl {
        table: table.to_string(),
        sql: format!(
            "CREATE TABLE IF NOT EXISTS {} ({defs}) TIMESTAMP({ts}) PARTITION BY DAY WAL DEDUP UPSERT KEYS({keys})",
            ident(table)
        ),
    }
}

/// Names QuestDB's SQL reads as keywords or functions, and anything beyond plain lowercase
/// words, go in double quotes.
fn ident(name: &str) -> String {
    const RESERVED: &[&str] = &[
        "window",
        "count",
        "min",
        "max",
        "timestamp",
        "table",
        "select",
        "from",
        "where",
        "order",
        "group",
        "by",
        "limit",
        "index",
        "sum",
        "avg",
        "first",
        "last",
        "date",
        "time",
    ];
    let plain = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if plain && !RESERVED.contains(&name) {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use questdb::ingress::ProtocolVersion;
    use sluice_schemas::records::{Aggregate, Anomaly};

    use super::*;
    use crate::questdb::IlpEncoder;

    /// (table, [(column, type)]) of one ILP line as the encoder wrote it.
    fn ilp_columns(line: &str) -> (String, Vec<(String, ColumnType)>) {
        // No spaces or commas inside the test values, so plain splits do.
        let mut parts = line.split(' ');
        let mut head = parts.next().unwrap().split(',');
        let table = head.next().unwrap().to_string();
        let mut columns: Vec<(String, ColumnType)> = head
            .map(|kv| {
                (
                    kv.split('=').next().unwrap().to_string(),
                    ColumnType::Symbol,
                )
            })
            .collect();
        for kv in parts.next().unwrap().split(',') {
            let (k, v) = kv.split_once('=').unwrap();
            let ty = if v.ends_with('i') {
                ColumnType::Long
            } else {
                ColumnType::Double
            };
            columns.push((k.to_string(), ty));
        }
        (table, columns)
    }

    fn owned(columns: &[(&str, ColumnType)]) -> Vec<(String, ColumnType)> {
        columns.iter().map(|(n, t)| (n.to_string(), *t)).collect()
    }

    #[test]
    fn the_ddl_declares_exactly_what_the_encoder_writes() {
        let mut enc = IlpEncoder::new(ProtocolVersion::V1, "aggregates", "anomalies");
        enc.push_aggregate(&Aggregate {
            device_id: "d".into(),
            metric: "m".into(),
            window_start: 60_000,
            window_ms: 60_000,
            count: 1,
            ..Default::default()
        })
        .unwrap();
        enc.push_anomaly(&Anomaly {
            device_id: "d".into(),
            metric: "m".into(),
            detector: "z".into(),
            event_time: 1,
            ..Default::default()
        })
        .unwrap();
        let text = std::str::from_utf8(enc.buffer().as_bytes()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            ilp_columns(lines[0]),
            ("aggregates".into(), owned(AGGREGATE_COLUMNS))
        );
        assert_eq!(
            ilp_columns(lines[1]),
            ("anomalies".into(), owned(ANOMALY_COLUMNS))
        );
    }

    #[test]
    fn tables_are_deduplicated_on_timestamp_and_every_symbol() {
        let ddl = table_ddl(&QuestDbConfig::new("http::addr=127.0.0.1:9000;"));
        assert_eq!(
            ddl,
            vec![
                TableDdl {
                    table: "aggregates".into(),
                    sql: "CREATE TABLE IF NOT EXISTS aggregates (ts TIMESTAMP, device_id SYMBOL, \
                          metric SYMBOL, \"window\" SYMBOL, \"count\" LONG, \"min\" DOUBLE, \
                          \"max\" DOUBLE, mean DOUBLE, stddev DOUBLE) TIMESTAMP(ts) PARTITION BY \
                          DAY WAL DEDUP UPSERT KEYS(ts, device_id, metric, \"window\")"
                        .into(),
                },
                TableDdl {
                    table: "anomalies".into(),
                    sql: "CREATE TABLE IF NOT EXISTS anomalies (ts TIMESTAMP, device_id SYMBOL, \
                          metric SYMBOL, detector SYMBOL, value DOUBLE, score DOUBLE) \
                          TIMESTAMP(ts) PARTITION BY DAY WAL DEDUP UPSERT KEYS(ts, device_id, \
                          metric, detector)"
                        .into(),
                },
            ]
        );
    }

    #[test]
    fn unusual_table_names_are_quoted() {
        let mut c = QuestDbConfig::new("http::addr=127.0.0.1:9000;");
        c.aggregates_table = "iot.aggregates".into();
        assert!(table_ddl(&c)[0]
            .sql
            .starts_with("CREATE TABLE IF NOT EXISTS \"iot.aggregates\" ("));
    }
}
