//! `${NAME}` substitution on parsed string scalars (never on the text, so a
//! secret holding `:` or `#` cannot break the YAML, and lines stay right).

use super::{key, Cx};
use crate::locate::{render, Seg};
use serde_norway::Value;

impl Cx<'_> {
    /// Expands `${NAME}` in every string of `v`. A field whose variable is
    /// missing is reported once, here; later checks of the same field (say,
    /// a URL that no longer parses) stay quiet.
    pub(super) fn substitute_env(
        &mut self,
        v: &mut Value,
        path: &mut Vec<Seg>,
        env: &dyn Fn(&str) -> Option<String>,
    ) {
        match v {
            Value::String(s) if s.contains('$') => match expand(s, env) {
                Ok(expanded) => *s = expanded,
                Err(msg) => {
                    self.err(path, msg);
                    self.quiet.push(render(path));
                }
            },
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    path.push(Seg::Index(i));
                    self.substitute_env(item, path, env);
                    path.pop();
                }
            }
            Value::Mapping(m) => {
                for (k, item) in m.iter_mut() {
                    path.push(key(k.as_str().unwrap_or("?")));
                    self.substitute_env(item, path, env);
                    path.pop();
                }
            }
            Value::Tagged(t) => self.substitute_env(&mut t.value, path, env),
            _ => {}
        }
    }
}

/// Expands `${VAR}` (and `$${` to a literal `${`).
pub(super) fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(r) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = r;
        } else if let Some(r) = after.strip_prefix("${") {
            let Some(end) = r.find('}') else {
                return Err("unclosed `${`: write `${NAME}`, or `$${` for a literal `${`".into());
            };
            let name = &r[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{name}}}` is not a variable name: use letters, digits and `_`"
                ));
            }
            match env(name) {
                Some(v) => out.push_str(&v),
                None => return Err(format!("environment variable `{name}` is not set")),
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_str;

    fn env(name: &str) -> Option<String> {
        (name == "KEY").then(|| "sk-from-env-123".to_string())
    }

    #[test]
    fn expands_and_escapes() {
        assert_eq!(expand("a${KEY}b", &env).unwrap(), "ask-from-env-123b");
        assert_eq!(expand("$${KEY} $5", &env).unwrap(), "${KEY} $5");
        assert!(expand("${KEY", &env).is_err());
    }

    #[test]
    fn missing_env_var_is_named() {
        let y = "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2, token: \"${NOPE_X}\" }\nroutes: {}\n";
        let errs = load_str(y, "e.yaml", &env).unwrap_err();
        assert!(
            errs.to_string()
                .contains("e.yaml:2: admin.token: environment variable `NOPE_X` is not set"),
            "{errs}"
        );
    }

    #[test]
    fn a_missing_variable_in_a_url_is_reported_once() {
        let y = "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nbackends:\n  a: { kind: openai, url: \"${NOPE_URL}/v1\" }\nroutes:\n  r: { match: { path: /v1/embeddings, models: [e] }, targets: [ { backend: a } ] }\n";
        let errs = load_str(y, "u.yaml", &env).unwrap_err();
        assert_eq!(errs.0.len(), 1, "{errs}");
        assert!(
            errs.to_string()
                .contains("backends.a.url: environment variable `NOPE_URL` is not set"),
            "{errs}"
        );
    }
}
