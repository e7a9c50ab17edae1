//! The admin listener: health and readiness (open), metrics and the admin API
//! (admin token required, as `Authorization: Bearer <token>`).

use crate::State;
use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct Admin {
    pub state: Arc<State>,
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = r.body().len();
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    r
}

fn json(status: u16, v: serde_json::Value) -> Response<Vec<u8>> {
    reply(status, "application/json", v.to_string().into_bytes())
}

impl Admin {
    /// Whether the proxy listener accepts connections. Pingora binds each
    /// service's listener when that service starts, so the admin listener
    /// can answer before the proxy's is open: until a connect succeeds once,
    /// the gateway is not ready.
    async fn proxy_accepting(&self) -> bool {
        if self.state.proxy_listening.load(Ordering::Acquire) {
            return true;
        }
        let mut addr = self.state.snapshot().config.listen;
        if addr.ip().is_unspecified() {
            let loopback: std::net::IpAddr = if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            addr.set_ip(loopback);
        }
        let probe = tokio::time::timeout(
            std::time::Duration::from_millis(250),
            tokio::net::TcpStream::connect(addr),
        );
        let up = matches!(probe.await, Ok(Ok(_)));
        if up {
            self.state.proxy_listening.store(true, Ordering::Release);
        }
        up
    }

    fn authorized(&self, session: &ServerSession) -> bool {
        let snap = self.state.snapshot();
        let Some(token) = snap.config.admin.token.as_ref() else {
            return false;
        };
        session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .is_some_and(|presented| token.ct_eq(presented))
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => json(200, serde_json::json!({"status": "ok"})),
            ("GET", "/readyz") => {
                if self.state.draining.load(Ordering::Acquire) {
                    json(503, serde_json::json!({"status": "draining"}))
                } else if !self.proxy_accepting().await {
                    json(503, serde_json::json!({"status": "starting"}))
                } else {
                    json(200, serde_json::json!({"status": "ready"}))
                }
            }
            _ if !self.authorized(session) => json(
                401,
                serde_json::json!({"error": {"message": "admin token required: send `Authorization: Bearer <token>`", "type": "authentication_error", "code": "invalid_admin_token"}}),
            ),
            ("GET", "/metrics") => {
                reply(200, "text/plain; version=0.0.4", crate::metrics::render())
            }
            _ => json(
                404,
                serde_json::json!({"error": {"message": format!("no admin endpoint {method} {path}"), "type": "invalid_request_error", "code": "not_found"}}),
            ),
        }
    }
}
