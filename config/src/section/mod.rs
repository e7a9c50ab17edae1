//! The config file's sections: each one's raw serde type, its checks (as
//! methods of the loader) and its tests, side by side.

pub(crate) mod admin;
pub(crate) mod auth;
pub(crate) mod backend;
pub(crate) mod cache;
pub(crate) mod limits;
pub(crate) mod policy;
pub(crate) mod prewarm;
pub(crate) mod route;
pub(crate) mod server;
pub(crate) mod telemetry;
pub(crate) mod tls;
