//! The sink: encode a batch per hour, write its manifest then its objects, retry until S3
//! took everything, and find a crashed batch's boundary again on restart.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tracing::{debug, info, warn};

use super::layout::{manifest_key, object_key};
use super::{ArchiveBatch, ParquetEncoder, S3ArchiveConfig, S3Metrics};
use crate::util::Backoff;

/// What went wrong in the S3 archive, and whose problem it is.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The user's: fix the config.
    #[error("Invalid S3 archive config: {}.", .0.join("; "))]
    Config(Vec<String>),
    /// The user's or the environment's: the client could not be built from the config.
    #[error("Cannot build the S3 client: {0}.")]
    Client(#[source] object_store::Error),
    /// Ours: the rows could not be encoded as Parquet.
    #[error("Cannot encode Parquet: {0}.")]
    Encode(#[from] parquet::errors::ParquetError),
    /// A request failed in a way retrying cannot fix (e.g. an invalid path).
    #[error("S3 {op} of `{key}` failed: {source}.")]
    Request {
        op: &'static str,
        key: String,
        source: object_store::Error,
    },
    /// Someone else's object sits where a manifest should be.
    #[error("Manifest `{key}` is not one of ours: it does not start with `last_offset=N` (N at least the batch's first offset).")]
    BadManifest { key: String },
    /// Two manifests of one partition overlap: not the batches one run cut.
    #[error("Manifest `{key}` starts inside the batch before it (which ends at offset {before_last}): the manifests are not one run's batches.")]
    Overlapping { key: String, before_last: i64 },
}

/// Where an earlier run ended one of its batches ([`S3ArchiveSink::replay_cuts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedCut {
    /// The batch's last offset.
    pub last: i64,
    /// The batch had no manifest: a range that archived no row, between two that did.
    pub gap: bool,
}

/// What one [`S3ArchiveSink::write`] stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteReport {
    /// Data object keys, in hour order.
    pub objects: Vec<String>,
    pub rows: usize,
    /// Parquet bytes uploaded.
    pub bytes: usize,
}

/// Archives [`ArchiveBatch`]es of valid telemetry as Parquet in S3.
#[derive(Debug)]
pub struct S3ArchiveSink {
    store: Arc<dyn ObjectStore>,
    config: S3ArchiveConfig,
    metrics: S3Metrics,
    encoder: ParquetEncoder,
    backoff: Backoff,
    healthy: bool,
    /// `endpoint/bucket`, for logs.
    target: String,
}

impl S3ArchiveSink {
    /// Validates the config and builds the client; does no I/O.
    pub fn new(config: S3ArchiveConfig, metrics: S3Metrics) -> Result<Self, S3Error> {
        config.validate().map_err(S3Error::Config)?;
        let store = config.build_store().map_err(S3Error::Client)?;
        Ok(Self::with_store(config, store, metrics))
    }

    /// Uses `store` instead of building a client from the config (tests, other backends).
    pub fn with_store(
        config: S3ArchiveConfig,
        store: Arc<dyn ObjectStore>,
        metrics: S3Metrics,
    ) -> Self {
        let target = format!(
            "{}/{}",
            config.endpoint.as_deref().unwrap_or("s3"),
            config.bucket
        );
        Self {
            store,
            backoff: Backoff::new(config.retry_initial, config.retry_max),
            config,
            metrics,
            encoder: ParquetEncoder::new(),
            healthy: true,
            target,
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn config(&self) -> &S3ArchiveConfig {
        &self.config
    }

    pub fn metrics(&self) -> &S3Metrics {
        &self.metrics
    }

    /// True once `batch` holds `target_rows_per_file` rows: time to cut it and [`write`](Self::write).
    pub fn should_cut<T>(&self, batch: &ArchiveBatch<T>) -> bool {
        batch.len() >= self.config.target_rows_per_file
    }

    /// Writes `batch`: its manifest first, then one object per event-time hour, retrying
    /// transient failures with capped exponential backoff until S3 took every object.
    /// Returns only once everything is stored (or on an error retrying cannot fix); commit
    /// the batch's offsets after `Ok`. Writing the same batch again overwrites the same keys.
    pub async fn write(&mut self, batch: &ArchiveBatch) -> Result<WriteReport, S3Error> {
        let Some((first, last)) = batch.offset_range() else {
            return Ok(WriteReport::default());
        };
        let files = self.telemetry_objects(batch)?;
        self.write_objects(batch.topic(), batch.partition(), (first, last), files)
            .await
    }

    /// The objects of a telemetry batch, one per event-time hour: `(key, Parquet bytes,
    /// rows)`, for [`write_objects`](Self::write_objects).
    pub fn telemetry_objects(
        &mut self,
        batch: &ArchiveBatch,
    ) -> Result<Vec<(String, Bytes, usize)>, S3Error> {
        let Some((first, last)) = batch.offset_range() else {
            return Ok(Vec::new());
        };
        let (topic, partition) = (batch.topic(), batch.partition());
        let mut files = Vec::new();
        for (hour, indices) in batch.hour_groups() {
            let key = object_key(&self.config.prefix, hour, topic, partition, first, last);
            let body = Bytes::from(self.encoder.encode(batch, &indices)?);
            files.push((key, body, indices.len()));
        }
        Ok(files)
    }

    /// Writes the objects of the batch of input offsets `first..=last` of `topic`'s
    /// `partition`: `(key, Parquet bytes, rows)` each, keys from
    /// [`object_key_in`](super::object_key_in) for that range. The manifest goes first, then
    /// the objects, retrying as [`write`](Self::write) does; writing the same batch again
    /// overwrites the same keys. [`recover_cuts`](Self::recover_cuts) reads the manifests.
    pub async fn write_objects(
        &mut self,
        topic: &str,
        partition: i32,
        (first, last): (i64, i64),
        files: Vec<(String, Bytes, usize)>,
    ) -> Result<WriteReport, S3Error> {
        let mut report = WriteReport::default();
        if files.is_empty() {
            // Nothing archived in this range, so no object can overlap a re-cut batch.
            return Ok(report);
        }
        let mut manifest = format!("last_offset={last}\n");
        for (key, _, _) in &files {
            manifest.push_str(key);
            manifest.push('\n');
        }
        let manifest_path = Path::from(manifest_key(&self.config.prefix, topic, partition, first));
        let manifest = Bytes::from(manifest);
        self.put(&manifest_path, manifest).await?;
        for (key, body, rows) in files {
            let len = body.len();
            if let Some(delay) = object_delay() {
                tokio::time::sleep(delay).await;
            }
            self.put(&Path::from(key.as_str()), body).await?;
            self.metrics.objects_written.inc();
            self.metrics.rows_written.inc_by(rows as u64);
            self.metrics.bytes_written.inc_by(len as u64);
            report.objects.push(key);
            report.rows += rows;
            report.bytes += len;
        }
        debug!(
            topic,
            partition,
            first,
            last,
            objects = report.objects.len(),
            rows = report.rows,
            "Archived a batch."
        );
        Ok(report)
    }

    /// After a restart that resumes input at offset `first`: the last offsets of the batches
    /// a crashed run started from there and may have partly or wholly uploaded, in order
    /// (empty when none). One commit may write several batches (`target_rows_per_file` cuts
    /// inside it), so this follows their manifests from `first`, each naming where the next
    /// one starts. The caller must cut at exactly these offsets so every rewrite lands on the
    /// same keys; after the last it may cut freely, as nothing past it was written.
    pub async fn recover_cuts(
        &mut self,
        topic: &str,
        partition: i32,
        first: i64,
    ) -> Result<Vec<i64>, S3Error> {
        let mut cuts = Vec::new();
        let mut next = first;
        while let Some(last) = self.manifest_last(topic, partition, next).await? {
            cuts.push(last);
            next = last + 1;
        }
        Ok(cuts)
    }

    /// Where a rebuild of the archive of `topic`'s `partition` from the input's beginning
    /// (`sluice replay`) must cut so that the batches it writes again, those reaching
    /// `quiet_below`, land on the first run's keys: the first offset of the first run's batch
    /// that reaches `quiet_below` (before it, batches are dropped and may be cut anywhere),
    /// and every cut the first run made from there, read from the manifests (listed, so a
    /// missing link does not end the chain). A range between two manifested batches was a
    /// batch that archived no row (no manifest, no object): it is cut as one batch too,
    /// marked `gap`. Reads one manifest per batch from that first one on.
    pub async fn replay_cuts(
        &mut self,
        topic: &str,
        partition: i32,
        quiet_below: i64,
    ) -> Result<(i64, Vec<RecordedCut>), S3Error> {
        use futures::TryStreamExt;
        let one = manifest_key(&self.config.prefix, topic, partition, 0);
        let dir = one.rsplit_once('/').map(|(d, _)| d).unwrap_or_default();
        let store = Arc::clone(&self.store);
        let listed: Vec<object_store::ObjectMeta> = self
            .retrying("LIST", dir, || {
                let (store, dir) = (Arc::clone(&store), Path::from(dir));
                async move { store.list(Some(&dir)).try_collect().await }
            })
            .await?;
        let mut firsts: Vec<i64> = listed
            .iter()
            .filter_map(|o| {
                o.location
                    .as_ref()
                    .rsplit_once('/')
                    .and_then(|(_, f)| f.parse::<i64>().ok())
            })
            .collect();
        firsts.sort_unstable();
        firsts.dedup();
        // The batch that reaches quiet_below starts at the last first at or below it.
        let from = firsts.iter().rposition(|&f| f <= quiet_below).unwrap_or(0);
        let Some(&start) = firsts.get(from) else {
            return Ok((0, Vec::new()));
        };
        let mut cuts = Vec::new();
        let mut next: Option<i64> = None;
        for &f in &firsts[from..] {
            let Some(last) = self.manifest_last(topic, partition, f).await? else {
                continue;
            };
            match next {
                Some(n) if f < n => {
                    return Err(S3Error::Overlapping {
                        key: manifest_key(&self.config.prefix, topic, partition, f),
                        before_last: n - 1,
                    })
                }
                Some(n) if f > n => cuts.push(RecordedCut {
                    last: f - 1,
                    gap: true,
                }),
                _ => {}
            }
            cuts.push(RecordedCut { last, gap: false });
            next = Some(last + 1);
        }
        Ok((start, cuts))
    }

    /// The last offset named by the manifest of the batch that started at `first`, if any.
    async fn manifest_last(
        &mut self,
        topic: &str,
        partition: i32,
        first: i64,
    ) -> Result<Option<i64>, S3Error> {
        let key = manifest_key(&self.config.prefix, topic, partition, first);
        let path = Path::from(key.as_str());
        let store = Arc::clone(&self.store);
        let body = self
            .retrying("GET", &key, || {
                let (store, path) = (Arc::clone(&store), path.clone());
                async move {
                    match store.get(&path).await {
                        Ok(found) => found.bytes().await.map(Some),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        let Some(body) = body else { return Ok(None) };
        let last = std::str::from_utf8(&body)
            .ok()
            .and_then(|text| text.lines().next())
            .and_then(|line| line.strip_prefix("last_offset="))
            .and_then(|n| n.parse::<i64>().ok())
            // A batch ends at or after its first offset; anything else is not ours (and
            // following it could loop).
            .filter(|&last| last >= first)
            .ok_or(S3Error::BadManifest { key })?;
        Ok(Some(last))
    }

    async fn put(&mut self, path: &Path, body: Bytes) -> Result<(), S3Error> {
        let store = Arc::clone(&self.store);
        let key = path.to_string();
        self.retrying("PUT", &key, || {
            let (store, path, payload) = (
                Arc::clone(&store),
                path.clone(),
                PutPayload::from(body.clone()),
            );
            async move { store.put(&path, payload).await.map(drop) }
        })
        .await
    }

    /// Runs `op` until it succeeds or fails in a way a retry cannot fix; logs once when S3
    /// becomes unreachable and once when it is back.
    async fn retrying<T, F, Fut>(
        &mut self,
        op_name: &'static str,
        key: &str,
        mut op: F,
    ) -> Result<T, S3Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        loop {
            match op().await {
                Ok(value) => {
                    if !self.healthy {
                        info!(target_store = %self.target, op = op_name, key, "S3 is answering again; resuming the archive.");
                        self.healthy = true;
                        self.metrics.retrying.set(0);
                    }
                    self.backoff.reset();
                    return Ok(value);
                }
                Err(e) => {
                    self.metrics.request_errors.inc();
                    if !is_retryable(&e) {
                        return Err(S3Error::Request {
                            op: op_name,
                            key: key.to_owned(),
                            source: e,
                        });
                    }
                    let delay = self.backoff.next_delay();
                    if self.healthy {
                        warn!(
                            target_store = %self.target, op = op_name, key, error = %e,
                            "S3 request failed; keeping the batch and retrying with backoff."
                        );
                        self.healthy = false;
                        self.metrics.retrying.set(1);
                    } else {
                        debug!(target_store = %self.target, op = op_name, key, error = %e, ?delay, "S3 request failed again.");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// For fault tests only: `SLUICE_FAULT_S3_OBJECT_DELAY_MS=N` makes every data object upload
/// wait N ms after the batch's manifest, so a test can kill a process in the middle of a
/// batch's upload (between the manifest and the commit) and watch the restart re-cut it.
fn object_delay() -> Option<std::time::Duration> {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("SLUICE_FAULT_S3_OBJECT_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis)
    })
}

/// Outages, throttling, server errors and even auth failures (credentials get rotated) may
/// pass; a malformed request never will.
fn is_retryable(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::InvalidPath { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
    )
}
