//! `kind: mqtt`: subscribe to device topics on an MQTT broker and produce what arrives to a
//! topic in its Avro schema. Run by `sluice ingest`; docs/INGEST.md has the guarantees.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::OutputSchema;
use crate::model::human_duration;

/// An MQTT ingest bridge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttIngestSpec {
    /// Always `mqtt`.
    pub kind: String,
    /// The MQTT broker, `mqtt://host[:port]` (port default 1883; `tcp://` is accepted too).
    pub url: MqttUrl,
    /// The protocol spoken to the broker: `"5"` (the default) or `"3.1.1"`. Devices may
    /// publish with either; the broker translates.
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// The topic filter subscribed to, with exactly one `+` level: the device id, e.g.
    /// `devices/+/telemetry`. A trailing `#` is allowed.
    pub topic: TopicFilter,
    /// The field of the output record the topic's `+` level fills (a string field of the
    /// output topic's schema). A payload that carries the field with another value is a
    /// dead letter (`device_mismatch`). Default `device_id`.
    #[serde(default = "default_device_field")]
    pub device_field: String,
    /// What devices send: `json` (one reading as an object, or an array of them; the
    /// default) or `avro` (Confluent-framed, any schema the registry knows that resolves to
    /// the output topic's).
    #[serde(default)]
    pub format: PayloadFormat,
    /// The topic records are produced to, Confluent-framed with the id the registry has for
    /// the topic's `subject`. It must declare `subject` and `schema`.
    pub output: String,
    /// The topic malformed payloads go to, with the reason in `sluice.dlq.*` headers.
    pub dead_letter: String,
    /// The MQTT client id: fixed, so that a restart resumes the broker's session for it and
    /// gets what arrived meanwhile. Default `sluice-<metadata.name>-<bridge>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// How long the broker keeps the session (subscription and queued messages) while the
    /// bridge is away (MQTT 5 `Session Expiry Interval`; with 3.1.1 the broker's own
    /// setting applies). Default `7d`.
    #[serde(
        default = "default_session_expiry",
        deserialize_with = "human_duration"
    )]
    pub session_expiry: Duration,
    /// MQTT keep-alive. Default `30s`.
    #[serde(default = "default_keep_alive", deserialize_with = "human_duration")]
    pub keep_alive: Duration,
    /// Largest payload accepted; a larger one is a dead letter (`oversize`, its first
    /// `max_payload` bytes kept). At most `1MiB` (a Kafka record's default limit).
    /// Default `64KiB`.
    #[serde(default = "default_max_payload", deserialize_with = "human_size")]
    pub max_payload: usize,
    /// Most MQTT messages received and not yet acknowledged to the broker (waiting for the
    /// Kafka producer); past it the bridge stops reading until acknowledgements catch up.
    /// Default 1000.
    #[serde(default = "default_max_unacked")]
    pub max_unacked: usize,
}

impl MqttIngestSpec {
    /// The client id, given or derived from the application and bridge names.
    pub fn client_id(&self, app: &str, bridge: &str) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("sluice-{app}-{bridge}"))
    }

    pub(crate) fn check(
        &self,
        base: &str,
        output: Option<OutputSchema>,
        push: &mut impl FnMut(String, String, String),
    ) {
        if let Err(why) = self.topic.levels_ok() {
            push(
                format!("{base}.topic"),
                format!("topic filter `{}` {why}", self.topic.0),
                "write one `+` level for the device id, e.g. `devices/+/telemetry`".into(),
            );
        }
        if self.max_payload == 0 || self.max_payload > MAX_PAYLOAD_LIMIT {
            push(
                format!("{base}.max_payload"),
                format!("max_payload is {} bytes", self.max_payload),
                "use between 1B and 1MiB, e.g. `64KiB`".into(),
            );
        }
        if self.max_unacked == 0 {
            push(
                format!("{base}.max_unacked"),
                "max_unacked is 0".into(),
                "use at least 1 (the default is 1000)".into(),
            );
        }
        if self.session_expiry.as_secs() > u64::from(u32::MAX) || self.session_expiry.is_zero() {
            push(
                format!("{base}.session_expiry"),
                format!("session_expiry {:?} is out of range", self.session_expiry),
                "use between 1s and 136 years, e.g. `7d`".into(),
            );
        }
        if self.keep_alive.as_secs() < 5 || self.keep_alive.as_secs() > u64::from(u16::MAX) {
            push(
                format!("{base}.keep_alive"),
                format!("keep_alive {:?} is out of range", self.keep_alive),
                "use between 5s and 18h, e.g. `30s`".into(),
            );
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 65535 || id.contains(['+', '#', '/']) {
                push(
                    format!("{base}.client_id"),
                    format!("client id `{id}` is not usable"),
                    "use letters, digits, `-` and `_`; or leave it out for `sluice-<app>-<bridge>`"
                        .into(),
                );
            }
        }
        let Some(out) = output else { return }; // undeclared: reported by the caller
        let filler = format!("the `+` of `{}`", self.topic.0);
        super::check_output(base, &self.output, &self.device_field, &filler, out, push);
    }
}

/// The largest payload a bridge may accept: a Kafka record's default `message.max.bytes`.
pub const MAX_PAYLOAD_LIMIT: usize = 1 << 20;

/// `"5"` or `"3.1.1"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum MqttProtocol {
    #[serde(rename = "3.1.1")]
    V311,
    #[default]
    #[serde(rename = "5")]
    V5,
}

/// `json` or `avro`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    #[default]
    Json,
    Avro,
}

/// A parsed `mqtt://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    pub host: String,
    pub port: u16,
}

impl MqttUrl {
    pub fn parse(s: &str) -> Result<MqttUrl, String> {
        let rest = s
            .strip_prefix("mqtt://")
            .or_else(|| s.strip_prefix("tcp://"))
            .ok_or_else(|| {
                format!("`{s}` is not an MQTT URL; write it like `mqtt://127.0.0.1:1883`")
            })?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '@']) {
            return Err(format!(
                "`{s}`: paths, queries and credentials are not supported; write `mqtt://host:port`"
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("`{s}`: port `{p}` is not a port number"))?;
                (h, port)
            }
            _ => (rest, 1883),
        };
        if host.is_empty() {
            return Err(format!(
                "`{s}` has no host; write it like `mqtt://127.0.0.1:1883`"
            ));
        }
        Ok(MqttUrl {
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port,
        })
    }
}

impl fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mqtt://{}:{}", self.host, self.port)
    }
}

impl<'de> Deserialize<'de> for MqttUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MqttUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An MQTT topic filter with one `+` level for the device id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct TopicFilter(pub String);

impl TopicFilter {
    /// Why the filter is not usable, if it is not: MQTT's own rules (`+` and `#` fill a whole
    /// level, `#` only last) and ours (exactly one `+`).
    pub fn levels_ok(&self) -> Result<(), String> {
        let levels: Vec<&str> = self.0.split('/').collect();
        if self.0.is_empty() {
            return Err("is empty".into());
        }
        for (i, l) in levels.iter().enumerate() {
            if l.contains(['+', '#']) && l.len() > 1 {
                return Err(format!("has `{l}`: `+` and `#` must fill a whole level"));
            }
            if *l == "#" && i + 1 != levels.len() {
                return Err("has `#` before its last level".into());
            }
        }
        match levels.iter().filter(|l| **l == "+").count() {
            1 => Ok(()),
            0 => Err("has no `+` level for the device id".into()),
            n => Err(format!(
                "has {n} `+` levels; exactly one (the device id) is needed"
            )),
        }
    }

    /// The position of the `+` level.
    pub fn device_level(&self) -> usize {
        self.0.split('/').position(|l| l == "+").unwrap_or(0)
    }

    /// The device id in a topic this filter matched: the text at the `+` level. `None` when
    /// the topic does not have that level or it is empty.
    pub fn device_of<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .split('/')
            .nth(self.device_level())
            .filter(|d| !d.is_empty())
    }
}

fn default_device_field() -> String {
    "device_id".into()
}
/// A week: long enough for a bridge's planned outage, short of filling the broker's disk.
fn default_session_expiry() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_max_payload() -> usize {
    64 * 1024
}
fn default_max_unacked() -> usize {
    1000
}

/// `512B`, `64KiB`, `1MiB` (or a plain number of bytes): sizes written for people.
pub(crate) fn human_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(usize),
        S(String),
    }
    let s = match Raw::deserialize(d)? {
        Raw::N(n) => return Ok(n),
        Raw::S(s) => s,
    };
    parse_size(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "`{s}` is not a size; write it like `512B`, `64KiB` or `1MiB`"
        ))
    })
}

pub(crate) fn parse_size(s: &str) -> Option<usize> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: usize = t[..split].parse().ok()?;
    let mult = match t[split..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_need_one_whole_plus_level() {
        let ok = TopicFilter("devices/+/telemetry".into());
        assert_eq!(ok.levels_ok(), Ok(()));
        assert_eq!(ok.device_of("devices/d-7/telemetry"), Some("d-7"));
        assert_eq!(ok.device_of("devices//telemetry"), None);
        assert!(TopicFilter("devices/+/#".into()).levels_ok().is_ok());
        for bad in [
            "devices/telemetry",
            "+/+/t",
            "devices/d+/t",
            "a/#/+",
            "",
            "a/+#",
        ] {
            assert!(TopicFilter(bad.into()).levels_ok().is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_and_sizes_parse() {
        let u = MqttUrl::parse("mqtt://127.0.0.1:1883").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 1883));
        assert_eq!(MqttUrl::parse("tcp://broker").unwrap().port, 1883);
        for bad in [
            "http://x:1",
            "mqtt://:1883",
            "mqtt://h:99999",
            "mqtt://h:1/p",
            "h:1",
        ] {
            assert!(MqttUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("512B"), Some(512));
        assert_eq!(parse_size("12 parsecs"), None);
    }
}
