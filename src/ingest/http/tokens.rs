//! The devices' bearer tokens: only their SHA-256 hashes are kept (in a file or a compacted
//! topic), each naming its device. A request's token is hashed and looked up; a token maps
//! to one device, a device may have several tokens (rotation).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice_connectors::kafka::{consumer_config, ClientOptions};

use crate::metrics::METRICS;

type Hash = [u8; 32];

/// Token hashes and their devices, shared by every request of a bridge.
#[derive(Default)]
pub struct Tokens {
    maps: RwLock<Maps>,
}

#[derive(Default)]
struct Maps {
    by_hash: HashMap<Hash, Arc<str>>,
    by_device: HashMap<Arc<str>, Vec<Hash>>,
}

/// The SHA-256 of `token`.
pub fn hash(token: &str) -> Hash {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut h = [0u8; 32];
    h.copy_from_slice(d.as_ref());
    h
}

fn parse_hex(s: &str) -> Option<Hash> {
    if !sluice_topology::ingest::http::is_token_hash(s) {
        return None;
    }
    let mut h = [0u8; 32];
    for (i, b) in h.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(h)
}

impl Tokens {
    /// The device `token` belongs to.
    pub fn device_of(&self, token: &str) -> Option<Arc<str>> {
        let h = hash(token);
        self.maps
            .read()
            .expect("token lock")
            .by_hash
            .get(&h)
            .cloned()
    }

    /// Token hashes held.
    pub fn len(&self) -> usize {
        self.maps.read().expect("token lock").by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces every token with `entries` (hash in hex, device), as read from a file.
    fn replace_all(&self, entries: &[(String, String)]) {
        let mut maps = Maps::default();
        for (hex, device) in entries {
            let Some(h) = parse_hex(hex) else { continue }; // checked by the file's parser
            let device: Arc<str> = maps
                .by_device
                .get_key_value(device.as_str())
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| device.as_str().into());
            maps.by_hash.insert(h, device.clone());
            maps.by_device.entry(device).or_default().push(h);
        }
        *self.maps.write().expect("token lock") = maps;
    }

    /// Sets `device`'s tokens to `hashes` (none revokes every token it had). A hash held by
    /// another device moves to this one: the topic's last word wins.
    fn set_device(&self, device: &str, hashes: Vec<Hash>) {
        let mut maps = self.maps.write().expect("token lock");
        if let Some(old) = maps.by_device.remove(device) {
            for h in old {
                maps.by_hash.remove(&h);
            }
        }
        if hashes.is_empty() {
            return;
        }
        let device: Arc<str> = device.into();
        for h in &hashes {
            if let Some(prev) = maps.by_hash.insert(*h, device.clone()) {
                if let Some(v) = maps.by_device.get_mut(&prev) {
                    v.retain(|x| x != h);
                }
            }
        }
        maps.by_device.insert(device, hashes);
    }
}

/// A token topic value: hashes in hex separated by spaces, commas or newlines. `None` when
/// any part is not a hash (the device's tokens are then revoked: fail closed).
fn parse_value(v: &str) -> Option<Vec<Hash>> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| parse_hex(&p.to_ascii_lowercase()))
        .collect()
}

/// Where a bridge's tokens come from.
pub enum TokenSource {
    /// A YAML file, re-read when its modification time or size changes.
    File(PathBuf),
    /// A compacted topic keyed by device id, read from its beginning and followed.
    Topic { topic: String, opts: ClientOptions },
}

impl TokenSource {
    /// Loads every token, then keeps them current in the background until `stop`. Returns
    /// once the first load is complete: the file read, or the topic read up to the end
    /// it had when the bridge started. An error names the file or the topic and broker.
    pub async fn start(
        self,
        bridge: &str,
        tokens: Arc<Tokens>,
        stop: Arc<AtomicBool>,
    ) -> Result<(), String> {
        let gauge = METRICS.ingest_tokens.with_label_values(&[bridge]);
        match self {
            TokenSource::File(path) => {
                let entries = sluice_topology::ingest::read_token_file(&path)?;
                tokens.replace_all(&entries);
                gauge.set(tokens.len() as i64);
                tracing::info!(bridge, file = %path.display(), tokens = tokens.len(), "Token file read.");
                let bridge = bridge.to_string();
                tokio::spawn(watch_file(bridge, path, tokens, stop));
                Ok(())
            }
            TokenSource::Topic { topic, opts } => {
                let bridge = bridge.to_string();
                let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
                std::thread::Builder::new()
                    .name(format!("tokens-{bridge}"))
                    .spawn(move || follow_topic(&bridge, &topic, &opts, &tokens, &stop, loaded_tx))
                    .map_err(|e| format!("starting the token reader: {e}"))?;
                loaded_rx.await.map_err(|_| {
                    "the token reader stopped before it had read the topic".to_string()
                })?
            }
        }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Re-reads the file when it changes (checked every second). A file that no longer parses
/// keeps the tokens read before (logged, counted): a half-written edit locks nobody out.
async fn watch_file(bridge: String, path: PathBuf, tokens: Arc<Tokens>, stop: Arc<AtomicBool>) {
    let gauge = METRICS.ingest_tokens.with_label_values(&[&bridge]);
    let errors = METRICS.ingest_token_errors.with_label_values(&[&bridge]);
    let mut last = stamp(&path);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let now = stamp(&path);
        if now == last {
            continue;
        }
        last = now;
        match sluice_topology::ingest::read_token_file(&path) {
            Ok(entries) => {
                tokens.replace_all(&entries);
                gauge.set(tokens.len() as i64);
                tracing::info!(bridge, file = %path.display(), tokens = tokens.len(), "Token file re-read.");
            }
            Err(e) => {
                errors.inc();
                tracing::error!(bridge, error = %e, "Token file not re-read; the tokens read before stay in force.");
            }
        }
    }
}

/// Reads the token topic from its beginning on a thread of its own; sends on `loaded` once
/// it reached the end each partition had at the start, then follows it until `stop`.
fn follow_topic(
    bridge: &str,
    topic: &str,
    opts: &ClientOptions,
    tokens: &Tokens,
    stop: &AtomicBool,
    loaded: tokio::sync::oneshot::Sender<Result<(), String>>,
) {
    let gauge = METRICS.ingest_tokens.with_label_values(&[bridge]);
    let errors = METRICS.ingest_token_errors.with_label_values(&[bridge]);
    let start = || -> Result<(BaseConsumer, HashMap<i32, i64>), String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            format!("token topic {topic} at {}: {what}: {e}", opts.describe())
        };
        // No group is joined (partitions are assigned), so the group id is only a label.
        let consumer: BaseConsumer = consumer_config(opts, &format!("sluice-tokens-{bridge}"))
            .create()
            .map_err(|e| fail("consumer", &e))?;
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(20))
            .map_err(|e| fail("metadata", &e))?;
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if parts.is_empty() {
            return Err(fail("no partitions", &"does the topic exist?"));
        }
        let mut ends = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in parts {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(20))
                .map_err(|e| fail("end offsets", &e))?;
            if high > low {
                ends.insert(p, high);
            }
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| fail("assign", &e))?;
        }
        consumer.assign(&tpl).map_err(|e| fail("assign", &e))?;
        Ok((consumer, ends))
    };
    let (consumer, mut pending) = match start() {
        Ok(x) => x,
        Err(e) => {
            let _ = loaded.send(Err(e));
            return;
        }
    };
    let mut loaded = Some(loaded);
    let mut read = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if !pending.is_empty() {
            // Positions, not the last record seen: compaction may have removed the records
            // just below a partition's end.
            if let Ok(pos) = consumer.position() {
                for e in pos.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        if pending.get(&e.partition()).is_some_and(|end| o >= *end) {
                            pending.remove(&e.partition());
                        }
                    }
                }
            }
        }
        if pending.is_empty() {
            if let Some(tx) = loaded.take() {
                gauge.set(tokens.len() as i64);
                tracing::info!(
                    bridge,
                    topic,
                    records = read,
                    tokens = tokens.len(),
                    "Token topic read."
                );
                let _ = tx.send(Ok(()));
            }
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(bridge, topic, error = %e, "Token topic read error; retrying.");
                continue;
            }
        };
        read += 1;
        let Some(device) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            errors.inc();
            tracing::warn!(
                bridge,
                topic,
                offset = m.offset(),
                "Token record without a UTF-8 key (the device id); ignored."
            );
            continue;
        };
        let hashes = match m.payload() {
            None => Vec::new(), // a tombstone revokes
            Some(v) => match std::str::from_utf8(v).ok().and_then(parse_value) {
                Some(h) => h,
                None => {
                    errors.inc();
                    tracing::warn!(bridge, topic, device, offset = m.offset(), "Token record is not SHA-256 hashes in hex; the device's tokens are revoked until a good record comes.");
                    Vec::new()
                }
            },
        };
        tokens.set_device(device, hashes);
        if loaded.is_none() {
            gauge.set(tokens.len() as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_token_finds_its_device_by_its_hash_only() {
        let t = Tokens::default();
        t.replace_all(&[
            (hex(&hash("tok-a")), "dev-a".into()),
            (hex(&hash("tok-a2")), "dev-a".into()),
            (hex(&hash("tok-b")), "dev-b".into()),
        ]);
        assert_eq!(t.device_of("tok-a").as_deref(), Some("dev-a"));
        assert_eq!(t.device_of("tok-a2").as_deref(), Some("dev-a"));
        assert_eq!(t.device_of("tok-b").as_deref(), Some("dev-b"));
        assert_eq!(t.device_of("tok-c"), None);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn topic_records_rotate_and_revoke() {
        let t = Tokens::default();
        t.set_device("d", vec![hash("one"), hash("two")]);
        assert_eq!(t.device_of("two").as_deref(), Some("d"));
        // Rotation: the new set replaces the old one.
        t.set_device("d", vec![hash("three")]);
        assert_eq!(t.device_of("one"), None);
        assert_eq!(t.device_of("three").as_deref(), Some("d"));
        // A tombstone revokes.
        t.set_device("d", vec![]);
        assert!(t.is_empty());
        let v = format!("{}, {}", hex(&hash("x")), hex(&hash("y")).to_uppercase());
        assert_eq!(parse_value(&v), Some(vec![hash("x"), hash("y")]));
        assert_eq!(parse_value("not-a-hash"), None);
        // The known SHA-256 of "abc".
        assert_eq!(
            hex(&hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
