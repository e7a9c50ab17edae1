//! The downstream connection loop: Pingora's HTTP/1.1 keep-alive loop
//! (`apps/mod.rs` in pingora-core), with the client-side timeouts it lacks.
//!
//! Pingora times each read of a request header on its own, so a client that
//! sends one header byte at a time holds a connection for ever; and once a
//! request has switched keep-alive on (every HTTP/1.1 request does), the
//! wait for the next request has no timeout at all. Here, per connection:
//! - `server.timeouts.header_read` bounds a new connection's first request
//!   header, from the connection's start to the header's last byte;
//! - `server.timeouts.keepalive` bounds, on a kept-alive connection, the
//!   time from a response to the next request's whole header: an idle
//!   connection is closed then, and so is one trickling its header;
//! - `server.timeouts.body_read` is Pingora's per-read downstream timeout,
//!   which bounds each wait for more of a body (`request::read_body` answers
//!   408 when it fires);
//! - `server.timeouts.write` is Pingora's per-write downstream timeout: a
//!   client that stops reading a response is cut off (and the upstream
//!   connection with it).
//!
//! Each expired wait closes the connection without an answer, as nginx does.
//! The header timer stops when the app has read the header: each session
//! carries a [`HeaderTimer`] as its connection context, which the app takes
//! and marks ([`header_read`]). At shutdown, a connection waiting for its
//! next request's header is closed; a request whose header is in runs on.
//!
//! HTTP/1.x only: the listeners are plain TCP without h2c (and TLS).
//!
//! Each request's future lives inside the connection's, not boxed: the
//! proxy's [`App::serve`] is a plain `async fn` (a boxed future is copied
//! whole into its box, and a request's is several kilobytes).
//!
//! The admin listener runs the same loop around its `ServeHttp` app (which
//! marks its header read as the proxy does), with a cap on its open
//! connections: without both, a client that trickles header bytes (or
//! holds many unfinished headers) kept admin connections open until the
//! process ran out of file descriptors, taking the proxy listener down too.

use crate::State;
use async_trait::async_trait;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::any::Any;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// What a listener serves, one request at a time: the gateway on the proxy
/// listener ([`crate::proxy`]), the admin API on the admin listener.
pub trait App: Send + Sync + 'static {
    /// One request: reads its header (marking the session's
    /// [`HeaderTimer`]), answers it; the connection back when it may carry
    /// another.
    fn serve(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> impl std::future::Future<Output = Option<ReusedHttpStream>> + Send;

    /// At shutdown, once the listener stops.
    fn cleanup(&self) -> impl std::future::Future<Output = ()> + Send {
        async {}
    }
}

/// The admin API, a `ServeHttp` app (its futures boxed by Pingora's trait).
impl App for crate::admin::Admin {
    async fn serve(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        HttpServerApp::process_new_http(self, session, shutdown).await
    }

    async fn cleanup(&self) {
        HttpServerApp::http_cleanup(self).await
    }
}

/// A listener's app behind the timed connection loop.
pub struct Edge<A> {
    app: Arc<A>,
    state: Arc<State>,
    /// Connections open now, in all and by client address.
    open: AtomicUsize,
    by_peer: Mutex<HashMap<IpAddr, usize>>,
    cap: Option<Cap>,
}

/// The most connections a listener keeps open, in all and from one
/// address (more are closed as they come): one client cannot take them
/// all, and so not shut out the orchestrator's probes.
#[derive(Debug, Clone, Copy)]
pub struct Cap {
    pub total: usize,
    pub per_peer: usize,
}

impl<A> Edge<A> {
    pub fn new(app: A, state: Arc<State>, cap: Option<Cap>) -> Self {
        Self {
            app: Arc::new(app),
            state,
            open: AtomicUsize::new(0),
            by_peer: Mutex::new(HashMap::new()),
            cap,
        }
    }

    /// Counts a new connection from `peer`; `None` (counted nothing) when
    /// it is over the cap.
    fn admit(&self, peer: Option<IpAddr>) -> Option<Open<'_, A>> {
        let Some(cap) = self.cap else {
            return Some(Open {
                edge: self,
                peer: None,
            });
        };
        if let Some(ip) = peer {
            let mut by_peer = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
            let n = by_peer.entry(ip).or_insert(0);
            if *n >= cap.per_peer {
                refused(&format!("{ip} has {n} connections open"));
                return None;
            }
            *n += 1;
        }
        let open = Open { edge: self, peer };
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        if before >= cap.total {
            refused(&format!("{before} connections open"));
            return None; // `open` drops: both counts come back
        }
        Some(open)
    }
}

/// A refused connection, logged at most once a minute.
fn refused(why: &str) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 60
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        log::warn!("closing new connections to the admin listener: {why} (more are closed quietly for a minute)");
    }
}

/// A connection counted open while it lives.
struct Open<'a, A> {
    edge: &'a Edge<A>,
    peer: Option<IpAddr>,
}

impl<A> Drop for Open<'_, A> {
    fn drop(&mut self) {
        if self.edge.cap.is_none() {
            return;
        }
        self.edge.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.peer {
            let mut by_peer = self.edge.by_peer.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = by_peer.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    by_peer.remove(&ip);
                }
            }
        }
    }
}

/// Rides on a session as its connection context; set once the request
/// header is in (one flag per connection, reset for each request).
pub struct HeaderTimer(Arc<AtomicBool>);

/// Marks the header of the request on this connection as read (called by
/// the app with the session's connection context, once it has the header).
pub fn header_read(context: Box<dyn Any + Send + Sync>) {
    if let Ok(timer) = context.downcast::<HeaderTimer>() {
        timer.0.store(true, Ordering::Release);
    }
}

#[async_trait]
impl<A: App> ServerApp for Edge<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = self.cap.and_then(|_| {
            stream
                .get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
        });
        let _open = self.admit(peer)?;
        // Read once per connection: a reload applies to new connections.
        let t = self.state.snapshot().config.server.timeouts;
        let mut stream = stream;
        let mut settings = None;
        let header_in = Arc::new(AtomicBool::new(false));
        // One timer per connection, armed lazily: each request only moves
        // `deadline`; the timer, when it fires early, re-arms itself to it.
        // No timer is registered, reset or allocated per request.
        let mut deadline = Instant::now() + t.header_read;
        let timer = tokio::time::sleep_until(deadline);
        tokio::pin!(timer);
        // Shutdown, watched once per connection (not per request), and
        // only while waiting for a header (a watch's wait takes a shared
        // lock at each look); already under way, it ends the wait at once.
        let mut watch = shutdown.clone();
        let stopping = async move {
            if !*watch.borrow_and_update() {
                let _ = watch.changed().await;
            }
        };
        tokio::pin!(stopping);
        let mut stop_seen = false;
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
            header_in.store(false, Ordering::Release);
            session.set_connection_user_context(Some(Box::new(HeaderTimer(header_in.clone()))));

            // One request, its header read before the timer fires. Most
            // requests end before it does; when it fires, the request goes
            // on if its header was in by then.
            let request = self.app.serve(session, shutdown);
            tokio::pin!(request);
            let reused = loop {
                tokio::select! {
                    biased;
                    done = &mut request => break done,
                    _ = &mut stopping, if !stop_seen && !header_in.load(Ordering::Acquire) => {
                        stop_seen = true;
                        // Checked again: the header may have come in during
                        // this round's poll of the request.
                        if !header_in.load(Ordering::Acquire) {
                            // Waiting for a request: closed, as the process stops.
                            return None;
                        }
                    }
                    _ = &mut timer => {
                        if Instant::now() < deadline {
                            // Armed for an earlier request's deadline.
                            timer.as_mut().reset(deadline);
                            continue;
                        }
                        if !header_in.load(Ordering::Acquire) {
                            log::debug!("request header not complete in time; closing the connection");
                            // Dropping the request drops its session and so the connection.
                            return None;
                        }
                        break request.await;
                    }
                }
            }?;
            let (next, persistent) = reused.consume();
            stream = next;
            settings = persistent;

            if *shutdown.borrow() {
                return None;
            }
            // A kept-alive connection has `keepalive` from this response
            // for its next request's whole header: an idle one is closed
            // then, and so is one that trickles its header. (No peek for
            // the first byte: that would cost a read and a parse per
            // request. An idle connection at shutdown is not waited for:
            // the process exits once no request is in flight.)
            deadline = Instant::now() + t.keepalive;
        }
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}
