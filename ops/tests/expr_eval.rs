//! SQL expressions evaluated against `io.acme.Reading` records: results, types, NULL
//! propagation, runtime errors; and the ns/eval figure of a typical filter (ignored test).

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{Decimal, Schema};
use sluice_ops::expr::{EvalError, Expr};
use sluice_ops::types::{FieldType, RecordType, Type};

const READING: &str = r#"{
  "type": "record", "name": "Reading", "namespace": "io.acme",
  "fields": [
    {"name": "device_id", "type": "string"},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "site", "type": ["null", "string"], "default": null},
    {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["OK", "WARN", "ALARM"]}},
    {"name": "power", "type": {"type": "record", "name": "Power", "fields": [
      {"name": "watts", "type": "double"},
      {"name": "volts", "type": ["null", "double"], "default": null}
    ]}},
    {"name": "location", "type": ["null", {"type": "record", "name": "Location", "fields": [
      {"name": "lat", "type": "double"}, {"name": "lon", "type": "double"}
    ]}], "default": null},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "attrs", "type": {"type": "map", "values": "string"}},
    {"name": "energy_kwh", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 3}},
    {"name": "seq", "type": "long"},
    {"name": "temperature", "type": "double"},
    {"name": "humidity", "type": ["null", "float"], "default": null},
    {"name": "model", "type": ["null", "string"], "default": null},
    {"name": "rssi", "type": "int"}
  ]}"#;

fn schema() -> Schema {
    Schema::parse_str(READING).unwrap()
}

fn reading_type() -> RecordType {
    RecordType::from_schema(&schema()).unwrap()
}

fn some(v: Value) -> Value {
    Value::Union(1, Box::new(v))
}

fn null() -> Value {
    Value::Union(0, Box::new(Value::Null))
}

/// A full record; `edit` overrides fields by name.
fn reading(edit: &[(&str, Value)]) -> Value {
    let mut fields: Vec<(String, Value)> = vec![
        ("device_id".into(), Value::String("pm-17".into())),
        ("ts".into(), Value::TimestampMillis(1_709_294_400_000)), // 2024-03-01T12:00:00Z
        ("site".into(), some(Value::String("paris".into()))),
        ("status".into(), Value::Enum(2, "ALARM".into())),
        (
            "power".into(),
            Value::Record(vec![
                ("watts".into(), Value::Double(1234.5678)),
                ("volts".into(), some(Value::Double(230.0))),
            ]),
        ),
        (
            "location".into(),
            some(Value::Record(vec![
                ("lat".into(), Value::Double(48.85)),
                ("lon".into(), Value::Double(2.35)),
            ])),
        ),
        (
            "tags".into(),
            Value::Array(vec![
                Value::String("boiler".into()),
                Value::String("b2".into()),
            ]),
        ),
        (
            "attrs".into(),
            Value::Map(
                [("room".to_string(), Value::String("basement".into()))]
                    .into_iter()
                    .collect(),
            ),
        ),
        (
            "energy_kwh".into(),
            Value::Decimal(Decimal::from(12_345i64.to_be_bytes())),
        ), // 12.345
        ("seq".into(), Value::Long(42)),
        ("temperature".into(), Value::Double(31.5)),
        ("humidity".into(), some(Value::Float(55.0))),
        ("model".into(), null()),
        ("rssi".into(), Value::Int(-70)),
    ];
    for (name, v) in edit {
        let slot = fields
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("no such field");
        slot.1 = v.clone();
    }
    Value::Record(fields)
}

fn compile(src: &str) -> Expr {
    Expr::compile(src, &reading_type()).unwrap_or_else(|p| panic!("{src}: {p:#?}"))
}

fn eval(src: &str, rec: &Value) -> Value {
    compile(src)
        .eval(rec)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn cond(src: &str, rec: &Value) -> Option<bool> {
    compile(src)
        .eval_bool(rec)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

#[test]
fn the_examples_of_the_brief() {
    let r = reading(&[]);
    assert_eq!(
        cond("temperature > 30 AND site IS NOT NULL", &r),
        Some(true)
    );
    assert_eq!(
        cond(
            "temperature > 30 AND site IS NOT NULL",
            &reading(&[("site", null())])
        ),
        Some(false)
    );
    let alarm = compile("CASE WHEN status = 'ALARM' THEN 1 ELSE 0 END");
    assert_eq!(alarm.ty(), &FieldType::required(Type::Long));
    assert_eq!(alarm.eval(&r).unwrap(), Value::Long(1));
    assert_eq!(
        alarm
            .eval(&reading(&[("status", Value::Enum(0, "OK".into()))]))
            .unwrap(),
        Value::Long(0)
    );
    assert_eq!(
        eval("round(power.watts * 0.001, 3)", &r),
        Value::Double(1.235)
    );
    let lat = compile("location.lat");
    assert_eq!(lat.ty(), &FieldType::optional(Type::Double));
    assert_eq!(lat.eval(&r).unwrap(), Value::Double(48.85));
    assert_eq!(
        lat.eval(&reading(&[("location", null())])).unwrap(),
        Value::Null
    );
    let model = compile("coalesce(model, 'unknown')");
    assert_eq!(model.ty(), &FieldType::required(Type::String));
    assert_eq!(model.eval(&r).unwrap(), s("unknown"));
    assert_eq!(
        model.eval(&reading(&[("model", some(s("x1")))])).unwrap(),
        s("x1")
    );
    assert_eq!(cond("power.volts BETWEEN 210 AND 250", &r), Some(true));
    assert_eq!(cond("power.volts NOT BETWEEN 210 AND 250", &r), Some(false));
    let no_volts = reading(&[(
        "power",
        Value::Record(vec![
            ("watts".into(), Value::Double(1.0)),
            ("volts".into(), null()),
        ]),
    )]);
    assert_eq!(cond("power.volts BETWEEN 210 AND 250", &no_volts), None);
    assert_eq!(cond("device_id LIKE 'pm-%'", &r), Some(true));
    assert_eq!(cond("device_id NOT LIKE 'pm-%'", &r), Some(false));
    assert_eq!(cond("device_id LIKE 'pm-_7'", &r), Some(true));
    assert_eq!(cond("device_id ILIKE 'PM-%'", &r), Some(true));
    assert_eq!(eval("CAST(seq AS DOUBLE)", &r), Value::Double(42.0));
    assert_eq!(cond("status IN ('OK', 'WARN')", &r), Some(false));
    assert_eq!(cond("status IN ('WARN', 'ALARM')", &r), Some(true));
    assert_eq!(eval("device_id || '-' || site", &r), s("pm-17-paris"));
    assert_eq!(
        eval("device_id || '-' || site", &reading(&[("site", null())])),
        Value::Null
    );
    assert_eq!(
        eval(
            "concat(device_id, '-', site)",
            &reading(&[("site", null())])
        ),
        s("pm-17-")
    );
}

#[test]
fn arithmetic_follows_sql() {
    let r = reading(&[]);
    assert_eq!(eval("7 / 2", &r), Value::Long(3));
    assert_eq!(eval("-7 / 2", &r), Value::Long(-3));
    assert_eq!(eval("-7 % 3", &r), Value::Long(-1));
    assert_eq!(eval("7 / 2.0", &r), Value::Double(3.5));
    assert_eq!(eval("seq * 2 + rssi", &r), Value::Long(14));
    assert_eq!(eval("seq / 5", &r), Value::Long(8));
    assert_eq!(eval("temperature - seq", &r), Value::Double(-10.5));
    assert_eq!(eval("-temperature", &r), Value::Double(-31.5));
    assert_eq!(
        eval("humidity * 2", &r),
        Value::Double(110.0),
        "float fields read as doubles"
    );
    assert_eq!(
        eval("energy_kwh * 2", &r),
        Value::Double(24.69),
        "decimals scaled by the schema"
    );
    assert_eq!(eval("-9223372036854775808", &r), Value::Long(i64::MIN));
    assert_eq!(compile("seq + 1").ty(), &FieldType::required(Type::Long));
    assert_eq!(
        compile("humidity + 1").ty(),
        &FieldType::optional(Type::Double)
    );
    assert_eq!(
        eval("humidity + 1", &reading(&[("humidity", null())])),
        Value::Null
    );
    // Timestamps take milliseconds.
    assert_eq!(
        eval("ts + 60000", &r),
        Value::TimestampMillis(1_709_294_460_000)
    );
    assert_eq!(
        eval("ts - TIMESTAMP '2024-03-01 11:00:00'", &r),
        Value::Long(3_600_000)
    );
}

#[test]
fn comparisons_across_types() {
    let r = reading(&[]);
    assert_eq!(cond("seq = 42.0", &r), Some(true));
    assert_eq!(
        cond("30 < temperature", &r),
        Some(true),
        "literal on the left"
    );
    assert_eq!(cond("42 >= seq AND 42 <= seq", &r), Some(true));
    assert_eq!(
        cond("temperature < 9007199254740993", &r),
        Some(true),
        "beyond 2^53"
    );
    let big = reading(&[("seq", Value::Long(9_007_199_254_740_993))]);
    assert_eq!(
        cond("seq > 9007199254740992.0", &big),
        Some(true),
        "exact long vs double"
    );
    assert_eq!(cond("rssi > -70.5", &r), Some(true));
    assert_eq!(cond("seq < 42.5", &r), Some(true));
    assert_eq!(cond("rssi <> -70", &r), Some(false));
    assert_eq!(cond("status = 'ALARM'", &r), Some(true));
    assert_eq!(cond("status != 'OK'", &r), Some(true));
    assert_eq!(cond("site = 'paris'", &r), Some(true));
    assert_eq!(cond("site > 'london'", &r), Some(true));
    assert_eq!(cond("ts >= '2024-03-01T12:00:00Z'", &r), Some(true));
    assert_eq!(cond("ts < '2024-03-01 13:00:00+01:00'", &r), Some(false));
    assert_eq!(cond("ts >= DATE '2024-03-01'", &r), Some(true));
    assert_eq!(
        cond("energy_kwh > 12.3 AND energy_kwh < 12.35", &r),
        Some(true)
    );
    assert_eq!(cond("(temperature > 30) = TRUE", &r), Some(true));
    assert_eq!(cond("site IS DISTINCT FROM NULL", &r), Some(true));
    assert_eq!(cond("model IS NOT DISTINCT FROM NULL", &r), Some(true));
    assert_eq!(
        cond("location IS NOT NULL", &r),
        Some(true),
        "IS NULL works on records"
    );
    assert_eq!(
        cond("location IS NULL", &reading(&[("location", null())])),
        Some(true)
    );
    assert_eq!(
        cond("tags IS NOT NULL AND attrs IS NOT NULL", &r),
        Some(true)
    );
    assert_eq!(cond("attrs['room'] = 'basement'", &r), Some(true));
    assert_eq!(
        cond("attrs['floor'] = '1'", &r),
        None,
        "a missing entry is NULL"
    );
    assert_eq!(eval("tags[1]", &r), s("boiler"));
    assert_eq!(eval("tags[3]", &r), Value::Null);
}

#[test]
fn null_propagation_and_three_valued_logic() {
    let r = reading(&[("site", null()), ("model", null())]);
    assert_eq!(cond("site = 'paris'", &r), None);
    assert_eq!(cond("NOT (site = 'paris')", &r), None);
    assert_eq!(
        cond("site = 'paris' AND temperature > 100", &r),
        Some(false),
        "NULL AND FALSE"
    );
    assert_eq!(
        cond("site = 'paris' AND temperature > 0", &r),
        None,
        "NULL AND TRUE"
    );
    assert_eq!(
        cond("site = 'paris' OR temperature > 0", &r),
        Some(true),
        "NULL OR TRUE"
    );
    assert_eq!(
        cond("site = 'paris' OR temperature > 100", &r),
        None,
        "NULL OR FALSE"
    );
    assert_eq!(cond("site IS NULL", &r), Some(true));
    assert_eq!(cond("(site = 'paris') IS UNKNOWN", &r), Some(true));
    assert_eq!(cond("(site = 'paris') IS NOT TRUE", &r), Some(true));
    assert_eq!(
        cond("status NOT IN ('OK', NULL)", &r),
        None,
        "NOT IN a list with NULL"
    );
    assert_eq!(cond("status IN ('ALARM', NULL)", &r), Some(true));
    assert_eq!(eval("upper(site)", &r), Value::Null);
    assert_eq!(eval("length(site) + 1", &r), Value::Null);
    assert_eq!(
        eval("CASE WHEN site = 'paris' THEN 'P' END", &r),
        Value::Null
    );
    assert_eq!(
        eval("CASE WHEN site = 'paris' THEN 'P' ELSE 'other' END", &r),
        s("other")
    );
    assert_eq!(
        eval("CASE site WHEN 'paris' THEN 1 ELSE 2 END", &r),
        Value::Long(2)
    );
    assert_eq!(eval("coalesce(site, model, device_id)", &r), s("pm-17"));
    assert_eq!(eval("nullif(rssi, -70)", &r), Value::Null);
    assert_eq!(eval("nullif(rssi, NULL)", &r), Value::Long(-70));
    assert_eq!(eval("least(temperature, seq, NULL)", &r), Value::Null);
    assert_eq!(eval("NULL", &r), Value::Null);
    assert!(compile("NULL + 1").is_constant());
    // The right side of AND is not evaluated after FALSE: no division by zero.
    let zero_volts = reading(&[(
        "power",
        Value::Record(vec![
            ("watts".into(), Value::Double(5.0)),
            ("volts".into(), some(Value::Double(0.0))),
        ]),
    )]);
    assert_eq!(
        cond(
            "power.volts <> 0 AND power.watts / power.volts > 2",
            &zero_volts
        ),
        Some(false)
    );
    assert_eq!(
        eval(
            "CASE WHEN power.volts = 0 THEN NULL ELSE power.watts / power.volts END",
            &zero_volts
        ),
        Value::Null
    );
}

#[test]
fn functions() {
    let r = reading(&[]);
    assert_eq!(eval("abs(rssi)", &r), Value::Long(70));
    assert_eq!(eval("abs(-temperature)", &r), Value::Double(31.5));
    assert_eq!(eval("round(temperature)", &r), Value::Double(32.0));
    assert_eq!(eval("round(energy_kwh, 2)", &r), Value::Double(12.35));
    assert_eq!(eval("round(seq, -1)", &r), Value::Long(40));
    assert_eq!(eval("floor(temperature)", &r), Value::Double(31.0));
    assert_eq!(eval("ceil(temperature)", &r), Value::Double(32.0));
    assert_eq!(eval("sqrt(16)", &r), Value::Double(4.0));
    assert_eq!(eval("power(2, 10)", &r), Value::Double(1024.0));
    assert_eq!(eval("round(ln(exp(2)), 6)", &r), Value::Double(2.0));
    assert_eq!(eval("log10(1000)", &r), Value::Double(3.0));
    assert_eq!(
        eval("greatest(seq, temperature, rssi)", &r),
        Value::Double(42.0),
        "unified to double"
    );
    assert_eq!(eval("least(seq, rssi)", &r), Value::Long(-70));
    assert_eq!(eval("greatest(site, device_id)", &r), s("pm-17"));
    assert_eq!(eval("lower('ABC') || upper(device_id)", &r), s("abcPM-17"));
    assert_eq!(eval("length(device_id)", &r), Value::Long(5));
    assert_eq!(
        eval(
            "trim('  x  ') || '|' || ltrim('  x') || '|' || rtrim('x  ')",
            &r
        ),
        s("x|x|x")
    );
    assert_eq!(eval("trim(device_id, 'p7')", &r), s("m-1"));
    assert_eq!(eval("TRIM(LEADING '0' FROM '007')", &r), s("7"));
    assert_eq!(eval("substr(device_id, 4)", &r), s("17"));
    assert_eq!(eval("substring(device_id, 1, 2)", &r), s("pm"));
    assert_eq!(
        eval("SUBSTRING(device_id FROM 0 FOR 3)", &r),
        s("pm"),
        "PostgreSQL: positions before 1 count"
    );
    assert_eq!(
        eval("concat(seq, '/', temperature, '/', ts)", &r),
        s("42/31.5/2024-03-01T12:00:00.000Z")
    );
    assert_eq!(eval("CAST(status AS VARCHAR) || ''", &r), s("ALARM"));
    assert_eq!(
        eval("CAST('12.5' AS DOUBLE) + CAST(' 7 ' AS BIGINT)", &r),
        Value::Double(19.5)
    );
    assert_eq!(eval("CAST(2.5 AS BIGINT)", &r), Value::Long(3));
    assert_eq!(eval("CAST('yes' AS BOOLEAN)", &r), Value::Boolean(true));
    assert_eq!(
        eval("CAST(ts AS BIGINT)", &r),
        Value::Long(1_709_294_400_000)
    );
    assert_eq!(eval("CAST(0 AS TIMESTAMP)", &r), Value::TimestampMillis(0));
    assert_eq!(
        eval("CAST(ts AS DATE)", &r),
        Value::TimestampMillis(1_709_251_200_000)
    );
    assert_eq!(eval("seq::double / 4", &r), Value::Double(10.5));
    assert_eq!(eval("TRY_CAST(site AS BIGINT)", &r), Value::Null);
    assert!(
        compile("upper('a') || 'b'").is_constant(),
        "constants are computed at compile time"
    );
}

#[test]
fn runtime_errors_name_the_expression_and_have_a_class() {
    let r = reading(&[]);
    let err = |src: &str, rec: &Value| -> EvalError { compile(src).eval(rec).expect_err(src) };
    let e = err("seq / (rssi + 70)", &r);
    assert_eq!(e.class(), "expression_division_by_zero");
    assert_eq!(e.to_string(), "division by zero in `seq / (rssi + 70)`");
    let e = err("temperature / (rssi + 70)", &r);
    assert_eq!(e.class(), "expression_division_by_zero");
    let e = err("seq * 9223372036854775807", &r);
    assert_eq!(e.class(), "expression_overflow");
    assert_eq!(
        e.to_string(),
        "numeric overflow in `seq * 9223372036854775807`"
    );
    let e = err("CAST(site AS BIGINT)", &r);
    assert_eq!(e.class(), "expression_invalid_cast");
    assert_eq!(
        e.to_string(),
        "cannot cast 'paris' to BIGINT in `CAST(site AS BIGINT)`"
    );
    let e = err("CAST(seq * 100000000000 AS INT)", &r);
    assert_eq!(e.class(), "expression_invalid_cast");
    let e = err("sqrt(rssi)", &r);
    assert_eq!(e.class(), "expression_invalid_argument");
    assert!(
        e.to_string()
            .contains("square root of the negative number -70"),
        "{e}"
    );
    let e = err("substr(device_id, 1, rssi)", &r);
    assert_eq!(e.class(), "expression_invalid_argument");
    // A record that does not have the schema's shape is an error, not a panic.
    let e = compile("temperature > 1")
        .eval_bool(&reading(&[("temperature", s("hot"))]))
        .unwrap_err();
    assert_eq!(e.class(), "expression_schema_mismatch");
    assert!(
        e.to_string().starts_with("`temperature` found string"),
        "{e}"
    );
    assert_eq!(
        compile("temperature > 1")
            .eval_bool(&Value::Long(1))
            .unwrap(),
        None,
        "not a record: fields are NULL"
    );
    let e = compile("seq + 1").eval_bool(&r).unwrap_err();
    assert_eq!(e.class(), "expression_not_boolean");
}

#[test]
fn records_decoded_from_avro_bytes() {
    let schema = schema();
    let rec = reading(&[("model", some(s("x1")))]);
    let bytes = GenericDatumWriter::builder(&schema)
        .build()
        .unwrap()
        .write_value_to_vec(rec)
        .unwrap();
    let reader = GenericDatumReader::builder(&schema).build().unwrap();
    let decoded = reader.read_value(&mut bytes.as_slice()).unwrap();
    let e = compile("status = 'ALARM' AND location.lat > 48 AND energy_kwh = 12.345 AND model = 'x1' AND attrs['room'] LIKE 'base%' AND humidity < 80");
    assert_eq!(e.eval_bool(&decoded).unwrap(), Some(true));
    // An output value encodes with the schema of its type.
    let out = compile("round(power.watts / power.volts, 2)");
    let v = out.eval(&decoded).unwrap();
    assert_eq!(v, Value::Double(5.37));
    let field_schema = Schema::parse(&out.ty().to_schema_json()).unwrap();
    let writer = GenericDatumWriter::builder(&field_schema).build().unwrap();
    writer
        .write_value_to_vec(Value::Union(1, Box::new(v)))
        .unwrap();
}

#[test]
fn expressions_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Expr>();
    assert_send_sync::<EvalError>();
}

/// `cargo test -p sluice-ops --release --test expr_eval -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_eval_bool() {
    use std::hint::black_box;
    use std::time::Instant;
    let e = compile("temperature > 30 AND humidity < 80");
    let records: Vec<Value> = (0..64)
        .map(|i| {
            reading(&[
                ("temperature", Value::Double(20.0 + f64::from(i % 20))),
                ("humidity", some(Value::Float(70.0 + (i % 15) as f32))),
            ])
        })
        .collect();
    let n = 1_000_000;
    // The same condition hand-written against the record's positions, for scale: the
    // machine is shared, so absolute figures vary.
    let by_hand = |rec: &Value| -> Option<bool> {
        let Value::Record(f) = rec else { return None };
        let t = match &f[10].1 {
            Value::Double(t) => *t,
            _ => return None,
        };
        let h = match &f[11].1 {
            Value::Union(_, h) => match **h {
                Value::Float(h) => f64::from(h),
                _ => return None,
            },
            _ => return None,
        };
        Some(t > 30.0 && h < 80.0)
    };
    for round in 0..5 {
        let start = Instant::now();
        let mut hits = 0u32;
        for i in 0..n {
            if e.eval_bool(black_box(&records[i & 63])).unwrap() == Some(true) {
                hits += 1;
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / n as f64;
        let start = Instant::now();
        let mut hand_hits = 0u32;
        for i in 0..n {
            if by_hand(black_box(&records[i & 63])) == Some(true) {
                hand_hits += 1;
            }
        }
        let hand = start.elapsed().as_nanos() as f64 / n as f64;
        assert_eq!(hits, hand_hits);
        println!(
            "round {round}: {ns:.1} ns/eval of `{}` ({hits} hits); by hand {hand:.1} ns",
            e.source()
        );
    }
}
