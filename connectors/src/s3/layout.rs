//! Object names. Everything about where an object lives is decided here.

/// One hour in ms; rows are grouped by the UTC hour of their event time.
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// Hours since the Unix epoch of an event time in ms (floor, also before 1970).
pub(crate) fn hour_index(event_time_ms: i64) -> i64 {
    event_time_ms.div_euclid(HOUR_MS)
}

/// `{prefix}/date=YYYY-MM-DD/hour=HH/{topic}-{partition}-{first:020}-{last:020}.parquet`
pub fn object_key(
    prefix: &str,
    hour_index: i64,
    topic: &str,
    partition: i32,
    first: i64,
    last: i64,
) -> String {
    let ms = hour_index.saturating_mul(HOUR_MS);
    object_key_in(
        prefix,
        &time_dir(TimePartition::Hour, Some(ms)),
        topic,
        partition,
        first,
        last,
    )
}

/// `{prefix}/{dir}/{topic}-{partition}-{first:020}-{last:020}.parquet`: the object of the
/// batch of input offsets `first..=last` in directory `dir` (Hive segments, e.g.
/// `date=2026-03-01/vehicle=v1`; empty for none). The name depends on the input range only,
/// so writing the same batch again overwrites the same object.
pub fn object_key_in(
    prefix: &str,
    dir: &str,
    topic: &str,
    partition: i32,
    first: i64,
    last: i64,
) -> String {
    let dir = dir.trim_matches('/');
    let sep = if dir.is_empty() { "" } else { "/" };
    format!(
        "{}{dir}{sep}{topic}-{partition}-{first:020}-{last:020}.parquet",
        self::dir(prefix)
    )
}

/// How finely objects are split by time (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimePartition {
    None,
    /// `year=YYYY`
    Year,
    /// `month=YYYY-MM`
    Month,
    /// `date=YYYY-MM-DD`
    Day,
    /// `date=YYYY-MM-DD/hour=HH`
    Hour,
}

/// Hive's directory for a NULL partition value.
pub const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// The time directories of an instant (ms since the epoch), e.g. `date=2026-03-01/hour=10`;
/// empty for [`TimePartition::None`]; `date=__HIVE_DEFAULT_PARTITION__` (and so on) for NULL.
pub fn time_dir(p: TimePartition, ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return match p {
            TimePartition::None => String::new(),
            TimePartition::Year => format!("year={HIVE_NULL}"),
            TimePartition::Month => format!("month={HIVE_NULL}"),
            TimePartition::Day => format!("date={HIVE_NULL}"),
            TimePartition::Hour => format!("date={HIVE_NULL}/hour={HIVE_NULL}"),
        };
    };
    let hour = hour_index(ms);
    let (y, m, d) = civil_from_days(hour.div_euclid(24));
    let h = hour.rem_euclid(24);
    match p {
        TimePartition::None => String::new(),
        TimePartition::Year => format!("year={y:04}"),
        TimePartition::Month => format!("month={y:04}-{m:02}"),
        TimePartition::Day => format!("date={y:04}-{m:02}-{d:02}"),
        TimePartition::Hour => format!("date={y:04}-{m:02}-{d:02}/hour={h:02}"),
    }
}

/// One Hive directory `column=value`, the value escaped the way Hive does (`%XX` for `/`,
/// `=`, `%`, control characters and the others Hive escapes); NULL and the empty string as
/// `__HIVE_DEFAULT_PARTITION__`.
pub fn hive_segment(column: &str, value: Option<&str>) -> String {
    let mut out = format!("{column}=");
    match value {
        None | Some("") => out.push_str(HIVE_NULL),
        Some(v) => {
            for c in v.chars() {
                let escape = c.is_control()
                    || matches!(
                        c,
                        '"' | '#'
                            | '%'
                            | '\''
                            | '*'
                            | '/'
                            | ':'
                            | '='
                            | '?'
                            | '\\'
                            | '{'
                            | '['
                            | ']'
                            | '^'
                    );
                if escape {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("%{b:02X}"));
                    }
                } else {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// `{prefix}/_manifest/{topic}/{partition}/{first:020}`: written before a batch's data
/// objects; its body names the batch's last offset and objects (see [`super::S3ArchiveSink::recover_cuts`]).
pub fn manifest_key(prefix: &str, topic: &str, partition: i32, first: i64) -> String {
    format!("{}_manifest/{topic}/{partition}/{first:020}", dir(prefix))
}

fn dir(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`), so we need no date crate for one format.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_hive_layout() {
        // 2023-11-14T22:13:20Z
        let h = hour_index(1_700_000_000_000);
        assert_eq!(
            object_key("telemetry", h, "raw", 3, 7, 42),
            "telemetry/date=2023-11-14/hour=22/raw-3-00000000000000000007-00000000000000000042.parquet"
        );
        assert_eq!(
            manifest_key("/telemetry/", "raw", 3, 7),
            "telemetry/_manifest/raw/3/00000000000000000007"
        );
        assert_eq!(
            manifest_key("", "raw", 0, 0),
            "_manifest/raw/0/00000000000000000000"
        );
    }

    #[test]
    fn time_and_column_directories_are_hive_style() {
        let t = Some(1_700_000_000_000); // 2023-11-14T22:13:20Z
        assert_eq!(time_dir(TimePartition::Hour, t), "date=2023-11-14/hour=22");
        assert_eq!(time_dir(TimePartition::Day, t), "date=2023-11-14");
        assert_eq!(time_dir(TimePartition::Month, t), "month=2023-11");
        assert_eq!(time_dir(TimePartition::Year, t), "year=2023");
        assert_eq!(time_dir(TimePartition::None, t), "");
        assert_eq!(
            time_dir(TimePartition::Day, None),
            "date=__HIVE_DEFAULT_PARTITION__"
        );
        assert_eq!(hive_segment("site", Some("A/B=1%")), "site=A%2FB%3D1%25");
        assert_eq!(
            hive_segment("site", None),
            "site=__HIVE_DEFAULT_PARTITION__"
        );
        assert_eq!(
            object_key_in("lake/", "date=2023-11-14/site=A", "t", 0, 1, 2),
            "lake/date=2023-11-14/site=A/t-0-00000000000000000001-00000000000000000002.parquet"
        );
        assert_eq!(
            object_key_in("lake", "", "t", 0, 1, 2),
            "lake/t-0-00000000000000000001-00000000000000000002.parquet"
        );
    }

    #[test]
    fn dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(hour_index(-1), -1);
    }
}
