//! One-off HTTP requests made in the background (credential endpoints:
//! STS, the instance metadata service, container credentials), on
//! pingora-core's connector: HTTP/1.1, TLS by rustls with the system's
//! roots. Never used on the request path.

use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use std::time::Duration;

/// A whole response.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// The most bytes a credential endpoint's answer may have.
const MAX_BODY: usize = 1 << 20;

pub struct Fetcher {
    connector: Connector,
}

impl Default for Fetcher {
    fn default() -> Self {
        Self {
            connector: Connector::new(None),
        }
    }
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fetcher")
    }
}

impl Fetcher {
    /// Sends one request to `url` (`http://` or `https://`) and reads the
    /// whole answer, all within `timeout`.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Fetched, String> {
        match pingora_timeout::timeout(timeout, self.exchange(method, url, headers, body, timeout))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(format!("{url}: no answer within {timeout:?}")),
        }
    }

    async fn exchange(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Fetched, String> {
        let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("`{url}`: the scheme must be http or https")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("`{url}` has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
            .next()
            .ok_or_else(|| format!("`{host}` resolves to no address"))?;
        let mut peer = HttpPeer::new(addr, tls, host.clone());
        peer.options.connection_timeout = Some(timeout);
        peer.options.total_connection_timeout = Some(timeout);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = RequestHeader::build(method, path.as_bytes(), Some(headers.len() + 2))
            .map_err(|e| e.to_string())?;
        let authority = uri.authority().map_or(host.as_str(), |a| a.as_str());
        req.insert_header(http::header::HOST, authority)
            .map_err(|e| e.to_string())?;
        for (k, v) in headers {
            req.append_header(k.to_string(), *v)
                .map_err(|e| e.to_string())?;
        }
        req.insert_header(http::header::CONTENT_LENGTH, body.len())
            .map_err(|e| e.to_string())?;
        let (mut session, _) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(|e| format!("{url}: {}", e.etype().as_str()))?;
        let io = |e: Box<pingora_error::Error>| format!("{url}: {}", e.etype().as_str());
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(io)?;
        if !body.is_empty() {
            session.write_request_body(body, true).await.map_err(io)?;
        }
        session.finish_request_body().await.map_err(io)?;
        session.read_response_header().await.map_err(io)?;
        let header = session
            .response_header()
            .cloned()
            .ok_or_else(|| format!("{url}: no response header"))?;
        let mut out = Vec::new();
        while let Some(chunk) = session.read_response_body().await.map_err(io)? {
            if out.len() + chunk.len() > MAX_BODY {
                return Err(format!("{url}: the answer is larger than {MAX_BODY} bytes"));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            status: header.status.as_u16(),
            headers: header.headers.clone(),
            body: Bytes::from(out),
        })
    }
}
