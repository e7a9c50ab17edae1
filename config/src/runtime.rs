//! Validated runtime types: what the gateway runs on. Everything validation can
//! settle is settled here (parsed addresses, durations, indexes instead of names),
//! so the hot path never re-checks it.

use crate::Secret;
use std::net::SocketAddr;
use std::time::Duration;

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub server: Server,
    pub admin: Admin,
    pub auth: Auth,
    /// Backends, in name order; routes refer to them by index.
    pub backends: Vec<Backend>,
    /// Routes, in name order.
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub threads: usize,
    pub grace_period: Duration,
    /// After SIGTERM: keep serving, with `/readyz` failing, this long before
    /// the listeners close, so load balancers stop sending first.
    pub drain_delay: Duration,
    pub access_log: AccessLog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Stdout,
    Off,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    /// `None` leaves the admin API (except health) closed: every call gets 401.
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub api_keys: Vec<ApiKey>,
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub key: Secret,
    pub principal: String,
}

/// What a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Any OpenAI-compatible server.
    OpenAi,
    /// A generic serverless function endpoint: bodies pass through.
    HttpFunction,
}

impl BackendKind {
    pub const ALLOWED: &'static str = "openai, http_function";

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "openai" => Some(Self::OpenAi),
            "http_function" => Some(Self::HttpFunction),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::HttpFunction => "http_function",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    pub kind: BackendKind,
    pub url: Endpoint,
    pub api_key: Option<Secret>,
    /// Header the key goes in; `authorization` sends `Bearer <key>`.
    pub api_key_header: http::HeaderName,
    pub cloud: Option<String>,
    pub region: Option<String>,
    pub timeouts: Timeouts,
    /// How long an idle pooled upstream connection is kept.
    pub pool_idle_timeout: Duration,
    /// DER certificates of the CAs this backend's TLS certificate must chain
    /// to; `None` uses the system's roots.
    pub tls_ca: Option<Vec<Vec<u8>>>,
}

/// A parsed upstream base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (may be empty).
    pub base_path: String,
}

impl Endpoint {
    /// `host:port`, as an `Host` header value or connect address.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// The API operation a route serves, settled from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ChatCompletions,
    Embeddings,
    /// A generic serverless function: any body, no model required.
    Function,
}

impl Operation {
    /// The operation of a client path, when it is one of the OpenAI API's.
    pub fn of_openai_path(path: &str) -> Option<Self> {
        match path {
            "/v1/chat/completions" => Some(Self::ChatCompletions),
            "/v1/embeddings" => Some(Self::Embeddings),
            _ => None,
        }
    }

    /// Path of the operation under an OpenAI-compatible base URL.
    pub fn upstream_suffix(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Embeddings => "/embeddings",
            Self::Function => "",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat",
            Self::Embeddings => "embeddings",
            Self::Function => "function",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub path: PathMatch,
    pub operation: Operation,
    /// Models this route serves (LLM routes); empty for function routes.
    pub models: Vec<String>,
    pub targets: Vec<Target>,
    pub max_body: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Index into [`Config::backends`].
    pub backend: usize,
    pub weight: u32,
}

/// Default bound on a request body: 8 MiB.
pub const DEFAULT_MAX_BODY: usize = 8 * 1024 * 1024;
