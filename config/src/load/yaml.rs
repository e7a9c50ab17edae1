//! YAML text → [`RawConfig`]: parsed to a value, `${NAME}` substituted, then
//! each top-level section and each named entry deserialized on its own, so
//! one bad entry does not hide the errors of the next.

use super::{key, path_of, Cx};
use crate::error::ConfigError;
use crate::locate::Seg;
use crate::raw::{RawConfig, TOP_LEVEL_KEYS};
use serde::de::DeserializeOwned;
use serde_norway::Value;
use std::collections::BTreeMap;

impl Cx<'_> {
    pub(super) fn parse(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Option<RawConfig> {
        let mut root: Value = match serde_norway::from_str(self.text) {
            Ok(v) => v,
            Err(e) => {
                self.errors.push(ConfigError {
                    file: self.file.to_string(),
                    line: e.location().map(|l| l.line()),
                    path: String::new(),
                    message: format!("not valid YAML: {e}"),
                });
                return None;
            }
        };
        self.substitute_env(&mut root, &mut Vec::new(), env);
        let Value::Mapping(top) = root else {
            self.err(&[], "the file must be a YAML mapping (top-level keys like `listen:`, `backends:`, `routes:`)");
            return None;
        };
        let mut raw = RawConfig::default();
        for (k, v) in top {
            let Some(k) = k.as_str().map(str::to_string) else {
                self.err(&[], "top-level keys must be strings");
                continue;
            };
            let p = vec![key(&k)];
            match k.as_str() {
                "listen" => raw.listen = self.de(v, &p),
                "server" => raw.server = self.de(v, &p),
                "admin" => raw.admin = self.de(v, &p),
                "auth" => raw.auth = self.de(v, &p),
                "policy" => raw.policy = self.de(v, &p),
                "state" => raw.state = self.de(v, &p),
                "cache" => raw.cache = self.de(v, &p),
                "telemetry" => raw.telemetry = self.de(v, &p),
                "limits" => {
                    if let serde_norway::Value::Sequence(items) = v {
                        for (i, item) in items.into_iter().enumerate() {
                            let ip = path_of(&p, &[Seg::Index(i)]);
                            // A failed entry stays as `None`, so later indices stay right.
                            raw.limits.push(self.de(item, &ip));
                        }
                    } else {
                        self.err(&p, "expected a list of limits");
                    }
                }
                "backends" => {
                    if let Value::Mapping(m) = &v {
                        raw.backend_names = m
                            .keys()
                            .filter_map(|k| k.as_str().map(str::to_string))
                            .collect();
                    }
                    raw.backends = self.named_map(v, &p)
                }
                "routes" => {
                    if let Value::Mapping(m) = &v {
                        raw.route_names = m
                            .keys()
                            .filter_map(|k| k.as_str().map(str::to_string))
                            .collect();
                    }
                    raw.routes = self.named_map(v, &p)
                }
                other => self.err(
                    &p,
                    format!(
                        "unknown field `{other}`, expected one of: {}",
                        TOP_LEVEL_KEYS.join(", ")
                    ),
                ),
            }
        }
        Some(raw)
    }

    /// A map of named entries, each deserialized on its own.
    fn named_map<T: DeserializeOwned>(&mut self, v: Value, p: &[Seg]) -> BTreeMap<String, T> {
        let mut out = BTreeMap::new();
        let Value::Mapping(m) = v else {
            self.err(p, "expected a mapping of names to entries");
            return out;
        };
        for (k, v) in m {
            let Some(name) = k.as_str().map(str::to_string) else {
                self.err(p, "entry names must be strings");
                continue;
            };
            if let Some(t) = self.de(v, &path_of(p, &[key(&name)])) {
                out.insert(name, t);
            }
        }
        out
    }

    fn de<T: DeserializeOwned>(&mut self, v: Value, p: &[Seg]) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(v) {
            Ok(t) => Some(t),
            Err(e) => {
                let mut path = p.to_vec();
                for seg in e.path().iter() {
                    match seg {
                        serde_path_to_error::Segment::Seq { index } => {
                            path.push(Seg::Index(*index))
                        }
                        serde_path_to_error::Segment::Map { key: k } => path.push(key(k)),
                        serde_path_to_error::Segment::Enum { variant } => path.push(key(variant)),
                        serde_path_to_error::Segment::Unknown => {}
                    }
                }
                self.err(&path, e.inner().to_string());
                None
            }
        }
    }
}
