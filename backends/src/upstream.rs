//! The upstream leg, driven by Skygate itself on pingora-core's pooled
//! connectors (HTTP/1.1, and HTTP/2 over TLS via ALPN).
//!
//! Why not Pingora's own proxy phases: a body read in `request_filter` (needed
//! to route by model; the gateway no longer uses those phases at all) is re-sent upstream from a retry buffer that holds only
//! 64 KiB, so longer requests hang. Driving the leg here sends the whole
//! bounded body on every attempt and lets each attempt rewrite it for its
//! backend kind. See ARCHITECTURE.md, "The upstream leg".

use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::protocols::http::v1::client::HttpSession as Http1Session;
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::upstreams::peer::Peer;
use pingora_core::utils::tls::{parse_x509, WrappedX509};
use pingora_error::{Error, ErrorType};
use pingora_http::ResponseHeader;
use skygate_config::{ApiError, Backend, ErrorKind, Retry};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::adapter::Prepared;
use crate::gather::{gatherer, Gather, MAX_GATHER};
use crate::kinds::{ReadAs, Reply, ERROR_LIMIT, WHOLE_LIMIT};
use bytes::BytesMut;

/// A backend's resolved address and the peer built for it.
pub struct Resolved {
    pub addr: SocketAddr,
    pub peer: HttpPeer,
}

/// Resolves a backend's address and builds its peer (pool key, TLS, timeouts).
/// Runs at load time (and in health checks): name resolution is I/O that
/// stays off the request path.
pub fn build_peer(b: &Backend) -> Result<Resolved, String> {
    let addr = (b.url.host.as_str(), b.url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{}`: {e}", b.url.host))?
        .next()
        .ok_or_else(|| format!("`{}` resolves to no address", b.url.host))?;
    peer_at(b, addr)
}

/// Builds a backend's peer at an already resolved address.
pub fn peer_at(b: &Backend, addr: SocketAddr) -> Result<Resolved, String> {
    let mut peer = HttpPeer::new(addr, b.url.tls, b.url.host.clone());
    peer.options.connection_timeout = Some(b.timeouts.connect);
    peer.options.total_connection_timeout = Some(b.timeouts.connect);
    peer.options.idle_timeout = Some(b.pool_idle_timeout);
    if b.url.tls {
        peer.options.set_http_version(2, 1);
    }
    // Pingora's pool key covers address, SNI and the verify flags but not the
    // per-peer CA: without this, a connection verified against one backend's
    // CA could be reused by a backend that trusts other roots. Each backend
    // gets its own pool group, so connections never cross backends.
    let mut group = std::collections::hash_map::DefaultHasher::new();
    b.name.hash(&mut group);
    b.tls_ca.hash(&mut group);
    peer.group_key = group.finish();
    if let Some(ders) = &b.tls_ca {
        let mut cas = Vec::with_capacity(ders.len());
        for der in ders {
            // Pingora's parser panics on a bad certificate: check it first.
            x509_parser::parse_x509_certificate(der)
                .map_err(|e| format!("a CA certificate does not parse: {e}"))?;
            cas.push(WrappedX509::new(der.clone(), parse_x509));
        }
        peer.options.ca = Some(Arc::from(cas.into_boxed_slice()));
    }
    Ok(Resolved { addr, peer })
}

/// Sends at most this many times on one attempt: the first send and up to
/// three resends when pooled connections turn out stale.
const MAX_SENDS: usize = 4;

/// The shared upstream client: one connection pool for every backend.
pub struct Upstream {
    connector: Connector,
    /// Idle HTTP/1.1 connections, kept here rather than in Pingora's pool.
    idle: IdleH1,
}

/// Idle HTTP/1.1 connections by peer (Pingora's reuse hash), newest last.
/// Pingora's pool checks every connection on release and on reuse (a
/// `recv`, a `getpeername`) and spawns a task per release to watch it;
/// here a connection is checked once, when it is taken (one non-blocking
/// read), and one that goes stale between the check and the send is resent
/// by [`Upstream::send`] (as nginx does). Entries expire after the
/// backend's `pool.idle_timeout`.
struct IdleH1 {
    inner: std::sync::Mutex<IdleInner>,
}

struct IdleInner {
    by_peer: std::collections::HashMap<u64, Vec<(Stream, Instant)>>,
    /// Connections in `by_peer`, kept as they come and go so a release
    /// does not walk every peer's list.
    count: usize,
}

/// Whether an idle connection is fit to send on: nothing to read (a byte
/// would be an answer nobody asked for, an end of file a close). One
/// non-blocking read, as Pingora's pool does.
fn still_idle(stream: &mut Stream) -> bool {
    use futures_util::FutureExt;
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1];
    tokio::task::unconstrained(stream.read(&mut buf))
        .now_or_never()
        .is_none()
}

/// At most this many idle connections per peer, and in all (beyond, a
/// released connection is closed).
const IDLE_PER_PEER: usize = 256;
const IDLE_TOTAL: usize = 4096;

impl IdleH1 {
    fn new() -> Self {
        Self {
            inner: std::sync::Mutex::new(IdleInner {
                by_peer: std::collections::HashMap::new(),
                count: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdleInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest idle connection to `key` that has not expired and is
    /// still fit to send on.
    fn take(&self, key: u64) -> Option<Stream> {
        let now = Instant::now();
        loop {
            let next = {
                let mut g = self.lock();
                let next = g.by_peer.get_mut(&key)?.pop()?;
                g.count -= 1;
                next
            };
            let (mut stream, until) = next;
            if until > now && still_idle(&mut stream) {
                return Some(stream);
            }
            // Expired, closed by the backend, or holding bytes nobody
            // asked for: closed here, outside the lock.
        }
    }

    fn put(&self, key: u64, stream: Stream, idle: Duration) {
        let now = Instant::now();
        let mut closing = Vec::new();
        {
            let mut g = self.lock();
            let full = g.count >= IDLE_TOTAL;
            let list = g.by_peer.entry(key).or_default();
            if full || list.len() >= IDLE_PER_PEER {
                // Full: this one is closed rather than an older one kept
                // waiting (the newest are the ones taken).
                closing.push(stream);
            } else {
                list.push((stream, now + idle));
                g.count += 1;
            }
        }
        drop(closing);
    }

    /// Closes idle connections that expired or that their backend closed
    /// (or wrote to unasked), so none lingers in CLOSE_WAIT while traffic
    /// is quiet. Run about once a second ([`Upstream::sweep_idle`]).
    fn sweep(&self) {
        let now = Instant::now();
        let all: Vec<(u64, Vec<(Stream, Instant)>)> = {
            let mut g = self.lock();
            g.count = 0;
            g.by_peer.drain().collect()
        };
        // Checked outside the lock (a non-blocking read each); requests
        // meanwhile open new connections or find others put back.
        let mut kept: Vec<(u64, Vec<(Stream, Instant)>)> = Vec::with_capacity(all.len());
        for (key, list) in all {
            let live: Vec<(Stream, Instant)> = list
                .into_iter()
                .filter_map(|(mut s, until)| {
                    (until > now && still_idle(&mut s)).then_some((s, until))
                })
                .collect();
            if !live.is_empty() {
                kept.push((key, live));
            }
        }
        let mut closing = Vec::new();
        let mut g = self.lock();
        for (key, mut live) in kept {
            let list = g.by_peer.entry(key).or_default();
            // Older ones first, as `take` pops the newest; `count` already
            // holds the ones put back meanwhile.
            let before = list.len();
            live.append(list);
            *list = live;
            let excess = list.len().saturating_sub(IDLE_PER_PEER);
            closing.extend(list.drain(..excess));
            let after = list.len();
            g.count = g.count + after - before;
        }
        drop(g);
        // Over the cap: closed outside the lock.
        drop(closing);
    }
}

impl Upstream {
    /// `pool_size`: idle connections kept in Pingora's pool (HTTP/2 sessions;
    /// one LRU over every upstream, each backend its own group in it).
    /// Idle HTTP/1.1 connections are kept apart, at most 256 per peer and
    /// 4096 in all.
    pub fn new(pool_size: usize) -> Self {
        Self {
            connector: Connector::new(Some(ConnectorOptions::new(pool_size))),
            idle: IdleH1::new(),
        }
    }

    /// Sends one attempt and waits for the response header.
    ///
    /// A pooled connection the backend closed while idle fails on first use;
    /// such failures (reused connection, closed or reset before any response
    /// byte: [`Retry::StaleConnection`]) are resent on another connection, at
    /// most three times. A backend that died while handling the request looks
    /// the same and then sees it twice, the trade Pingora and nginx also make;
    /// timeouts and fresh connections are never resent here. Every error
    /// carries its [`Retry`] class for the attempt loop.
    ///
    /// `prepare` builds the request (the adapter's rewrite); it runs again only
    /// for such a retry, so the common path copies nothing.
    pub async fn send(
        &self,
        backend: &Backend,
        peer: &HttpPeer,
        prepare: impl Fn() -> Result<Prepared, ApiError>,
    ) -> Result<UpstreamResponse, ApiError> {
        let start = Instant::now();
        // Durations are at most 24h (validation), so this cannot overflow;
        // if it ever did, there is no total deadline rather than a panic.
        let deadline = start.checked_add(backend.timeouts.total);
        for _ in 0..MAX_SENDS {
            let mut prepared = prepare()?;
            let reply = prepared.reply.take();
            let (mut session, reused) = match self.idle.take(peer.reuse_hash()) {
                Some(stream) => (
                    HttpSession::H1(Http1Session::new_with_options(stream, peer)),
                    true,
                ),
                None => {
                    // Boxed: a new connection's future (TCP, TLS, ALPN) is
                    // large and rare; inline it would grow every request's
                    // future, which is copied whole when it is boxed.
                    let (session, reused) = Box::pin(self.connector.get_http_session(peer))
                        .await
                        .map_err(|e| connect_error(backend, &e))?;
                    (gathering(session, peer), reused)
                }
            };
            let first_byte = match deadline {
                Some(d) => backend
                    .timeouts
                    .first_byte
                    .min(d.saturating_duration_since(Instant::now())),
                None => backend.timeouts.first_byte,
            };
            let exchange = async {
                // Header and body in one send (see `gather.rs`).
                let gathered = gather(&session, prepared.body.len(), true);
                session
                    .write_request_header(Box::new(prepared.header))
                    .await?;
                if !prepared.body.is_empty() {
                    session.write_request_body(prepared.body, true).await?;
                }
                if gathered {
                    gather(&session, 0, false);
                }
                session.finish_request_body().await?;
                session.read_response_header().await?;
                // Interim answers (100 Continue, 103 Early Hints) are not the
                // response: skip them (a few at most) and read the final one.
                for _ in 0..8 {
                    let interim = session
                        .response_header()
                        .is_some_and(|h| h.status.is_informational() && h.status.as_u16() != 101);
                    if !interim {
                        break;
                    }
                    session.read_response_header().await?;
                }
                // Still interim after that: not an answer a client can take.
                if session
                    .response_header()
                    .is_some_and(|h| h.status.is_informational())
                {
                    return Err(Error::explain(
                        ErrorType::InvalidHTTPHeader,
                        "too many interim (1xx) answers",
                    ));
                }
                // HTTP's status codes end at 599 (RFC 9110 §15); the parser
                // takes any three digits, and a client may choke on 999.
                if session
                    .response_header()
                    .is_some_and(|h| h.status.as_u16() > 599)
                {
                    return Err(Error::explain(
                        ErrorType::InvalidHTTPHeader,
                        "a status beyond 599, which HTTP does not define",
                    ));
                }
                Ok::<(), Box<pingora_error::Error>>(())
            };
            match pingora_timeout::timeout(first_byte, exchange).await {
                Ok(Ok(())) => {
                    let mut header = session.response_header().cloned().ok_or_else(|| {
                        ApiError::new(
                            ErrorKind::UpstreamFailed,
                            format!("backend `{}` sent no response header", backend.name),
                        )
                    })?;
                    // The upstream protocol stops here: an HTTP/2 response
                    // header cannot be written to an HTTP/1.1 client (Pingora
                    // refuses to serialize it), and an HTTP/2 client's session
                    // ignores the version anyway.
                    header.set_version(http::Version::HTTP_11);
                    let resp = UpstreamResponse {
                        session: Some(session),
                        header: Some(header),
                        deadline,
                        idle: backend.timeouts.idle,
                        done: false,
                        backend: backend.name.clone(),
                        reply: None,
                        pending: None,
                        ended: false,
                        failed: None,
                        conclusive: false,
                        cold_start: false,
                    };
                    return match reply {
                        None => Ok(resp),
                        // Boxed, as a connect above: only platform kinds.
                        Some(reply) => Box::pin(resp.shape(reply)).await,
                    };
                }
                Ok(Err(e)) => {
                    let err = exchange_error(backend, &e, reused);
                    if err.retry == Some(Retry::StaleConnection) {
                        continue;
                    }
                    return Err(err);
                }
                Err(_) => {
                    return Err(ApiError::new(
                        ErrorKind::UpstreamTimeout,
                        format!(
                            "backend `{}` sent no response within {:?}",
                            backend.name, first_byte
                        ),
                    )
                    .retryable(Retry::Timeout))
                }
            }
        }
        // Every resend found a closed connection: nothing was answered, as if
        // the backend could not be reached.
        Err(ApiError::new(
            ErrorKind::UpstreamUnreachable,
            format!(
                "backend `{}`: every pooled connection was closed",
                backend.name
            ),
        )
        .retryable(Retry::Connect))
    }

    /// Closes idle connections that expired or were closed by their
    /// backend; a background task calls it every second.
    pub fn sweep_idle(&self) {
        self.idle.sweep();
    }

    /// Gives a fully read response's connection back to the pool.
    ///
    /// Not async: it runs on every request, and an async fn holding an
    /// HTTP/1.1 session and Pingora's release futures would add 5 KB to
    /// every request's future (which is copied whole when boxed). An
    /// HTTP/2 session's release, which may wait, is returned to be awaited.
    #[must_use = "an HTTP/2 session is released by awaiting what this returns"]
    pub fn release<'a>(
        &'a self,
        resp: &mut UpstreamResponse,
        peer: &'a HttpPeer,
        idle: Duration,
    ) -> Option<Pin<Box<dyn Future<Output = ()> + Send + 'a>>> {
        let session = resp.session.take()?;
        if !resp.done {
            return None;
        }
        match session {
            HttpSession::H1(mut h1) => {
                h1.respect_keepalive();
                // `reuse` hands the stream back at once when it is kept
                // alive; otherwise it shuts the connection down, which on
                // a plain or TLS stream completes or is cut short by the
                // drop (the connection closes either way).
                let mut reuse = std::pin::pin!(h1.reuse());
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                if let std::task::Poll::Ready(Some(stream)) = reuse.as_mut().poll(&mut cx) {
                    self.idle.put(peer.reuse_hash(), stream, idle);
                }
                None
            }
            other => Some(Box::pin(self.connector.release_http_session(
                other,
                peer,
                Some(idle),
            ))),
        }
    }
}

/// A response whose header has arrived; its body is read chunk by chunk.
pub struct UpstreamResponse {
    session: Option<HttpSession>,
    header: Option<ResponseHeader>,
    deadline: Option<Instant>,
    idle: Duration,
    done: bool,
    backend: String,
    /// A platform stream being translated chunk by chunk.
    reply: Option<Box<dyn Reply>>,
    /// A body the gateway built from the platform's whole answer.
    pending: Option<Bytes>,
    /// The translated stream's end was delivered.
    ended: bool,
    /// A translation error kept until the output before it was delivered.
    failed: Option<ApiError>,
    /// A function's own failure: final (see `Synth::conclusive`).
    conclusive: bool,
    cold_start: bool,
}

impl UpstreamResponse {
    /// Turns a platform's answer into the client's (see [`Reply`]): a whole
    /// answer is read now (within the attempt, so a mapped 429 or 5xx is
    /// retried like any other), a stream is translated as it is read.
    async fn shape(mut self, mut reply: Box<dyn Reply>) -> Result<Self, ApiError> {
        let Some(header) = self.header.take() else {
            return Ok(self);
        };
        // Nothing has reached the client yet: a failure while reading is
        // the backend's, and may be retried on another target.
        let retryable = |e: ApiError| {
            let class = if e.kind == ErrorKind::UpstreamTimeout {
                Retry::Timeout
            } else {
                Retry::ServerError
            };
            e.retryable(class)
        };
        match reply.read(&header) {
            ReadAs::Pass => self.header = Some(header),
            ReadAs::Whole => {
                // An error body is read up to a small bound (the rest is
                // dropped with the connection); an answer up to WHOLE_LIMIT.
                let limit = if header.status.is_success() {
                    WHOLE_LIMIT
                } else {
                    ERROR_LIMIT
                };
                let mut body = BytesMut::new();
                while let Some(chunk) = self.next_raw().await.map_err(retryable)? {
                    if body.len() + chunk.len() > limit {
                        if !header.status.is_success() {
                            let room = limit - body.len();
                            body.extend_from_slice(&chunk[..room.min(chunk.len())]);
                            // Not read to its end: never pooled.
                            self.session = None;
                            break;
                        }
                        return Err(ApiError::new(
                            ErrorKind::UpstreamFailed,
                            format!(
                                "backend `{}` answered more than {WHOLE_LIMIT} bytes",
                                self.backend
                            ),
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                self.cold_start = reply.cold_start();
                let mut synth = reply.whole(&header, body.freeze())?;
                if matches!(synth.status, 204 | 304) {
                    synth.body = Bytes::new();
                }
                let mut h = synth.header()?;
                if matches!(synth.status, 204 | 304) {
                    h.remove_header(&http::header::CONTENT_LENGTH);
                }
                self.header = Some(h);
                self.conclusive = synth.conclusive;
                self.pending = Some(synth.body);
            }
            ReadAs::Stream => {
                let mut header = header;
                reply.stream_header(&mut header)?;
                // Read up to the first bytes for the client: a platform
                // that fails before them (throttled, a crash at start) is a
                // failed attempt, retried like any other, never a 200 with
                // nothing but an error in it.
                let first = self.translate(reply.as_mut()).await;
                self.cold_start = reply.cold_start();
                if first.is_err() {
                    // The function's own failure: its answer, final.
                    if let Some(synth) = reply.early_failure() {
                        self.session = None;
                        self.header = Some(synth.header()?);
                        self.conclusive = synth.conclusive;
                        self.pending = Some(synth.body);
                        self.ended = true;
                        return Ok(self);
                    }
                }
                let first = first.map_err(|e| match e.retry {
                    Some(_) => e,
                    None => retryable(e),
                })?;
                self.pending = first;
                self.header = Some(header);
                self.reply = Some(reply);
            }
        }
        Ok(self)
    }

    /// Whether this answer is final whatever its status: a function's own
    /// failure, never retried and no failure of the backend.
    pub fn conclusive(&self) -> bool {
        self.conclusive
    }

    /// Whether the platform said this call started a new instance (known
    /// from the header, or for a stream by its end).
    pub fn cold_start(&self) -> bool {
        self.cold_start || self.reply.as_ref().is_some_and(|r| r.cold_start())
    }

    /// The response header, taken once (to be rewritten and sent on).
    pub fn take_header(&mut self) -> Option<ResponseHeader> {
        self.header.take()
    }

    /// The response header, until it is taken.
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }

    /// Whether the body has been read to its end, so that the next
    /// [`next_chunk`](Self::next_chunk) would return `None` without reading.
    /// Known as the last chunk arrives for an HTTP/1.1 body of known
    /// length, a body built from a platform's whole answer, a translated
    /// stream whose last word came, and an HTTP/2 stream whose last DATA
    /// frame ended it: the attempt can then end and the connection be
    /// pooled before that chunk reaches the client. A chunked or
    /// close-delimited body (Pingora parses a chunked end only on the read
    /// after the last data), or an HTTP/2 end sent in a frame of its own,
    /// is known only at `None`.
    pub fn body_done(&mut self) -> bool {
        if self.pending.is_some() || self.failed.is_some() {
            return false;
        }
        if self.reply.is_some() {
            return self.ended;
        }
        if !self.done {
            self.done = match self.session.as_mut() {
                None => true,
                Some(HttpSession::H1(h1)) => h1.is_body_done(),
                Some(HttpSession::H2(h2)) => h2.response_finished(),
                Some(HttpSession::Custom(_)) => false,
            };
        }
        self.done
    }

    /// The next body chunk, `None` at the end. Fails when the backend is idle
    /// for longer than the idle timeout, past the total deadline, or cuts the
    /// connection.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        if let Some(body) = self.pending.take() {
            return Ok(Some(body));
        }
        let Some(mut reply) = self.reply.take() else {
            return self.next_raw().await;
        };
        let result = self.translate(reply.as_mut()).await;
        self.reply = Some(reply);
        result
    }

    /// The next translated chunk of a platform's stream. An error that
    /// arrives with output (in the same read) is kept for the next call, so
    /// the client gets every byte before the error event.
    async fn translate(&mut self, reply: &mut dyn Reply) -> Result<Option<Bytes>, ApiError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.ended {
            return Ok(None);
        }
        let mut out = BytesMut::new();
        loop {
            let step = match self.next_raw().await {
                Ok(Some(chunk)) => reply.chunk(&chunk, &mut out).and_then(|()| {
                    if !reply.finished() {
                        return Ok(());
                    }
                    // The last word came: end now, whatever the connection
                    // does (it is closed, never pooled, unread).
                    self.ended = true;
                    self.session = None;
                    reply.end(&mut out)
                }),
                Ok(None) => {
                    self.ended = true;
                    reply.end(&mut out)
                }
                Err(e) => Err(e),
            };
            match step {
                Err(e) if out.is_empty() => return Err(e),
                Err(e) => {
                    self.failed = Some(e);
                    return Ok(Some(out.freeze()));
                }
                Ok(()) if !out.is_empty() => return Ok(Some(out.freeze())),
                Ok(()) if self.ended => return Ok(None),
                Ok(()) => {}
            }
        }
    }

    /// The next chunk of the backend's own body.
    async fn next_raw(&mut self) -> Result<Option<Bytes>, ApiError> {
        if self.done {
            return Ok(None);
        }
        let Some(session) = self.session.as_mut() else {
            return Ok(None);
        };
        let remaining = self.deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        let wait = self.idle.min(remaining);
        match pingora_timeout::timeout(wait, session.read_response_body()).await {
            Ok(Ok(Some(chunk))) => Ok(Some(chunk)),
            Ok(Ok(None)) => {
                self.done = true;
                Ok(None)
            }
            Ok(Err(e)) => Err(ApiError::new(
                ErrorKind::UpstreamFailed,
                format!(
                    "backend `{}` failed mid-response: {}",
                    self.backend,
                    e.etype().as_str()
                ),
            )),
            Err(_) => {
                let why = if remaining <= self.idle {
                    "the total timeout passed"
                } else {
                    "it went idle"
                };
                Err(ApiError::new(
                    ErrorKind::UpstreamTimeout,
                    format!("backend `{}` stopped mid-response: {why}", self.backend),
                ))
            }
        }
    }
}

/// Nothing was sent: always safe to try again elsewhere.
fn connect_error(b: &Backend, e: &Error) -> ApiError {
    let kind = match e.etype() {
        ErrorType::ConnectTimedout => ErrorKind::UpstreamTimeout,
        _ => ErrorKind::UpstreamUnreachable,
    };
    ApiError::new(
        kind,
        format!(
            "backend `{}` is unreachable: {}",
            b.name,
            e.etype().as_str()
        ),
    )
    .retryable(Retry::Connect)
}

/// A new HTTP/1.1 session's connection, wrapped to gather each request's
/// writes into one send ([`Gather`]); an HTTP/2 session as it is.
fn gathering(session: HttpSession, peer: &HttpPeer) -> HttpSession {
    match session {
        HttpSession::H1(h1) if gatherer(h1.stream()).is_none() => HttpSession::H1(
            Http1Session::new_with_options(Gather::wrap(h1.into_inner()), peer),
        ),
        other => other,
    }
}

/// Starts (`on`) or stops gathering the session's writes; `false` when it
/// does not gather (HTTP/2, or a body too large to copy).
fn gather(session: &HttpSession, body: usize, on: bool) -> bool {
    let HttpSession::H1(h1) = session else {
        return false;
    };
    match gatherer(h1.stream()) {
        Some(g) if !on => {
            g.stop();
            true
        }
        Some(g) if body <= MAX_GATHER => {
            g.start();
            true
        }
        _ => false,
    }
}

/// The request was (partly) sent and no response header came back. On a
/// reused connection closed or reset before any byte, the backend had most
/// likely closed it while idle ([`Retry::StaleConnection`]); anywhere else
/// it counts as the backend failing, like a 5xx it could not send.
fn exchange_error(b: &Backend, e: &Error, reused: bool) -> ApiError {
    let (kind, retry) = match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            (ErrorKind::UpstreamTimeout, Retry::Timeout)
        }
        ErrorType::ConnectionClosed
        | ErrorType::WriteError
        | ErrorType::ReadError
        | ErrorType::H2Error
            if reused =>
        {
            (ErrorKind::UpstreamFailed, Retry::StaleConnection)
        }
        _ => (ErrorKind::UpstreamFailed, Retry::ServerError),
    };
    ApiError::new(
        kind,
        format!("backend `{}` failed: {}", b.name, e.etype().as_str()),
    )
    .retryable(retry)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair: the idle (client) side as a Pingora stream, and
    /// the backend's side.
    async fn pair() -> (Stream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let s: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(client));
        (s, server)
    }

    /// A response read over a real connection from a backend that has sent
    /// `head`; the test writes the rest on the backend's side.
    async fn answer(head: &str) -> (UpstreamResponse, tokio::net::TcpStream) {
        use tokio::io::AsyncWriteExt;
        let (stream, mut server) = pair().await;
        let mut h1 = Http1Session::new(stream);
        let req = pingora_http::RequestHeader::build("GET", b"/", None).unwrap();
        h1.write_request_header(Box::new(req)).await.unwrap();
        server.write_all(head.as_bytes()).await.unwrap();
        h1.read_response().await.unwrap();
        let header = h1.resp_header().cloned();
        let resp = UpstreamResponse {
            session: Some(HttpSession::H1(h1)),
            header,
            deadline: None,
            idle: Duration::from_secs(5),
            done: false,
            backend: "b".into(),
            reply: None,
            pending: None,
            ended: false,
            failed: None,
            conclusive: false,
            cold_start: false,
        };
        (resp, server)
    }

    /// The next body chunk, as text.
    async fn next(resp: &mut UpstreamResponse) -> Option<String> {
        let chunk = resp.next_chunk().await.unwrap();
        chunk.map(|c| String::from_utf8_lossy(&c).into_owned())
    }

    /// The end of a body of known length is known as its last bytes
    /// arrive, not one read later: the gateway ends the attempt and pools
    /// the connection before the client gets those bytes. A chunked body's
    /// end is known when it is read, even when it came with the last data.
    #[tokio::test]
    async fn the_body_end_is_known_with_its_last_bytes() {
        use tokio::io::AsyncWriteExt;
        let (mut resp, mut server) =
            answer("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel").await;
        assert_eq!(next(&mut resp).await.as_deref(), Some("hel"));
        assert!(!resp.body_done());
        server.write_all(b"lo").await.unwrap();
        assert_eq!(next(&mut resp).await.as_deref(), Some("lo"));
        assert!(resp.body_done());
        assert_eq!(next(&mut resp).await, None);
        assert!(resp.body_done());

        let (mut resp, mut server) =
            answer("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhel\r\n").await;
        assert_eq!(next(&mut resp).await.as_deref(), Some("hel"));
        assert!(!resp.body_done());
        // The last data without the end: not done until the end comes.
        server.write_all(b"2\r\nlo\r\n").await.unwrap();
        assert_eq!(next(&mut resp).await.as_deref(), Some("lo"));
        assert!(!resp.body_done());
        server.write_all(b"0\r\n\r\n").await.unwrap();
        assert_eq!(next(&mut resp).await, None);
        assert!(resp.body_done());

        // The last data and the end in one read.
        let (mut resp, mut server) =
            answer("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
        server.write_all(b"2\r\nlo\r\n0\r\n\r\n").await.unwrap();
        assert_eq!(next(&mut resp).await.as_deref(), Some("lo"));
        assert_eq!(next(&mut resp).await, None);
        assert!(resp.body_done());

        // A body built from the whole answer is done once it is taken.
        let (mut resp, _server) = answer("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        resp.pending = Some(Bytes::from_static(b"{}"));
        assert!(!resp.body_done());
        assert_eq!(next(&mut resp).await.as_deref(), Some("{}"));
        assert!(resp.body_done());
    }

    #[tokio::test]
    async fn idle_connections_expire_and_closed_ones_are_swept() {
        let idle = IdleH1::new();
        let (live, _live_server) = pair().await;
        let (closed, closed_server) = pair().await;
        let (expired, _expired_server) = pair().await;
        let (chatty, mut chatty_server) = pair().await;
        idle.put(1, live, Duration::from_secs(60));
        idle.put(2, closed, Duration::from_secs(60));
        idle.put(3, expired, Duration::from_millis(1));
        idle.put(4, chatty, Duration::from_secs(60));
        drop(closed_server);
        tokio::io::AsyncWriteExt::write_all(&mut chatty_server, b"HTTP/1.1 200 OK\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        idle.sweep();
        let left: Vec<u64> = {
            let g = idle.lock();
            let mut k: Vec<u64> = g.by_peer.keys().copied().collect();
            k.sort_unstable();
            k
        };
        // Only the live one stays: the backend closed one, one expired, one
        // holds bytes nobody asked for.
        assert_eq!(left, vec![1]);
        assert!(idle.take(1).is_some());
        assert!(idle.take(1).is_none());
    }

    #[tokio::test]
    async fn a_full_cache_closes_what_it_cannot_keep() {
        let idle = IdleH1::new();
        let mut servers = Vec::new();
        for _ in 0..IDLE_PER_PEER + 3 {
            let (s, server) = pair().await;
            servers.push(server);
            idle.put(9, s, Duration::from_secs(60));
        }
        assert_eq!(idle.lock().by_peer[&9].len(), IDLE_PER_PEER);
        assert_eq!(idle.lock().count, IDLE_PER_PEER);
    }

    /// The running count agrees with the lists through puts, takes and a
    /// sweep, and the cap in all holds across peers.
    #[tokio::test]
    async fn the_idle_count_follows_the_lists() {
        let idle = IdleH1::new();
        let mut servers = Vec::new();
        for key in 0..20u64 {
            for _ in 0..3 {
                let (s, server) = pair().await;
                servers.push(server);
                idle.put(key, s, Duration::from_secs(60));
            }
        }
        let sum = |idle: &IdleH1| idle.lock().by_peer.values().map(Vec::len).sum::<usize>();
        assert_eq!(idle.lock().count, 60);
        assert!(idle.take(3).is_some());
        assert!(idle.take(3).is_some());
        assert_eq!(idle.lock().count, 58);
        // The backends of key 5 close theirs; the sweep drops them.
        servers.drain(15..18);
        tokio::time::sleep(Duration::from_millis(50)).await;
        idle.sweep();
        assert_eq!(idle.lock().count, 55);
        assert_eq!(sum(&idle), 55);
        assert!(idle.take(5).is_none());
        // The cap in all: a release past it is closed.
        idle.lock().count = IDLE_TOTAL;
        let (s, _server) = pair().await;
        idle.put(99, s, Duration::from_secs(60));
        assert!(idle.take(99).is_none());
    }
}
