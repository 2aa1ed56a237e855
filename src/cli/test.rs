//! `sluice test TOPOLOGY CASES...`: runs a topology's pipeline stages in-process, without a
//! broker, over the input records of each case and compares what lands on each topic with
//! the case's expectations. A readable diff per mismatch; exit 1 on any.
//!
//! A case file (YAML):
//! ```yaml
//! cases:
//!   - name: readings above 30 degrees are kept
//!     input:                      # in order; a record goes through every stage it reaches
//!       - topic: readings
//!         key: d1                 # optional
//!         timestamp: 2026-03-01T10:00:00Z   # RFC 3339 or ms; default: the previous one
//!         value: { device_id: d1, temperature: 31.5 }
//!     expect:                     # per topic, every record in order (topics not named are
//!       hot:                      # not checked); `key`, `timestamp` only when given
//!         - value: { device_id: d1, temperature: 31.5 }
//!       dlq:
//!         - class: expression_division_by_zero   # dead letters: class, and message if given
//!     # numbers match within 1e-9 relative; "~1800" within 1% (quantiles, distinct counts)
//!     state:                      # optional: entries per store of a stage after the input
//!       mystage: { 0-window-windows: 2 }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde::Deserialize;

use crate::testdriver::Driver;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The topology file.
    pub topology: PathBuf,
    /// Case files (YAML).
    #[arg(required = true)]
    pub cases: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    input: Vec<InputRecord>,
    #[serde(default)]
    expect: BTreeMap<String, Vec<Expected>>,
    #[serde(default)]
    state: BTreeMap<String, BTreeMap<String, usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputRecord {
    topic: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    timestamp: Option<Timestamp>,
    value: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Timestamp {
    Millis(i64),
    Text(String),
}

impl Timestamp {
    fn millis(&self) -> anyhow::Result<i64> {
        match self {
            Timestamp::Millis(m) => Ok(*m),
            Timestamp::Text(s) => {
                let t = humantime::parse_rfc3339_weak(s).with_context(|| {
                    format!("timestamp `{s}` is not RFC 3339 (e.g. 2026-03-01T10:00:00Z)")
                })?;
                Ok(t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0))
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    timestamp: Option<Timestamp>,
    #[serde(default)]
    value: Option<serde_json::Value>,
    #[serde(default)]
    class: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let loaded = match super::validate::load_checked(&a.topology) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for file in &a.cases {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading case file {}", file.display()))?;
        let cases: CaseFile = serde_yaml::from_str(&text)
            .with_context(|| format!("{}: not a case file", file.display()))?;
        for case in &cases.cases {
            let diffs = run_case(&loaded, case)
                .with_context(|| format!("{}: case `{}`", file.display(), case.name))?;
            if diffs.is_empty() {
                passed += 1;
                println!("ok      {}: {}", file.display(), case.name);
            } else {
                failed += 1;
                println!("FAILED  {}: {}", file.display(), case.name);
                for d in diffs {
                    println!("    {d}");
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs one case on a fresh driver; returns the differences, empty when it passes.
fn run_case(loaded: &sluice_topology::Loaded, case: &Case) -> anyhow::Result<Vec<String>> {
    let mut d = Driver::new(loaded)?;
    let mut ts = 0;
    for (i, r) in case.input.iter().enumerate() {
        if let Some(t) = &r.timestamp {
            ts = t.millis()?;
        }
        d.send(
            &r.topic,
            r.key.clone().map(String::into_bytes),
            &r.value,
            ts,
        )
        .with_context(|| format!("input record {i}"))?;
    }
    let mut diffs = Vec::new();
    for (topic, expected) in &case.expect {
        let actual = d.read(topic);
        diffs.extend(compare(topic, expected, &actual)?);
    }
    for (stage, stores) in &case.state {
        let Some(sizes) = d.store_sizes(stage) else {
            diffs.push(format!(
                "state: no pipeline stage `{stage}` (stages: {})",
                d.stage_names().join(", ")
            ));
            continue;
        };
        for (store, want) in stores {
            match sizes.get(store) {
                Some(got) if got == want => {}
                Some(got) => diffs.push(format!(
                    "state {stage}.{store}: expected {want} entries, found {got}"
                )),
                None => diffs.push(format!(
                    "state {stage}: no store `{store}` (stores: {})",
                    sizes.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
            }
        }
    }
    Ok(diffs)
}

fn compare(
    topic: &str,
    expected: &[Expected],
    actual: &[serde_json::Value],
) -> anyhow::Result<Vec<String>> {
    let mut diffs = Vec::new();
    for (i, e) in expected.iter().enumerate() {
        let Some(a) = actual.get(i) else {
            diffs.push(format!(
                "{topic}[{i}]: expected a record, none arrived: {}",
                show_expected(e)
            ));
            continue;
        };
        let at = format!("{topic}[{i}]");
        if let Some(k) = &e.key {
            let got = a.get("key").and_then(|v| v.as_str()).unwrap_or("<no key>");
            if got != k {
                diffs.push(format!("{at}.key: expected {k:?}, got {got:?}"));
            }
        }
        if let Some(t) = &e.timestamp {
            let want = t.millis()?;
            let got = a.get("timestamp").and_then(|v| v.as_i64()).unwrap_or(0);
            if got != want {
                diffs.push(format!("{at}.timestamp: expected {want}, got {got}"));
            }
        }
        if let Some(c) = &e.class {
            let got = a.get("class").and_then(|v| v.as_str());
            if got != Some(c.as_str()) {
                diffs.push(format!(
                    "{at}.class: expected dead letter class {c:?}, got {}",
                    got.map_or("<not a dead letter>".to_string(), |g| format!("{g:?}"))
                ));
            }
        }
        if let Some(m) = &e.message {
            let got = a.get("message").and_then(|v| v.as_str()).unwrap_or("");
            if !got.contains(m.as_str()) {
                diffs.push(format!(
                    "{at}.message: expected it to contain {m:?}, got {got:?}"
                ));
            }
        }
        if let Some(v) = &e.value {
            let got = a.get("value").unwrap_or(&serde_json::Value::Null);
            json_diff(&format!("{at}.value"), v, got, &mut diffs);
        }
    }
    for (i, a) in actual.iter().enumerate().skip(expected.len()) {
        diffs.push(format!("{topic}[{i}]: unexpected record {a}"));
    }
    Ok(diffs)
}

fn show_expected(e: &Expected) -> String {
    let mut parts = Vec::new();
    if let Some(k) = &e.key {
        parts.push(format!("key {k:?}"));
    }
    if let Some(c) = &e.class {
        parts.push(format!("class {c:?}"));
    }
    if let Some(v) = &e.value {
        parts.push(format!("value {v}"));
    }
    parts.join(", ")
}

/// Field-by-field differences; numbers equal within 1e-9 relative (float arithmetic).
fn json_diff(at: &str, want: &serde_json::Value, got: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value as J;
    match (want, got) {
        (J::Object(w), J::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => json_diff(&format!("{at}.{k}"), wv, gv, out),
                    None => out.push(format!(
                        "{at}.{k}: expected {wv}, the record has no such field"
                    )),
                }
            }
            for k in g.keys().filter(|k| !w.contains_key(*k)) {
                out.push(format!("{at}.{k}: unexpected field (= {})", g[k]));
            }
        }
        (J::Array(w), J::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                json_diff(&format!("{at}[{i}]"), wv, gv, out);
            }
        }
        // "~1800": within 1% (approximate results: quantiles, distinct counts).
        (J::String(w), J::Number(g)) if w.starts_with('~') => {
            let g = g.as_f64().unwrap_or(f64::NAN);
            match w[1..].trim().parse::<f64>() {
                Ok(w) if (w - g).abs() <= 0.01 * w.abs().max(g.abs()) => {}
                Ok(w) => out.push(format!("{at}: expected {w} within 1%, got {g}")),
                Err(_) => out.push(format!("{at}: `{w}` is not `~<number>`")),
            }
        }
        (J::Number(w), J::Number(g)) => {
            let (w, g) = (
                w.as_f64().unwrap_or(f64::NAN),
                g.as_f64().unwrap_or(f64::NAN),
            );
            let close = w == g || (w - g).abs() <= 1e-9 * w.abs().max(g.abs());
            if !close {
                out.push(format!("{at}: expected {w}, got {g}"));
            }
        }
        (w, g) if w == g => {}
        (w, g) => out.push(format!("{at}: expected {w}, got {g}")),
    }
}
