//! Sources and sinks, one folder per connector (Vector's `src/sinks/<name>/` layout).
//!
//! Connectors, in one list so `grep` finds them all:
//! - [`kafka`]: client settings, topic creation, the delivery-tracking producer, headers.
//! - [`fluvio`]: a Fluvio cluster's client, topic creation, acknowledged producer, readers.
//! - [`questdb`]: aggregates and anomalies to a time-series DB over ILP.
//! - [`s3`]: valid raw telemetry as Hive-partitioned Parquet in S3.

pub mod fluvio;
pub mod kafka;
pub mod questdb;
pub mod s3;

/// Small pieces both sinks share: retry backoff and human-readable config values.
pub mod util {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Capped exponential backoff: `initial`, `2*initial`, ... up to `max`, reset on success.
    #[derive(Debug, Clone)]
    pub struct Backoff {
        initial: Duration,
        max: Duration,
        next: Duration,
    }

    impl Backoff {
        pub fn new(initial: Duration, max: Duration) -> Self {
            Self {
                initial,
                max,
                next: initial,
            }
        }

        /// The delay to wait before the next attempt; doubles the one after it.
        pub fn next_delay(&mut self) -> Duration {
            let delay = self.next;
            self.next = (self.next * 2).min(self.max);
            delay
        }

        pub fn reset(&mut self) {
            self.next = self.initial;
        }
    }

    /// Deserializes `"250ms"`, `"30s"`, `"1m 30s"` (humantime) into a [`Duration`].
    pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }

    /// Parses `"64MiB"`, `"512KiB"`, `"1MB"` or a plain byte count (the state crate's parser).
    pub fn parse_bytes(text: &str) -> Result<u64, String> {
        sluice_state::ByteSize::parse(text).map(|b| b.0)
    }

    /// Deserializes a size written for people (see [`parse_bytes`]) or a plain integer.
    pub fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Size {
            Num(u64),
            Text(String),
        }
        match Size::deserialize(d)? {
            Size::Num(n) => Ok(n),
            Size::Text(t) => parse_bytes(&t).map_err(serde::de::Error::custom),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn backoff_doubles_up_to_the_cap_and_resets() {
            let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
            let seen: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
            assert_eq!(seen, [100, 200, 350, 350]);
            b.reset();
            assert_eq!(b.next_delay(), Duration::from_millis(100));
        }

        #[test]
        fn sizes_parse_with_units() {
            assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
            assert_eq!(parse_bytes("1000"), Ok(1000));
            assert_eq!(parse_bytes("2 KB"), Ok(2000));
            assert!(parse_bytes("3 parsecs").is_err());
        }
    }
}
