//! The downstream connection loop: Pingora's HTTP/1.1 keep-alive loop
//! (`apps/mod.rs` in pingora-core), with the client-side timeouts it lacks.
//!
//! Pingora times each read of a request header on its own, so a client that
//! sends one header byte at a time holds a connection for ever; and once a
//! request has switched keep-alive on (every HTTP/1.1 request does), the
//! wait for the next request has no timeout at all. Here, per connection:
//! - `server.timeouts.keepalive` bounds the wait, between two requests, for
//!   the next request's first byte;
//! - `server.timeouts.header_read` bounds the whole request header: from the
//!   connection's start, or from that first byte, to its last byte;
//! - `server.timeouts.body_read` is Pingora's per-read downstream timeout,
//!   which bounds each wait for more of a body (`request::read_body` answers
//!   408 when it fires);
//! - `server.timeouts.write` is Pingora's per-write downstream timeout: a
//!   client that stops reading a response is cut off (and the upstream
//!   connection with it).
//!
//! Each expired wait closes the connection without an answer, as nginx does.
//! The header timer stops when Pingora hands the parsed header to
//! `ProxyHttp::on_connection_reuse`, which it calls right after reading a
//! header whenever the session carries a connection context; every session
//! here carries one, a [`HeaderTimer`].
//!
//! HTTP/1.x only: the proxy listener is plain TCP without h2c.

use crate::proxy::Gateway;
use crate::State;
use async_trait::async_trait;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The proxy listener's app: Pingora's proxy behind the timed connection loop.
pub struct Edge {
    proxy: Arc<HttpProxy<Gateway>>,
    state: Arc<State>,
}

impl Edge {
    pub fn new(proxy: HttpProxy<Gateway>, state: Arc<State>) -> Self {
        Self {
            proxy: Arc::new(proxy),
            state,
        }
    }
}

/// Rides on a session as its connection context; fired once the request
/// header is in.
pub struct HeaderTimer(oneshot::Sender<()>);

/// Stops the header timer of the connection a request came on (called from
/// `on_connection_reuse` with the session's connection context).
pub fn header_read(context: Box<dyn Any + Send + Sync>) {
    if let Ok(timer) = context.downcast::<HeaderTimer>() {
        let _ = timer.0.send(());
    }
}

#[async_trait]
impl ServerApp for Edge {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Read once per connection: a reload applies to new connections.
        let t = self.state.snapshot().config.server.timeouts;
        let mut stream = stream;
        let mut settings = None;
        let mut header_deadline = Instant::now() + t.header_read;
        loop {
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                // The previous request's keep-alive decision and reuse count.
                Some(s) => HttpPersistentSettings::apply_to_session(s, &mut session),
                // Keep-alive on, with no timeout of Pingora's: the waits
                // below are the timeouts.
                None => session.set_keepalive(Some(0)),
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            session.set_read_timeout(Some(t.body_read));
            // A client that stops taking response bytes is cut off.
            session.set_write_timeout(Some(t.write));
            let (timer, header_in) = oneshot::channel();
            session.set_connection_user_context(Some(Box::new(HeaderTimer(timer))));

            let reused = self
                .serve(session, shutdown, header_in, header_deadline)
                .await?;
            let (next, persistent) = reused.consume();
            stream = next;
            settings = persistent;

            header_deadline = match next_request(&mut stream, t.keepalive, shutdown).await {
                Idle::Request => Instant::now() + t.header_read,
                // The stream cannot wait without reading: one bound for both.
                Idle::Unknown => Instant::now() + t.keepalive + t.header_read,
                Idle::Close => return None,
            };
        }
    }

    async fn cleanup(&self) {
        // Wakes requests parked in Pingora's header read at shutdown.
        self.proxy.http_cleanup().await;
    }
}

impl Edge {
    /// One request on the connection, its header read by `deadline`.
    async fn serve(
        &self,
        session: ServerSession,
        shutdown: &ShutdownWatch,
        mut header_in: oneshot::Receiver<()>,
        deadline: Instant,
    ) -> Option<ReusedHttpStream> {
        let request = self.proxy.process_new_http(session, shutdown);
        tokio::pin!(request);
        tokio::select! {
            biased;
            done = &mut request => return done,
            // The header is in (or Pingora let go of the timer because the
            // request ended): no deadline from here on.
            _ = &mut header_in => {}
            // Pingora's fast timers: one shared timer per 10 ms slot, far
            // cheaper per request than a tokio timer entry.
            _ = pingora_timeout::fast_timeout::fast_sleep(deadline.saturating_duration_since(Instant::now())) => {
                log::debug!("request header not complete in time; closing the connection");
                // Dropping the request drops its session and so the connection.
                return None;
            }
        }
        request.await
    }
}

enum Idle {
    /// The next request's first byte is here.
    Request,
    /// The stream cannot peek.
    Unknown,
    /// Keep-alive timeout, client gone, or shutting down.
    Close,
}

/// Waits up to `keepalive` for the next request's first byte, without
/// consuming it.
async fn next_request(stream: &mut Stream, keepalive: Duration, shutdown: &ShutdownWatch) -> Idle {
    let mut shutdown = shutdown.clone();
    let mut probe = [0u8; 1];
    tokio::select! {
        peeked = pingora_timeout::fast_timeout::fast_timeout(keepalive, stream.try_peek(&mut probe)) => match peeked {
            Ok(Ok(true)) => Idle::Request,
            Ok(Ok(false)) => Idle::Unknown,
            Ok(Err(_)) | Err(_) => Idle::Close,
        },
        _ = shutdown.wait_for(|down| *down) => Idle::Close,
    }
}
