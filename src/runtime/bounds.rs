//! The range of a backfill (`sluice backfill --from --to`): the start and end offsets of
//! every partition of the topics its first stages read, captured once when the backfill
//! starts and saved in `<state_dir>/<app>-V/backfill-range.json`, so a rerun after a crash
//! resumes the very same range even though `now` has moved and the live input grew.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sluice_connectors::kafka::{consumer_config, ClientOptions};

/// The file a namespace's range is saved in, inside `<state_dir>/<app>-V/`.
pub const RANGE_FILE: &str = "backfill-range.json";

/// How long a broker request of the capture may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One end of the range as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The first record still in the topic (`--from earliest`).
    Earliest,
    /// The end of the topic when the backfill starts (`--to now`).
    Now,
    /// A time, ms since the epoch.
    At(i64),
}

/// Why a range cannot be used; each says what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum BoundsError {
    #[error("`{given}` is not a time for {flag}: write `{keyword}` or an RFC 3339 time such as `2026-12-06T10:00:00Z` ({detail})")]
    BadTime {
        flag: &'static str,
        keyword: &'static str,
        given: String,
        detail: String,
    },
    #[error("--from {from} is after --to {to}: the range would be empty")]
    FromAfterTo { from: String, to: String },
    #[error("--from {from} is outside the retention of {topic} partition {partition}: its earliest record still held is at offset {low}, from {earliest}; backfill from `earliest` or a later --from or read the range from the lake with `--source archive`")]
    OutsideRetention {
        from: String,
        topic: String,
        partition: i32,
        low: i64,
        earliest: String,
    },
    #[error("this namespace was started with --from {saved_from} --to {saved_to} (saved in {path}); rerun with the same range to resume it, or pick another --version for a new range")]
    DifferentRange {
        saved_from: String,
        saved_to: String,
        path: PathBuf,
    },
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("reading offsets of {topic} from the broker: {detail}")]
    Broker { topic: String, detail: String },
}

impl Bound {
    /// `--from`: `earliest` or a time.
    pub fn parse_from(s: &str) -> Result<Bound, BoundsError> {
        parse(s, "--from", "earliest", Bound::Earliest)
    }

    /// `--to`: `now` or a time.
    pub fn parse_to(s: &str) -> Result<Bound, BoundsError> {
        parse(s, "--to", "now", Bound::Now)
    }
}

fn parse(
    s: &str,
    flag: &'static str,
    keyword: &'static str,
    word: Bound,
) -> Result<Bound, BoundsError> {
    if s == keyword {
        return Ok(word);
    }
    let bad = |detail: String| BoundsError::BadTime {
        flag,
        keyword,
        given: s.to_string(),
        detail,
    };
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| bad(e.to_string()))?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| bad("before 1970".into()))?
        .as_millis();
    Ok(Bound::At(ms as i64))
}

/// Checks the two ends against each other and the clock (`now_ms`).
pub fn check_order(
    from: Bound,
    to: Bound,
    args: (&str, &str),
    now_ms: i64,
) -> Result<(), BoundsError> {
    let to_ms = match to {
        Bound::At(t) => t,
        _ => now_ms,
    };
    if let Bound::At(f) = from {
        if f >= to_ms {
            return Err(BoundsError::FromAfterTo {
                from: args.0.to_string(),
                to: args.1.to_string(),
            });
        }
    }
    Ok(())
}

/// One partition's range: `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRange {
    pub topic: String,
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

/// A captured range, as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// `--from` and `--to` as given: a rerun must give the same.
    pub from: String,
    pub to: String,
    /// When the range was captured, ms since the epoch (what `now` meant).
    pub captured_at_ms: i64,
    pub partitions: Vec<PartitionRange>,
}

impl Range {
    /// Records in the range of `topic`'s partitions together.
    pub fn records(&self) -> i64 {
        self.partitions.iter().map(|p| p.end - p.start).sum()
    }

    /// `(topic, partition) -> end`, for the runner.
    pub fn ends(&self) -> crate::runtime::Ends {
        self.partitions
            .iter()
            .map(|p| ((p.topic.clone(), p.partition), p.end))
            .collect()
    }
}

/// What a backfill saves before it starts: the range as captured, with the `--from` and
/// `--to` it was captured for.
pub trait Saved: Serialize + DeserializeOwned {
    /// `--from` and `--to` as given when this was captured.
    fn args(&self) -> (&str, &str);
}

impl Saved for Range {
    fn args(&self) -> (&str, &str) {
        (&self.from, &self.to)
    }
}

/// What is saved in `path` when the namespace was started with the same `from` and `to`;
/// else what `capture` gives, saved first. A different range for the same namespace is
/// refused.
pub fn load_or_capture<T: Saved, E: From<BoundsError>>(
    path: &Path,
    from: &str,
    to: &str,
    capture: impl FnOnce() -> Result<T, E>,
) -> Result<(T, bool), E> {
    let file_err = |detail: String| BoundsError::File {
        path: path.to_path_buf(),
        detail,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let saved: T = serde_json::from_str(&text).map_err(|e| {
                file_err(format!(
                    "not a saved backfill range ({e}); it is written by `sluice backfill` only"
                ))
            })?;
            let (saved_from, saved_to) = saved.args();
            if saved_from != from || saved_to != to {
                return Err(BoundsError::DifferentRange {
                    saved_from: saved_from.to_string(),
                    saved_to: saved_to.to_string(),
                    path: path.to_path_buf(),
                }
                .into());
            }
            Ok((saved, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let range = capture()?;
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir).map_err(|e| file_err(e.to_string()))?;
            // Written whole or not at all: a crash while saving leaves no half range.
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(".tmp");
            let text = serde_json::to_string_pretty(&range).expect("serialisable");
            std::fs::write(&tmp, text).map_err(|e| file_err(e.to_string()))?;
            std::fs::rename(&tmp, path).map_err(|e| file_err(e.to_string()))?;
            Ok((range, false))
        }
        Err(e) => Err(file_err(e.to_string()).into()),
    }
}

/// Reads the range of `topics` from the broker: start offsets for `from` (the low watermark,
/// or the first offset at or after the time), end offsets for `to` (the high watermark, or the
/// first offset at or after the time: records stamped before `to` are in).
pub fn capture(
    opts: &ClientOptions,
    topics: &[String],
    (from, from_arg): (Bound, &str),
    (to, to_arg): (Bound, &str),
    now_ms: i64,
) -> Result<Range, BoundsError> {
    let consumer: BaseConsumer = consumer_config(opts, "sluice-backfill-capture")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| BoundsError::Broker {
            topic: topics.join(", "),
            detail: e.to_string(),
        })?;
    let mut partitions = Vec::new();
    for topic in topics {
        let broker = |detail: String| BoundsError::Broker {
            topic: topic.clone(),
            detail,
        };
        let md = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(|e| broker(e.to_string()))?;
        let ids: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if ids.is_empty() {
            return Err(broker("the topic does not exist".into()));
        }
        let mut marks = BTreeMap::new();
        for &p in &ids {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, TIMEOUT)
                .map_err(|e| broker(e.to_string()))?;
            marks.insert(p, (low, high));
        }
        let at = |t: i64| -> Result<BTreeMap<i32, i64>, BoundsError> {
            let mut tpl = TopicPartitionList::new();
            for &p in &ids {
                tpl.add_partition_offset(topic, p, Offset::Offset(t))
                    .map_err(|e| broker(e.to_string()))?;
            }
            let got = consumer
                .offsets_for_times(tpl, TIMEOUT)
                .map_err(|e| broker(e.to_string()))?;
            // No record at or after the time: the partition's end.
            Ok(got
                .elements()
                .iter()
                .map(|e| {
                    let high = marks[&e.partition()].1;
                    let o = match e.offset() {
                        Offset::Offset(o) if o >= 0 => o.min(high),
                        _ => high,
                    };
                    (e.partition(), o)
                })
                .collect())
        };
        let starts = match from {
            Bound::At(t) => at(t)?,
            _ => marks.iter().map(|(p, (low, _))| (*p, *low)).collect(),
        };
        let ends = match to {
            Bound::At(t) => at(t)?,
            _ => marks.iter().map(|(p, (_, high))| (*p, *high)).collect(),
        };
        for &p in &ids {
            let (low, high) = marks[&p];
            if let Bound::At(t) = from {
                // Records before `from` may already be deleted: then the first one held is
                // later than `from`, and part of the range is gone.
                if low > 0 && high > low {
                    if let Some(first) = first_timestamp(&consumer, topic, p, low)? {
                        if first > t {
                            return Err(BoundsError::OutsideRetention {
                                from: from_arg.to_string(),
                                topic: topic.clone(),
                                partition: p,
                                low,
                                earliest: format_ms(first),
                            });
                        }
                    }
                }
            }
            let start = starts[&p].max(low);
            let end = ends[&p].max(start);
            partitions.push(PartitionRange {
                topic: topic.clone(),
                partition: p,
                start,
                end,
            });
        }
    }
    Ok(Range {
        from: from_arg.to_string(),
        to: to_arg.to_string(),
        captured_at_ms: now_ms,
        partitions,
    })
}

/// The timestamp of the record at `offset` (the first one held).
fn first_timestamp(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<i64>, BoundsError> {
    let broker = |detail: String| BoundsError::Broker {
        topic: topic.to_string(),
        detail,
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(|e| broker(e.to_string()))?;
    consumer.assign(&tpl).map_err(|e| broker(e.to_string()))?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.partition() == partition => return Ok(m.timestamp().to_millis()),
            Some(Err(e)) => return Err(broker(e.to_string())),
            _ => {}
        }
    }
    Ok(None)
}

/// The wall clock, ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// ms since the epoch as RFC 3339.
pub fn format_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_keywords_parse_and_bad_ones_say_how_to_write_them() {
        assert_eq!(Bound::parse_from("earliest").unwrap(), Bound::Earliest);
        assert_eq!(Bound::parse_to("now").unwrap(), Bound::Now);
        assert_eq!(
            Bound::parse_from("2026-12-06T10:00:00Z").unwrap(),
            Bound::At(1_796_551_200_000)
        );
        let e = Bound::parse_to("yesterday").unwrap_err().to_string();
        assert!(
            e.contains("--to") && e.contains("RFC 3339") && e.contains("`now`"),
            "{e}"
        );
        // Each keyword belongs to its own end.
        assert!(Bound::parse_from("now").is_err());
        assert!(Bound::parse_to("earliest").is_err());
    }

    #[test]
    fn from_after_to_is_refused() {
        let (a, b) = (Bound::At(2_000), Bound::At(1_000));
        let e = check_order(a, b, ("B", "A"), 5_000).unwrap_err();
        assert!(matches!(e, BoundsError::FromAfterTo { .. }), "{e}");
        // `now` is the clock: a --from in the future is after it.
        assert!(check_order(Bound::At(9_000), Bound::Now, ("f", "now"), 5_000).is_err());
        assert!(check_order(Bound::Earliest, Bound::At(1), ("earliest", "t"), 5_000).is_ok());
        assert!(check_order(Bound::At(1_000), Bound::At(2_000), ("a", "b"), 5_000).is_ok());
    }

    fn range(from: &str, to: &str) -> Range {
        Range {
            from: from.into(),
            to: to.into(),
            captured_at_ms: 7,
            partitions: vec![PartitionRange {
                topic: "raw".into(),
                partition: 0,
                start: 3,
                end: 10,
            }],
        }
    }

    #[test]
    fn a_rerun_resumes_the_saved_range_and_a_different_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RANGE_FILE);
        let (first, resumed) = load_or_capture::<_, BoundsError>(&path, "earliest", "now", || {
            Ok(range("earliest", "now"))
        })
        .unwrap();
        assert!(!resumed);
        assert_eq!(first.records(), 7);
        // `now` has moved on, but the rerun gets the range captured the first time.
        let (again, resumed) =
            load_or_capture::<Range, BoundsError>(&path, "earliest", "now", || {
                panic!("a saved range is not captured again")
            })
            .unwrap();
        assert!(resumed);
        assert_eq!(again, first);
        let e = load_or_capture::<Range, BoundsError>(
            &path,
            "earliest",
            "2026-12-06T10:00:00Z",
            || panic!("refused before capturing"),
        )
        .unwrap_err();
        assert!(matches!(e, BoundsError::DifferentRange { .. }), "{e}");
        assert!(e.to_string().contains("--version"), "{e}");
    }
}
