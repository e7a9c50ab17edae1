//! Request hygiene: the client may not set headers that the gateway owns or
//! that only a trusted hop may set. Stripped before any other plugin looks.

use crate::{Decision, Plugin, RequestCtx};
use async_trait::async_trait;
use http::HeaderName;
use pingora_http::RequestHeader;

/// Strips `x-skygate-*`, `x-forwarded-*`, `forwarded` and `x-real-ip` from
/// client requests. (Trusted-hop handling of forwarding headers, and identity
/// headers set by an auth proxy, come with the zero-trust plugins.)
pub struct Hygiene;

fn stripped(name: &str) -> bool {
    name.starts_with("x-skygate-")
        || name.starts_with("x-forwarded-")
        || name == "forwarded"
        || name == "x-real-ip"
}

#[async_trait]
impl Plugin for Hygiene {
    fn name(&self) -> &'static str {
        "hygiene"
    }

    async fn on_headers(&self, req: &mut RequestHeader, _ctx: &mut RequestCtx) -> Decision {
        let doomed: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|k| stripped(k.as_str()))
            .cloned()
            .collect();
        for h in doomed {
            req.remove_header(&h);
        }
        Decision::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn strips_internal_and_forwarding_headers() {
        let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        req.insert_header("x-skygate-backend", "evil").unwrap();
        req.insert_header("X-Skygate-Principal", "admin").unwrap();
        req.insert_header("x-forwarded-for", "1.2.3.4").unwrap();
        req.insert_header("content-type", "application/json")
            .unwrap();
        Hygiene.on_headers(&mut req, &mut RequestCtx::new()).await;
        assert!(req.headers.get("x-skygate-backend").is_none());
        assert!(req.headers.get("x-skygate-principal").is_none());
        assert!(req.headers.get("x-forwarded-for").is_none());
        assert_eq!(req.headers["content-type"], "application/json");
    }
}
