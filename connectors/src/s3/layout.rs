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
    let (y, m, d) = civil_from_days(hour_index.div_euclid(24));
    let h = hour_index.rem_euclid(24);
    format!(
        "{}date={y:04}-{m:02}-{d:02}/hour={h:02}/{topic}-{partition}-{first:020}-{last:020}.parquet",
        dir(prefix)
    )
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
    fn dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(hour_index(-1), -1);
    }
}
