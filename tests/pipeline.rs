//! The reference topology end to end on the real local stack: simulated telemetry in, and
//! every output read back from where it landed (topics, the TSDB's query API, Parquet in S3)
//! and compared with what the input determines.

mod common;

use common::*;
use sluice::sim::expect::expected;
use sluice::sim::{produce, SimConfig};
use sluice_connectors::kafka::ClientOptions;

#[test]
fn the_reference_pipeline_outputs_exactly_what_the_input_determines() {
    let brokers = env("SLUICE_BROKERS");
    let topo = TestTopology::new(|t| t);
    let cfg = SimConfig {
        devices: 24,
        steps: 240,
        bad_prob: 0.004,
        anomaly_prob: 0.4,
        device_prefix: format!("{}-d", topo.suffix),
        ..SimConfig::default()
    };
    let exp = expected(&cfg, &rules());

    let Running {
        mut run,
        log,
        raw,
        ids,
    } = topo.start(&brokers);
    let summary = produce(
        &ClientOptions::new(&brokers),
        &raw,
        cfg.clone(),
        ids,
        0,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(summary.records as usize, exp.records.len());

    let out = verify::check_outputs(&topo, &cfg, &exp, &mut || match run.exited() {
        None => Ok(()),
        Some(st) => Err(format!(
            "sluice exited ({st}); log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )),
    });
    // Undisturbed, even a consumer that keeps every record sees each once: no repeated
    // record on any output topic, no duplicate TSDB sample, no duplicate Parquet row.
    out.assert_no_repeats();
    run.interrupt();
}
