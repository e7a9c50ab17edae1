//! The config file's JSON Schema (`skygate schema`), derived from the raw
//! serde types so it cannot drift from what the loader accepts: the same
//! fields, `deny_unknown_fields` as `additionalProperties: false`, doc
//! comments as descriptions. Editors use it to validate and complete
//! `skygate.yaml`; the loader stays the authority (cross-field rules, files
//! on disk, durations' ranges live there, not in the schema).

use crate::raw::{
    RawAdmin, RawAuth, RawBackend, RawCache, RawPolicy, RawRateLimit, RawRoute, RawServer,
    RawState, RawTelemetry,
};
use crate::runtime::{BackendKind, PrewarmMode};
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The whole file, for the schema only: the loader reads the top level key
/// by key (so one bad section does not hide the others' errors), and a test
/// keeps these fields equal to [`TOP_LEVEL_KEYS`].
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "Skygate config",
    description = "skygate.yaml: see config/README.md"
)]
#[allow(dead_code)]
struct SkygateConfig {
    /// The proxy listener, `IP:PORT`, e.g. 127.0.0.1:8080.
    listen: String,
    server: Option<RawServer>,
    admin: RawAdmin,
    auth: Option<RawAuth>,
    /// Where requests go, by name.
    backends: Option<BTreeMap<String, RawBackend>>,
    /// Which requests go where, by name.
    routes: BTreeMap<String, RawRoute>,
    policy: Option<RawPolicy>,
    state: Option<RawState>,
    /// Rate limits across routes (a route's own are `routes.NAME.limits`).
    limits: Option<Vec<RawRateLimit>>,
    cache: Option<RawCache>,
    telemetry: Option<RawTelemetry>,
}

/// The JSON Schema (draft 07, which every YAML language server reads).
pub fn json_schema() -> Value {
    let schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<SkygateConfig>();
    let mut v = schema.to_value();
    // Where a field is a string the loader checks against a closed list,
    // the list comes from the runtime type, so completion offers it.
    let kinds: Vec<&str> = BackendKind::ALL.iter().map(|k| k.as_str()).collect();
    set_enum(&mut v, "RawBackend", "kind", &kinds);
    let modes: Vec<&str> = PrewarmMode::ALL.iter().map(|m| m.as_str()).collect();
    set_enum(&mut v, "RawPrewarm", "mode", &modes);
    // serde aliases the loader accepts (schemars leaves them out).
    alias(&mut v, "RawLimits", "max_in_flight", "max_inflight");
    v
}

fn alias(schema: &mut Value, def: &str, field: &str, alias: &str) {
    let Some(props) = schema
        .pointer_mut(&format!("/definitions/{def}/properties"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if let Some(p) = props.get(field).cloned() {
        let mut p = p;
        if let Some(o) = p.as_object_mut() {
            o.insert(
                "description".into(),
                json!(format!("The same as `{field}` (an older name).")),
            );
        }
        props.insert(alias.into(), p);
    }
}

fn set_enum(schema: &mut Value, def: &str, field: &str, values: &[&str]) {
    if let Some(p) = schema.pointer_mut(&format!("/definitions/{def}/properties/{field}")) {
        let mut allowed: Vec<Value> = values.iter().map(|s| json!(s)).collect();
        if p.get("type").is_some_and(|t| t.is_array()) {
            allowed.push(Value::Null);
        }
        if let Some(o) = p.as_object_mut() {
            o.insert("enum".into(), Value::Array(allowed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::TOP_LEVEL_KEYS;

    #[test]
    fn top_level_properties_are_the_loaders_keys() {
        let v = json_schema();
        let mut props: Vec<&str> = v["properties"]
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        props.sort_unstable();
        let mut keys = TOP_LEVEL_KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(props, keys);
        assert_eq!(v["additionalProperties"], json!(false));
    }

    #[test]
    fn closed_lists_come_from_the_runtime_types() {
        let v = json_schema();
        let kinds = &v["definitions"]["RawBackend"]["properties"]["kind"]["enum"];
        assert!(kinds
            .as_array()
            .is_some_and(|k| k.contains(&json!("gcp_cloud_run")) && k.len() == 10));
        let modes = &v["definitions"]["RawPrewarm"]["properties"]["mode"]["enum"];
        assert!(modes
            .as_array()
            .is_some_and(|m| m.contains(&json!("adaptive"))));
        assert!(v["definitions"]["RawLimits"]["properties"]["max_inflight"].is_object());
        // Every nested section denies unknown fields, as the loader does.
        assert_eq!(
            v["definitions"]["RawBackend"]["additionalProperties"],
            json!(false)
        );
    }
}
