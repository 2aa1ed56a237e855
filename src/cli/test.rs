//! `sluice test TOPOLOGY CASES...`: runs a topology's pipeline stages in-process, without a
//! broker, over the input records of each case and compares what lands on each topic with
//! the case's expectations. A readable diff per mismatch; exit 1 on any.
//!
//! A case file (YAML):
//! ```yaml
//! cases:
//!   - name: readings above 30 degrees are kept
//!     input:                      # in order; a record goes through every stage it reaches;
//!                                 # `- advance: 5m` passes wall clock (idle_timeout)
//!       - topic: readings
//!         key: d1                 # optional
//!         timestamp: 2026-03-01T10:00:00Z   # RFC 3339 or ms; default: the previous one
//!         value: { device_id: d1, temperature: 31.5 }
//!       # a record on a topic a `join` reads updates the table from then on;
//!       # `value: null` deletes its key
//!     expect:                     # per topic, every record in order (topics not named are
//!       hot:                      # not checked); `key`, `timestamp` only when given
//!         - value: { device_id: d1, temperature: 31.5 }
//!       questdb:hot_readings:     # rows a `questdb` sink wrote to that table
//!         - timestamp: 2026-03-01T10:00:00Z
//!           value: { ts: 1772359200000, device_id: d1, temperature: 31.5 }
//!       s3_parquet:lake/hot:      # rows of the Parquet objects under that prefix
//!         - key: date=2026-03-01/hour=10        # the object's directory
//!           value: { device_id: d1, temperature: 31.5 }
//!       dlq:
//!         - class: expression_division_by_zero   # dead letters: class, and message if given
//!     # numbers match within 1e-9 relative; "~1800" within 1% (quantiles, distinct counts)
//!     state:                      # optional: entries per store of a stage after the input
//!       mystage: { 0-window-windows: 2 }
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::testdriver::{compare_topic, Case, CaseFile, Driver, InputItem};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The topology file.
    pub topology: PathBuf,
    /// Case files (YAML).
    #[arg(required = true)]
    pub cases: Vec<PathBuf>,
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let loaded = match super::validate::load_or_exit(&a.topology) {
        Ok(l) => l,
        Err(code) => return Ok(code),
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
    for (i, item) in case.input.iter().enumerate() {
        let r = match item {
            InputItem::Advance(a) => {
                let by = humantime::parse_duration(&a.advance).with_context(|| {
                    format!(
                        "input item {i}: `advance: {}` is not a duration like `5m`",
                        a.advance
                    )
                })?;
                d.advance(by).with_context(|| format!("input item {i}"))?;
                continue;
            }
            InputItem::Record(r) => r,
        };
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
        if let Err(e) = d.check_target(topic, loaded) {
            diffs.push(e);
            continue;
        }
        let actual = d.read(topic);
        diffs.extend(compare_topic(topic, expected, &actual)?);
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
