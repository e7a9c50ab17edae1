//! Request hygiene: the client may not set headers that the gateway owns or
//! that only a trusted hop may set. Runs before any other plugin looks.
//!
//! - `x-skygate-*` and the configured identity headers are always stripped.
//! - `x-forwarded-*`, `forwarded` and `x-real-ip` are stripped too; when the
//!   peer is a trusted proxy (`auth.trusted_proxies`), its `x-forwarded-for`
//!   chain is kept for the request's client address and passed on.
//! - The request's client address is the right-most address of the chain
//!   (the peer appended) that is not a trusted proxy: what a client can
//!   write at the left of the header never counts.
//! - An HTTP/1.1 request without exactly one `Host`, an HTTP/1.0 one with
//!   several (RFC 9112 §3.2), and one with two `Authorization` headers (which
//!   one is the caller?) are refused: 400.
//! - A `Transfer-Encoding` other than exactly `chunked` is refused: 501.

use crate::{Decision, Plugin, RequestCtx};
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;
use skygate_config::Cidr;
use std::net::IpAddr;

pub struct Hygiene {
    trusted: Vec<Cidr>,
    identity: Vec<HeaderName>,
}

impl Hygiene {
    pub fn new(trusted: &[Cidr], identity: &[HeaderName]) -> Self {
        Self {
            trusted: trusted.to_vec(),
            identity: identity.to_vec(),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    fn stripped(&self, name: &HeaderName) -> bool {
        let n = name.as_str();
        n.starts_with("x-skygate-")
            || n.starts_with("x-forwarded-")
            || n == "forwarded"
            || n == "x-real-ip"
            || self.identity.contains(name)
    }

    /// The client address and the `x-forwarded-for` to send on, from a
    /// trusted peer's chain.
    fn resolve(&self, req: &RequestHeader, peer: IpAddr) -> (IpAddr, String) {
        let mut chain: Vec<&str> = req
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let mut peer_text = String::with_capacity(40);
        skygate_config::push_ip(&mut peer_text, peer);
        chain.push(&peer_text);
        // Walk from the right (the peer) while the hops are trusted proxies.
        // The first untrusted address is the client. An entry that does not
        // parse ends the walk at the last trusted hop: whatever is left of
        // it is the client's to write and never counts. All trusted: the
        // left-most hop is the client.
        let mut client = peer;
        for entry in chain.iter().rev() {
            let Some(ip) = parse_hop(entry) else { break };
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        (client, chain.join(", "))
    }
}

/// One `x-forwarded-for` entry: an address, or one with a port
/// (`203.0.113.9:51234`, `[2001:db8::9]:443`), as some proxies write them.
fn parse_hop(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

#[async_trait]
impl Plugin for Hygiene {
    fn name(&self) -> &'static str {
        "hygiene"
    }

    async fn on_headers(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Decision {
        if let Some(e) = ambiguous(req) {
            return Decision::Respond(e);
        }
        if let Some(peer) = ctx.peer {
            let (client, xff) = if self.is_trusted(peer) {
                self.resolve(req, peer)
            } else {
                let mut xff = String::with_capacity(40);
                skygate_config::push_ip(&mut xff, peer);
                (peer, xff)
            };
            ctx.client_ip = Some(client);
            ctx.forwarded_for = HeaderValue::from_maybe_shared(Bytes::from(xff)).ok();
        }
        let doomed: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|k| self.stripped(k))
            .cloned()
            .collect();
        for h in doomed {
            req.remove_header(&h);
        }
        Decision::Continue
    }
}

/// A request whose headers say two things at once, or lack its host.
fn ambiguous(req: &RequestHeader) -> Option<skygate_config::ApiError> {
    use http::{header, Version};
    let refuse = |m: &'static str| {
        Some(skygate_config::ApiError::new(
            skygate_config::ErrorKind::InvalidRequest,
            m,
        ))
    };
    if matches!(req.version, Version::HTTP_10 | Version::HTTP_11) {
        let hosts = req.headers.get_all(header::HOST).iter().count();
        if hosts > 1 || (hosts == 0 && req.version == Version::HTTP_11) {
            return refuse("an HTTP/1.1 request needs exactly one `Host` header");
        }
    }
    if req.headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
        return refuse("send one `Authorization` header, not several");
    }
    // Pingora frames a body whose last transfer coding is `chunked`; any
    // coding before it (`gzip, chunked`) would reach the backend still
    // applied and unannounced. RFC 9112 §6.1: 501 for a coding not taken.
    let mut codings = req
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        // Empty list elements do not count (RFC 9110 §5.6.1).
        .filter(|c| !c.is_empty());
    match (codings.next(), codings.next()) {
        (None, _) => {}
        (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => {}
        _ => {
            return Some(skygate_config::ApiError::new(
                skygate_config::ErrorKind::NotImplemented,
                "the only transfer coding taken is `chunked` (send a compressed body with `Content-Encoding`)",
            ))
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hygiene(trusted: &[&str]) -> Hygiene {
        let t: Vec<Cidr> = trusted.iter().map(|c| Cidr::parse(c).unwrap()).collect();
        Hygiene::new(&t, &[HeaderName::from_static("x-authenticated-user")])
    }

    async fn run(h: &Hygiene, peer: &str, xff: Option<&str>) -> (RequestHeader, RequestCtx) {
        let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        req.insert_header("host", "gw").unwrap();
        req.insert_header("x-skygate-backend", "evil").unwrap();
        req.insert_header("X-Skygate-Principal", "admin").unwrap();
        req.insert_header("x-authenticated-user", "root").unwrap();
        req.insert_header("content-type", "application/json")
            .unwrap();
        if let Some(x) = xff {
            req.insert_header("x-forwarded-for", x).unwrap();
        }
        let mut ctx = RequestCtx::new();
        ctx.peer = Some(peer.parse().unwrap());
        h.on_headers(&mut req, &mut ctx).await;
        (req, ctx)
    }

    #[tokio::test]
    async fn no_host_two_hosts_or_two_authorizations_are_refused() {
        let h = hygiene(&[]);
        let req = |version, headers: &[(&str, &str)]| {
            let mut r = RequestHeader::build("GET", b"/v1/models", None).unwrap();
            r.set_version(version);
            for (k, v) in headers {
                r.append_header(k.to_string(), *v).unwrap();
            }
            r
        };
        use http::Version;
        for (version, headers, refused) in [
            (Version::HTTP_11, &[][..], true),
            (Version::HTTP_11, &[("host", "a"), ("host", "b")][..], true),
            (
                Version::HTTP_11,
                &[
                    ("host", "a"),
                    ("authorization", "Bearer x"),
                    ("authorization", "Bearer y"),
                ][..],
                true,
            ),
            (Version::HTTP_10, &[("host", "a"), ("host", "b")][..], true),
            (
                Version::HTTP_11,
                &[("host", "a"), ("authorization", "Bearer x")][..],
                false,
            ),
            (Version::HTTP_10, &[][..], false),
            (Version::HTTP_2, &[][..], false),
        ] {
            let mut r = req(version, headers);
            let d = h.on_headers(&mut r, &mut RequestCtx::new()).await;
            assert_eq!(
                matches!(d, Decision::Respond(ref e) if e.kind == skygate_config::ErrorKind::InvalidRequest),
                refused,
                "{version:?} {headers:?}"
            );
        }
    }

    /// `chunked` alone is the one transfer coding taken; `gzip, chunked`
    /// (or chunked twice, or over two headers) is a 501.
    #[tokio::test]
    async fn only_chunked_is_taken_as_a_transfer_coding() {
        let h = hygiene(&[]);
        for (te, taken) in [
            (&[][..], true),
            (&["chunked"][..], true),
            (&["Chunked "][..], true),
            (&["gzip, chunked"][..], false),
            (&["gzip", "chunked"][..], false),
            (&["chunked, chunked"][..], false),
            (&[", chunked"][..], true),
            (&["gzip, , chunked"][..], false),
        ] {
            let mut r = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
            r.append_header("host", "gw").unwrap();
            for v in te {
                r.append_header("transfer-encoding", *v).unwrap();
            }
            let d = h.on_headers(&mut r, &mut RequestCtx::new()).await;
            match d {
                Decision::Continue => assert!(taken, "{te:?}"),
                Decision::Respond(e) => {
                    assert!(!taken, "{te:?}");
                    assert_eq!(e.kind.status(), 501);
                }
                _ => panic!("{te:?}"),
            }
        }
    }

    #[tokio::test]
    async fn strips_internal_identity_and_forwarding_headers() {
        let (req, ctx) = run(&hygiene(&[]), "198.51.100.7", Some("1.2.3.4")).await;
        for h in [
            "x-skygate-backend",
            "x-skygate-principal",
            "x-authenticated-user",
            "x-forwarded-for",
        ] {
            assert!(req.headers.get(h).is_none(), "{h}");
        }
        assert_eq!(req.headers["content-type"], "application/json");
        // An untrusted peer's chain is ignored: the client is the peer.
        assert_eq!(ctx.client_ip, Some("198.51.100.7".parse().unwrap()));
        assert_eq!(ctx.forwarded_for.unwrap(), "198.51.100.7");
    }

    #[tokio::test]
    async fn a_trusted_proxy_chain_names_the_client() {
        let h = hygiene(&["10.0.0.0/8"]);
        // LB (10.0.0.5) → us; the client (203.0.113.9) behind a spoofed entry.
        let (_, ctx) = run(&h, "10.0.0.5", Some("6.6.6.6, 203.0.113.9")).await;
        assert_eq!(ctx.client_ip, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(ctx.forwarded_for.unwrap(), "6.6.6.6, 203.0.113.9, 10.0.0.5");
        // Two trusted hops: skipped from the right.
        let (_, ctx) = run(&h, "10.0.0.5", Some("203.0.113.9, 10.1.1.1")).await;
        assert_eq!(ctx.client_ip, Some("203.0.113.9".parse().unwrap()));
        // Garbage in the chain never becomes the client.
        let (_, ctx) = run(&h, "10.0.0.5", Some("not-an-ip")).await;
        assert_eq!(ctx.client_ip, Some("10.0.0.5".parse().unwrap()));
        // Proxies that write ports, or `unknown`: the spoofed left entry
        // never wins.
        for (xff, client) in [
            ("6.6.6.6, 203.0.113.9:51234", "203.0.113.9"),
            ("6.6.6.6, [2001:db8::9]:443", "2001:db8::9"),
            ("6.6.6.6, unknown", "10.0.0.5"),
            ("6.6.6.6, unknown, 10.1.1.1", "10.1.1.1"),
        ] {
            let (_, ctx) = run(&h, "10.0.0.5", Some(xff)).await;
            assert_eq!(ctx.client_ip, Some(client.parse().unwrap()), "{xff}");
        }
        // Every hop trusted: the left-most is the client.
        let (_, ctx) = run(&h, "10.0.0.5", Some("10.9.9.9, 10.1.1.1")).await;
        assert_eq!(ctx.client_ip, Some("10.9.9.9".parse().unwrap()));
    }
}
