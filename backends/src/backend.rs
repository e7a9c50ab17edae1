//! A backend ready to be called: its validated config, its resolved peer,
//! its adapter, and its run-time state (kept across reloads by name).

use crate::adapter::BackendAdapter;
use crate::routing::state::{BackendState, Registry};
use crate::upstream::{build_peer, Resolved};
use arc_swap::ArcSwap;
use skygate_config::Backend;
use std::sync::Arc;
use std::time::Instant;

/// The resolved peer, or why it could not be resolved (the backend is then
/// unavailable until a health check or a reload resolves it).
pub type PeerSlot = Result<Resolved, String>;

pub struct BackendRt {
    pub config: Backend,
    /// The name, shared cheaply with every request's context and log line.
    pub name: Arc<str>,
    /// The name as the `x-skygate-backend` header value, built once (names
    /// are 1-64 of `A-Z a-z 0-9 . _ -`, so always a valid value).
    pub name_header: http::HeaderValue,
    /// Swapped by the health checker when DNS answers another address.
    pub peer: ArcSwap<PeerSlot>,
    pub adapter: BackendAdapter,
    pub state: Arc<BackendState>,
}

impl BackendRt {
    /// Builds a backend from its config, resolving its address now (never on
    /// the request path) and taking its run-time state from `registry`.
    pub fn build(config: &Backend, registry: &Registry, now: Instant) -> Self {
        let peer = build_peer(config);
        if let Err(e) = &peer {
            log::warn!(
                "backend `{}`: {e}; unavailable until it resolves (health check or reload)",
                config.name
            );
        }
        Self {
            config: config.clone(),
            name: Arc::from(config.name.as_str()),
            name_header: http::HeaderValue::from_str(&config.name)
                .unwrap_or_else(|_| http::HeaderValue::from_static("-")),
            peer: ArcSwap::from_pointee(peer),
            adapter: BackendAdapter::build(config, registry.clouds()),
            state: registry.backend(config, now),
        }
    }
}
