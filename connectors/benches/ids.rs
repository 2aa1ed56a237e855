//! What one `sluice.id` header costs per record, produced and consumed through librdkafka,
//! against its in-process mock broker (no service needed, nothing else on the wire).
//!
//! `cargo bench -p sluice-connectors --bench ids [-- RECORDS ROUNDS]`
//!
//! Each round produces RECORDS records (16-byte key, 80-byte payload, 4 partitions; the mock
//! broker drops the oldest records past about 6 MB a partition, so keep RECORDS at or below
//! 150,000, the default is 120,000) with the
//! sluice producer (`TrackedProducer`), once per header variant, then consumes each topic back
//! and reads the header the way the runner does. CPU comes from `/proc/self/task/*/schedstat`
//! (nanoseconds), split into the calling thread and librdkafka's own threads (its broker
//! threads and the mock broker's, which share the process). Variants alternate order by round.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext};
use rdkafka::{Message, Offset, TopicPartitionList};
use sluice_connectors::kafka::{
    consumer_config, ClientOptions, IdWriter, MessageId, TrackedProducer, ID_HEADER,
};

const PARTITIONS: i32 = 4;
const STAGE: &str = "validate";

#[derive(Clone, Copy, Debug)]
enum Variant {
    None,
    Text,
    Binary,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::None => "no header",
            Variant::Text => "text id (before)",
            Variant::Binary => "binary id (now)",
        }
    }
}

/// CPU nanoseconds per thread group: the calling thread, and everything else.
fn cpu() -> (u64, u64) {
    let me = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let mut all = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let ns = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
            all += ns;
        }
    }
    (me, all.saturating_sub(me))
}

fn produce(opts: &ClientOptions, topic: &str, n: u64, v: Variant) -> (u64, u64) {
    let mut producer = TrackedProducer::new(opts).expect("producer");
    let payload = [b'x'; 80];
    let mut key = *b"device-000000000";
    let mut text = String::with_capacity(48);
    let mut binary = IdWriter::new(STAGE);
    let before = cpu();
    for seq in 1..=n {
        let p = (seq % PARTITIONS as u64) as i32;
        key[10..].copy_from_slice(format!("{:06}", seq % 1_000_000).as_bytes());
        let mut rec = BaseRecord::to(topic)
            .partition(p)
            .key(&key[..])
            .payload(&payload[..]);
        match v {
            Variant::None => {}
            Variant::Text => {
                use std::fmt::Write;
                text.clear();
                let _ = write!(text, "{STAGE}/{p}/{seq}");
                rec = rec.headers(OwnedHeaders::new_with_capacity(1).insert(Header {
                    key: ID_HEADER,
                    value: Some(text.as_bytes()),
                }));
            }
            Variant::Binary => {
                rec = rec.headers(OwnedHeaders::new_with_capacity(1).insert(Header {
                    key: ID_HEADER,
                    value: Some(binary.id(p, seq)),
                }));
            }
        }
        producer.send(rec).expect("send");
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let after = cpu();
    drop(producer);
    (after.0 - before.0, after.1 - before.1)
}

fn consume(opts: &ClientOptions, topic: &str, n: u64, v: Variant) -> (u64, u64, u64) {
    let consumer: BaseConsumer = consumer_config(opts, &format!("g-{topic}"))
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let (mut got, mut checksum, mut idle) = (0u64, 0u64, 0u32);
    let before = cpu();
    while got < n {
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            idle += 1;
            assert!(idle < 120, "{topic}: only {got} of {n} records came back");
            continue;
        };
        let m = m.expect("consume");
        got += 1;
        if matches!(v, Variant::None) {
            checksum += m.payload().map_or(0, |p| p.len() as u64);
            continue;
        }
        let id = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == ID_HEADER).and_then(|h| h.value))
            .and_then(|b| MessageId::decode(b).ok())
            .expect("every record carries an id");
        checksum += id.seq;
    }
    let after = cpu();
    (after.0 - before.0, after.1 - before.1, checksum)
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(120_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let mock: MockCluster<'static, DefaultProducerContext> =
        MockCluster::new(1).expect("mock cluster");
    let opts = ClientOptions::new(mock.bootstrap_servers());
    let variants = [Variant::None, Variant::Text, Variant::Binary];
    // (variant, produce|consume) -> per-round (caller ns/rec, librdkafka ns/rec)
    let mut results: BTreeMap<(usize, &str), Vec<(f64, f64)>> = BTreeMap::new();
    println!("{n} records per variant and round, {rounds} rounds, librdkafka mock broker");
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..variants.len()).collect()
        } else {
            (0..variants.len()).rev().collect()
        };
        for &i in &order {
            let v = variants[i];
            let topic = format!("ids-{round}-{i}");
            mock.create_topic(&topic, PARTITIONS, 1).expect("topic");
            let (me, lib) = produce(&opts, &topic, n, v);
            let per = |ns: u64| ns as f64 / n as f64;
            results
                .entry((i, "produce"))
                .or_default()
                .push((per(me), per(lib)));
            let (me, lib, _) = consume(&opts, &topic, n, v);
            results
                .entry((i, "consume"))
                .or_default()
                .push((per(me), per(lib)));
            eprintln!("round {}/{rounds}: {} done", round + 1, v.name());
        }
    }
    println!("| variant | side | caller thread ns/record | librdkafka + mock threads ns/record |");
    println!("|---|---|---|---|");
    for ((i, side), rows) in &results {
        let median = |f: fn(&(f64, f64)) -> f64| {
            let mut xs: Vec<f64> = rows.iter().map(f).collect();
            xs.sort_by(f64::total_cmp);
            xs[xs.len() / 2]
        };
        let each = |f: fn(&(f64, f64)) -> f64| {
            rows.iter()
                .map(|r| format!("{:.0}", f(r)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "| {} | {side} | {:.0} ({}) | {:.0} ({}) |",
            variants[*i].name(),
            median(|r| r.0),
            each(|r| r.0),
            median(|r| r.1),
            each(|r| r.1),
        );
    }
}
