//! HTTP/2 for the simulator (over TLS, chosen by ALPN): each stream is read
//! whole and answered by the same handlers as HTTP/1.1, through [`H2`].

use super::http1::{Request, Sink};
use super::Sim;
use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::SendStream;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// One HTTP/2 stream as a [`Sink`].
pub struct H2 {
    respond: SendResponse<Bytes>,
    body: Option<SendStream<Bytes>>,
}

fn response(status: u16, headers: &[(&str, String)]) -> std::io::Result<http::Response<()>> {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    b.body(()).map_err(io_err)
}

impl Sink for H2 {
    async fn full(
        &mut self,
        status: u16,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::io::Result<()> {
        let mut headers = headers.to_vec();
        headers.push(("content-length", body.len().to_string()));
        let mut stream = self
            .respond
            .send_response(response(status, &headers)?, body.is_empty())
            .map_err(io_err)?;
        if !body.is_empty() {
            stream
                .send_data(Bytes::copy_from_slice(body), true)
                .map_err(io_err)?;
        }
        Ok(())
    }

    async fn stream_head(
        &mut self,
        status: u16,
        headers: &[(&str, String)],
    ) -> std::io::Result<()> {
        self.body = Some(
            self.respond
                .send_response(response(status, headers)?, false)
                .map_err(io_err)?,
        );
        Ok(())
    }

    async fn chunk(&mut self, data: &[u8]) -> std::io::Result<()> {
        let body = self
            .body
            .as_mut()
            .ok_or_else(|| io_err("chunk before head"))?;
        body.send_data(Bytes::copy_from_slice(data), false)
            .map_err(io_err)
    }

    async fn end(&mut self) -> std::io::Result<()> {
        let body = self
            .body
            .as_mut()
            .ok_or_else(|| io_err("end before head"))?;
        body.send_data(Bytes::new(), true).map_err(io_err)
    }
}

impl Sim {
    /// Serves one HTTP/2 connection: every stream in its own task.
    pub(super) async fn h2_connection<S>(self: Arc<Self>, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(mut conn) = h2::server::handshake(io).await else {
            return;
        };
        while let Some(Ok((request, respond))) = conn.accept().await {
            let sim = self.clone();
            tokio::spawn(async move { sim.h2_stream(request, respond).await });
        }
    }

    async fn h2_stream(
        self: Arc<Self>,
        request: http::Request<h2::RecvStream>,
        respond: SendResponse<Bytes>,
    ) {
        let (parts, mut body) = request.into_parts();
        let mut buf = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let Ok(chunk) = chunk else { return };
            let _ = body.flow_control().release_capacity(chunk.len());
            buf.extend_from_slice(&chunk);
        }
        let req = Request {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: buf.freeze(),
            close: false,
            version: "HTTP/2",
        };
        let mut sink = H2 {
            respond,
            body: None,
        };
        let _ = self.handle(&mut sink, req).await;
    }
}
