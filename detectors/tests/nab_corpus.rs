//! The NAB runner and scorer on the real corpus (`../shared/bench/nab`).

mod common;

use std::path::Path;

use sluice_detectors::nab::{self, NabOptions};
use sluice_detectors::DetectorSpec;

fn run(spec: DetectorSpec, out: &Path) -> nab::NabReport {
    let opts = NabOptions::for_corpus(&common::nab_dir(), out.to_owned(), spec);
    let mut calls = Vec::new();
    let report = nab::run(&opts, &mut |done, total| calls.push((done, total))).expect("nab run");
    assert_eq!(calls.len(), 58, "one progress call per file");
    assert_eq!(calls.last(), Some(&(58, 58)));
    report
}

#[test]
fn null_detector_scores_zero_on_every_profile() {
    let out = tempfile::tempdir().unwrap();
    let r = run(DetectorSpec::Null, out.path());
    assert_eq!((r.standard, r.low_fp, r.low_fn), (0.0, 0.0, 0.0));
    assert_eq!(r.to_string(), "standard=0.0 low_fp=0.0 low_fn=0.0");
    assert_eq!((r.files, r.windows), (58, 116));
}

#[test]
fn perfect_result_files_score_hundred_on_every_profile() {
    // Write result files in NAB's layout that flag the first row of every window (labels
    // come from the runner's own `label` column), then score them from disk.
    let out = tempfile::tempdir().unwrap();
    run(DetectorSpec::Null, out.path());
    let dir = out.path().join("null");
    let perfect = out.path().join("perfect");
    for cat in std::fs::read_dir(&dir).unwrap() {
        let cat = cat.unwrap().path();
        let cat_name = cat.file_name().unwrap().to_owned();
        std::fs::create_dir_all(perfect.join(&cat_name)).unwrap();
        for f in std::fs::read_dir(&cat).unwrap() {
            let f = f.unwrap().path();
            let text = std::fs::read_to_string(&f).unwrap();
            let mut lines = text.lines();
            let mut body = format!("{}\n", lines.next().unwrap());
            let mut prev_label = "0";
            for line in lines {
                let cols: Vec<&str> = line.split(',').collect();
                let score = if cols[3] == "1" && prev_label == "0" {
                    1
                } else {
                    0
                };
                prev_label = cols[3];
                body.push_str(&format!("{},{},{score},{}\n", cols[0], cols[1], cols[3]));
            }
            let name = f
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replacen("null_", "perfect_", 1);
            std::fs::write(perfect.join(&cat_name).join(name), body).unwrap();
        }
    }
    let labels = common::nab_dir().join("labels/combined_windows.json");
    for p in nab::score_results(&perfect, &labels).unwrap() {
        assert!((p.normalised - 100.0).abs() < 1e-9, "{p:?}");
    }
    for p in nab::score_results(&dir, &labels).unwrap() {
        assert_eq!(p.normalised, 0.0, "{p:?}");
    }
}

#[test]
fn result_files_follow_nab_layout_and_rescore_identically() {
    let out = tempfile::tempdir().unwrap();
    let r = run(DetectorSpec::from_name("ensemble").unwrap(), out.path());
    let f = out
        .path()
        .join("ensemble/realKnownCause/ensemble_nyc_taxi.csv");
    let text = std::fs::read_to_string(&f).expect("result file in NAB layout");
    assert!(text.starts_with("timestamp,value,anomaly_score,label\n"));
    assert_eq!(text.lines().count(), 10_321);
    let labels = common::nab_dir().join("labels/combined_windows.json");
    let rescored = nab::score_results(&out.path().join("ensemble"), &labels).unwrap();
    assert!((rescored[0].normalised - r.standard).abs() < 1e-6);
    assert!((rescored[1].normalised - r.low_fp).abs() < 1e-6);
    assert!((rescored[2].normalised - r.low_fn).abs() < 1e-6);
}

#[test]
fn ensemble_keeps_its_benchmark_score() {
    // Guards the number in BENCHMARKS.md: default parameters, whole corpus, no look-ahead.
    let out = tempfile::tempdir().unwrap();
    let r = run(DetectorSpec::from_name("ensemble").unwrap(), out.path());
    assert!(r.standard > 71.0, "{r}");
    assert!(r.low_fp > 63.0 && r.low_fn > 75.0, "{r}");
    assert!(r.max_state_bytes <= 4096, "{} bytes", r.max_state_bytes);
}

#[test]
fn cad_keeps_its_benchmark_score() {
    // Guards the cad row of the table (online range, bounded memory, no look-ahead).
    let out = tempfile::tempdir().unwrap();
    let r = run(DetectorSpec::from_name("cad").unwrap(), out.path());
    assert!(r.standard > 52.0, "{r}");
    assert!(r.max_state_bytes < 400_000, "{} bytes", r.max_state_bytes);
}

#[test]
fn a_missing_corpus_is_a_clear_error() {
    let out = tempfile::tempdir().unwrap();
    let opts = NabOptions::for_corpus(
        Path::new("/nonexistent/nab"),
        out.path().into(),
        DetectorSpec::Null,
    );
    let err = nab::run(&opts, &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/nab"), "{err}");
}
