//! Avro schema compatibility, decided by Avro schema resolution: can data written with one
//! schema be read with another? Plus the registry's levels (BACKWARD, FORWARD, FULL, NONE and
//! their transitive forms) on top of it.
//!
//! We implement the rules ourselves (over apache-avro's parsed schema) so every problem comes
//! back with the path of the field and a reason a person can act on.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use apache_avro::Schema;

use crate::kinds::{record_names_match as names_match, Kind, Names};

/// One reason a reader cannot read a writer's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// Where in the schema, e.g. `/Telemetry/quality`.
    pub path: String,
    /// What is wrong there.
    pub reason: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// A registry compatibility level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// New schema reads data of the latest version (Confluent's default).
    #[default]
    Backward,
    BackwardTransitive,
    /// The latest version reads data of the new schema.
    Forward,
    ForwardTransitive,
    /// Both directions against the latest version.
    Full,
    FullTransitive,
    None,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
            Level::None => "NONE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "BACKWARD" => Level::Backward,
            "BACKWARD_TRANSITIVE" => Level::BackwardTransitive,
            "FORWARD" => Level::Forward,
            "FORWARD_TRANSITIVE" => Level::ForwardTransitive,
            "FULL" => Level::Full,
            "FULL_TRANSITIVE" => Level::FullTransitive,
            "NONE" => Level::None,
            other => return Err(format!("unknown compatibility level {other}")),
        })
    }
}

/// Checks `new` against the earlier versions of a subject (oldest first) at `level`.
/// Returns every problem found, each prefixed with the version and direction it concerns.
pub fn check_level(level: Level, new: &Schema, previous: &[(i32, &Schema)]) -> Vec<String> {
    if level == Level::None || previous.is_empty() {
        return Vec::new();
    }
    let against: &[(i32, &Schema)] = if level.transitive() {
        previous
    } else {
        &previous[previous.len() - 1..]
    };
    let mut out = Vec::new();
    for (version, old) in against {
        if level.backward() {
            for i in can_read(new, old) {
                out.push(format!(
                    "new schema cannot read data written with version {version}: {i}"
                ));
            }
        }
        if level.forward() {
            for i in can_read(old, new) {
                out.push(format!(
                    "version {version} cannot read data written with the new schema: {i}"
                ));
            }
        }
    }
    out
}

/// Every reason why data written with `writer` cannot be read with `reader`; empty when it can.
pub fn can_read(reader: &Schema, writer: &Schema) -> Vec<Incompatibility> {
    let mut c = Checker {
        rn: Names::of(reader),
        wn: Names::of(writer),
        in_progress: HashSet::new(),
        out: Vec::new(),
    };
    c.check(reader, writer, String::new());
    c.out
}

struct Checker<'r, 'w> {
    rn: Names<'r>,
    wn: Names<'w>,
    /// Record pairs being compared, so recursive types terminate.
    in_progress: HashSet<(usize, usize)>,
    out: Vec<Incompatibility>,
}

impl<'r, 'w> Checker<'r, 'w> {
    fn fail(&mut self, path: &str, reason: String) {
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path.to_string()
        };
        self.out.push(Incompatibility { path, reason });
    }

    /// Whether `reader` reads `writer` without recording problems.
    fn quietly(&mut self, reader: &'r Schema, writer: &'w Schema, path: &str) -> bool {
        let before = self.out.len();
        self.check(reader, writer, path.to_string());
        let ok = self.out.len() == before;
        self.out.truncate(before);
        ok
    }

    fn check(&mut self, reader: &'r Schema, writer: &'w Schema, path: String) {
        let (rk, wk) = match (self.rn.kind(reader), self.wn.kind(writer)) {
            (Ok(r), Ok(w)) => (r, w),
            (Err(e), _) | (_, Err(e)) => return self.fail(&path, e),
        };
        use Kind as K;
        match (rk, wk) {
            (_, K::Union(wu)) => {
                for (i, branch) in wu.variants().iter().enumerate() {
                    let ok = match rk {
                        K::Union(ru) => ru
                            .variants()
                            .iter()
                            .any(|rb| self.quietly(rb, branch, &path)),
                        _ => self.quietly(reader, branch, &path),
                    };
                    if !ok {
                        let wb = self
                            .wn
                            .kind(branch)
                            .map(|k| k.describe())
                            .unwrap_or_default();
                        self.fail(
                            &path,
                            format!(
                                "writer union branch {i} ({wb}) cannot be read as {}",
                                rk.describe()
                            ),
                        );
                    }
                }
            }
            (K::Union(ru), _) => {
                if !ru
                    .variants()
                    .iter()
                    .any(|rb| self.quietly(rb, writer, &path))
                {
                    self.fail(
                        &path,
                        format!(
                            "no branch of the reader union can read writer type {}",
                            wk.describe()
                        ),
                    );
                }
            }
            (K::Null, K::Null) | (K::Boolean, K::Boolean) | (K::Int, K::Int) => {}
            (K::Long, K::Int | K::Long) => {}
            (K::Float, K::Int | K::Long | K::Float) => {}
            (K::Double, K::Int | K::Long | K::Float | K::Double) => {}
            (K::String | K::Bytes, K::String | K::Bytes) => {}
            (K::Fixed(r), K::Fixed(w)) => {
                if r.name.name() != w.name.name()
                    && !r
                        .aliases
                        .iter()
                        .flatten()
                        .any(|a| a.name() == w.name.name())
                {
                    self.fail(
                        &path,
                        format!(
                            "fixed name {} does not match writer's {}",
                            r.name.name(),
                            w.name.name()
                        ),
                    );
                } else if r.size != w.size {
                    self.fail(
                        &path,
                        format!("fixed size {} differs from writer's {}", r.size, w.size),
                    );
                }
            }
            (K::Enum(r), K::Enum(w)) => {
                if r.name.name() != w.name.name()
                    && !r
                        .aliases
                        .iter()
                        .flatten()
                        .any(|a| a.name() == w.name.name())
                {
                    self.fail(
                        &path,
                        format!(
                            "enum name {} does not match writer's {}",
                            r.name.name(),
                            w.name.name()
                        ),
                    );
                    return;
                }
                let missing: Vec<&str> = w
                    .symbols
                    .iter()
                    .filter(|s| !r.symbols.contains(s))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() && r.default.is_none() {
                    self.fail(
                        &path,
                        format!(
                            "enum {}: writer symbols {missing:?} are unknown to the reader, which has no default symbol",
                            r.name.name()
                        ),
                    );
                }
            }
            (K::Array(ri), K::Array(wi)) => self.check(ri, wi, format!("{path}/items")),
            (K::Map(rv), K::Map(wv)) => self.check(rv, wv, format!("{path}/values")),
            (K::Record(r), K::Record(w)) => {
                if !names_match(r, w) {
                    self.fail(
                        &path,
                        format!(
                            "record name {} does not match writer's {}",
                            r.name.name(),
                            w.name.name()
                        ),
                    );
                    return;
                }
                let key = (r as *const _ as usize, w as *const _ as usize);
                if !self.in_progress.insert(key) {
                    return;
                }
                let base = if path.is_empty() {
                    format!("/{}", r.name.name())
                } else {
                    path.clone()
                };
                for rf in &r.fields {
                    let wf = w
                        .fields
                        .iter()
                        .find(|wf| wf.name == rf.name || rf.aliases.contains(&wf.name));
                    let fpath = format!("{base}/{}", rf.name);
                    match wf {
                        Some(wf) => self.check(&rf.schema, &wf.schema, fpath),
                        None if rf.default.is_some() => {}
                        None => {
                            let ty = self
                                .rn
                                .kind(&rf.schema)
                                .map(|k| k.describe())
                                .unwrap_or_default();
                            self.fail(
                                &fpath,
                                format!(
                                    "reader field {} ({ty}) is missing from the writer and has no default",
                                    rf.name
                                ),
                            );
                        }
                    }
                }
                self.in_progress.remove(&key);
            }
            _ => self.fail(
                &path,
                format!(
                    "writer type {} cannot be read as {}",
                    wk.describe(),
                    rk.describe()
                ),
            ),
        }
    }
}
