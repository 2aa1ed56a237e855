//! The S3 Parquet archive against a real S3 API (moto's server): objects read back with the
//! Parquet reader row by row, idempotent rewrites, crash recovery of the batch cut, and an
//! outage in the middle of a run.

mod common;

use std::collections::BTreeSet;

use common::{poll, shared_s3, unique, PrivateMoto};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use sluice_connectors::s3::{
    decode_parquet, ArchiveBatch, ArchivedRow, S3ArchiveConfig, S3ArchiveSink, S3Metrics,
};
use sluice_schemas::records::Telemetry;

/// 2023-11-14T22:40:00Z: batches starting here cross into hour 23.
const T0: i64 = 1_700_001_600_000;

/// Rows `first..=last` at one offset each; every 7th offset is "invalid" (skipped).
fn batch(topic: &str, partition: i32, first: i64, last: i64) -> ArchiveBatch {
    let mut b = ArchiveBatch::new(topic, partition);
    for off in first..=last {
        if off % 7 == 0 {
            assert!(b.skip(off));
            continue;
        }
        let t = Telemetry {
            device_id: format!("dev-{}", off % 4),
            metric: if off % 2 == 0 {
                "temp".into()
            } else {
                "hum".into()
            },
            // 30 s apart: 80 offsets span 40 minutes, across the 23:00 boundary.
            event_time: T0 + off * 30_000,
            value: off as f64 * 0.37 - 5.0,
            seq: 1000 + off,
            quality: (off % 101) as i32,
        };
        assert!(b.push(off, t));
    }
    b
}

fn expected_rows(b: &ArchiveBatch) -> Vec<ArchivedRow> {
    b.rows()
        .iter()
        .zip(b.offsets())
        .map(|(t, &off)| ArchivedRow {
            device_id: t.device_id.clone(),
            metric: t.metric.clone(),
            event_time: t.event_time,
            value: t.value,
            seq: t.seq,
            quality: t.quality,
            kafka_partition: b.partition(),
            kafka_offset: off,
        })
        .collect()
}

async fn keys_under(sink: &S3ArchiveSink, prefix: &str) -> BTreeSet<String> {
    let metas: Vec<_> = sink
        .store()
        .list(Some(&Path::from(prefix)))
        .try_collect()
        .await
        .unwrap();
    metas.into_iter().map(|m| m.location.to_string()).collect()
}

/// Every data object under the prefix, decoded, rows sorted by offset.
async fn read_archive(sink: &S3ArchiveSink, prefix: &str) -> Vec<ArchivedRow> {
    let mut rows = Vec::new();
    for key in keys_under(sink, prefix).await {
        if key.contains("/_manifest/") {
            continue;
        }
        let bytes = sink
            .store()
            .get(&Path::from(key.as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let file_rows = decode_parquet(bytes).unwrap();
        // Each object holds exactly the rows of its hour partition.
        for r in &file_rows {
            let hour = (r.event_time.div_euclid(3_600_000)).rem_euclid(24);
            assert!(
                key.contains(&format!("/hour={hour:02}/")),
                "row at {} is in {key}",
                r.event_time
            );
        }
        rows.extend(file_rows);
    }
    rows.sort_by_key(|r| r.kafka_offset);
    rows
}

fn sink(config: S3ArchiveConfig) -> S3ArchiveSink {
    let mut c = config;
    c.retry_initial = std::time::Duration::from_millis(50);
    c.retry_max = std::time::Duration::from_millis(500);
    c.request_timeout = std::time::Duration::from_secs(5);
    S3ArchiveSink::new(c, S3Metrics::unregistered()).unwrap()
}

#[tokio::test]
async fn batches_across_two_hours_read_back_row_for_row() {
    let mut s = sink(shared_s3().await);
    let prefix = s.config().prefix.clone();
    let topic = unique("raw").replace('_', "-");
    let b1 = batch(&topic, 2, 0, 79);
    let b2 = batch(&topic, 2, 80, 99);
    let r1 = s.write(&b1).await.unwrap();
    assert_eq!(
        r1.objects.len(),
        2,
        "80 readings 30 s apart from 22:40 touch hours 22 and 23: {:?}",
        r1.objects
    );
    assert!(
        r1.objects[0].contains("/date=2023-11-14/hour=22/"),
        "{:?}",
        r1.objects
    );
    assert!(r1.objects[1].ends_with(&format!(
        "/hour=23/{topic}-2-00000000000000000000-00000000000000000079.parquet"
    )));
    s.write(&b2).await.unwrap();
    let mut want = expected_rows(&b1);
    want.extend(expected_rows(&b2));
    assert_eq!(read_archive(&s, &prefix).await, want);
    assert_eq!(s.metrics().rows_written.get() as usize, want.len());
}

#[tokio::test]
async fn rewriting_a_batch_overwrites_the_same_objects() {
    let mut s = sink(shared_s3().await);
    let prefix = s.config().prefix.clone();
    let topic = unique("raw").replace('_', "-");
    let b = batch(&topic, 0, 10, 89);
    let first = s.write(&b).await.unwrap();
    let keys = keys_under(&s, &prefix).await;
    let second = s.write(&b).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(
        keys_under(&s, &prefix).await,
        keys,
        "a rewrite must not add objects"
    );
    assert_eq!(read_archive(&s, &prefix).await, expected_rows(&b));
}

#[tokio::test]
async fn recover_cuts_follows_the_batches_a_crashed_run_started() {
    let mut s = sink(shared_s3().await);
    let topic = unique("raw").replace('_', "-");
    s.write(&batch(&topic, 1, 0, 49)).await.unwrap();
    s.write(&batch(&topic, 1, 50, 64)).await.unwrap();
    s.write(&batch(&topic, 1, 65, 80)).await.unwrap();
    // Committed 50, crashed before committing 81 (one commit wrote two batches): the re-cut
    // must end at 64 and then at 80 again.
    assert_eq!(s.recover_cuts(&topic, 1, 50).await.unwrap(), vec![64, 80]);
    // Never committed: the whole run is followed from the log's start.
    assert_eq!(
        s.recover_cuts(&topic, 1, 0).await.unwrap(),
        vec![49, 64, 80]
    );
    // Nothing started at 81, nor on another partition: the caller may cut freely.
    assert!(s.recover_cuts(&topic, 1, 81).await.unwrap().is_empty());
    assert!(s.recover_cuts(&topic, 0, 50).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_outage_keeps_the_batch_and_the_sink_resumes() {
    let mut moto = PrivateMoto::start().await;
    let mut s = sink(moto.config());
    let topic = unique("raw").replace('_', "-");
    s.write(&batch(&topic, 0, 0, 39)).await.unwrap();

    // moto keeps objects in memory, so what was written before the kill is gone after the
    // restart; what this test checks is the batch that was in flight during the outage.
    moto.kill();
    let b = batch(&topic, 0, 40, 119);
    let metrics = s.metrics().clone();
    let writing = tokio::spawn(async move {
        let report = s.write(&b).await;
        (s, b, report)
    });
    let saw_outage = poll(300, || async {
        metrics.retrying.get() == 1 && metrics.request_errors.get() >= 2
    })
    .await;
    assert!(
        saw_outage,
        "the sink never reported the outage: errors={}",
        metrics.request_errors.get()
    );

    moto.restart().await;
    let (mut s, b, report) = writing.await.unwrap();
    let report = report.unwrap();
    assert_eq!(report.rows, b.len());
    assert_eq!(metrics.retrying.get(), 0);
    assert_eq!(read_archive(&s, "telemetry").await, expected_rows(&b));
    assert_eq!(s.recover_cuts(&topic, 0, 40).await.unwrap(), vec![119]);
}
