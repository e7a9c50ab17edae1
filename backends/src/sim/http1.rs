//! A small HTTP/1.1 server for the simulator: keep-alive, content-length and
//! chunked request bodies, full or chunked (streamed) responses. Small enough
//! that the simulator can hang or cut a connection exactly where it wants.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 256 * 1024 * 1024;

/// A request as the simulator sees it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
    pub close: bool,
    /// `HTTP/1.1` or `HTTP/2`.
    pub version: &'static str,
}

/// Reads one request; `Ok(None)` on a clean close between requests.
pub async fn read_request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> std::io::Result<Option<Request>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            if let httparse::Status::Complete(n) =
                req.parse(buf).map_err(|e| bad(&e.to_string()))?
            {
                let method = req.method.unwrap_or("GET").to_string();
                let path = req.path.unwrap_or("/").to_string();
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                buf.advance(n);
                let find = |name: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                };
                let close = find("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
                let chunked = find("transfer-encoding")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
                let body = if chunked {
                    read_chunked(stream, buf).await?
                } else {
                    let len: usize = find("content-length")
                        .map(|v| v.trim().parse())
                        .transpose()
                        .map_err(|_| bad("bad content-length"))?
                        .unwrap_or(0);
                    if len > MAX_BODY {
                        return Err(bad("body too large"));
                    }
                    while buf.len() < len {
                        if stream.read_buf(buf).await? == 0 {
                            return Err(bad("eof in body"));
                        }
                    }
                    buf.split_to(len).freeze()
                };
                return Ok(Some(Request {
                    method,
                    path,
                    headers,
                    body,
                    close,
                    version: "HTTP/1.1",
                }));
            }
            if buf.len() > MAX_HEAD {
                return Err(bad("request head too large"));
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(bad("eof in head"))
            };
        }
    }
}

async fn read_chunked<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> std::io::Result<bytes::Bytes> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut body = BytesMut::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if stream.read_buf(buf).await? == 0 {
                return Err(bad("eof in chunk size"));
            }
        };
        let line = std::str::from_utf8(&buf[..line_end]).map_err(|_| bad("bad chunk size"))?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("bad chunk size"))?;
        buf.advance(line_end + 2);
        if body.len() + size > MAX_BODY {
            return Err(bad("body too large"));
        }
        while buf.len() < size + 2 {
            if stream.read_buf(buf).await? == 0 {
                return Err(bad("eof in chunk"));
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.advance(size + 2);
        if size == 0 {
            return Ok(body.freeze());
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// Writes a whole response.
pub async fn write_full<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\n",
            reason(status),
            body.len()
        )
        .as_bytes(),
    );
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    stream.write_all(&out).await
}

/// Starts a chunked response.
pub async fn write_chunked_head<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    headers: &[(&str, String)],
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\ntransfer-encoding: chunked\r\n",
        reason(status)
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes()).await
}

/// Writes one chunk (flushed: each is its own TCP write).
pub async fn write_chunk<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    data: &[u8],
) -> std::io::Result<()> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    stream.write_all(&out).await
}

/// Ends a chunked response.
pub async fn write_last_chunk<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> std::io::Result<()> {
    stream.write_all(b"0\r\n\r\n").await
}

/// Where a response goes: an HTTP/1.1 connection or an HTTP/2 stream.
#[allow(async_fn_in_trait)] // used generically inside this crate only
pub trait Sink {
    /// A whole response.
    async fn full(
        &mut self,
        status: u16,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::io::Result<()>;
    /// The head of a streamed response.
    async fn stream_head(&mut self, status: u16, headers: &[(&str, String)])
        -> std::io::Result<()>;
    /// One streamed chunk, sent at once.
    async fn chunk(&mut self, data: &[u8]) -> std::io::Result<()>;
    /// The end of a streamed response.
    async fn end(&mut self) -> std::io::Result<()>;
}

/// An HTTP/1.1 connection as a [`Sink`].
pub struct H1<'a, S>(pub &'a mut S);

impl<S: AsyncRead + AsyncWrite + Unpin> Sink for H1<'_, S> {
    async fn full(
        &mut self,
        status: u16,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::io::Result<()> {
        write_full(self.0, status, headers, body).await
    }
    async fn stream_head(
        &mut self,
        status: u16,
        headers: &[(&str, String)],
    ) -> std::io::Result<()> {
        write_chunked_head(self.0, status, headers).await
    }
    async fn chunk(&mut self, data: &[u8]) -> std::io::Result<()> {
        write_chunk(self.0, data).await
    }
    async fn end(&mut self) -> std::io::Result<()> {
        write_last_chunk(self.0).await
    }
}
