//! `LIKE` / `ILIKE` patterns, compiled once: `%` any run of characters, `_` one character,
//! an escape character (backslash unless `ESCAPE` says otherwise) makes the next one literal.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    One,
    Many,
}

#[derive(Debug, Clone, PartialEq)]
enum Shape {
    /// No wildcard.
    Exact(String),
    /// `abc%`
    Prefix(String),
    /// `%abc`
    Suffix(String),
    /// `%abc%`
    Contains(String),
    /// Anything else, or case-insensitive.
    General,
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LikePattern {
    toks: Vec<Tok>,
    shape: Shape,
    case_insensitive: bool,
}

impl LikePattern {
    /// Compiles `pattern`; errs (with the reason) if it ends with the escape character.
    pub(crate) fn new(
        pattern: &str,
        escape: Option<char>,
        case_insensitive: bool,
    ) -> Result<Self, String> {
        let mut toks = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if Some(c) == escape {
                match chars.next() {
                    Some(next) => toks.push(Tok::Lit(next)),
                    None => {
                        return Err(format!("the pattern ends with the escape character `{c}`"))
                    }
                }
            } else if c == '%' {
                if toks.last() != Some(&Tok::Many) {
                    toks.push(Tok::Many);
                }
            } else if c == '_' {
                toks.push(Tok::One);
            } else {
                toks.push(Tok::Lit(c));
            }
        }
        let shape = if case_insensitive {
            Shape::General
        } else {
            Self::shape(&toks)
        };
        Ok(LikePattern {
            toks,
            shape,
            case_insensitive,
        })
    }

    fn shape(toks: &[Tok]) -> Shape {
        let lits = |t: &[Tok]| -> Option<String> {
            t.iter()
                .map(|t| match t {
                    Tok::Lit(c) => Some(*c),
                    _ => None,
                })
                .collect()
        };
        let n = toks.len();
        let starts = toks.first() == Some(&Tok::Many);
        let ends = n > 1 && toks.last() == Some(&Tok::Many);
        let inner = &toks[usize::from(starts)..n - usize::from(ends)];
        match (starts, ends, lits(inner)) {
            (false, false, Some(s)) => Shape::Exact(s),
            (false, true, Some(s)) => Shape::Prefix(s),
            (true, false, Some(s)) => Shape::Suffix(s),
            (true, true, Some(s)) => Shape::Contains(s),
            _ => Shape::General,
        }
    }

    pub(crate) fn matches(&self, s: &str) -> bool {
        match &self.shape {
            Shape::Exact(p) => s == p,
            Shape::Prefix(p) => s.starts_with(p.as_str()),
            Shape::Suffix(p) => s.ends_with(p.as_str()),
            Shape::Contains(p) => s.contains(p.as_str()),
            Shape::General => self.general(s),
        }
    }

    fn eq(&self, a: char, b: char) -> bool {
        a == b || (self.case_insensitive && a.to_lowercase().eq(b.to_lowercase()))
    }

    /// Wildcard matching with backtracking to the last `%` (linear space, O(n·m) time).
    fn general(&self, s: &str) -> bool {
        let toks = &self.toks;
        let (mut ti, mut si) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        loop {
            let next = s[si..].chars().next();
            let advanced = match (toks.get(ti), next) {
                (Some(Tok::Many), _) => {
                    star = Some((ti + 1, si));
                    ti += 1;
                    continue;
                }
                (Some(Tok::One), Some(c)) => Some(c),
                (Some(Tok::Lit(p)), Some(c)) if self.eq(c, *p) => Some(c),
                (None, None) => return true,
                _ => None,
            };
            if let Some(c) = advanced {
                ti += 1;
                si += c.len_utf8();
                continue;
            }
            match star {
                Some((st, ss)) => match s[ss..].chars().next() {
                    Some(c) => {
                        let ss = ss + c.len_utf8();
                        star = Some((st, ss));
                        ti = st;
                        si = ss;
                    }
                    None => return false,
                },
                None => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(p: &str, s: &str) -> bool {
        LikePattern::new(p, Some('\\'), false).unwrap().matches(s)
    }

    #[test]
    fn wildcards() {
        assert!(like("pm-%", "pm-17") && !like("pm-%", "xpm-17"));
        assert!(like("%-17", "pm-17") && like("%m-1%", "pm-17") && like("pm-17", "pm-17"));
        assert!(like("p_-1_", "pm-17") && !like("p_-1_", "pm-1"));
        assert!(like("%", "") && like("%%", "x") && !like("_", ""));
        assert!(like("a%b%c", "a__b__c") && !like("a%b%c", "a__c__b"));
        assert!(like("%aab", "aaab") && like("%a_b%", "xxaybzz"));
        assert!(like("é_", "éü"), "characters, not bytes");
        assert!(like("100\\%", "100%") && !like("100\\%", "1000"));
        assert!(like("a\\_b", "a_b") && !like("a\\_b", "axb"));
        let p = LikePattern::new("a!%", Some('!'), false).unwrap();
        assert!(p.matches("a%") && !p.matches("ab"));
        assert!(LikePattern::new("a\\", Some('\\'), false).is_err());
        let i = LikePattern::new("PM-%", Some('\\'), true).unwrap();
        assert!(i.matches("pm-3") && !i.matches("px-3"));
    }
}
