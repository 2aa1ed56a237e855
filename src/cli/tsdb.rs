//! `sluice tsdb init FILE`: create the QuestDB tables the topology's sinks write, with their
//! dedup keys, over QuestDB's HTTP `/exec` endpoint. The statements live beside the encoder
//! (`sluice_connectors::questdb::table_ddl`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sluice_connectors::questdb::{create_table, table_ddl, QuestDbConfig, TableDdl};
use sluice_ops::sink::SinkPlan;
use sluice_topology::{StageSpec, Topology};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create the tables of every QuestDB sink of the topology (CREATE TABLE IF NOT EXISTS
    /// ... WAL DEDUP UPSERT KEYS(...)): the built-in `questdb_sink`'s and each pipeline
    /// `questdb` sink's table, so a batch replayed after a crash upserts its rows.
    Init {
        /// The topology file.
        file: PathBuf,
        /// QuestDB's HTTP base URL, e.g. `http://127.0.0.1:9000`. Default: the sink's ILP
        /// address when it is an `http::`/`https::` string (QuestDB serves `/exec` on the same
        /// port as ILP over HTTP).
        #[arg(long)]
        url: Option<String>,
        /// Keep trying this long while nothing answers at the URL (QuestDB still starting, as
        /// in docker compose). Default `0s`: fail at once.
        #[arg(long, default_value = "0s")]
        wait: humantime::Duration,
        /// Create the tables of a backfill's namespace (`sluice backfill --version V`):
        /// `<table>_V`.
        #[arg(long)]
        version: Option<String>,
    },
}

pub(crate) fn run(c: Command) -> anyhow::Result<ExitCode> {
    let Command::Init {
        file,
        url,
        wait,
        version,
    } = c;
    let loaded = match version {
        Some(v) => sluice_topology::load_namespaced(&file, &sluice_topology::Namespace::new(&v)?),
        None => sluice_topology::load(&file),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sinks = sinks(&loaded.topology)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let deadline = Instant::now() + Duration::from(wait);
    for sink in sinks {
        let url = match &url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => QuestDbConfig::new(sink.addr.as_str()).http_url().with_context(|| {
                format!(
                    "the address `{}` of stage {}'s QuestDB sink is not ILP over HTTP, so it does \
                     not name QuestDB's HTTP port; pass --url http://HOST:9000 (QuestDB's HTTP port)",
                    sink.addr, sink.stage
                )
            })?,
        };
        for ddl in &sink.tables {
            rt.block_on(exec(&client, &url, ddl, deadline))?;
            println!("{}: ready at {url} ({})", ddl.table, ddl.sql);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One QuestDB sink of the topology: where it writes and the tables it writes.
#[derive(Debug)]
struct Sink {
    stage: String,
    addr: String,
    tables: Vec<TableDdl>,
}

/// Every QuestDB sink of the topology: `kind: questdb_sink` stages (aggregates and
/// anomalies) and pipelines ending in a `questdb` sink (their mapped table, with its dedup
/// keys). Each sink's address is its own `addr`, else `connections.ilp`.
fn sinks(t: &Topology) -> anyhow::Result<Vec<Sink>> {
    let mut out = Vec::new();
    for s in &t.stages {
        let (own, tables) = match &s.spec {
            StageSpec::QuestdbSink(q) => {
                let addr = q.addr.as_deref().or(t.connections.ilp.as_deref());
                let mut config = QuestDbConfig::new(addr.unwrap_or_default());
                config.aggregates_table = q.aggregates_table.clone();
                config.anomalies_table = q.anomalies_table.clone();
                let tables = table_ddl(&config);
                (q.addr.as_deref(), tables)
            }
            StageSpec::Pipeline(p) => match p.sink_plan() {
                Some(SinkPlan::Questdb(q)) => (q.addr.as_deref(), vec![pipeline_ddl(q)]),
                _ => continue,
            },
            _ => continue,
        };
        let Some(addr) = own.or(t.connections.ilp.as_deref()) else {
            bail!(
                "stage {} has no ILP address; set `connections.ilp` or the sink's `addr`",
                s.name
            );
        };
        out.push(Sink {
            stage: s.name.clone(),
            addr: addr.to_string(),
            tables,
        });
    }
    if out.is_empty() {
        bail!(
            "the topology has no QuestDB sink (a `questdb_sink` stage or a pipeline with \
             `sink: {{ questdb: ... }}`), so no tables to create"
        );
    }
    Ok(out)
}

/// The table of a pipeline's `questdb` sink, deduplicated on its `dedup_keys`.
pub(crate) fn pipeline_ddl(q: &sluice_ops::sink::questdb::QuestdbPlan) -> TableDdl {
    use sluice_connectors::questdb::ColumnType;
    use sluice_ops::sink::questdb::ColumnKind;
    let columns: Vec<(&str, ColumnType)> = q
        .columns
        .iter()
        .map(|c| {
            let ty = match c.kind {
                ColumnKind::Symbol => ColumnType::Symbol,
                ColumnKind::Boolean => ColumnType::Boolean,
                ColumnKind::Long => ColumnType::Long,
                ColumnKind::Double => ColumnType::Double,
                ColumnKind::Varchar => ColumnType::Varchar,
                ColumnKind::Timestamp => ColumnType::Timestamp,
            };
            (c.name.as_str(), ty)
        })
        .collect();
    let keys: Vec<&str> = q.dedup_keys.iter().map(String::as_str).collect();
    create_table(&q.table, &q.timestamp_column, &columns, &keys)
}

/// Runs one statement through `GET {url}/exec?query=...`. QuestDB answers 200 with JSON on
/// success and a non-200 status with `{"error": "..."}` otherwise.
async fn exec(
    client: &reqwest::Client,
    url: &str,
    ddl: &TableDdl,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut endpoint = reqwest::Url::parse(&format!("{url}/exec"))
        .with_context(|| format!("--url {url} is not a URL; write it like http://HOST:9000"))?;
    endpoint.set_query(Some(&format!("query={}", percent_encode(&ddl.sql))));
    let response = loop {
        // The URL is named once below; reqwest's own would repeat the whole statement.
        match client
            .get(endpoint.clone())
            .send()
            .await
            .map_err(|e| e.without_url())
        {
            Ok(r) => break r,
            Err(e) if e.is_connect() && Instant::now() < deadline => {
                let error = error_chain(&e);
                tracing::info!(url, error, "QuestDB does not answer yet; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => bail!(
                "no QuestDB answered at {url} while creating table {}: {e}. Is it running, and is \
                 {url} its HTTP port (9000 by default)? Start it, pass --url, or --wait 60s to \
                 give it time to start.",
                ddl.table,
                e = error_chain(&e),
            ),
        }
    };
    let status = response.status();
    let body = response.text().await.with_context(|| {
        format!(
            "reading QuestDB's answer from {url} for table {}",
            ddl.table
        )
    })?;
    if status.is_success() {
        return Ok(());
    }
    let reason = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or(body);
    bail!(
        "QuestDB at {url} refused to create table {} (HTTP {status}): {reason}. The statement \
         was: {}",
        ddl.table,
        ddl.sql
    )
}

/// An error with its sources, which is where reqwest keeps "connection refused".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Every byte but RFC 3986's unreserved ones as `%XX`: a space is `%20`, never `+`, which
/// not every server reads as a space in a query string.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_sent_percent_encoded() {
        assert_eq!(
            percent_encode("KEYS(ts, \"window\")"),
            "KEYS%28ts%2C%20%22window%22%29"
        );
    }
}
