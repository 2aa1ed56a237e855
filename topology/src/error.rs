//! Errors a topology file can have, each naming the file, line, key and the fix.

use std::fmt;
use std::path::PathBuf;

/// One problem found in a topology file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// 1-based line; 0 when the problem is about the file as a whole.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
    /// Dotted path of the key, e.g. `stages.aggregate.windows`.
    pub key: String,
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

/// Everything that can go wrong loading a topology.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(
        "cannot read topology file {path}: {source}. Check the path; topologies live in topology/."
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    #[error("environment variable {name} referenced at {path}:{line} is not set and has no default; set it or write ${{{name}:-default}}")]
    MissingEnv {
        path: PathBuf,
        line: usize,
        name: String,
    },
}

impl TopologyError {
    /// The problems found, empty for I/O errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            TopologyError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

fn render(path: &std::path::Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    let n = problems.len();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&p.render(path));
    }
    if n > 1 {
        out.push_str(&format!("\n{n} problems in {}", path.display()));
    }
    out
}

impl Problem {
    pub(crate) fn new(
        line: usize,
        column: usize,
        key: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Problem {
            line,
            column,
            key: key.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }

    /// `file:line:col: key: message` followed by an indented `fix:` line.
    pub fn render(&self, path: &std::path::Path) -> String {
        let mut s = format!("{}", path.display());
        if self.line > 0 {
            s.push_str(&format!(":{}", self.line));
            if self.column > 0 {
                s.push_str(&format!(":{}", self.column));
            }
        }
        s.push_str(": ");
        if !self.key.is_empty() {
            s.push_str(&format!("key `{}`: ", self.key));
        }
        s.push_str(&self.message);
        if !self.fix.is_empty() {
            s.push_str(&format!("\n    fix: {}", self.fix));
        }
        s
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.render(std::path::Path::new("<topology>")))
    }
}

/// The allowed name closest to `got`, if it is close enough to be a typo.
pub(crate) fn closest<'a>(
    got: &str,
    allowed: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    allowed
        .into_iter()
        .map(|a| (levenshtein(got, a), a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        assert_eq!(closest("windwos", ["windows", "grace"]), Some("windows"));
        assert_eq!(closest("colour", ["windows", "grace"]), None);
    }
}
