//! `select` copies a field named bare (or by a dotted path) with its type exactly, and what
//! it writes encodes with the derived schema even when the input's unions put `null` second.

use apache_avro::types::Value;
use apache_avro::Schema;
use sluice_ops::codec::{decode_once, encode_once};
use sluice_ops::op::{Chain, KeyShape, Record, StreamType};
use sluice_ops::types::{FieldType, RecordType, Type};

const SCHEMA: &str = r#"{"type": "record", "name": "Reading", "namespace": "io.acme", "fields": [
    {"name": "id", "type": "string"},
    {"name": "quality", "type": "int"},
    {"name": "phase", "type": {"type": "enum", "name": "Phase", "symbols": ["L1", "L2"]}},
    {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}},
    {"name": "meta", "type": ["null", {"type": "record", "name": "Meta", "fields": [
        {"name": "site", "type": ["string", "null"]},
        {"name": "tags", "type": {"type": "array", "items": ["string", "null"]}}
    ]}], "default": null}
]}"#;

fn chain(yaml: &str) -> Chain {
    let schema = Schema::parse_str(SCHEMA).unwrap();
    let input = StreamType {
        value: RecordType::from_schema(&schema).unwrap(),
        key: KeyShape::Input,
    };
    let ops: Vec<serde_yaml::Value> = serde_yaml::from_str(yaml).unwrap();
    Chain::plan(&ops, input).unwrap_or_else(|p| panic!("{p:?}"))
}

fn reading() -> Value {
    Value::Record(vec![
        ("id".into(), Value::String("d1".into())),
        ("quality".into(), Value::Int(97)),
        ("phase".into(), Value::Enum(1, "L2".into())),
        (
            "price".into(),
            Value::Decimal(apache_avro::Decimal::from(vec![0x04, 0xd2])),
        ),
        (
            "meta".into(),
            Value::Union(
                1,
                Box::new(Value::Record(vec![
                    (
                        "site".into(),
                        Value::Union(0, Box::new(Value::String("A".into()))),
                    ),
                    (
                        "tags".into(),
                        Value::Array(vec![
                            Value::Union(1, Box::new(Value::Null)),
                            Value::Union(0, Box::new(Value::String("x".into()))),
                        ]),
                    ),
                ])),
            ),
        ),
    ])
}

#[test]
fn a_bare_field_keeps_its_type_and_an_expression_has_its_own() {
    let c = chain(
        "- select: { id: id, q: quality, q2: quality + 0, phase: phase, price: price, meta: meta, site: meta.site }\n",
    );
    let types: Vec<(&str, &FieldType)> = c
        .output
        .value
        .fields
        .iter()
        .map(|f| (f.name.as_str(), &f.ty))
        .collect();
    assert_eq!(types[1], ("q", &FieldType::required(Type::Int)));
    assert_eq!(
        types[2],
        ("q2", &FieldType::required(Type::Long)),
        "SQL integers are long"
    );
    assert!(matches!(types[3].1.ty, Type::Enum { .. }), "{:?}", types[3]);
    assert!(
        matches!(
            types[4].1.ty,
            Type::Decimal {
                precision: 6,
                scale: 2
            }
        ),
        "{:?}",
        types[4]
    );
    assert!(matches!(types[5].1.ty, Type::Record(_)) && types[5].1.nullable);
    assert_eq!(types[6], ("site", &FieldType::optional(Type::String)));

    let mut run = c.build();
    let (mut out, mut rejected) = (Vec::new(), Vec::new());
    run.process(
        Record {
            key: None,
            value: reading(),
            timestamp: 0,
        },
        &mut out,
        &mut rejected,
    )
    .unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    // The derived schema writes ["null", T]: the copy is re-shaped to it, and reads back.
    let schema = c.output.value.to_schema().unwrap();
    let bytes = encode_once(&schema, &out[0].value).unwrap_or_else(|e| panic!("{e}"));
    let back = decode_once(&schema, None, &bytes).unwrap();
    let Value::Record(fields) = back else {
        panic!()
    };
    assert_eq!(fields[1].1, Value::Int(97));
    assert_eq!(fields[3].1, Value::Enum(1, "L2".into()));
    assert_eq!(
        fields[6].1,
        Value::Union(1, Box::new(Value::String("A".into())))
    );
    let Value::Union(1, meta) = &fields[5].1 else {
        panic!("{:?}", fields[5])
    };
    let Value::Record(meta) = &**meta else {
        panic!()
    };
    assert_eq!(
        meta[0].1,
        Value::Union(1, Box::new(Value::String("A".into())))
    );
    assert_eq!(
        meta[1].1,
        Value::Array(vec![
            Value::Union(0, Box::new(Value::Null)),
            Value::Union(1, Box::new(Value::String("x".into()))),
        ])
    );
}

#[test]
fn a_copied_union_of_several_types_is_written_as_the_branch_of_its_value() {
    let schema = Schema::parse_str(
        r#"{"type": "record", "name": "U", "fields": [
            {"name": "a", "type": ["null", "int", "string"]},
            {"name": "b", "type": ["int", "string"]},
            {"name": "c", "type": ["string", "null", "int"]},
            {"name": "d", "type": {"type": "array", "items": ["long", "null", "string"]}}
        ]}"#,
    )
    .unwrap();
    let input = StreamType {
        value: RecordType::from_schema(&schema).unwrap(),
        key: KeyShape::Input,
    };
    let ops: Vec<serde_yaml::Value> =
        serde_yaml::from_str("- select: { a: a, b: b, c: c, d: d }\n").unwrap();
    let c = Chain::plan(&ops, input).unwrap();
    let derived = c.output.value.to_schema().unwrap();
    let value = Value::Record(vec![
        (
            "a".into(),
            Value::Union(2, Box::new(Value::String("x".into()))),
        ),
        (
            "b".into(),
            Value::Union(1, Box::new(Value::String("y".into()))),
        ),
        ("c".into(), Value::Union(2, Box::new(Value::Int(7)))),
        (
            "d".into(),
            Value::Array(vec![
                Value::Union(1, Box::new(Value::Null)),
                Value::Union(2, Box::new(Value::String("z".into()))),
                Value::Union(0, Box::new(Value::Long(5))),
            ]),
        ),
    ]);
    // The input is what its own schema writes and reads.
    let bytes = encode_once(&schema, &value).unwrap();
    let read = decode_once(&schema, None, &bytes).unwrap();
    let mut run = c.build();
    let (mut out, mut rejected) = (Vec::new(), Vec::new());
    run.process(
        Record {
            key: None,
            value: read,
            timestamp: 0,
        },
        &mut out,
        &mut rejected,
    )
    .unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    let bytes = encode_once(&derived, &out[0].value).unwrap_or_else(|e| panic!("{e}"));
    let back = decode_once(&derived, None, &bytes).unwrap();
    let Value::Record(f) = back else { panic!() };
    let inner = |v: &Value| match v {
        Value::Union(_, b) => (**b).clone(),
        v => v.clone(),
    };
    assert_eq!(inner(&f[0].1), Value::String("x".into()));
    assert_eq!(inner(&f[1].1), Value::String("y".into()));
    assert_eq!(inner(&f[2].1), Value::Int(7));
    let Value::Array(d) = &f[3].1 else { panic!() };
    let d: Vec<Value> = d.iter().map(inner).collect();
    assert_eq!(d, [Value::Null, Value::String("z".into()), Value::Long(5)]);
}
