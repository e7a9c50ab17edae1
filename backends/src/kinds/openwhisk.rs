//! `openwhisk`: Apache OpenWhisk and IBM Cloud Functions actions.
//!
//! - An action: `POST {endpoint}/api/v1/namespaces/{namespace}/actions/{action}?blocking=true&result=true`
//!   with basic auth (`api_key: uuid:key`); the client's JSON object is the
//!   action's parameters and the action's result is the answer. An
//!   application or action error (502 with `{"error": ...}`) is a 502
//!   naming it; an activation still running when the blocking call gives up
//!   (202 with an activation id) is a 504.
//! - A web action (`web: true`): `{endpoint}/api/v1/web/{namespace}/{package}/{action}{rest}`,
//!   raw HTTP both ways, no basic auth (`default` is the package of an
//!   action outside one).

use super::{map_http_failure, path_segment, MapErrors, Synth};
use crate::adapter::{base_header, internal, Call, Prepared};
use base64::Engine;
use http::header;
use pingora_http::ResponseHeader;
use skygate_config::{ApiError, Backend, ErrorKind, OpenwhiskConf, Operation};

#[derive(Debug)]
pub struct OpenwhiskAdapter {
    pub conf: OpenwhiskConf,
}

impl OpenwhiskAdapter {
    fn action_path(&self) -> String {
        self.conf
            .action
            .split('/')
            .map(path_segment)
            .collect::<Vec<_>>()
            .join("/")
    }

    pub fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        let ns = path_segment(&self.conf.namespace);
        let (method, path) = if self.conf.web {
            let action = if self.conf.action.contains('/') {
                self.action_path()
            } else {
                format!("default/{}", self.action_path())
            };
            let rest = match call.operation {
                Operation::Function => call.path_suffix.to_string(),
                op => op.upstream_suffix().to_string(),
            };
            let method = match call.operation {
                Operation::Function => call.method.clone(),
                _ => http::Method::POST,
            };
            (
                method,
                format!("{}/api/v1/web/{ns}/{action}{rest}", backend.url.base_path),
            )
        } else {
            if !call.body.trim_ascii_start().starts_with(b"{") {
                return Err(ApiError::new(
                    ErrorKind::InvalidRequest,
                    "an OpenWhisk action takes a JSON object as its parameters",
                ));
            }
            (
                http::Method::POST,
                format!(
                    "{}/api/v1/namespaces/{ns}/actions/{}?blocking=true&result=true",
                    backend.url.base_path,
                    self.action_path()
                ),
            )
        };
        let mut h = base_header(backend, &method, &path, call, call.body.len())?;
        if !self.conf.web {
            h.insert_header(header::CONTENT_TYPE, "application/json")
                .map_err(internal)?;
            if let Some(key) = &backend.api_key {
                let b64 = base64::engine::general_purpose::STANDARD.encode(key.expose());
                let mut v = http::HeaderValue::from_str(&format!("Basic {b64}"))
                    .map_err(|_| internal("the OpenWhisk key is not valid header text"))?;
                v.set_sensitive(true);
                h.insert_header(header::AUTHORIZATION, v)
                    .map_err(internal)?;
            }
        }
        Ok(Prepared {
            header: h,
            body: call.body.clone(),
            reply: Some(Box::new(MapErrors::new(&backend.name, call, map_failure))),
        })
    }
}

/// OpenWhisk's answers that are not the action's result.
fn map_failure(backend: &str, header: &ResponseHeader, body: &[u8]) -> Option<Synth> {
    let status = header.status.as_u16();
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match status {
        202 => {
            let id = v
                .get("activationId")
                .and_then(|i| i.as_str())
                .unwrap_or("?");
            Some(Synth::error(
                504,
                "upstream_error",
                "backend_timeout",
                &format!("backend `{backend}` (OpenWhisk): the action is still running (activation {id})"),
            ).conclusive())
        }
        // The activation's own error (`{"error": ...}`): final, like any
        // function's failure. Another 502 (an ingress's) is the platform's.
        502 if v.get("error").is_some() => {
            let error = match v.get("error") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "the action failed".into(),
            };
            Some(
                Synth::error(
                    502,
                    "function_error",
                    "action_error",
                    &format!(
                        "backend `{backend}` (OpenWhisk): the action failed: {}",
                        skygate_config::clip(&error)
                    ),
                )
                .conclusive(),
            )
        }
        _ => map_http_failure(backend, "OpenWhisk", header, body),
    }
}
