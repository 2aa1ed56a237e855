//! Every Prometheus metric sluice exports, declared in one place with typed names.

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// The process-wide metrics.
pub struct Metrics {
    pub registry: Registry,
    /// Input records read, by stage.
    pub records_in: IntCounterVec,
    /// Records written, by stage and topic.
    pub records_out: IntCounterVec,
    /// Dead letters written, by stage and error class.
    pub dead_letters: IntCounterVec,
    /// Input records dropped as already seen, by stage and reason (`retransmission`, `replayed_id`).
    pub duplicates_dropped: IntCounterVec,
    /// Fluvio partition streams reopened by sluice's reader, by topic and reason (`gap`:
    /// the client's stream skipped offsets; `stall`: it sent nothing with records owed).
    pub fluvio_reopens: IntCounterVec,
    /// Records a stage wrote to a Fluvio output, by stage and topic.
    pub fluvio_output_records: IntCounterVec,
    /// Records a restored task found already written to its Fluvio output (by the run
    /// before a crash) and skipped, by stage and topic.
    pub fluvio_output_found: IntCounterVec,
    /// Records another writer put in a task's Fluvio partition, by stage and topic.
    pub fluvio_output_conflicts: IntCounterVec,
    /// Records whose device clock was replaced by the broker timestamp.
    pub clock_restamped: IntCounterVec,
    /// Windows closed and emitted, by stage and window length.
    pub windows_closed: IntCounterVec,
    /// Records too late for a window, by stage and window length.
    pub late_records: IntCounterVec,
    /// Records into and out of each operator of a pipeline stage, by stage, operator
    /// (`<position>-<kind>`) and direction (`in`, `out`): a filter's or dedup's drops are
    /// the difference, a window's results its `out`.
    pub operator_records: IntCounterVec,
    /// Updates read from each joined table's topic, by table and result (`applied`,
    /// `deleted` for tombstones, `rejected` when undecodable), and its partitions loaded.
    pub table_updates: IntCounterVec,
    pub table_partitions_loaded: IntGaugeVec,
    /// Join lookups older than the versions a table still holds, answered with the oldest
    /// version held (docs/EXACTLY_ONCE.md, "Joins with tables").
    pub table_stale_lookups: IntCounterVec,
    /// Anomalies and alerts, by stage; suppressed alerts separately.
    pub anomalies: IntCounterVec,
    pub alerts: IntCounterVec,
    pub alerts_suppressed: IntCounterVec,
    /// Commits and how long each took.
    pub commits: IntCounterVec,
    pub commit_seconds: HistogramVec,
    /// Commit attempts that failed and made the task rewind to its last marker.
    pub commit_failures: IntCounterVec,
    /// Restore progress per stage and store: records applied and records to apply.
    pub restore_applied: IntGaugeVec,
    pub restore_total: IntGaugeVec,
    /// Restores done and changelog records they read, by stage and where every store
    /// started: `local` (a matching local checkpoint, e.g. a standby's) or `changelog`.
    pub restores: IntCounterVec,
    pub restore_read: IntCounterVec,
    /// Partitions owned by this instance, by stage.
    pub partitions_owned: IntGaugeVec,
    /// Partitions this instance keeps a standby replica of, by stage, and the changelog
    /// records the standbys wrote to their local stores.
    pub standby_partitions: IntGaugeVec,
    pub standby_records: IntCounterVec,
    /// Input lag per stage and input partition: the partition's end (high watermark) minus
    /// the stage's committed position, refreshed every second from the consumer's
    /// statistics (`runtime/lag.rs`).
    pub consumer_lag: IntGaugeVec,
    /// Rows or objects written by sinks.
    pub sink_rows: IntCounterVec,
    /// `sluice backfill`: input records of the range processed, by stage.
    pub backfill_records: IntCounterVec,
    /// `sluice backfill`: input records of the range not yet committed, by stage (set once
    /// the stage's end offsets are known: at once for a first stage, after its upstream
    /// stages finished for the others).
    pub backfill_remaining: IntGaugeVec,
    /// Milliseconds from an input record's timestamp to the commit that made its output
    /// visible.
    pub latency_ms: HistogramVec,
    /// `sluice ingest`, by bridge: MQTT messages or HTTP requests received, records produced
    /// (acknowledged by the Kafka broker), dead letters by class, MQTT messages acknowledged
    /// or HTTP requests answered `202`.
    pub ingest_received: IntCounterVec,
    pub ingest_produced: IntCounterVec,
    pub ingest_dead_letters: IntCounterVec,
    pub ingest_acked: IntCounterVec,
    /// MQTT messages received and not yet acknowledged; HTTP records accepted and not yet
    /// acknowledged by the Kafka broker.
    pub ingest_acks_pending: IntGaugeVec,
    /// 1 while the bridge's MQTT session is connected, or its HTTP listener serves.
    pub ingest_connected: IntGaugeVec,
    /// MQTT sessions lost (the broker went away or dropped the connection).
    pub ingest_disconnects: IntCounterVec,
    /// Seconds from sending a message's (request's) records to the Kafka broker's
    /// acknowledgement of all.
    pub ingest_produce_seconds: HistogramVec,
    /// Seconds from receiving a message to its MQTT acknowledgement; from receiving a request
    /// to its `202`.
    pub ingest_ack_seconds: HistogramVec,
    /// HTTP requests refused, by bridge and reason (`invalid_token`, `bad_json`, `busy`, ...).
    pub ingest_refused: IntCounterVec,
    /// HTTP responses by bridge and status code.
    pub ingest_http_responses: IntCounterVec,
    /// Token hashes an HTTP bridge holds.
    pub ingest_tokens: IntGaugeVec,
    /// Token file re-reads that failed and token records that were not hashes.
    pub ingest_token_errors: IntCounterVec,
    /// The TSDB (ILP) sink's own: rows, flushes, flush errors, `retrying` while the server
    /// is away. One set per process, shared by every task's sink.
    pub questdb: sluice_connectors::questdb::QuestDbMetrics,
    /// The S3 archive sink's own, likewise (`sluice_s3_retrying` while S3 is away).
    pub s3: sluice_connectors::s3::S3Metrics,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        Metrics {
            records_in: counter(
                &r,
                "sluice_records_in_total",
                "Input records read.",
                &["stage"],
            ),
            records_out: counter(
                &r,
                "sluice_records_out_total",
                "Records written.",
                &["stage", "topic"],
            ),
            dead_letters: counter(
                &r,
                "sluice_dead_letters_total",
                "Dead letters written.",
                &["stage", "class"],
            ),
            duplicates_dropped: counter(
                &r,
                "sluice_duplicates_dropped_total",
                "Input records dropped as already seen.",
                &["stage", "reason"],
            ),
            fluvio_reopens: counter(
                &r,
                "sluice_fluvio_stream_reopens_total",
                "Fluvio partition streams reopened (the client skipped records, or stalled).",
                &["topic", "reason"],
            ),
            fluvio_output_records: counter(
                &r,
                "sluice_fluvio_output_records_total",
                "Records written to a Fluvio output.",
                &["stage", "topic"],
            ),
            fluvio_output_found: counter(
                &r,
                "sluice_fluvio_output_found_total",
                "Records a restored task found already in its Fluvio output and did not write again.",
                &["stage", "topic"],
            ),
            fluvio_output_conflicts: counter(
                &r,
                "sluice_fluvio_output_conflicts_total",
                "Records another writer put in a task's Fluvio output partition.",
                &["stage", "topic"],
            ),
            clock_restamped: counter(
                &r,
                "sluice_clock_restamped_total",
                "Records re-stamped with the broker timestamp.",
                &["stage"],
            ),
            windows_closed: counter(
                &r,
                "sluice_windows_closed_total",
                "Windows closed and emitted.",
                &["stage", "window"],
            ),
            operator_records: counter(
                &r,
                "sluice_operator_records_total",
                "Records into and out of each operator of a pipeline stage.",
                &["stage", "operator", "direction"],
            ),
            table_updates: counter(
                &r,
                "sluice_table_updates_total",
                "Updates read from a joined table's topic, by result.",
                &["table", "result"],
            ),
            table_partitions_loaded: gauge(
                &r,
                "sluice_table_partitions_loaded",
                "Partitions of a joined table read up to their end at least once.",
                &["table"],
            ),
            table_stale_lookups: counter(
                &r,
                "sluice_table_stale_lookups_total",
                "Join lookups older than the versions the table holds, answered with its oldest.",
                &["table"],
            ),
            late_records: counter(
                &r,
                "sluice_late_records_total",
                "Records too late for a window.",
                &["stage", "window"],
            ),
            anomalies: counter(&r, "sluice_anomalies_total", "Anomalies found.", &["stage"]),
            alerts: counter(&r, "sluice_alerts_total", "Alerts raised.", &["stage"]),
            alerts_suppressed: counter(
                &r,
                "sluice_alerts_suppressed_total",
                "Alerts suppressed.",
                &["stage"],
            ),
            commits: counter(&r, "sluice_commits_total", "Commits completed.", &["stage"]),
            commit_seconds: histogram(
                &r,
                "sluice_commit_seconds",
                "Commit duration.",
                &["stage"],
                exponential_buckets(0.001, 2.0, 16).expect("buckets"),
            ),
            commit_failures: counter(
                &r,
                "sluice_commit_failures_total",
                "Failed commits (task rewinds).",
                &["stage"],
            ),
            restore_applied: gauge(
                &r,
                "sluice_restore_applied_records",
                "Changelog records applied by the running restore.",
                &["stage", "store"],
            ),
            restore_total: gauge(
                &r,
                "sluice_restore_total_records",
                "Changelog records the running restore reads.",
                &["stage", "store"],
            ),
            restores: counter(
                &r,
                "sluice_restores_total",
                "Task restores, by where their stores started (local checkpoint or changelog start).",
                &["stage", "from"],
            ),
            restore_read: counter(
                &r,
                "sluice_restore_read_records_total",
                "Changelog records read by restores.",
                &["stage", "from"],
            ),
            partitions_owned: gauge(
                &r,
                "sluice_partitions_owned",
                "Input partitions owned.",
                &["stage"],
            ),
            standby_partitions: gauge(
                &r,
                "sluice_standby_partitions",
                "Partitions kept warm as standby replicas.",
                &["stage"],
            ),
            standby_records: counter(
                &r,
                "sluice_standby_records_total",
                "Changelog records standby replicas wrote to their local stores.",
                &["stage"],
            ),
            consumer_lag: gauge(
                &r,
                "sluice_consumer_lag",
                "Records between the committed position and the high watermark.",
                &["stage", "topic", "partition"],
            ),
            sink_rows: counter(
                &r,
                "sluice_sink_rows_total",
                "Rows written by sinks.",
                &["stage", "sink"],
            ),
            backfill_records: counter(
                &r,
                "sluice_backfill_records_total",
                "Input records of a backfill's range processed.",
                &["stage"],
            ),
            backfill_remaining: gauge(
                &r,
                "sluice_backfill_remaining",
                "Input records of a backfill's range not yet committed.",
                &["stage"],
            ),
            latency_ms: histogram(
                &r,
                "sluice_latency_ms",
                "Input timestamp to committed output, ms.",
                &["stage"],
                exponential_buckets(1.0, 2.0, 20).expect("buckets"),
            ),
            ingest_received: counter(
                &r,
                "sluice_ingest_received_total",
                "MQTT messages or HTTP requests received by an ingest bridge.",
                &["bridge"],
            ),
            ingest_produced: counter(
                &r,
                "sluice_ingest_produced_total",
                "Records an ingest bridge produced, acknowledged by the Kafka broker.",
                &["bridge"],
            ),
            ingest_dead_letters: counter(
                &r,
                "sluice_ingest_dead_letters_total",
                "MQTT messages an ingest bridge sent to its dead-letter topic, by class.",
                &["bridge", "class"],
            ),
            ingest_acked: counter(
                &r,
                "sluice_ingest_acked_total",
                "MQTT messages acknowledged to the MQTT broker; HTTP requests answered 202.",
                &["bridge"],
            ),
            ingest_acks_pending: gauge(
                &r,
                "sluice_ingest_acks_pending",
                "MQTT messages received and not yet acknowledged; HTTP records accepted and not yet acknowledged by the Kafka broker.",
                &["bridge"],
            ),
            ingest_connected: gauge(
                &r,
                "sluice_ingest_connected",
                "1 while the bridge's MQTT session is connected or its HTTP listener serves.",
                &["bridge"],
            ),
            ingest_disconnects: counter(
                &r,
                "sluice_ingest_disconnects_total",
                "MQTT sessions lost: the broker went away or dropped the connection.",
                &["bridge"],
            ),
            ingest_produce_seconds: histogram(
                &r,
                "sluice_ingest_produce_seconds",
                "Seconds from sending a message's or request's records to the Kafka broker's acknowledgement.",
                &["bridge"],
                exponential_buckets(0.0005, 1.5, 24).expect("buckets"),
            ),
            ingest_ack_seconds: histogram(
                &r,
                "sluice_ingest_ack_seconds",
                "Seconds from receiving an MQTT message to acknowledging it, or an HTTP request to its 202.",
                &["bridge"],
                exponential_buckets(0.0005, 1.5, 24).expect("buckets"),
            ),
            ingest_refused: counter(
                &r,
                "sluice_ingest_refused_total",
                "HTTP requests an ingest bridge refused, by reason; nothing of them was produced.",
                &["bridge", "reason"],
            ),
            ingest_http_responses: counter(
                &r,
                "sluice_ingest_http_responses_total",
                "HTTP responses of an ingest bridge, by status code.",
                &["bridge", "code"],
            ),
            ingest_tokens: gauge(
                &r,
                "sluice_ingest_tokens",
                "Device token hashes an HTTP ingest bridge holds.",
                &["bridge"],
            ),
            ingest_token_errors: counter(
                &r,
                "sluice_ingest_token_errors_total",
                "Token file re-reads that failed and token topic records that were not token hashes.",
                &["bridge"],
            ),
            questdb: sluice_connectors::questdb::QuestDbMetrics::register(&r)
                .expect("unique metric"),
            s3: sluice_connectors::s3::S3Metrics::register(&r).expect("unique metric"),
            registry: r,
        }
    }

    /// Text exposition for `/metrics`.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The process-wide metrics, created on first use.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
