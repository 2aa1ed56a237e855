//! Where each key of a YAML file sits, so that problems found after parsing can still name
//! a line. Handles the block mappings and one-line flow mappings that topology files use.

use std::collections::HashMap;

/// Dotted key path to (line, column), both 1-based.
#[derive(Debug, Default)]
pub(crate) struct LineIndex {
    keys: HashMap<String, (usize, usize)>,
    /// Scalar value text of block entries, e.g. `processing.commit_interval` -> `1s`.
    values: HashMap<String, String>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let mut keys = HashMap::new();
        let mut values = HashMap::new();
        let mut stack: Vec<(usize, String)> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = strip_comment(raw);
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('-') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            let Some((key, rest)) = split_key(trimmed) else {
                continue;
            };
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            let mut path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
            path.push(key);
            let dotted = path.join(".");
            keys.insert(dotted.clone(), (n + 1, indent + 1));
            let scalar = rest.trim().trim_matches(['"', '\'']);
            if !scalar.is_empty() && !scalar.starts_with(['{', '[']) {
                values.insert(dotted.clone(), scalar.to_string());
            }
            // One-line flow mapping: `name: { a: 1, b: 2 }`.
            if let Some(open) = rest.find('{') {
                let base = line.len() - rest.len() + open;
                for (off, inner) in flow_keys(&rest[open..]) {
                    keys.insert(format!("{dotted}.{inner}"), (n + 1, base + off + 1));
                }
            }
            stack.push((indent, key.to_string()));
        }
        LineIndex { keys, values }
    }

    /// The first key at or below `prefix` whose value text is `value`: (line, column, path).
    pub(crate) fn line_with_value(
        &self,
        prefix: &str,
        value: &str,
    ) -> Option<(usize, usize, String)> {
        let mut hits: Vec<_> = self
            .values
            .iter()
            .filter(|(k, v)| {
                v.as_str() == value && (prefix.is_empty() || k.starts_with(&format!("{prefix}.")))
            })
            .filter_map(|(k, _)| self.keys.get(k).map(|(l, c)| (*l, *c, k.clone())))
            .collect();
        hits.sort();
        hits.into_iter().next()
    }

    /// The position of `path`, or of its nearest ancestor that is in the file.
    pub(crate) fn find(&self, path: &str) -> (usize, usize) {
        let mut p = path;
        loop {
            if let Some(pos) = self.keys.get(p) {
                return *pos;
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => return (0, 0),
            }
        }
    }
}

fn strip_comment(line: &str) -> &str {
    let mut in_single = false;
    let mut in_double = false;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' if !in_double => in_single = !in_single,
            b'"' if !in_single => in_double = !in_double,
            b'#' if !in_single && !in_double && (i == 0 || bytes[i - 1].is_ascii_whitespace()) => {
                return &line[..i];
            }
            _ => {}
        }
    }
    line
}

/// `key: rest` (key may be quoted); None when the line is not a mapping entry.
fn split_key(s: &str) -> Option<(&str, &str)> {
    let (key, rest) = if let Some(q) = s.strip_prefix('"') {
        let end = q.find('"')?;
        (&q[..end], q[end + 1..].strip_prefix(':')?)
    } else {
        let colon = s
            .find(": ")
            .or_else(|| s.strip_suffix(':').map(|k| k.len()))?;
        (&s[..colon], &s[colon + 1..])
    };
    if key.is_empty() || key.contains(['{', '[', ',']) {
        return None;
    }
    Some((key.trim(), rest))
}

/// Keys of the first level of a flow mapping, with their byte offsets.
fn flow_keys(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = None;
    for (i, c) in s.char_indices() {
        match c {
            '{' | '[' => {
                depth += 1;
                if depth == 1 {
                    start = Some(i + 1);
                }
            }
            '}' | ']' => depth = depth.saturating_sub(1),
            ',' if depth == 1 => start = Some(i + 1),
            ':' if depth == 1 => {
                if let Some(st) = start.take() {
                    let key = s[st..i].trim();
                    let lead = s[st..i].len() - s[st..i].trim_start().len();
                    if !key.is_empty() {
                        out.push((st + lead, key));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_block_and_flow_keys() {
        let text =
            "a:\n  b: 1 # c: no\n  c:\n    d: x\ntopics:\n  t1: { partitions: 4, subject: s }\n";
        let idx = LineIndex::new(text);
        assert_eq!(idx.find("a.b"), (2, 3));
        assert_eq!(idx.find("a.c.d"), (4, 5));
        assert_eq!(idx.find("topics.t1.subject").0, 6);
        assert_eq!(idx.find("topics.t1.partitions").0, 6);
        assert_eq!(idx.find("a.c.missing"), (3, 3));
        assert_eq!(idx.find("nothing"), (0, 0));
    }
}
