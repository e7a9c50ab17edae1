//! Reads and bounds the request body, then settles the route: by path, then
//! (for OpenAI operations) by the `model` of the JSON body.

use crate::budget::{BodyBudget, Reservation};
use crate::runtime::{PathKind, Snapshot};
use bytes::{Bytes, BytesMut};
use pingora_core::protocols::http::ServerSession as Session;
use serde::Deserialize;
use skygate_backends::json::RawMembers;
use skygate_config::{clip, ApiError, ErrorKind, Operation};
use skygate_plugins::RequestCtx;
use std::borrow::Cow;

/// A request that passed parsing.
pub enum Parsed {
    /// `GET /v1/models`, answered by the gateway.
    ListModels,
    /// `GET /v1/models/{model}` (percent-decoded), answered by the gateway.
    GetModel(String),
    /// A request for a route's backends.
    Call(Routed),
}

/// A request bound for a route's backends.
pub struct Routed {
    /// Index of the route in the snapshot.
    pub route: usize,
    pub operation: Operation,
    /// Function routes: the path after the route prefix, with the query.
    pub path_suffix: String,
    pub body: Bytes,
    /// The body's share of the server's body budget: held while the body is
    /// (for the upstream attempts), released when the request is done.
    pub reservation: Reservation,
}

/// The few fields of an OpenAI request body the gateway needs; serde skips the rest.
#[derive(Deserialize)]
struct Peek<'a> {
    model: Option<serde_json::Value>,
    stream: Option<bool>,
    max_tokens: Option<serde_json::Value>,
    max_completion_tokens: Option<serde_json::Value>,
    n: Option<serde_json::Value>,
    /// Only its kind is looked at (any number in it stays unparsed).
    #[serde(borrow)]
    stream_options: Option<&'a serde_json::value::RawValue>,
}

/// A whole number of at least `min` (`None` when absent or null), else a 400
/// naming `field`.
fn whole(
    v: Option<&serde_json::Value>,
    field: &'static str,
    min: u64,
) -> Result<Option<u64>, ApiError> {
    let n = match v {
        None | Some(serde_json::Value::Null) => return Ok(None),
        // Beyond u64 (`1e300`): the most there is, charged as the whole
        // limit, never wrapped to a small ask.
        Some(serde_json::Value::Number(n)) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| {
                    if f >= u64::MAX as f64 {
                        u64::MAX
                    } else {
                        f as u64
                    }
                })
        }),
        Some(_) => None,
    };
    match n {
        Some(n) if n >= min => Ok(Some(n)),
        _ => Err(ApiError::new(
            ErrorKind::InvalidRequest,
            format!("`{field}` must be a whole number of at least {min}"),
        )
        .with_param(field)),
    }
}

/// What routing needs from an OpenAI request body.
#[derive(Debug, PartialEq, Eq)]
pub struct Peeked {
    pub model: String,
    pub stream: bool,
    /// `max_completion_tokens`, else `max_tokens`, when a whole number.
    pub max_tokens: Option<u64>,
    /// `n`, the choices asked for (1 unless a whole number ≥ 1).
    pub choices: u64,
}

/// Reads `model` and `stream` from a JSON body (400 when it is not JSON or
/// has no usable `model`).
pub fn peek(body: &[u8]) -> Result<Peeked, ApiError> {
    let p: Peek = serde_json::from_slice(body).map_err(|e| {
        // serde's message may quote the client's value.
        ApiError::new(
            ErrorKind::InvalidJson,
            format!(
                "the request body is not valid JSON: {}",
                clip(&e.to_string())
            ),
        )
    })?;
    let model = match p.model {
        Some(serde_json::Value::String(m)) if !m.is_empty() => m,
        Some(serde_json::Value::String(_)) | None | Some(serde_json::Value::Null) => {
            return Err(ApiError::new(
                ErrorKind::MissingModel,
                "you must provide a model parameter",
            )
            .with_param("model"))
        }
        Some(_) => {
            return Err(
                ApiError::new(ErrorKind::InvalidRequest, "`model` must be a string")
                    .with_param("model"),
            )
        }
    };
    // Read as the limits reserve them: a value of another type (`"50000"`,
    // `-1`, `1.5`) is refused rather than read as absent, which would
    // reserve the default and let a burst of large asks past a token limit
    // (servers that coerce `"50000"` to 50000 exist). Whole numbers written
    // as floats (`5e4`, `50000.0`) are read as such.
    let max_completion_tokens =
        whole(p.max_completion_tokens.as_ref(), "max_completion_tokens", 0)?;
    let max_tokens = max_completion_tokens.or(whole(p.max_tokens.as_ref(), "max_tokens", 0)?);
    // Refused whatever the cache holds or the limits need (OpenAI does too).
    let stream = p.stream.unwrap_or(false);
    if stream
        && p.stream_options
            .is_some_and(|o| !o.get().starts_with('{') && o.get() != "null")
    {
        return Err(bad_stream_options());
    }
    let choices = whole(p.n.as_ref(), "n", 1)?.unwrap_or(1);
    Ok(Peeked {
        model,
        stream,
        max_tokens,
        choices,
    })
}

pub async fn parse(
    session: &mut Session,
    ctx: &mut RequestCtx,
    snap: &Snapshot,
    budget: &BodyBudget,
) -> Result<Parsed, ApiError> {
    let req = session.req_header();
    let path = req.uri.path().to_string();
    let method = req.method.clone();
    let Some(kind) = route_of(snap, &path)? else {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!("no route for path `{}`", clip(&path)),
        ));
    };
    match &*kind {
        PathKind::ListModels => {
            if method != http::Method::GET {
                return Err(not_allowed(&path, "GET", &method));
            }
            ctx.list_models = true;
            Ok(Parsed::ListModels)
        }
        PathKind::GetModel => {
            if method != http::Method::GET {
                return Err(not_allowed(&path, "GET", &method));
            }
            let id = path
                .strip_prefix(crate::runtime::MODELS_PREFIX)
                .unwrap_or_default();
            let id = String::from_utf8(skygate_config::percent_decode(id)).map_err(|_| {
                ApiError::new(
                    ErrorKind::ModelNotFound,
                    "a model's name is UTF-8: this one is not",
                )
            })?;
            // Decided as the list is (the caller sees what it may call),
            // over this one model only.
            ctx.list_models = true;
            ctx.model = Some(id.clone());
            Ok(Parsed::GetModel(id))
        }
        &PathKind::Function { route, suffix_at } => {
            let r = &snap.config.routes[route];
            ctx.route = Some(route);
            ctx.route_name = Some(r.name.clone());
            // Settled before the body is read: a refused path costs no read.
            let mut suffix = resolve_dot_segments(path.get(suffix_at..).unwrap_or(""))?;
            if let Some(q) = session.req_header().uri.query() {
                suffix.push('?');
                suffix.push_str(q);
            }
            let (body, reservation) = read_body(session, r.max_body, budget).await?;
            ctx.request_bytes = body.len();
            Ok(Parsed::Call(Routed {
                route,
                operation: Operation::Function,
                path_suffix: suffix,
                body,
                reservation,
            }))
        }
        &PathKind::Model {
            operation,
            ref routes,
            max_body,
        } => {
            if method != http::Method::POST {
                return Err(not_allowed(&path, "POST", &method));
            }
            let (body, reservation) = read_body(session, max_body, budget).await?;
            ctx.request_bytes = body.len();
            let Peeked {
                model,
                stream,
                max_tokens,
                choices,
            } = peek(&body)?;
            ctx.stream = stream;
            ctx.max_tokens = max_tokens;
            ctx.choices = choices;
            let Some(&route) = routes.get(&model) else {
                let e = ApiError::new(
                    ErrorKind::ModelNotFound,
                    format!(
                        "the model `{}` does not exist or you do not have access to it",
                        clip(&model)
                    ),
                );
                ctx.model = Some(model);
                return Err(e);
            };
            ctx.model = Some(model);
            let r = &snap.config.routes[route];
            ctx.route = Some(route);
            ctx.route_name = Some(r.name.clone());
            if body.len() > r.max_body {
                return Err(too_large(r.max_body));
            }
            Ok(Parsed::Call(Routed {
                route,
                operation,
                path_suffix: String::new(),
                body,
                reservation,
            }))
        }
    }
}

/// Asks the backend for the stream's usage (`stream_options.include_usage`)
/// when the client did not; the client's stream then leaves that chunk out
/// (`ctx.strip_usage_chunk`). Only `stream_options` is rewritten: every
/// member's value, and each of the client's own options, goes to the
/// backend as the client wrote it (a number too large for a float keeps its
/// digits; whitespace between members goes, and `stream_options` comes
/// first); the body grows by at most 40 bytes. Chat completions only. A
/// `stream_options` that is not an object was refused by [`peek`].
pub fn ask_stream_usage(routed: &mut Routed, ctx: &mut RequestCtx) -> Result<(), ApiError> {
    if routed.operation != Operation::ChatCompletions {
        return Ok(());
    }
    let Ok(RawMembers(mut members)) = serde_json::from_slice::<RawMembers<'_>>(&routed.body) else {
        return Ok(()); // `peek` parsed it as an object already
    };
    // The options the client set, as it wrote them, less `include_usage`.
    let mut options: Vec<(String, &serde_json::value::RawValue)> = Vec::new();
    let at = members.iter().position(|(k, _)| k == "stream_options");
    if let Some(i) = at {
        let raw = members[i].1.get();
        if raw != "null" {
            let Ok(RawMembers(o)) = serde_json::from_str::<RawMembers<'_>>(raw) else {
                return Err(bad_stream_options());
            };
            if o.iter()
                .any(|(k, v)| k == "include_usage" && v.get() == "true")
            {
                return Ok(());
            }
            options = o
                .into_iter()
                .filter(|(k, _)| k != "include_usage")
                .collect();
        }
        members.remove(i);
    }
    let mut opts = Vec::with_capacity(64);
    opts.push(b'{');
    for (k, v) in &options {
        if serde_json::to_writer(&mut opts, k).is_err() {
            return Ok(());
        }
        opts.push(b':');
        opts.extend_from_slice(v.get().as_bytes());
        opts.push(b',');
    }
    opts.extend_from_slice(b"\"include_usage\":true}");
    let options = opts;
    let mut out = Vec::with_capacity(routed.body.len() + options.len() + 20);
    out.extend_from_slice(b"{\"stream_options\":");
    out.extend_from_slice(&options);
    for (k, v) in &members {
        out.push(b',');
        if serde_json::to_writer(&mut out, k).is_err() {
            return Ok(());
        }
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
    }
    out.push(b'}');
    routed.body = Bytes::from(out);
    ctx.strip_usage_chunk = true;
    Ok(())
}

fn bad_stream_options() -> ApiError {
    ApiError::new(
        ErrorKind::InvalidRequest,
        "`stream_options` must be an object, e.g. {\"include_usage\": true}",
    )
    .with_param("stream_options")
}

fn not_allowed(path: &str, allowed: &'static str, method: &http::Method) -> ApiError {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!(
            "`{}` takes {allowed}, not {}",
            clip(path),
            clip(method.as_str())
        ),
    )
    .with_allow(allowed)
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorKind::BodyTooLarge,
        format!("the request body is larger than this route's limit of {limit} bytes"),
    )
}

/// The path's entry in the route table. A path that servers may read
/// otherwise than it is written must name the same route read so:
/// resolved as RFC 3986 normalizes it (`.` and `..` segments, escaped
/// unreserved characters such as `%61` for `a`), and read loosely as many
/// frameworks do (letter case, `//`, `;parameters`, a trailing `/`).
/// Otherwise a route nested under another's prefix could be reached
/// through the outer route's policy, auth and limits (`/f/svc/x/../admin`
/// or `/f/svc//ADMIN` written under `/f/svc`, meant for `/f/svc/admin`),
/// so such a path is refused (400). A plain path costs one byte scan.
fn route_of<'a>(snap: &'a Snapshot, path: &str) -> Result<Option<Cow<'a, PathKind>>, ApiError> {
    let written = snap.routes.lookup(path);
    let b = path.as_bytes();
    let unusual = b
        .iter()
        .any(|&c| matches!(c, b'.' | b'%' | b';') || c.is_ascii_uppercase())
        || path.contains("//")
        || (b.len() > 1 && b.ends_with(b"/"));
    let plain = !unusual;
    if plain {
        return Ok(written);
    }
    let table = &snap.routes;
    let at = table.target(written.as_deref());
    let normal = resolve_dot_segments(&decode_unreserved(path))?;
    let meant = if normal == path {
        at
    } else {
        table.target(table.lookup(&normal).as_deref())
    };
    if meant != at || table.loose_target(&normal) != at {
        return Err(ApiError::new(
            ErrorKind::InvalidRequest,
            "the path names another route once normalized (its `.`/`..` segments, escapes, `//`, `;` parameters, letter case or a trailing `/`): send the route's path as it is",
        ));
    }
    Ok(written)
}

/// `path` with escaped unreserved characters (RFC 3986 §2.3: letters,
/// digits, `-`, `.`, `_`, `~`) decoded, every other escape kept.
fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if let (b'%', Some(h), Some(l)) = (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            let c = (h * 16 + l) as u8;
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                out.push(c);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    // Only ASCII bytes were decoded into an ASCII-or-UTF-8 path.
    String::from_utf8(out).unwrap_or_else(|_| path.to_string())
}

/// The path after a function route's prefix with its dot-segments resolved
/// (RFC 3986 §5.2.4: `.` is dropped, `..` removes the segment before it), so
/// a backend that resolves them itself cannot be led above the prefix. A `..`
/// with nothing left to remove is refused (400).
///
/// Segments are compared after percent-decoding, so `%2e%2e` and `.%2E` are
/// `..` too. A segment that hides a dot-segment behind an encoded separator
/// (`..%2f..`, `..%5c`) or a path parameter (`..;x`, which Java servers read
/// as `..`) is refused: what a backend makes of it cannot be known. Every
/// other segment passes as the client wrote it.
pub fn resolve_dot_segments(suffix: &str) -> Result<String, ApiError> {
    // A dot-segment needs a `.`, or a `%` to encode one.
    if !suffix.bytes().any(|b| b == b'.' || b == b'%') {
        return Ok(suffix.to_string());
    }
    let climbs = || {
        ApiError::new(
            ErrorKind::InvalidRequest,
            "the path leaves the route's prefix through `..` segments",
        )
    };
    let mut kept: Vec<&str> = Vec::new();
    let mut ends_in_dot = false;
    // The suffix is empty or starts with `/`: skip what precedes that slash.
    for segment in suffix.split('/').skip(1) {
        let decoded = skygate_config::percent_decode(segment);
        ends_in_dot = is_dot_segment(&decoded);
        match decoded.as_slice() {
            b"." => {}
            b".." => {
                kept.pop().ok_or_else(climbs)?;
            }
            // `.` and `..` themselves matched above: a part that is one sits
            // next to an encoded separator or a `;`.
            d if d
                .split(|&b| matches!(b, b'/' | b'\\' | b';'))
                .any(is_dot_segment) =>
            {
                return Err(ApiError::new(
                    ErrorKind::InvalidRequest,
                    "a path segment hides `.` or `..` behind an encoded `/` or `\\`, or a `;`",
                ))
            }
            _ => kept.push(segment),
        }
    }
    let mut out = String::with_capacity(suffix.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if ends_in_dot {
        out.push('/');
    }
    Ok(out)
}

fn is_dot_segment(s: &[u8]) -> bool {
    s == b"." || s == b".."
}

/// Reads the whole body within the route's `limit` and the server's body
/// budget. On any failure the connection is closed after the answer: the body
/// was not read to its end (or its framing broke), so whatever follows on the
/// connection is not the start of a request, and must not be read as one.
async fn read_body(
    session: &mut Session,
    limit: usize,
    budget: &BodyBudget,
) -> Result<(Bytes, Reservation), ApiError> {
    let mut reservation = budget.reservation();
    let read = read_body_within(session, limit, &mut reservation).await;
    match read {
        Ok(body) => Ok((body, reservation)),
        Err(e) => {
            session.set_keepalive(None);
            Err(e)
        }
    }
}

/// What a body reserves before its first byte: all of a body declared at
/// most this long, else this much, then twice what it holds each time it
/// outgrows its reservation.
const FIRST_STEP: usize = 64 << 10;

async fn read_body_within(
    session: &mut Session,
    limit: usize,
    reservation: &mut Reservation,
) -> Result<Bytes, ApiError> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    // Bytes are reserved as they arrive, never ahead of them by more than
    // what came already (or `FIRST_STEP`): a declared length reserved whole
    // up front let a few clients that declare 32 MiB and then send a byte
    // a minute hold the whole budget. A body that can never fit is refused
    // before it is read; one declared small enough is reserved in one step.
    if let Some(d) = declared {
        reservation.fits(d)?;
    }
    // Where the doubling stops: the declared length, else the route's limit
    // or the whole budget (a chunked body is refused as too large only once
    // it is).
    // A request with neither length nor chunks has no body: nothing.
    let end = if session.is_body_empty() {
        0
    } else {
        declared.unwrap_or(limit.min(reservation.budget()))
    };
    reservation.grow_to(end.min(FIRST_STEP)).await?;
    // A client that sent `Expect: 100-continue` (curl does for bodies over
    // 1 KiB) waits for this before sending the body.
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session.write_continue_response().await.map_err(|e| {
            ApiError::new(
                ErrorKind::InvalidRequest,
                format!("writing 100 Continue failed: {}", e.etype().as_str()),
            )
        })?;
    }
    let mut buf = BytesMut::with_capacity(reservation.bytes());
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                let total = buf.len() + chunk.len();
                if total > limit {
                    return Err(too_large(limit));
                }
                if total > reservation.bytes() {
                    // Doubling: a large body reserves (and grows its
                    // buffer) a logarithmic number of times.
                    let next = total
                        .max(reservation.bytes().saturating_mul(2))
                        .min(end.max(total));
                    reservation.grow_to(next).await?;
                    buf.reserve(next - buf.len());
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => {
                // A chunked body may hold up to twice what it came to.
                reservation.shrink_to(buf.len());
                return Ok(buf.freeze());
            }
            Err(e) if e.etype() == &pingora_error::ErrorType::ReadTimedout => {
                return Err(ApiError::new(
                    ErrorKind::RequestTimeout,
                    "the request body stalled: no data within the server's body read timeout",
                ))
            }
            Err(e) => {
                return Err(ApiError::new(
                    ErrorKind::InvalidRequest,
                    format!("reading the request body failed: {}", e.etype().as_str()),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_resolved_under_the_prefix() {
        for (suffix, resolved) in [
            ("", ""),
            ("/", "/"),
            ("/score/v2", "/score/v2"),
            ("/a/./b/../c", "/a/c"),
            ("/a/./../c", "/c"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a//..", "/a/"),
            ("/a/%2e/b/%2E%2e/c", "/a/c"),
            ("/v1.2/.hidden/..x/x..", "/v1.2/.hidden/..x/x.."),
            ("/a%2fb/%41%", "/a%2fb/%41%"),
            ("/x%2f.y", "/x%2f.y"),
        ] {
            assert_eq!(resolve_dot_segments(suffix).unwrap(), resolved, "{suffix}");
        }
        for suffix in [
            "/..",
            "/../x",
            "/a/../..",
            "/%2e%2e",
            "/.%2E/x",
            "/a/..%2f..",
            "/a/b%2F..",
            "/..%5cx",
            "/..;/x",
            "/.;x",
        ] {
            let e = resolve_dot_segments(suffix).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidRequest, "{suffix}");
        }
    }

    #[test]
    fn peeks_model_and_stream() {
        assert_eq!(
            peek(br#"{"messages":[{"content":"x"}],"model":"m","stream":true}"#).unwrap(),
            Peeked {
                model: "m".into(),
                stream: true,
                max_tokens: None,
                choices: 1,
            }
        );
        let n = |b: &[u8]| peek(b).unwrap().choices;
        assert_eq!(n(br#"{"model":"m","n":3}"#), 3);
        assert_eq!(n(br#"{"model":"m","n":null}"#), 1);
        let refused = |b: &[u8]| peek(b).unwrap_err().kind;
        assert_eq!(
            refused(br#"{"model":"m","n":0}"#),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            refused(br#"{"model":"m","n":"2"}"#),
            ErrorKind::InvalidRequest
        );
        assert!(!peek(br#"{"model":"m"}"#).unwrap().stream);
        let p = |b: &[u8]| peek(b).unwrap().max_tokens;
        assert_eq!(p(br#"{"model":"m","max_tokens":100}"#), Some(100));
        assert_eq!(
            p(br#"{"model":"m","max_tokens":100,"max_completion_tokens":7}"#),
            Some(7)
        );
        assert_eq!(p(br#"{"model":"m","max_tokens":5e4}"#), Some(50000));
        assert_eq!(p(br#"{"model":"m","max_tokens":50000.0}"#), Some(50000));
        assert_eq!(p(br#"{"model":"m","max_tokens":null}"#), None);
        assert_eq!(
            p(br#"{"model":"m","max_tokens":18446744073709551616}"#),
            Some(u64::MAX)
        );
        assert_eq!(
            p(br#"{"model":"m","max_completion_tokens":1e300}"#),
            Some(u64::MAX)
        );
        // Read as absent, these reserved only the default: refused.
        for b in [
            &br#"{"model":"m","max_tokens":-1}"#[..],
            br#"{"model":"m","max_tokens":"9"}"#,
            br#"{"model":"m","max_tokens":1.5}"#,
            br#"{"model":"m","max_tokens":[9]}"#,
            br#"{"model":"m","max_tokens":9,"max_completion_tokens":"9"}"#,
        ] {
            let e = peek(b).unwrap_err();
            assert_eq!(
                e.kind,
                ErrorKind::InvalidRequest,
                "{}",
                String::from_utf8_lossy(b)
            );
            assert!(
                e.message.contains("must be a whole number"),
                "{}",
                e.message
            );
        }
        assert_eq!(peek(b"{").unwrap_err().kind, ErrorKind::InvalidJson);
        assert_eq!(peek(b"[]").unwrap_err().kind, ErrorKind::InvalidJson);
        assert_eq!(
            peek(br#"{"model":""}"#).unwrap_err().kind,
            ErrorKind::MissingModel
        );
        assert_eq!(
            peek(br#"{"model":null}"#).unwrap_err().kind,
            ErrorKind::MissingModel
        );
        assert_eq!(
            peek(br#"{"model":3}"#).unwrap_err().kind,
            ErrorKind::InvalidRequest
        );
        let junk = br#"{"model":"m","stream":true,"stream_options":"junk"}"#;
        assert_eq!(peek(junk).unwrap_err().kind, ErrorKind::InvalidRequest);
        assert!(peek(br#"{"model":"m","stream_options":"junk"}"#).is_ok());
        // A number too large for a float inside stream_options is not read.
        let huge = br#"{"model":"m","stream":true,"stream_options":{"x":1e999999}}"#;
        assert!(peek(huge).is_ok());
    }

    #[test]
    fn stream_usage_is_asked_without_touching_the_rest() {
        let routed = |body: &str, operation| Routed {
            route: 0,
            operation,
            path_suffix: String::new(),
            body: Bytes::from(body.to_string()),
            reservation: crate::budget::BodyBudget::new(1 << 20, std::time::Duration::ZERO)
                .reservation(),
        };
        let body = r#"{"model":"m","stream":true,"seed":18446744073709551617,"max_tokens":1e2,"messages":[{"role":"user","content":"hi"}]}"#;
        let mut r = routed(body, Operation::ChatCompletions);
        let mut ctx = RequestCtx::new();
        ask_stream_usage(&mut r, &mut ctx).unwrap();
        let out = std::str::from_utf8(&r.body).unwrap();
        assert!(
            out.starts_with(r#"{"stream_options":{"include_usage":true},"model":"m""#),
            "{out}"
        );
        assert!(
            out.contains(r#""seed":18446744073709551617,"max_tokens":1e2,"#),
            "{out}"
        );
        assert!(ctx.strip_usage_chunk);
        // Existing options are kept; asked already: unchanged.
        let mut r = routed(
            r#"{"model":"m","stream_options":{"x":1}}"#,
            Operation::ChatCompletions,
        );
        ask_stream_usage(&mut r, &mut RequestCtx::new()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v["stream_options"],
            serde_json::json!({"x": 1, "include_usage": true})
        );
        let asked = r#"{"model":"m","stream_options":{"include_usage":true}}"#;
        let mut r = routed(asked, Operation::ChatCompletions);
        let mut ctx = RequestCtx::new();
        ask_stream_usage(&mut r, &mut ctx).unwrap();
        assert_eq!(&r.body[..], asked.as_bytes());
        assert!(!ctx.strip_usage_chunk);
        // Embeddings never get it.
        let mut r = routed(r#"{"model":"e","stream":true}"#, Operation::Embeddings);
        ask_stream_usage(&mut r, &mut RequestCtx::new()).unwrap();
        assert_eq!(&r.body[..], br#"{"model":"e","stream":true}"#);
    }
}
