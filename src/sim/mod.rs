//! `sluice simulate`: device telemetry in Confluent wire format, half the fleet on the v1
//! schema and half on v2, with injected anomalies and bad records whose ground truth is kept.

pub mod expect;
pub mod generator;

use std::time::{Duration, Instant};

use rdkafka::producer::BaseRecord;
use sluice_connectors::fluvio::{FluvioClient, FluvioError};
use sluice_connectors::kafka::{ClientOptions, KafkaError, TrackedProducer};
use sluice_schemas::codec::AvroRecord;
use sluice_schemas::wire;

pub use generator::{InjectedAnomaly, Kind, SimConfig, SimRecord, Simulator, Writer};

/// Schema ids the simulator writes with.
#[derive(Debug, Clone, Copy)]
pub struct WriterIds {
    pub v1: u32,
    pub v2: u32,
}

/// An id no registry hands out, for the `unknown_schema_id` bad records.
pub const UNKNOWN_SCHEMA_ID: u32 = 0x7fff_fff0;

fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// Appends the record's bytes as the device would send them (or the broken bytes its kind
/// calls for).
pub fn encode(rec: &SimRecord, ids: WriterIds, out: &mut Vec<u8>) {
    out.clear();
    let t = &rec.telemetry;
    match rec.writer {
        Writer::V1 => {
            wire::write_header(ids.v1, out);
            put_str(out, &t.device_id);
            put_str(out, &t.metric);
            put_long(out, t.event_time);
            out.extend_from_slice(&(t.value as f32).to_le_bytes());
            put_long(out, t.seq);
            put_str(out, "fw-1.4.2");
        }
        Writer::V2 => t.encode_wire(ids.v2, out),
    }
    match rec.kind {
        Kind::WrongMagic => out[0] = 7,
        Kind::Truncated => out.truncate(out.len() / 2),
        Kind::UnknownSchemaId => out[1..5].copy_from_slice(&UNKNOWN_SCHEMA_ID.to_be_bytes()),
        Kind::InvalidBody => {
            // A varint longer than 64 bits where the device id's length belongs.
            out.truncate(5);
            out.extend_from_slice(&[0xff; 10]);
            out.extend_from_slice(&[0x7f; 16]);
        }
        _ => {}
    }
}

/// What a simulation produced.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct SimSummary {
    pub records: u64,
    pub by_kind: std::collections::BTreeMap<String, u64>,
    pub injected: Vec<InjectedAnomaly>,
    pub seconds: f64,
    /// Event time between two readings of one series (ms), to judge how soon a flag came.
    #[serde(default)]
    pub step_ms: i64,
    /// Device ids of this run start with it.
    #[serde(default)]
    pub device_prefix: String,
}

/// Produces the whole simulation to `topic`, at most `rate` records/s (0: as fast as the
/// broker takes them). `progress(records_sent, records_estimated)` is called per step.
pub fn produce(
    opts: &ClientOptions,
    topic: &str,
    cfg: SimConfig,
    ids: WriterIds,
    rate: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<SimSummary, KafkaError> {
    let mut producer = TrackedProducer::new(opts)?;
    let mut send = |key: &[u8], value: &[u8], ts: i64| {
        producer.send(BaseRecord::to(topic).key(key).payload(value).timestamp(ts))
    };
    let started = Instant::now();
    let mut summary = generate(cfg, ids, rate, progress, &mut send)?;
    producer.flush(Duration::from_secs(300))?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// [`produce`] to a topic on Fluvio. Fluvio's producer stamps each batch with its own clock,
/// so the records' timestamps are the time they were produced, not the simulated one
/// (docs/BROKER_GAPS.md); returns once the cluster acknowledged every record.
pub fn produce_fluvio(
    client: &FluvioClient,
    rt: &tokio::runtime::Handle,
    topic: &str,
    cfg: SimConfig,
    ids: WriterIds,
    rate: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<SimSummary, FluvioError> {
    /// Records between waits for acknowledgements: bounds what is held unacknowledged.
    const ACK_EVERY: u64 = 20_000;
    let mut producer = rt.block_on(client.producer(topic))?;
    let mut queued = 0u64;
    let mut send = |key: &[u8], value: &[u8], _ts: i64| {
        rt.block_on(producer.send(key, value))?;
        queued += 1;
        if queued % ACK_EVERY == 0 {
            rt.block_on(producer.flush())?;
        }
        Ok::<(), FluvioError>(())
    };
    let started = Instant::now();
    let mut summary = generate(cfg, ids, rate, progress, &mut send)?;
    rt.block_on(producer.flush())?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Where [`generate`] hands each record: `send(key, value, timestamp)`.
type SendFn<'a, E> = &'a mut dyn FnMut(&[u8], &[u8], i64) -> Result<(), E>;

/// Runs the simulation, handing each record to `send(key, value, timestamp)`.
fn generate<E>(
    cfg: SimConfig,
    ids: WriterIds,
    rate: u64,
    progress: &mut dyn FnMut(u64, u64),
    send: SendFn<'_, E>,
) -> Result<SimSummary, E> {
    let mut sim = Simulator::new(cfg);
    let estimate = sim.config().steps * sim.series_count() as u64;
    let started = Instant::now();
    let mut summary = SimSummary {
        step_ms: sim.config().step_ms,
        device_prefix: sim.config().device_prefix.clone(),
        ..SimSummary::default()
    };
    let mut batch = Vec::new();
    let mut buf = Vec::with_capacity(128);
    while !sim.done() {
        batch.clear();
        sim.step(&mut batch);
        for rec in &batch {
            encode(rec, ids, &mut buf);
            send(rec.telemetry.device_id.as_bytes(), &buf, rec.kafka_ts)?;
            summary.records += 1;
            *summary
                .by_kind
                .entry(format!("{:?}", rec.kind))
                .or_default() += 1;
        }
        progress(summary.records, estimate);
        if rate > 0 {
            // Pace to the target rate: sleep until this many records are due.
            let due = Duration::from_secs_f64(summary.records as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    summary.injected = sim.injected;
    Ok(summary)
}
