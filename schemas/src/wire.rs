//! The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the Avro body.

use crate::codec::DecodeError;

/// The only magic byte Confluent's serializers write.
pub const MAGIC: u8 = 0;
/// Length of the header in front of every body.
pub const HEADER_LEN: usize = 5;

/// Splits a wire-format record into its schema id and Avro body.
pub fn parse(bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match bytes {
        [] => Err(DecodeError::Truncated {
            what: "wire header",
        }),
        [magic, ..] if *magic != MAGIC => Err(DecodeError::WrongMagic(*magic)),
        [_, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        _ => Err(DecodeError::Truncated {
            what: "wire header",
        }),
    }
}

/// Appends the 5-byte header for `schema_id`.
pub fn write_header(schema_id: u32, out: &mut Vec<u8>) {
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let mut buf = Vec::new();
        write_header(0x0102_0304, &mut buf);
        buf.extend_from_slice(b"body");
        assert_eq!(buf[..5], [0, 1, 2, 3, 4]);
        let (id, body) = parse(&buf).unwrap();
        assert_eq!(id, 0x0102_0304);
        assert_eq!(body, b"body");
    }

    #[test]
    fn bad_headers_are_classified() {
        assert_eq!(parse(&[]).unwrap_err().class(), "truncated");
        assert_eq!(parse(&[0, 0, 1]).unwrap_err().class(), "truncated");
        assert_eq!(parse(&[1, 0, 0, 0, 1]).unwrap_err().class(), "wrong_magic");
        assert_eq!(parse(&[0, 0, 0, 0, 7]).unwrap().0, 7);
    }
}
