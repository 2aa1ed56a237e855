//! `${NAME}` and `${NAME:-default}` in topology files, replaced line by line so that line
//! numbers in errors still match the file the user edits.

/// Replaces every reference; `Err((line, name))` for a variable that is unset without default.
pub(crate) fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match (lookup(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err((n + 1, name.to_string())),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_with_env_or_default() {
        let env = |k: &str| (k == "SET").then(|| "v".to_string());
        assert_eq!(
            interpolate("a: ${SET}\nb: ${UNSET:-d}\n", &env).unwrap(),
            "a: v\nb: d\n"
        );
        assert_eq!(
            interpolate("x\ny: ${UNSET}\n", &env),
            Err((2, "UNSET".into()))
        );
    }
}
