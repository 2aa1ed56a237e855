//! A pipeline reads records written with an older schema version: the writer's schema
//! (found by the id in each record) is resolved into the input topic's schema, defaults
//! filled in; records written with the input schema itself skip that step. Both give the
//! same result.

use std::path::Path;

use sluice::runtime::{Emit, Input, ProcessError, Processor, Rejection};
use sluice::stages::pipeline::Pipeline;
use sluice::stages::SchemaSource;
use sluice_topology::StageSpec;

/// Writer schema 1: the input schema as in the file. Writer schema 2: an older version
/// without `site` and `voltage` (the reader's defaults are null) and with an extra field.
struct Two {
    current: String,
    older: String,
}

impl SchemaSource for Two {
    fn fetch(&mut self, id: u32) -> Result<Option<String>, ProcessError> {
        Ok(match id {
            1 => Some(self.current.clone()),
            2 => Some(self.older.clone()),
            _ => None,
        })
    }
}

const OLDER: &str = r#"{"type": "record", "name": "MeterReading", "namespace": "io.acme.energy", "fields": [
  {"name": "meter_id", "type": "string"},
  {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "power_w", "type": "double"},
  {"name": "interval_s", "type": "int"},
  {"name": "phase", "type": {"type": "enum", "name": "Phase", "symbols": ["L1", "L2", "L3"]}},
  {"name": "firmware", "type": "string"}]}"#;

#[derive(Default)]
struct Out {
    values: Vec<Vec<u8>>,
    dead: Vec<String>,
}

impl Emit for Out {
    fn emit(&mut self, _: usize, _: &[u8], value: &[u8], _: i64) {
        self.values.push(value.to_vec());
    }
    fn dead_letter(&mut self, _: &Input<'_>, why: &Rejection) {
        self.dead.push(format!("{}: {}", why.class, why.message));
    }
}

#[test]
fn an_older_writer_schema_is_resolved_and_the_current_one_read_directly() {
    let dir = tempfile::tempdir().unwrap();
    let energy = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/energy");
    std::fs::copy(energy.join("meter-reading.avsc"), dir.path().join("r.avsc")).unwrap();
    // One stage, no filter: select every field of the input, so what was decoded is
    // visible in the output.
    let topology = r#"
apiVersion: sluice/v1
kind: Topology
metadata: { name: evo }
connections: { brokers: "127.0.0.1:1", registry: "http://127.0.0.1:1" }
topics:
  readings: { partitions: 1, subject: readings-value, schema: r.avsc }
  out: { partitions: 1 }
stages:
  copy:
    kind: pipeline
    input: readings
    operators:
      - select: { meter_id: meter_id, site: "coalesce(site, 'unknown')", volts: voltage, kw: power_w / 1000.0, phase: phase }
    output: out
"#;
    let path = dir.path().join("t.yaml");
    std::fs::write(&path, topology).unwrap();
    let loaded = sluice_topology::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let StageSpec::Pipeline(p) = loaded.topology.stage("copy").unwrap() else {
        panic!("a pipeline");
    };
    let plan = p.plan.clone().unwrap();
    let current = std::fs::read_to_string(dir.path().join("r.avsc")).unwrap();
    let schemas = Two {
        current: current.clone(),
        older: OLDER.to_string(),
    };
    let no_tables = sluice_ops::op::join::MemTables::default();
    let task = sluice_ops::op::TaskContext {
        partition: 0,
        tables: &no_tables,
    };
    let mut stage = Pipeline::new(
        "copy",
        plan.clone(),
        sluice::stages::pipeline::Output::Topic { schema_id: 9 },
        &[],
        Box::new(schemas),
        &task,
    )
    .unwrap();

    let older = apache_avro::Schema::parse_str(OLDER).unwrap();
    let current = apache_avro::Schema::parse_str(&current).unwrap();
    let from_older = sluice::testdriver::json_to_avro(
        &serde_json::json!({"meter_id": "m1", "ts": 1000, "power_w": 1500.0, "interval_s": 60, "phase": "L2", "firmware": "1.2"}),
        &older,
    )
    .unwrap();
    let from_current = sluice::testdriver::json_to_avro(
        &serde_json::json!({"meter_id": "m1", "ts": 1000, "power_w": 1500.0, "interval_s": 60, "phase": "L2", "site": null, "voltage": null}),
        &current,
    )
    .unwrap();
    let mut out = Out::default();
    for (id, schema, value) in [(2u32, &older, &from_older), (1, &current, &from_current)] {
        let mut bytes = Vec::new();
        sluice_schemas::wire::write_header(id, &mut bytes);
        bytes.extend(sluice_ops::codec::encode_once(schema, value).unwrap());
        let input = Input {
            topic: "readings",
            partition: 0,
            offset: 0,
            timestamp: 1000,
            key: None,
            value: Some(&bytes),
        };
        stage.process(&input, &mut out).unwrap();
    }
    assert!(out.dead.is_empty(), "{:?}", out.dead);
    assert_eq!(out.values.len(), 2);
    assert_eq!(
        out.values[0], out.values[1],
        "both versions give the same output"
    );
    let (_, body) = sluice_schemas::wire::parse(&out.values[0]).unwrap();
    let decoded = sluice_ops::codec::decode_once(plan.output_schema, None, body).unwrap();
    assert_eq!(
        sluice::testdriver::avro_to_json(decoded),
        serde_json::json!({"meter_id": "m1", "site": "unknown", "volts": null, "kw": 1.5, "phase": "L2"})
    );
}
