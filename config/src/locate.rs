//! Finds the line of a field path in YAML text, so that errors found after
//! parsing (where positions are gone) still point at a line.
//!
//! It understands block mappings and block sequences; inside a flow collection
//! (`{ a: 1 }` / `[ ... ]`) it answers the line the collection starts on. When a
//! path cannot be followed to its end it answers the deepest line it reached.

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Renders a path as `a.b[0].c`.
pub fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

struct Line<'a> {
    no: usize,
    indent: usize,
    /// `-` for a sequence item's dash, else the line's text from its first character.
    text: &'a str,
}

/// The lines that carry YAML, with each `- key: v` split into a dash line and a
/// key line two columns deeper, so sequences and mappings nest the same way.
fn significant_lines(text: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let mut rest = raw.trim_start();
        let mut indent = raw.len() - rest.len();
        if rest.is_empty() || rest.starts_with('#') || rest.starts_with("---") {
            continue;
        }
        while let Some(after) = rest
            .strip_prefix('-')
            .filter(|a| a.is_empty() || a.starts_with(' '))
        {
            out.push(Line {
                no: i + 1,
                indent,
                text: "-",
            });
            let trimmed = after.trim_start();
            indent += 1 + after.len() - trimmed.len();
            rest = trimmed;
        }
        if !rest.is_empty() {
            out.push(Line {
                no: i + 1,
                indent,
                text: rest,
            });
        }
    }
    out
}

fn key_of(text: &str) -> Option<&str> {
    if text.starts_with('{') || text.starts_with('[') {
        return None;
    }
    let (k, _) = text.split_once(':')?;
    let k = k.trim().trim_matches('"').trim_matches('\'');
    (!k.is_empty()).then_some(k)
}

/// The 1-based line of `path` in `text`, or of its deepest ancestor found.
pub fn line_of(text: &str, path: &[Seg]) -> Option<usize> {
    let lines = significant_lines(text);
    let (mut lo, mut hi) = (0usize, lines.len());
    let mut found: Option<usize> = None;
    for seg in path {
        let Some(child_indent) = lines[lo..hi].iter().map(|l| l.indent).min() else {
            return found;
        };
        let mut count = 0;
        let hit = (lo..hi).find(|&idx| {
            let l = &lines[idx];
            if l.indent != child_indent {
                return false;
            }
            match seg {
                Seg::Key(key) => key_of(l.text) == Some(key.as_str()),
                Seg::Index(n) => {
                    if l.text != "-" {
                        return false;
                    }
                    count += 1;
                    count - 1 == *n
                }
            }
        });
        let Some(idx) = hit else {
            return found;
        };
        found = Some(lines[idx].no);
        let mut end = idx + 1;
        while end < hi && lines[end].indent > lines[idx].indent {
            end += 1;
        }
        lo = idx + 1;
        hi = end;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<Seg> {
        s.split('.')
            .flat_map(|part| {
                let mut v = Vec::new();
                let (k, rest) = part.split_once('[').unwrap_or((part, ""));
                if !k.is_empty() {
                    v.push(Seg::Key(k.to_string()));
                }
                if !rest.is_empty() {
                    v.push(Seg::Index(rest.trim_end_matches(']').parse().unwrap()));
                }
                v
            })
            .collect()
    }

    const Y: &str = "\
# comment
listen: 127.0.0.1:8080
admin: { listen: 127.0.0.1:9090 }
backends:
  a:
    kind: openai
    url: http://x
  b:
    kind: nope
routes:
  chat:
    match:
      path: /v1/chat/completions
    targets:
      - backend: a
        weight: 3
      - { backend: zz }
";

    #[test]
    fn finds_block_keys() {
        assert_eq!(line_of(Y, &p("listen")), Some(2));
        assert_eq!(line_of(Y, &p("backends.b.kind")), Some(9));
        assert_eq!(line_of(Y, &p("backends.a.url")), Some(7));
        assert_eq!(line_of(Y, &p("routes.chat.match.path")), Some(13));
    }

    #[test]
    fn finds_sequence_items_and_their_keys() {
        assert_eq!(line_of(Y, &p("routes.chat.targets[0]")), Some(15));
        assert_eq!(line_of(Y, &p("routes.chat.targets[0].weight")), Some(16));
        assert_eq!(line_of(Y, &p("routes.chat.targets[1].backend")), Some(17));
    }

    #[test]
    fn flow_mappings_answer_their_line() {
        assert_eq!(line_of(Y, &p("admin.listen")), Some(3));
    }

    #[test]
    fn missing_leaf_answers_deepest_ancestor() {
        assert_eq!(line_of(Y, &p("backends.a.timeouts")), Some(5));
        assert_eq!(
            render(&p("routes.chat.targets[1].backend")),
            "routes.chat.targets[1].backend"
        );
    }
}
