//! Reading `/metrics`: the Prometheus text format, and one instance's numbers per stage.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) value: f64,
}

impl Sample {
    pub(crate) fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of a text exposition; comments and lines it cannot read are skipped.
pub(crate) fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim().to_string();
            rest = rest[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            rest = &rest[end + 1..];
            labels.push((key, value));
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Cumulative histogram buckets: (upper bound, count), sorted by bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Buckets(pub(crate) Vec<(f64, f64)>);

impl Buckets {
    fn add(&mut self, le: f64, count: f64) {
        match self.0.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += count,
            None => {
                self.0.push((le, count));
                self.0.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }

    fn merge(&mut self, other: &Buckets) {
        for (le, c) in &other.0 {
            self.add(*le, *c);
        }
    }

    /// What was observed since `before` (an instance that restarted counts from zero).
    pub(crate) fn since(&self, before: &Buckets) -> Buckets {
        Buckets(
            self.0
                .iter()
                .map(|(le, c)| {
                    let b = before
                        .0
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0.0, |(_, c)| *c);
                    (*le, (c - b).max(0.0))
                })
                .collect(),
        )
    }

    pub(crate) fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |(_, c)| *c)
    }

    /// The `q` quantile, interpolated inside its bucket as Prometheus'
    /// `histogram_quantile` does; `None` without observations. In the last (`+Inf`) bucket
    /// it is the largest finite bound.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for (le, c) in &self.0 {
            if *c >= rank {
                if le.is_infinite() {
                    return Some(lower);
                }
                let in_bucket = c - below;
                let frac = if in_bucket > 0.0 {
                    (rank - below) / in_bucket
                } else {
                    1.0
                };
                return Some(lower + (le - lower) * frac);
            }
            lower = *le;
            below = *c;
        }
        Some(lower)
    }
}

/// One stage's numbers as one or more instances report them (summed).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct StageNumbers {
    pub(crate) records_in: f64,
    pub(crate) records_out: f64,
    pub(crate) dead_letters: f64,
    pub(crate) commit_failures: f64,
    /// Sum over the partitions that report lag, and how many do.
    pub(crate) lag: f64,
    pub(crate) lag_partitions: usize,
    pub(crate) partitions: f64,
    pub(crate) restore_applied: f64,
    pub(crate) restore_total: f64,
    pub(crate) commit_seconds: Buckets,
    pub(crate) latency_ms: Buckets,
}

impl StageNumbers {
    pub(crate) fn merge(&mut self, o: &StageNumbers) {
        self.records_in += o.records_in;
        self.records_out += o.records_out;
        self.dead_letters += o.dead_letters;
        self.commit_failures += o.commit_failures;
        self.lag += o.lag;
        self.lag_partitions += o.lag_partitions;
        self.partitions += o.partitions;
        self.restore_applied += o.restore_applied;
        self.restore_total += o.restore_total;
        self.commit_seconds.merge(&o.commit_seconds);
        self.latency_ms.merge(&o.latency_ms);
    }
}

/// Every stage's numbers in one scrape.
pub(crate) fn by_stage(samples: &[Sample]) -> BTreeMap<String, StageNumbers> {
    let mut out: BTreeMap<String, StageNumbers> = BTreeMap::new();
    for s in samples {
        let Some(stage) = s.label("stage") else {
            continue;
        };
        let n = out.entry(stage.to_string()).or_default();
        let le = || s.label("le").and_then(|l| l.parse::<f64>().ok());
        match s.name.as_str() {
            "sluice_records_in_total" => n.records_in += s.value,
            "sluice_records_out_total" => n.records_out += s.value,
            "sluice_dead_letters_total" => n.dead_letters += s.value,
            "sluice_commit_failures_total" => n.commit_failures += s.value,
            "sluice_consumer_lag" => {
                n.lag += s.value;
                n.lag_partitions += 1;
            }
            "sluice_partitions_owned" => n.partitions += s.value,
            "sluice_restore_applied_records" => n.restore_applied += s.value,
            "sluice_restore_total_records" => n.restore_total += s.value,
            "sluice_commit_seconds_bucket" => {
                if let Some(le) = le() {
                    n.commit_seconds.add(le, s.value)
                }
            }
            "sluice_latency_ms_bucket" => {
                if let Some(le) = le() {
                    n.latency_ms.add(le, s.value)
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP sluice_records_in_total Input records read.
# TYPE sluice_records_in_total counter
sluice_records_in_total{stage="validate"} 1200
sluice_records_out_total{stage="validate",topic="t.valid"} 1100
sluice_records_out_total{stage="validate",topic="t.dlq"} 7
sluice_consumer_lag{partition="0",stage="validate",topic="raw"} 30
sluice_consumer_lag{partition="1",stage="validate",topic="raw"} 12
sluice_commit_seconds_bucket{stage="validate",le="0.001"} 0
sluice_commit_seconds_bucket{stage="validate",le="0.002"} 10
sluice_commit_seconds_bucket{stage="validate",le="0.004"} 20
sluice_commit_seconds_bucket{stage="validate",le="+Inf"} 20
sluice_commit_seconds_count{stage="validate"} 20
odd{stage="a \"quoted\" \\ name"} 1.5e3
"#;

    #[test]
    fn the_text_format_reads_back_with_escapes() {
        let s = parse(TEXT);
        assert_eq!(s.len(), 11);
        assert_eq!(s[0].name, "sluice_records_in_total");
        assert_eq!(s[0].label("stage"), Some("validate"));
        assert_eq!(s[0].value, 1200.0);
        assert_eq!(s[8].value, 20.0);
        assert_eq!(s[8].label("le"), Some("+Inf"));
        assert_eq!(s[10].label("stage"), Some("a \"quoted\" \\ name"));
        assert_eq!(s[10].value, 1500.0);
    }

    #[test]
    fn numbers_sum_per_stage_and_quantiles_interpolate() {
        let n = &by_stage(&parse(TEXT))["validate"];
        assert_eq!(n.records_in, 1200.0);
        assert_eq!(n.records_out, 1107.0);
        assert_eq!((n.lag, n.lag_partitions), (42.0, 2));
        assert_eq!(n.commit_seconds.count(), 20.0);
        // Half of 20 is the 10th: the top of the 1-2 ms bucket.
        assert_eq!(n.commit_seconds.quantile(0.5), Some(0.002));
        let p99 = n.commit_seconds.quantile(0.99).unwrap();
        assert!((p99 - 0.00396).abs() < 1e-9, "{p99}");
        let mut twice = n.clone();
        twice.merge(n);
        assert_eq!(twice.commit_seconds.count(), 40.0);
        assert_eq!(
            twice.commit_seconds.since(&n.commit_seconds),
            n.commit_seconds
        );
        assert_eq!(Buckets::default().quantile(0.5), None);
    }
}
