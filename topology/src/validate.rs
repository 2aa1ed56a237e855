//! Checks that need the whole topology: names that must exist, values in range. Pure: no
//! network, only the local schema files are looked at.

use crate::error::{closest, Problem};
use crate::load::Loaded;
use crate::model::API_VERSION;
use crate::stage::StageSpec;

pub(crate) fn check(loaded: &Loaded, api_version: &str, kind: &str, out: &mut Vec<Problem>) {
    let t = &loaded.topology;
    let at = |key: &str| loaded.index.find(key);
    let mut push = |key: String, msg: String, fix: String| {
        let (l, c) = at(&key);
        out.push(Problem::new(l, c, key, msg, fix));
    };

    if api_version != API_VERSION {
        push(
            "apiVersion".into(),
            format!("unsupported apiVersion `{api_version}`"),
            format!("this sluice reads `apiVersion: {API_VERSION}`"),
        );
    }
    if kind != "Topology" {
        push(
            "kind".into(),
            format!("kind is `{kind}`"),
            "write `kind: Topology`".into(),
        );
    }
    let name = &t.metadata.name;
    if !usable_name(name) {
        push(
            "metadata.name".into(),
            format!("application name `{name}` is not usable in topic and group names"),
            "use lowercase letters, digits, `-` and `_`".into(),
        );
    }
    if t.processing.max_batch == 0 {
        push(
            "processing.max_batch".into(),
            "max_batch is 0".into(),
            "use at least 1 (the default is 50000)".into(),
        );
    }
    check_durability(t, &mut push);
    crate::security::check(loaded, &mut push);
    for (topic, spec) in &t.topics {
        if spec.partitions < 1 {
            push(
                format!("topics.{topic}.partitions"),
                format!("topic `{topic}` has {} partitions", spec.partitions),
                "use 1 or more".into(),
            );
        }
        if let Some(schema) = &spec.schema {
            check_file(loaded, &format!("topics.{topic}.schema"), schema, &mut push);
        }
    }

    let topic_names: Vec<&str> = t.topics.keys().map(String::as_str).collect();
    for stage in &t.stages {
        let base = format!("stages.{}", stage.name);
        if !usable_name(&stage.name) {
            push(
                base.clone(),
                format!(
                    "stage name `{}` is not usable in consumer group and changelog topic names",
                    stage.name
                ),
                "use lowercase letters, digits, `-` and `_`".into(),
            );
        }
        let io = stage.spec.inputs().into_iter().chain(stage.spec.outputs());
        for (field, topic) in io {
            if !t.topics.contains_key(topic) {
                let fix = undeclared_topic_fix(topic, &topic_names);
                push(
                    format!("{base}.{field}"),
                    format!("topic `{topic}` is not declared"),
                    fix,
                );
            }
        }
        match &stage.spec {
            StageSpec::Validate(v) => {
                check_file(
                    loaded,
                    &format!("{base}.reader_schema"),
                    &v.reader_schema,
                    &mut push,
                );
                for (metric, [lo, hi]) in &v.ranges {
                    if lo.partial_cmp(hi) != Some(std::cmp::Ordering::Less) {
                        push(
                            format!("{base}.ranges.{metric}"),
                            format!("range for `{metric}` is [{lo}, {hi}]"),
                            "write [min, max] with min < max".into(),
                        );
                    }
                }
                // Each device's window is dedup_window / 8 bytes, in memory and the store.
                if !(1..=1 << 20).contains(&v.dedup_window) {
                    push(
                        format!("{base}.dedup_window"),
                        format!("`dedup_window: {}` is not from 1 to 1048576", v.dedup_window),
                        "remember about as many sequence numbers per device as it may resend, e.g. 1024".into(),
                    );
                }
            }
            StageSpec::Aggregate(a) => {
                if a.windows.is_empty() {
                    push(
                        format!("{base}.windows"),
                        "no windows".into(),
                        "list at least one, e.g. `windows: [1m, 5m]`".into(),
                    );
                }
                for w in &a.windows {
                    if w.as_millis() < 1000 || w.as_millis() % 1000 != 0 {
                        push(
                            format!("{base}.windows"),
                            format!("window {w:?} is not a whole number of seconds"),
                            "use whole seconds or minutes, e.g. `1m`".into(),
                        );
                    }
                }
            }
            StageSpec::Detect(d) => {
                if !(d.threshold > 0.0 && d.threshold <= 1.0) {
                    push(
                        format!("{base}.threshold"),
                        format!("threshold {} is outside (0, 1]", d.threshold),
                        "detector scores are in [0, 1]; pick e.g. 0.9".into(),
                    );
                }
            }
            StageSpec::QuestdbSink(q) => {
                if q.addr.is_none() && t.connections.ilp.is_none() {
                    push(
                        format!("{base}.addr"),
                        "no ILP address for the QuestDB sink".into(),
                        "set `connections.ilp` or the stage's `addr`".into(),
                    );
                }
                if q.inputs.is_empty() {
                    push(
                        format!("{base}.inputs"),
                        "no inputs".into(),
                        "list the aggregate and anomaly topics".into(),
                    );
                }
            }
            // Checked against its input schema when loading (`pipeline::plan_all`); what
            // its sink needs from `connections` is checked here.
            StageSpec::Pipeline(p) => match p.sink_plan() {
                Some(sluice_ops::sink::SinkPlan::Questdb(q))
                    if q.addr.is_none() && t.connections.ilp.is_none() =>
                {
                    push(
                        format!("{base}.sink.questdb"),
                        "no ILP address for the questdb sink".into(),
                        "set `connections.ilp` (e.g. `http::addr=127.0.0.1:9000;protocol_version=2;`) or the sink's `addr`".into(),
                    );
                }
                Some(sluice_ops::sink::SinkPlan::S3Parquet(_)) if t.connections.s3.is_none() => {
                    push(
                        format!("{base}.sink.s3_parquet"),
                        "the s3_parquet sink needs `connections.s3`".into(),
                        "add `connections.s3` with endpoint, bucket and region".into(),
                    );
                }
                _ => {}
            },
            StageSpec::S3ParquetSink(s) => {
                if t.connections.s3.is_none() {
                    push(
                        format!("{base}.kind"),
                        "the S3 sink needs `connections.s3`".into(),
                        "add `connections.s3` with endpoint, bucket and region".into(),
                    );
                }
                if s.rows_per_file == 0 {
                    push(
                        format!("{base}.rows_per_file"),
                        "rows_per_file is 0".into(),
                        "use at least 1 (default 100000)".into(),
                    );
                }
            }
        }
    }
    crate::ingest::check(t, &loaded.path, &mut push);
    crate::fluvio::check(t, &mut push);
}

/// `1 <= min_insync_replicas <= replication`, for the defaults and for every topic that
/// overrides either; each problem is reported at the key that was written.
fn check_durability(t: &crate::model::Topology, push: &mut impl FnMut(String, String, String)) {
    let d = t.topic_defaults;
    let mut one = |base: &str, r: i32, m: i32, r_written: bool, m_written: bool| {
        if r < 1 && r_written {
            push(
                format!("{base}.replication"),
                format!("replication factor {r}"),
                "use 1 or more: 3 in production, 1 on a single-broker test stack".into(),
            );
        } else if r >= 1 && !(1..=r).contains(&m) && (r_written || m_written) {
            let key = if m_written {
                "min_insync_replicas"
            } else {
                "replication"
            };
            push(
                format!("{base}.{key}"),
                format!("min_insync_replicas {m} with replication {r}"),
                format!(
                    "min_insync_replicas must be between 1 and the replication factor ({r}); \
                     with replication 3, min_insync_replicas 2 keeps acknowledged writes on two \
                     brokers and still accepts writes with one broker down"
                ),
            );
        }
    };
    one(
        "topic_defaults",
        d.replication,
        d.min_insync_replicas,
        true,
        true,
    );
    for (topic, spec) in &t.topics {
        one(
            &format!("topics.{topic}"),
            spec.replication.unwrap_or(d.replication),
            spec.min_insync_replicas.unwrap_or(d.min_insync_replicas),
            spec.replication.is_some(),
            spec.min_insync_replicas.is_some(),
        );
    }
}

fn check_file(
    loaded: &Loaded,
    key: &str,
    p: &std::path::Path,
    push: &mut impl FnMut(String, String, String),
) {
    let resolved = loaded.resolve(p);
    if !resolved.is_file() {
        push(
            key.to_string(),
            format!("schema file {} does not exist", resolved.display()),
            "paths are relative to the topology file's folder, e.g. `../schemas/telemetry-v2.avsc`"
                .into(),
        );
    }
}

/// Application and stage names end up in topic and consumer group names (and a stage's name
/// in every `sluice.id` it writes): lowercase letters, digits, `-` and `_`, not empty.
pub(crate) fn usable_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The fix for a reference to topic `topic`, which is not among `declared`.
pub(crate) fn undeclared_topic_fix(topic: &str, declared: &[&str]) -> String {
    match closest(topic, declared.iter().copied()) {
        Some(s) => format!("did you mean `{s}`? Or declare `{topic}` under `topics:`"),
        None => format!("declare `{topic}` under `topics:` with its partition count"),
    }
}
