//! `telemetry:`: traces over OTLP (gRPC or HTTP/protobuf), their sampling,
//! and whether a client's W3C `traceparent` is continued.

use crate::load::{key, path_of, Cx};
use crate::raw::Text;
use crate::runtime::{Otlp, OtlpProtocol, Telemetry};
use crate::Secret;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `telemetry:`.
#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// Where traces go; without it no span is made.
    pub otlp: Option<RawOtlp>,
    /// The share of traces started here that are recorded, 0 to 1 (default
    /// 1). A client's sampled flag decides for traces it started.
    pub sampling_ratio: Option<f64>,
    /// Continue a client's W3C `traceparent` (default true); `false` starts
    /// a new trace for every request.
    pub continue_client_trace: Option<bool>,
}

/// `telemetry.otlp`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOtlp {
    /// The collector, e.g. `http://collector:4318` (HTTP) or
    /// `http://collector:4317` (gRPC). HTTP posts to `{endpoint}/v1/traces`.
    pub endpoint: String,
    /// `http` (HTTP/protobuf, default) or `grpc`.
    pub protocol: Option<String>,
    /// Bound on one export (default 10s).
    pub timeout: Option<Text>,
    /// Headers sent with every export (e.g. a collector's token).
    pub headers: Option<BTreeMap<String, String>>,
}

impl Cx<'_> {
    pub(crate) fn telemetry(&mut self, t: Option<RawTelemetry>) -> Telemetry {
        let t = t.unwrap_or_default();
        let p = [key("telemetry")];
        let ratio = t.sampling_ratio.unwrap_or(1.0);
        let sampling_ratio = if (0.0..=1.0).contains(&ratio) {
            ratio
        } else {
            self.err(
                &path_of(&p, &[key("sampling_ratio")]),
                format!("`{ratio}` is not a ratio: use a number from 0 (none) to 1 (every trace)"),
            );
            1.0
        };
        let otlp = t
            .otlp
            .and_then(|o| self.otlp(o, &path_of(&p, &[key("otlp")])));
        Telemetry {
            otlp,
            sampling_ratio,
            continue_client_trace: t.continue_client_trace.unwrap_or(true),
        }
    }

    fn otlp(&mut self, o: RawOtlp, p: &[crate::locate::Seg]) -> Option<Otlp> {
        let at = |k: &str| path_of(p, &[key(k)]);
        let protocol = match o.protocol.as_deref() {
            None | Some("http") | Some("http/protobuf") => OtlpProtocol::Http,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => {
                self.err(
                    &at("protocol"),
                    format!(
                        "`{other}` is not an OTLP protocol: use `http` (HTTP/protobuf) or `grpc`"
                    ),
                );
                OtlpProtocol::Http
            }
        };
        let endpoint = o.endpoint.trim_end_matches('/').to_string();
        let ok = match endpoint.split_once("://") {
            Some(("http", rest)) if rest.contains(['?', '#', '@']) => {
                // Spans go to `{endpoint}/v1/traces`: a query or fragment
                // would swallow that path, credentials would be sent
                // in the clear.
                self.err(
                    &at("endpoint"),
                    format!("`{}`: a collector URL has no query, fragment or credentials: use e.g. http://collector:4318", crate::redact_url(&endpoint)),
                );
                false
            }
            Some(("http", rest)) => {
                let host = rest.split('/').next().unwrap_or("");
                let ok = !host.is_empty() && host.parse::<http::uri::Authority>().is_ok();
                if !ok {
                    self.err(
                        &at("endpoint"),
                        format!("`{}` is not a collector URL: use e.g. http://collector:4318 (HTTP) or http://collector:4317 (gRPC)", crate::redact_url(&endpoint)),
                    );
                }
                ok
            }
            Some(("https", _)) => {
                self.err(
                    &at("endpoint"),
                    format!("`{}`: TLS to the collector is not supported yet: use http:// to a collector (agent or sidecar) on a trusted network", crate::redact_url(&endpoint)),
                );
                false
            }
            _ => {
                self.err(
                    &at("endpoint"),
                    format!("`{}` is not a collector URL: use e.g. http://collector:4318 (HTTP) or http://collector:4317 (gRPC)", crate::redact_url(&endpoint)),
                );
                false
            }
        };
        let timeout = self.duration(o.timeout.as_ref(), Duration::from_secs(10), &at("timeout"));
        if timeout > Duration::from_secs(60) {
            self.err(
                &at("timeout"),
                "at most 60s: an export that long holds spans back",
            );
        }
        let mut headers = Vec::new();
        for (name, value) in o.headers.unwrap_or_default() {
            let valid = http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && http::HeaderValue::from_str(&value).is_ok();
            if !valid {
                self.err(
                    &path_of(&at("headers"), &[key(&name)]),
                    "not a valid header name and value",
                );
                continue;
            }
            if protocol == OtlpProtocol::Grpc && name.to_ascii_lowercase().ends_with("-bin") {
                self.err(
                    &path_of(&at("headers"), &[key(&name)]),
                    "a `-bin` name is gRPC binary metadata, which is not supported: use another name",
                );
                continue;
            }
            headers.push((name.to_ascii_lowercase(), Secret::new(value)));
        }
        if !ok {
            return None;
        }
        Some(Otlp {
            endpoint,
            protocol,
            timeout,
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::runtime::OtlpProtocol;

    fn load(t: &str) -> Result<crate::Config, crate::ConfigErrors> {
        let y = format!(
            "listen: 127.0.0.1:1\nadmin: {{ listen: 127.0.0.1:2 }}\nbackends:\n  a: {{ kind: openai, url: http://127.0.0.1:3/v1 }}\nroutes:\n  r: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: a }} ] }}\n{t}"
        );
        crate::load_str(&y, "t.yaml", &|_| None)
    }

    #[test]
    fn defaults_and_both_protocols() {
        let c = load("").unwrap();
        assert!(c.telemetry.otlp.is_none());
        assert_eq!(c.telemetry.sampling_ratio, 1.0);
        assert!(c.telemetry.continue_client_trace);
        let c = load("telemetry: { otlp: { endpoint: \"http://collector:4318/\" }, sampling_ratio: 0.25, continue_client_trace: false }\n").unwrap();
        let o = c.telemetry.otlp.unwrap();
        assert_eq!(
            (o.endpoint.as_str(), o.protocol),
            ("http://collector:4318", OtlpProtocol::Http)
        );
        assert_eq!(c.telemetry.sampling_ratio, 0.25);
        assert!(!c.telemetry.continue_client_trace);
        let c = load("telemetry: { otlp: { endpoint: \"http://c:4317\", protocol: grpc, headers: { x-token: s3cret } } }\n").unwrap();
        let o = c.telemetry.otlp.unwrap();
        assert_eq!(o.protocol, OtlpProtocol::Grpc);
        assert_eq!(o.headers[0].0, "x-token");
        assert!(
            !format!("{o:?}").contains("s3cret"),
            "header values are secrets"
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let e = load("telemetry:\n  sampling_ratio: 1.5\n  otlp: { endpoint: \"collector:4318\", protocol: thrift, timeout: 5m, headers: { \"bad name\": x } }\n")
            .unwrap_err()
            .to_string();
        for needle in [
            "t.yaml:8: telemetry.sampling_ratio: `1.5` is not a ratio",
            "telemetry.otlp.endpoint: `collector:4318` is not a collector URL",
            "telemetry.otlp.protocol: `thrift` is not an OTLP protocol",
            "telemetry.otlp.timeout: at most 60s",
            "telemetry.otlp.headers.bad name: not a valid header",
        ] {
            assert!(e.contains(needle), "missing `{needle}` in:\n{e}");
        }
        let e = load("telemetry: { otlp: { endpoint: \"https://c:4318\" } }\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("TLS to the collector is not supported yet"),
            "{e}"
        );
        for endpoint in [
            "http://c:4318/otlp?tenant=a",
            "http://c:4318#x",
            "http://user:pw@c:4318",
        ] {
            let e = load(&format!(
                "telemetry: {{ otlp: {{ endpoint: \"{endpoint}\" }} }}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("has no query, fragment or credentials"),
                "{endpoint}: {e}"
            );
        }
    }
}
