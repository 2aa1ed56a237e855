//! sqlparser's AST → the typed [`Node`] tree, collecting every problem on the way.

use std::borrow::Cow;
use std::sync::Arc;

use apache_avro::types::Value;
use sqlparser::ast::{
    BinaryOperator, CastKind, CeilFloorKind, DataType, DateTimeField, Expr as E, Function,
    FunctionArg, FunctionArgExpr, FunctionArguments, Ident, InTarget, ObjectNamePart,
    TrimWhereField, TypedString, UnaryOperator, Value as V,
};

use super::like::LikePattern;
use super::node::{ArithOp, CastTo, CmpOp, Kind, Math, Node, Read, Scalar, StrFn};
use super::time;
use crate::types::{a_or_an, did_you_mean, name_list, FieldPath, RecordType, Type};
use crate::Problem;

/// Nesting deeper than this is refused (evaluation recurses once per level).
pub(crate) const MAX_DEPTH: usize = 128;

/// Builds the node that reads a map entry or an array element.
type MakeNode = Box<dyn FnOnce(FieldPath, Read) -> Node>;

/// A compiled sub-expression and what the checker knows about it.
pub(crate) struct Typed {
    pub(crate) node: Node,
    pub(crate) kind: Kind,
    pub(crate) nullable: bool,
    /// The type's name for messages: the field's Avro type, or the kind's name.
    ty_name: String,
    /// The sub-expression as sqlparser renders it.
    text: String,
    /// For enum values: the enum's name and symbols.
    symbols: Option<Arc<(String, Vec<String>)>>,
}

impl Typed {
    fn new(node: Node, kind: Kind, nullable: bool, text: String) -> Self {
        Typed {
            node,
            kind,
            nullable: nullable || kind == Kind::Null,
            ty_name: kind.name().to_string(),
            text,
            symbols: None,
        }
    }

    fn lit(s: Scalar<'static>, text: String) -> Self {
        let kind = match &s {
            Scalar::Null => Kind::Null,
            Scalar::Bool(_) => Kind::Bool,
            Scalar::Int(_) => Kind::Int,
            Scalar::Float(_) => Kind::Float,
            Scalar::Str(_) => Kind::Str,
            Scalar::Ts(_) => Kind::Ts,
        };
        Typed::new(Node::Lit(s), kind, false, text)
    }

    fn str_lit(&self) -> Option<&str> {
        match &self.node {
            Node::Lit(Scalar::Str(s)) => Some(s),
            _ => None,
        }
    }
}

/// The names that may be called, with their arity and how to write them.
const FUNCTIONS: &[(&str, usize, usize, &str)] = &[
    ("abs", 1, 1, "abs(x)"),
    ("round", 1, 2, "round(x[, digits])"),
    ("floor", 1, 1, "floor(x)"),
    ("ceil", 1, 1, "ceil(x)"),
    ("ceiling", 1, 1, "ceiling(x)"),
    ("sqrt", 1, 1, "sqrt(x)"),
    ("ln", 1, 1, "ln(x)"),
    ("log10", 1, 1, "log10(x)"),
    ("exp", 1, 1, "exp(x)"),
    ("power", 2, 2, "power(x, y)"),
    ("pow", 2, 2, "pow(x, y)"),
    ("least", 1, usize::MAX, "least(a, b, ...)"),
    ("greatest", 1, usize::MAX, "greatest(a, b, ...)"),
    ("coalesce", 1, usize::MAX, "coalesce(a, b, ...)"),
    ("nullif", 2, 2, "nullif(a, b)"),
    ("lower", 1, 1, "lower(s)"),
    ("upper", 1, 1, "upper(s)"),
    ("length", 1, 1, "length(s)"),
    ("char_length", 1, 1, "char_length(s)"),
    ("character_length", 1, 1, "character_length(s)"),
    ("trim", 1, 2, "trim(s[, characters])"),
    ("ltrim", 1, 2, "ltrim(s[, characters])"),
    ("rtrim", 1, 2, "rtrim(s[, characters])"),
    ("substr", 2, 3, "substr(s, start[, length])"),
    ("substring", 2, 3, "substring(s, start[, length])"),
    ("concat", 1, usize::MAX, "concat(a, b, ...)"),
];

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "mean",
    "min",
    "max",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "first",
    "last",
    "first_value",
    "last_value",
    "median",
    "percentile",
    "percentile_cont",
    "percentile_disc",
    "approx_count_distinct",
    "array_agg",
    "string_agg",
];

const NOW: &[&str] = &[
    "now",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtimestamp",
    "sysdate",
    "getdate",
    "random",
    "rand",
    "uuid",
    "gen_random_uuid",
];

const OPERATORS: &str = "+ - * / % || = <> != < <= > >= AND OR NOT, IS [NOT] NULL, [NOT] BETWEEN, [NOT] IN, [NOT] LIKE, CASE, CAST";

/// How a field of this type is read, or why it cannot be (the fix).
fn scalar_of(ty: &Type, path: &str) -> Result<(Kind, Read), String> {
    Ok(match ty {
        Type::Null => (Kind::Null, Read::Null),
        Type::Boolean => (Kind::Bool, Read::Bool),
        Type::Int | Type::Long => (Kind::Int, Read::Int),
        Type::Float | Type::Double | Type::BigDecimal => (Kind::Float, Read::Float),
        Type::Decimal { scale, .. } => (Kind::Float, Read::Decimal(*scale)),
        Type::String | Type::Enum { .. } | Type::Uuid => (Kind::Str, Read::Str),
        Type::Date
        | Type::TimestampMillis
        | Type::TimestampMicros
        | Type::TimestampNanos
        | Type::LocalTimestampMillis
        | Type::LocalTimestampMicros
        | Type::LocalTimestampNanos => (Kind::Ts, Read::Ts),
        Type::TimeMillis | Type::TimeMicros => (Kind::Int, Read::TimeMs),
        Type::Record(r) => {
            let example = r.fields.first().map_or("x", |f| f.name.as_str());
            return Err(format!(
                "use one of its fields, e.g. `{path}.{example}`, or test it with `{path} IS NOT NULL`"
            ));
        }
        Type::Array(_) => return Err(format!("address an element, e.g. `{path}[1]` (the first), or test it with `{path} IS NOT NULL`")),
        Type::Map(_) => return Err(format!("read an entry, e.g. `{path}['key']`, or test it with `{path} IS NOT NULL`")),
        Type::Union(_) => return Err("only [\"null\", T] unions can be used in expressions".to_string()),
        Type::Bytes | Type::Fixed { .. } | Type::Duration => {
            return Err(format!("bytes, fixed and duration values cannot be used in expressions; test it with `{path} IS NOT NULL`"))
        }
        Type::Recursive(_) => return Err("recursive types cannot be used in expressions".to_string()),
    })
}

/// The name of an enum of `record` (nested records included) that has `symbol`.
fn enum_with_symbol(record: &RecordType, symbol: &str) -> Option<String> {
    record.fields.iter().find_map(|f| match &f.ty.ty {
        Type::Enum { name, symbols } if symbols.iter().any(|s| s == symbol) => Some(name.clone()),
        Type::Record(r) => enum_with_symbol(r, symbol),
        _ => None,
    })
}

fn enum_info(ty: &Type) -> Option<Arc<(String, Vec<String>)>> {
    match ty {
        Type::Enum { name, symbols } => Some(Arc::new((name.clone(), symbols.clone()))),
        _ => None,
    }
}

fn string_literal(v: &V) -> Option<&str> {
    match v {
        V::SingleQuotedString(s)
        | V::EscapedStringLiteral(s)
        | V::NationalStringLiteral(s)
        | V::UnicodeStringLiteral(s)
        | V::TripleSingleQuotedString(s)
        | V::TripleDoubleQuotedString(s) => Some(s),
        V::DollarQuotedString(d) => Some(&d.value),
        _ => None,
    }
}

fn as_string_literal(e: &E) -> Option<&str> {
    match e {
        E::Value(v) => string_literal(&v.value),
        E::Nested(inner) => as_string_literal(inner),
        _ => None,
    }
}

fn is_null_literal(e: &E) -> bool {
    match e {
        E::Value(v) => v.value == V::Null,
        E::Nested(inner) => is_null_literal(inner),
        _ => false,
    }
}

/// A fix that shows how to turn `t` into a boolean.
fn boolean_fix(t: &Typed) -> String {
    match t.kind {
        Kind::Int | Kind::Float => format!("compare it, e.g. `{} > 0`", t.text),
        Kind::Str => format!("compare it, e.g. `{} = 'value'`", t.text),
        Kind::Ts => format!(
            "compare it, e.g. `{} > TIMESTAMP '2024-01-01 00:00:00'`",
            t.text
        ),
        _ => format!("test it, e.g. `{} IS NOT NULL`", t.text),
    }
}

fn cast_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Int => "BIGINT",
        Kind::Float => "DOUBLE",
        Kind::Str => "VARCHAR",
        Kind::Bool => "BOOLEAN",
        Kind::Ts => "TIMESTAMP",
        Kind::Null => "DOUBLE",
    }
}

fn cast_target(dt: &DataType) -> Option<CastTo> {
    use DataType as D;
    Some(match dt {
        D::BigInt(_) | D::Int8(_) | D::Int64 | D::Signed | D::SignedInteger => {
            CastTo::Int { int32: false }
        }
        D::Int(_) | D::Integer(_) | D::Int4(_) | D::Int32 => CastTo::Int { int32: true },
        D::Double(_)
        | D::DoublePrecision
        | D::Float(_)
        | D::Float8
        | D::Float64
        | D::Real
        | D::Float4
        | D::Float32 => CastTo::Float,
        D::Varchar(_)
        | D::String(_)
        | D::Text
        | D::Char(_)
        | D::Character(_)
        | D::CharacterVarying(_)
        | D::CharVarying(_)
        | D::Nvarchar(_) => CastTo::Str,
        D::Boolean | D::Bool => CastTo::Bool,
        D::Timestamp(..) | D::Datetime(_) | D::TimestampNtz(_) => CastTo::Ts,
        D::Date => CastTo::Date,
        D::Custom(name, _) => match name.to_string().to_ascii_lowercase().as_str() {
            "long" => CastTo::Int { int32: false },
            "double" => CastTo::Float,
            _ => return None,
        },
        _ => return None,
    })
}

/// A comparison node, specialised when one side is a literal (and further when the other is
/// a plain numeric field).
fn cmp_node(op: CmpOp, l: Node, r: Node) -> Node {
    match (l, r) {
        (l, Node::Lit(lit)) if !lit.is_null() => cmp_lit(op, l, lit),
        (Node::Lit(lit), r) if !lit.is_null() => cmp_lit(op.flip(), r, lit),
        (l, r) => Node::Cmp {
            op,
            l: Box::new(l),
            r: Box::new(r),
        },
    }
}

fn cmp_lit(op: CmpOp, e: Node, lit: Scalar<'static>) -> Node {
    /// Within this, integers are exact as doubles.
    const EXACT: i64 = 1 << 53;
    let plain = |path: &FieldPath| {
        matches!(
            path.ty().ty,
            Type::Int | Type::Long | Type::Float | Type::Double
        )
    };
    match (e, lit) {
        (Node::Field { path, .. }, Scalar::Float(rhs)) if plain(&path) => {
            Node::FieldCmpF64 { path, op, rhs }
        }
        (
            Node::Field {
                path,
                read: Read::Int,
            },
            Scalar::Int(rhs),
        ) if plain(&path) => Node::FieldCmpI64 { path, op, rhs },
        (
            Node::Field {
                path,
                read: Read::Float,
            },
            Scalar::Int(rhs),
        ) if plain(&path) && (-EXACT..=EXACT).contains(&rhs) => Node::FieldCmpF64 {
            path,
            op,
            rhs: rhs as f64,
        },
        (e, lit) => Node::CmpLit {
            op,
            e: Box::new(e),
            lit,
        },
    }
}

pub(crate) struct Compiler<'r> {
    input: &'r RecordType,
    pub(crate) problems: Vec<Problem>,
    depth: usize,
    too_deep: bool,
}

impl<'r> Compiler<'r> {
    pub(crate) fn new(input: &'r RecordType) -> Self {
        Compiler {
            input,
            problems: Vec::new(),
            depth: 0,
            too_deep: false,
        }
    }

    fn problem<T>(&mut self, message: impl Into<String>, fix: impl Into<String>) -> Option<T> {
        self.problems.push(Problem::new("", message, fix));
        None
    }

    /// Folds a node whose children are all literals into a literal (reporting a constant
    /// that always fails, such as `1 / 0`).
    fn done(&mut self, mut t: Typed) -> Option<Typed> {
        let children = t.node.children();
        if children.is_empty() || !children.iter().all(|c| c.is_lit()) {
            return Some(t);
        }
        let null = Value::Null;
        match t.node.eval(&null) {
            Ok(s) => {
                let s = s.into_owned();
                t.nullable = s == Scalar::Null;
                t.node = Node::Lit(s);
                Some(t)
            }
            Err(e) => self.problem(
                format!("{e}: this part of the expression is constant, so it would fail for every record"),
                "fix the constant part of the expression",
            ),
        }
    }

    pub(crate) fn expr(&mut self, e: &E) -> Option<Typed> {
        if self.depth >= MAX_DEPTH {
            if !self.too_deep {
                self.too_deep = true;
                self.problem::<()>(
                    format!("the expression is nested more than {MAX_DEPTH} levels deep"),
                    "simplify it, or split it over several operators",
                );
            }
            return None;
        }
        self.depth += 1;
        // Debug builds spend tens of KiB of stack per level: grow it rather than overflow.
        let r = stacker::maybe_grow(256 * 1024, 4 * 1024 * 1024, || self.expr_inner(e));
        self.depth -= 1;
        r
    }

    fn expr_inner(&mut self, e: &E) -> Option<Typed> {
        match e {
            E::Identifier(id) => self.field(std::slice::from_ref(id), e),
            E::CompoundIdentifier(ids) => self.field(ids, e),
            E::CompoundFieldAccess { root, access_chain } => self.access(root, access_chain, e),
            E::Nested(inner) => self.expr(inner),
            E::Value(v) => self.literal(&v.value, e),
            E::TypedString(ts) => self.typed_string(ts, e),
            E::UnaryOp { op, expr } => self.unary(*op, expr, e),
            E::BinaryOp { left, op, right } => self.binary(left, op, right, e),
            E::IsNull(x) => self.is_null(x, false, e),
            E::IsNotNull(x) => self.is_null(x, true, e),
            E::IsTrue(x) => self.is_bool(x, true, false, e),
            E::IsNotTrue(x) => self.is_bool(x, true, true, e),
            E::IsFalse(x) => self.is_bool(x, false, false, e),
            E::IsNotFalse(x) => self.is_bool(x, false, true, e),
            E::IsUnknown(x) | E::IsNotUnknown(x) => {
                let t = self.expr(x)?;
                if !self.require_bool(&t, "IS UNKNOWN") {
                    return None;
                }
                let negated = matches!(e, E::IsNotUnknown(_));
                Some(Typed::new(Node::IsNull { e: Box::new(t.node), negated }, Kind::Bool, false, e.to_string()))
            }
            E::IsDistinctFrom(a, b) => self.distinct(a, b, false, e),
            E::IsNotDistinctFrom(a, b) => self.distinct(a, b, true, e),
            E::Between {
                expr,
                negated,
                low,
                high,
            } => self.between(expr, *negated, low, high, e),
            E::In {
                expr,
                target,
                negated,
                ..
            } => match target {
                InTarget::List(list) => self.in_list(expr, list, *negated, e),
                _ => self.problem(
                    format!("`{e}`: IN takes a list of values here"),
                    "write the values, e.g. `kind IN ('a', 'b')`; an expression sees one record, so subqueries and tables are not available",
                ),
            },
            E::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => self.like(*negated, *any, expr, pattern, escape_char.as_deref(), false, e),
            E::ILike {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => self.like(*negated, *any, expr, pattern, escape_char.as_deref(), true, e),
            E::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.case(operand.as_deref(), conditions, else_result.as_deref(), e),
            E::Cast {
                kind,
                expr,
                data_type,
                format,
            } => {
                if format.is_some() {
                    return self.problem(format!("`{e}`: CAST ... FORMAT is not supported"), "cast without FORMAT");
                }
                let or_null = matches!(kind, CastKind::TryCast | CastKind::SafeCast);
                self.cast(expr, data_type, or_null, e)
            }
            E::Function(f) => self.function(f, e),
            E::Ceil { expr, field } | E::Floor { expr, field } => {
                let f = if matches!(e, E::Ceil { .. }) { Math::Ceil } else { Math::Floor };
                match field {
                    CeilFloorKind::DateTimeField(DateTimeField::NoDateTime) => {
                        let t = self.expr(expr)?;
                        self.math(f, t, e)
                    }
                    _ => self.problem(
                        format!("`{e}`: only ceil(x) and floor(x) of a number are supported"),
                        "round to digits with round(x, digits)",
                    ),
                }
            }
            E::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let s = self.expr(expr);
                let start = match substring_from {
                    Some(f) => self.expr(f),
                    None => Some(Typed::lit(Scalar::Int(1), "1".into())),
                };
                let len = substring_for.as_deref().map(|l| self.expr(l));
                let len = match len {
                    Some(None) => return None,
                    Some(Some(l)) => Some(l),
                    None => None,
                };
                self.substr(s?, start?, len, e)
            }
            E::Trim {
                trim_where,
                trim_what,
                expr,
                trim_characters,
            } => {
                let s = self.expr(expr);
                let chars = match (trim_what, trim_characters.as_deref()) {
                    (Some(w), None) => Some(self.expr(w)),
                    (None, Some([c])) => Some(self.expr(c)),
                    (None, None) => None,
                    _ => return self.problem(format!("`{e}`: give one string of characters to trim"), "write trim(s) or trim(s, ' -')"),
                };
                let chars = match chars {
                    Some(None) => return None,
                    Some(Some(c)) => Some(c),
                    None => None,
                };
                let (leading, trailing) = match trim_where {
                    None | Some(TrimWhereField::Both) => (true, true),
                    Some(TrimWhereField::Leading) => (true, false),
                    Some(TrimWhereField::Trailing) => (false, true),
                };
                self.trim(s?, chars, leading, trailing, e)
            }
            E::Interval(_) => self.problem(
                format!("`{e}`: INTERVAL is not supported"),
                "add or subtract milliseconds as a number: `ts + 60000` is one minute after `ts`",
            ),
            E::Extract { .. } => self.problem(
                format!("`{e}`: EXTRACT is not supported"),
                "compare timestamps directly, e.g. `ts >= TIMESTAMP '2024-01-01 00:00:00'`",
            ),
            E::Subquery(_) | E::Exists { .. } => self.problem(
                format!("`{e}`: subqueries are not supported"),
                "an expression sees one record; use a join operator to bring in other data",
            ),
            other => self.problem(
                format!("`{other}` is not supported in expressions"),
                format!("use fields, literals, {OPERATORS} and functions: {}", function_names()),
            ),
        }
    }

    fn field(&mut self, ids: &[Ident], e: &E) -> Option<Typed> {
        let names: Vec<&str> = ids.iter().map(|i| i.value.as_str()).collect();
        match self.input.resolve_parts(&names) {
            Ok(path) => self.field_value(path, e.to_string()),
            Err(mut p) => {
                if let ([id], Some(en)) = (ids, enum_with_symbol(self.input, &ids[0].value)) {
                    p.fix = format!(
                        "`{0}` is a symbol of {en}: write it in single quotes, '{0}'",
                        id.value
                    );
                } else if ids.len() == 1 && ids[0].quote_style == Some('"') {
                    p.fix.push_str(&format!(
                        "; note that \"{}\" in double quotes is a field name: write a string in single quotes, '{}'",
                        ids[0].value, ids[0].value
                    ));
                }
                self.problems.push(p);
                None
            }
        }
    }

    fn field_value(&mut self, path: FieldPath, text: String) -> Option<Typed> {
        let ty = &path.ty().ty;
        match scalar_of(ty, path.path()) {
            Ok((kind, read)) => {
                let nullable = path.ty().nullable;
                let ty_name = ty.to_string();
                let symbols = enum_info(ty);
                let mut t = Typed::new(Node::Field { path, read }, kind, nullable, text);
                t.ty_name = ty_name;
                t.symbols = symbols;
                Some(t)
            }
            Err(fix) => self.problem(
                format!("`{}` is {}, not a single value", path.path(), a_or_an(ty)),
                fix,
            ),
        }
    }

    /// `attrs['key']`, `tags[1]`
    fn access(&mut self, root: &E, chain: &[sqlparser::ast::AccessExpr], e: &E) -> Option<Typed> {
        use sqlparser::ast::{AccessExpr, Subscript};
        let path = match root {
            E::Identifier(id) => self.input.resolve_parts(&[id.value.as_str()]),
            E::CompoundIdentifier(ids) => {
                let names: Vec<&str> = ids.iter().map(|i| i.value.as_str()).collect();
                self.input.resolve_parts(&names)
            }
            _ => {
                return self.problem(
                    format!("`{e}`: only fields can be subscripted"),
                    "write e.g. `attrs['room']` or `tags[1]`",
                )
            }
        };
        let path = match path {
            Ok(p) => p,
            Err(p) => {
                self.problems.push(p);
                return None;
            }
        };
        let [AccessExpr::Subscript(Subscript::Index { index })] = chain else {
            return self.problem(
                format!("`{e}`: only one subscript with a literal is supported"),
                "write e.g. `attrs['room']` or `tags[1]`",
            );
        };
        let (elem, node_of): (&crate::types::FieldType, MakeNode) = match &path.ty().ty {
            Type::Map(values) => match as_string_literal(index) {
                Some(key) => {
                    let key = key.to_string();
                    (
                        values,
                        Box::new(move |path, read| Node::MapGet { path, key, read }),
                    )
                }
                None => {
                    return self.problem(
                        format!("`{e}`: a map is read with a string literal key"),
                        format!("write e.g. `{}['key']`", path.path()),
                    )
                }
            },
            Type::Array(items) => {
                let n = match index {
                    E::Value(v) => match &v.value {
                        V::Number(n, _) => n.parse::<usize>().ok().filter(|n| *n >= 1),
                        _ => None,
                    },
                    _ => None,
                };
                match n {
                    Some(n) => (
                        items,
                        Box::new(move |path, read| Node::ArrayGet {
                            path,
                            index: n - 1,
                            read,
                        }),
                    ),
                    None => {
                        return self.problem(
                            format!("`{e}`: an array is indexed with a literal position from 1"),
                            format!("write e.g. `{}[1]` for the first element", path.path()),
                        )
                    }
                }
            }
            other => {
                return self.problem(
                    format!(
                        "`{}` is {}, not a map or an array; it cannot be subscripted",
                        path.path(),
                        a_or_an(other)
                    ),
                    format!("use `{}` itself", path.path()),
                )
            }
        };
        let elem_ty = elem.ty.clone();
        match scalar_of(&elem_ty, &e.to_string()) {
            Ok((kind, read)) => {
                let mut t = Typed::new(node_of(path, read), kind, true, e.to_string());
                t.ty_name = elem_ty.to_string();
                t.symbols = enum_info(&elem_ty);
                Some(t)
            }
            Err(fix) => self.problem(
                format!("`{e}` is {}, not a single value", a_or_an(&elem_ty)),
                fix,
            ),
        }
    }

    fn literal(&mut self, v: &V, e: &E) -> Option<Typed> {
        let text = e.to_string();
        let s = match v {
            V::Number(n, _) => match n.parse::<i64>() {
                Ok(i) => Scalar::Int(i),
                Err(_) => match n.parse::<f64>() {
                    Ok(f) if f.is_finite() => Scalar::Float(f),
                    _ => return self.problem(format!("`{n}` is not a number that fits a double"), "write a smaller number"),
                },
            },
            V::Boolean(b) => Scalar::Bool(*b),
            V::Null => Scalar::Null,
            v => match string_literal(v) {
                Some(s) => Scalar::Str(Cow::Owned(s.to_string())),
                None => {
                    return self.problem(
                        format!("the literal `{v}` is not supported"),
                        "use numbers, 'strings' in single quotes, TRUE, FALSE, NULL, or TIMESTAMP '2024-01-01 00:00:00'",
                    )
                }
            },
        };
        Some(Typed::lit(s, text))
    }

    fn typed_string(&mut self, ts: &TypedString, e: &E) -> Option<Typed> {
        let Some(s) = string_literal(&ts.value.value) else {
            return self.problem(
                format!("`{e}` is not supported"),
                "write e.g. TIMESTAMP '2024-01-01 00:00:00'",
            );
        };
        match &ts.data_type {
            DataType::Timestamp(..)
            | DataType::Datetime(_)
            | DataType::TimestampNtz(_)
            | DataType::Date => match time::parse_timestamp_ms(s) {
                Some(t) => {
                    let t = if ts.data_type == DataType::Date {
                        time::truncate_to_day(t)
                    } else {
                        t
                    };
                    Some(Typed::lit(Scalar::Ts(t), e.to_string()))
                }
                None => self.problem(format!("'{s}' is not a timestamp"), TS_FORMAT_FIX),
            },
            other => self.problem(
                format!("`{e}`: typed literals of type {other} are not supported"),
                format!("write CAST('{s}' AS {other}), or the plain literal"),
            ),
        }
    }

    fn unary(&mut self, op: UnaryOperator, inner: &E, e: &E) -> Option<Typed> {
        match op {
            UnaryOperator::Minus => {
                if let E::Value(v) = inner {
                    if let V::Number(n, _) = &v.value {
                        let neg = format!("-{n}");
                        if let Ok(i) = neg.parse::<i64>() {
                            return Some(Typed::lit(Scalar::Int(i), e.to_string()));
                        }
                    }
                }
                let t = self.expr(inner)?;
                if !matches!(t.kind, Kind::Int | Kind::Float | Kind::Null) {
                    return self.problem(
                        format!("cannot negate {} (`{}`)", t.ty_name, t.text),
                        format!("cast it, e.g. -CAST({} AS DOUBLE)", t.text),
                    );
                }
                let (kind, nullable) = (t.kind, t.nullable);
                let node = Node::Neg {
                    e: Box::new(t.node),
                    what: e.to_string().into(),
                };
                self.done(Typed::new(node, kind, nullable, e.to_string()))
            }
            UnaryOperator::Plus => {
                let t = self.expr(inner)?;
                if !matches!(t.kind, Kind::Int | Kind::Float | Kind::Null) {
                    return self.problem(
                        format!(
                            "unary + needs a number, `{}` is {}",
                            t.text,
                            a_or_an_name(&t.ty_name)
                        ),
                        "remove the +",
                    );
                }
                Some(t)
            }
            UnaryOperator::Not => {
                let t = self.expr(inner)?;
                if !self.require_bool(&t, "NOT") {
                    return None;
                }
                let nullable = t.nullable;
                self.done(Typed::new(
                    Node::Not(Box::new(t.node)),
                    Kind::Bool,
                    nullable,
                    e.to_string(),
                ))
            }
            other => self.problem(
                format!("the operator `{other}` is not supported"),
                format!("supported operators: {OPERATORS}"),
            ),
        }
    }

    fn require_bool(&mut self, t: &Typed, context: &str) -> bool {
        if matches!(t.kind, Kind::Bool | Kind::Null) {
            return true;
        }
        self.problem::<()>(
            format!(
                "`{}` is {}, but {context} needs a boolean",
                t.text,
                a_or_an_name(&t.ty_name)
            ),
            boolean_fix(t),
        );
        false
    }

    /// Operands of a left-deep chain of the same operator (`a AND b AND c`), without
    /// recursion on the chain itself.
    fn chain<'e>(left: &'e E, op: &BinaryOperator, right: &'e E) -> Vec<&'e E> {
        let mut rights = vec![right];
        let mut cur = left;
        while let E::BinaryOp {
            left: l,
            op: o,
            right: r,
        } = cur
        {
            if o != op {
                break;
            }
            rights.push(&**r);
            cur = &**l;
        }
        rights.push(cur);
        rights.reverse();
        rights
    }

    fn binary(&mut self, left: &E, op: &BinaryOperator, right: &E, e: &E) -> Option<Typed> {
        use BinaryOperator as B;
        match op {
            B::And | B::Or => {
                let operands = Self::chain(left, op, right);
                let word = if *op == B::And { "AND" } else { "OR" };
                let mut ok = true;
                let mut nodes = Vec::with_capacity(operands.len());
                let mut nullable = false;
                for o in operands {
                    match self.expr(o) {
                        Some(t) if self.require_bool(&t, word) => {
                            nullable |= t.nullable;
                            nodes.push(t.node);
                        }
                        _ => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                let node = if *op == B::And {
                    Node::And(nodes)
                } else {
                    Node::Or(nodes)
                };
                self.done(Typed::new(node, Kind::Bool, nullable, e.to_string()))
            }
            B::StringConcat => {
                let operands = Self::chain(left, op, right);
                let parts: Vec<Option<Typed>> =
                    operands.into_iter().map(|o| self.expr(o)).collect();
                let parts: Vec<Typed> = parts.into_iter().collect::<Option<_>>()?;
                let nullable = parts.iter().any(|p| p.nullable);
                let node = Node::Concat {
                    parts: parts.into_iter().map(|p| p.node).collect(),
                    skip_nulls: false,
                };
                self.done(Typed::new(node, Kind::Str, nullable, e.to_string()))
            }
            B::Plus => self.arith(ArithOp::Add, left, right, e),
            B::Minus => self.arith(ArithOp::Sub, left, right, e),
            B::Multiply => self.arith(ArithOp::Mul, left, right, e),
            B::Divide => self.arith(ArithOp::Div, left, right, e),
            B::Modulo => self.arith(ArithOp::Rem, left, right, e),
            B::Eq => self.compare(CmpOp::Eq, left, right, e),
            B::NotEq => self.compare(CmpOp::Ne, left, right, e),
            B::Lt => self.compare(CmpOp::Lt, left, right, e),
            B::LtEq => self.compare(CmpOp::Le, left, right, e),
            B::Gt => self.compare(CmpOp::Gt, left, right, e),
            B::GtEq => self.compare(CmpOp::Ge, left, right, e),
            B::Spaceship => self.distinct(left, right, true, e),
            B::DuckIntegerDivide | B::MyIntegerDivide => self.problem(
                format!("the operator `{op}` is not supported"),
                "use `/`: it truncates when both sides are integers",
            ),
            other => self.problem(
                format!("the operator `{other}` is not supported"),
                format!("supported operators: {OPERATORS}"),
            ),
        }
    }

    fn arith(&mut self, op: ArithOp, left: &E, right: &E, e: &E) -> Option<Typed> {
        let (l, r) = (self.expr(left), self.expr(right));
        let (l, r) = (l?, r?);
        use Kind::*;
        let kind = match (l.kind, r.kind) {
            (Null, Null) => Some(Null),
            (Int, Int) | (Int, Null) | (Null, Int) => Some(Int),
            (Int | Float | Null, Int | Float | Null) => Some(Float),
            (Ts, Int | Null) | (Null, Ts) if matches!(op, ArithOp::Add | ArithOp::Sub) => Some(Ts),
            (Int, Ts) if op == ArithOp::Add => Some(Ts),
            (Ts, Ts) if op == ArithOp::Sub => Some(Int),
            _ => None,
        };
        let Some(kind) = kind else {
            let verb = match op {
                ArithOp::Add => "add",
                ArithOp::Sub => "subtract",
                ArithOp::Mul => "multiply",
                ArithOp::Div => "divide",
                ArithOp::Rem => "take the remainder of",
            };
            let fix = if l.kind == Ts || r.kind == Ts {
                "a timestamp takes + or - a number of milliseconds (`ts + 60000`), and a timestamp minus a timestamp is milliseconds".to_string()
            } else {
                let odd = if l.kind.is_numeric() { &r } else { &l };
                format!("cast one side, e.g. CAST({} AS DOUBLE)", odd.text)
            };
            return self.problem(
                format!("cannot {verb} {} and {} in `{e}`", l.ty_name, r.ty_name),
                fix,
            );
        };
        let nullable = l.nullable || r.nullable;
        let node = Node::Arith {
            op,
            l: Box::new(l.node),
            r: Box::new(r.node),
            what: e.to_string().into(),
        };
        self.done(Typed::new(node, kind, nullable, e.to_string()))
    }

    /// A string literal compared with a timestamp, read as a timestamp.
    fn literal_as_ts(&mut self, t: &mut Typed) -> bool {
        let Some(s) = t.str_lit() else { return false };
        match time::parse_timestamp_ms(s) {
            Some(ms) => {
                *t = Typed::lit(Scalar::Ts(ms), t.text.clone());
                true
            }
            None => {
                let s = s.to_string();
                self.problem::<()>(format!("'{s}' is not a timestamp"), TS_FORMAT_FIX);
                false
            }
        }
    }

    /// An enum compared with a string literal: the literal must be a symbol.
    fn check_symbol(&mut self, en: &Typed, lit: &Typed) -> bool {
        let (Some(info), Some(s)) = (&en.symbols, lit.str_lit()) else {
            return true;
        };
        let (name, symbols) = &**info;
        if symbols.iter().any(|sym| sym == s) {
            return true;
        }
        let list = symbols.join(", ");
        let fix = match did_you_mean(s, symbols.iter().map(String::as_str)) {
            Some(m) => format!("did you mean '{m}'? symbols: {list}"),
            None => format!("symbols: {list}"),
        };
        self.problem::<()>(
            format!("'{s}' is not a symbol of {name} (`{}`)", en.text),
            fix,
        );
        false
    }

    /// Makes `l` and `r` comparable (reading string literals as timestamps next to
    /// timestamps, checking enum symbols), or reports why they are not.
    fn harmonize(&mut self, l: &mut Typed, r: &mut Typed, e: &E) -> bool {
        use Kind::*;
        match (l.kind, r.kind) {
            (Null, _) | (_, Null) => true,
            (a, b) if a.is_numeric() && b.is_numeric() => true,
            (Str, Str) => self.check_symbol(l, r) && self.check_symbol(r, l),
            (Bool, Bool) | (Ts, Ts) => true,
            (Ts, Str) if r.str_lit().is_some() => self.literal_as_ts(r),
            (Str, Ts) if l.str_lit().is_some() => self.literal_as_ts(l),
            _ => {
                let fix = if l.kind == Ts || r.kind == Ts {
                    "compare timestamps with timestamps, e.g. `ts > '2024-01-01T00:00:00Z'`, or CAST(x AS TIMESTAMP) for milliseconds since the epoch".to_string()
                } else {
                    format!(
                        "compare values of the same type, or cast one side, e.g. CAST({} AS {})",
                        r.text,
                        cast_name(l.kind)
                    )
                };
                self.problem::<()>(
                    format!("cannot compare {} and {} in `{e}`", l.ty_name, r.ty_name),
                    fix,
                );
                false
            }
        }
    }

    fn no_enum_order(&mut self, t: &Typed, e: &E) -> bool {
        if let Some(info) = &t.symbols {
            let example = info
                .1
                .iter()
                .take(2)
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ");
            self.problem::<()>(
                format!(
                    "`{}` is an enum ({}): it can be tested for equality, not ordered, in `{e}`",
                    t.text, info.0
                ),
                format!(
                    "list the symbols you mean, e.g. `{} IN ({example})`",
                    t.text
                ),
            );
            return false;
        }
        true
    }

    fn compare(&mut self, op: CmpOp, left: &E, right: &E, e: &E) -> Option<Typed> {
        let (l, r) = (self.expr(left), self.expr(right));
        let (mut l, mut r) = (l?, r?);
        if !self.harmonize(&mut l, &mut r, e) {
            return None;
        }
        let ordered = !matches!(op, CmpOp::Eq | CmpOp::Ne);
        if ordered && (!self.no_enum_order(&l, e) || !self.no_enum_order(&r, e)) {
            return None;
        }
        let nullable = l.nullable || r.nullable;
        let node = cmp_node(op, l.node, r.node);
        self.done(Typed::new(node, Kind::Bool, nullable, e.to_string()))
    }

    fn distinct(&mut self, left: &E, right: &E, negated: bool, e: &E) -> Option<Typed> {
        let (l, r) = (self.expr(left), self.expr(right));
        let (mut l, mut r) = (l?, r?);
        if !self.harmonize(&mut l, &mut r, e) {
            return None;
        }
        let node = Node::Distinct {
            l: Box::new(l.node),
            r: Box::new(r.node),
            negated,
        };
        self.done(Typed::new(node, Kind::Bool, false, e.to_string()))
    }

    /// The path of `x` if it names a field that is not a single value (a record, array...),
    /// for `IS NULL`.
    fn non_scalar_path(&self, x: &E) -> Option<FieldPath> {
        let path = match x {
            E::Identifier(id) => self.input.resolve_parts(&[id.value.as_str()]).ok()?,
            E::CompoundIdentifier(ids) => {
                let names: Vec<&str> = ids.iter().map(|i| i.value.as_str()).collect();
                self.input.resolve_parts(&names).ok()?
            }
            E::Nested(inner) => return self.non_scalar_path(inner),
            _ => return None,
        };
        scalar_of(&path.ty().ty, path.path())
            .is_err()
            .then_some(path)
    }

    fn is_null(&mut self, x: &E, negated: bool, e: &E) -> Option<Typed> {
        if let Some(path) = self.non_scalar_path(x) {
            return Some(Typed::new(
                Node::PathIsNull { path, negated },
                Kind::Bool,
                false,
                e.to_string(),
            ));
        }
        let t = self.expr(x)?;
        self.done(Typed::new(
            Node::IsNull {
                e: Box::new(t.node),
                negated,
            },
            Kind::Bool,
            false,
            e.to_string(),
        ))
    }

    fn is_bool(&mut self, x: &E, value: bool, negated: bool, e: &E) -> Option<Typed> {
        let t = self.expr(x)?;
        if !self.require_bool(&t, "IS TRUE / IS FALSE") {
            return None;
        }
        self.done(Typed::new(
            Node::IsBool {
                e: Box::new(t.node),
                value,
                negated,
            },
            Kind::Bool,
            false,
            e.to_string(),
        ))
    }

    fn between(&mut self, x: &E, negated: bool, low: &E, high: &E, e: &E) -> Option<Typed> {
        let (v, lo, hi) = (self.expr(x), self.expr(low), self.expr(high));
        let (mut v, mut lo, mut hi) = (v?, lo?, hi?);
        if !(self.harmonize(&mut v, &mut lo, e)
            && self.harmonize(&mut v, &mut hi, e)
            && self.no_enum_order(&v, e))
        {
            return None;
        }
        let nullable = v.nullable || lo.nullable || hi.nullable;
        let node = Node::Between {
            e: Box::new(v.node),
            lo: Box::new(lo.node),
            hi: Box::new(hi.node),
            negated,
        };
        self.done(Typed::new(node, Kind::Bool, nullable, e.to_string()))
    }

    fn in_list(&mut self, x: &E, list: &[E], negated: bool, e: &E) -> Option<Typed> {
        let v = self.expr(x);
        let items: Vec<Option<Typed>> = list.iter().map(|i| self.expr(i)).collect();
        let mut v = v?;
        let mut ok = true;
        let mut nodes = Vec::with_capacity(items.len());
        let mut nullable = v.nullable;
        for item in items {
            let Some(mut item) = item else {
                ok = false;
                continue;
            };
            if self.harmonize(&mut v, &mut item, e) {
                nullable |= item.nullable;
                nodes.push(item.node);
            } else {
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        if nodes.is_empty() {
            return self.problem(
                format!("`{e}`: the list is empty"),
                "list at least one value",
            );
        }
        let node = Node::In {
            e: Box::new(v.node),
            list: nodes,
            negated,
        };
        self.done(Typed::new(node, Kind::Bool, nullable, e.to_string()))
    }

    #[allow(clippy::too_many_arguments)]
    fn like(
        &mut self,
        negated: bool,
        any: bool,
        x: &E,
        pattern: &E,
        escape: Option<&E>,
        ci: bool,
        e: &E,
    ) -> Option<Typed> {
        let word = if ci { "ILIKE" } else { "LIKE" };
        if any {
            return self.problem(
                format!("`{e}`: {word} ANY is not supported"),
                format!("combine patterns with OR: `x {word} 'a%' OR x {word} 'b%'`"),
            );
        }
        let t = self.expr(x);
        let escape = match escape {
            None => Some('\\'),
            Some(esc) => match as_string_literal(esc) {
                Some(s) if s.chars().count() <= 1 => s.chars().next(),
                _ => {
                    return self.problem(
                        format!("`{e}`: ESCAPE takes one character in quotes"),
                        "write e.g. ESCAPE '!'",
                    )
                }
            },
        };
        let pat = if is_null_literal(pattern) {
            None
        } else {
            match as_string_literal(pattern) {
                Some(p) => Some(p),
                None => {
                    return self.problem(
                        format!("`{e}`: the {word} pattern must be a string literal"),
                        format!(
                            "write the pattern in single quotes, e.g. `device_id {word} 'pm-%'`"
                        ),
                    )
                }
            }
        };
        let t = t?;
        if !matches!(t.kind, Kind::Str | Kind::Null) {
            return self.problem(
                format!(
                    "{word} needs a string, but `{}` is {}",
                    t.text,
                    a_or_an_name(&t.ty_name)
                ),
                format!("cast it: CAST({} AS VARCHAR) {word} '...'", t.text),
            );
        }
        let Some(pat) = pat else {
            return Some(Typed::lit(Scalar::Null, e.to_string()));
        };
        let pattern = match LikePattern::new(pat, escape, ci) {
            Ok(p) => p,
            Err(why) => {
                return self.problem(
                    format!("`{e}`: {why}"),
                    "double the escape character to match it literally",
                )
            }
        };
        let nullable = t.nullable;
        let node = Node::Like {
            e: Box::new(t.node),
            pattern,
            negated,
        };
        self.done(Typed::new(node, Kind::Bool, nullable, e.to_string()))
    }

    /// One kind for all `items` (ints widened to doubles, string literals next to
    /// timestamps read as timestamps), or a problem naming `what`.
    fn unify(&mut self, items: Vec<Typed>, what: &str, e: &E) -> Option<(Vec<Typed>, Kind)> {
        use Kind::*;
        let has_ts = items.iter().any(|t| t.kind == Ts);
        let mut kind = Null;
        let mut first_name = String::new();
        for t in &items {
            let k = if has_ts && t.kind == Str && t.str_lit().is_some() {
                Ts
            } else {
                t.kind
            };
            kind = match (kind, k) {
                (Null, k) => {
                    first_name = t.ty_name.clone();
                    k
                }
                (k, Null) => k,
                (a, b) if a == b => a,
                (Int, Float) | (Float, Int) => Float,
                _ => {
                    return self.problem(
                        format!("{what} mix {first_name} and {} in `{e}`", t.ty_name),
                        format!(
                            "make them the same type, e.g. CAST({} AS {})",
                            t.text,
                            cast_name(kind)
                        ),
                    )
                }
            };
        }
        let mut out = Vec::with_capacity(items.len());
        for mut t in items {
            match (kind, t.kind) {
                (Float, Int) => {
                    let text = t.text.clone();
                    let nullable = t.nullable;
                    let node = match t.node {
                        Node::Lit(Scalar::Int(i)) => Node::Lit(Scalar::Float(i as f64)),
                        other => Node::ToFloat(Box::new(other)),
                    };
                    t = Typed::new(node, Float, nullable, text);
                }
                (Ts, Str) if !self.literal_as_ts(&mut t) => return None,
                _ => {}
            }
            out.push(t);
        }
        Some((out, kind))
    }

    fn case(
        &mut self,
        operand: Option<&E>,
        conditions: &[sqlparser::ast::CaseWhen],
        otherwise: Option<&E>,
        e: &E,
    ) -> Option<Typed> {
        let mut ok = true;
        let mut operand = match operand {
            Some(o) => match self.expr(o) {
                Some(t) => Some(t),
                None => {
                    ok = false;
                    None
                }
            },
            None => None,
        };
        let mut whens = Vec::with_capacity(conditions.len());
        let mut results = Vec::with_capacity(conditions.len() + 1);
        for cw in conditions {
            let (w, r) = (self.expr(&cw.condition), self.expr(&cw.result));
            match w {
                Some(mut w) => {
                    let good = match &mut operand {
                        Some(op) => self.harmonize(op, &mut w, e),
                        None => self.require_bool(&w, "WHEN"),
                    };
                    if good {
                        whens.push(w.node);
                    } else {
                        ok = false;
                    }
                }
                None => ok = false,
            }
            match r {
                Some(r) => results.push(r),
                None => ok = false,
            }
        }
        let has_else = otherwise.is_some();
        if let Some(o) = otherwise {
            match self.expr(o) {
                Some(t) => results.push(t),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let (results, kind) = self.unify(results, "CASE results", e)?;
        let nullable = !has_else || results.iter().any(|r| r.nullable);
        let mut results: Vec<Node> = results.into_iter().map(|r| r.node).collect();
        let otherwise = if has_else {
            results.pop().map(Box::new)
        } else {
            None
        };
        let node = Node::Case {
            operand: operand.map(|o| Box::new(o.node)),
            whens: whens.into_iter().zip(results).collect(),
            otherwise,
        };
        self.done(Typed::new(node, kind, nullable, e.to_string()))
    }

    fn cast(&mut self, x: &E, data_type: &DataType, or_null: bool, e: &E) -> Option<Typed> {
        let t = self.expr(x);
        let Some(to) = cast_target(data_type) else {
            return self.problem(
                format!("cannot cast to {data_type} in `{e}`"),
                "cast to BIGINT, INT, DOUBLE, FLOAT, REAL, VARCHAR, STRING, TEXT, BOOLEAN, TIMESTAMP or DATE",
            );
        };
        let t = t?;
        use Kind::*;
        let allowed = match (t.kind, to) {
            (Null, _) | (Str, _) => true,
            (Int, _) => to != CastTo::Date,
            (Float, CastTo::Int { .. } | CastTo::Float | CastTo::Str) => true,
            (Bool, CastTo::Int { .. } | CastTo::Float | CastTo::Str | CastTo::Bool) => true,
            (Ts, CastTo::Int { int32: false } | CastTo::Str | CastTo::Ts | CastTo::Date) => true,
            _ => false,
        };
        if !allowed {
            return self.problem(
                format!("cannot cast {} to {} in `{e}`", t.ty_name, to.name()),
                "numbers cast to and from BIGINT, DOUBLE, VARCHAR and BOOLEAN; timestamps to and from BIGINT (milliseconds since the epoch) and VARCHAR",
            );
        }
        let identity = t.kind == to.kind()
            && matches!(
                to,
                CastTo::Int { int32: false }
                    | CastTo::Float
                    | CastTo::Str
                    | CastTo::Bool
                    | CastTo::Ts
            );
        let nullable = t.nullable || or_null;
        if identity {
            return Some(Typed::new(t.node, to.kind(), nullable, e.to_string()));
        }
        let node = Node::Cast {
            e: Box::new(t.node),
            to,
            or_null,
            what: e.to_string().into(),
        };
        self.done(Typed::new(node, to.kind(), nullable, e.to_string()))
    }

    fn need(&mut self, t: &Typed, ok: bool, func: &str, what: &str, fix: String) -> bool {
        if !ok {
            self.problem::<()>(
                format!(
                    "`{func}` needs {what}, but `{}` is {}",
                    t.text,
                    a_or_an_name(&t.ty_name)
                ),
                fix,
            );
        }
        ok
    }

    fn need_number(&mut self, t: &Typed, func: &str) -> bool {
        let ok = matches!(t.kind, Kind::Int | Kind::Float | Kind::Null);
        let fix = format!("cast it, e.g. {func}(CAST({} AS DOUBLE))", t.text);
        self.need(t, ok, func, "a number", fix)
    }

    fn need_int(&mut self, t: &Typed, func: &str, what: &str) -> bool {
        let ok = matches!(t.kind, Kind::Int | Kind::Null);
        let fix = format!("give an integer, e.g. CAST({} AS BIGINT)", t.text);
        self.need(t, ok, func, what, fix)
    }

    fn need_string(&mut self, t: &Typed, func: &str) -> bool {
        let ok = matches!(t.kind, Kind::Str | Kind::Null);
        let fix = format!("cast it, e.g. {func}(CAST({} AS VARCHAR))", t.text);
        self.need(t, ok, func, "a string", fix)
    }

    fn math(&mut self, f: Math, t: Typed, e: &E) -> Option<Typed> {
        let name = match f {
            Math::Abs => "abs",
            Math::Floor => "floor",
            Math::Ceil => "ceil",
            Math::Sqrt => "sqrt",
            Math::Ln => "ln",
            Math::Log10 => "log10",
            Math::Exp => "exp",
        };
        if !self.need_number(&t, name) {
            return None;
        }
        let kind = match f {
            Math::Abs | Math::Floor | Math::Ceil if t.kind == Kind::Int => Kind::Int,
            _ => Kind::Float,
        };
        let nullable = t.nullable;
        let node = Node::Math {
            f,
            e: Box::new(t.node),
            what: e.to_string().into(),
        };
        self.done(Typed::new(node, kind, nullable, e.to_string()))
    }

    fn substr(&mut self, s: Typed, start: Typed, len: Option<Typed>, e: &E) -> Option<Typed> {
        let mut ok = self.need_string(&s, "substring");
        ok &= self.need_int(&start, "substring", "an integer start");
        if let Some(l) = &len {
            ok &= self.need_int(l, "substring", "an integer length");
        }
        if !ok {
            return None;
        }
        let nullable = s.nullable || start.nullable || len.as_ref().is_some_and(|l| l.nullable);
        let node = Node::Substr {
            e: Box::new(s.node),
            start: Box::new(start.node),
            len: len.map(|l| Box::new(l.node)),
            what: e.to_string().into(),
        };
        self.done(Typed::new(node, Kind::Str, nullable, e.to_string()))
    }

    fn trim(
        &mut self,
        s: Typed,
        chars: Option<Typed>,
        leading: bool,
        trailing: bool,
        e: &E,
    ) -> Option<Typed> {
        let mut ok = self.need_string(&s, "trim");
        if let Some(c) = &chars {
            ok &= self.need_string(c, "trim");
        }
        if !ok {
            return None;
        }
        let nullable = s.nullable || chars.as_ref().is_some_and(|c| c.nullable);
        let node = Node::Trim {
            e: Box::new(s.node),
            chars: chars.map(|c| Box::new(c.node)),
            leading,
            trailing,
        };
        self.done(Typed::new(node, Kind::Str, nullable, e.to_string()))
    }

    fn function(&mut self, f: &Function, e: &E) -> Option<Typed> {
        let name = match f.name.0.as_slice() {
            [ObjectNamePart::Identifier(id)] => id.value.to_lowercase(),
            _ => {
                return self.problem(
                    format!("unknown function `{}`", f.name),
                    format!("functions: {}", function_names()),
                )
            }
        };
        if f.over.is_some()
            || f.filter.is_some()
            || !f.within_group.is_empty()
            || f.null_treatment.is_some()
            || !matches!(f.parameters, FunctionArguments::None)
        {
            return self.problem(
                format!("`{e}`: OVER, FILTER, WITHIN GROUP and IGNORE NULLS are not supported"),
                "call the function on values of the record, e.g. `round(x, 2)`",
            );
        }
        let Some(&(_, min, max, signature)) = FUNCTIONS.iter().find(|f| f.0 == name) else {
            if AGGREGATES.contains(&name.as_str()) {
                return self.problem(
                    format!("`{name}` is an aggregation, not a function of one record"),
                    "aggregate in a window's `aggregate:`; to pick the smaller or greater of values in one record, use least(a, b) or greatest(a, b)",
                );
            }
            if NOW.contains(&name.as_str()) {
                return self.problem(
                    format!("`{name}` is not supported: an expression gives the same result every time it sees a record"),
                    "use the record's own fields, e.g. its timestamp",
                );
            }
            let fix = match did_you_mean(&name, FUNCTIONS.iter().map(|f| f.0)) {
                Some(s) => format!("did you mean `{s}`? functions: {}", function_names()),
                None => format!("functions: {}", function_names()),
            };
            return self.problem(format!("unknown function `{name}`"), fix);
        };
        let args: Vec<&E> = match &f.args {
            FunctionArguments::None => vec![],
            FunctionArguments::List(list)
                if list.duplicate_treatment.is_none() && list.clauses.is_empty() =>
            {
                let mut out = Vec::with_capacity(list.args.len());
                for a in &list.args {
                    match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => out.push(x),
                        _ => {
                            return self.problem(
                                format!("`{e}`: arguments are plain expressions (no names, no *)"),
                                format!("write {signature}"),
                            )
                        }
                    }
                }
                out
            }
            _ => {
                return self.problem(
                    format!("`{e}`: DISTINCT, ORDER BY and subqueries are not supported in calls"),
                    format!("write {signature}"),
                )
            }
        };
        let n = args.len();
        if n < min || n > max {
            let takes = match (min, max) {
                (a, b) if a == b => format!("{a} argument{}", if a == 1 { "" } else { "s" }),
                (a, usize::MAX) => {
                    format!("at least {a} argument{}", if a == 1 { "" } else { "s" })
                }
                (a, b) => format!("{a} to {b} arguments"),
            };
            return self.problem(
                format!("`{name}` takes {takes}, got {n}"),
                format!("write {signature}"),
            );
        }
        let args: Vec<Option<Typed>> = args.into_iter().map(|a| self.expr(a)).collect();
        let mut args: Vec<Typed> = args.into_iter().collect::<Option<_>>()?;
        let text = e.to_string();
        let what: Arc<str> = text.clone().into();
        match name.as_str() {
            "abs" | "floor" | "ceil" | "ceiling" | "sqrt" | "ln" | "log10" | "exp" => {
                let m = match name.as_str() {
                    "abs" => Math::Abs,
                    "floor" => Math::Floor,
                    "ceil" | "ceiling" => Math::Ceil,
                    "sqrt" => Math::Sqrt,
                    "ln" => Math::Ln,
                    "log10" => Math::Log10,
                    _ => Math::Exp,
                };
                self.math(m, args.remove(0), e)
            }
            "round" => {
                let x = args.remove(0);
                let digits = args.pop();
                let mut ok = self.need_number(&x, "round");
                if let Some(d) = &digits {
                    ok &= self.need_int(d, "round", "an integer number of digits");
                }
                if !ok {
                    return None;
                }
                let kind = if x.kind == Kind::Null {
                    Kind::Float
                } else {
                    x.kind
                };
                let nullable = x.nullable || digits.as_ref().is_some_and(|d| d.nullable);
                let node = Node::Round {
                    e: Box::new(x.node),
                    digits: digits.map(|d| Box::new(d.node)),
                    what,
                };
                self.done(Typed::new(node, kind, nullable, text))
            }
            "power" | "pow" => {
                let exp = args.remove(1);
                let base = args.remove(0);
                if !(self.need_number(&base, &name) & self.need_number(&exp, &name)) {
                    return None;
                }
                let nullable = base.nullable || exp.nullable;
                let node = Node::Power {
                    base: Box::new(base.node),
                    exp: Box::new(exp.node),
                    what,
                };
                self.done(Typed::new(node, Kind::Float, nullable, text))
            }
            "least" | "greatest" => {
                let (args, kind) = self.unify(args, &format!("the arguments of {name}"), e)?;
                let nullable = args.iter().any(|a| a.nullable);
                let node = Node::Extreme {
                    args: args.into_iter().map(|a| a.node).collect(),
                    greatest: name == "greatest",
                };
                self.done(Typed::new(node, kind, nullable, text))
            }
            "coalesce" => {
                let (args, kind) = self.unify(args, "the arguments of coalesce", e)?;
                let nullable = args.iter().all(|a| a.nullable);
                let node = Node::Coalesce(args.into_iter().map(|a| a.node).collect());
                self.done(Typed::new(node, kind, nullable, text))
            }
            "nullif" => {
                let mut b = args.remove(1);
                let mut a = args.remove(0);
                if !self.harmonize(&mut a, &mut b, e) {
                    return None;
                }
                let kind = if a.kind == Kind::Null { b.kind } else { a.kind };
                let node = Node::NullIf(Box::new(a.node), Box::new(b.node));
                self.done(Typed::new(node, kind, true, text))
            }
            "lower" | "upper" | "length" | "char_length" | "character_length" => {
                let s = args.remove(0);
                if !self.need_string(&s, &name) {
                    return None;
                }
                let (f, kind) = match name.as_str() {
                    "lower" => (StrFn::Lower, Kind::Str),
                    "upper" => (StrFn::Upper, Kind::Str),
                    _ => (StrFn::Length, Kind::Int),
                };
                let nullable = s.nullable;
                self.done(Typed::new(
                    Node::Str {
                        f,
                        e: Box::new(s.node),
                    },
                    kind,
                    nullable,
                    text,
                ))
            }
            "trim" | "ltrim" | "rtrim" => {
                let chars = if args.len() == 2 { args.pop() } else { None };
                let s = args.remove(0);
                self.trim(s, chars, name != "rtrim", name != "ltrim", e)
            }
            "substr" | "substring" => {
                let len = if args.len() == 3 { args.pop() } else { None };
                let start = args.remove(1);
                let s = args.remove(0);
                self.substr(s, start, len, e)
            }
            "concat" => {
                let node = Node::Concat {
                    parts: args.into_iter().map(|a| a.node).collect(),
                    skip_nulls: true,
                };
                self.done(Typed::new(node, Kind::Str, false, text))
            }
            _ => self.problem(
                format!("unknown function `{name}`"),
                format!("functions: {}", function_names()),
            ),
        }
    }
}

const TS_FORMAT_FIX: &str = "write timestamps as '2024-03-01T12:00:00Z', '2024-03-01 12:00:00' (UTC), '2024-03-01T12:00:00.250+01:00' or '2024-03-01'";

fn a_or_an_name(name: &str) -> String {
    match name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {name}"),
        _ => format!("a {name}"),
    }
}

/// Every function an expression may call, with how to write it (docs/TOPOLOGY.md is
/// checked against this list).
pub(crate) fn signatures() -> impl Iterator<Item = (&'static str, &'static str)> {
    FUNCTIONS.iter().map(|f| (f.0, f.3))
}

/// The supported function names, for messages.
pub(crate) fn function_names() -> String {
    name_list(FUNCTIONS.iter().map(|f| f.0))
}
