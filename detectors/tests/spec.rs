//! The detector spec as the topology YAML writes it.

use sluice_detectors::{DetectorSpec, EwmaParams};

#[test]
fn yaml_picks_the_kind_and_fills_defaults() {
    let s: DetectorSpec = serde_yaml::from_str("{ kind: ewma, alpha: 0.1 }").unwrap();
    assert_eq!(
        s,
        DetectorSpec::Ewma(EwmaParams {
            alpha: 0.1,
            ..EwmaParams::default()
        })
    );
    let s: DetectorSpec = serde_yaml::from_str("kind: ensemble").unwrap();
    assert_eq!(s, DetectorSpec::from_name("ensemble").unwrap());
    assert_eq!(s, DetectorSpec::default());
    let s: DetectorSpec = serde_yaml::from_str("kind: null").unwrap();
    assert_eq!(s, DetectorSpec::Null);
}

#[test]
fn the_topology_default_written_out_in_full_is_the_default() {
    let yaml = "{ kind: ensemble, level_rate: 0.01, record_decay: 0.001, warmup: 50, levels: 6, \
                context_len: 3, novelty_weight: 0.4, sequence_decay: 0.001, rest: 100, \
                generation: 5000, season_s: 86400, season_slots: 48, smooth_alpha: 0.18, \
                multiscale: true, sequence_z: true }";
    let s: DetectorSpec = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(s, DetectorSpec::default());
}

#[test]
fn unknown_keys_and_kinds_are_rejected() {
    let e = serde_yaml::from_str::<DetectorSpec>("{ kind: ewma, alfa: 0.1 }").unwrap_err();
    assert!(e.to_string().contains("alfa"), "{e}");
    let e = serde_yaml::from_str::<DetectorSpec>("{ kind: ensemble, windw: 3 }").unwrap_err();
    assert!(e.to_string().contains("windw"), "{e}");
    let e = serde_yaml::from_str::<DetectorSpec>("{ kind: htm }").unwrap_err();
    assert!(e.to_string().contains("htm"), "{e}");
    assert!(serde_yaml::from_str::<DetectorSpec>("{ alpha: 0.1 }").is_err());
}

#[test]
fn names_round_trip() {
    for spec in DetectorSpec::all() {
        assert_eq!(DetectorSpec::from_name(spec.name()).unwrap(), spec);
        let yaml = serde_yaml::to_string(&spec).unwrap();
        assert_eq!(serde_yaml::from_str::<DetectorSpec>(&yaml).unwrap(), spec);
    }
    let e = DetectorSpec::from_name("htm").unwrap_err().to_string();
    assert!(e.contains("htm") && e.contains("ensemble"), "{e}");
}
