//! `sluice backfill --source archive`: the lake as the source, for ranges the topics no
//! longer hold. The built-in archive (`s3_parquet_sink`) keeps every record of its input
//! topic with the partition and offset it was read at, and writes a manifest per batch that
//! names the batch's objects. The backfill restores the range from those objects into the
//! namespace's copy of that topic (`telemetry.valid` becomes `telemetry.valid.v2`), each
//! partition in offset order, and then runs the stages downstream of it as a topic backfill
//! does. How it works and what it guarantees: docs/REPLAY.md, "From the archive".

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sluice_connectors::kafka::{
    consumer_config, ClientOptions, IdWriter, MessageId, TrackedProducer, ID_HEADER,
};
use sluice_connectors::s3::{decode_parquet, manifest_key, time_dir, ArchivedRow, TimePartition};
use sluice_schemas::codec::AvroRecord;
use sluice_schemas::records::Telemetry;
use sluice_topology::{S3Connection, StageSpec, Topology};

use crate::metrics::METRICS;
use crate::runtime::bounds::{Bound, Saved};

/// The file the archive range of a namespace is saved in, inside `<state_dir>/<app>-V/`.
pub(super) const ARCHIVE_RANGE_FILE: &str = "archive-range.json";

/// Written in `<state_dir>/<app>-V/` once the whole range is restored: a rerun goes straight
/// to the stages.
pub(super) const RESTORED_FILE: &str = "archive-restored";

/// The producer name in the `sluice.id` of restored records: downstream stages drop a record
/// restored twice (an interrupted restore resumed) as they drop any replayed record.
const RESTORE_ID: &str = "archive-restore";

/// The label of the restore in `sluice_backfill_records_total{stage}`.
pub(super) const RESTORE_LABEL: &str = "restore";

/// How long one broker request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The archive a backfill reads, found in the live topology.
#[derive(Debug, Clone)]
pub(super) struct Archive {
    /// The archive stage (`kind: s3_parquet_sink`).
    pub(super) stage: String,
    /// The topic it archives, as the live pipeline names it.
    pub(super) topic: String,
    /// Its S3 prefix and connection (the live ones: the archive is read, never written).
    pub(super) prefix: String,
    pub(super) s3: S3Connection,
    /// Its consumer group: what it committed is what is durably archived.
    pub(super) group: String,
    /// The stages that write the archived topic; they do not run, the archive stands in.
    pub(super) writers: Vec<String>,
}

impl Archive {
    /// The archive named `name` (`--archive`), or the topology's only one.
    pub(super) fn find(
        live: &Topology,
        file: &Path,
        name: Option<&str>,
    ) -> anyhow::Result<Archive> {
        let archives: Vec<_> = live
            .stages
            .iter()
            .filter_map(|s| match &s.spec {
                StageSpec::S3ParquetSink(a) if s.part_of.is_none() => Some((s.name.as_str(), a)),
                _ => None,
            })
            .collect();
        let names = || {
            archives
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (stage, spec) = match (name, archives.as_slice()) {
            (_, []) => bail!(
                "{}: --source archive reads the objects of an `s3_parquet_sink` stage, and the topology has none (a pipeline's `s3_parquet` sink does not keep each record's partition and offset, so its objects cannot be put back in order)",
                file.display()
            ),
            (None, [one]) => *one,
            (None, _) => bail!(
                "{}: several archives ({}); name the one to read with --archive",
                file.display(),
                names()
            ),
            (Some(n), _) => *archives.iter().find(|(a, _)| *a == n).ok_or_else(|| {
                anyhow::anyhow!(
                    "--archive {n}: no `s3_parquet_sink` stage `{n}` in {}; archives: {}",
                    file.display(),
                    names()
                )
            })?,
        };
        let s3 = live.connections.s3.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "{}: connections.s3 is missing; the archive of stage {stage} is read from there",
                file.display()
            )
        })?;
        let writers = live
            .stages
            .iter()
            .filter(|s| s.spec.outputs().iter().any(|(_, o)| *o == spec.input))
            .map(|s| s.name.clone())
            .collect();
        Ok(Archive {
            stage: stage.to_string(),
            topic: spec.input.clone(),
            prefix: spec.prefix.clone(),
            s3,
            group: live.group_id(stage),
            writers,
        })
    }

    /// The stages a backfill from this archive runs in the namespaced topology `t`: those
    /// that read `restored` (the namespace's copy of the archived topic) or what such a stage
    /// writes, but not the archive itself (it would write the lake's copy again). With
    /// `requested` (`--stage`), only those (and the parts sluice adds to them), each of which
    /// must be downstream of the archive.
    pub(super) fn stages(
        &self,
        t: &Topology,
        restored: &str,
        requested: &[String],
        file: &Path,
    ) -> anyhow::Result<Vec<String>> {
        let mut topics: BTreeSet<String> = BTreeSet::from([restored.to_string()]);
        let mut down: Vec<String> = Vec::new();
        loop {
            let before = down.len();
            for s in &t.stages {
                let root = s.part_of.as_deref().unwrap_or(&s.name);
                if down.contains(&s.name)
                    || root == self.stage
                    || self.writers.iter().any(|w| w == root)
                {
                    continue;
                }
                if s.spec.inputs().iter().any(|(_, i)| topics.contains(*i)) {
                    down.push(s.name.clone());
                    topics.extend(s.spec.outputs().into_iter().map(|(_, o)| o.to_string()));
                }
            }
            if down.len() == before {
                break;
            }
        }
        let root_of = |n: &str| {
            t.stages
                .iter()
                .find(|s| s.name == n)
                .map(|s| s.part_of.clone().unwrap_or_else(|| s.name.clone()))
                .unwrap_or_else(|| n.to_string())
        };
        for r in requested {
            if !down.iter().any(|d| root_of(d) == *r) {
                let roots: BTreeSet<String> = down.iter().map(|d| root_of(d)).collect();
                bail!(
                    "--stage {r}: with --source archive only the stages downstream of the archived topic `{}` run ({}); `{r}` does not read it nor anything made from it",
                    self.topic,
                    roots.into_iter().collect::<Vec<_>>().join(", ")
                );
            }
        }
        if !requested.is_empty() {
            down.retain(|d| requested.contains(&root_of(d)));
        }
        // Every other input of a running stage must come from the archive too, or be a
        // source no stage writes (a table): a topic another stage writes would be read as
        // the live pipeline wrote it (or never written, in the namespace), not from the
        // archive.
        for name in &down {
            let spec = t.stage(name).expect("a stage of t");
            for (_, input) in spec.inputs() {
                if input == restored {
                    continue;
                }
                let writers: Vec<&str> = t
                    .stages
                    .iter()
                    .filter(|s| s.spec.outputs().iter().any(|(_, o)| *o == input))
                    .map(|s| s.name.as_str())
                    .collect();
                if writers.is_empty() || writers.iter().any(|w| down.iter().any(|d| d == w)) {
                    continue;
                }
                let upstream = writers.iter().any(|w| {
                    let root = root_of(w);
                    root == self.stage || self.writers.contains(&root)
                });
                if upstream {
                    bail!(
                        "{}: stage {name} also reads `{input}`, which only stages upstream of the archive write; a backfill from the archive cannot give it those records (backfill it from the topics instead)",
                        file.display()
                    );
                }
                bail!(
                    "{}: stage {name} reads `{input}`, written by stage {}, which does not run in this backfill: add --stage {} (from the archive, the stages between the archive and the ones asked for run too)",
                    file.display(),
                    writers.join(", "),
                    root_of(writers[0])
                );
            }
        }
        if down.is_empty() {
            bail!(
                "{}: no stage reads the archived topic `{}`; nothing to backfill from the archive",
                file.display(),
                self.topic
            );
        }
        Ok(down)
    }

    fn store(&self) -> anyhow::Result<Arc<dyn ObjectStore>> {
        let config = crate::stages::archive::s3_config(&self.s3, &self.prefix, 1);
        config
            .build_store()
            .with_context(|| format!("the S3 archive s3://{}/{}", self.s3.bucket, self.prefix))
    }

    /// `s3://bucket/prefix`, for messages.
    pub(super) fn url(&self) -> String {
        format!("s3://{}/{}", self.s3.bucket, self.prefix.trim_matches('/'))
    }
}

/// One batch of the archive: input offsets `first..=last` of one partition, in one object
/// per event-time hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct BatchRef {
    pub(super) first: i64,
    pub(super) last: i64,
    pub(super) objects: Vec<String>,
}

/// The range of one partition: offsets `[start, end)` of the archived topic, and the batches
/// that hold them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PartitionRange {
    pub(super) partition: i32,
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) batches: Vec<BatchRef>,
}

/// The range of an archive backfill, captured once and saved: a rerun restores the very
/// same objects even though the live archive grew meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ArchiveRange {
    pub(super) from: String,
    pub(super) to: String,
    pub(super) captured_at_ms: i64,
    /// `s3://bucket/prefix` and the archived topic, for the summary.
    pub(super) archive: String,
    pub(super) topic: String,
    pub(super) partitions: Vec<PartitionRange>,
}

impl Saved for ArchiveRange {
    fn args(&self) -> (&str, &str) {
        (&self.from, &self.to)
    }
}

impl ArchiveRange {
    /// Offsets the range spans (an upper bound of its records: the archive skips offsets
    /// that held repeats).
    pub(super) fn span(&self) -> i64 {
        self.partitions.iter().map(|p| p.end - p.start).sum()
    }

    pub(super) fn batches(&self) -> usize {
        self.partitions.iter().map(|p| p.batches.len()).sum()
    }
}

/// Finds the range in the archive: per partition of the archived topic, the batches the
/// archive stage committed (its group's offset is past them: every object is stored), from
/// the first record stamped at or after `--from` (or the first archived) to the first
/// stamped at or after `--to` (or the end of what is archived), as `offsets_for_times` does
/// on a topic.
pub(super) fn capture(
    archive: &Archive,
    opts: &ClientOptions,
    partitions: i32,
    (from, from_arg): (Bound, &str),
    (to, to_arg): (Bound, &str),
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<ArchiveRange> {
    if let Some(live) = live_partitions(opts, &archive.topic)? {
        anyhow::ensure!(
            live == partitions,
            "`{}` has {live} partitions on the broker, and the topology declares {partitions}: the restored copy needs the archived topic's partitions; declare {live}",
            archive.topic
        );
    }
    let committed = committed_offsets(opts, &archive.group, &archive.topic, partitions)?;
    if committed.is_empty() {
        bail!(
            "group {} (stage {}, the archive) has no committed offset on `{}`: the archive never committed, or its offsets expired while it was stopped (offsets.retention.minutes); without them no batch of {} is known to be complete",
            archive.group,
            archive.stage,
            archive.topic,
            archive.url()
        );
    }
    let store = archive.store()?;
    let mut out = Vec::new();
    for partition in 0..partitions {
        let Some(done) = committed.get(&partition).copied() else {
            // The archive never committed this partition: nothing of it is durably stored.
            tracing::warn!(group = %archive.group, topic = %archive.topic, partition, "The archive has no committed offset for this partition; none of its objects is read.");
            continue;
        };
        let batches = rt.block_on(manifests(&*store, archive, partition, done))?;
        let Some(first_batch) = batches.first() else {
            continue;
        };
        let start = match from {
            Bound::At(t) => rt
                .block_on(first_at(&*store, &batches, partition, t))?
                .unwrap_or(done),
            _ => first_batch.first,
        };
        let end = match to {
            Bound::At(t) => rt
                .block_on(first_at(&*store, &batches, partition, t))?
                .unwrap_or(done),
            _ => done,
        };
        let batches: Vec<BatchRef> = batches
            .into_iter()
            .filter(|b| b.last >= start && b.first < end)
            .collect();
        if start < end && !batches.is_empty() {
            out.push(PartitionRange {
                partition,
                start,
                end,
                batches,
            });
        }
    }
    if out.is_empty() {
        bail!(
            "the archive {} holds no record of `{}` in --from {from_arg} --to {to_arg} (only what stage {} committed counts: group {})",
            archive.url(),
            archive.topic,
            archive.stage,
            archive.group
        );
    }
    Ok(ArchiveRange {
        from: from_arg.to_string(),
        to: to_arg.to_string(),
        captured_at_ms: crate::runtime::bounds::now_ms(),
        archive: archive.url(),
        topic: archive.topic.clone(),
        partitions: out,
    })
}

/// How many partitions `topic` has on the broker; `None` when it no longer exists.
fn live_partitions(opts: &ClientOptions, topic: &str) -> anyhow::Result<Option<i32>> {
    let consumer: BaseConsumer = consumer_config(opts, "sluice-backfill-archive")
        .create()
        .with_context(|| format!("a client for the Kafka broker at {}", opts.brokers))?;
    let md = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .with_context(|| {
            format!(
                "reading {topic}'s partitions from the broker at {}",
                opts.brokers
            )
        })?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as i32)
        .filter(|n| *n > 0))
}

/// The offsets the archive's group committed on `topic`, per partition that has one.
fn committed_offsets(
    opts: &ClientOptions,
    group: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = consumer_config(opts, group)
        .set("enable.auto.commit", "false")
        .create()
        .with_context(|| format!("a client for the Kafka broker at {}", opts.brokers))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, TIMEOUT).with_context(|| {
        format!(
            "reading what group {group} (the archive) committed on {topic} from the broker at {}",
            opts.brokers
        )
    })?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// The batches of `partition` whose every record is below `done` (committed), in offset
/// order, from their manifests (`last_offset=N`, then the objects' keys).
async fn manifests(
    store: &dyn ObjectStore,
    archive: &Archive,
    partition: i32,
    done: i64,
) -> anyhow::Result<Vec<BatchRef>> {
    let one = manifest_key(&archive.prefix, &archive.topic, partition, 0);
    let dir = one.rsplit_once('/').map(|(d, _)| d).unwrap_or_default();
    let listed: Vec<_> = store
        .list(Some(&ObjectPath::from(dir)))
        .try_collect()
        .await
        .with_context(|| format!("listing the manifests in {}/{dir}", archive.url()))?;
    // One manifest per batch (per commit that archived rows): read 16 at a time.
    let wanted: Vec<(i64, ObjectPath)> = listed
        .into_iter()
        .filter_map(|o| {
            let first = o
                .location
                .as_ref()
                .rsplit_once('/')
                .and_then(|(_, f)| f.parse::<i64>().ok())?;
            (first < done).then_some((first, o.location))
        })
        .collect();
    let read: Vec<(i64, ObjectPath, Bytes)> = futures::stream::iter(wanted)
        .map(|(first, path)| async move {
            let text = get(store, &path, archive).await?;
            Ok::<_, anyhow::Error>((first, path, text))
        })
        .buffered(16)
        .try_collect()
        .await?;
    let mut batches = Vec::new();
    for (first, path, text) in read {
        let key = path.as_ref();
        let text =
            std::str::from_utf8(&text).with_context(|| format!("manifest {key} is not text"))?;
        let mut lines = text.lines();
        let last: i64 = lines
            .next()
            .and_then(|l| l.strip_prefix("last_offset="))
            .and_then(|n| n.parse().ok())
            .with_context(|| {
                format!(
                    "manifest {key}: the first line is not `last_offset=N`; not written by sluice?"
                )
            })?;
        if last >= done {
            // A batch the archive has not committed: its objects may be missing yet.
            continue;
        }
        batches.push(BatchRef {
            first,
            last,
            objects: lines
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        });
    }
    batches.sort_by_key(|b| b.first);
    for w in batches.windows(2) {
        if w[1].first <= w[0].last {
            bail!(
                "the archive {} has overlapping batches of {} partition {partition}: {}..={} and {}..={}",
                archive.url(),
                archive.topic,
                w[0].first,
                w[0].last,
                w[1].first,
                w[1].last
            );
        }
    }
    Ok(batches)
}

/// The first offset (in offset order) of `partition` whose record is stamped at or after
/// `t`, reading only the objects of hours from `t`'s on (a record's object is its event
/// hour's, so earlier hours hold none).
async fn first_at(
    store: &dyn ObjectStore,
    batches: &[BatchRef],
    partition: i32,
    t: i64,
) -> anyhow::Result<Option<i64>> {
    let hour = time_dir(TimePartition::Hour, Some(t));
    for b in batches {
        let mut best: Option<i64> = None;
        for key in b.objects.iter().filter(|k| hour_dir(k) >= hour.as_str()) {
            for r in read_object(store, key).await? {
                if r.kafka_partition == partition && r.event_time >= t {
                    best = Some(best.map_or(r.kafka_offset, |b| b.min(r.kafka_offset)));
                }
            }
        }
        if best.is_some() {
            return Ok(best);
        }
    }
    Ok(None)
}

/// `date=YYYY-MM-DD/hour=HH` of an object key (ordered as the hours are).
fn hour_dir(key: &str) -> &str {
    let dir = key.rsplit_once('/').map(|(d, _)| d).unwrap_or_default();
    dir.find("date=").map(|i| &dir[i..]).unwrap_or_default()
}

async fn get(
    store: &dyn ObjectStore,
    path: &ObjectPath,
    archive: &Archive,
) -> anyhow::Result<Bytes> {
    let got = store
        .get(path)
        .await
        .with_context(|| format!("reading {} from {}", path, archive.url()))?;
    Ok(got.bytes().await?)
}

async fn read_object(store: &dyn ObjectStore, key: &str) -> anyhow::Result<Vec<ArchivedRow>> {
    let path = ObjectPath::from(key);
    let bytes = match store.get(&path).await {
        Ok(g) => g.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => bail!(
            "archive object {key} is missing, though its batch's manifest names it and the archive committed past it (deleted by hand or by a lifecycle rule?)"
        ),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading archive object {key}"))),
    };
    decode_parquet(bytes)
        .with_context(|| format!("archive object {key} is not the archive's Parquet"))
}

/// What the restore did.
#[derive(Debug, Default)]
pub(super) struct Restored {
    pub(super) records: u64,
    /// Records a previous, interrupted run had already restored.
    pub(super) resumed: u64,
    pub(super) objects: u64,
    pub(super) interrupted: bool,
}

/// Restores the range into `restored`, partition for partition and in offset order: each
/// record as the archived topic held it (key the device, the record's Avro body under
/// `schema_id`, timestamp its event time), numbered with a `sluice.id` per partition. A run
/// interrupted part way resumes after the last record the topic holds; anything it then
/// writes twice carries the same id, which the stages reading it drop.
#[allow(clippy::too_many_arguments)]
pub(super) fn restore(
    archive: &Archive,
    range: &ArchiveRange,
    opts: &ClientOptions,
    restored: &str,
    schema_id: u32,
    rt: &tokio::runtime::Runtime,
    stop: &AtomicBool,
    quiet: bool,
) -> anyhow::Result<Restored> {
    let store = archive.store()?;
    let mut producer = TrackedProducer::new(opts)
        .with_context(|| format!("a producer for the Kafka broker at {}", opts.brokers))?;
    let reader: BaseConsumer = consumer_config(opts, "sluice-backfill-restore")
        .set("enable.auto.commit", "false")
        .create()?;
    let bar = ProgressBar::with_draw_target(
        Some(range.span().max(0) as u64),
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "restore [{bar:30}] {pos}/{len} offsets {per_sec} ETA {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let records = METRICS.backfill_records.with_label_values(&[RESTORE_LABEL]);
    let remaining = METRICS
        .backfill_remaining
        .with_label_values(&[RESTORE_LABEL]);
    remaining.set(range.span());
    let mut ids = IdWriter::new(RESTORE_ID);
    let mut out = Restored::default();
    let mut buf = Vec::with_capacity(128);
    let mut covered = 0i64;
    for p in &range.partitions {
        let (done, held) = last_restored(&reader, restored, p.partition)?;
        // Records are written in order with ids 1, 2, ...: a partition holding fewer records
        // than its last id lost some (a delivery that failed for good before later ones
        // succeeded), and the stages reading it would drop them if written again (their
        // ids are below the last). More is fine: repeats, dropped by id.
        if (held as u64) < done {
            bail!(
                "{restored} partition {} holds {held} records but its last restored id is {done}: records in between were lost by a failed delivery; a rerun cannot put them back in order. Backfill into another --version",
                p.partition
            );
        }
        let mut seq = 0u64;
        for b in &p.batches {
            if stop.load(Ordering::Relaxed) {
                out.interrupted = true;
                break;
            }
            let mut rows = Vec::new();
            for key in &b.objects {
                rows.extend(
                    rt.block_on(read_object(&*store, key))?
                        .into_iter()
                        .filter(|r| {
                            r.kafka_partition == p.partition
                                && r.kafka_offset >= p.start
                                && r.kafka_offset < p.end
                        }),
                );
                out.objects += 1;
            }
            rows.sort_by_key(|r| r.kafka_offset);
            if let Some(w) = rows
                .windows(2)
                .find(|w| w[0].kafka_offset == w[1].kafka_offset)
            {
                bail!(
                    "the archive {} holds offset {} of {} partition {} twice (batch {}..={})",
                    archive.url(),
                    w[0].kafka_offset,
                    archive.topic,
                    p.partition,
                    b.first,
                    b.last
                );
            }
            for r in &rows {
                seq += 1;
                if seq <= done {
                    out.resumed += 1;
                    continue;
                }
                let t = Telemetry {
                    device_id: r.device_id.clone(),
                    metric: r.metric.clone(),
                    event_time: r.event_time,
                    value: r.value,
                    seq: r.seq,
                    quality: r.quality,
                };
                buf.clear();
                t.encode_wire(schema_id, &mut buf);
                let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
                    key: ID_HEADER,
                    value: Some(ids.id(p.partition, seq)),
                });
                producer
                    .send(
                        BaseRecord::to(restored)
                            .partition(p.partition)
                            .key(t.device_id.as_bytes())
                            .payload(&buf[..])
                            .timestamp(r.event_time)
                            .headers(headers),
                    )
                    .with_context(|| format!("writing {restored}"))?;
                out.records += 1;
                records.inc();
            }
            // Every batch acknowledged before the next: a failure leaves a prefix restored.
            producer
                .flush(Duration::from_secs(300))
                .with_context(|| format!("writing {restored} partition {}", p.partition))?;
            let reached = (b.last + 1).min(p.end) - p.start;
            bar.set_position((covered + reached.max(0)) as u64);
            remaining.set(range.span() - covered - reached.max(0));
            bar.set_message(format!("{} records", out.records + out.resumed));
        }
        if out.interrupted {
            break;
        }
        covered += p.end - p.start;
    }
    producer
        .flush(Duration::from_secs(300))
        .with_context(|| format!("writing {restored}"))?;
    if out.interrupted {
        bar.abandon_with_message("stopped");
    } else {
        remaining.set(0);
        bar.finish_with_message(format!("{} records", out.records + out.resumed));
    }
    Ok(out)
}

/// The sequence of the last restored record `restored`'s `partition` holds (0: none), read
/// from its `sluice.id`, and how many records the partition holds.
fn last_restored(
    reader: &BaseConsumer,
    restored: &str,
    partition: i32,
) -> anyhow::Result<(u64, i64)> {
    let (low, high) = reader
        .fetch_watermarks(restored, partition, TIMEOUT)
        .with_context(|| format!("reading the end of {restored} partition {partition}"))?;
    if high <= low {
        return Ok((0, 0));
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(restored, partition, Offset::Offset(high - 1))?;
    reader.assign(&tpl)?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        let Some(m) = reader.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.with_context(|| {
            format!("reading the last record of {restored} partition {partition}")
        })?;
        if m.partition() != partition || m.offset() != high - 1 {
            continue;
        }
        let id = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == ID_HEADER).and_then(|h| h.value))
            .and_then(|v| MessageId::decode(v).ok());
        return match id {
            Some(id) if id.stage == RESTORE_ID && id.partition == partition => {
                Ok((id.seq, high - low))
            }
            _ => bail!(
                "{restored} partition {partition} holds records the archive restore did not write; it is the namespace's copy of the archived topic: pick another --version"
            ),
        };
    }
    bail!(
        "the last record of {restored} partition {partition} (offset {}) did not arrive in {} s",
        high - 1,
        TIMEOUT.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_topology::Namespace;

    const IOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/topology/iot.yaml");

    #[test]
    fn object_hours_order_as_the_time_directories() {
        let key = "archive/date=2026-12-06/hour=09/t.valid-1-00000000000000000007-00000000000000000009.parquet";
        assert_eq!(hour_dir(key), "date=2026-12-06/hour=09");
        let t = 1_796_552_400_000; // 2026-12-06T10:20:00Z
        let dir = time_dir(TimePartition::Hour, Some(t));
        assert_eq!(dir, "date=2026-12-06/hour=10");
        assert!(hour_dir(key) < dir.as_str());
        assert!("date=2026-12-07/hour=00" > dir.as_str());
    }

    /// The reference topology: the archive of `telemetry.valid` stands in for validate, and
    /// aggregate, detect and tsdb run from its restored copy.
    #[test]
    fn the_stages_downstream_of_the_archived_topic_run() {
        let path = Path::new(IOT);
        let live = sluice_topology::load(path).unwrap().topology;
        let archive = Archive::find(&live, path, None).unwrap();
        assert_eq!(
            (archive.stage.as_str(), archive.topic.as_str()),
            ("archive", "telemetry.valid")
        );
        assert_eq!(archive.writers, ["validate"]);
        assert_eq!(archive.group, "iot-archive");
        let ns = Namespace::new("v2").unwrap().with_topic(&archive.topic);
        let t = sluice_topology::load_namespaced(path, &ns)
            .unwrap()
            .topology;
        let restored = ns.topic(&archive.topic);
        let mut all = archive.stages(&t, &restored, &[], path).unwrap();
        all.sort();
        assert_eq!(all, ["aggregate", "detect", "tsdb"]);
        let only = archive
            .stages(&t, &restored, &["detect".to_string()], path)
            .unwrap();
        assert_eq!(only, ["detect"]);
        let e = archive
            .stages(&t, &restored, &["validate".to_string()], path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("downstream of the archived topic"), "{e}");
        // tsdb alone would read the live aggregates and anomalies, not the archive's.
        let ns = Namespace::new("v2")
            .unwrap()
            .only(["tsdb".to_string()])
            .with_topic(&archive.topic);
        let t = sluice_topology::load_namespaced(path, &ns)
            .unwrap()
            .topology;
        let e = archive
            .stages(&t, &restored, &["tsdb".to_string()], path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("add --stage aggregate"), "{e}");
        let e = Archive::find(&live, path, Some("nosuch"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("archives: archive"), "{e}");
    }
}
