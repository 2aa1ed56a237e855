//! Runs the NAB corpus through one detector and prints the scores; the last line is
//! `standard=S low_fp=F low_fn=N`.
//!
//! `cargo run --release -p sluice-detectors --example nab -- --data ../shared/bench/nab \
//!     --out /tmp/nab-results [--detector NAME | --spec '{"kind":"ewma","alpha":0.1}'] [--per-file]`

use std::path::PathBuf;
use std::process::ExitCode;

use sluice_detectors::nab::{self, NabOptions};
use sluice_detectors::DetectorSpec;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut data = None;
    let mut out = None;
    let mut spec = DetectorSpec::default();
    let mut per_file = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--data" => data = Some(PathBuf::from(val()?)),
            "--out" => out = Some(PathBuf::from(val()?)),
            "--detector" => spec = DetectorSpec::from_name(&val()?).map_err(|e| e.to_string())?,
            "--spec" => spec = serde_json::from_str(&val()?).map_err(|e| e.to_string())?,
            "--per-file" => per_file = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let data = data.ok_or("--data DIR is required (the NAB folder holding data/ and labels/)")?;
    let out = out.ok_or("--out DIR is required")?;
    let opts = NabOptions::for_corpus(&data, out, spec);
    let report = nab::run(&opts, &mut |done, total| {
        eprint!("\r{done}/{total} files");
    })
    .map_err(|e| e.to_string())?;
    eprintln!();
    if per_file {
        for (f, raw) in &report.per_file {
            println!("{raw:8.3} {f}");
        }
    }
    for p in &report.profiles {
        println!(
            "{:<20} threshold={:.6} raw={:.3} score={:.2}",
            p.profile.name, p.threshold, p.raw, p.normalised
        );
    }
    println!(
        "detector={} files={} windows={} points={} points_per_sec={:.0} max_state_bytes={}",
        report.detector,
        report.files,
        report.windows,
        report.points,
        report.points_per_sec(),
        report.max_state_bytes
    );
    println!("{report}");
    Ok(())
}
