//! End-to-end tests: the real `skygate` binary in front of `skygate sim`
//! backends, over real HTTP. One binary, a module per capability.

// This whole crate is test code: a failed unwrap is a failed test, with the
// reason in its message, which is exactly what a test should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

mod admin;
mod auth;
mod bodies;
mod cache;
mod config;
mod deploy;
mod edges;
mod errors;
mod failover;
mod jwt;
mod limits;
mod mtls;
mod observability;
mod operations;
mod otlp;
mod platforms;
mod policy;
mod prewarm;
mod replicas;
mod routing;
mod sdk;
mod security;
mod shutdown;
mod simulator;
mod streaming;
mod tls;
mod ui;
