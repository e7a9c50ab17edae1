//! Skygate's backends: adapters per backend kind ([`adapter`]), the upstream
//! client on pingora-core's connectors ([`upstream`], sending a request's
//! header and body at once: `gather`), request signing
//! ([`sign`]: AWS SigV4), routing and the
//! run-time state behind it ([`routing`]), token usage extraction
//! ([`usage`]) and the serverless backend simulator ([`sim`]).

pub mod adapter;
pub mod backend;
pub mod fetch;
mod gather;
pub mod json;
pub mod kinds;
pub mod prewarm;
pub mod routing;
pub mod sign;
pub mod sim;
pub mod upstream;
pub mod usage;

pub use adapter::{Adapter, BackendAdapter, Call, Prepared};
pub use backend::{BackendRt, PeerSlot};
pub use upstream::{build_peer, peer_at, Resolved, Upstream, UpstreamResponse};
pub use usage::{Usage, UsageTail};
