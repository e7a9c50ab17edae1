//! What happened to a request, recorded once at its end: metrics and one
//! JSON access-log line.

use skygate_config::clip;
use skygate_plugins::RequestCtx;

/// Records a finished request. `method` and `path` come from the request
/// header (the path without its query, which may carry secrets); `client`
/// is the peer address of the downstream connection. Client-supplied values
/// (method, path, model) are cut to `skygate_config::ECHO_LIMIT` bytes.
pub fn record(
    ctx: &RequestCtx,
    snap: Option<&crate::runtime::Snapshot>,
    method: &str,
    path: &str,
    client: Option<&str>,
    access_log: bool,
) {
    let backend = ctx.backend.as_deref().unwrap_or("");
    let elapsed = ctx.start.elapsed();
    let ttfb = ctx.first_byte.map(|t| t.duration_since(ctx.start));
    let route = ctx
        .route
        .zip(snap)
        .and_then(|(r, s)| s.route_metrics.get(r));
    crate::metrics::record_request(
        route,
        backend,
        ctx.status,
        elapsed.as_secs_f64(),
        ttfb.map(|t| t.as_secs_f64()),
        (ctx.prompt_tokens, ctx.completion_tokens),
    );
    if !access_log {
        return;
    }
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    crate::access_log::write(line(ctx, ts, method, path, client, elapsed, ttfb));
}

/// One access-log line: a JSON object written straight into one buffer,
/// field by field (no intermediate `Value` tree: that cost more than the
/// rest of the log). Strings go through serde_json's escaping. Public for
/// the benches.
pub fn line(
    ctx: &RequestCtx,
    ts: u64,
    method: &str,
    path: &str,
    client: Option<&str>,
    elapsed: std::time::Duration,
    ttfb: Option<std::time::Duration>,
) -> Vec<u8> {
    let mut w = Json(Vec::with_capacity(512));
    w.0.push(b'{');
    w.field("ts_ms", &ts);
    w.field("request_id", &ctx.request_id);
    w.field("client", &client);
    match ctx.client_ip {
        // An address needs no JSON escaping: written as is.
        Some(ip) => {
            let mut text = String::with_capacity(48);
            skygate_config::push_ip(&mut text, ip);
            w.raw_string("client_ip", &text);
        }
        None => w.field("client_ip", &None::<()>),
    }
    // Client-supplied: clipped, so a line stays small whatever was sent.
    w.field("method", &clip(method));
    w.field("path", &clip(path));
    // From tokens too: clipped like every other value a client can shape.
    let principal = ctx.identity.as_ref().map(|i| &i.principal);
    w.field("principal", &principal.map(|p| clip(&p.id)));
    w.field(
        "issuer",
        &principal.and_then(|p| p.issuer.as_deref()).map(clip),
    );
    w.field(
        "tenant",
        &principal.and_then(|p| p.tenant.as_deref()).map(clip),
    );
    w.field("route", &ctx.route_name);
    w.field("model", &ctx.model.as_deref().map(clip));
    w.field("stream", &ctx.stream);
    w.field("backend", &ctx.backend.as_deref());
    w.field("attempts", &ctx.attempts);
    w.0.extend_from_slice(b",\"tries\":[");
    for (i, t) in ctx.tries.iter().chain(ctx.served.as_ref()).enumerate() {
        if i > 0 {
            w.0.push(b',');
        }
        w.0.push(b'{');
        w.field("backend", &&*t.backend);
        w.field("outcome", &t.outcome);
        w.field("status", &t.status);
        w.field("ms", &t.ms);
        w.0.push(b'}');
    }
    w.0.push(b']');
    w.field("status", &ctx.status);
    w.field("error", &ctx.error);
    w.field("latency_ms", &(elapsed.as_secs_f64() * 1000.0));
    w.field("ttfb_ms", &ttfb.map(|t| t.as_secs_f64() * 1000.0));
    w.field("request_bytes", &ctx.request_bytes);
    w.field("response_bytes", &ctx.response_bytes);
    w.field("prompt_tokens", &ctx.prompt_tokens);
    w.field("completion_tokens", &ctx.completion_tokens);
    w.field("cache", &ctx.cache.as_str());
    w.field("cached_tokens", &ctx.cached_tokens);
    w.field("cold_start", &ctx.cold_start);
    w.0.push(b'}');
    w.0
}

/// A JSON object being written: `"key":value` pairs, comma-separated.
struct Json(Vec<u8>);

impl Json {
    /// `,"key":` (no comma after the opening brace).
    fn key(&mut self, key: &str) {
        if !matches!(self.0.last(), Some(b'{')) {
            self.0.push(b',');
        }
        self.0.push(b'"');
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    fn field(&mut self, key: &str, value: &impl serde::Serialize) {
        self.key(key);
        if serde_json::to_writer(&mut self.0, value).is_err() {
            // Only a non-finite float fails: null, as serde_json's `Value` says.
            self.0.extend_from_slice(b"null");
        }
    }

    /// A string field whose value needs no escaping (an address).
    fn raw_string(&mut self, key: &str, value: &str) {
        self.key(key);
        self.0.push(b'"');
        self.0.extend_from_slice(value.as_bytes());
        self.0.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skygate_plugins::Try;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let mut ctx = RequestCtx::new();
        ctx.request_id = "r-1".into();
        ctx.model = Some("m\"odel\n".into());
        ctx.status = 200;
        ctx.attempts = 2;
        ctx.tries.push(Try {
            backend: Arc::from("a"),
            outcome: "5xx",
            status: Some(500),
            ms: 1.5,
            started: Instant::now(),
            span: 0,
        });
        ctx.served = Some(Try {
            backend: Arc::from("b"),
            outcome: "ok",
            status: Some(200),
            ms: 2.0,
            started: Instant::now(),
            span: 0,
        });
        let bytes = line(
            &ctx,
            7,
            "POST",
            "/v1/chat/completions",
            Some("127.0.0.1:9"),
            Duration::from_millis(3),
            None,
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(v["model"], "m\"odel\n");
        assert_eq!(v["tries"][0]["outcome"], "5xx");
        assert_eq!(v["tries"][1]["backend"], "b");
        assert_eq!(v["ttfb_ms"], serde_json::Value::Null);
        assert_eq!(v["latency_ms"], 3.0);
        assert_eq!(v["client"], "127.0.0.1:9");
        assert_eq!(v.as_object().map(|o| o.len()), Some(26));
    }
}
