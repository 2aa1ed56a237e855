//! Every example under `examples/` passes its `sluice test` cases (run by the binary, as a
//! data engineer would), and a wrong expectation fails with a readable diff.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// (topology, case files) of every example folder that has cases.
fn examples() -> Vec<(PathBuf, Vec<PathBuf>)> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(repo().join("examples")).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let mut topology = Vec::new();
        let mut cases = Vec::new();
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".yaml") {
                continue;
            }
            if name.starts_with("cases") {
                cases.push(f);
            } else {
                topology.push(f);
            }
        }
        if cases.is_empty() {
            continue;
        }
        assert_eq!(
            topology.len(),
            1,
            "{}: one topology file beside its cases",
            dir.display()
        );
        cases.sort();
        out.push((topology.remove(0), cases));
    }
    out.sort();
    out
}

fn sluice_test(topology: &Path, cases: &[PathBuf]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("test")
        .arg(topology)
        .args(cases)
        .output()
        .expect("sluice runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_example_passes_its_cases() {
    let examples = examples();
    assert!(
        examples
            .iter()
            .any(|(t, _)| t.ends_with("energy/energy.yaml")),
        "the energy example is found: {examples:?}"
    );
    for (topology, cases) in examples {
        let (ok, text) = sluice_test(&topology, &cases);
        eprintln!("{text}");
        assert!(ok, "{}: {text}", topology.display());
        assert!(text.contains(" 0 failed"), "{text}");
    }
}

#[test]
fn a_wrong_expectation_fails_with_the_field_expected_and_got() {
    let dir = tempfile::tempdir().unwrap();
    let energy = repo().join("examples/energy");
    for f in ["energy.yaml", "meter-reading.avsc", "meter.avsc"] {
        std::fs::copy(energy.join(f), dir.path().join(f)).unwrap();
    }
    let cases = std::fs::read_to_string(energy.join("cases.yaml")).unwrap();
    assert!(cases.contains("peak_w: 3600"));
    let wrong = cases.replacen("peak_w: 3600", "peak_w: 3700", 1);
    std::fs::write(dir.path().join("cases.yaml"), wrong).unwrap();
    let (ok, text) = sluice_test(
        &dir.path().join("energy.yaml"),
        &[dir.path().join("cases.yaml")],
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("energy.demand[2].value.peak_w: expected 3700, got 3600"),
        "{text}"
    );
    assert!(text.contains(", 1 failed"), "{text}");
}
