//! One send for a request's header and body.
//!
//! Pingora's HTTP/1.1 client flushes the request header on its own, then
//! the body: two sends, and on loopback or a fast network two deliveries
//! the kernel makes (and two wake-ups of the backend). nginx writes both at
//! once. [`Gather`] wraps an upstream connection: while it gathers, writes
//! are kept and flushes do nothing; the first flush after [`Gather::stop`]
//! writes what was kept in one go. Only the request's own writes pass
//! through it; reads go straight to the connection.
//!
//! The wrapper stays on the connection for its whole life (an idle
//! connection is kept wrapped), and is found again by downcasting the
//! session's stream ([`gatherer`]).

use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Requests up to this size (header and body) are gathered; a larger
/// body is sent as it comes (its copy would cost more than a send saves).
pub const MAX_GATHER: usize = 64 * 1024;

/// Kept buffer capacity between requests; a larger one is given back.
const KEEP_CAPACITY: usize = 8 * 1024;

/// An upstream connection that can gather a request's writes into one.
#[derive(Debug)]
pub struct Gather {
    inner: Stream,
    gathering: AtomicBool,
    /// Kept writes, and how much of them the connection has taken.
    kept: Vec<u8>,
    sent: usize,
}

impl Gather {
    pub fn wrap(inner: Stream) -> Stream {
        Box::new(Gather {
            inner,
            gathering: AtomicBool::new(false),
            kept: Vec::new(),
            sent: 0,
        })
    }

    /// From now on, writes are kept and flushes wait.
    pub fn start(&self) {
        self.gathering.store(true, Ordering::Relaxed);
    }

    /// The next flush sends what was kept.
    pub fn stop(&self) {
        self.gathering.store(false, Ordering::Relaxed);
    }

    fn gathering(&self) -> bool {
        self.gathering.load(Ordering::Relaxed)
    }

    /// Writes the kept bytes to the connection.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.kept.len() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &self.kept[self.sent..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sent = 0;
        if self.kept.capacity() > KEEP_CAPACITY {
            self.kept = Vec::new();
        } else {
            self.kept.clear();
        }
        Poll::Ready(Ok(()))
    }
}

/// The gatherer of a session's stream, when it has one.
pub fn gatherer(stream: &Stream) -> Option<&Gather> {
    stream.as_any().downcast_ref::<Gather>()
}

impl AsyncRead for Gather {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Gather {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.gathering() {
            self.kept.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        // Kept bytes go first.
        if !self.kept.is_empty() {
            match self.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.gathering() {
            return Poll::Ready(Ok(()));
        }
        if !self.kept.is_empty() {
            match self.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Gather {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for Gather {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Gather {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Gather {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Gather {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for Gather {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for Gather {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair: the upstream side as a Pingora stream (buffered
    /// as Pingora's are), and the backend's side.
    async fn pair() -> (Stream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = l.accept().await.unwrap();
        let s: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(client));
        (Gather::wrap(s), server)
    }

    /// While gathering, nothing reaches the backend, not even on a flush;
    /// the flush after `stop` sends all of it, larger than Pingora's own
    /// 1460-byte write buffer, in order, and the stream then writes
    /// straight through again.
    #[tokio::test]
    async fn gathered_writes_leave_in_one_send() {
        let (mut s, mut server) = pair().await;
        let g = gatherer(&s).expect("a gatherer");
        g.start();
        let header = b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 5000\r\n\r\n";
        let body = vec![b'x'; 5000];
        s.write_all(header).await.unwrap();
        s.flush().await.unwrap();
        s.write_all(&body).await.unwrap();
        s.flush().await.unwrap();
        let mut probe = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(100), server.read(&mut probe)).await;
        assert!(early.is_err(), "nothing is sent while gathering");
        gatherer(&s).unwrap().stop();
        s.flush().await.unwrap();
        let mut got = vec![0u8; header.len() + body.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..header.len()], header);
        assert!(got[header.len()..].iter().all(|&b| b == b'x'));
        // Not gathering: a write and flush go out at once.
        s.write_all(b"next").await.unwrap();
        s.flush().await.unwrap();
        let mut next = [0u8; 4];
        server.read_exact(&mut next).await.unwrap();
        assert_eq!(&next, b"next");
        // Reads pass through.
        server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        let mut line = [0u8; 17];
        s.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"HTTP/1.1 200 OK\r\n");
        assert!(gatherer(&s).unwrap().kept.capacity() <= KEEP_CAPACITY);
    }
}
