//! Reading the NAB corpus: the `timestamp,value` CSVs and `combined_windows.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::Error;

/// One series of the corpus.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// Path relative to the data folder with `/` separators, e.g. `realTraffic/speed_t4013.csv`.
    pub(crate) name: String,
    /// Timestamps as written in the file, for the result files.
    pub(crate) raw_ts: Vec<String>,
    pub(crate) ts_ms: Vec<i64>,
    pub(crate) values: Vec<f64>,
}

/// Parses `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC) to ms since the epoch.
pub(crate) fn parse_ts(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once([' ', 'T'])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next().unwrap_or(Some(0))?);
    let ms = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        digits.parse::<i64>().ok()?
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some((days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss) * 1000 + ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn read_series(data_dir: &Path, name: &str) -> Result<Series, Error> {
    let path = data_dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let mut s = Series {
        name: name.to_owned(),
        raw_ts: Vec::new(),
        ts_ms: Vec::new(),
        values: Vec::new(),
    };
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |msg: &str| Error::Parse {
            path: path.clone(),
            line: i + 1,
            msg: msg.to_owned(),
        };
        let (ts, v) = line
            .split_once(',')
            .ok_or_else(|| bad("expected `timestamp,value`"))?;
        let ms = parse_ts(ts).ok_or_else(|| bad("bad timestamp"))?;
        // Unparseable values become NaN: the detectors must cope, and the row still counts.
        let v = v.trim().parse::<f64>().unwrap_or(f64::NAN);
        s.raw_ts.push(ts.to_owned());
        s.ts_ms.push(ms);
        s.values.push(v);
    }
    Ok(s)
}

/// Timestamps and anomaly scores of a result file (`timestamp,value,anomaly_score,...`).
pub(crate) fn read_result(path: &Path) -> Result<(Vec<i64>, Vec<f64>), Error> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let (mut ts, mut scores) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let mut cols = line.split(',');
        let t = cols.next().and_then(parse_ts);
        let s = cols.nth(1).and_then(|s| s.trim().parse::<f64>().ok());
        let (Some(t), Some(s)) = (t, s) else {
            return Err(Error::Parse {
                path: path.to_owned(),
                line: i + 1,
                msg: "expected `timestamp,value,anomaly_score`".into(),
            });
        };
        ts.push(t);
        scores.push(s);
    }
    Ok((ts, scores))
}

/// Anomaly windows per file, as inclusive `[start, end]` ms timestamps.
pub(crate) type Windows = BTreeMap<String, Vec<(i64, i64)>>;

pub(crate) fn read_windows(path: &Path) -> Result<Windows, Error> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let raw: BTreeMap<String, Vec<Vec<String>>> =
        serde_json::from_str(&text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            line: e.line(),
            msg: e.to_string(),
        })?;
    let mut out = Windows::new();
    for (file, wins) in raw {
        let mut ws = Vec::with_capacity(wins.len());
        for w in wins {
            let parsed = match w.as_slice() {
                [a, b] => parse_ts(a).zip(parse_ts(b)),
                _ => None,
            };
            let (a, b) = parsed.ok_or_else(|| Error::Parse {
                path: path.to_owned(),
                line: 0,
                msg: format!("window {w:?} of {file} is not [start, end]"),
            })?;
            ws.push((a, b));
        }
        out.insert(file, ws);
    }
    Ok(out)
}

/// The CSV files under `data_dir`, relative and sorted, so runs are reproducible.
pub(crate) fn list_files(data_dir: &Path) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![data_dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let p = entry.map_err(io(&dir))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "csv") {
                let rel = p.strip_prefix(data_dir).unwrap_or(&p);
                let parts: Vec<_> = rel.iter().map(|c| c.to_string_lossy()).collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_epoch_ms() {
        assert_eq!(parse_ts("1970-01-01 00:00:00"), Some(0));
        assert_eq!(
            parse_ts("2014-04-10 07:15:00.000000"),
            Some(1_397_114_100_000)
        );
        assert_eq!(parse_ts("2000-03-01 00:00:01.5"), Some(951_868_801_500));
        assert_eq!(parse_ts("garbage"), None);
    }
}
