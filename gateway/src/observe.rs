//! What happened to a request, recorded once at its end: metrics and one
//! JSON access-log line.

use skygate_config::clip;
use skygate_plugins::RequestCtx;

/// Records a finished request. `method` and `path` come from the request
/// header (the path without its query, which may carry secrets); `client`
/// is the peer address of the downstream connection. Client-supplied values
/// (method, path, model) are cut to `skygate_config::ECHO_LIMIT` bytes.
pub fn record(ctx: &RequestCtx, method: &str, path: &str, client: Option<&str>, access_log: bool) {
    let route = ctx.route_name.as_deref().unwrap_or("");
    let backend = ctx.backend.as_deref().unwrap_or("");
    let elapsed = ctx.start.elapsed();
    let ttfb = ctx.first_byte.map(|t| t.duration_since(ctx.start));
    if let Some(m) = crate::metrics::get() {
        let status = ctx.status.to_string();
        m.requests
            .with_label_values(&[route, backend, &status])
            .inc();
        m.duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        if let Some(t) = ttfb {
            m.ttfb
                .with_label_values(&[route, backend])
                .observe(t.as_secs_f64());
        }
        if let Some(p) = ctx.prompt_tokens {
            m.tokens.with_label_values(&[route, "prompt"]).inc_by(p);
        }
        if let Some(c) = ctx.completion_tokens {
            m.tokens.with_label_values(&[route, "completion"]).inc_by(c);
        }
    }
    if !access_log {
        return;
    }
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let line = serde_json::json!({
        "ts_ms": ts,
        "request_id": ctx.request_id,
        "client": client,
        "client_ip": ctx.client_ip,
        // Client-supplied: clipped, so a line stays small whatever was sent.
        "method": clip(method),
        "path": clip(path),
        // From tokens too: clipped like every other value a client can shape.
        "principal": ctx.identity.as_ref().map(|i| clip(&i.principal.id)),
        "issuer": ctx.identity.as_ref().and_then(|i| i.principal.issuer.as_deref()).map(clip),
        "tenant": ctx.identity.as_ref().and_then(|i| i.principal.tenant.as_deref()).map(clip),
        "route": ctx.route_name,
        "model": ctx.model.as_deref().map(clip),
        "stream": ctx.stream,
        "backend": ctx.backend.as_deref(),
        "attempts": ctx.attempts,
        "tries": ctx.tries.iter().chain(ctx.served.as_ref()).map(|t| serde_json::json!({
            "backend": &*t.backend,
            "outcome": t.outcome,
            "status": t.status,
            "ms": t.ms,
        })).collect::<Vec<_>>(),
        "status": ctx.status,
        "error": ctx.error,
        "latency_ms": elapsed.as_secs_f64() * 1000.0,
        "ttfb_ms": ttfb.map(|t| t.as_secs_f64() * 1000.0),
        "request_bytes": ctx.request_bytes,
        "response_bytes": ctx.response_bytes,
        "prompt_tokens": ctx.prompt_tokens,
        "completion_tokens": ctx.completion_tokens,
        "cache": ctx.cache.as_str(),
        "cached_tokens": ctx.cached_tokens,
        "cold_start": ctx.cold_start,
    });
    match serde_json::to_vec(&line) {
        Ok(bytes) => crate::access_log::write(bytes),
        Err(e) => log::error!("access log line: {e}"),
    }
}
