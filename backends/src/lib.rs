//! Skygate's backends: adapters per backend kind ([`adapter`]), the upstream
//! client on pingora-core's connectors ([`upstream`]), target choice
//! ([`router`]), token usage extraction ([`usage`]) and the serverless
//! backend simulator ([`sim`]).

pub mod adapter;
pub mod router;
pub mod sim;
pub mod upstream;
pub mod usage;

pub use adapter::{Adapter, BackendAdapter, Call, Prepared};
pub use upstream::{build_peer, Upstream, UpstreamResponse};
pub use usage::{Usage, UsageTail};
