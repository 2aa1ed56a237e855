//! The table `sluice top` draws: one row per stage, rates from two scrapes.

use std::collections::BTreeMap;
use std::time::Instant;

use super::scrape::{Buckets, StageNumbers};

/// Every instance scraped once, summed per stage.
pub(crate) struct Snapshot {
    pub(crate) at: Instant,
    pub(crate) stages: BTreeMap<String, StageNumbers>,
    /// Endpoints that answered.
    pub(crate) up: Vec<String>,
    /// Endpoints that did not, with why.
    pub(crate) down: Vec<(String, String)>,
}

/// The columns, each a single word so `--once` output splits on whitespace.
pub(crate) const COLUMNS: &[&str] = &[
    "STAGE",
    "PARTS",
    "IN",
    "IN/s",
    "OUT",
    "OUT/s",
    "LAG",
    "COMMIT_p50",
    "COMMIT_p99",
    "LATENCY_p99",
    "RESTORE",
    "DLQ/s",
    "FAILED",
];

/// The stages in `order` first (the topology's), then any others the endpoints report.
pub(crate) fn render(order: &[String], before: Option<&Snapshot>, now: &Snapshot) -> String {
    let mut names: Vec<&str> = order.iter().map(String::as_str).collect();
    for s in now.stages.keys() {
        if !names.contains(&s.as_str()) {
            names.push(s);
        }
    }
    let secs = before.map(|b| now.at.duration_since(b.at).as_secs_f64());
    let empty = StageNumbers::default();
    let mut rows: Vec<Vec<String>> = vec![COLUMNS.iter().map(|c| c.to_string()).collect()];
    for name in names {
        let n = now.stages.get(name).unwrap_or(&empty);
        let b = before.and_then(|b| b.stages.get(name));
        let rate = |f: fn(&StageNumbers) -> f64| match (b, secs) {
            (Some(b), Some(s)) if s > 0.0 => format!("{:.1}", ((f(n) - f(b)).max(0.0)) / s),
            _ => "-".to_string(),
        };
        // Commit times of this interval; before any, since the process started.
        let window = |f: fn(&StageNumbers) -> &Buckets| {
            let all = f(n);
            match b.map(|b| all.since(f(b))) {
                Some(w) if w.count() > 0.0 => w,
                _ => all.clone(),
            }
        };
        let commits = window(|n| &n.commit_seconds);
        let latency = window(|n| &n.latency_ms);
        rows.push(vec![
            name.to_string(),
            format!("{:.0}", n.partitions),
            format!("{:.0}", n.records_in),
            rate(|n| n.records_in),
            format!("{:.0}", n.records_out),
            rate(|n| n.records_out),
            if n.lag_partitions > 0 {
                format!("{:.0}", n.lag)
            } else {
                "-".into()
            },
            ms(commits.quantile(0.5).map(|s| s * 1000.0)),
            ms(commits.quantile(0.99).map(|s| s * 1000.0)),
            ms(latency.quantile(0.99)),
            restore(n),
            rate(|n| n.dead_letters),
            format!("{:.0}", n.commit_failures),
        ]);
    }
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A duration in ms for people: `0.8ms`, `37ms`, `4.2s`; `-` when unknown.
fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 10.0 => format!("{v:.1}ms"),
        Some(v) if v < 10_000.0 => format!("{v:.0}ms"),
        Some(v) => format!("{:.1}s", v / 1000.0),
    }
}

/// `-` when the stage restores nothing, the share applied while it restores, `done` after.
fn restore(n: &StageNumbers) -> String {
    if n.restore_total <= 0.0 {
        "-".into()
    } else if n.restore_applied >= n.restore_total {
        "done".into()
    } else {
        format!("{:.0}%", 100.0 * n.restore_applied / n.restore_total)
    }
}

#[cfg(test)]
mod tests {
    use super::super::scrape::{by_stage, parse};
    use super::*;

    fn snap(text: &str, at: Instant) -> Snapshot {
        Snapshot {
            at,
            stages: by_stage(&parse(text)),
            up: vec!["x".into()],
            down: vec![],
        }
    }

    #[test]
    fn rows_follow_the_topology_and_rates_come_from_two_scrapes() {
        let t0 = Instant::now();
        let a = snap(
            "sluice_records_in_total{stage=\"b\"} 100\nsluice_records_in_total{stage=\"a\"} 5\n\
             sluice_restore_total_records{stage=\"b\",store=\"w\"} 200\n\
             sluice_restore_applied_records{stage=\"b\",store=\"w\"} 50\n",
            t0,
        );
        let b = snap(
            "sluice_records_in_total{stage=\"b\"} 300\nsluice_records_in_total{stage=\"a\"} 5\n\
             sluice_consumer_lag{stage=\"b\",topic=\"t\",partition=\"0\"} 9\n\
             sluice_restore_total_records{stage=\"b\",store=\"w\"} 200\n\
             sluice_restore_applied_records{stage=\"b\",store=\"w\"} 200\n",
            t0 + std::time::Duration::from_secs(2),
        );
        let order = vec!["b".to_string(), "c".to_string()];
        let first = render(&order, None, &a);
        let lines: Vec<Vec<&str>> = first
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0], COLUMNS);
        assert_eq!(lines[1][..4], ["b", "0", "100", "-"]);
        assert_eq!(lines[1][10], "25%");
        assert_eq!(lines[2][0], "c");
        assert_eq!(lines[3][0], "a");
        let second = render(&order, Some(&a), &b);
        let row: Vec<&str> = second.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[..7], ["b", "0", "300", "100.0", "0", "0.0", "9"]);
        assert_eq!(row[10], "done");
        assert!(second
            .lines()
            .all(|l| l.split_whitespace().count() == COLUMNS.len()));
    }
}
