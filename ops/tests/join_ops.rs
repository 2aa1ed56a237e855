//! `join` with a table: what it checks offline, and what inner and left joins hand on as the
//! table changes.

use apache_avro::types::Value;
use apache_avro::Schema;
use sluice_ops::op::join::MemTables;
use sluice_ops::op::{Chain, KeyShape, PlanContext, Record, Running, StreamType, TaskContext};
use sluice_ops::op::{Scope, TableUse, TopicInfo};
use sluice_ops::types::RecordType;
use sluice_ops::Problem;

const READING: &str = r#"{"type": "record", "name": "Reading", "namespace": "io.acme", "fields": [
  {"name": "device_id", "type": "string"},
  {"name": "line", "type": ["null", "int"], "default": null},
  {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "temperature", "type": "double"}]}"#;

const DEVICE: &str = r#"{"type": "record", "name": "Device", "namespace": "io.acme.registry", "fields": [
  {"name": "device_id", "type": "string"},
  {"name": "site", "type": "string"},
  {"name": "model", "type": ["null", "string"], "default": null},
  {"name": "limits", "type": {"type": "record", "name": "Limits", "fields": [
    {"name": "max_temp", "type": "double"}]}}]}"#;

fn record_type(schema: &str) -> RecordType {
    RecordType::from_schema(&Schema::parse_str(schema).unwrap()).unwrap()
}

fn ctx(table_partitions: u32) -> PlanContext {
    let mut c = PlanContext {
        input_partitions: Some(4),
        ..PlanContext::default()
    };
    c.topics.insert(
        "devices.registry".into(),
        TopicInfo {
            value: Some(record_type(DEVICE)),
            partitions: table_partitions,
        },
    );
    c.topics.insert(
        "plain.topic".into(),
        TopicInfo {
            value: None,
            partitions: 4,
        },
    );
    c
}

fn plan(ops: &str) -> Result<Chain, Vec<Problem>> {
    let ops: Vec<serde_yaml::Value> = serde_yaml::from_str(ops).unwrap();
    let input = StreamType {
        value: record_type(READING),
        key: KeyShape::Input,
    };
    Chain::plan_in(&ops, input, &ctx(4))
}

fn problems(ops: &str) -> Vec<Problem> {
    plan(ops).expect_err("the plan should fail")
}

fn reading(device: &str, line: Option<i32>, temperature: f64) -> Record {
    let line = match line {
        Some(l) => Value::Union(1, Box::new(Value::Int(l))),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    Record {
        key: Some(device.as_bytes().to_vec()),
        value: Value::Record(vec![
            ("device_id".into(), Value::String(device.into())),
            ("line".into(), line),
            ("ts".into(), Value::TimestampMillis(1_000)),
            ("temperature".into(), Value::Double(temperature)),
        ]),
        timestamp: 1_000,
    }
}

fn device(id: &str, site: &str, model: Option<&str>, max_temp: f64) -> Value {
    let model = match model {
        Some(m) => Value::Union(1, Box::new(Value::String(m.into()))),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    Value::Record(vec![
        ("device_id".into(), Value::String(id.into())),
        ("site".into(), Value::String(site.into())),
        ("model".into(), model),
        (
            "limits".into(),
            Value::Record(vec![("max_temp".into(), Value::Double(max_temp))]),
        ),
    ])
}

/// What a commit does to the tables: drains their dirty entries into the changelog (here:
/// returns them). The join takes its next snapshot of the table then.
fn commit(r: &mut Running) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut sink = Vec::new();
    for t in r.tables() {
        t.drain_dirty(&mut sink);
    }
    sink
}

fn run(r: &mut Running, rec: Record) -> Vec<Record> {
    let mut out = Vec::new();
    let mut rejected = Vec::new();
    r.process(rec, &mut out, &mut rejected).unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    out
}

fn field<'a>(rec: &'a Record, name: &str) -> &'a Value {
    let Value::Record(fields) = &rec.value else {
        panic!("not a record")
    };
    &fields.iter().find(|(n, _)| n == name).unwrap().1
}

const INNER: &str = r#"
- join:
    table: devices.registry
    on: device_id
    fields: { site: site, max_temp: limits.max_temp, model: model }
"#;

#[test]
fn inner_join_adds_the_current_value_and_drops_unmatched_records() {
    let chain = plan(INNER).unwrap();
    assert_eq!(chain.stores(), ["0-join-snapshot"]);
    assert_eq!(
        chain.lookups(),
        vec![TableUse {
            topic: "devices.registry".into(),
            scope: Scope::Global
        }]
    );
    let names: Vec<_> = chain.output.value.field_names().collect();
    assert_eq!(
        names,
        [
            "device_id",
            "line",
            "ts",
            "temperature",
            "site",
            "max_temp",
            "model"
        ]
    );
    let ty = |n: &str| chain.output.value.field(n).unwrap().1.ty.clone();
    assert!(
        !ty("site").nullable,
        "inner join: a required table field stays required"
    );
    assert!(ty("model").nullable);

    let tables = MemTables::default();
    let mut r = chain
        .build_for(&TaskContext {
            partition: 2,
            tables: &tables,
        })
        .unwrap();
    // Nothing in the table yet: dropped.
    assert!(run(&mut r, reading("d1", None, 20.0)).is_empty());

    tables.apply(
        "devices.registry",
        b"d1",
        Some(device("d1", "A", None, 80.0)),
    );
    // Not before the next commit: the records between two commits see one snapshot.
    assert!(run(&mut r, reading("d1", Some(3), 21.0)).is_empty());
    commit(&mut r);
    let out = run(&mut r, reading("d1", Some(3), 21.0));
    assert_eq!(out.len(), 1);
    assert_eq!(field(&out[0], "site"), &Value::String("A".into()));
    assert_eq!(field(&out[0], "max_temp"), &Value::Double(80.0));
    assert_eq!(
        field(&out[0], "model"),
        &Value::Union(0, Box::new(Value::Null))
    );
    assert_eq!(field(&out[0], "temperature"), &Value::Double(21.0));
    assert_eq!(out[0].key.as_deref(), Some(&b"d1"[..]), "the key is kept");

    // An update applies from the commit after its arrival on.
    tables.apply(
        "devices.registry",
        b"d1",
        Some(device("d1", "B", Some("x7"), 90.0)),
    );
    commit(&mut r);
    let out = run(&mut r, reading("d1", None, 22.0));
    assert_eq!(field(&out[0], "site"), &Value::String("B".into()));
    assert_eq!(
        field(&out[0], "model"),
        &Value::Union(1, Box::new(Value::String("x7".into())))
    );

    // A tombstone deletes.
    tables.apply("devices.registry", b"d1", None);
    commit(&mut r);
    assert!(run(&mut r, reading("d1", None, 23.0)).is_empty());

    // The output fits the derived schema.
    tables.apply(
        "devices.registry",
        b"d2",
        Some(device("d2", "C", None, 70.0)),
    );
    commit(&mut r);
    let out = run(&mut r, reading("d2", None, 24.0));
    let schema = chain.output.value.to_schema().unwrap();
    assert!(out[0].value.validate(&schema), "{:?}", out[0].value);
}

#[test]
fn left_join_keeps_unmatched_records_with_nulls() {
    let chain = plan(
        r#"
- join: { table: devices.registry, on: device_id, type: left, fields: [site, limits.max_temp] }
"#,
    )
    .unwrap();
    let ty = |n: &str| chain.output.value.field(n).unwrap().1.ty.clone();
    assert!(ty("site").nullable && ty("max_temp").nullable);
    let tables = MemTables::default();
    tables.apply(
        "devices.registry",
        b"d1",
        Some(device("d1", "A", None, 80.0)),
    );
    let mut r = chain
        .build_for(&TaskContext {
            partition: 0,
            tables: &tables,
        })
        .unwrap();
    let schema = chain.output.value.to_schema().unwrap();
    let hit = run(&mut r, reading("d1", None, 20.0));
    let miss = run(&mut r, reading("zz", None, 20.0));
    assert_eq!(
        field(&hit[0], "site"),
        &Value::Union(1, Box::new(Value::String("A".into())))
    );
    assert_eq!(
        field(&miss[0], "site"),
        &Value::Union(0, Box::new(Value::Null))
    );
    assert_eq!(
        field(&miss[0], "max_temp"),
        &Value::Union(0, Box::new(Value::Null))
    );
    assert!(hit[0].value.validate(&schema) && miss[0].value.validate(&schema));
}

#[test]
fn keys_of_several_fields_are_json_arrays_as_key_by_writes_them() {
    let chain = plan(
        "- join: { table: devices.registry, on: [device_id, line], type: left, fields: [site] }",
    )
    .unwrap();
    let tables = MemTables::default();
    tables.apply(
        "devices.registry",
        br#"["d1",3]"#,
        Some(device("d1", "L3", None, 1.0)),
    );
    let mut r = chain
        .build_for(&TaskContext {
            partition: 0,
            tables: &tables,
        })
        .unwrap();
    let out = run(&mut r, reading("d1", Some(3), 1.0));
    assert_eq!(
        field(&out[0], "site"),
        &Value::Union(1, Box::new(Value::String("L3".into())))
    );
    // NULL in an `on` field matches nothing: kept by a left join, with NULLs.
    let out = run(&mut r, reading("d1", None, 1.0));
    assert_eq!(
        field(&out[0], "site"),
        &Value::Union(0, Box::new(Value::Null))
    );
}

#[test]
fn without_fields_every_table_field_but_the_key_is_added() {
    let chain = plan("- join: { table: devices.registry, on: device_id }").unwrap();
    let names: Vec<_> = chain.output.value.field_names().collect();
    assert_eq!(
        names,
        [
            "device_id",
            "line",
            "ts",
            "temperature",
            "site",
            "model",
            "limits"
        ]
    );
}

#[test]
fn a_task_without_the_table_stops_instead_of_dropping_records() {
    let chain = plan(INNER).unwrap();
    let mut r = chain.build();
    let mut out = Vec::new();
    let mut rejected = Vec::new();
    let err = r
        .process(reading("d1", None, 1.0), &mut out, &mut rejected)
        .unwrap_err();
    assert!(err.to_string().contains("devices.registry"), "{err}");
}

#[test]
fn mistakes_are_reported_with_their_key_and_a_fix() {
    let p = problems("- join: { table: devices.registy, on: device_id }");
    assert_eq!(p[0].key, "[0].join.table");
    assert!(p[0].fix.contains("devices.registry"), "{p:?}");

    let p = problems("- join: { table: plain.topic, on: device_id }");
    assert!(p[0].message.contains("no `schema:`"), "{p:?}");

    let p = problems("- join: { table: devices.registry, on: devce_id }");
    assert_eq!(p[0].key, "[0].join.on");
    assert!(p[0].fix.contains("device_id"), "{p:?}");

    let p = problems("- join: { table: devices.registry, on: device_id, fields: [sit] }");
    assert_eq!(p[0].key, "[0].join.fields[0]");
    assert!(p[0].fix.contains("site"), "{p:?}");

    // A name the stream already has.
    let p = problems(
        "- join: { table: devices.registry, on: line, fields: { temperature: limits.max_temp } }",
    );
    assert_eq!(p[0].key, "[0].join.fields.temperature");
    assert!(p[0].fix.contains("registry_temperature"), "{p:?}");

    let p = problems("- join: { table: devices.registry, on: device_id, kind: left }");
    assert!(p[0].fix.contains("type"), "{p:?}");

    let p = problems("- join: { table: devices.registry, on: device_id, type: outer }");
    assert_eq!(p[0].key, "[0].join.type");
    assert!(
        p[0].fix.contains("inner") && p[0].fix.contains("left"),
        "{p:?}"
    );

    // Every problem at once.
    let p = problems("- join: { table: devices.registry, on: devce_id, fields: [sit] }");
    assert_eq!(p.len(), 2, "{p:?}");
}

#[test]
fn a_co_partitioned_join_needs_matching_partitions_and_key() {
    let ops: Vec<serde_yaml::Value> = serde_yaml::from_str(
        "- join: { table: devices.registry, on: device_id, scope: co_partitioned, fields: [site] }",
    )
    .unwrap();
    let input = StreamType {
        value: record_type(READING),
        key: KeyShape::Input,
    };
    let p = Chain::plan_in(&ops, input.clone(), &ctx(8)).unwrap_err();
    assert_eq!(p[0].key, "[0].join.scope");
    assert!(
        p[0].message.contains("8") && p[0].message.contains("4"),
        "{p:?}"
    );

    // Keyed by something else.
    let ops: Vec<serde_yaml::Value> = serde_yaml::from_str(
        r#"
- key_by: [line]
- join: { table: devices.registry, on: device_id, scope: co_partitioned, fields: [site] }
"#,
    )
    .unwrap();
    let p = Chain::plan_in(&ops, input.clone(), &ctx(4)).unwrap_err();
    assert_eq!(p[0].key, "[1].join.scope");
    assert!(p[0].fix.contains("key_by: [device_id]"), "{p:?}");

    // Keyed by the join fields: the chain is cut for a repartition before the join; a
    // global join needs none.
    let ops: Vec<serde_yaml::Value> = serde_yaml::from_str(
        r#"
- key_by: [device_id]
- join: { table: devices.registry, on: device_id, scope: co_partitioned, fields: [site] }
"#,
    )
    .unwrap();
    let chain = Chain::plan_in(&ops, input.clone(), &ctx(4)).unwrap();
    assert_eq!(chain.repartition_after(), Some(0));
    let ops: Vec<serde_yaml::Value> = serde_yaml::from_str(
        r#"
- key_by: [device_id]
- join: { table: devices.registry, on: device_id, fields: [site] }
"#,
    )
    .unwrap();
    let chain = Chain::plan_in(&ops, input, &ctx(4)).unwrap();
    assert_eq!(chain.repartition_after(), None);
}

#[test]
fn a_replay_after_a_crash_joins_with_the_table_the_first_run_saw() {
    use sluice_state::{KvStore, MemStore, WriteBatch};
    let chain = plan(INNER).unwrap();
    let tables = MemTables::default();
    tables.apply(
        "devices.registry",
        b"d1",
        Some(device("d1", "A", None, 80.0)),
    );
    let task = TaskContext {
        partition: 0,
        tables: &tables,
    };
    // The first run commits once, so its snapshot includes d1 = A ...
    let mut first = chain.build_for(&task).unwrap();
    let mut engine = MemStore::new();
    for t in first.tables() {
        t.attach(Box::new(MemStore::new())).unwrap();
    }
    let mut batch = WriteBatch::new();
    for (k, v) in commit(&mut first) {
        batch.push(k, v);
    }
    engine.write(batch, None).unwrap();
    let before: Vec<_> = [1.0, 2.0]
        .iter()
        .flat_map(|t| run(&mut first, reading("d1", None, *t)))
        .collect();
    assert_eq!(field(&before[0], "site"), &Value::String("A".into()));

    // ... then the table changes (d1 moves to B, d2 appears) and the process dies before
    // its next commit. The restored task replays the same records with the same table.
    tables.apply(
        "devices.registry",
        b"d1",
        Some(device("d1", "B", None, 80.0)),
    );
    tables.apply(
        "devices.registry",
        b"d2",
        Some(device("d2", "C", None, 80.0)),
    );
    let mut replay = chain.build_for(&task).unwrap();
    for t in replay.tables() {
        t.attach(Box::new(engine.clone())).unwrap();
    }
    let again: Vec<_> = [1.0, 2.0]
        .iter()
        .flat_map(|t| run(&mut replay, reading("d1", None, *t)))
        .collect();
    assert_eq!(before, again);
    assert!(
        run(&mut replay, reading("d2", None, 3.0)).is_empty(),
        "d2 came after the snapshot"
    );

    // After the replay's commit the new values apply.
    commit(&mut replay);
    let now = run(&mut replay, reading("d1", None, 4.0));
    assert_eq!(field(&now[0], "site"), &Value::String("B".into()));
    assert_eq!(run(&mut replay, reading("d2", None, 5.0)).len(), 1);
}

#[test]
fn a_task_wants_a_commit_when_its_table_moved() {
    let chain = plan(INNER).unwrap();
    let tables = MemTables::default();
    let mut r = chain
        .build_for(&TaskContext {
            partition: 0,
            tables: &tables,
        })
        .unwrap();
    // No record yet: no snapshot to renew.
    assert!(!r.wants_commit());
    run(&mut r, reading("d1", None, 1.0));
    assert!(!r.wants_commit());
    tables.apply(
        "devices.registry",
        b"d1",
        Some(device("d1", "A", None, 80.0)),
    );
    assert!(r.wants_commit());
    commit(&mut r);
    assert!(!r.wants_commit());
    assert_eq!(run(&mut r, reading("d1", None, 2.0)).len(), 1);
}
