//! `policy:`: who may call what, as Cedar policies (evaluated by the policy
//! plugin; parsed and validated against the schema by `validate`, `run` and
//! reloads).

use crate::load::{key, path_of, Cx};
use crate::locate::Seg;
use crate::runtime::{AuditLog, Policy, PolicyFile, PolicyMode};
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Policy files; `*` in a file name matches (e.g. `policies/*.cedar`).
    pub files: Vec<String>,
    /// A Cedar schema (default: Skygate's built-in one).
    pub schema: Option<String>,
    /// `enforce` (default) or `shadow` (log and count would-be denials).
    pub mode: Option<String>,
    /// `stderr` (default), `off`, or a file path.
    pub audit_log: Option<String>,
}

/// The largest policy or schema file read.
const MAX_FILE: u64 = 4 << 20;

impl Cx<'_> {
    pub(crate) fn policy(&mut self, r: RawPolicy) -> Option<Policy> {
        let p = [key("policy")];
        let at = |k: &str| path_of(&p, &[key(k)]);
        let before = self.error_count();
        let mut files = Vec::new();
        let patterns: Vec<PathBuf> = r.files.iter().map(|f| self.base.join(f)).collect();
        if r.files.is_empty() {
            self.err(
                &at("files"),
                "list at least one policy file (deny by default: no policy denies everything)",
            );
        }
        for (i, pattern) in r.files.iter().enumerate() {
            let fp = path_of(&p, &[key("files"), Seg::Index(i)]);
            match expand_files(&self.base.join(pattern)) {
                Ok(paths) if paths.is_empty() => {
                    self.err(&fp, format!("`{pattern}` matches no file"));
                }
                Ok(paths) => {
                    for path in paths {
                        match read(&path) {
                            Ok(text) => files.push(PolicyFile { path, text }),
                            Err(e) => self.err(&fp, format!("`{}`: {e}", path.display())),
                        }
                    }
                }
                Err(e) => self.err(&fp, format!("`{pattern}`: {e}")),
            }
        }
        let schema = r.schema.and_then(|s| {
            let path = self.base.join(&s);
            read(&path)
                .map(|text| PolicyFile { path, text })
                .inspect_err(|e| self.err(&at("schema"), format!("`{s}`: {e}")))
                .ok()
        });
        let mode = match r.mode.as_deref() {
            None | Some("enforce") => PolicyMode::Enforce,
            Some("shadow") => PolicyMode::Shadow,
            Some(other) => {
                self.err(
                    &at("mode"),
                    format!("`{other}` is not a mode: use enforce or shadow"),
                );
                PolicyMode::Enforce
            }
        };
        let audit_log = match r.audit_log.as_deref() {
            None | Some("stderr") => AuditLog::Stderr,
            Some("off") => AuditLog::Off,
            Some(f) => AuditLog::File(self.base.join(f)),
        };
        (self.error_count() == before).then_some(Policy {
            files,
            patterns,
            schema,
            mode,
            audit_log,
        })
    }
}

fn read(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    if !f.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("not a regular file".into());
    }
    let mut text = String::new();
    f.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if text.len() as u64 > MAX_FILE {
        return Err("larger than 4 MiB".into());
    }
    Ok(text)
}

/// A path, or the files a `*` in its file name matches (sorted).
pub fn expand_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some((prefix, suffix)) = name.split_once('*') else {
        return Ok(vec![path.to_path_buf()]);
    };
    if suffix.contains('*') {
        return Err("one `*` at most, in the file name".into());
    }
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.len() >= prefix.len() + suffix.len()
                    && n.starts_with(prefix)
                    && n.ends_with(suffix)
            })
        })
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::load_str_in;

    #[test]
    fn files_globs_modes_and_errors() {
        let dir = std::env::temp_dir().join(format!("skygate-policy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.cedar"), "permit(principal, action, resource);").unwrap();
        std::fs::write(dir.join("b.cedar"), "forbid(principal, action, resource);").unwrap();
        std::fs::write(dir.join("c.txt"), "nope").unwrap();
        let base = "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nbackends:\n  a: { kind: openai, url: http://a/v1 }\nroutes:\n  r: { match: { path: /v1/embeddings, models: [e] }, targets: [ { backend: a } ] }\n";
        let c = load_str_in(
            &format!("{base}policy: {{ files: [\"*.cedar\"], mode: shadow, audit_log: off }}\n"),
            "p.yaml",
            &|_| None,
            &dir,
        )
        .unwrap();
        let p = c.policy.unwrap();
        assert_eq!(p.files.len(), 2);
        assert!(p.files[0].path.ends_with("a.cedar"));
        assert_eq!(p.mode, crate::PolicyMode::Shadow);
        let errs = load_str_in(
            &format!("{base}policy: {{ files: [\"*.nothing\", missing.cedar], mode: strict }}\n"),
            "p.yaml",
            &|_| None,
            &dir,
        )
        .unwrap_err()
        .to_string();
        assert!(
            errs.contains("policy.files[0]: `*.nothing` matches no file"),
            "{errs}"
        );
        assert!(errs.contains("policy.files[1]: `"), "{errs}");
        assert!(
            errs.contains("policy.mode: `strict` is not a mode"),
            "{errs}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
