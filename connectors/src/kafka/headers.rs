//! Record headers: the deterministic output id every stage writes and the dead-letter
//! description.

use rdkafka::message::{Headers, OwnedHeaders};

/// The id every stage writes on each output (binary, see [`MessageId`]): which stage wrote
/// a record, from which input partition, and its place in that partition's output sequence.
/// Replays regenerate the same ids.
pub use sluice_state::{IdWriter, MessageId, ID_HEADER};

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
    pub fn headers(r: &Reason<'_>, id: &[u8]) -> OwnedHeaders {
        let partition = r.partition.to_string();
        let offset = r.offset.to_string();
        let at = r.failed_at.to_string();
        let kv: [(&str, &[u8]); 8] = [
            (super::ID_HEADER, id),
            (ERROR_CLASS, r.class.as_bytes()),
            (ERROR_MESSAGE, r.message.as_bytes()),
            (SOURCE_TOPIC, r.topic.as_bytes()),
            (SOURCE_PARTITION, partition.as_bytes()),
            (SOURCE_OFFSET, offset.as_bytes()),
            (STAGE, r.stage.as_bytes()),
            (FAILED_AT, at.as_bytes()),
        ];
        kv.iter()
            .fold(OwnedHeaders::new_with_capacity(8), |h, (k, v)| {
                h.insert(Header {
                    key: k,
                    value: Some(*v),
                })
            })
    }
}
