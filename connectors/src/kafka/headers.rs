//! Record headers: the deterministic output id every stage writes and the dead-letter
//! description.

use rdkafka::message::{Headers, OwnedHeaders};

/// `<stage>/<partition>/<seq>`: which stage wrote a record, from which input partition, and
/// its place in that partition's output sequence. Replays regenerate the same ids.
pub const ID_HEADER: &str = "sluice.id";

/// A parsed `sluice.id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordId<'a> {
    pub stage: &'a str,
    pub partition: i32,
    pub seq: u64,
}

/// Parses `stage/partition/seq`; None for anything else.
pub fn parse_record_id(v: &[u8]) -> Option<RecordId<'_>> {
    let s = std::str::from_utf8(v).ok()?;
    let (rest, seq) = s.rsplit_once('/')?;
    let (stage, partition) = rest.rsplit_once('/')?;
    Some(RecordId {
        stage,
        partition: partition.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

/// The value of header `name`, if present and UTF-8.
pub fn header_str<'a, H: Headers>(headers: &'a H, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Dead-letter headers (`sluice.dlq.*`), see docs/ARCHITECTURE.md.
pub mod dlq {
    use super::OwnedHeaders;
    use rdkafka::message::Header;

    pub const ERROR_CLASS: &str = "sluice.dlq.error_class";
    pub const ERROR_MESSAGE: &str = "sluice.dlq.error_message";
    pub const SOURCE_TOPIC: &str = "sluice.dlq.source_topic";
    pub const SOURCE_PARTITION: &str = "sluice.dlq.source_partition";
    pub const SOURCE_OFFSET: &str = "sluice.dlq.source_offset";
    pub const STAGE: &str = "sluice.dlq.stage";
    pub const FAILED_AT: &str = "sluice.dlq.failed_at";

    /// Where a dead letter came from and why.
    #[derive(Debug, Clone)]
    pub struct Reason<'a> {
        pub class: &'a str,
        pub message: &'a str,
        pub topic: &'a str,
        pub partition: i32,
        pub offset: i64,
        pub stage: &'a str,
        /// The failed record's own timestamp, so a replay writes identical headers.
        pub failed_at: i64,
    }

    /// Headers for a dead letter, plus the `sluice.id` of the stage writing it.
    pub fn headers(r: &Reason<'_>, id: &str) -> OwnedHeaders {
        let partition = r.partition.to_string();
        let offset = r.offset.to_string();
        let at = r.failed_at.to_string();
        let kv: [(&str, &str); 8] = [
            (super::ID_HEADER, id),
            (ERROR_CLASS, r.class),
            (ERROR_MESSAGE, r.message),
            (SOURCE_TOPIC, r.topic),
            (SOURCE_PARTITION, &partition),
            (SOURCE_OFFSET, &offset),
            (STAGE, r.stage),
            (FAILED_AT, &at),
        ];
        kv.iter()
            .fold(OwnedHeaders::new_with_capacity(8), |h, (k, v)| {
                h.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_junk_is_rejected() {
        let id = parse_record_id(b"agg/regate/3/42").unwrap();
        assert_eq!((id.stage, id.partition, id.seq), ("agg/regate", 3, 42));
        assert_eq!(parse_record_id(b"x/y"), None);
        assert_eq!(parse_record_id(b"s/1/-2"), None);
    }
}
