//! A mistake in an operator's settings, found offline.

/// One problem, located by a key path relative to the operator (e.g. `where`, `by[1]`,
/// `aggregate.p95.field`); the topology loader adds the file, line and the path of the
/// operator itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key inside the operator's spec; empty for the operator as a whole.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }

    /// The same problem under `prefix` (e.g. the operator's own key path).
    pub fn under(mut self, prefix: &str) -> Self {
        self.key = match (prefix.is_empty(), self.key.is_empty()) {
            (true, _) => self.key,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{}", self.key),
        };
        self
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.key.is_empty() {
            write!(f, "key `{}`: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, " (fix: {})", self.fix)?;
        }
        Ok(())
    }
}
