//! docs/TOPOLOGY.md documents every key of a pipeline stage.

use sluice_topology::PipelineSpec;

#[test]
fn every_pipeline_key_is_documented() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/TOPOLOGY.md"))
        .expect("docs/TOPOLOGY.md exists");
    let err = match serde_yaml::from_str::<PipelineSpec>("__no_such_key__: 1") {
        Ok(_) => panic!("an unknown key must be refused"),
        Err(e) => e.to_string(),
    };
    let i = err.find("expected").expect("serde lists the expected keys");
    let keys: Vec<&str> = err[i..].split('`').skip(1).step_by(2).collect();
    assert!(keys.contains(&"operators"), "{keys:?}");
    for key in keys {
        assert!(
            doc.contains(&format!("| `{key}` |")),
            "docs/TOPOLOGY.md's pipeline table has no row for `{key}`"
        );
    }
}

/// docs/TOPOLOGY.md documents every key of an MQTT and an HTTP ingest bridge.
#[test]
fn every_ingest_key_is_documented() {
    ingest_keys_documented(
        serde_yaml::from_str::<sluice_topology::ingest::MqttIngestSpec>("__no_such_key__: 1")
            .map(|_| ()),
    );
    ingest_keys_documented(
        serde_yaml::from_str::<sluice_topology::ingest::HttpIngestSpec>("__no_such_key__: 1")
            .map(|_| ()),
    );
}

fn ingest_keys_documented(parsed: Result<(), serde_yaml::Error>) {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/TOPOLOGY.md"))
        .expect("docs/TOPOLOGY.md exists");
    let err = match parsed {
        Ok(_) => panic!("an unknown key must be refused"),
        Err(e) => e.to_string(),
    };
    let i = err.find("expected").expect("serde lists the expected keys");
    let keys: Vec<&str> = err[i..].split('`').skip(1).step_by(2).collect();
    assert!(keys.contains(&"device_field"), "{keys:?}");
    let section = doc
        .split("## Ingest")
        .nth(1)
        .expect("docs/TOPOLOGY.md has an `## Ingest` section");
    for key in keys {
        assert!(
            section.contains(&format!("| `{key}` |")),
            "docs/TOPOLOGY.md's Ingest table has no row for `{key}`"
        );
    }
}
