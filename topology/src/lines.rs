//! Where each key of a YAML file sits, so that problems found after parsing can still name
//! a line. Handles the block mappings and one-line flow mappings that topology files use.

use std::collections::HashMap;

/// Dotted key path to (line, column), both 1-based. `Debug` shows the keys only: the values
/// may hold secrets interpolated from the environment.
#[derive(Default)]
pub(crate) struct LineIndex {
    keys: HashMap<String, (usize, usize)>,
    /// Scalar value text of block entries, e.g. `processing.commit_interval` -> `1s`.
    values: HashMap<String, String>,
}

impl std::fmt::Debug for LineIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineIndex")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let mut keys = HashMap::new();
        let mut values = HashMap::new();
        // (indent, path segment); a sequence item's segment is `[n]`.
        let mut stack: Vec<(usize, String)> = Vec::new();
        // Items seen so far under each sequence's dotted path.
        let mut items: HashMap<String, usize> = HashMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line = strip_comment(raw);
            let trimmed = line.trim_start();
            if trimmed.is_empty() {
                continue;
            }
            let mut indent = line.len() - trimmed.len();
            let mut entry = trimmed;
            if let Some(rest) = trimmed
                .strip_prefix('-')
                .filter(|r| r.is_empty() || r.starts_with(' '))
            {
                // A block sequence item, under the nearest key indented less (or equally:
                // `key:` followed by `- item` at the key's own indent).
                while stack
                    .last()
                    .is_some_and(|(i, seg)| *i > indent || (*i == indent && seg.starts_with('[')))
                {
                    stack.pop();
                }
                let parent = dotted(&stack);
                let slot = items.entry(parent.clone()).or_insert(0);
                let seg = format!("[{slot}]");
                *slot += 1;
                keys.insert(join(&parent, &seg), (n + 1, indent + 1));
                stack.push((indent, seg));
                let item = rest.trim_start();
                if item.is_empty() {
                    continue;
                }
                indent += trimmed.len() - item.len();
                entry = item;
            }
            let Some((key, rest)) = split_key(entry) else {
                continue;
            };
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            let dotted = join(&dotted(&stack), key);
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
            // Up one level: `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a`.
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return (0, 0),
            }
        }
    }
}

/// The dotted path of a stack of segments; items (`[n]`) attach without a dot.
fn dotted(stack: &[(usize, String)]) -> String {
    stack
        .iter()
        .fold(String::new(), |acc, (_, seg)| join(&acc, seg))
}

fn join(parent: &str, seg: &str) -> String {
    if parent.is_empty() {
        seg.to_string()
    } else if seg.starts_with('[') {
        format!("{parent}{seg}")
    } else {
        format!("{parent}.{seg}")
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

    #[test]
    fn finds_sequence_items_and_their_keys() {
        let text = "stages:\n  s:\n    operators:\n      - filter: \"a > 1\"\n      - select:\n          x: a\n          y: b\n      -\n        window: {kind: tumbling}\n    output: o\n  t:\n    by:\n    - a\n    - b\n";
        let idx = LineIndex::new(text);
        assert_eq!(idx.find("stages.s.operators[0]"), (4, 7));
        assert_eq!(idx.find("stages.s.operators[0].filter"), (4, 9));
        assert_eq!(idx.find("stages.s.operators[1].select.y"), (7, 11));
        assert_eq!(idx.find("stages.s.operators[2].window.kind").0, 9);
        assert_eq!(idx.find("stages.s.operators[1].select.y.nested"), (7, 11));
        assert_eq!(idx.find("stages.s.operators[1].missing"), (5, 7));
        assert_eq!(idx.find("stages.s.output"), (10, 5));
        assert_eq!(idx.find("stages.t.by[1]"), (14, 5));
    }
}
