//! Compile-time problems of SQL expressions (all at once, with fixes), and garbage input
//! that must never panic.

use apache_avro::types::Value;
use apache_avro::Schema;
use sluice_ops::expr::{Expr, MAX_SOURCE_LEN};
use sluice_ops::types::RecordType;
use sluice_ops::Problem;

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
    {"name": "temperature", "type": "double"}
  ]}"#;

fn reading_type() -> RecordType {
    RecordType::from_schema(&Schema::parse_str(READING).unwrap()).unwrap()
}

fn problems(src: &str) -> Vec<Problem> {
    match Expr::compile(src, &reading_type()) {
        Ok(e) => panic!("`{src}` compiled to {e:?}"),
        Err(p) => {
            assert!(!p.is_empty());
            for one in &p {
                assert!(one.key.is_empty(), "the caller sets the key: {one:?}");
                assert!(!one.message.is_empty() && !one.fix.is_empty(), "{one:?}");
            }
            p
        }
    }
}

fn problem(src: &str) -> Problem {
    let mut p = problems(src);
    assert_eq!(p.len(), 1, "`{src}`: {p:#?}");
    p.remove(0)
}

#[test]
fn unknown_fields_suggest_the_closest() {
    let p = problem("tempreature > 30");
    assert_eq!(p.message, "no field `tempreature` in io.acme.Reading");
    assert!(
        p.fix
            .starts_with("did you mean `temperature`? fields: device_id, ts, site, status, power,"),
        "{}",
        p.fix
    );
    let p = problem("power.wats > 1");
    assert_eq!(p.message, "no field `wats` in `power` (io.acme.Power)");
    assert_eq!(p.fix, "did you mean `watts`? fields: watts, volts");
    let p = problem("location.lat.deg > 1");
    assert_eq!(
        p.message,
        "`location.lat` is a double, not a record; it has no field `deg`"
    );
    let p = problem("site = \"paris\"");
    assert!(
        p.fix.contains("write a string in single quotes, 'paris'"),
        "{}",
        p.fix
    );
    let p = problem("zzz_qqq = 1");
    assert!(
        p.fix.starts_with("fields: "),
        "no suggestion when nothing is close: {}",
        p.fix
    );
}

#[test]
fn type_errors_say_what_to_write() {
    let p = problem("temperature + 'x'");
    assert_eq!(
        p.message,
        "cannot add double and string in `temperature + 'x'`"
    );
    assert_eq!(p.fix, "cast one side, e.g. CAST('x' AS DOUBLE)");
    let p = problem("site * 2 > 1");
    assert_eq!(p.message, "cannot multiply string and long in `site * 2`");
    let p = problem("site = 5");
    assert_eq!(p.message, "cannot compare string and long in `site = 5`");
    let p = problem("ts > 5");
    assert!(
        p.fix.contains("compare timestamps with timestamps"),
        "{}",
        p.fix
    );
    let p = problem("ts > '2024-13-01'");
    assert_eq!(p.message, "'2024-13-01' is not a timestamp");
    let p = problem("temperature AND site IS NULL");
    assert_eq!(
        p.message,
        "`temperature` is a double, but AND needs a boolean"
    );
    assert_eq!(p.fix, "compare it, e.g. `temperature > 0`");
    let p = problem("CASE WHEN site THEN 1 END");
    assert_eq!(p.message, "`site` is a string, but WHEN needs a boolean");
    let p = problem("CASE WHEN seq > 1 THEN 1 ELSE 'many' END");
    assert_eq!(
        p.message,
        "CASE results mix long and string in `CASE WHEN seq > 1 THEN 1 ELSE 'many' END`"
    );
    let p = problem("CAST(ts AS DOUBLE)");
    assert_eq!(
        p.message,
        "cannot cast timestamp-millis to DOUBLE in `CAST(ts AS DOUBLE)`"
    );
    let p = problem("CAST(seq AS DECIMAL(10, 2))");
    assert!(
        p.message.starts_with("cannot cast to DECIMAL(10,2)"),
        "{}",
        p.message
    );
    let p = problem("upper(seq)");
    assert_eq!(p.message, "`upper` needs a string, but `seq` is a long");
    assert_eq!(p.fix, "cast it, e.g. upper(CAST(seq AS VARCHAR))");
    let p = problem("sqrt(site)");
    assert_eq!(p.fix, "cast it, e.g. sqrt(CAST(site AS DOUBLE))");
    let p = problem("seq LIKE '4%'");
    assert_eq!(p.message, "LIKE needs a string, but `seq` is a long");
    let p = problem("device_id LIKE site");
    assert!(
        p.message.contains("pattern must be a string literal"),
        "{}",
        p.message
    );
    let p = problem("1 / 0 > seq");
    assert!(
        p.message.starts_with("division by zero in `1 / 0`"),
        "constants fail at compile time: {}",
        p.message
    );
}

#[test]
fn enums_are_checked_against_their_symbols() {
    let p = problem("status = 'ALRAM'");
    assert_eq!(
        p.message,
        "'ALRAM' is not a symbol of io.acme.Status (`status`)"
    );
    assert_eq!(p.fix, "did you mean 'ALARM'? symbols: OK, WARN, ALARM");
    let p = problem("status IN ('OK', 'warn')");
    assert_eq!(p.fix, "did you mean 'WARN'? symbols: OK, WARN, ALARM");
    let p = problem("CASE status WHEN 'CRIT' THEN 1 ELSE 0 END");
    assert_eq!(p.fix, "symbols: OK, WARN, ALARM");
    let p = problem("status = ALARM");
    assert_eq!(p.message, "no field `ALARM` in io.acme.Reading");
    assert_eq!(
        p.fix,
        "`ALARM` is a symbol of io.acme.Status: write it in single quotes, 'ALARM'"
    );
    let p = problem("status > 'OK'");
    assert!(
        p.message
            .contains("can be tested for equality, not ordered"),
        "{}",
        p.message
    );
    assert_eq!(
        p.fix,
        "list the symbols you mean, e.g. `status IN ('OK', 'WARN')`"
    );
}

#[test]
fn non_scalar_fields_say_which_and_how() {
    let p = problem("tags = 'x'");
    assert_eq!(
        p.message,
        "`tags` is an array of string, not a single value"
    );
    assert!(p.fix.contains("`tags[1]`"), "{}", p.fix);
    let p = problem("attrs || 'x'");
    assert_eq!(p.message, "`attrs` is a map of string, not a single value");
    assert!(p.fix.contains("`attrs['key']`"), "{}", p.fix);
    let p = problem("location > 1");
    assert_eq!(
        p.message,
        "`location` is a record io.acme.Location, not a single value"
    );
    assert!(p.fix.contains("`location.lat`"), "{}", p.fix);
    let p = problem("energy_kwh['x'] = 1");
    assert!(p.message.contains("not a map or an array"), "{}", p.message);
    let p = problem("tags[0] = 'x'");
    assert!(
        p.fix.contains("`tags[1]` for the first element"),
        "{}",
        p.fix
    );
}

#[test]
fn functions_and_arity() {
    let p = problem("rund(temperature, 1)");
    assert_eq!(p.message, "unknown function `rund`");
    assert!(
        p.fix
            .starts_with("did you mean `round`? functions: abs, round,"),
        "{}",
        p.fix
    );
    let p = problem("round(temperature, 1, 2)");
    assert_eq!(p.message, "`round` takes 1 to 2 arguments, got 3");
    assert_eq!(p.fix, "write round(x[, digits])");
    let p = problem("nullif(seq)");
    assert_eq!(p.message, "`nullif` takes 2 arguments, got 1");
    let p = problem("count(*) > 1");
    assert_eq!(
        p.message,
        "`count` is an aggregation, not a function of one record"
    );
    let p = problem("max(seq, 3)");
    assert!(p.fix.contains("greatest(a, b)"), "{}", p.fix);
    let p = problem("now() > ts");
    assert!(
        p.message.starts_with("`now` is not supported"),
        "{}",
        p.message
    );
    let p = problem("round(temperature, 1.5)");
    assert_eq!(
        p.message,
        "`round` needs an integer number of digits, but `1.5` is a double"
    );
}

#[test]
fn parse_errors_carry_the_parser_message() {
    let p = problem("temperature >");
    assert_eq!(
        p.message,
        "cannot parse `temperature >`: Expected: an expression, found: EOF"
    );
    assert!(
        p.fix
            .starts_with("write a SQL expression, e.g. `temperature > 30 AND site IS NOT NULL`"),
        "{}",
        p.fix
    );
    let p = problem("temperature > 30 30");
    assert_eq!(p.message, "unexpected `30` after `temperature > 30`");
    let p = problem("temperature > 30; DROP TABLE x");
    assert!(p.message.starts_with("unexpected `;`"), "{}", p.message);
    let p = problem("   ");
    assert_eq!(p.message, "the expression is empty");
    let p = problem(&"(".repeat(300));
    assert!(p.message.starts_with("cannot parse"), "{}", p.message);
    let long = format!("seq IN ({})", vec!["1"; MAX_SOURCE_LEN].join(","));
    assert!(problem(&long).message.contains("bytes long"));
}

#[test]
fn every_problem_at_once() {
    let p = problems("tempreature > 30 AND sitee = 'x' AND rnd(seq) > 1 AND status = 'ALRM' AND temperature + 'x' > 1");
    let messages: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "no field `tempreature` in io.acme.Reading",
            "no field `sitee` in io.acme.Reading",
            "unknown function `rnd`",
            "'ALRM' is not a symbol of io.acme.Status (`status`)",
            "cannot add double and string in `temperature + 'x'`",
        ]
    );
    let p = problems("CASE WHEN tempreature > 1 THEN sitee ELSE seq / 'x' END");
    assert_eq!(p.len(), 3, "{p:#?}");
}

#[test]
fn conditions_must_be_boolean() {
    let t = reading_type();
    let p = Expr::compile_condition("temperature * 2", &t).unwrap_err();
    assert_eq!(
        p[0].message,
        "`temperature * 2` is a double, not a condition"
    );
    assert!(Expr::compile_condition("temperature * 2 > 1", &t).is_ok());
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let chain = format!("seq{}", " + 1".repeat(400));
    let p = problem(&chain);
    assert!(p.message.contains("nested more than"), "{}", p.message);
    // The longest source accepted, as one left-deep chain: no stack overflow anywhere.
    let longest = format!("1{}", "+1".repeat((MAX_SOURCE_LEN - 1) / 2));
    assert!(longest.len() <= MAX_SOURCE_LEN);
    let p = problem(&longest);
    assert!(p.message.contains("nested more than"), "{}", p.message);
    // Long AND chains are flat, not nested.
    let and = vec!["seq > 1"; 1000].join(" AND ");
    assert!(Expr::compile(&and, &reading_type()).is_ok());
}

/// xorshift64*: deterministic garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "temperature",
    "seq",
    "site",
    "status",
    "power.watts",
    "power.volts",
    "location.lat",
    "location",
    "tags",
    "attrs['room']",
    "tags[1]",
    "energy_kwh",
    "ts",
    "device_id",
    "'ALARM'",
    "'pm-%'",
    "'2024-03-01'",
    "NULL",
    "TRUE",
    "0",
    "1",
    "-1",
    "0.5",
    "9223372036854775807",
    "1e308",
    "(",
    ")",
    ",",
    "+",
    "-",
    "*",
    "/",
    "%",
    "||",
    "=",
    "<>",
    "<",
    ">=",
    "AND",
    "OR",
    "NOT",
    "IS",
    "NULL",
    "BETWEEN",
    "IN",
    "LIKE",
    "ESCAPE",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "CAST(",
    " AS ",
    "BIGINT",
    "DOUBLE",
    "VARCHAR",
    "TIMESTAMP",
    "round(",
    "coalesce(",
    "substr(",
    "trim(",
    "least(",
    "nullif(",
    "power(",
    "sqrt(",
    "ln(",
    "concat(",
    "::",
    "\"",
    "'",
    "[",
    "]",
    ".",
    ";",
    "\\",
    "$1",
    "?",
    "@",
    "é",
    "\u{0}",
    " ",
    "TRY_CAST(",
    "INTERVAL '1' DAY",
    "EXTRACT(",
    "SELECT",
    "count(*)",
    "x'",
    "E'\\n'",
];

fn sample_records() -> Vec<Value> {
    let some = |v: Value| Value::Union(1, Box::new(v));
    let full = Value::Record(vec![
        ("device_id".into(), Value::String("pm-17".into())),
        ("ts".into(), Value::TimestampMillis(i64::MAX)),
        ("site".into(), some(Value::String(String::new()))),
        ("status".into(), Value::Enum(2, "ALARM".into())),
        (
            "power".into(),
            Value::Record(vec![
                ("watts".into(), Value::Double(f64::NAN)),
                ("volts".into(), some(Value::Double(0.0))),
            ]),
        ),
        ("location".into(), Value::Union(0, Box::new(Value::Null))),
        ("tags".into(), Value::Array(vec![])),
        ("attrs".into(), Value::Map(Default::default())),
        (
            "energy_kwh".into(),
            Value::Decimal(apache_avro::Decimal::from(vec![0x80; 40])),
        ),
        ("seq".into(), Value::Long(i64::MIN)),
        ("temperature".into(), Value::Double(f64::INFINITY)),
    ]);
    vec![full, Value::Record(vec![]), Value::Null, Value::Long(3)]
}

fn exercise(src: &str, t: &RecordType, recs: &[Value]) -> bool {
    match Expr::compile(src, t) {
        Ok(e) => {
            for r in recs {
                let _ = e.eval(r);
                let _ = e.eval_bool(r);
            }
            true
        }
        Err(p) => {
            assert!(!p.is_empty(), "`{src}`: an error without a problem");
            false
        }
    }
}

#[test]
fn garbage_never_panics() {
    let t = reading_type();
    let recs = sample_records();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut compiled = 0;
    for _ in 0..20_000 {
        let n = 1 + rng.below(12);
        let src: String = (0..n)
            .map(|_| PIECES[rng.below(PIECES.len())])
            .collect::<Vec<_>>()
            .join(" ");
        compiled += usize::from(exercise(&src, &t, &recs));
    }
    // Mutations of valid expressions: deleted, doubled and replaced characters.
    let valid = [
        "temperature > 30 AND site IS NOT NULL",
        "CASE WHEN status = 'ALARM' THEN 1 ELSE 0 END",
        "round(power.watts * 0.001, 3)",
        "coalesce(site, 'unknown') || '-' || device_id",
        "power.volts BETWEEN 210 AND 250 OR device_id LIKE 'pm-%'",
        "CAST(seq AS DOUBLE) / 7 + abs(temperature) - substr(device_id, 2, 3)::BIGINT",
        "ts - TIMESTAMP '2024-03-01 00:00:00' > 60000 AND attrs['room'] IN ('a', 'b')",
    ];
    for _ in 0..20_000 {
        let mut chars: Vec<char> = valid[rng.below(valid.len())].chars().collect();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(chars.len());
            match rng.below(3) {
                0 => {
                    chars.remove(i);
                }
                1 => chars.insert(i, chars[i]),
                _ => {
                    let alphabet = b" ()'\",.+-*/%<>=|09azAZ_[]:";
                    chars[i] = char::from(alphabet[rng.below(alphabet.len())]);
                }
            }
            if chars.is_empty() {
                break;
            }
        }
        let src: String = chars.into_iter().collect();
        compiled += usize::from(exercise(&src, &t, &recs));
    }
    // Random bytes as text.
    for _ in 0..5_000 {
        let bytes: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
        exercise(&String::from_utf8_lossy(&bytes), &t, &recs);
    }
    assert!(
        compiled > 1_000,
        "the mutations should often stay valid: {compiled}"
    );
}
